//! `somagent`: run the whole platform on one machine, and ask it how it is.

mod keys;
mod platform;
mod reseal;
mod status;
mod workflows;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// SomaAgent: a multi-tenant platform for running LLM agents in production.
///
/// Configuration comes from defaults, then the TOML file named by SOMAGENT_CONFIG, then
/// SOMAGENT_* environment variables (SOMAGENT_DATABASE_URL, SOMAGENT_EVENTS_URL,
/// SOMAGENT_CACHE_URL, SOMAGENT_OBJECTS_URL, SOMAGENT_WORKFLOWS_URL,
/// SOMAGENT_VECTORS_URL, SOMAGENT_PORTS__<SERVICE>, ...), then the
/// flags below. A variable ending in _FILE reads its value from that file (secrets).
#[derive(Parser)]
#[command(name = "somagent", version, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run all 13 services in this one process.
    ///
    /// With no configuration every backend is embedded (SQLite files, a durable local
    /// event log, an in-process cache, local object files, vectors in the database) and
    /// lives in the data directory, so nothing else needs installing. Set
    /// SOMAGENT_DATABASE_URL=postgres://…, SOMAGENT_EVENTS_URL=kafka://…,
    /// SOMAGENT_CACHE_URL=redis://…, SOMAGENT_OBJECTS_URL=s3://…,
    /// SOMAGENT_WORKFLOWS_URL=temporal://host:7233 or SOMAGENT_VECTORS_URL=qdrant://host:6334
    /// to use real engines instead. Prints each service's
    /// address; Ctrl-C stops it cleanly, and it starts again on the same data.
    Up {
        /// Where the embedded backends keep their data [default: the configured
        /// `data_dir`, else ./.somagent].
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Log format on stderr: json (for machines) or pretty (for people).
        #[arg(long, value_parser = ["json", "pretty"])]
        log_format: Option<String>,
    },
    /// Print each service's readiness (its /readyz), one line per service.
    ///
    /// Exits 0 when every service is ready, 1 otherwise.
    Status {
        /// The host the services listen on.
        #[arg(long, default_value = "127.0.0.1")]
        host: String,
        /// Print the report as JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Print the services and the ports they listen on.
    Services,
    /// Credentials for a deployment across machines.
    Keys {
        #[command(subcommand)]
        command: keys::KeysCommand,
    },
    /// A tenant admin's view of the tenant's workflow runs (session turns, ...): list,
    /// show, cancel, signal, through the gateway.
    Workflows(workflows::WorkflowsArgs),
}

fn main() -> ExitCode {
    // Started as the tool service's sandbox launcher: confine and become the program.
    somagent_tool::sandbox::exec_if_asked();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("somagent: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        match cli.command {
            Command::Up {
                data_dir,
                log_format,
            } => platform::up(data_dir, log_format).await,
            Command::Status { host, json } => status::status(&host, json).await,
            Command::Services => status::services(),
            Command::Keys { command } => keys::run(command).await,
            Command::Workflows(args) => workflows::run(args).await,
        }
    })
}
