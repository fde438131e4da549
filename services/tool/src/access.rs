//! What a call to a cloud API needs beyond its credential's text: a bearer token
//! obtained with it (Azure AD client credentials; a GCP service-account JWT exchanged at
//! its token URI), kept in memory until shortly before it expires, and for a kubeconfig
//! an HTTP client that trusts the cluster's CA and presents its client certificate.
//! Tokens and clients are keyed by tenant, tool and a digest of the credential, so a
//! changed credential is used at once; they are never stored or logged.

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::Deserialize;

use crate::domain::credentials::{AzureApp, KubeAccess, ServiceAccountKey};
use somagent_common::egress;

/// How long before its expiry a token is replaced.
const EARLY: Duration = Duration::from_secs(120);
/// The longest a token is kept, whatever its endpoint says.
const MAX_LIFETIME: u64 = 24 * 3600;
/// The most tokens or clients kept; past it the cache starts over.
const MAX_KEPT: usize = 4096;

/// Obtains and keeps bearer tokens and cluster clients.
pub struct Access {
    tokens: Mutex<HashMap<String, (String, Instant)>>,
    clients: Mutex<HashMap<String, reqwest::Client>>,
    allow_private: bool,
}

/// A token endpoint's answer (RFC 6749 §5.1).
#[derive(Deserialize)]
struct TokenAnswer {
    access_token: String,
    #[serde(default)]
    expires_in: Option<u64>,
}

/// A GCP service-account assertion's claims (Google's OAuth 2.0 for server to server).
#[derive(serde::Serialize)]
struct Assertion<'a> {
    iss: &'a str,
    scope: &'a str,
    aud: &'a str,
    iat: i64,
    exp: i64,
}

/// A key for a credential: the tenant's tool and a digest of its text.
pub fn credential_key(tenant: &str, tool: &str, text: &str) -> String {
    let mut hasher = DefaultHasher::new();
    text.hash(&mut hasher);
    format!("{tenant}\0{tool}\0{:016x}", hasher.finish())
}

impl Access {
    pub fn new(allow_private: bool) -> Self {
        Self {
            tokens: Mutex::new(HashMap::new()),
            clients: Mutex::new(HashMap::new()),
            allow_private,
        }
    }

    fn kept_token(&self, key: &str) -> Option<String> {
        let tokens = self.tokens.lock().unwrap_or_else(|e| e.into_inner());
        tokens
            .get(key)
            .filter(|(_, until)| Instant::now() < *until)
            .map(|(token, _)| token.clone())
    }

    fn keep_token(&self, key: String, token: &TokenAnswer) {
        // A token endpoint is the tenant's to name: its word on the lifetime is capped.
        let lifetime = Duration::from_secs(token.expires_in.unwrap_or(3600).min(MAX_LIFETIME));
        let until = Instant::now() + lifetime.saturating_sub(EARLY);
        let mut tokens = self.tokens.lock().unwrap_or_else(|e| e.into_inner());
        if tokens.len() >= MAX_KEPT {
            tokens.clear();
        }
        tokens.insert(key, (token.access_token.clone(), until));
    }

    /// Forgets a token the API refused, so the next call gets a new one.
    pub fn forget(&self, key: &str) {
        self.tokens
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(key);
    }

    /// An Azure AD token for `scope`, from `token_url` (`{$tenant_id}` filled, its
    /// origin replaced by the app's `authority_host` when it names a national cloud).
    pub async fn azure_token(
        &self,
        http: &reqwest::Client,
        key: &str,
        app: &AzureApp,
        token_url: &str,
        scope: &str,
    ) -> Result<String, String> {
        if let Some(token) = self.kept_token(key) {
            return Ok(token);
        }
        let mut url = url::Url::parse(&token_url.replace("{$tenant_id}", &app.tenant_id))
            .map_err(|e| format!("the token URL does not parse: {e}"))?;
        if let Some(host) = &app.authority_host {
            let authority =
                url::Url::parse(host).map_err(|_| "authority_host is not a URL".to_owned())?;
            url.set_scheme(authority.scheme())
                .map_err(|()| "authority_host's scheme".to_owned())?;
            url.set_host(authority.host_str())
                .map_err(|e| format!("authority_host: {e}"))?;
            url.set_port(authority.port())
                .map_err(|()| "authority_host's port".to_owned())?;
        }
        let form = [
            ("grant_type", "client_credentials"),
            ("client_id", app.client_id.as_str()),
            ("client_secret", app.client_secret.as_str()),
            ("scope", scope),
        ];
        let token = self.exchange(http, url, &form).await?;
        self.keep_token(key.to_owned(), &token);
        Ok(token.access_token)
    }

