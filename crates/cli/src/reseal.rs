//! `somagent keys rotate`: re-seals every stored secret of identity (TOTP secrets,
//! token signing keys), constitution (its signing key), tool (the tenants' tool
//! credentials) and settings (the tenants' secrets) under the current master key.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use somagent_common::config::CommonConfig;
use somagent_common::infra::db::{COMMON_MIGRATIONS, Db, Migration};
use somagent_common::secrets::{ResealScope, master_key};

pub async fn rotate(data_dir: Option<PathBuf>) -> ExitCode {
    let config = match crate::platform::load(data_dir, None) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("somagent: {e}");
            return ExitCode::from(2);
        }
    };
    match run(&config).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("somagent: keys rotate: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(config: &CommonConfig) -> anyhow::Result<()> {
    // Configured keys are the operator's to rotate; a data directory's key file is
    // ours: a fresh key goes first, the older ones stay until everything is re-sealed.
    let configured = somagent_common::config::secret_from_env("MASTER_KEY")?.is_some();
    let sealer = if configured {
        somagent_common::secrets::load_sealer(config)?
    } else {
        // Refuses a PostgreSQL platform without a configured key, like start-up does.
        somagent_common::secrets::load_sealer(config)?;
        master_key::add_new_key(&config.data_dir)?
    };
    let sealer = Arc::new(sealer);
    eprintln!(
        "somagent: re-sealing under master key {}",
        sealer.current_key_id()
    );
    let identity = open(config, "identity", somagent_identity::MIGRATIONS).await?;
    let resealed = somagent_identity::store::IdentityStore::new(identity.clone(), sealer.clone())
        .reseal(ResealScope::NotCurrent)
        .await
        .context("identity")?;
    eprintln!("somagent: identity: {resealed} records re-sealed");
    identity.close().await;
    let constitution = open(config, "constitution", somagent_constitution::MIGRATIONS).await?;
    let resealed = somagent_constitution::reseal(
        constitution.clone(),
        sealer.clone(),
        ResealScope::NotCurrent,
    )
    .await
    .context("constitution")?;
    eprintln!("somagent: constitution: {resealed} records re-sealed");
    constitution.close().await;
    let tool = open(config, "tool", somagent_tool::MIGRATIONS).await?;
    let resealed = somagent_tool::reseal(tool.clone(), sealer.clone(), ResealScope::NotCurrent)
        .await
        .context("tool")?;
    eprintln!("somagent: tool: {resealed} records re-sealed");
    tool.close().await;
    let settings = open(config, "settings", somagent_settings::MIGRATIONS).await?;
    let resealed =
        somagent_settings::reseal(settings.clone(), sealer.clone(), ResealScope::NotCurrent)
            .await
            .context("settings")?;
    eprintln!("somagent: settings: {resealed} secrets re-sealed");
    settings.close().await;
    let notification = open(config, "notification", somagent_notification::MIGRATIONS).await?;
    let resealed = somagent_notification::reseal(
        notification.clone(),
        sealer.clone(),
        ResealScope::NotCurrent,
    )
    .await
    .context("notification")?;
    eprintln!("somagent: notification: {resealed} webhook secrets re-sealed");
    notification.close().await;
    let capsules = open(config, "capsule-repo", somagent_capsule_repo::MIGRATIONS).await?;
    let resealed =
        somagent_capsule_repo::reseal(capsules.clone(), sealer.clone(), ResealScope::NotCurrent)
            .await
            .context("capsule-repo")?;
    eprintln!("somagent: capsule-repo: {resealed} records re-sealed");
    capsules.close().await;
    if !configured {
        master_key::forget_older_keys(&config.data_dir)?;
        eprintln!("somagent: older master keys removed from the data directory");
    } else if sealer.key_ids().count() > 1 {
        eprintln!(
            "somagent: every record is sealed under {}; the older keys can leave SOMAGENT_MASTER_KEY",
            sealer.current_key_id()
        );
    }
    Ok(())
}

async fn open(config: &CommonConfig, service: &str, own: &[Migration]) -> anyhow::Result<Db> {
    let url = config.resolved_database_url();
    let db = Db::connect(&url, service)
        .await
        .with_context(|| format!("{service}: database_url {url}"))?;
    db.migrate("common", COMMON_MIGRATIONS).await?;
    db.migrate(service, own).await?;
    Ok(db)
}
