//! Starting the platform's binaries the way a person would, on free ports and a
//! private data directory.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use somagent_common::config::EventsUrl;
use somagent_common::infra::events::{Envelope, EventBus};
use somagent_common::service::SERVICES;

/// The directory holding the workspace's binaries (next to this test's `deps/`).
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>");
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: build the binaries first (cargo build --workspace --bins)",
        path.display()
    );
    path
}

/// Ports nobody listens on right now, one per service. Taken below the kernel's
/// ephemeral range (32768 and up), where the platform's own outgoing connections (to
/// Kafka, PostgreSQL, ...) would otherwise grab a port between this pick and its bind;
/// each test of this process gets ports no other test here was given.
pub fn free_ports() -> BTreeMap<&'static str, u16> {
    use std::sync::atomic::{AtomicU32, Ordering};
    const LOW: u32 = 20_000;
    const SPAN: u32 = 12_000;
    // Where this process's id says, so concurrent test processes spread out.
    static NEXT: std::sync::LazyLock<AtomicU32> =
        std::sync::LazyLock::new(|| AtomicU32::new(std::process::id() % 400 * 30));
    SERVICES
        .iter()
        .map(|s| {
            loop {
                let port = (LOW + NEXT.fetch_add(1, Ordering::SeqCst) % SPAN) as u16;
                if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
                    break (s.name, port);
                }
            }
        })
        .collect()
}

/// A command with a clean SomaAgent environment and the given ports.
pub fn command(binary: &str, ports: &BTreeMap<&str, u16>) -> Command {
    let mut cmd = Command::new(bin(binary));
    for (key, _) in std::env::vars() {
        if key.starts_with("SOMAGENT_") || key == "RUST_LOG" {
            cmd.env_remove(key);
        }
    }
    for (name, port) in ports {
        cmd.env(
            format!("SOMAGENT_PORTS__{}", name.replace('-', "_").to_uppercase()),
            port.to_string(),
        );
    }
    cmd.env("SOMAGENT_LOG__LEVEL", "warn");
    cmd
}

/// A running `somagent up`, killed when dropped.
pub struct Platform {
    pub child: Child,
    pub addresses: BTreeMap<String, String>,
    /// The data directory, when the platform shares it with a [`Rooted`]: kept until
    /// the platform is gone, even if the test let go of its own handle first (a
    /// pattern like `Rooted { platform, .. }` drops the fields it does not name).
    pub data: Option<std::sync::Arc<tempfile::TempDir>>,
}

impl Platform {
    /// Starts `somagent up` and waits until it printed every service's address.
    pub fn start(data_dir: &Path, ports: &BTreeMap<&str, u16>) -> Self {
        Self::start_with(data_dir, ports, &[])
    }

    /// Same as [`Platform::start`] with extra environment variables.
    pub fn start_with(data_dir: &Path, ports: &BTreeMap<&str, u16>, env: &[(&str, &str)]) -> Self {
        let mut child = command("somagent", ports)
            .envs(env.iter().copied())
            .args(["up", "--data-dir"])
            .arg(data_dir)
            .stdout(Stdio::piped())
            // Kept beside the data for a failing test to be read.
            .stderr(
                std::fs::File::create(data_dir.with_extension("log"))
                    .map_or_else(|_| Stdio::null(), Stdio::from),
            )
            .spawn()
            .expect("somagent up starts");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut addresses = BTreeMap::new();
        while addresses.len() < SERVICES.len() {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = rx
                .recv_timeout(left)
                .expect("somagent up prints every service's address in time");
            if let Some((name, url)) = line.trim().split_once(" http://") {
                addresses.insert(name.trim().to_owned(), format!("http://{url}"));
            }
        }
        Self {
            child,
            addresses,
            data: None,
        }
    }

