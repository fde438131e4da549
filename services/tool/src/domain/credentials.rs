//! What a tenant's credential is, by the tool's auth scheme: a secret used as it is (a
//! token, an API key), or a document the cloud APIs take — AWS access keys, an Azure AD
//! application, a GCP service-account key, a kubeconfig. Each is read and checked when
//! it is set (a 422 naming the missing field), and again when a call opens it. A
//! credential's `Debug` shows no secret.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::domain::manifest::AuthScheme;

/// A credential read for its scheme.
pub enum Credential {
    /// Used as it is, where the scheme puts it.
    Secret(String),
    Aws(AwsKeys),
    Azure(AzureApp),
    Google(ServiceAccountKey),
    Kube(KubeAccess),
}

/// AWS access keys (an IAM user's or, with a session token, temporary ones) and the
/// region calls go to.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AwsKeys {
    pub access_key_id: String,
    pub secret_access_key: String,
    #[serde(default)]
    pub session_token: Option<String>,
    #[serde(default = "default_region")]
    pub region: String,
}

fn default_region() -> String {
    "us-east-1".into()
}

/// An Azure AD (Entra ID) application's client credentials, and the subscription its
/// calls manage.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AzureApp {
    pub tenant_id: String,
    pub client_id: String,
    pub client_secret: String,
    pub subscription_id: String,
    /// A national cloud's sign-in host (`https://login.microsoftonline.us`) instead of
    /// the public cloud's.
    #[serde(default)]
    pub authority_host: Option<String>,
}

/// A GCP service-account key as the console downloads it (its other fields are kept
/// out).
#[derive(Deserialize)]
pub struct ServiceAccountKey {
    #[serde(rename = "type")]
    pub kind: String,
    pub project_id: String,
    pub client_email: String,
    pub private_key: String,
    #[serde(default)]
    pub private_key_id: Option<String>,
    #[serde(default = "default_token_uri")]
    pub token_uri: String,
}

fn default_token_uri() -> String {
    "https://oauth2.googleapis.com/token".into()
}

/// What a kubeconfig's current context says: the API server, how to trust it, and how
/// to prove who calls.
pub struct KubeAccess {
    pub server: String,
    /// The cluster's CA certificate (PEM); none means the system's roots.
    pub ca_pem: Option<Vec<u8>>,
    pub insecure: bool,
    pub token: Option<String>,
    /// A client certificate and its key (PEM), for clusters that take them.
    pub client_pem: Option<Vec<u8>>,
    pub namespace: String,
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self {
            Self::Secret(_) => "secret",
            Self::Aws(_) => "aws",
            Self::Azure(_) => "azure",
            Self::Google(_) => "google",
            Self::Kube(_) => "kube",
        };
        write!(f, "Credential({kind})")
    }
}

/// Why a credential cannot be used: the part at fault, and what it should be. Never
/// holds the credential's text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CredentialError {
    pub field: String,
    pub message: String,
}

