//! Configuration: code defaults ← TOML file (`SOMAGENT_CONFIG`) ← environment
//! (`SOMAGENT_…`, `__` between nested keys) ← `SOMAGENT_…_FILE` secrets.
//!
//! Every service reads the same layered sources into its own type, which flattens
//! [`CommonConfig`] and adds its own keys. A bad value stops start-up with a message
//! naming the key and the source it came from.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use url::Url;

use crate::service::{SERVICES, ServiceSpec};

/// Keys every service shares: where it listens and which backend serves each concern.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct CommonConfig {
    /// Where the embedded backends keep their files.
    pub data_dir: PathBuf,
    /// The address services listen on.
    pub bind: IpAddr,
    /// Port per service, over the defaults of the one port table ([`SERVICES`]).
    pub ports: BTreeMap<String, u16>,
    /// Relational store; unset means one SQLite file per service in `data_dir`.
    pub database_url: Option<DatabaseUrl>,
    pub events_url: EventsUrl,
    pub cache_url: CacheUrl,
    /// Object storage; unset means `data_dir/objects`.
    pub objects_url: Option<ObjectsUrl>,
    /// Where durable workflows run: `local://` (journaled in the relational store) or
    /// `temporal://host:port[?namespace=…&task_queue=…]`.
    pub workflows_url: WorkflowsUrl,
    /// Where memory keeps its vectors: `local://` (the platform's own store, indexed in
    /// process) or `qdrant://host:6334[?api_key=…&prefix=…]`.
    pub vectors_url: VectorsUrl,
    /// Where analytics keeps its warehouse: `local://` (its own database) or
    /// `clickhouse://[user[:password]@]host:8123/database[?secure=true]`.
    pub analytics_url: AnalyticsUrl,
    pub log: LogConfig,
    /// How long shutdown waits for in-flight work before it stops anyway.
    pub shutdown_grace_secs: u64,
    /// The gateway's public base URL, also the built-in token issuer (`iss`); unset
    /// means `http://127.0.0.1:<gateway port>`.
    pub public_url: Option<String>,
    /// Where each service is reached by the others (`http://identity:10002` in a
    /// cluster); unset means `http://127.0.0.1:<its port>`.
    pub endpoints: BTreeMap<String, String>,
}

impl Default for CommonConfig {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from(".somagent"),
            bind: IpAddr::from([127, 0, 0, 1]),
            ports: BTreeMap::new(),
            database_url: None,
            events_url: EventsUrl::Local { path: None },
            cache_url: CacheUrl::Memory,
            objects_url: None,
            workflows_url: WorkflowsUrl::Local,
            vectors_url: VectorsUrl::Local,
            analytics_url: AnalyticsUrl::Local,
            log: LogConfig::default(),
            shutdown_grace_secs: 30,
            public_url: None,
            endpoints: BTreeMap::new(),
        }
    }
}

impl CommonConfig {
    /// The port `service` listens on: the configured one or the table's default.
    pub fn port(&self, service: &ServiceSpec) -> u16 {
        self.ports
            .get(&service.config_key())
            .copied()
            .unwrap_or(service.port)
    }

    /// The base URL other services reach `service` at.
    /// A lazily connecting gRPC channel to `service`: connects within 5 s, and with
    /// `timeout` each call ends after that long (none for calls that stream as long as
    /// they need).
    pub fn channel(
        &self,
        service: &ServiceSpec,
        timeout: Option<std::time::Duration>,
    ) -> anyhow::Result<crate::grpc_channel::Channel> {
        let url = self.endpoint(service);
        let mut endpoint = tonic::transport::Endpoint::from_shared(url.clone())
            .map_err(|e| anyhow::anyhow!("endpoints.{} `{url}`: {e}", service.name))?
            .connect_timeout(std::time::Duration::from_secs(5));
        if let Some(timeout) = timeout {
            endpoint = endpoint.timeout(timeout);
        }
        Ok(crate::grpc_channel::Channel::new(
            &url,
            endpoint.connect_lazy(),
            timeout,
        ))
    }

    pub fn endpoint(&self, service: &ServiceSpec) -> String {
        self.endpoints
            .get(&service.config_key())
            .cloned()
            .unwrap_or_else(|| format!("http://127.0.0.1:{}", self.port(service)))
    }

