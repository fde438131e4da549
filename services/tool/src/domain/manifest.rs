//! A tool's manifest: its id, where it is served, how it authenticates, and its
//! actions, each with a JSON-Schema for its arguments, the capability it needs, its
//! limits and its price. Built-in adapters, tenant-defined HTTP tools and MCP mounts
//! all come down to this one shape.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The longest an action may be allowed to run.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(300);

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolManifest {
    /// `github`, `acme-crm`: 2–63 of lowercase letters, digits and `-`.
    pub id: String,
    pub name: String,
    pub description: String,
    pub version: String,
    /// Where the API is served; configurable for every tool.
    pub base_url: String,
    /// Every customer has a host of its own (a Jira site): the tenant sets its base URL
    /// before the tool can be called.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub site_required: bool,
    pub auth: AuthScheme,
    /// Headers every request carries (an API version, an `Accept`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    /// How the API's lists continue, for actions marked `paginated`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pagination: Option<Pagination>,
    /// An MCP server mounted as this tool (at `base_url`, over Streamable HTTP): each
    /// action one of its tools, called with MCP's `tools/call` rather than an HTTP
    /// binding.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub mcp: bool,
    /// Code run in the platform's sandbox: each action a runner (`python`, `shell`)
    /// named by its `remote`, rather than an HTTP binding.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandbox: Option<SandboxPolicy>,
    /// Pages driven in a headless browser: each action a browser operation named by
    /// its `remote`, rather than an HTTP binding.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub browser: bool,
    /// The built-in memory tool: each action a call of the memory service, as the user.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub memory: bool,
    pub actions: Vec<Action>,
}

/// What code run in the sandbox may reach.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SandboxPolicy {
    /// Whether the code may use the network (off: no network at all), always through
    /// the egress proxy.
    pub network: bool,
    /// The hosts it may reach (`api.github.com`, `*.pypi.org`); none: any host tools
    /// may reach.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow_hosts: Vec<String>,
}

impl SandboxPolicy {
    /// The hosts the run may reach, when it may use the network.
    pub fn egress(&self) -> Option<&[String]> {
        self.network.then_some(self.allow_hosts.as_slice())
    }
}

