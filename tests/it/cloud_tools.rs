//! The cloud adapters called through the gateway as a client would: AWS signed with
//! Signature V4 (S3 against a real MinIO, which checks the signature; EC2 and Lambda
//! against local servers that recompute it), GCP with a service-account JWT exchanged
//! for a token, Azure with AD client credentials, each token obtained once and reused,
//! lists joined over pages, XML answers read as JSON, and credentials that are checked
//! when set and never shown. The tool service's storage is the same on every backend
//! (other journeys run it on both), so these run on the embedded ones.

use std::sync::{Arc, Mutex};

use axum::extract::{Form, Path, State};
use axum::http::{HeaderMap, Method as HttpMethod, StatusCode, Uri};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::{Backends, Rooted, required_env, with_root_on};
use crate::lifecycle::call;

const AWS_KEY_ID: &str = "AKIDLOCALTEST";
const AWS_SECRET: &str = "aws-secret-7c1e4b";

/// A platform whose tools may reach this machine (the local servers stand in for the
/// clouds' public endpoints).
async fn platform() -> Rooted {
    with_root_on(
        Backends::Embedded,
        &[("SOMAGENT_TOOL__ALLOW_PRIVATE_NETWORKS", "true")],
    )
    .await
}

async fn serve(app: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{address}")
}

/// Sets a tool's credential (and where it is served) as a tenant admin would.
async fn set_credential(r: &Rooted, tool: &str, credential: Value, base_url: &str) -> (u16, Value) {
    let mut body = json!({"credential": credential});
    if !base_url.is_empty() {
        body["base_url"] = json!(base_url);
    }
    call(
        &r.client,
        Method::PUT,
        &format!("{}/v1/tools/{tool}/credentials", r.gateway),
        &r.root,
        Some(body),
    )
    .await
}

async fn invoke(r: &Rooted, tool: &str, action: &str, arguments: Value) -> (u16, Value) {
    call(
        &r.client,
        Method::POST,
        &format!("{}/v1/tools/{tool}/invoke", r.gateway),
        &r.root,
        Some(json!({"action": action, "arguments": arguments})),
    )
    .await
}

/// Recomputes the AWS signature of a request as received, with the keys the tenant
/// set: what a real AWS endpoint does before it answers.
fn aws_signature_holds(
    method: &str,
    uri: &Uri,
    headers: &HeaderMap,
    body: &[u8],
    service: &str,
) -> bool {
    use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
    let Some(auth) = headers.get("authorization").and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let signed: Vec<&str> = auth
        .split("SignedHeaders=")
        .nth(1)
        .and_then(|s| s.split(',').next())
        .map(|s| s.split(';').collect())
        .unwrap_or_default();
    let date = headers["x-amz-date"].to_str().unwrap();
    // `20261206T015700Z`
    let n = |at: std::ops::Range<usize>| date[at].parse::<u16>().unwrap();
    let month = time::Month::try_from(u8::try_from(n(4..6)).unwrap()).unwrap();
    let at = time::Date::from_calendar_date(i32::from(n(0..4)), month, n(6..8) as u8)
        .unwrap()
        .with_hms(n(9..11) as u8, n(11..13) as u8, n(13..15) as u8)
        .unwrap()
        .assume_utc();
    let identity =
        aws_credential_types::Credentials::new(AWS_KEY_ID, AWS_SECRET, None, None, "test").into();
    let params = aws_sigv4::sign::v4::SigningParams::builder()
        .identity(&identity)
        .region("eu-west-1")
        .name(service)
        .time(at.into())
        .settings(SigningSettings::default())
        .build()
        .unwrap()
        .into();
    let kept: Vec<(&str, &str)> = headers
        .iter()
        .filter(|(n, _)| signed.contains(&n.as_str()) && n.as_str() != "x-amz-date")
        .map(|(n, v)| (n.as_str(), v.to_str().unwrap()))
        .chain([("x-amz-date", date)])
        .collect();
    let url = format!("http://{}{}", headers["host"].to_str().unwrap(), uri);
    let request =
        SignableRequest::new(method, url, kept.into_iter(), SignableBody::Bytes(body)).unwrap();
    let (instructions, _) = sign(request, &params).unwrap().into_parts();
    instructions
        .headers()
        .any(|(n, v)| n == "authorization" && v == auth)
}