    /// The built-in issuer: the gateway's public base URL, without a trailing slash.
    pub fn issuer(&self) -> String {
        self.public_url
            .clone()
            .unwrap_or_else(|| format!("http://127.0.0.1:{}", self.port(&crate::service::GATEWAY)))
            .trim_end_matches('/')
            .to_owned()
    }

    /// Cross-field checks that serde alone cannot express.
    pub fn validate(&self) -> Result<(), ConfigError> {
        for name in self.ports.keys() {
            if !SERVICES.iter().any(|s| s.config_key() == *name) {
                return Err(ConfigError::invalid(
                    format!("ports.{name}"),
                    "no service has this name",
                ));
            }
        }
        let mut seen = BTreeMap::new();
        for service in SERVICES {
            let port = self.port(service);
            if port == 0 {
                continue;
            }
            if let Some(other) = seen.insert(port, service.name) {
                return Err(ConfigError::invalid(
                    format!("ports.{}", service.config_key()),
                    format!("port {port} is also given to {other}"),
                ));
            }
        }
        for name in self.endpoints.keys() {
            if !SERVICES.iter().any(|s| s.config_key() == *name) {
                return Err(ConfigError::invalid(
                    format!("endpoints.{name}"),
                    "no service has this name",
                ));
            }
        }
        for (key, url) in self
            .endpoints
            .iter()
            .map(|(k, v)| (format!("endpoints.{k}"), v))
            .chain(self.public_url.iter().map(|u| ("public_url".to_owned(), u)))
        {
            http_url(&key, url)?;
        }
        if self.shutdown_grace_secs == 0 {
            return Err(ConfigError::invalid(
                "shutdown_grace_secs",
                "must be at least 1",
            ));
        }
        Ok(())
    }

    pub fn resolved_database_url(&self) -> DatabaseUrl {
        self.database_url
            .clone()
            .unwrap_or_else(|| DatabaseUrl::Sqlite {
                path: self.data_dir.join("{service}.db"),
            })
    }

