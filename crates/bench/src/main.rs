//! `somagent-bench`: measures the platform's building blocks and prints numbers.

mod events;
mod stats;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "somagent-bench",
    about = "Benchmarks of SomaAgent's building blocks"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Event publish throughput and latency (local log, Kafka) and lock acquire latency
    /// (in-process, Redis). Kafka and Redis are measured when SOMAGENT_TEST_EVENTS_URL
    /// and SOMAGENT_TEST_CACHE_URL are set.
    Events {
        /// Events per measured run.
        #[arg(long, default_value_t = 20_000)]
        events: usize,
        /// Concurrent publishers in the throughput run.
        #[arg(long, default_value_t = 64)]
        publishers: usize,
        /// Lock acquisitions per engine.
        #[arg(long, default_value_t = 10_000)]
        locks: usize,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Events {
            events,
            publishers,
            locks,
        } => events::run(events, publishers, locks).await,
    }
}
