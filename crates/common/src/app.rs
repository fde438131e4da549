//! A service as a value: built from its config and a bound listener, run until a
//! token is cancelled. Binaries, `somagent up` and tests all go through here.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::infra::events::ConsumerMetrics;

use crate::config::CommonConfig;
use crate::infra::SharedBackends;
use crate::infra::db::{COMMON_MIGRATIONS, Db, Migration};
use crate::metrics::Metrics;
use crate::readiness::Readiness;
use crate::service::{Backend, ServiceSpec};
use crate::{config, server, shutdown, telemetry};

/// What a service is built from.
pub struct ServiceContext {
    pub spec: &'static ServiceSpec,
    pub config: CommonConfig,
    pub backends: SharedBackends,
    pub listener: TcpListener,
}

impl ServiceContext {
    /// The service's own settings ([`config::section`]): `[<service>]` in the file,
    /// `SOMAGENT_<SERVICE>__<KEY>` in the environment.
    pub fn settings<T: serde::de::DeserializeOwned + Default>(&self) -> anyhow::Result<T> {
        Ok(config::section(self.spec)?)
    }
}

/// What a service's gRPC router serves: a generated server, or one behind a layer.
pub trait GrpcService:
    tower::Service<
        http::Request<tonic::body::Body>,
        Response = http::Response<tonic::body::Body>,
        Error = std::convert::Infallible,
        Future: Send + 'static,
    > + tonic::server::NamedService
    + Clone
    + Send
    + Sync
    + 'static
{
}

impl<S> GrpcService for S where
    S: tower::Service<
            http::Request<tonic::body::Body>,
            Response = http::Response<tonic::body::Body>,
            Error = std::convert::Infallible,
            Future: Send + 'static,
        > + tonic::server::NamedService
        + Clone
        + Send
        + Sync
        + 'static
{
}

/// Wires a service: opens its database, adds its routes, and registers a readiness
/// check for every backend it depends on.
pub struct ServiceBuilder {
    ctx: ServiceContext,
    db: Option<Db>,
    http: Router,
    grpc: tonic::service::Routes,
    readiness: Readiness,
    metrics: Metrics,
    health: tonic_health::server::HealthReporter,
    on_shutdown: Vec<ShutdownHook>,
    stopping: CancellationToken,
    tasks: TaskTracker,
    consumer_metrics: ConsumerMetrics,
}

/// What a service does when it is told to stop, besides draining requests: stop its
/// workers and give up what it holds, so the next process takes over at once.
type ShutdownHook = Box<dyn FnOnce() -> futures::future::BoxFuture<'static, ()> + Send>;

impl ServiceBuilder {
    /// Opens what the service's spec says it needs; `migrations` are its own.
    pub async fn new(ctx: ServiceContext, migrations: &[Migration]) -> anyhow::Result<Self> {
        let spec = ctx.spec;
        let metrics = Metrics::new(spec.name);
        let mut readiness = Readiness::default();
        readiness.observed_by(&metrics);
        let db = if spec.needs(Backend::Database) {
            let url = ctx.config.resolved_database_url();
            let db = Db::connect(&url, spec.name)
                .await
                .with_context(|| format!("{}: database_url {url}", spec.name))?;
            db.migrate("common", COMMON_MIGRATIONS).await?;
            db.migrate(spec.name, migrations).await?;
            readiness.add_probe("database", db.clone());
            Some(db)
        } else {
            None
        };
        let shared = &ctx.backends;
        if spec.needs(Backend::Events) {
            let bus = shared
                .events
                .clone()
                .context("the event bus was not opened")?;
            readiness.add_probe("events", bus);
        }
        if spec.needs(Backend::Cache) {
            let cache = shared.cache.clone().context("the cache was not opened")?;
            readiness.add_probe("cache", cache);
        }
        if spec.needs(Backend::Objects) {
            let objects = shared
                .objects
                .clone()
                .context("object storage was not opened")?;
            readiness.add_probe("objects", objects);
        }
        let (health, health_service) = tonic_health::server::health_reporter();
        Ok(Self {
            ctx,
            db,
            http: Router::new(),
            grpc: tonic::service::Routes::new(health_service),
            readiness,
            health,
            on_shutdown: Vec::new(),
            stopping: CancellationToken::new(),
            tasks: TaskTracker::new(),
            consumer_metrics: ConsumerMetrics::register(&metrics),
            metrics,
        })
    }

    /// Cancelled as soon as the service is told to stop, before requests drain:
    /// long-lived streams (a turn's events, a WebSocket) end on it, telling their
    /// clients to reconnect, so the drain does not wait out the grace period on them.
    pub fn stopping(&self) -> CancellationToken {
        self.stopping.clone()
    }