    pub fn resolved_objects_url(&self) -> ObjectsUrl {
        self.objects_url
            .clone()
            .unwrap_or_else(|| ObjectsUrl::File(self.data_dir.join("objects")))
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct LogConfig {
    pub format: LogFormat,
    /// An `EnvFilter` directive such as `info` or `info,somagent_common=debug`;
    /// `RUST_LOG` wins when set.
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            format: LogFormat::Json,
            level: "info".into(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Json,
    Pretty,
}

/// A configuration problem, said in one line that names the key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration: {0}")]
    Source(String),
    #[error("configuration: invalid value for `{key}`: {message}")]
    Invalid { key: String, message: String },
}

impl ConfigError {
    pub fn invalid(key: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Invalid {
            key: key.into(),
            message: message.into(),
        }
    }
}

impl From<figment::Error> for ConfigError {
    fn from(error: figment::Error) -> Self {
        // figment names the key and where its value came from; keep only the first
        // error so start-up prints one line.
        let Some(first) = error.into_iter().next() else {
            return Self::Source("unreadable configuration".into());
        };
        if first.path.is_empty() {
            return Self::Source(first.to_string());
        }
        let key = first.path.join(".").to_ascii_lowercase();
        let keys: Vec<&str> = first.path.iter().map(String::as_str).collect();
        let origin = match (&first.metadata, &first.profile) {
            (Some(meta), _) if meta.source.is_some() => meta
                .source
                .as_ref()
                .map(|s| s.to_string())
                .unwrap_or_default(),
            (Some(meta), _) if meta.name.contains("environment") => format!(
                "environment variable SOMAGENT_{}",
                keys.join("__").to_ascii_uppercase()
            ),
            (Some(meta), Some(profile)) => meta.interpolate(profile, &keys),
            _ => String::new(),
        };
        let message = if origin.is_empty() {
            first.kind.to_string()
        } else {
            format!("{} (from {origin})", first.kind)
        };
        Self::Invalid { key, message }
    }
}

/// Loads a service's configuration from the layered sources and validates its common
/// part.
pub fn load<T: DeserializeOwned + AsRef<CommonConfig>>() -> Result<T, ConfigError> {
    let config: T = figment()?.extract()?;
    config.as_ref().validate()?;
    Ok(config)
}

impl AsRef<CommonConfig> for CommonConfig {
    fn as_ref(&self) -> &CommonConfig {
        self
    }
}

/// `raw` as an http(s) URL, or the error naming `key`.
pub fn http_url(key: &str, raw: &str) -> Result<Url, ConfigError> {
    let url =
        Url::parse(raw.trim()).map_err(|e| ConfigError::invalid(key, format!("`{raw}`: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(ConfigError::invalid(
            key,
            format!("`{raw}` must be an http:// or https:// URL"),
        ));
    }
    Ok(url)
}

/// A service's own settings: the `[<service>]` table of the file, and
/// `SOMAGENT_<SERVICE>__<KEY>` (or `…_FILE` for a secret) in the environment, over the
/// type's defaults. The type should refuse unknown fields, so a misspelt key stops
/// start-up like a bad value does, naming it.
pub fn section<T: DeserializeOwned + Default>(service: &ServiceSpec) -> Result<T, ConfigError> {
    section_of(&figment()?, service)
}

/// [`section`] over given sources.
pub fn section_of<T: DeserializeOwned + Default>(
    sources: &Figment,
    service: &ServiceSpec,
) -> Result<T, ConfigError> {
    let key = service.config_key();
    if sources.find_value(&key).is_err() {
        return Ok(T::default());
    }
    sources
        .focus(&key)
        .extract()
        .map_err(|error: figment::Error| {
            // Name the key from the top (`gateway.rate_limit_tenant`), as it is written.
            match error.into_iter().next() {
                Some(mut first) => {
                    first.path.insert(0, key.clone());
                    ConfigError::from(first)
                }
                None => ConfigError::Source(format!("unreadable `{key}` settings")),
            }
        })
}

/// The layered sources, for callers that add their own layer (the CLI's flags) before
/// extracting.
pub fn figment() -> Result<Figment, ConfigError> {
    let mut figment = Figment::new();
    if let Ok(path) = std::env::var("SOMAGENT_CONFIG") {
        if !Path::new(&path).is_file() {
            return Err(ConfigError::invalid(
                "SOMAGENT_CONFIG",
                format!("no configuration file at {path}"),
            ));
        }
        figment = figment.merge(Toml::file_exact(path));
    }
    figment = figment.merge(
        Env::prefixed("SOMAGENT_")
            .filter(|key| {
                let key = key.as_str();
                key != "config" && !key.starts_with("test_") && !key.ends_with("_file")
            })
            .split("__"),
    );
    for (name, path) in std::env::vars() {
        let Some(key) = name
            .strip_prefix("SOMAGENT_")
            .and_then(|k| k.strip_suffix("_FILE"))
        else {
            continue;
        };
        if key.starts_with("TEST_") {
            continue;
        }
        let value = std::fs::read_to_string(&path).map_err(|e| {
            ConfigError::invalid(
                name.as_str(),
                format!("cannot read secret file {path}: {e}"),
            )
        })?;
        let key = key.to_ascii_lowercase().replace("__", ".");
        figment = figment.merge(Serialized::default(
            &key,
            value.trim_end_matches(['\r', '\n']),
        ));
    }
    Ok(figment)
}

/// A secret a service reads at start: `SOMAGENT_<NAME>`, or the contents of the file
/// named by `SOMAGENT_<NAME>_FILE` (trailing newline dropped). Unset or empty is `None`.
pub fn secret_from_env(name: &str) -> Result<Option<String>, ConfigError> {
    let var = format!("SOMAGENT_{name}");
    if let Ok(path) = std::env::var(format!("{var}_FILE")) {
        let value = std::fs::read_to_string(&path).map_err(|e| {
            ConfigError::invalid(
                format!("{var}_FILE"),
                format!("cannot read secret file {path}: {e}"),
            )
        })?;
        return Ok(Some(value.trim_end_matches(['\r', '\n']).to_owned()).filter(|v| !v.is_empty()));
    }
    Ok(std::env::var(&var).ok().filter(|v| !v.is_empty()))
}

/// Turns a URL-ish config string into its scheme, or says which schemes are known.
fn scheme<'a>(value: &'a str, known: &str) -> Result<(&'a str, &'a str), String> {
    value
        .split_once("://")
        .ok_or_else(|| format!("`{}` is not a URL (expected {known})", redact(value)))
}

/// Hides a password in a URL so it can go into an error or a log line.
pub fn redact(value: &str) -> String {
    match Url::parse(value) {
        Ok(mut url) if url.password().is_some() => {
            let _ = url.set_password(Some("***"));
            url.to_string()
        }
        _ => value.to_owned(),
    }
}

macro_rules! string_backed {
    ($ty:ident) => {
        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let raw = String::deserialize(d)?;
                raw.parse().map_err(serde::de::Error::custom)
            }
        }
        impl Serialize for $ty {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.raw())
            }
        }
    };
}