impl CredentialError {
    fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// A JSON document's fault, without echoing its text (which holds secrets).
fn document_error(what: &str, e: &serde_json::Error) -> CredentialError {
    let message = match e.classify() {
        serde_json::error::Category::Data => {
            // serde's data errors name the field (`missing field `region``) and no value.
            format!("is {what}: {e}")
        }
        _ => format!("is {what} as a JSON document"),
    };
    CredentialError::new("credential", message)
}

impl Credential {
    /// Reads `text` as the credential `scheme` takes.
    pub fn read(scheme: &AuthScheme, text: &str) -> Result<Self, CredentialError> {
        let nonempty = |field: &str, value: &str| {
            if value.trim().is_empty() {
                Err(CredentialError::new(
                    format!("credential.{field}"),
                    "is set",
                ))
            } else {
                Ok(())
            }
        };
        match scheme {
            AuthScheme::AwsSigV4 => {
                let keys: AwsKeys = serde_json::from_str(text)
                    .map_err(|e| document_error("AWS access keys", &e))?;
                nonempty("access_key_id", &keys.access_key_id)?;
                nonempty("secret_access_key", &keys.secret_access_key)?;
                if !is_name(&keys.region) {
                    return Err(CredentialError::new(
                        "credential.region",
                        "is a region name such as us-east-1",
                    ));
                }
                Ok(Self::Aws(keys))
            }
            AuthScheme::AzureClientCredentials { .. } => {
                let app: AzureApp = serde_json::from_str(text)
                    .map_err(|e| document_error("an Azure AD application's credentials", &e))?;
                nonempty("client_id", &app.client_id)?;
                nonempty("client_secret", &app.client_secret)?;
                for (field, value) in [
                    ("tenant_id", &app.tenant_id),
                    ("subscription_id", &app.subscription_id),
                ] {
                    if !is_name(value) {
                        return Err(CredentialError::new(
                            format!("credential.{field}"),
                            "is an id (a GUID or a domain name)",
                        ));
                    }
                }
                if let Some(host) = &app.authority_host {
                    check_https_origin("credential.authority_host", host)?;
                }
                Ok(Self::Azure(app))
            }
            AuthScheme::GoogleServiceAccount { .. } => {
                let key: ServiceAccountKey = serde_json::from_str(text)
                    .map_err(|e| document_error("a GCP service-account key", &e))?;
                if key.kind != "service_account" {
                    return Err(CredentialError::new(
                        "credential.type",
                        "is service_account (a service account's key file)",
                    ));
                }
                nonempty("client_email", &key.client_email)?;
                if !key.private_key.contains("PRIVATE KEY-----") {
                    return Err(CredentialError::new(
                        "credential.private_key",
                        "is the key's PEM text",
                    ));
                }
                if !is_name(&key.project_id) {
                    return Err(CredentialError::new(
                        "credential.project_id",
                        "is a project id",
                    ));
                }
                let uri = url::Url::parse(&key.token_uri).ok();
                if !uri.is_some_and(|u| matches!(u.scheme(), "http" | "https")) {
                    return Err(CredentialError::new(
                        "credential.token_uri",
                        "is an http or https URL",
                    ));
                }
                Ok(Self::Google(key))
            }
            AuthScheme::Kubeconfig => read_kubeconfig(text).map(Self::Kube),
            _ => {
                if text.is_empty() {
                    return Err(CredentialError::new("credential", "is set"));
                }
                Ok(Self::Secret(text.to_owned()))
            }
        }
    }