    /// Runs `task` in the service's task set: background work (consumers, relays,
    /// subscribers) that ends on [`ServiceBuilder::stopping`] and is waited for, within
    /// the grace period, before the process ends.
    pub fn spawn<F>(&self, task: F)
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        self.tasks.spawn(task);
    }

    /// The consumers' metrics of this service, for [`crate::infra::events::consume`].
    pub fn consumer_metrics(&self) -> ConsumerMetrics {
        self.consumer_metrics.clone()
    }

    /// Runs `hook` as soon as the service is told to stop, while requests drain; the
    /// process waits for it (within the grace period) before it ends.
    pub fn on_shutdown<F, Fut>(mut self, hook: F) -> Self
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        self.on_shutdown.push(Box::new(move || Box::pin(hook())));
        self
    }

    /// Adds a backend of the service's own (a vector store, say) to `/readyz`.
    pub fn ready_when<P: crate::readiness::Probe>(
        mut self,
        name: &'static str,
        backend: P,
    ) -> Self {
        self.readiness.add_probe(name, backend);
        self
    }

    pub fn db(&self) -> Option<&Db> {
        self.db.as_ref()
    }

    pub fn context(&self) -> &ServiceContext {
        &self.ctx
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Adds HTTP routes (the gateway's public API, a service's internal endpoints).
    pub fn http(mut self, router: Router) -> Self {
        self.http = self.http.merge(router);
        self
    }

    /// Adds a gRPC service.
    pub fn grpc<S: GrpcService>(mut self, service: S) -> Self {
        self.grpc = self.grpc.add_service(service);
        self
    }

    /// Adds a gRPC service whose every call has its bearer token verified once, before
    /// the handler, by [`crate::auth::grpc::Authenticate`]; handlers read the caller
    /// with [`crate::auth::grpc::caller`].
    pub fn authenticated_grpc<S: GrpcService>(
        self,
        verifier: std::sync::Arc<crate::auth::Verifier>,
        service: S,
    ) -> Self {
        use tower::Layer;
        self.grpc(crate::auth::grpc::Authenticate::new(verifier).layer(service))
    }

    pub fn build(self) -> ServiceApp {
        // The backends' series stay current between readiness probes.
        let readiness = self.readiness.clone();
        let stopping = self.stopping.clone();
        self.tasks.spawn(async move {
            loop {
                readiness.report().await;
                tokio::select! {
                    () = stopping.cancelled() => break,
                    () = tokio::time::sleep(crate::readiness::REFRESH) => {}
                }
            }
        });
        let router = server::router(
            self.ctx.spec.name,
            self.http,
            self.grpc,
            self.readiness,
            self.metrics,
        );
        ServiceApp {
            spec: self.ctx.spec,
            grace: Duration::from_secs(self.ctx.config.shutdown_grace_secs),
            listener: self.ctx.listener,
            router,
            db: self.db,
            health: self.health,
            on_shutdown: self.on_shutdown,
            stopping: self.stopping,
            tasks: self.tasks,
        }
    }
}

/// A built service, ready to run.
pub struct ServiceApp {
    spec: &'static ServiceSpec,
    grace: Duration,
    listener: TcpListener,
    router: Router,
    db: Option<Db>,
    health: tonic_health::server::HealthReporter,
    on_shutdown: Vec<ShutdownHook>,
    stopping: CancellationToken,
    tasks: TaskTracker,
}

impl ServiceApp {
    pub fn spec(&self) -> &'static ServiceSpec {
        self.spec
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound TCP listener has a local address")
    }

    /// Serves until `token` is cancelled, then drains in-flight requests for up to the
    /// grace period and closes the database.
    pub async fn run(self, token: CancellationToken) -> anyhow::Result<()> {
        let name = self.spec.name;
        self.health
            .set_service_status("", tonic_health::ServingStatus::Serving)
            .await;
        tracing::info!(service = name, addr = %self.local_addr(), "serving");
        let in_process =
            crate::grpc_channel::serve_in_process(self.local_addr(), self.router.clone());
        let hooks = self.on_shutdown;
        let told = token.clone();
        let streams = self.stopping.clone();
        let stopping = tokio::spawn(async move {
            told.cancelled().await;
            // From here on, callers in this process reach the closing socket like
            // callers anywhere else.
            drop(in_process);
            streams.cancel();
            for hook in hooks {
                hook().await;
            }
        });
        let result = server::serve(self.listener, self.router, token, self.grace).await;
        if tokio::time::timeout(self.grace, stopping).await.is_err() {
            tracing::warn!(
                service = name,
                "shutdown work did not finish within the grace period"
            );
        }
        self.tasks.close();
        if tokio::time::timeout(self.grace, self.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                service = name,
                tasks = self.tasks.len(),
                "background tasks did not stop within the grace period"
            );
        }
        self.health
            .set_service_status("", tonic_health::ServingStatus::NotServing)
            .await;
        if let Some(db) = self.db {
            db.close().await;
        }
        tracing::info!(service = name, "stopped");
        result.with_context(|| format!("{name} server"))
    }
}