/// `sqlite://<path>` (the path may hold `{service}`) or `postgres://…`.
#[derive(Clone, PartialEq, Eq)]
pub enum DatabaseUrl {
    Sqlite { path: PathBuf },
    Postgres(String),
}

impl DatabaseUrl {
    fn raw(&self) -> String {
        match self {
            Self::Sqlite { path } => format!("sqlite://{}", path.display()),
            Self::Postgres(url) => url.clone(),
        }
    }
}

impl FromStr for DatabaseUrl {
    type Err = String;
    fn from_str(value: &str) -> Result<Self, String> {
        const KNOWN: &str = "sqlite://<path> or postgres://…";
        match scheme(value, KNOWN)? {
            ("sqlite", path) if !path.is_empty() => Ok(Self::Sqlite {
                path: PathBuf::from(path.split('?').next().unwrap_or(path)),
            }),
            ("postgres" | "postgresql", _) => Url::parse(value)
                .map(|_| Self::Postgres(value.to_owned()))
                .map_err(|e| format!("`{}` is not a valid URL: {e}", redact(value))),
            (other, _) => Err(format!("unknown scheme `{other}` (expected {KNOWN})")),
        }
    }
}

/// `local://` (a durable log in `data_dir/events.db`), `local://<path>`, or
/// `kafka://host:port[,host:port…][?prefix=…&partitions=…&replication=…]`.
#[derive(Clone, PartialEq, Eq)]
pub enum EventsUrl {
    Local { path: Option<PathBuf> },
    Kafka(String),
}

impl EventsUrl {
    fn raw(&self) -> String {
        match self {
            Self::Local { path: None } => "local://".into(),
            Self::Local { path: Some(p) } => format!("local://{}", p.display()),
            Self::Kafka(url) => url.clone(),
        }
    }
}

impl FromStr for EventsUrl {
    type Err = String;
    fn from_str(value: &str) -> Result<Self, String> {
        const KNOWN: &str = "local:// or kafka://host:port";
        match scheme(value, KNOWN)? {
            ("local", "") => Ok(Self::Local { path: None }),
            ("local", path) => Ok(Self::Local {
                path: Some(PathBuf::from(path)),
            }),
            ("kafka", rest) if !rest.is_empty() => Ok(Self::Kafka(value.to_owned())),
            ("kafka", _) => Err("kafka:// needs at least one host:port".into()),
            (other, _) => Err(format!("unknown scheme `{other}` (expected {KNOWN})")),
        }
    }
}

/// `memory://` or `redis://…` / `rediss://…`.
#[derive(Clone, PartialEq, Eq)]
pub enum CacheUrl {
    Memory,
    Redis(String),
}

impl CacheUrl {
    fn raw(&self) -> String {
        match self {
            Self::Memory => "memory://".into(),
            Self::Redis(url) => url.clone(),
        }
    }
}

impl FromStr for CacheUrl {
    type Err = String;
    fn from_str(value: &str) -> Result<Self, String> {
        const KNOWN: &str = "memory:// or redis://host:port";
        match scheme(value, KNOWN)? {
            ("memory", _) => Ok(Self::Memory),
            ("redis" | "rediss", _) => Url::parse(value)
                .map(|_| Self::Redis(value.to_owned()))
                .map_err(|e| format!("`{}` is not a valid URL: {e}", redact(value))),
            (other, _) => Err(format!("unknown scheme `{other}` (expected {KNOWN})")),
        }
    }
}

