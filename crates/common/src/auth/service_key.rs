//! The platform's service key: the shared secret with which a service proves to identity
//! that it is one of the platform's own, to get a short-lived token that acts for a user
//! (DESIGN §1.4). It comes from `SOMAGENT_SERVICE_KEY` (or `_FILE`, a Kubernetes
//! Secret); on one machine it is made once in the data directory (mode 0600) so every
//! service process there shares it.

use std::io::Write;
use std::path::Path;

use crate::config::ConfigError;

/// The gRPC metadata that carries the key.
pub const SERVICE_KEY_HEADER: &str = "x-somagent-service-key";

const FILE_NAME: &str = "service-key";

#[derive(Clone)]
pub struct ServiceKey(String);

impl std::fmt::Debug for ServiceKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ServiceKey(***)")
    }
}

impl ServiceKey {
    /// The configured key, or the one in `data_dir` (made there on first use).
    pub fn load(data_dir: &Path) -> Result<Self, ConfigError> {
        if let Some(key) = crate::config::secret_from_env("SERVICE_KEY")? {
            return Ok(Self(key));
        }
        let path = data_dir.join(FILE_NAME);
        let unreadable = |e: std::io::Error| {
            ConfigError::invalid("service key", format!("cannot use {}: {e}", path.display()))
        };
        match std::fs::read_to_string(&path) {
            Ok(key) if !key.trim().is_empty() => return Ok(Self(key.trim().to_owned())),
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(unreadable(e)),
        }
        std::fs::create_dir_all(data_dir).map_err(unreadable)?;
        let mut bytes = [0u8; 32];
        aws_lc_rs::rand::fill(&mut bytes).expect("the system random generator works");
        let key = data_encoding::BASE64URL_NOPAD.encode(&bytes);
        let mut options = std::fs::OpenOptions::new();
        // `create_new`: two services starting together agree on the first one written.
        options.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        match options.open(&path) {
            Ok(mut file) => {
                writeln!(file, "{key}").map_err(unreadable)?;
                Ok(Self(key))
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                // Another process won the race; give it a moment to finish writing.
                for _ in 0..50 {
                    let key = std::fs::read_to_string(&path).map_err(unreadable)?;
                    if !key.trim().is_empty() {
                        return Ok(Self(key.trim().to_owned()));
                    }
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                Err(unreadable(std::io::Error::other("the file stays empty")))
            }
            Err(e) => Err(unreadable(e)),
        }
    }

    /// True if `presented` is this key, compared in constant time.
    pub fn matches(&self, presented: &str) -> bool {
        let digest = |v: &str| aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, v.as_bytes());
        aws_lc_rs::constant_time::verify_slices_are_equal(
            digest(&self.0).as_ref(),
            digest(presented).as_ref(),
        )
        .is_ok()
    }

    /// `request` with this key in its metadata.
    pub fn attach<T>(&self, mut request: tonic::Request<T>) -> tonic::Request<T> {
        if let Ok(value) = self.0.parse() {
            request.metadata_mut().insert(SERVICE_KEY_HEADER, value);
        }
        request
    }
}