/// What the local EC2 and Lambda endpoints saw: service, method, URI, whether the
/// signature held, the body.
type AwsSeen = Arc<Mutex<Vec<(String, String, String, bool, Value)>>>;

async fn aws_endpoints() -> (String, AwsSeen) {
    let seen: AwsSeen = Arc::default();
    async fn any(
        State(seen): State<AwsSeen>,
        method: HttpMethod,
        uri: Uri,
        headers: HeaderMap,
        body: axum::body::Bytes,
    ) -> axum::response::Response {
        let scope = headers["authorization"].to_str().unwrap_or_default();
        let service = if scope.contains("/ec2/aws4_request") {
            "ec2"
        } else {
            "lambda"
        };
        let holds = aws_signature_holds(method.as_str(), &uri, &headers, &body, service);
        let sent = serde_json::from_slice(&body).unwrap_or(Value::Null);
        seen.lock().unwrap().push((
            service.into(),
            method.to_string(),
            uri.to_string(),
            holds,
            sent,
        ));
        if !holds {
            return (StatusCode::FORBIDDEN, "SignatureDoesNotMatch").into_response();
        }
        if service == "ec2" {
            let xml = r#"<?xml version="1.0" encoding="UTF-8"?>
<DescribeInstancesResponse xmlns="http://ec2.amazonaws.com/doc/2016-11-15/">
  <requestId>r-1</requestId>
  <reservationSet><item><reservationId>r-0a</reservationId><instancesSet>
    <item><instanceId>i-1</instanceId><instanceState><code>16</code><name>running</name></instanceState><instanceType>t3.micro</instanceType></item>
    <item><instanceId>i-2</instanceId><instanceState><code>80</code><name>stopped</name></instanceState><instanceType>t3.small</instanceType></item>
  </instancesSet></item></reservationSet>
</DescribeInstancesResponse>"#;
            return ([("content-type", "text/xml;charset=UTF-8")], xml).into_response();
        }
        Json(json!({"resized": true, "width": 64})).into_response()
    }
    let app = Router::new().fallback(any).with_state(seen.clone());
    (serve(app).await, seen)
}

