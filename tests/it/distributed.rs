//! The platform as 13 separate servers, wired by nothing but what the deployment files
//! say. The Helm chart is rendered with `helm template`, each Deployment's container
//! environment is taken as rendered (ConfigMap and Secret references resolved, each
//! Service's host name mapped to a loopback address of its own), and the 13 binaries
//! run as 13 processes on the real PostgreSQL, Kafka, Redis and Temporal: onboarding and
//! a chat turn must work through that gateway. The compose file is read through compose-go, as Docker
//! Compose would read it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{Value, json};
use somagent_common::service::SERVICES;

use crate::helpers::{Backends, bin, free_ports, login, required_env};
use crate::lifecycle::call;

const RELEASE: &str = "somagent";
const ADMIN_PASSWORD: &str = "the distributed admin passphrase";
const ALICE_PASSWORD: &str = "alice's distributed passphrase";
const BOB_PASSWORD: &str = "bob's distributed passphrase";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

use somagent_common::testing::in_ci as ci;

/// A tool from the cache `scripts/ci-services.sh` builds into, or from `PATH`. Missing:
/// a failure under `CI=true`, else the test says so and does not run.
fn tool(name: &str) -> Option<PathBuf> {
    let cache = std::env::var("SOMAGENT_CACHE").map_or_else(
        |_| PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(".cache/somagent"),
        PathBuf::from,
    );
    let found = std::iter::once(cache.join("bin"))
        .chain(std::env::split_paths(
            &std::env::var_os("PATH").unwrap_or_default(),
        ))
        .chain(std::iter::once(PathBuf::from("/usr/local/go/bin")))
        .map(|dir| dir.join(name))
        .find(|path| path.is_file());
    if found.is_none() {
        assert!(
            !ci(),
            "CI=true but `{name}` is not installed: run scripts/ci-services.sh"
        );
        eprintln!("`{name}` is not installed: this test does not run");
    }
    found
}

#[tokio::test]
async fn the_rendered_chart_runs_as_thirteen_processes_that_serve_onboarding_and_chat() {
    let (Some(helm), Some(_), Some(_), Some(_), Some(_)) = (
        tool("helm"),
        required_env("DATABASE_URL"),
        required_env("CACHE_URL"),
        required_env("EVENTS_URL"),
        required_env("WORKFLOWS_URL"),
    ) else {
        return;
    };
    let started = Instant::now();
    let work = tempfile::tempdir().unwrap();
    let llm = somagent_scripted_llm::ScriptedLlm::start().await.unwrap();

    // The CI servers, each with a database, key prefix, topics and task queue of its own.
    let backend: BTreeMap<String, String> = Backends::Distributed.env().await.into_iter().collect();
    let objects = std::env::var("SOMAGENT_TEST_OBJECTS_URL")
        .unwrap_or_else(|_| format!("file://{}", work.path().join("objects").display()));
    let ports = free_ports();
    let services: serde_json::Map<String, Value> = ports
        .iter()
        .map(|(name, port)| ((*name).to_owned(), json!({ "port": port })))
        .collect();
    let config = json!({
        "databaseUrl": backend["SOMAGENT_DATABASE_URL"],
        "cacheUrl": backend["SOMAGENT_CACHE_URL"],
        "eventsUrl": backend["SOMAGENT_EVENTS_URL"],
        "workflowsUrl": backend["SOMAGENT_WORKFLOWS_URL"],
        "vectorsUrl": backend.get("SOMAGENT_VECTORS_URL").map_or("local://", String::as_str),
        "opaUrl": backend.get("SOMAGENT_POLICY__OPA_URL").map_or("", String::as_str),
        "objectsUrl": objects,
        "llmBaseUrl": llm.base_url(),
        "llmModel": "scripted",
        "dataDir": work.path().join("data").display().to_string(),
        "logLevel": "warn",
    });
    let values = json!({
        "config": config,
        "services": services,
        "bootstrapAdmin": { "secretName": "admin-password" },
    });
    // JSON is YAML: helm reads it as a values file.
    let values_file = work.path().join("values.json");
    std::fs::write(&values_file, values.to_string()).unwrap();
    let rendered = Command::new(&helm)
        .args(["template", RELEASE])
        .arg(repo().join("helm/somagent"))
        .arg("--values")
        .arg(&values_file)
        .output()
        .expect("helm runs");
    assert!(
        rendered.status.success(),
        "helm template: {}",
        String::from_utf8_lossy(&rendered.stderr)
    );
    let manifests = documents(&String::from_utf8(rendered.stdout).unwrap());

    let secrets = secrets();
    let fleet = Fleet::start(&manifests, &secrets, work.path());
    let gateway = format!("http://{}:{}", pod_address("gateway"), ports["gateway"]);
    fleet.ready(&ports).await;
    let outcome = futures::FutureExt::catch_unwind(std::panic::AssertUnwindSafe(async {
        journeys(&gateway).await;
    }))
    .await;
    if let Err(panic) = outcome {
        eprintln!("{}", fleet.logs());
        std::panic::resume_unwind(panic);
    }
    assert!(
        llm.requests()
            .iter()
            .any(|r| r.to_string().contains("hello from thirteen processes")),
        "the turn reached the scripted upstream named in the chart's values"
    );
    // Nobody made a credential of its own: every service used the one it was given.
    for made in ["service-issuer-key", "service-key"] {
        assert!(
            !work.path().join("data").join(made).exists(),
            "a service made its own {made} instead of using the Secret"
        );
    }
    eprintln!(
        "13 processes from the rendered chart: onboarding and a chat turn in {:.1} s",
        started.elapsed().as_secs_f64()
    );
}