/// `file://<dir>` or `s3://bucket[?endpoint=…&region=…&access_key_id=…&secret_access_key=…]`
/// (credentials may also come from the usual `AWS_*` variables).
#[derive(Clone, PartialEq, Eq)]
pub enum ObjectsUrl {
    File(PathBuf),
    S3(String),
}

impl ObjectsUrl {
    fn raw(&self) -> String {
        match self {
            Self::File(path) => format!("file://{}", path.display()),
            Self::S3(url) => url.clone(),
        }
    }
}

impl FromStr for ObjectsUrl {
    type Err = String;
    fn from_str(value: &str) -> Result<Self, String> {
        const KNOWN: &str = "file://<dir> or s3://bucket";
        match scheme(value, KNOWN)? {
            ("file", path) if !path.is_empty() => Ok(Self::File(PathBuf::from(path))),
            ("s3", _) => Url::parse(value)
                .ok()
                .filter(|u| u.host_str().is_some_and(|h| !h.is_empty()))
                .map(|_| Self::S3(value.to_owned()))
                .ok_or_else(|| "s3:// needs a bucket name".into()),
            (other, _) => Err(format!("unknown scheme `{other}` (expected {KNOWN})")),
        }
    }
}

/// `local://` or `temporal://host:port[?namespace=…&task_queue=…]` (namespace `default`
/// and task queue `somagent` unless given).
#[derive(Clone, PartialEq, Eq)]
pub enum WorkflowsUrl {
    Local,
    Temporal(String),
}

/// Where a Temporal frontend is and which namespace and task queue the platform uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemporalTarget {
    /// `http://host:port`, for the client.
    pub address: String,
    pub namespace: String,
    pub task_queue: String,
}

impl WorkflowsUrl {
    fn raw(&self) -> String {
        match self {
            Self::Local => "local://".into(),
            Self::Temporal(url) => url.clone(),
        }
    }

    /// The Temporal frontend, namespace and task queue; `None` for the local engine.
    pub fn temporal(&self) -> Option<TemporalTarget> {
        let Self::Temporal(raw) = self else {
            return None;
        };
        // Checked when parsed.
        let url = Url::parse(raw).ok()?;
        let query = |key: &str| {
            url.query_pairs()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v.into_owned())
        };
        Some(TemporalTarget {
            address: format!("http://{}:{}", url.host_str()?, url.port().unwrap_or(7233)),
            namespace: query("namespace").unwrap_or_else(|| "default".into()),
            task_queue: query("task_queue").unwrap_or_else(|| "somagent".into()),
        })
    }
}

impl FromStr for WorkflowsUrl {
    type Err = String;
    fn from_str(value: &str) -> Result<Self, String> {
        const KNOWN: &str = "local:// or temporal://host:port";
        match scheme(value, KNOWN)? {
            ("local", _) => Ok(Self::Local),
            ("temporal", _) => Url::parse(value)
                .ok()
                .filter(|u| u.host_str().is_some_and(|h| !h.is_empty()))
                .map(|_| Self::Temporal(value.to_owned()))
                .ok_or_else(|| "temporal:// needs host:port".into()),
            (other, _) => Err(format!("unknown scheme `{other}` (expected {KNOWN})")),
        }
    }
}

/// `local://` or `qdrant://host:port[?api_key=…&prefix=…]` (port 6334, Qdrant's gRPC,
/// unless given; `prefix` starts the name of every collection the platform makes, so
/// several platforms can share one server).
#[derive(Clone, PartialEq, Eq)]
pub enum VectorsUrl {
    Local,
    Qdrant(String),
}

/// Where a Qdrant server is and how the platform uses it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QdrantTarget {
    /// `http://host:port`, its gRPC endpoint.
    pub address: String,
    pub api_key: Option<String>,
    pub prefix: String,
}

impl VectorsUrl {
    fn raw(&self) -> String {
        match self {
            Self::Local => "local://".into(),
            Self::Qdrant(url) => url.clone(),
        }
    }