/// Flushes the shared event bus before the process ends, so nothing published is lost.
pub async fn close_backends(backends: &SharedBackends, grace: Duration) {
    if let Some(events) = &backends.events
        && let Err(e) = events.flush(grace).await
    {
        tracing::error!(error = %e, "events not flushed before shutdown");
    }
    telemetry::shutdown().await;
}

/// The whole `main` of a service binary: config, telemetry, listener, backends, build,
/// run until SIGINT/SIGTERM. A start-up problem ends the process with one line naming
/// it and exit code 2 (configuration) or 1 (anything else).
pub fn main<F, Fut>(spec: &'static ServiceSpec, build: F) -> ExitCode
where
    F: FnOnce(ServiceContext) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<ServiceApp>>,
{
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("somagent-{}: cannot start the runtime: {e}", spec.name);
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        let config: CommonConfig = match config::load() {
            Ok(config) => config,
            Err(e) => {
                eprintln!("somagent-{}: {e}", spec.name);
                return ExitCode::from(2);
            }
        };
        if let Err(e) = telemetry::init(spec.name, &config.log) {
            eprintln!(
                "somagent-{}: configuration: invalid value for `log.level`: {e}",
                spec.name
            );
            return ExitCode::from(2);
        }
        let token = shutdown::on_signal();
        match start(spec, config, token, build).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) if e.downcast_ref::<config::ConfigError>().is_some() => {
                eprintln!("somagent-{}: {e}", spec.name);
                ExitCode::from(2)
            }
            Err(e) => {
                eprintln!("somagent-{}: {e:#}", spec.name);
                ExitCode::FAILURE
            }
        }
    })
}

async fn start<F, Fut>(
    spec: &'static ServiceSpec,
    config: CommonConfig,
    token: CancellationToken,
    build: F,
) -> anyhow::Result<()>
where
    F: FnOnce(ServiceContext) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<ServiceApp>>,
{
    let addr = SocketAddr::new(config.bind, config.port(spec));
    let listener = server::bind(spec.name, addr).await?;
    let backends = SharedBackends::open(&config, spec.backends).await?;
    let grace = Duration::from_secs(config.shutdown_grace_secs);
    let ctx = ServiceContext {
        spec,
        config,
        backends: backends.clone(),
        listener,
    };
    let app = build(ctx).await?;
    let result = app.run(token).await;
    close_backends(&backends, grace).await;
    result
}

/// A service running in this process on a port of its own, for tests: what
/// [`spawn_service`] started.
pub struct RunningService {
    addr: SocketAddr,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
    backends: SharedBackends,
    grace: Duration,
}

impl RunningService {
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:<port>`, for HTTP and gRPC clients alike.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops it as SIGTERM would (streams end, requests drain, tasks are joined, the
    /// bus is flushed) and returns how its run ended.
    pub async fn stop(self) -> anyhow::Result<()> {
        self.stop.cancel();
        let result = self.task.await.context("the service's task panicked")?;
        close_backends(&self.backends, self.grace).await;
        result
    }
}

/// Builds `spec`'s service with `build` on `config` and runs it on 127.0.0.1 at a free
/// port (whatever `config.ports` says), opening the backends its spec needs: a test
/// starts any service in process the way its binary would, without choosing ports.
pub async fn spawn_service<F, Fut>(
    spec: &'static ServiceSpec,
    config: CommonConfig,
    build: F,
) -> anyhow::Result<RunningService>
where
    F: FnOnce(ServiceContext) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<ServiceApp>>,
{
    let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
    let backends = SharedBackends::open(&config, spec.backends).await?;
    let grace = Duration::from_secs(config.shutdown_grace_secs);
    let app = build(ServiceContext {
        spec,
        config,
        backends: backends.clone(),
        listener,
    })
    .await?;
    let addr = app.local_addr();
    let stop = CancellationToken::new();
    let task = tokio::spawn(app.run(stop.clone()));
    Ok(RunningService {
        addr,
        stop,
        task,
        backends,
        grace,
    })
}
