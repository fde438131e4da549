//! Secrets at rest: after MFA enrolment, a constitution publish and a signing-key
//! rotation, no file of the data directory (databases, WAL, shared memory, journals,
//! everything) holds a TOTP secret, a tool credential, a tenant secret or private key
//! material in any usual encoding; and
//! `somagent keys rotate` re-seals every record under a new master key without
//! breaking logins.

use std::path::Path;

use serde_json::{Value, json};
use somagent_common::secrets::{MASTER_KEY_FILE, Sealer, master_key};
use somagent_identity::domain::totp::{DIGITS, STEP_SECONDS, TotpSecret};
use sqlx::{Connection, Row};

use crate::helpers::{Platform, ROOT_PASSWORD, Rooted, command, free_ports, with_root};

const ALICE_PASSWORD: &str = "alice's long passphrase";

/// A tool's API key, as a tenant sets it.
const TOOL_CREDENTIAL: &str = "crm-api-key-5b1e0d47c2";
/// A tenant secret, as a tenant admin stores it in settings.
const TENANT_SECRET: &str = "smtp-password-8c03f1aa9e";

fn step_now() -> u64 {
    time::OffsetDateTime::now_utc().unix_timestamp() as u64 / STEP_SECONDS
}

async fn post(client: &reqwest::Client, url: String, token: &str, body: Value) -> (u16, Value) {
    let response = client
        .post(url)
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn password_login(
    client: &reqwest::Client,
    gateway: &str,
    totp: Option<String>,
) -> (u16, Value) {
    let mut form = vec![
        ("grant_type", "password".to_owned()),
        ("tenant", "acme".into()),
        ("username", "alice".into()),
        ("password", ALICE_PASSWORD.into()),
    ];
    if let Some(code) = totp {
        form.push(("totp", code));
    }
    let response = client
        .post(format!("{gateway}/v1/auth/token"))
        .form(&form)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// Every file under `dir`, with its bytes.
fn every_file(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(every_file(&path));
        } else {
            files.push((path.display().to_string(), std::fs::read(&path).unwrap()));
        }
    }
    files
}

/// `(kid, sealed)` of each row of `table` in the service's SQLite database.
/// `(id, sealed value)` rows of `select` in `service`'s database.
async fn sealed_keys(data: &Path, service: &str, select: &str) -> Vec<(String, String)> {
    let url = format!(
        "sqlite://{}?mode=ro",
        data.join(format!("{service}.db")).display()
    );
    let mut db = sqlx::SqliteConnection::connect(&url).await.unwrap();
    let rows = sqlx::query(sqlx::AssertSqlSafe(select.to_owned()))
        .fetch_all(&mut db)
        .await
        .unwrap();
    db.close().await.unwrap();
    rows.iter()
        .map(|r| (r.get::<String, _>(0), r.get::<String, _>(1)))
        .collect()
}

/// The usual ways bytes are written down: raw, base64 (padded or not, standard or URL
/// alphabet), hex of either case.
fn encodings(bytes: &[u8]) -> Vec<Vec<u8>> {
    let mut all = vec![bytes.to_vec()];
    for encoding in [
        &data_encoding::BASE64,
        &data_encoding::BASE64_NOPAD,
        &data_encoding::BASE64URL,
        &data_encoding::BASE64URL_NOPAD,
        &data_encoding::HEXLOWER,
        &data_encoding::HEXUPPER,
    ] {
        all.push(encoding.encode(bytes).into_bytes());
    }
    all
}

/// What an Ed25519 PKCS#8 document gives away: itself in every encoding (its PEM body
/// is its base64, whose first line is searched too) and its 32-byte seed.
fn key_needles(pkcs8: &[u8]) -> Vec<Vec<u8>> {
    let mut needles = encodings(pkcs8);
    let pem_line = data_encoding::BASE64.encode(pkcs8).as_bytes()[..64].to_vec();
    needles.push(pem_line);
    // The seed is the OCTET STRING inside the privateKey OCTET STRING: 04 22 04 20 <32>.
    let at = pkcs8
        .windows(4)
        .position(|w| w == [0x04, 0x22, 0x04, 0x20])
        .expect("an Ed25519 PKCS#8 key");
    needles.extend(encodings(&pkcs8[at + 4..at + 36]));
    needles
}

fn assert_absent(files: &[(String, Vec<u8>)], needles: &[Vec<u8>], what: &str) {
    for (path, bytes) in files {
        for needle in needles {
            assert!(
                !bytes.windows(needle.len()).any(|w| w == needle.as_slice()),
                "{what} found in {path}"
            );
        }
    }
}