    /// The Qdrant server; `None` for the embedded store.
    pub fn qdrant(&self) -> Option<QdrantTarget> {
        let Self::Qdrant(raw) = self else {
            return None;
        };
        // Checked when parsed.
        let url = Url::parse(raw).ok()?;
        let query = |key: &str| {
            url.query_pairs()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v.into_owned())
        };
        Some(QdrantTarget {
            address: format!("http://{}:{}", url.host_str()?, url.port().unwrap_or(6334)),
            api_key: query("api_key").filter(|k| !k.is_empty()),
            prefix: query("prefix").unwrap_or_default(),
        })
    }
}

/// Where analytics keeps its warehouse (`SOMAGENT_ANALYTICS_URL`).
#[derive(Clone, PartialEq, Eq)]
pub enum AnalyticsUrl {
    Local,
    ClickHouse(String),
}

impl AnalyticsUrl {
    fn raw(&self) -> String {
        match self {
            Self::Local => "local://".into(),
            Self::ClickHouse(url) => url.clone(),
        }
    }
}

impl FromStr for AnalyticsUrl {
    type Err = String;
    fn from_str(value: &str) -> Result<Self, String> {
        const KNOWN: &str = "local:// or clickhouse://host:8123/database";
        match scheme(value, KNOWN)? {
            ("local", _) => Ok(Self::Local),
            ("clickhouse", _) => Url::parse(value)
                .ok()
                .filter(|u| u.host_str().is_some_and(|h| !h.is_empty()))
                .map(|_| Self::ClickHouse(value.to_owned()))
                .ok_or_else(|| "clickhouse:// needs a host".into()),
            (other, _) => Err(format!("unknown scheme `{other}` (expected {KNOWN})")),
        }
    }
}

impl FromStr for VectorsUrl {
    type Err = String;
    fn from_str(value: &str) -> Result<Self, String> {
        const KNOWN: &str = "local:// or qdrant://host:port";
        match scheme(value, KNOWN)? {
            ("local", _) => Ok(Self::Local),
            ("qdrant", _) => Url::parse(value)
                .ok()
                .filter(|u| u.host_str().is_some_and(|h| !h.is_empty()))
                .filter(|u| {
                    u.query_pairs().all(|(k, v)| {
                        k != "prefix"
                            || v.bytes()
                                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
                    })
                })
                .map(|_| Self::Qdrant(value.to_owned()))
                .ok_or_else(|| {
                    "qdrant:// needs host:port, and a prefix of letters, digits, `_` or `-`".into()
                }),
            (other, _) => Err(format!("unknown scheme `{other}` (expected {KNOWN})")),
        }
    }
}

string_backed!(VectorsUrl);
string_backed!(AnalyticsUrl);
string_backed!(DatabaseUrl);
string_backed!(WorkflowsUrl);
string_backed!(EventsUrl);
string_backed!(CacheUrl);
string_backed!(ObjectsUrl);

macro_rules! redacted_debug {
    ($($ty:ident),*) => {$(
        impl fmt::Debug for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&redact_query(&redact(&self.raw())))
            }
        }
        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&redact_query(&redact(&self.raw())))
            }
        }
    )*};
}
redacted_debug!(
    AnalyticsUrl,
    DatabaseUrl,
    EventsUrl,
    CacheUrl,
    ObjectsUrl,
    WorkflowsUrl,
    VectorsUrl
);