#[tokio::test]
async fn aws_calls_are_signed_s3_on_minio_ec2_and_lambda_on_local_endpoints() {
    let r = platform().await;

    // A credential is a document, checked when it is set; its secret is never shown.
    let (status, refused) =
        set_credential(&r, "aws", json!({"access_key_id": AWS_KEY_ID}), "").await;
    assert_eq!(status, 422, "{refused}");
    assert!(
        refused["error"]["message"]
            .as_str()
            .unwrap()
            .contains("secret_access_key"),
        "{refused}"
    );

    // EC2 and Lambda: every request's signature recomputed by the endpoint.
    let (endpoint, seen) = aws_endpoints().await;
    let keys = json!({"access_key_id": AWS_KEY_ID, "secret_access_key": AWS_SECRET, "region": "eu-west-1"});
    let (status, set) = set_credential(&r, "aws", keys, &endpoint).await;
    assert_eq!(status, 200, "{set}");
    let (status, described) = invoke(
        &r,
        "aws",
        "ec2_describe_instances",
        json!({"instance_ids": ["i-1", "i-2"]}),
    )
    .await;
    assert_eq!(status, 200, "{described}");
    let instances = &described["result"]["DescribeInstancesResponse"]["reservationSet"]["item"]["instancesSet"]
        ["item"];
    assert_eq!(
        instances[1]["instanceState"]["name"], "stopped",
        "XML read as JSON: {described}"
    );
    let (status, invoked) = invoke(
        &r,
        "aws",
        "lambda_invoke",
        json!({"function_name": "resize", "payload": {"width": 64}}),
    )
    .await;
    assert_eq!(
        (status, invoked["result"]["resized"].as_bool()),
        (200, Some(true)),
        "{invoked}"
    );
    let calls = seen.lock().unwrap().clone();
    assert_eq!(
        calls,
        [
            (
                "ec2".to_owned(),
                "GET".to_owned(),
                "/?Action=DescribeInstances&Version=2016-11-15&InstanceId.1=i-1&InstanceId.2=i-2"
                    .to_owned(),
                true,
                Value::Null
            ),
            (
                "lambda".to_owned(),
                "POST".to_owned(),
                "/2015-03-31/functions/resize/invocations".to_owned(),
                true,
                json!({"width": 64})
            )
        ]
    );
    // Stopping instances waits for a person: not over REST.
    let (status, _) = invoke(
        &r,
        "aws",
        "ec2_stop_instances",
        json!({"instance_ids": ["i-1"]}),
    )
    .await;
    assert_eq!(status, 409);

    // S3 on MinIO, which refuses any request whose signature does not hold.
    let Some(objects) = required_env("OBJECTS_URL") else {
        return;
    };
    let url = reqwest::Url::parse(&objects).unwrap();
    let q = |k: &str| {
        url.query_pairs()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.into_owned())
            .unwrap()
    };
    let bucket = url.host_str().unwrap().to_owned();
    let minio = json!({"access_key_id": q("access_key_id"), "secret_access_key": q("secret_access_key"), "region": q("region")});
    let (status, _) = set_credential(&r, "aws", minio, &q("endpoint")).await;
    assert_eq!(status, 200);
    let key = format!("tool-test/{}/notes & plans.md", uuid::Uuid::new_v4());
    let (status, put) = invoke(
        &r,
        "aws",
        "s3_put_object",
        json!({"bucket": bucket, "key": key, "content": "# Plans\nShip it."}),
    )
    .await;
    assert_eq!(status, 200, "{put}");
    let (status, read) = invoke(
        &r,
        "aws",
        "s3_get_object",
        json!({"bucket": bucket, "key": key}),
    )
    .await;
    assert_eq!(
        (status, read["result"]["text"].as_str()),
        (200, Some("# Plans\nShip it.")),
        "{read}"
    );
    let prefix = key.rsplit_once('/').unwrap().0.to_owned() + "/";
    let (status, listed) = invoke(
        &r,
        "aws",
        "s3_list_objects",
        json!({"bucket": bucket, "prefix": prefix}),
    )
    .await;
    assert_eq!(status, 200, "{listed}");
    assert_eq!(
        listed["result"]["ListBucketResult"]["Contents"]["Key"].as_str(),
        Some(key.as_str()),
        "{listed}"
    );
    // Wrong keys: MinIO refuses, and the caller learns the status, not MinIO's body.
    let wrong = json!({"access_key_id": q("access_key_id"), "secret_access_key": "not-the-secret"});
    set_credential(&r, "aws", wrong, "").await;
    let (status, failed) = invoke(
        &r,
        "aws",
        "s3_get_object",
        json!({"bucket": bucket, "key": key}),
    )
    .await;
    assert_eq!(
        (status, failed["error"]["details"]["status"].as_u64()),
        (502, Some(403)),
        "{failed}"
    );
    let shown = failed.to_string();
    assert!(
        !shown.contains("not-the-secret") && !shown.contains("SignatureDoesNotMatch"),
        "{shown}"
    );
}

/// What the local Google endpoints saw: token requests, and API requests' URIs.
#[derive(Default)]
struct GoogleSeen {
    tokens: usize,
    calls: Vec<String>,
}

type Shared<T> = Arc<Mutex<T>>;