/// The identity journey (the platform admin onboards a tenant, its admin adds a user, the
/// user signs in and sees itself) and a chat turn by that tenant, all through the gateway.
async fn journeys(gateway: &str) {
    let client = reqwest::Client::new();
    let root = login(&client, gateway, "default", "admin", ADMIN_PASSWORD).await;
    let (status, acme) = call(
        &client,
        Method::POST,
        &format!("{gateway}/v1/tenants"),
        &root,
        Some(json!({"slug": "acme", "display_name": "Acme", "admin": {"username": "alice", "password": ALICE_PASSWORD}})),
    )
    .await;
    assert_eq!(status, 201, "{acme}");
    let alice = login(&client, gateway, "acme", "alice", ALICE_PASSWORD).await;
    let (status, bob) = call(
        &client,
        Method::POST,
        &format!("{gateway}/v1/users"),
        &alice,
        Some(json!({"username": "bob", "password": BOB_PASSWORD, "roles": ["operator"]})),
    )
    .await;
    assert_eq!(status, 201, "{bob}");
    let bob = login(&client, gateway, "acme", "bob", BOB_PASSWORD).await;
    let (status, me) = call(
        &client,
        Method::GET,
        &format!("{gateway}/v1/me"),
        &bob,
        None,
    )
    .await;
    assert_eq!(status, 200, "{me}");
    assert_eq!(me["tenant"], acme["id"], "{me}");
    assert_eq!(me["username"], "bob", "{me}");
    assert_eq!(me["roles"], json!(["operator"]), "{me}");

    // A turn: the gateway, orchestrator, identity (service tokens), policy, settings and
    // slm each in their own process.
    let (status, session) = call(
        &client,
        Method::POST,
        &format!("{gateway}/v1/sessions"),
        &bob,
        Some(json!({})),
    )
    .await;
    assert_eq!(status, 201, "{session}");
    let id = session["session_id"].as_str().unwrap();
    let (status, answer) = call(
        &client,
        Method::POST,
        &format!("{gateway}/v1/sessions/{id}/messages"),
        &bob,
        Some(json!({"content": "hello from thirteen processes"})),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["outcome"], "completed", "{answer}");
    assert_eq!(
        answer["message"]["content"],
        "Echo: hello from thirteen processes"
    );
}

/// Where service `name`'s pod runs in this test: a loopback address of its own (Linux
/// routes all of 127.0.0.0/8 to the loopback interface), as each pod has its own IP.
fn pod_address(name: &str) -> String {
    let index = SERVICES
        .iter()
        .position(|s| s.name == name)
        .unwrap_or_else(|| panic!("{name} is not a service"));
    format!("127.0.0.{}", 10 + index)
}

