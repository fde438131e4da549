//! Service credentials: how a service proves to identity which service it is, to get a
//! short-lived token that acts for a user (DESIGN §1.4).
//!
//! Identity alone holds the root, the [`ServiceIssuerKey`]
//! (`SOMAGENT_SERVICE_ISSUER_KEY[_FILE]`; on one machine made once as
//! `<data dir>/service-issuer-key`, mode 0600). Each service holds only its own
//! [`ServiceCredential`] (`SOMAGENT_SERVICE_KEY[_FILE]`), derived from the root as
//! base64url-no-pad(HMAC-SHA256(root, "somagent service credential v1\0" + name)), so
//! identity recomputes it for the name a caller claims: one service's credential, the
//! gateway's or a leaked one, never passes as another's.

use std::io::Write;
use std::path::Path;

use aws_lc_rs::hmac;

use crate::config::ConfigError;
use crate::service::ServiceSpec;

/// The gRPC metadata that carries the calling service's credential.
pub const SERVICE_KEY_HEADER: &str = "x-somagent-service-key";

/// The file the root is made in on one machine.
pub const ISSUER_KEY_FILE: &str = "service-issuer-key";

/// Separates these MACs from any other use of the root.
const CONTEXT: &[u8] = b"somagent service credential v1\0";

/// The root every service credential derives from. Only identity (and a deployer
/// printing credentials) should ever hold it.
#[derive(Clone)]
pub struct ServiceIssuerKey(hmac::Key);

impl std::fmt::Debug for ServiceIssuerKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ServiceIssuerKey(***)")
    }
}

impl ServiceIssuerKey {
    pub fn new(root: &str) -> Self {
        Self(hmac::Key::new(hmac::HMAC_SHA256, root.as_bytes()))
    }

    /// The configured root, or the one in `data_dir` (made there on first use).
    pub fn load(data_dir: &Path) -> Result<Self, ConfigError> {
        if let Some(root) = crate::config::secret_from_env("SERVICE_ISSUER_KEY")? {
            return Ok(Self::new(root.trim()));
        }
        Ok(Self::new(&read_or_create(&data_dir.join(ISSUER_KEY_FILE))?))
    }

    /// The configured root only, never a file made on the spot (a deployer's CLI).
    pub fn from_env() -> Result<Option<Self>, ConfigError> {
        Ok(crate::config::secret_from_env("SERVICE_ISSUER_KEY")?.map(|r| Self::new(r.trim())))
    }

    /// The credential of the service named `service`.
    pub fn credential_for(&self, service: &str) -> ServiceCredential {
        ServiceCredential(data_encoding::BASE64URL_NOPAD.encode(self.mac(service).as_ref()))
    }

    /// True if `presented` is the credential of `service`, compared in constant time.
    pub fn verifies(&self, service: &str, presented: &str) -> bool {
        let Ok(presented) = data_encoding::BASE64URL_NOPAD.decode(presented.as_bytes()) else {
            return false;
        };
        hmac::verify(&self.0, &message(service), &presented).is_ok()
    }

    fn mac(&self, service: &str) -> hmac::Tag {
        hmac::sign(&self.0, &message(service))
    }
}

fn message(service: &str) -> Vec<u8> {
    [CONTEXT, service.as_bytes()].concat()
}

/// One service's own credential, presented to identity with its name.
#[derive(Clone)]
pub struct ServiceCredential(String);

impl std::fmt::Debug for ServiceCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ServiceCredential(***)")
    }
}

impl ServiceCredential {
    /// `SOMAGENT_SERVICE_KEY[_FILE]`, or else derived for `service` from the root
    /// (`somagent up`, where every service runs beside identity).
    pub fn load(data_dir: &Path, service: &ServiceSpec) -> Result<Self, ConfigError> {
        if let Some(key) = crate::config::secret_from_env("SERVICE_KEY")? {
            return Ok(Self(key.trim().to_owned()));
        }
        Ok(ServiceIssuerKey::load(data_dir)?.credential_for(service.name))
    }

    /// The credential as a deployer hands it to the service.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// `request` with this credential in its metadata.
    pub fn attach<T>(&self, mut request: tonic::Request<T>) -> tonic::Request<T> {
        if let Ok(value) = self.0.parse() {
            request.metadata_mut().insert(SERVICE_KEY_HEADER, value);
        }
        request
    }
}

/// The secret in `path`, or a new random one written there (mode 0600). Processes
/// starting together agree on the first one written.
fn read_or_create(path: &Path) -> Result<String, ConfigError> {
    let unreadable = |e: std::io::Error| {
        ConfigError::invalid(
            "service issuer key",
            format!("cannot use {}: {e}", path.display()),
        )
    };
    match std::fs::read_to_string(path) {
        Ok(key) if !key.trim().is_empty() => return Ok(key.trim().to_owned()),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(unreadable(e)),
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(unreadable)?;
    }
    let mut bytes = [0u8; 32];
    aws_lc_rs::rand::fill(&mut bytes).expect("the system random generator works");
    let key = data_encoding::BASE64URL_NOPAD.encode(&bytes);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    match options.open(path) {
        Ok(mut file) => {
            writeln!(file, "{key}").map_err(unreadable)?;
            Ok(key)
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            // Another process won the race; give it a moment to finish writing.
            for _ in 0..50 {
                let key = std::fs::read_to_string(path).map_err(unreadable)?;
                if !key.trim().is_empty() {
                    return Ok(key.trim().to_owned());
                }
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            Err(unreadable(std::io::Error::other("the file stays empty")))
        }
        Err(e) => Err(unreadable(e)),
    }
}