    /// The names a tool's URLs may use from its credential (`{$region}`), none secret.
    pub fn variables(&self) -> BTreeMap<String, String> {
        let mut variables = BTreeMap::new();
        match self {
            Self::Aws(keys) => {
                variables.insert("region".into(), keys.region.clone());
            }
            Self::Azure(app) => {
                variables.insert("tenant_id".into(), app.tenant_id.clone());
                variables.insert("subscription_id".into(), app.subscription_id.clone());
            }
            Self::Google(key) => {
                variables.insert("project_id".into(), key.project_id.clone());
            }
            Self::Kube(access) => {
                variables.insert("namespace".into(), access.namespace.clone());
            }
            Self::Secret(_) => {}
        }
        variables
    }
}

/// A value safe to put in a host name or a path segment: letters, digits, `-`, `.`, `_`,
/// and not a segment of dots alone.
pub fn is_name(value: &str) -> bool {
    // `.` and `..` would climb a path they are put in.
    !value.is_empty()
        && value != "."
        && value != ".."
        && value.len() <= 128
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'))
}

fn check_https_origin(field: &str, value: &str) -> Result<(), CredentialError> {
    let ok = url::Url::parse(value)
        .ok()
        .is_some_and(|u| matches!(u.scheme(), "https" | "http") && u.host().is_some());
    if ok {
        Ok(())
    } else {
        Err(CredentialError::new(field, "is an https URL"))
    }
}

/// A kubeconfig (YAML or JSON) as `kubectl config view --minify --raw` prints it.
#[derive(Deserialize)]
struct Kubeconfig {
    #[serde(default)]
    clusters: Vec<Named<KubeCluster>>,
    #[serde(default)]
    users: Vec<Named<KubeUser>>,
    #[serde(default)]
    contexts: Vec<Named<KubeContext>>,
    #[serde(rename = "current-context", default)]
    current_context: String,
}

#[derive(Deserialize)]
struct Named<T> {
    name: String,
    #[serde(alias = "cluster", alias = "user", alias = "context")]
    item: T,
}

#[derive(Deserialize)]
struct KubeCluster {
    server: String,
    #[serde(rename = "certificate-authority-data", default)]
    ca_data: Option<String>,
    #[serde(rename = "certificate-authority", default)]
    ca_file: Option<String>,
    #[serde(rename = "insecure-skip-tls-verify", default)]
    insecure: bool,
}

#[derive(Deserialize)]
struct KubeUser {
    #[serde(default)]
    token: Option<String>,
    #[serde(rename = "client-certificate-data", default)]
    cert_data: Option<String>,
    #[serde(rename = "client-key-data", default)]
    key_data: Option<String>,
    #[serde(default)]
    exec: Option<serde_norway::Value>,
    #[serde(rename = "auth-provider", default)]
    auth_provider: Option<serde_norway::Value>,
    #[serde(rename = "client-certificate", default)]
    cert_file: Option<String>,
    #[serde(rename = "tokenFile", default)]
    token_file: Option<String>,
}

#[derive(Deserialize)]
struct KubeContext {
    cluster: String,
    user: String,
    #[serde(default)]
    namespace: Option<String>,
}

fn read_kubeconfig(text: &str) -> Result<KubeAccess, CredentialError> {
    let config: Kubeconfig = serde_norway::from_str(text).map_err(|e| {
        // A YAML error's text may quote the document: only its place is said.
        let at = e
            .location()
            .map(|l| format!(" (line {})", l.line()))
            .unwrap_or_default();
        CredentialError::new("credential", format!("is a kubeconfig{at}"))
    })?;
    let context = match config.contexts.as_slice() {
        [only] if config.current_context.is_empty() => only,
        all => all
            .iter()
            .find(|c| c.name == config.current_context)
            .ok_or_else(|| {
                CredentialError::new(
                    "credential.current-context",
                    "names one of the kubeconfig's contexts",
                )
            })?,
    };
    let cluster = config
        .clusters
        .iter()
        .find(|c| c.name == context.item.cluster)
        .ok_or_else(|| {
            CredentialError::new(
                "credential.clusters",
                format!("has the cluster `{}`", context.item.cluster),
            )
        })?;
    let user = config
        .users
        .iter()
        .find(|u| u.name == context.item.user)
        .ok_or_else(|| {
            CredentialError::new(
                "credential.users",
                format!("has the user `{}`", context.item.user),
            )
        })?;
    let server = &cluster.item.server;
    if !url::Url::parse(server).is_ok_and(|u| matches!(u.scheme(), "https" | "http")) {
        return Err(CredentialError::new(
            "credential.clusters.server",
            "is the API server's https URL",
        ));
    }
    if cluster.item.ca_file.is_some() {
        return Err(CredentialError::new(
            "credential.clusters.certificate-authority",
            "names a file on your machine: embed it as certificate-authority-data (kubectl config view --minify --raw)",
        ));
    }
    let u = &user.item;
    if u.exec.is_some()
        || u.auth_provider.is_some()
        || u.cert_file.is_some()
        || u.token_file.is_some()
    {
        return Err(CredentialError::new(
            "credential.users.user",
            "runs a program or reads a file on your machine: give a token or client-certificate-data and client-key-data",
        ));
    }
    let pem = |field: &str, data: &Option<String>| -> Result<Option<Vec<u8>>, CredentialError> {
        data.as_deref()
            .map(|d| {
                data_encoding::BASE64
                    .decode(d.trim().as_bytes())
                    .map_err(|_| CredentialError::new(format!("credential.{field}"), "is base64"))
            })
            .transpose()
    };
    let ca_pem = pem("clusters.certificate-authority-data", &cluster.item.ca_data)?;
    let client_pem = match (
        pem("users.client-certificate-data", &u.cert_data)?,
        pem("users.client-key-data", &u.key_data)?,
    ) {
        (Some(mut cert), Some(key)) => {
            cert.push(b'\n');
            cert.extend_from_slice(&key);
            Some(cert)
        }
        (None, None) => None,
        _ => {
            return Err(CredentialError::new(
                "credential.users.user",
                "has both client-certificate-data and client-key-data, or neither",
            ));
        }
    };
    let token = u.token.clone().filter(|t| !t.is_empty());
    if token.is_none() && client_pem.is_none() {
        return Err(CredentialError::new(
            "credential.users.user",
            "has a token or a client certificate",
        ));
    }
    Ok(KubeAccess {
        server: server.trim_end_matches('/').to_owned(),
        ca_pem,
        insecure: cluster.item.insecure,
        token,
        client_pem,
        namespace: context
            .item
            .namespace
            .clone()
            .filter(|n| is_name(n))
            .unwrap_or_else(|| "default".into()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cloud_documents_are_checked_and_never_echoed() {
        let aws = Credential::read(
            &AuthScheme::AwsSigV4,
            r#"{"access_key_id":"AKID","secret_access_key":"s3cret-key"}"#,
        )
        .unwrap();
        assert_eq!(aws.variables()["region"], "us-east-1");
        assert!(!format!("{aws:?}").contains("s3cret"));
        let missing = Credential::read(&AuthScheme::AwsSigV4, r#"{"access_key_id":"AKID"}"#)
            .err()
            .unwrap();
        assert!(missing.message.contains("secret_access_key"), "{missing:?}");
        let broken = Credential::read(&AuthScheme::AwsSigV4, "s3cret-not-json")
            .err()
            .unwrap();
        assert!(!broken.message.contains("s3cret"), "{broken:?}");
        let bad_region = Credential::read(
            &AuthScheme::AwsSigV4,
            r#"{"access_key_id":"A","secret_access_key":"B","region":"us-east-1/../x"}"#,
        )
        .err()
        .unwrap();
        assert_eq!(bad_region.field, "credential.region");

        let google = AuthScheme::GoogleServiceAccount {
            scope: "https://www.googleapis.com/auth/cloud-platform".into(),
        };
        let key = r#"{"type":"service_account","project_id":"demo-1","client_email":"a@demo-1.iam.gserviceaccount.com","private_key":"-----BEGIN PRIVATE KEY-----\nMII\n-----END PRIVATE KEY-----\n","client_id":"1","auth_uri":"x"}"#;
        let read = Credential::read(&google, key).unwrap();
        assert_eq!(read.variables()["project_id"], "demo-1");
        let user_key = key.replace("service_account", "authorized_user");
        assert_eq!(
            Credential::read(&google, &user_key).err().unwrap().field,
            "credential.type"
        );
    }

    fn kubeconfig(user: &str) -> String {
        format!(
            "apiVersion: v1\nkind: Config\ncurrent-context: ci\nclusters:\n- name: c\n  cluster:\n    server: https://127.0.0.1:6443\n    certificate-authority-data: {}\ncontexts:\n- name: other\n  context: {{cluster: c, user: u}}\n- name: ci\n  context:\n    cluster: c\n    user: u\n    namespace: apps\nusers:\n- name: u\n  user:\n{user}\n",
            data_encoding::BASE64
                .encode(b"-----BEGIN CERTIFICATE-----\nMII\n-----END CERTIFICATE-----\n")
        )
    }

    #[test]
    fn a_kubeconfig_gives_its_current_context() {
        let Credential::Kube(access) =
            Credential::read(&AuthScheme::Kubeconfig, &kubeconfig("    token: t0k3n")).unwrap()
        else {
            panic!("not a kubeconfig")
        };
        assert_eq!(access.server, "https://127.0.0.1:6443");
        assert_eq!(access.token.as_deref(), Some("t0k3n"));
        assert_eq!(access.namespace, "apps");
        assert!(
            access
                .ca_pem
                .unwrap()
                .starts_with(b"-----BEGIN CERTIFICATE")
        );
        let exec = Credential::read(
            &AuthScheme::Kubeconfig,
            &kubeconfig("    exec:\n      command: aws"),
        )
        .err()
        .unwrap();
        assert_eq!(exec.field, "credential.users.user");
        let nothing = Credential::read(&AuthScheme::Kubeconfig, "token: t0k3n: [")
            .err()
            .unwrap();
        assert!(!nothing.message.contains("t0k3n"), "{nothing:?}");
    }
}