/// The documents of a multi-document YAML stream, as JSON.
fn documents(yaml: &str) -> Vec<Value> {
    yaml.split("\n---")
        .filter_map(|doc| {
            let value: Value = serde_norway::from_str(doc).expect("helm renders valid YAML");
            (!value.is_null()).then_some(value)
        })
        .collect()
}

/// The Secrets a deployer creates before installing (values.yaml): a random root, each
/// service's credential derived from it, the master key and the admin's first password.
fn secrets() -> BTreeMap<String, BTreeMap<String, String>> {
    let root = random_base64();
    let mut all = BTreeMap::new();
    for service in SERVICES {
        all.insert(
            format!("{RELEASE}-service-key-{}", service.name),
            BTreeMap::from([("service-key".to_owned(), service_key(&root, service.name))]),
        );
    }
    all.insert(
        format!("{RELEASE}-service-issuer-key"),
        BTreeMap::from([("issuer-key".to_owned(), root)]),
    );
    all.insert(
        format!("{RELEASE}-master-key"),
        BTreeMap::from([("master-key".to_owned(), random_base64())]),
    );
    all.insert(
        "admin-password".to_owned(),
        BTreeMap::from([("password".to_owned(), ADMIN_PASSWORD.to_owned())]),
    );
    all
}

/// 32 random bytes in base64, as `openssl rand -base64 32` makes them.
fn random_base64() -> String {
    let mut bytes = [0u8; 32];
    aws_lc_rs::rand::fill(&mut bytes).unwrap();
    data_encoding::BASE64.encode(&bytes)
}

