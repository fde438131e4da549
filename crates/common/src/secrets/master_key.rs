//! Where the master keys come from. `SOMAGENT_MASTER_KEY` (or `_FILE`, a Kubernetes
//! Secret) lists them, the current first; without it, an embedded (SQLite) platform
//! keeps them in `<data_dir>/master-key` (mode 0600), made on first start, while a
//! platform on PostgreSQL refuses to start: its data lives elsewhere than a key file
//! next to it could protect, and falling back to plaintext would fail open.

use std::io::Write;
use std::path::{Path, PathBuf};

use zeroize::Zeroizing;

use super::sealer::{MasterKey, Sealer};
use crate::config::{CommonConfig, ConfigError, DatabaseUrl};

/// The file in the data directory that holds an embedded platform's master keys.
pub const MASTER_KEY_FILE: &str = "master-key";
const KEY: &str = "SOMAGENT_MASTER_KEY";

/// The configured master keys, or the data directory's (made there on first use).
pub fn load_sealer(config: &CommonConfig) -> Result<Sealer, ConfigError> {
    if let Some(list) = crate::config::secret_from_env("MASTER_KEY")? {
        let list = Zeroizing::new(list);
        return Sealer::parse(&list).map_err(|e| ConfigError::invalid(KEY, e));
    }
    if matches!(config.resolved_database_url(), DatabaseUrl::Postgres(_)) {
        return Err(ConfigError::invalid(
            KEY,
            "is required with a PostgreSQL database_url: signing keys and TOTP secrets are \
             sealed with it (set SOMAGENT_MASTER_KEY or SOMAGENT_MASTER_KEY_FILE to a base64 \
             32-byte key, e.g. `openssl rand -base64 32`)",
        ));
    }
    load_or_create(&config.data_dir)
}

/// The keys in `data_dir`'s key file, made with one fresh key if there is none yet.
/// Two processes starting together agree on the first file written.
pub fn load_or_create(data_dir: &Path) -> Result<Sealer, ConfigError> {
    let path = data_dir.join(MASTER_KEY_FILE);
    if let Some(sealer) = read(&path)? {
        return Ok(sealer);
    }
    std::fs::create_dir_all(data_dir).map_err(|e| unusable(&path, e))?;
    let (_, entry) = MasterKey::generate();
    match create_private(&path) {
        Ok(mut file) => {
            writeln!(file, "{}", *entry)
                .and_then(|()| file.sync_all())
                .map_err(|e| unusable(&path, e))?;
            Sealer::parse(&entry).map_err(|e| ConfigError::invalid(path_key(&path), e))
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            // Another process won the race; give it a moment to finish writing.
            for _ in 0..50 {
                if let Some(sealer) = read(&path)? {
                    return Ok(sealer);
                }
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            Err(unusable(
                &path,
                std::io::Error::other("the file stays empty"),
            ))
        }
        Err(e) => Err(unusable(&path, e)),
    }
}

/// Puts a fresh key first in `data_dir`'s key file, keeping the others so what they
/// sealed still opens; replaces the file in one rename. Returns the new key list.
pub fn add_new_key(data_dir: &Path) -> Result<Sealer, ConfigError> {
    let path = data_dir.join(MASTER_KEY_FILE);
    let old = match std::fs::read_to_string(&path) {
        Ok(text) => Zeroizing::new(text),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Zeroizing::new(String::new()),
        Err(e) => return Err(unusable(&path, e)),
    };
    let (_, entry) = MasterKey::generate();
    write_keys(&path, &format!("{}\n{}", *entry, old.trim()))
}

/// Leaves only the current key in `data_dir`'s key file, once nothing is sealed under
/// the others.
pub fn forget_older_keys(data_dir: &Path) -> Result<Sealer, ConfigError> {
    let path = data_dir.join(MASTER_KEY_FILE);
    let text = Zeroizing::new(std::fs::read_to_string(&path).map_err(|e| unusable(&path, e))?);
    let first = text
        .split(|c: char| c == ',' || c.is_whitespace())
        .find(|e| !e.is_empty())
        .ok_or_else(|| ConfigError::invalid(path_key(&path), "holds no key"))?;
    write_keys(&path, first)
}

fn write_keys(path: &Path, list: &str) -> Result<Sealer, ConfigError> {
    let sealer = Sealer::parse(list).map_err(|e| ConfigError::invalid(path_key(path), e))?;
    let temporary = path.with_extension(format!("new-{}", std::process::id()));
    let _ = std::fs::remove_file(&temporary);
    let written = create_private(&temporary).and_then(|mut file| {
        writeln!(file, "{}", list.trim())?;
        file.sync_all()
    });
    written
        .and_then(|()| std::fs::rename(&temporary, path))
        .map_err(|e| {
            let _ = std::fs::remove_file(&temporary);
            unusable(path, e)
        })?;
    Ok(sealer)
}

fn read(path: &Path) -> Result<Option<Sealer>, ConfigError> {
    match std::fs::read_to_string(path) {
        Ok(text) if !text.trim().is_empty() => {
            let text = Zeroizing::new(text);
            Sealer::parse(&text)
                .map(Some)
                .map_err(|e| ConfigError::invalid(path_key(path), e))
        }
        Ok(_) => Ok(None),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(unusable(path, e)),
    }
}

fn create_private(path: &Path) -> std::io::Result<std::fs::File> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options.open(path)
}

fn path_key(path: &Path) -> String {
    PathBuf::from(path).display().to_string()
}

fn unusable(path: &Path, e: std::io::Error) -> ConfigError {
    ConfigError::invalid("master key", format!("cannot use {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_data_directory_key_is_made_once_private_and_rotates() {
        let dir = tempfile::tempdir().unwrap();
        let first = load_or_create(dir.path()).unwrap();
        let again = load_or_create(dir.path()).unwrap();
        assert_eq!(first.current_key_id(), again.current_key_id());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join(MASTER_KEY_FILE))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let sealed = first.seal(b"s", "a");
        let rotated = add_new_key(dir.path()).unwrap();
        assert_ne!(rotated.current_key_id(), first.current_key_id());
        assert_eq!(rotated.open(&sealed, "a").unwrap().as_slice(), b"s");
        let resealed = rotated.seal(b"s", "a");
        let pruned = forget_older_keys(dir.path()).unwrap();
        assert_eq!(pruned.key_ids().count(), 1);
        assert!(pruned.open(&sealed, "a").is_err());
        assert_eq!(pruned.open(&resealed, "a").unwrap().as_slice(), b"s");
    }
}