/// Whether `pattern` is a host name, or `*.` and one (any host below it).
pub fn is_host_pattern(pattern: &str) -> bool {
    let host = pattern.strip_prefix("*.").unwrap_or(pattern);
    (1..=253).contains(&host.len())
        && host.split('.').all(|label| {
            (1..=63).contains(&label.len())
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

/// Whether `host` is one of `patterns` (none: any host).
pub fn host_allowed(patterns: &[String], host: &str) -> bool {
    patterns.is_empty()
        || patterns
            .iter()
            .any(|pattern| match pattern.strip_prefix("*.") {
                Some(parent) => host
                    .to_ascii_lowercase()
                    .strip_suffix(&parent.to_ascii_lowercase())
                    .is_some_and(|rest| rest.ends_with('.')),
                None => host.eq_ignore_ascii_case(pattern),
            })
}

/// How a list continues over pages.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Pagination {
    /// RFC 8288 `Link: <url>; rel="next"` (GitHub, GitLab); each page a JSON array.
    LinkHeader,
    /// The next page's whole URL in the answer at `next` (a JSON Pointer; Azure's
    /// `nextLink`); the pages' arrays at `items` joined.
    NextUrl { next: String, items: String },
    /// A cursor in the answer at `next` (a JSON Pointer), sent back as `param` (a query
    /// parameter for GET, a body field otherwise); the pages' arrays at `items` joined.
    Cursor {
        next: String,
        param: String,
        items: String,
    },
}

/// How a call proves itself to the tool's API, with the tenant's credential.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum AuthScheme {
    None,
    /// `Authorization: Bearer <credential>`.
    Bearer,
    /// The credential as the value of a header (`X-API-Key`, `PRIVATE-TOKEN`), after
    /// `prefix` (Discord's `Bot `).
    Header {
        name: String,
        #[serde(default, skip_serializing_if = "String::is_empty")]
        prefix: String,
    },
    /// The credential as a query parameter.
    Query {
        name: String,
    },
    /// `user:password` as HTTP basic authentication.
    Basic,
    /// AWS Signature Version 4 with the tenant's access keys; each action names the
    /// service it signs for (`http.service`).
    AwsSigV4,
    /// Azure AD (Entra ID) client credentials: a bearer token for `scope` from
    /// `token_url` (which may name `{$tenant_id}`).
    AzureClientCredentials {
        token_url: String,
        scope: String,
    },
    /// A GCP service-account key signs a JWT, exchanged at its token URI for a bearer
    /// token for `scope`.
    GoogleServiceAccount {
        scope: String,
    },
    /// A kubeconfig: its API server (which replaces `base_url`), the CA to trust it by,
    /// and a bearer token or a client certificate.
    Kubeconfig,
}

impl AuthScheme {
    pub fn needs_credential(&self) -> bool {
        !matches!(self, Self::None)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Action {
    /// `create_issue`: letters, digits, `_` and `-`, at most 64 (what OpenAI accepts
    /// in a function name once joined to the tool's id).
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// A JSON-Schema of an object: the arguments.
    pub parameters: Value,
    /// The capability a caller needs (`tools:invoke` for most).
    #[serde(default = "default_capability")]
    pub capability: String,
    /// Calls per minute per tenant; 0 is no limit of its own.
    #[serde(default)]
    pub rate_limit_per_minute: u32,
    #[serde(with = "millis", default = "default_timeout")]
    pub timeout: Duration,
    /// The price of one call in micro-units of the tenant's currency.
    #[serde(default)]
    pub price_micros: i64,
    /// A person approves each call before it runs.
    #[serde(default)]
    pub requires_approval: bool,
    /// The HTTP request a call becomes (unused by an MCP tool's actions).
    #[serde(default)]
    pub http: HttpBinding,
    /// What runs the action when it is not an HTTP request: an MCP server's tool (whose
    /// name may use characters an action's may not), or a sandbox runner.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote: Option<String>,
}

fn default_capability() -> String {
    "tools:invoke".into()
}

/// How long an action of a built-in adapter may run unless it says otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

fn default_timeout() -> Duration {
    DEFAULT_TIMEOUT
}

/// The argument a paginated action takes for how many pages to read.
pub const MAX_PAGES_ARGUMENT: &str = "max_pages";
/// The most pages one call reads.
pub const MAX_PAGES: u64 = 10;

/// Where an action's arguments go in its HTTP request.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HttpBinding {
    pub method: String,
    /// `/repos/{owner}/{repo}/issues`: each `{name}` an argument, percent-encoded.
    pub path: String,
    /// Arguments sent as query parameters.
    #[serde(default)]
    pub query: Vec<String>,
    /// Arguments sent as headers: (argument, header name).
    #[serde(default)]
    pub headers: Vec<(String, String)>,
    /// The argument sent as the JSON body, or `*` for every argument not bound
    /// elsewhere.
    #[serde(default)]
    pub body: Option<String>,
    /// A GraphQL API's query: the body is `{"query": it, "variables": {every argument
    /// not bound elsewhere}}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub graphql: Option<String>,
    /// A list that continues over pages as the tool's `pagination` says; the action
    /// takes `max_pages`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub paginated: bool,
    /// The API the request is for, where one tool spans several (AWS's `s3`, `ec2`;
    /// GCP's `storage`, `compute`): `{$service}` in the base URL, and what an AWS
    /// signature is scoped to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    /// The body's media type when it is not `application/json` (a merge patch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_type: Option<String>,
    /// The body argument, a string, sent as it is rather than as JSON (an object's
    /// content).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub raw_body: bool,
    /// The API's name for a query argument, where it is not a name a model can use
    /// (`max-keys`, `InstanceId`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub query_names: BTreeMap<String, String>,
    /// A list argument in the query as `Name.1=a&Name.2=b` (AWS's query APIs) rather
    /// than the name repeated.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub numbered_lists: bool,
}

/// Why a manifest cannot be used, naming the part.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestError {
    pub field: String,
    pub message: String,
}

impl ManifestError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

impl std::fmt::Display for ManifestError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

impl ToolManifest {
    /// Checks the manifest as a whole: its id, its URL, unique action names, each
    /// action's schema, binding and limits.
    pub fn check(&self) -> Result<(), ManifestError> {
        if !is_slug(&self.id) {
            return Err(ManifestError::new(
                "id",
                "must be 2-63 lowercase letters, digits or -, starting with a letter or digit",
            ));
        }
        // A stdio MCP server is named (`stdio:<name>`), not reached at a URL.
        let stdio = self.mcp && self.base_url.starts_with("stdio:");
        if self.sandbox.is_none() && !self.browser && !stdio {
            // `{$region}` and the like are filled from the credential when called.
            let base = url::Url::parse(&self.base_url.replace("{$", "x").replace('}', "x"))
                .map_err(|e| ManifestError::new("base_url", e.to_string()))?;
            if !matches!(base.scheme(), "http" | "https") || base.cannot_be_a_base() {
                return Err(ManifestError::new("base_url", "is an http or https URL"));
            }
        }
        if self.actions.is_empty() {
            return Err(ManifestError::new("actions", "has at least one action"));
        }
        for name in self.headers.keys() {
            if reqwest::header::HeaderName::from_bytes(name.as_bytes()).is_err() {
                return Err(ManifestError::new(
                    format!("headers.{name}"),
                    "is a header name",
                ));
            }
        }
        let mut names = std::collections::HashSet::new();
        for (i, action) in self.actions.iter().enumerate() {
            let at = |part: &str| format!("actions[{i}].{part}");
            if !is_action_name(&action.name) {
                return Err(ManifestError::new(
                    at("name"),
                    "is 1-64 letters, digits, '_' or '-'",
                ));
            }
            if !names.insert(action.name.as_str()) {
                return Err(ManifestError::new(at("name"), "is used by another action"));
            }
            if action.parameters.get("type").and_then(Value::as_str) != Some("object") {
                return Err(ManifestError::new(
                    at("parameters"),
                    "is a JSON-Schema of type object",
                ));
            }
            crate::domain::arguments::ArgumentSchema::compile(&action.parameters)
                .map_err(|e| ManifestError::new(at("parameters"), e))?;
            if somagent_common::auth::Capability::parse(&action.capability).is_none() {
                return Err(ManifestError::new(
                    at("capability"),
                    "is a capability of the platform",
                ));
            }
            if action.timeout.is_zero() || action.timeout > MAX_TIMEOUT {
                return Err(ManifestError::new(at("timeout"), "is 1 ms to 300 s"));
            }
            if action.price_micros < 0 {
                return Err(ManifestError::new(at("price_micros"), "is not negative"));
            }
            if self.mcp || self.sandbox.is_some() || self.browser {
                if action.remote.as_deref().is_none_or(str::is_empty) {
                    return Err(ManifestError::new(at("remote"), "names what runs it"));
                }
                continue;
            }
            crate::domain::request::check_binding(&action.http, &action.parameters)
                .map_err(|e| ManifestError::new(at("http"), e))?;
            if action.http.paginated && self.pagination.is_none() {
                return Err(ManifestError::new(
                    at("http.paginated"),
                    "needs the tool's pagination",
                ));
            }
            if matches!(self.auth, AuthScheme::AwsSigV4) && action.http.service.is_none() {
                return Err(ManifestError::new(
                    at("http.service"),
                    "names the AWS service the request is signed for",
                ));
            }
            if action.http.raw_body && action.http.body.as_deref().is_none_or(|b| b == "*") {
                return Err(ManifestError::new(
                    at("http.raw_body"),
                    "needs the one argument sent as the body",
                ));
            }
            if action.http.graphql.is_some() && action.http.body.is_some() {
                return Err(ManifestError::new(
                    at("http.body"),
                    "is left out: a GraphQL action's body is its query and variables",
                ));
            }
        }
        Ok(())
    }

    pub fn action(&self, name: &str) -> Option<&Action> {
        self.actions.iter().find(|a| a.name == name)
    }
}

pub fn is_slug(value: &str) -> bool {
    (2..=63).contains(&value.len())
        && value
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        && value
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

pub fn is_action_name(value: &str) -> bool {
    (1..=64).contains(&value.len())
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

mod millis {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        u64::deserialize(d).map(Duration::from_millis)
    }
}