/// `service`'s credential, as a deployer gets it: `somagent keys service-key <service>`
/// with the root in the environment.
fn service_key(root: &str, service: &str) -> String {
    let output = Command::new(bin("somagent"))
        .args(["keys", "service-key", service])
        .env("SOMAGENT_SERVICE_ISSUER_KEY", root)
        .output()
        .expect("somagent runs");
    assert!(
        output.status.success(),
        "somagent keys service-key {service}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap().trim().to_owned()
}

/// The 13 services as OS processes, killed when dropped.
struct Fleet {
    children: Vec<(String, Child)>,
    logs: PathBuf,
}

impl Fleet {
    /// Starts each rendered Deployment's command with exactly its rendered environment.
    fn start(
        manifests: &[Value],
        secrets: &BTreeMap<String, BTreeMap<String, String>>,
        work: &Path,
    ) -> Self {
        let of_kind = |kind: &'static str| manifests.iter().filter(move |m| m["kind"] == kind);
        let config_maps: BTreeMap<&str, &Value> = of_kind("ConfigMap")
            .map(|m| (m["metadata"]["name"].as_str().unwrap(), &m["data"]))
            .collect();
        let hosts: Vec<(&str, String)> = of_kind("Service")
            .map(|m| {
                let service = m["spec"]["selector"]["app.kubernetes.io/name"]
                    .as_str()
                    .unwrap();
                (
                    m["metadata"]["name"].as_str().unwrap(),
                    pod_address(service),
                )
            })
            .collect();
        let logs = work.join("logs");
        std::fs::create_dir_all(&logs).unwrap();
        let mut children = Vec::new();
        for deployment in of_kind("Deployment") {
            let pod = &deployment["spec"]["template"]["spec"];
            let container = &pod["containers"][0];
            let name = container["name"].as_str().unwrap().to_owned();
            let mut env = container_env(container, &config_maps, secrets, &hosts);
            // The internet-facing gateway uses no database and is given no way into one.
            if name == "gateway" {
                assert!(
                    !env.contains_key("SOMAGENT_DATABASE_URL"),
                    "the gateway is given the database"
                );
            } else {
                assert!(env.contains_key("SOMAGENT_DATABASE_URL"), "{name}");
            }
            // `0.0.0.0` in a pod is the pod's own address; here, its loopback address.
            // Nothing listens on 127.0.0.1, so a service that dials "localhost" for
            // another fails here as it would in a cluster.
            if env.get("SOMAGENT_BIND").is_some_and(|b| b == "0.0.0.0") {
                env.insert("SOMAGENT_BIND".into(), pod_address(&name));
            }
            let data_dir = &env["SOMAGENT_DATA_DIR"];
            std::fs::create_dir_all(data_dir).unwrap();
            let command = container["command"][0].as_str().unwrap();
            let binary = Path::new(command).file_name().unwrap().to_str().unwrap();
            let log = std::fs::File::create(logs.join(format!("{name}.log"))).unwrap();
            let child = Command::new(bin(binary))
                .env_clear()
                .envs(&env)
                // What the image gives every container: its PATH, and the data
                // directory as the service user's home.
                .env("PATH", "/usr/local/bin:/usr/bin:/bin")
                .env("HOME", data_dir)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .unwrap_or_else(|e| panic!("{binary} starts: {e}"));
            children.push((name, child));
        }
        assert_eq!(children.len(), SERVICES.len(), "one Deployment per service");
        Self { children, logs }
    }

    /// Waits until every service answers `/readyz`, or fails with their logs.
    async fn ready(&self, ports: &BTreeMap<&str, u16>) {
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(90);
        for (name, port) in ports {
            let url = format!("http://{}:{port}/readyz", pod_address(name));
            loop {
                if let Ok(r) = client.get(&url).send().await
                    && r.status().is_success()
                {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "{name} was not ready within 90 s\n{}",
                    self.logs()
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }

    /// The last lines each service wrote, for a failing test to show.
    fn logs(&self) -> String {
        let mut out = String::new();
        for (name, _) in &self.children {
            let text =
                std::fs::read_to_string(self.logs.join(format!("{name}.log"))).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            out.push_str(&format!("--- {name}\n"));
            for line in &lines[lines.len().saturating_sub(15)..] {
                out.push_str(line);
                out.push('\n');
            }
        }
        out
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        for (_, child) in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A container's environment as Kubernetes builds it: `envFrom` first, then `env`
/// (which wins), references resolved; each rendered Service's host name becomes the
/// address its pod runs at here.
fn container_env(
    container: &Value,
    config_maps: &BTreeMap<&str, &Value>,
    secrets: &BTreeMap<String, BTreeMap<String, String>>,
    hosts: &[(&str, String)],
) -> BTreeMap<String, String> {
    let secret = |name: &str, key: &str| -> String {
        secrets
            .get(name)
            .and_then(|s| s.get(key))
            .unwrap_or_else(|| panic!("the chart refers to Secret {name} key {key}, which a deployer was not told to create"))
            .clone()
    };
    let mut env = BTreeMap::new();
    for source in container["envFrom"].as_array().into_iter().flatten() {
        if let Some(name) = source["configMapRef"]["name"].as_str() {
            let data = config_maps
                .get(name)
                .unwrap_or_else(|| panic!("ConfigMap {name} is not rendered"));
            for (key, value) in data.as_object().unwrap() {
                env.insert(key.clone(), value.as_str().unwrap().to_owned());
            }
        } else if let Some(name) = source["secretRef"]["name"].as_str() {
            let keys = secrets
                .get(name)
                .unwrap_or_else(|| panic!("Secret {name} is not one a deployer creates"));
            env.extend(keys.clone());
        }
    }
    for var in container["env"].as_array().into_iter().flatten() {
        let name = var["name"].as_str().unwrap().to_owned();
        let value = if let Some(value) = var["value"].as_str() {
            value.to_owned()
        } else if let Some(reference) = var["valueFrom"]["secretKeyRef"].as_object() {
            secret(
                reference["name"].as_str().unwrap(),
                reference["key"].as_str().unwrap(),
            )
        } else if let Some(reference) = var["valueFrom"]["configMapKeyRef"].as_object() {
            config_maps[reference["name"].as_str().unwrap()][reference["key"].as_str().unwrap()]
                .as_str()
                .unwrap()
                .to_owned()
        } else {
            panic!("{name}: a kind of env value this test does not resolve: {var}");
        };
        env.insert(name, value);
    }
    for value in env.values_mut() {
        for (host, address) in hosts {
            *value = value.replace(&format!("//{host}:"), &format!("//{address}:"));
        }
    }
    env
}

#[test]
fn the_compose_stack_wires_every_service_and_publishes_only_the_gateway() {
    let Some(go) = tool("go") else {
        return;
    };
    // Built from the source beside this test, so a cached older build cannot answer.
    let out = tempfile::tempdir().unwrap();
    let checker = out.path().join("compose-check");
    let built = Command::new(go)
        .args(["build", "-o"])
        .arg(&checker)
        .arg(".")
        .current_dir(repo().join("scripts/ci/compose-check"))
        .output()
        .expect("go runs");
    assert!(
        built.status.success(),
        "compose-check builds: {}",
        String::from_utf8_lossy(&built.stderr)
    );
    let loaded = Command::new(&checker)
        .arg("-json")
        .arg(repo().join("docker-compose.stack.yml"))
        .env_remove("SOMAGENT_PUBLIC_URL")
        .output()
        .unwrap();
    assert!(
        loaded.status.success(),
        "compose-go loads the stack: {}",
        String::from_utf8_lossy(&loaded.stderr)
    );
    let project: Value = serde_json::from_slice(&loaded.stdout).unwrap();
    let services = project["services"].as_object().unwrap();

    let published: Vec<&str> = services
        .iter()
        .filter(|(_, s)| s["ports"].as_array().is_some_and(|p| !p.is_empty()))
        .map(|(name, _)| name.as_str())
        .collect();
    assert_eq!(published, ["gateway"], "only the gateway is published");
    assert_eq!(
        services["gateway"]["ports"][0]["published"],
        SERVICES[0].port.to_string()
    );

    for spec in SERVICES {
        let service = &services[spec.name];
        let env = &service["environment"];
        assert_eq!(
            service["command"][0],
            format!("/usr/local/bin/somagent-{}", spec.name)
        );
        for other in SERVICES {
            assert_eq!(
                env[format!("SOMAGENT_ENDPOINTS__{}", other.config_key().to_uppercase())],
                format!("http://{}:{}", other.name, other.port),
                "{} does not know where {} is",
                spec.name,
                other.name
            );
        }
        assert_eq!(env["SOMAGENT_PUBLIC_URL"], "http://localhost:10000");
        assert_eq!(env["SOMAGENT_BIND"], "0.0.0.0");
        // Its own credential, from a file the deployer made, never inline.
        assert_eq!(env["SOMAGENT_SERVICE_KEY_FILE"], "/run/secrets/service-key");
        assert!(env.get("SOMAGENT_SERVICE_KEY").is_none(), "{}", spec.name);
        let mounted: Vec<(&str, &str)> = service["secrets"]
            .as_array()
            .unwrap_or_else(|| panic!("{} mounts no secrets", spec.name))
            .iter()
            .map(|s| (s["source"].as_str().unwrap(), s["target"].as_str().unwrap()))
            .collect();
        let own = format!("service-key-{}", spec.name);
        let mut expected = vec![(own.as_str(), "service-key")];
        if spec.name == "identity" {
            expected.push(("service-issuer-key", "service-issuer-key"));
        }
        // The services that keep secrets get the key that seals them (on PostgreSQL,
        // identity and constitution refuse to start without it).
        if [
            "identity",
            "constitution",
            "settings",
            "tool",
            "notification",
            "capsule-repo",
        ]
        .contains(&spec.name)
        {
            expected.push(("master-key", "master-key"));
            assert_eq!(env["SOMAGENT_MASTER_KEY_FILE"], "/run/secrets/master-key");
        }
        if spec.name == "identity" {
            assert_eq!(
                env["SOMAGENT_SERVICE_ISSUER_KEY_FILE"],
                "/run/secrets/service-issuer-key"
            );
        } else {
            assert!(
                env.get("SOMAGENT_SERVICE_ISSUER_KEY_FILE").is_none(),
                "{} holds the root",
                spec.name
            );
        }
        assert_eq!(mounted, expected, "{}'s credentials", spec.name);
        // The internet-facing gateway uses no database and holds no way into one.
        if spec.name == "gateway" {
            for key in ["SOMAGENT_DATABASE_URL", "AWS_SECRET_ACCESS_KEY"] {
                assert!(env.get(key).is_none(), "the gateway is given {key}");
            }
        } else {
            assert!(env.get("SOMAGENT_DATABASE_URL").is_some(), "{}", spec.name);
        }
        let source = &project["secrets"][own.as_str()]["file"];
        assert!(
            source
                .as_str()
                .is_some_and(|f| f.ends_with(&format!("/{own}"))),
            "{own} comes from a file the deployer makes: {source}"
        );
    }
}