async fn google_endpoints(public_pem: Vec<u8>) -> (String, Shared<GoogleSeen>) {
    let seen: Shared<GoogleSeen> = Arc::default();
    #[derive(Clone)]
    struct S {
        seen: Shared<GoogleSeen>,
        public: Arc<Vec<u8>>,
        base: Arc<Mutex<String>>,
    }
    async fn token(
        State(s): State<S>,
        Form(form): Form<Vec<(String, String)>>,
    ) -> axum::response::Response {
        let get = |k: &str| form.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        if get("grant_type").as_deref() != Some("urn:ietf:params:oauth:grant-type:jwt-bearer") {
            return (StatusCode::BAD_REQUEST, "unsupported_grant_type").into_response();
        }
        let key = jsonwebtoken::DecodingKey::from_rsa_pem(&s.public).unwrap();
        let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
        let audience = format!("{}/token", s.base.lock().unwrap());
        validation.set_audience(&[audience]);
        validation.set_issuer(&["agent@demo-proj.iam.gserviceaccount.com"]);
        let Ok(claims) = jsonwebtoken::decode::<Value>(
            get("assertion").unwrap_or_default().as_str(),
            &key,
            &validation,
        ) else {
            return (StatusCode::BAD_REQUEST, "invalid_grant").into_response();
        };
        if claims.claims["scope"] != "https://www.googleapis.com/auth/cloud-platform" {
            return (StatusCode::BAD_REQUEST, "invalid_scope").into_response();
        }
        s.seen.lock().unwrap().tokens += 1;
        Json(
            json!({"access_token": "ya29.local-token", "expires_in": 3599, "token_type": "Bearer"}),
        )
        .into_response()
    }
    async fn instances(
        State(s): State<S>,
        headers: HeaderMap,
        uri: Uri,
    ) -> axum::response::Response {
        if headers.get("authorization").and_then(|v| v.to_str().ok())
            != Some("Bearer ya29.local-token")
        {
            return StatusCode::UNAUTHORIZED.into_response();
        }
        s.seen.lock().unwrap().calls.push(uri.to_string());
        if uri.query().is_some_and(|q| q.contains("pageToken=p2")) {
            return Json(json!({"kind": "compute#instanceList", "items": [{"name": "web-2", "status": "TERMINATED"}]})).into_response();
        }
        Json(json!({"kind": "compute#instanceList", "items": [{"name": "web-1", "status": "RUNNING"}], "nextPageToken": "p2"})).into_response()
    }
    let state = S {
        seen: seen.clone(),
        public: Arc::new(public_pem),
        base: Arc::default(),
    };
    let app = Router::new()
        .route("/token", post(token))
        .route(
            "/compute/v1/projects/demo-proj/zones/{zone}/instances",
            get(instances),
        )
        .with_state(state.clone());
    let base = serve(app).await;
    *state.base.lock().unwrap() = base.clone();
    (base, seen)
}

/// An RSA key pair as a service-account key has it: the private key (PKCS#8 PEM) and
/// its public half.
fn rsa_key_pair() -> (String, Vec<u8>) {
    let dir = tempfile::tempdir().unwrap();
    let private = dir.path().join("key.pem");
    let status = std::process::Command::new("openssl")
        .args([
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
            "-out",
        ])
        .arg(&private)
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    let public = std::process::Command::new("openssl")
        .args(["pkey", "-pubout", "-in"])
        .arg(&private)
        .output()
        .unwrap();
    assert!(public.status.success());
    (std::fs::read_to_string(&private).unwrap(), public.stdout)
}