/// Hides secrets passed as query parameters (`secret_access_key=…`, `password=…`).
fn redact_query(value: &str) -> String {
    let Ok(mut url) = Url::parse(value) else {
        return value.to_owned();
    };
    if url.query().is_none() {
        return value.to_owned();
    }
    let pairs: Vec<(String, String)> = url
        .query_pairs()
        .map(|(k, v)| {
            let secret = k.contains("secret")
                || k.contains("password")
                || k.contains("token")
                || k.contains("key");
            (
                k.into_owned(),
                if secret { "***".into() } else { v.into_owned() },
            )
        })
        .collect();
    url.query_pairs_mut().clear().extend_pairs(pairs);
    url.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Default, Deserialize, PartialEq)]
    #[serde(default, deny_unknown_fields)]
    struct Knobs {
        limit: u32,
        url: Option<String>,
    }

    #[test]
    fn a_section_is_the_services_own_table_and_refuses_what_it_does_not_know() {
        let spec = &crate::service::CAPSULE_REPO;
        let absent = Figment::from(Toml::string("[gateway]\nlimit = 3"));
        assert_eq!(
            section_of::<Knobs>(&absent, spec).unwrap(),
            Knobs::default()
        );

        let given = Figment::from(Toml::string("[capsule_repo]\nlimit = 3\nurl = \"x\""));
        assert_eq!(
            section_of::<Knobs>(&given, spec).unwrap(),
            Knobs {
                limit: 3,
                url: Some("x".into())
            }
        );

        let misspelt = Figment::from(Toml::string("[capsule_repo]\nlimt = 3"));
        let error = section_of::<Knobs>(&misspelt, spec)
            .unwrap_err()
            .to_string();
        assert!(error.contains("limt"), "{error}");

        let wrong = Figment::from(Toml::string("[capsule_repo]\nlimit = -1"));
        let error = section_of::<Knobs>(&wrong, spec).unwrap_err().to_string();
        assert!(error.contains("capsule_repo.limit"), "{error}");
    }

    #[test]
    fn urls_choose_their_backend_by_scheme() {
        assert!(matches!(
            "sqlite://x/{service}.db".parse(),
            Ok(DatabaseUrl::Sqlite { .. })
        ));
        assert!(matches!(
            "postgres://u:p@h/db".parse(),
            Ok(DatabaseUrl::Postgres(_))
        ));
        assert_eq!("local://".parse(), Ok(EventsUrl::Local { path: None }));
        assert!(matches!("kafka://h:9092".parse(), Ok(EventsUrl::Kafka(_))));
        assert_eq!("memory://".parse(), Ok(CacheUrl::Memory));
        assert!(matches!("s3://bucket".parse(), Ok(ObjectsUrl::S3(_))));
        assert_eq!("local://".parse(), Ok(WorkflowsUrl::Local));
        let temporal: WorkflowsUrl = "temporal://h:7233?task_queue=q".parse().unwrap();
        assert_eq!(
            temporal.temporal(),
            Some(TemporalTarget {
                address: "http://h:7233".into(),
                namespace: "default".into(),
                task_queue: "q".into()
            })
        );
        assert!("temporal://".parse::<WorkflowsUrl>().is_err());
        assert_eq!("local://".parse(), Ok(VectorsUrl::Local));
        let qdrant: VectorsUrl = "qdrant://q:7000?api_key=k&prefix=run_1".parse().unwrap();
        assert_eq!(
            qdrant.qdrant(),
            Some(QdrantTarget {
                address: "http://q:7000".into(),
                api_key: Some("k".into()),
                prefix: "run_1".into(),
            })
        );
        assert!(!format!("{qdrant}").contains("api_key=k"), "{qdrant}");
        assert!("qdrant://".parse::<VectorsUrl>().is_err());
        assert!("qdrant://q?prefix=a/b".parse::<VectorsUrl>().is_err());
    }

    #[test]
    fn unknown_schemes_name_the_known_ones() {
        let err = "mysql://h/db".parse::<DatabaseUrl>().unwrap_err();
        assert!(err.contains("unknown scheme `mysql`"), "{err}");
        assert!(err.contains("postgres://"), "{err}");
        let err = "nats://h".parse::<EventsUrl>().unwrap_err();
        assert!(err.contains("kafka://"), "{err}");
        assert!("s3://".parse::<ObjectsUrl>().is_err());
    }

    #[test]
    fn secrets_never_show_in_debug_output() {
        let url: DatabaseUrl = "postgres://u:hunter2@h/db".parse().unwrap();
        assert!(!format!("{url:?}").contains("hunter2"));
        let url: ObjectsUrl = "s3://b?secret_access_key=hunter2&region=x".parse().unwrap();
        assert!(!format!("{url}").contains("hunter2"));
        assert!(format!("{url}").contains("region=x"));
    }

    #[test]
    fn duplicate_ports_are_refused_naming_the_key() {
        let mut config = CommonConfig::default();
        config.ports.insert("identity".into(), 10000);
        let err = config.validate().unwrap_err().to_string();
        assert!(err.contains("ports.identity"), "{err}");
        assert!(err.contains("gateway"), "{err}");
    }
}
