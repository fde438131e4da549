//! `somagent up`: every service in one process over one set of shared backends.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use somagent_common::app::{ServiceApp, ServiceContext, close_backends};
use somagent_common::config::{self, CommonConfig, ConfigError};
use somagent_common::infra::SharedBackends;
use somagent_common::service::{Backend, SERVICES, ServiceSpec};
use somagent_common::{server, shutdown, telemetry};
use tokio::net::TcpListener;

type Build = fn(ServiceContext) -> Pin<Box<dyn Future<Output = anyhow::Result<ServiceApp>>>>;

/// Each service's `build`, by name; the order is the table's.
fn builder(name: &str) -> Option<Build> {
    macro_rules! boxed {
        ($krate:ident) => {
            Some(|ctx| Box::pin($krate::build(ctx)))
        };
    }
    match name {
        "gateway" => boxed!(somagent_gateway),
        "orchestrator" => boxed!(somagent_orchestrator),
        "identity" => boxed!(somagent_identity),
        "policy" => boxed!(somagent_policy),
        "memory" => boxed!(somagent_memory),
        "slm" => boxed!(somagent_slm),
        "analytics" => boxed!(somagent_analytics),
        "constitution" => boxed!(somagent_constitution),
        "billing" => boxed!(somagent_billing),
        "notification" => boxed!(somagent_notification),
        "capsule-repo" => boxed!(somagent_capsule_repo),
        "settings" => boxed!(somagent_settings),
        "tool" => boxed!(somagent_tool),
        _ => None,
    }
}

pub(crate) fn load(
    data_dir: Option<PathBuf>,
    log_format: Option<String>,
) -> Result<CommonConfig, ConfigError> {
    let mut figment = config::figment()?;
    if let Some(dir) = data_dir {
        figment = figment.merge(figment::providers::Serialized::default("data_dir", dir));
    }
    if let Some(format) = log_format {
        figment = figment.merge(figment::providers::Serialized::default(
            "log.format",
            format,
        ));
    }
    let config: CommonConfig = figment.extract()?;
    config.validate()?;
    check_sections(&figment, &config)?;
    Ok(config)
}

/// The services' own settings, checked before anything opens so that a bad one stops
/// start-up with one line naming it (each service reads them again when it builds).
fn check_sections(figment: &figment::Figment, config: &CommonConfig) -> Result<(), ConfigError> {
    use somagent_common::service::{GATEWAY, IDENTITY, POLICY, SLM};
    let gateway: somagent_gateway::config::GatewayConfig = config::section_of(figment, &GATEWAY)?;
    gateway.trusted_proxies()?;
    gateway.cors_origins()?;
    config::section_of::<somagent_identity::config::IdentityConfig>(figment, &IDENTITY)?;
    config::section_of::<somagent_policy::config::PolicyConfig>(figment, &POLICY)?.opa_url()?;
    somagent_slm::config::SlmConfig::resolve(config::section_of(figment, &SLM)?, &config.data_dir)?;
    Ok(())
}

pub async fn up(data_dir: Option<PathBuf>, log_format: Option<String>) -> ExitCode {
    let config = match load(data_dir, log_format) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("somagent: {e}");
            return ExitCode::from(2);
        }
    };
    // Fail closed before anything opens: without a master key on PostgreSQL, secrets
    // would have to be stored in plaintext.
    if let Err(e) = somagent_common::secrets::load_sealer(&config) {
        eprintln!("somagent: {e}");
        return ExitCode::from(2);
    }
    if let Err(e) = telemetry::init("somagent", &config.log) {
        eprintln!("somagent: configuration: invalid value for `log.level`: {e}");
        return ExitCode::from(2);
    }
    match run(config).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.downcast_ref::<ConfigError>().is_some() => {
            eprintln!("somagent: {e}");
            ExitCode::from(2)
        }
        Err(e) => {
            eprintln!("somagent: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(config: CommonConfig) -> anyhow::Result<()> {
    std::fs::create_dir_all(&config.data_dir).with_context(|| {
        format!(
            "cannot create the data directory {}",
            config.data_dir.display()
        )
    })?;
    let token = shutdown::on_signal();

    // Take every port first, so a taken one stops start-up before anything is opened.
    let mut listeners: Vec<(&'static ServiceSpec, TcpListener)> = Vec::new();
    for spec in SERVICES {
        let addr = SocketAddr::new(config.bind, config.port(spec));
        listeners.push((spec, server::bind(spec.name, addr).await?));
    }
    let all = [Backend::Events, Backend::Cache, Backend::Objects];
    let backends = SharedBackends::open(&config, &all).await?;

    let mut apps = Vec::new();
    for (spec, listener) in listeners {
        let build = builder(spec.name).with_context(|| format!("no builder for {}", spec.name))?;
        let ctx = ServiceContext {
            spec,
            config: config.clone(),
            backends: backends.clone(),
            listener,
        };
        apps.push(build(ctx).await?);
    }

    let data_dir =
        std::fs::canonicalize(&config.data_dir).unwrap_or_else(|_| config.data_dir.clone());
    println!("SomaAgent is up: {} services in one process", apps.len());
    println!("data directory: {}", data_dir.display());
    for app in &apps {
        println!("  {:<13} http://{}", app.spec().name, app.local_addr());
    }
    println!("Ctrl-C stops it; `somagent status` reports each service's readiness.");

    // One service stopping with an error stops the platform: a partial platform
    // that looks up would be worse than a clear failure.
    let mut tasks = tokio::task::JoinSet::new();
    for app in apps {
        let name = app.spec().name;
        let (child, root) = (token.child_token(), token.clone());
        tasks.spawn(async move {
            let result = app.run(child).await;
            if result.is_err() {
                root.cancel();
            }
            result.with_context(|| format!("{name} stopped"))
        });
    }
    let mut failed = None;
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok(Ok(())) => {}
            Ok(Err(e)) => failed = failed.or(Some(e)),
            Err(e) => failed = failed.or(Some(anyhow::anyhow!("a service panicked: {e}"))),
        }
    }
    close_backends(&backends, Duration::from_secs(config.shutdown_grace_secs)).await;
    eprintln!("somagent: stopped");
    failed.map_or(Ok(()), Err)
}