#[tokio::test]
async fn gcp_and_azure_calls_carry_tokens_obtained_with_the_tenants_credentials() {
    let r = platform().await;

    // GCP: the service account's key signs an assertion, exchanged once for a token.
    let (private_pem, public_pem) = rsa_key_pair();
    let (google, seen) = google_endpoints(public_pem).await;
    let key = json!({"type": "service_account", "project_id": "demo-proj", "private_key_id": "k1",
        "private_key": private_pem, "client_email": "agent@demo-proj.iam.gserviceaccount.com",
        "client_id": "1234", "token_uri": format!("{google}/token")});
    let (status, set) = set_credential(&r, "gcp", json!(key.to_string()), &google).await;
    assert_eq!(status, 200, "{set}");
    let (status, listed) = invoke(
        &r,
        "gcp",
        "compute_list_instances",
        json!({"zone": "europe-west1-b", "max_pages": 2}),
    )
    .await;
    assert_eq!(status, 200, "{listed}");
    let names: Vec<&str> = listed["result"]["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["web-1", "web-2"], "{listed}");
    let (status, _) = invoke(
        &r,
        "gcp",
        "compute_list_instances",
        json!({"zone": "us-east1-c"}),
    )
    .await;
    assert_eq!(status, 200);
    {
        let seen = seen.lock().unwrap();
        assert_eq!(seen.tokens, 1, "the token is reused until it expires");
        assert_eq!(
            seen.calls,
            [
                "/compute/v1/projects/demo-proj/zones/europe-west1-b/instances",
                "/compute/v1/projects/demo-proj/zones/europe-west1-b/instances?pageToken=p2",
                "/compute/v1/projects/demo-proj/zones/us-east1-c/instances"
            ]
        );
    }
    let (_, shown) = call(
        &r.client,
        Method::GET,
        &format!("{}/v1/tools/gcp", r.gateway),
        &r.root,
        None,
    )
    .await;
    assert_eq!(shown["credential_set"], true);
    assert!(!shown.to_string().contains("PRIVATE KEY"), "{shown}");

    // Azure: client credentials for a token at the app's authority; ARM's nextLink
    // lists joined.
    /// Each token request's form.
    type Forms = Arc<Mutex<Vec<Vec<(String, String)>>>>;
    #[derive(Clone, Default)]
    struct Az {
        tokens: Forms,
        base: Arc<Mutex<String>>,
    }
    async fn az_token(
        State(s): State<Az>,
        Path(tenant): Path<String>,
        Form(form): Form<Vec<(String, String)>>,
    ) -> axum::response::Response {
        let ok = tenant == "contoso-tenant"
            && form.contains(&("client_secret".into(), "az-secret-91".into()));
        s.tokens.lock().unwrap().push(form);
        if !ok {
            return (StatusCode::UNAUTHORIZED, Json(json!({"error": "invalid_client", "error_description": "AADSTS7000215: Invalid client secret az-secret-wrong"}))).into_response();
        }
        Json(json!({"token_type": "Bearer", "expires_in": 3599, "access_token": "eyJ.azure.token"}))
            .into_response()
    }
    async fn groups(State(s): State<Az>, headers: HeaderMap, uri: Uri) -> axum::response::Response {
        if headers.get("authorization").and_then(|v| v.to_str().ok())
            != Some("Bearer eyJ.azure.token")
        {
            return StatusCode::UNAUTHORIZED.into_response();
        }
        if uri.query().unwrap_or_default().contains("skiptoken") {
            return Json(json!({"value": [{"name": "rg-data"}]})).into_response();
        }
        let next = format!(
            "{}/subscriptions/sub-42/resourcegroups?api-version=2021-04-01&%24skiptoken=abc",
            s.base.lock().unwrap()
        );
        Json(json!({"value": [{"name": "rg-web"}], "nextLink": next})).into_response()
    }
    let az = Az::default();
    let azure = serve(
        Router::new()
            .route("/{tenant}/oauth2/v2.0/token", post(az_token))
            .route("/subscriptions/sub-42/resourcegroups", get(groups))
            .with_state(az.clone()),
    )
    .await;
    *az.base.lock().unwrap() = azure.clone();
    let app = json!({"tenant_id": "contoso-tenant", "client_id": "app-1", "client_secret": "az-secret-91",
        "subscription_id": "sub-42", "authority_host": azure});
    let (status, set) = set_credential(&r, "azure", app, &azure).await;
    assert_eq!(status, 200, "{set}");
    let (status, groups_listed) =
        invoke(&r, "azure", "list_resource_groups", json!({"max_pages": 3})).await;
    assert_eq!(status, 200, "{groups_listed}");
    assert_eq!(
        groups_listed["result"]["value"],
        json!([{"name": "rg-web"}, {"name": "rg-data"}]),
        "{groups_listed}"
    );
    let form = az.tokens.lock().unwrap()[0].clone();
    for expected in [
        ("grant_type", "client_credentials"),
        ("client_id", "app-1"),
        ("scope", "https://management.azure.com/.default"),
    ] {
        assert!(
            form.contains(&(expected.0.to_owned(), expected.1.to_owned())),
            "{form:?}"
        );
    }
    // A secret the directory refuses: a 502 naming the token endpoint's status, and
    // nothing of what it said.
    let wrong = json!({"tenant_id": "contoso-tenant", "client_id": "app-1", "client_secret": "az-secret-wrong",
        "subscription_id": "sub-42", "authority_host": azure});
    set_credential(&r, "azure", wrong, "").await;
    let (status, failed) = invoke(&r, "azure", "list_resource_groups", json!({})).await;
    assert_eq!(status, 502, "{failed}");
    let said = failed.to_string();
    assert!(said.contains("HTTP 401"), "{said}");
    assert!(
        !said.contains("az-secret") && !said.contains("AADSTS"),
        "{said}"
    );
}
