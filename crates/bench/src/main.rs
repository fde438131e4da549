//! `somagent-bench`: measures the platform's building blocks and prints numbers.

mod analytics;
mod auth;
mod billing;
mod chat;
mod events;
mod memory;
mod notify;
mod output_guard;
mod policy;
mod projects;
mod proxy;
mod replicas;
mod stats;
mod tools;

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
    /// The analytics warehouse: events/s stored (embedded, and ClickHouse when
    /// SOMAGENT_TEST_ANALYTICS_URL is set), then a month's usage report over them.
    Analytics {
        /// Usage events stored before the queries.
        #[arg(long, default_value_t = 1_000_000)]
        events: usize,
        /// Usage reports asked, each for one of the ten tenants.
        #[arg(long, default_value_t = 50)]
        queries: usize,
    },
    /// Webhook fan-out: notifications to ten endpoints, one of them dead.
    Notify {
        /// Notifications, each delivered to every endpoint.
        #[arg(long, default_value_t = 2_000)]
        notifications: usize,
    },
    /// The usage ledger's intake from the bus: events/s on the local log with SQLite,
    /// and on Kafka with PostgreSQL when SOMAGENT_TEST_EVENTS_URL and
    /// SOMAGENT_TEST_DATABASE_URL are set; then budget reservations' latency (in
    /// process, and through Redis with SOMAGENT_TEST_CACHE_URL) and 100 concurrent
    /// calls against a budget with room for 10.
    Billing {
        /// Usage events published, then entered.
        #[arg(long, default_value_t = 100_000)]
        events: usize,
        /// Budget reservations made and settled one after another.
        #[arg(long, default_value_t = 20_000)]
        reservations: usize,
    },
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
    /// Token verification in process (when `--gateway` is not given), or authenticated
    /// `GET /v1/me` load through a running gateway.
    Auth {
        /// Verifications in the in-process measurement.
        #[arg(long, default_value_t = 20_000)]
        verifications: usize,
        /// A running gateway to load, e.g. http://127.0.0.1:10000.
        #[arg(long)]
        gateway: Option<String>,
        /// The bootstrap admin's password on that platform.
        #[arg(
            long,
            env = "SOMAGENT_IDENTITY__BOOTSTRAP_ADMIN_PASSWORD",
            default_value = ""
        )]
        password: String,
        #[arg(long, default_value_t = 64)]
        concurrency: usize,
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// How the printed line names this run.
        #[arg(long, default_value = "GET /v1/me")]
        label: String,
    },
    /// The gateway as a proxy of streamed completions: a fixed upstream started here
    /// (configure the platform's SOMAGENT_SLM__LLM_BASE_URL to it, model `rules`)
    /// called directly and through the gateway at 1, 16 and 64 connections.
    Proxy {
        #[arg(long)]
        gateway: String,
        #[arg(
            long,
            env = "SOMAGENT_IDENTITY__BOOTSTRAP_ADMIN_PASSWORD",
            default_value = ""
        )]
        password: String,
        /// The platform's process id, for its CPU time and resident memory.
        #[arg(long)]
        pid: Option<u32>,
        /// Seconds of load per run (each connection count, each path).
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// The connection counts to run, in order.
        #[arg(long, value_delimiter = ',', default_value = "1,16,64")]
        connections: Vec<usize>,
    },
    /// Chat through a running gateway against a scripted upstream started here
    /// (configure the platform's SOMAGENT_SLM__LLM_BASE_URL to it): time to first token
    /// added by the platform, and session-turn overhead at 1, 10 and 100 sessions.
    Chat {
        #[arg(long)]
        gateway: String,
        #[arg(
            long,
            env = "SOMAGENT_IDENTITY__BOOTSTRAP_ADMIN_PASSWORD",
            default_value = ""
        )]
        password: String,
        #[arg(long, default_value_t = 5)]
        seconds: u64,
    },
    /// Live turn events between two replicas of a platform (same database, Redis and
    /// bus): how much later a WebSocket watcher on the second replica gets each delta of
    /// a turn started through the first than a watcher on the first does.
    Replicas {
        /// The two replicas' gateways.
        #[arg(long, num_args = 2, required = true)]
        gateways: Vec<String>,
        #[arg(
            long,
            env = "SOMAGENT_IDENTITY__BOOTSTRAP_ADMIN_PASSWORD",
            default_value = ""
        )]
        password: String,
        #[arg(long, default_value_t = 10)]
        seconds: u64,
    },
    /// Tool calls through a running gateway against an API served here, and session
    /// turns with one tool round on a scripted upstream started here (configure the
    /// platform's SOMAGENT_SLM__LLM_BASE_URL to it, and allow tools private networks).
    Tools {
        #[arg(long)]
        gateway: String,
        #[arg(
            long,
            env = "SOMAGENT_IDENTITY__BOOTSTRAP_ADMIN_PASSWORD",
            default_value = ""
        )]
        password: String,
        #[arg(long, default_value_t = 5)]
        seconds: u64,
    },
    /// Memory on real MiniLM embeddings of a real corpus, through a running platform
    /// (its local embedding model): tenant-filtered search latency and recall@10 on the
    /// embedded store and Qdrant (SOMAGENT_TEST_QDRANT_URL), ingestion chunks/s, and
    /// what recall adds to a session turn on the scripted upstream (start the platform
    /// with SOMAGENT_SLM__LLM_BASE_URL at SOMAGENT_BENCH_LLM_ADDR).
    Memory {
        #[arg(long)]
        gateway: String,
        #[arg(
            long,
            env = "SOMAGENT_IDENTITY__BOOTSTRAP_ADMIN_PASSWORD",
            default_value = ""
        )]
        password: String,
        /// Vectors stored, spread over the tenants.
        #[arg(long, default_value_t = 100_000)]
        chunks: usize,
        #[arg(long, default_value_t = 10)]
        tenants: usize,
        /// Held-out paragraphs searched for.
        #[arg(long, default_value_t = 1_000)]
        queries: usize,
        /// Directories of text (.py, .md, .rst, .txt) the corpus is cut from.
        #[arg(long, required = true)]
        corpus: Vec<std::path::PathBuf>,
        /// Where the corpus's vectors are kept between runs.
        #[arg(long)]
        cache: std::path::PathBuf,
    },
    /// A KAMACHIQ project of `--deliverables` deliverables in waves of `--width`
    /// through a running platform, on a scripted upstream started here (configure the
    /// platform's SOMAGENT_SLM__LLM_BASE_URL to SOMAGENT_BENCH_LLM_ADDR and its model to
    /// `rules`): wall time, the platform's own share of it, workflow steps per second.
    Projects {
        #[arg(long)]
        gateway: String,
        #[arg(
            long,
            env = "SOMAGENT_IDENTITY__BOOTSTRAP_ADMIN_PASSWORD",
            default_value = ""
        )]
        password: String,
        #[arg(long, default_value_t = 100)]
        deliverables: usize,
        /// Deliverables a wave (and run at once).
        #[arg(long, default_value_t = 10)]
        width: usize,
        /// How long each model call takes.
        #[arg(long, default_value_t = 100)]
        model_ms: u64,
        /// How the printed lines name this run (the engine).
        #[arg(long, default_value = "local engine")]
        label: String,
    },
    /// Policy evaluation in process (regorus; OPA too when SOMAGENT_TEST_OPA_URL is set)
    /// when `--gateway` is not given, or `POST /v1/policy/evaluate` through a gateway.
    Policy {
        /// Evaluations in the in-process measurement.
        #[arg(long, default_value_t = 20_000)]
        evaluations: usize,
        /// A running gateway to load, e.g. http://127.0.0.1:10000.
        #[arg(long)]
        gateway: Option<String>,
        /// The bootstrap admin's password on that platform.
        #[arg(
            long,
            env = "SOMAGENT_IDENTITY__BOOTSTRAP_ADMIN_PASSWORD",
            default_value = ""
        )]
        password: String,
        #[arg(long, default_value_t = 5)]
        seconds: u64,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Analytics { events, queries } => analytics::run(events, queries).await,
        Command::Notify { notifications } => notify::run(notifications).await,
        Command::Billing {
            events,
            reservations,
        } => {
            billing::run(events).await?;
            billing::reservations(reservations).await
        }
        Command::Events {
            events,
            publishers,
            locks,
        } => events::run(events, publishers, locks).await,
        Command::Auth {
            verifications,
            gateway: None,
            ..
        } => auth::verification(verifications).await,
        Command::Auth {
            gateway: Some(gateway),
            password,
            concurrency,
            seconds,
            label,
            ..
        } => auth::me_load(&gateway, &password, concurrency, seconds, &label).await,
        Command::Chat {
            gateway,
            password,
            seconds,
        } => chat::run(&gateway, &password, seconds).await,
        Command::Proxy {
            gateway,
            password,
            pid,
            seconds,
            connections,
        } => proxy::run(&gateway, &password, pid, seconds, &connections).await,
        Command::Replicas {
            gateways,
            password,
            seconds,
        } => replicas::run(&gateways, &password, seconds).await,
        Command::Tools {
            gateway,
            password,
            seconds,
        } => tools::run(&gateway, &password, seconds).await,
        Command::Memory {
            gateway,
            password,
            chunks,
            tenants,
            queries,
            corpus,
            cache,
        } => {
            memory::run(memory::Options {
                gateway,
                password,
                chunks,
                tenants,
                queries,
                corpus,
                cache,
            })
            .await
        }
        Command::Projects {
            gateway,
            password,
            deliverables,
            width,
            model_ms,
            label,
        } => {
            projects::run(projects::Options {
                gateway,
                password,
                deliverables,
                width,
                model_ms,
                label,
            })
            .await
        }
        Command::Policy {
            evaluations,
            gateway: None,
            ..
        } => policy::in_process(evaluations).await,
        Command::Policy {
            gateway: Some(gateway),
            password,
            seconds,
            ..
        } => policy::through_gateway(&gateway, &password, seconds).await,
    }
}