    /// A GCP access token for `scope`: a JWT signed with the service account's key,
    /// exchanged at its token URI.
    pub async fn google_token(
        &self,
        http: &reqwest::Client,
        key: &str,
        account: &ServiceAccountKey,
        scope: &str,
    ) -> Result<String, String> {
        if let Some(token) = self.kept_token(key) {
            return Ok(token);
        }
        let now = somagent_common::clock::unix_now();
        let claims = Assertion {
            iss: &account.client_email,
            scope,
            aud: &account.token_uri,
            iat: now,
            exp: now + 3600,
        };
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
        header.kid.clone_from(&account.private_key_id);
        let signing_key =
            jsonwebtoken::EncodingKey::from_rsa_pem(account.private_key.as_bytes())
                .map_err(|_| "the service account's private_key is not an RSA key".to_owned())?;
        let assertion = jsonwebtoken::encode(&header, &claims, &signing_key)
            .map_err(|_| "the service account's assertion cannot be signed".to_owned())?;
        let url = url::Url::parse(&account.token_uri)
            .map_err(|e| format!("the token URI does not parse: {e}"))?;
        let form = [
            ("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer"),
            ("assertion", assertion.as_str()),
        ];
        let token = self.exchange(http, url, &form).await?;
        self.keep_token(key.to_owned(), &token);
        Ok(token.access_token)
    }

    /// Posts a token request; its refusal is told by status, never by its body (which
    /// may repeat what was sent).
    async fn exchange(
        &self,
        http: &reqwest::Client,
        url: url::Url,
        form: &[(&str, &str)],
    ) -> Result<TokenAnswer, String> {
        if !self.allow_private {
            egress::check_literal(&url)?;
        }
        let response = http
            .post(url)
            .form(form)
            .timeout(Duration::from_secs(15))
            .send()
            .await
            .map_err(|e| {
                if e.is_timeout() {
                    "the token endpoint did not answer in time".to_owned()
                } else {
                    "the token endpoint could not be reached".to_owned()
                }
            })?;
        let status = response.status().as_u16();
        if !(200..300).contains(&status) {
            return Err(format!(
                "the token endpoint refused the credential (HTTP {status})"
            ));
        }
        response
            .json::<TokenAnswer>()
            .await
            .map_err(|_| "the token endpoint's answer has no access_token".to_owned())
    }

    /// The client for a cluster: its CA trusted (and only it, when given), its client
    /// certificate presented, redirects not followed, private addresses refused unless
    /// the operator allows them.
    pub fn kube_client(&self, key: &str, access: &KubeAccess) -> Result<reqwest::Client, String> {
        if let Some(client) = self
            .clients
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(key)
        {
            return Ok(client.clone());
        }
        let mut builder = crate::invocations::client_builder(self.allow_private);
        if let Some(ca) = &access.ca_pem {
            let certs = reqwest::Certificate::from_pem_bundle(ca)
                .map_err(|_| "the kubeconfig's certificate-authority-data is not PEM".to_owned())?;
            builder = builder.tls_certs_only(certs);
        }
        if let Some(pem) = &access.client_pem {
            let identity = reqwest::Identity::from_pem(pem).map_err(|_| {
                "the kubeconfig's client certificate and key are not PEM".to_owned()
            })?;
            builder = builder.identity(identity);
        }
        if access.insecure {
            builder = builder.tls_danger_accept_invalid_certs(true);
        }
        let client = builder
            .build()
            .map_err(|_| "no client can be made for the cluster".to_owned())?;
        let mut clients = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        if clients.len() >= MAX_KEPT {
            clients.clear();
        }
        clients.insert(key.to_owned(), client.clone());
        Ok(client)
    }
}
