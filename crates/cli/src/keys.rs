//! `somagent keys`: the credentials a deployer hands to the services.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Subcommand;
use somagent_common::auth::{ISSUER_KEY_FILE, ServiceIssuerKey};
use somagent_common::service::SERVICES;

#[derive(Subcommand)]
pub enum KeysCommand {
    /// Print the credential of one service, to give it as its SOMAGENT_SERVICE_KEY.
    ///
    /// Identity alone holds the root, SOMAGENT_SERVICE_ISSUER_KEY (or
    /// SOMAGENT_SERVICE_ISSUER_KEY_FILE); every other service that calls others for a
    /// user gets only its own credential, derived from the root for its name
    /// (base64url of HMAC-SHA256(root, "somagent service credential v1\0" + name)).
    /// Identity checks it against the name the service gives, so one service's
    /// credential never passes as another's. The root is read from
    /// SOMAGENT_SERVICE_ISSUER_KEY[_FILE], or else from the data directory that
    /// `somagent up` made (<data dir>/service-issuer-key) when --data-dir is given.
    ///
    /// Example: SOMAGENT_SERVICE_ISSUER_KEY_FILE=/run/secrets/root somagent keys
    /// service-key orchestrator
    ServiceKey {
        /// The service, as `somagent services` names it (orchestrator, policy, ...).
        service: String,
        /// Read the root from this data directory's service-issuer-key file.
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
    /// Re-seal every stored secret under the current master key.
    ///
    /// Token signing keys and TOTP secrets (identity) and the constitution's signing
    /// key are stored sealed (XChaCha20-Poly1305) under a master key. With
    /// SOMAGENT_MASTER_KEY (or SOMAGENT_MASTER_KEY_FILE) set, its first key is the
    /// current one: put the new key first and keep the old ones after it
    /// (`new-id:<base64>,old-id:<base64>`) on every service, then run this with the
    /// same configuration and the database of the platform; once it succeeds, the old
    /// keys can leave the list. Without it, on an embedded platform, the master key
    /// lives in <data dir>/master-key: this makes a new one there, re-seals everything
    /// and then drops the old one. Stop that platform first. Safe to run again.
    ///
    /// Example: somagent keys rotate --data-dir ./.somagent
    Rotate {
        /// The platform's data directory [default: the configured `data_dir`, else
        /// ./.somagent].
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
}

pub async fn run(command: KeysCommand) -> ExitCode {
    match command {
        KeysCommand::ServiceKey { service, data_dir } => service_key(&service, data_dir),
        KeysCommand::Rotate { data_dir } => crate::reseal::rotate(data_dir).await,
    }
}

fn service_key(service: &str, data_dir: Option<PathBuf>) -> ExitCode {
    if !SERVICES.iter().any(|s| s.name == service) {
        let names: Vec<&str> = SERVICES.iter().map(|s| s.name).collect();
        eprintln!(
            "somagent: `{service}` is not one of the platform's services ({})",
            names.join(", ")
        );
        return ExitCode::from(2);
    }
    let root = match (ServiceIssuerKey::from_env(), data_dir) {
        (Err(e), _) => {
            eprintln!("somagent: {e}");
            return ExitCode::from(2);
        }
        (Ok(Some(root)), _) => root,
        (Ok(None), Some(dir)) => {
            // Read only: a root made here would match no running identity.
            let path = dir.join(ISSUER_KEY_FILE);
            match std::fs::read_to_string(&path) {
                Ok(root) if !root.trim().is_empty() => ServiceIssuerKey::new(root.trim()),
                Ok(_) => {
                    eprintln!("somagent: {} is empty", path.display());
                    return ExitCode::FAILURE;
                }
                Err(e) => {
                    eprintln!("somagent: cannot read {}: {e}", path.display());
                    return ExitCode::FAILURE;
                }
            }
        }
        (Ok(None), None) => {
            eprintln!(
                "somagent: set SOMAGENT_SERVICE_ISSUER_KEY (or SOMAGENT_SERVICE_ISSUER_KEY_FILE), or pass --data-dir"
            );
            return ExitCode::from(2);
        }
    };
    println!("{}", root.credential_for(service).expose());
    ExitCode::SUCCESS
}