#[tokio::test]
async fn no_file_of_the_data_directory_holds_a_secret_and_keys_rotate_keeps_logins() {
    let Rooted {
        platform,
        gateway,
        client,
        root,
        data,
        ..
    } = with_root().await;

    // A user with MFA on.
    let (status, body) = post(
        &client,
        format!("{gateway}/v1/tenants"),
        &root,
        json!({"slug": "acme", "display_name": "Acme", "admin": {"username": "alice", "password": ALICE_PASSWORD}}),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let (status, token) = password_login(&client, &gateway, None).await;
    assert_eq!(status, 200, "{token}");
    let alice = token["access_token"].as_str().unwrap().to_owned();
    let me: Value = client
        .get(format!("{gateway}/v1/me"))
        .bearer_auth(&alice)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let alice_id = me["subject"].as_str().unwrap().to_owned();
    let mfa = |action: &str| format!("{gateway}/v1/users/{alice_id}/mfa/{action}");
    let (status, enrolled) = post(
        &client,
        mfa("enroll"),
        &alice,
        json!({"password": ALICE_PASSWORD}),
    )
    .await;
    assert_eq!(status, 200, "{enrolled}");
    let secret_text = enrolled["secret"].as_str().unwrap().to_owned();
    let secret = TotpSecret::from_base32(&secret_text).unwrap();
    let (status, body) = post(
        &client,
        mfa("verify"),
        &alice,
        json!({"code": secret.code_for_step(step_now(), DIGITS)}),
    )
    .await;
    assert_eq!(status, 200, "{body}");

    // The constitution service signs a new version.
    let current: Value = client
        .get(format!("{gateway}/v1/constitutions/current"))
        .bearer_auth(&root)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let (status, published) = post(
        &client,
        format!("{gateway}/v1/constitutions"),
        &root,
        json!({"document": current["document"]}),
    )
    .await;
    assert_eq!(status, 201, "{published}");

    // A tool whose API key the tenant sets.
    let (status, tool) = post(
        &client,
        format!("{gateway}/v1/tools"),
        &alice,
        json!({"id": "crm", "openapi": {"openapi": "3.0.3", "info": {"title": "CRM", "version": "1"},
            "servers": [{"url": "https://crm.example.invalid"}],
            "components": {"securitySchemes": {"k": {"type": "apiKey", "in": "header", "name": "X-Key"}}},
            "paths": {"/me": {"get": {"operationId": "me"}}}}}),
    )
    .await;
    assert_eq!(status, 201, "{tool}");
    let client_put = client
        .put(format!("{gateway}/v1/tools/crm/credentials"))
        .bearer_auth(&alice)
        .json(&json!({"credential": TOOL_CREDENTIAL}))
        .send()
        .await
        .unwrap();
    assert_eq!(client_put.status(), 200);
    // A tenant secret in settings.
    let stored = client
        .put(format!("{gateway}/v1/settings/secrets/smtp-password"))
        .bearer_auth(&alice)
        .json(&json!({"value": TENANT_SECRET}))
        .send()
        .await
        .unwrap();
    assert_eq!(stored.status(), 200);

    // A second token signing key.
    let (status, rotated) = post(
        &client,
        format!("{gateway}/v1/auth/keys/rotate"),
        &root,
        json!({}),
    )
    .await;
    assert_eq!(status, 200, "{rotated}");
    assert!(platform.stop().success());

    // Every byte on disk, read before anything opens a database again.
    let files = every_file(data.path());
    assert!(files.iter().any(|(p, _)| p.ends_with("identity.db")));

    // The master key the platform made, private to its owner.
    let key_file = data.path().join(MASTER_KEY_FILE);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&key_file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "the master key file is private");
    }
    let sealer = Sealer::parse(&std::fs::read_to_string(&key_file).unwrap()).unwrap();

    let mut needles = encodings(
        &data_encoding::BASE32_NOPAD
            .decode(secret_text.trim_end_matches('=').as_bytes())
            .unwrap(),
    );
    needles.push(secret_text.as_bytes().to_vec());
    needles.push(secret_text.trim_end_matches('=').as_bytes().to_vec());
    assert_absent(&files, &needles, "the TOTP secret");
    assert_absent(
        &files,
        &encodings(TOOL_CREDENTIAL.as_bytes()),
        "the tool credential",
    );
    assert_absent(
        &files,
        &encodings(TENANT_SECRET.as_bytes()),
        "the tenant's secret",
    );
    let tenant_secrets = sealed_keys(
        data.path(),
        "settings",
        "SELECT tenant_id || '/' || name, sealed FROM settings_secrets",
    )
    .await;
    assert_eq!(tenant_secrets.len(), 1);
    let credentials = sealed_keys(
        data.path(),
        "tool",
        "SELECT tenant_id || '/' || tool_id, sealed FROM tool_credentials",
    )
    .await;
    assert_eq!(credentials.len(), 1);

    let identity_keys = sealed_keys(
        data.path(),
        "identity",
        "SELECT kid, pkcs8 FROM signing_keys",
    )
    .await;
    assert!(
        identity_keys.len() >= 2,
        "the first key and the rotated one"
    );
    let constitution_keys = sealed_keys(
        data.path(),
        "constitution",
        "SELECT kid, pkcs8 FROM constitution_keys",
    )
    .await;
    assert_eq!(constitution_keys.len(), 1);
    let capsule_keys = sealed_keys(
        data.path(),
        "capsule-repo",
        "SELECT kid, pkcs8 FROM capsule_platform_keys",
    )
    .await;
    assert_eq!(capsule_keys.len(), 1, "the platform's capsule signing key");
    let opened = identity_keys
        .iter()
        .map(|(kid, sealed)| {
            (
                sealer.open(sealed, &format!("identity/signing_key/{kid}")),
                kid,
            )
        })
        .chain(constitution_keys.iter().map(|(kid, sealed)| {
            (
                sealer.open(sealed, &format!("constitution/signing_key/{kid}")),
                kid,
            )
        }))
        .chain(capsule_keys.iter().map(|(kid, sealed)| {
            (
                sealer.open(sealed, &format!("capsule/platform_key/{kid}")),
                kid,
            )
        }));
    for (pkcs8, kid) in opened {
        let pkcs8 = pkcs8.unwrap_or_else(|e| panic!("key {kid} opens with the master key: {e}"));
        assert_absent(&files, &key_needles(&pkcs8), &format!("private key {kid}"));
    }

    // `somagent keys rotate` on the stopped platform: a new master key seals everything.
    let ports = free_ports();
    let output = command("somagent", &ports)
        .args(["keys", "rotate", "--data-dir"])
        .arg(data.path())
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "keys rotate: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let after = Sealer::parse(&std::fs::read_to_string(&key_file).unwrap()).unwrap();
    assert_ne!(after.current_key_id(), sealer.current_key_id());
    assert_eq!(after.key_ids().count(), 1, "the old master key is gone");
    for (_, sealed) in sealed_keys(
        data.path(),
        "identity",
        "SELECT kid, pkcs8 FROM signing_keys",
    )
    .await
    .into_iter()
    .chain(
        sealed_keys(
            data.path(),
            "constitution",
            "SELECT kid, pkcs8 FROM constitution_keys",
        )
        .await,
    )
    .chain(
        sealed_keys(
            data.path(),
            "capsule-repo",
            "SELECT kid, pkcs8 FROM capsule_platform_keys",
        )
        .await,
    )
    .chain(
        sealed_keys(
            data.path(),
            "tool",
            "SELECT tool_id, sealed FROM tool_credentials",
        )
        .await,
    )
    .chain(
        sealed_keys(
            data.path(),
            "settings",
            "SELECT name, sealed FROM settings_secrets",
        )
        .await,
    ) {
        assert!(after.is_current(&sealed), "re-sealed under the new key");
    }
    // Safe to re-run.
    let again = command("somagent", &ports)
        .args(["keys", "rotate", "--data-dir"])
        .arg(data.path())
        .output()
        .unwrap();
    assert!(
        again.status.success(),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    assert!(master_key::load_or_create(data.path()).is_ok());

    // After a restart, alice still needs her code, and her code still works.
    let platform = Platform::start_with(
        data.path(),
        &ports,
        &[("SOMAGENT_IDENTITY__BOOTSTRAP_ADMIN_PASSWORD", ROOT_PASSWORD)],
    );
    let gateway = platform.addresses["gateway"].clone();
    crate::helpers::wait_ok(&client, &format!("{gateway}/readyz")).await;
    assert_eq!(password_login(&client, &gateway, None).await.0, 401);
    let (status, body) = password_login(
        &client,
        &gateway,
        Some(secret.code_for_step(step_now() + 1, DIGITS)),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    // The tool's credential still opens: the call gets as far as the (unreachable) API.
    let alice = body["access_token"].as_str().unwrap().to_owned();
    let (status, failed) = post(
        &client,
        format!("{gateway}/v1/tools/crm/invoke"),
        &alice,
        json!({"action": "me"}),
    )
    .await;
    assert_eq!(
        (status, failed["error"]["code"].as_str()),
        (502, Some("upstream_failed")),
        "{failed}"
    );
    assert!(platform.stop().success());
}

#[test]
fn a_postgres_platform_without_a_master_key_does_not_start() {
    let data = tempfile::tempdir().unwrap();
    let output = command("somagent", &free_ports())
        .args(["up", "--data-dir"])
        .arg(data.path())
        .env(
            "SOMAGENT_DATABASE_URL",
            "postgres://somagent:somagent@127.0.0.1:1/somagent",
        )
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("SOMAGENT_MASTER_KEY"), "{stderr}");
    assert!(!data.path().join(MASTER_KEY_FILE).exists());
}