    /// Sends SIGTERM and waits for a clean exit.
    pub fn stop(mut self) -> std::process::ExitStatus {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let deadline = Instant::now() + Duration::from_secs(40);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "somagent up did not stop within 40 s of SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Platform {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A service's Prometheus page (`base` is its address).
pub async fn metrics_page(client: &reqwest::Client, base: &str) -> String {
    client
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// Polls `url` until it answers 200, for up to 30 s.
pub async fn wait_ok(client: &reqwest::Client, url: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(r) = client.get(url).send().await
            && r.status().is_success()
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{url} did not answer 200 in time"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The bootstrap admin's password on platforms started by [`with_root`].
pub const ROOT_PASSWORD: &str = "the platform admin passphrase";

/// Logs in with the password grant and returns the access token.
pub async fn login(
    client: &reqwest::Client,
    gateway: &str,
    tenant: &str,
    username: &str,
    password: &str,
) -> String {
    let response = client
        .post(format!("{gateway}/v1/auth/token"))
        .form(&[
            ("grant_type", "password"),
            ("tenant", tenant),
            ("username", username),
            ("password", password),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "login {tenant}/{username}");
    response.json::<serde_json::Value>().await.unwrap()["access_token"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// A running platform, ready, and its bootstrap admin's token. The data directory lives
/// as long as the platform or `data`, whichever is dropped last.
pub struct Rooted {
    pub platform: Platform,
    pub gateway: String,
    pub client: reqwest::Client,
    pub root: String,
    /// The platform's data directory.
    pub data: std::sync::Arc<tempfile::TempDir>,
    /// The event bus the platform runs on, for a test to read what it published.
    pub events: EventsUrl,
}

/// Starts `somagent up` with [`ROOT_PASSWORD`] and logs its admin in.
pub async fn with_root() -> Rooted {
    with_root_env(&[]).await
}

/// Which backends a platform runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backends {
    /// SQLite files, the local event log and the in-process cache.
    Embedded,
    /// A fresh PostgreSQL database, Redis keys, Kafka topics and a Temporal task queue
    /// of its own, and the OPA server, from `SOMAGENT_TEST_{DATABASE,CACHE,EVENTS,
    /// WORKFLOWS,OPA}_URL` (the last three when set; always under `CI=true`).
    Distributed,
}

impl Backends {
    /// Embedded always; distributed too when the real servers are configured (always
    /// under `CI=true`, where a missing server fails the run).
    pub fn all() -> Vec<Backends> {
        let ci = somagent_common::testing::in_ci();
        let set =
            |c: &str| std::env::var(format!("SOMAGENT_TEST_{c}_URL")).is_ok_and(|v| !v.is_empty());
        let configured = ["DATABASE", "CACHE"].iter().all(|c| set(c));
        let complete = ["DATABASE", "CACHE", "EVENTS", "WORKFLOWS", "OPA"]
            .iter()
            .all(|c| set(c));
        assert!(
            complete || !ci,
            "CI=true but one of SOMAGENT_TEST_{{DATABASE,CACHE,EVENTS,WORKFLOWS,OPA}}_URL is not set: start the servers with scripts/ci-services.sh"
        );
        if configured {
            vec![Backends::Embedded, Backends::Distributed]
        } else {
            eprintln!(
                "the real servers are not configured: this journey runs on the embedded backends only"
            );
            vec![Backends::Embedded]
        }
    }

    /// The environment that points a platform at these backends.
    pub async fn env(self) -> Vec<(String, String)> {
        match self {
            Backends::Embedded => Vec::new(),
            Backends::Distributed => {
                use sqlx::Connection;
                let base = std::env::var("SOMAGENT_TEST_DATABASE_URL").unwrap();
                let name = format!("e2e_{}", uuid::Uuid::new_v4().simple());
                let mut admin = sqlx::PgConnection::connect(&base)
                    .await
                    .expect("the test PostgreSQL accepts connections");
                sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
                    .execute(&mut admin)
                    .await
                    .expect("a fresh database for this platform");
                let mut url = url_of(&base);
                url.set_path(&name);
                // On PostgreSQL the platform refuses to start without a configured
                // master key (secrets at rest); each platform gets its own.
                let mut master_key = [0u8; 32];
                aws_lc_rs::rand::fill(&mut master_key).unwrap();
                let mut env = vec![
                    (
                        "SOMAGENT_MASTER_KEY".into(),
                        data_encoding::BASE64.encode(&master_key),
                    ),
                    ("SOMAGENT_DATABASE_URL".into(), url.to_string()),
                    (
                        "SOMAGENT_CACHE_URL".into(),
                        // Its own keys: counters of other runs must not leak in.
                        format!(
                            "{}?prefix={name}",
                            std::env::var("SOMAGENT_TEST_CACHE_URL").unwrap()
                        ),
                    ),
                ];
                // Policy decisions by the OPA server when one runs.
                if let Ok(opa) = std::env::var("SOMAGENT_TEST_OPA_URL") {
                    env.push(("SOMAGENT_POLICY__OPA_URL".into(), opa));
                }
                // Events on Kafka, topics of its own.
                if let Ok(kafka) = std::env::var("SOMAGENT_TEST_EVENTS_URL") {
                    env.push((
                        "SOMAGENT_EVENTS_URL".into(),
                        format!("{kafka}?prefix={name}"),
                    ));
                }
                // Vectors on Qdrant, collections of its own.
                if let Ok(qdrant) = std::env::var("SOMAGENT_TEST_QDRANT_URL") {
                    env.push((
                        "SOMAGENT_VECTORS_URL".into(),
                        format!("{qdrant}?prefix={name}_"),
                    ));
                }
                // The analytics warehouse on ClickHouse, a database of its own.
                if let Ok(clickhouse) = std::env::var("SOMAGENT_TEST_ANALYTICS_URL") {
                    let mut url = url_of(&clickhouse);
                    url.set_path(&format!("/{name}"));
                    env.push(("SOMAGENT_ANALYTICS_URL".into(), url.to_string()));
                }
                // Turns on Temporal, a task queue of its own.
                if let Ok(temporal) = std::env::var("SOMAGENT_TEST_WORKFLOWS_URL") {
                    env.push((
                        "SOMAGENT_WORKFLOWS_URL".into(),
                        format!("{temporal}?task_queue={name}"),
                    ));
                }
                env
            }
        }
    }
}

/// The event bus a platform started with `env` publishes on.
pub fn events_url(env: &[(&str, &str)]) -> EventsUrl {
    env.iter()
        .rev()
        .find(|(k, _)| *k == "SOMAGENT_EVENTS_URL")
        .map_or(EventsUrl::Local { path: None }, |(_, v)| {
            v.parse().expect("an events URL")
        })
}

/// Connects to the event bus of a platform started with `env` on `data`.
pub async fn platform_bus(env: &[(&str, &str)], data: &Path) -> EventBus {
    EventBus::connect(&events_url(env), data)
        .await
        .expect("the platform's event bus")
}

/// Everything published on `topic` so far, read by a consumer group of its own: waits
/// for the first event (a Kafka group takes seconds to join), then until the topic has
/// been quiet for two seconds.
pub async fn published(bus: &EventBus, topic: &str) -> Vec<Envelope> {
    let group = format!("e2e-{}", uuid::Uuid::new_v4().simple());
    let mut subscription = bus
        .subscribe(&group, &[topic])
        .await
        .expect("a subscription");
    let mut events = Vec::new();
    let mut wait = Duration::from_secs(30);
    while let Ok(delivery) = tokio::time::timeout(wait, subscription.next()).await {
        events.push(delivery.expect("an event").event);
        wait = Duration::from_secs(2);
    }
    events
}

fn url_of(raw: &str) -> reqwest::Url {
    reqwest::Url::parse(raw).expect("a URL")
}

/// [`with_root`] with extra environment variables.
pub async fn with_root_env(env: &[(&str, &str)]) -> Rooted {
    with_root_on(Backends::Embedded, env).await
}

/// [`with_root`] on the given backends, with extra environment variables.
pub async fn with_root_on(backends: Backends, env: &[(&str, &str)]) -> Rooted {
    let data = std::sync::Arc::new(tempfile::tempdir().unwrap());
    let ports = free_ports();
    let backend_env = backends.env().await;
    let mut all: Vec<(&str, &str)> =
        vec![("SOMAGENT_IDENTITY__BOOTSTRAP_ADMIN_PASSWORD", ROOT_PASSWORD)];
    all.extend(backend_env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    all.extend(env.iter().copied());
    let mut platform = Platform::start_with(data.path(), &ports, &all);
    platform.data = Some(data.clone());
    let gateway = platform.addresses["gateway"].clone();
    let client = reqwest::Client::new();
    wait_ok(&client, &format!("{gateway}/readyz")).await;
    let root = login(&client, &gateway, "default", "admin", ROOT_PASSWORD).await;
    Rooted {
        platform,
        gateway,
        client,
        root,
        data,
        events: events_url(&all),
    }
}

/// A scripted OpenAI-compatible upstream, and a platform on `backends` whose default
/// upstream it is (model `scripted`), with `env` besides (later entries win). Keep the
/// upstream bound for as long as the platform runs.
pub async fn with_scripted_llm(
    backends: Backends,
    env: &[(&str, &str)],
) -> (somagent_scripted_llm::ScriptedLlm, Rooted) {
    let llm = somagent_scripted_llm::ScriptedLlm::start().await.unwrap();
    let base = llm.base_url();
    let mut all = vec![
        ("SOMAGENT_SLM__LLM_BASE_URL", base.as_str()),
        ("SOMAGENT_SLM__LLM_MODEL", "scripted"),
    ];
    all.extend_from_slice(env);
    let rooted = with_root_on(backends, &all).await;
    (llm, rooted)
}

pub use somagent_common::testing::required_env;

/// Makes `model` of the default upstream callable under its own name: a platform
/// profile, which only a platform admin (`root`) may set. Scripted models (`fail-500`,
/// `slow-300`, ...) are called this way.
pub async fn platform_profile(client: &reqwest::Client, gateway: &str, root: &str, model: &str) {
    let response = client
        .put(format!("{gateway}/v1/model-profiles/{model}"))
        .bearer_auth(root)
        .json(&serde_json::json!({"scope": "platform", "upstream": "default", "model": model}))
        .send()
        .await
        .unwrap();
    let status = response.status();
    assert_eq!(status, 200, "{model}: {}", response.text().await.unwrap());
}

/// Creates the tenant `globex` with its admin `hank` through `gateway` (as the platform
/// admin `root`) and returns hank's token: someone of another tenant, to show what they
/// cannot see.
/// A viewer of the root's tenant, `reader`, logged in: their token and their id.
pub async fn viewer_of(client: &reqwest::Client, gateway: &str, root: &str) -> (String, String) {
    let (status, user) = crate::lifecycle::call(
        client,
        reqwest::Method::POST,
        &format!("{gateway}/v1/users"),
        root,
        Some(serde_json::json!({"username": "reader", "password": "a long user passphrase", "roles": ["viewer"]})),
    )
    .await;
    assert_eq!(status, 201, "{user}");
    let token = login(
        client,
        gateway,
        "default",
        "reader",
        "a long user passphrase",
    )
    .await;
    let id = crate::lifecycle::me_of(client, gateway, &token).await["subject"]
        .as_str()
        .unwrap()
        .to_owned();
    (token, id)
}

pub async fn other_tenant_admin(client: &reqwest::Client, gateway: &str, root: &str) -> String {
    const PASSWORD: &str = "another tenant's admin passphrase";
    let response = client
        .post(format!("{gateway}/v1/tenants"))
        .bearer_auth(root)
        .json(
            &serde_json::json!({"slug": "globex", "display_name": "Globex",
            "admin": {"username": "hank", "password": PASSWORD}}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201, "{}", response.text().await.unwrap());
    login(client, gateway, "globex", "hank", PASSWORD).await
}

/// Polls `url` until `done` says so of its view, for at most `within`.
pub async fn until(
    client: &reqwest::Client,
    url: &str,
    token: &str,
    what: &str,
    within: Duration,
    done: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = Instant::now() + within;
    loop {
        let (status, view) =
            crate::lifecycle::call(client, reqwest::Method::GET, url, token, None).await;
        assert_eq!(status, 200, "{view}");
        if done(&view) {
            return view;
        }
        assert!(Instant::now() < deadline, "{what}: {view:#}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
