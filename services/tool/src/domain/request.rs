//! How a call becomes an HTTP request: path arguments percent-encoded into their
//! segments, query and header arguments in their places, the body as JSON, and the
//! tenant's credential where the tool's auth scheme puts it. The credential never
//! appears in anything this module returns for display (`PreparedRequest`'s `Debug`
//! hides header values).

use serde_json::{Map, Value};

use crate::domain::manifest::{AuthScheme, HttpBinding};

const METHODS: &[&str] = &["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD"];

/// Characters left as they are in a path segment (RFC 3986 unreserved); everything
/// else, `/` included, is percent-encoded, so an argument cannot climb the path.
const SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

#[derive(Clone, PartialEq)]
pub struct PreparedRequest {
    pub method: String,
    pub url: url::Url,
    pub headers: Vec<(String, String)>,
    pub body: Option<Value>,
    /// The body, a string, is sent as it is rather than as JSON.
    pub raw_body: bool,
    /// The body's media type when it is not `application/json`.
    pub content_type: Option<String>,
}

impl PreparedRequest {
    /// The body's bytes and media type, as sent (and as an AWS signature covers them).
    pub fn encoded_body(&self) -> Option<(Vec<u8>, String)> {
        let body = self.body.as_ref()?;
        let (bytes, default_type) = match body {
            Value::String(text) if self.raw_body => {
                (text.as_bytes().to_vec(), "application/octet-stream")
            }
            other => (
                serde_json::to_vec(other).unwrap_or_default(),
                "application/json",
            ),
        };
        let media = self.content_type.as_deref().unwrap_or(default_type);
        Some((bytes, media.to_owned()))
    }
}

impl std::fmt::Debug for PreparedRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut url = self.url.clone();
        url.set_query(None);
        f.debug_struct("PreparedRequest")
            .field("method", &self.method)
            .field("url", &url.as_str())
            .field(
                "headers",
                &self.headers.iter().map(|(n, _)| n).collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

/// The arguments a path names, in order.
fn path_arguments(path: &str) -> Result<Vec<&str>, String> {
    let mut names = Vec::new();
    let mut rest = path;
    while let Some(open) = rest.find('{') {
        let close = rest[open..]
            .find('}')
            .ok_or_else(|| format!("path `{path}` has an unclosed `{{`"))?;
        names.push(&rest[open + 1..open + close]);
        rest = &rest[open + close + 1..];
    }
    Ok(names)
}

/// Checks that a binding can be filled from its schema: a known method, a path from
/// the root, and every argument it places declared by the schema (path arguments
/// required, since a request cannot be built without them).
pub fn check_binding(binding: &HttpBinding, schema: &Value) -> Result<(), String> {
    if !METHODS.contains(&binding.method.as_str()) {
        return Err(format!("method is one of {}", METHODS.join(", ")));
    }
    if !binding.path.starts_with('/') {
        return Err("path starts with /".into());
    }
    let properties = schema.get("properties").and_then(Value::as_object);
    let declared = |name: &str| properties.is_some_and(|p| p.contains_key(name));
    let required: Vec<&str> = schema
        .get("required")
        .and_then(Value::as_array)
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    for raw in path_arguments(&binding.path)? {
        // `{$name}` is the credential's (a project id), not an argument.
        if raw.starts_with('$') {
            continue;
        }
        let name = raw.strip_prefix('+').unwrap_or(raw);
        if !declared(name) || !required.contains(&name) {
            return Err(format!(
                "path argument `{name}` is a required property of the parameters"
            ));
        }
    }
    let placed = binding
        .query
        .iter()
        .chain(binding.headers.iter().map(|(a, _)| a))
        .chain(binding.body.iter().filter(|b| *b != "*"));
    for name in placed {
        if !declared(name) {
            return Err(format!("argument `{name}` is not in the parameters"));
        }
    }
    Ok(())
}

/// The request for a call whose arguments have already been checked against the
/// schema. `credential` is the tenant's secret for the tool, when its scheme needs one.
/// Where a tool is called and what every request of it carries.
pub struct Target<'a> {
    pub base_url: &'a str,
    pub auth: &'a AuthScheme,
    pub headers: &'a std::collections::BTreeMap<String, String>,
    /// What `{$name}` stands for in the base URL and paths: the credential's region,
    /// project or subscription (never a secret).
    pub variables: &'a std::collections::BTreeMap<String, String>,
}

/// The base URL with `{$name}`s filled: the credential's variables, and the action's
/// `service`.
pub fn resolve_base(
    base_url: &str,
    variables: &std::collections::BTreeMap<String, String>,
    service: Option<&str>,
) -> Result<String, String> {
    let mut resolved = String::with_capacity(base_url.len());
    let mut rest = base_url;
    while let Some(open) = rest.find("{$") {
        resolved.push_str(&rest[..open]);
        let close = rest[open..]
            .find('}')
            .ok_or_else(|| "the base URL has an unclosed `{$`".to_owned())?;
        let name = &rest[open + 2..open + close];
        let value = match name {
            "service" => service.map(str::to_owned),
            _ => variables.get(name).cloned(),
        }
        .ok_or_else(|| format!("the credential gives no `{name}` for the tool's URL"))?;
        if !crate::domain::credentials::is_name(&value) {
            return Err(format!("`{name}` is not a name a URL can hold"));
        }
        resolved.push_str(&value);
        rest = &rest[open + close + 1..];
    }
    resolved.push_str(rest);
    Ok(resolved)
}

pub fn prepare(
    target: &Target<'_>,
    binding: &HttpBinding,
    arguments: &Map<String, Value>,
    credential: Option<&str>,
) -> Result<PreparedRequest, String> {
    let auth = target.auth;
    let base_url = resolve_base(
        target.base_url,
        target.variables,
        binding.service.as_deref(),
    )?;
    let mut used: Vec<&str> = Vec::new();
    let mut path = String::new();
    let mut rest = binding.path.as_str();
    for raw in path_arguments(&binding.path)? {
        let open = rest.find('{').unwrap_or(rest.len());
        path.push_str(&rest[..open]);
        if let Some(variable) = raw.strip_prefix('$') {
            let value = target
                .variables
                .get(variable)
                .filter(|v| crate::domain::credentials::is_name(v))
                .ok_or_else(|| {
                    format!("the credential gives no usable `{variable}` for the request's path")
                })?;
            path.push_str(&percent_encoding::utf8_percent_encode(value, SEGMENT).to_string());
            rest = &rest[open + raw.len() + 2..];
            continue;
        }
        // `{+name}` spans segments (a file's path): each is encoded on its own.
        let (name, spans) = match raw.strip_prefix('+') {
            Some(name) => (name, true),
            None => (raw, false),
        };
        let value = arguments
            .get(name)
            .ok_or_else(|| format!("argument `{name}` is required"))?;
        let text = scalar(value).ok_or_else(|| format!("argument `{name}` is a scalar"))?;
        let segments: Vec<&str> = if spans {
            text.split('/').collect()
        } else {
            vec![text.as_str()]
        };
        for (i, segment) in segments.iter().enumerate() {
            if segment.is_empty() {
                return Err(format!("argument `{name}` has no empty part"));
            }
            // A segment of dots is resolved away by URL parsing, encoded or not
            // (`%2E%2E` is `..` too): it would climb the path, and names no resource.
            if *segment == "." || *segment == ".." {
                return Err(format!("argument `{name}` has no `.` or `..` part"));
            }
            if i > 0 {
                path.push('/');
            }
            path.push_str(&percent_encoding::utf8_percent_encode(segment, SEGMENT).to_string());
        }
        used.push(name);
        rest = &rest[open + raw.len() + 2..];
    }
    path.push_str(rest);
    let mut url = url::Url::parse(&format!("{}{}", base_url.trim_end_matches('/'), path))
        .map_err(|e| format!("the request URL does not parse: {e}"))?;
    {
        let mut pairs = url.query_pairs_mut();
        for name in &binding.query {
            used.push(name);
            let sent = binding.query_names.get(name).unwrap_or(name);
            match arguments.get(name) {
                None | Some(Value::Null) => {}
                Some(Value::Array(items)) => {
                    for (i, item) in items.iter().enumerate() {
                        let value = scalar(item).unwrap_or_default();
                        if binding.numbered_lists {
                            pairs.append_pair(&format!("{sent}.{}", i + 1), &value);
                        } else {
                            pairs.append_pair(sent, &value);
                        }
                    }
                }
                Some(value) => {
                    pairs.append_pair(sent, &scalar(value).unwrap_or_else(|| value.to_string()));
                }
            }
        }
        if let (AuthScheme::Query { name }, Some(secret)) = (auth, credential) {
            pairs.append_pair(name, secret);
        }
    }
    if url.query() == Some("") {
        url.set_query(None);
    }
    let mut headers: Vec<(String, String)> = target
        .headers
        .iter()
        .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
        .collect();
    for (name, header) in &binding.headers {
        used.push(name);
        if let Some(value) = arguments.get(name).and_then(scalar) {
            headers.push((header.clone(), value));
        }
    }
    match (auth, credential) {
        // AWS signs the finished request; a kubeconfig may prove itself with a client
        // certificate and no token.
        (AuthScheme::None | AuthScheme::Query { .. } | AuthScheme::AwsSigV4, _)
        | (AuthScheme::Kubeconfig, None) => {}
        (_, None) => return Err("the tool's credential is not set".into()),
        (
            AuthScheme::Bearer
            | AuthScheme::AzureClientCredentials { .. }
            | AuthScheme::GoogleServiceAccount { .. }
            | AuthScheme::Kubeconfig,
            Some(secret),
        ) => {
            headers.push(("authorization".into(), format!("Bearer {secret}")));
        }
        (AuthScheme::Header { name, prefix }, Some(secret)) => {
            headers.push((name.to_ascii_lowercase(), format!("{prefix}{secret}")));
        }
        (AuthScheme::Basic, Some(secret)) => {
            let encoded = data_encoding::BASE64.encode(secret.as_bytes());
            headers.push(("authorization".into(), format!("Basic {encoded}")));
        }
    }
    if matches!(auth, AuthScheme::Query { .. }) && credential.is_none() {
        return Err("the tool's credential is not set".into());
    }
    let unbound = || -> Map<String, Value> {
        arguments
            .iter()
            .filter(|(k, _)| !used.contains(&k.as_str()))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    };
    let body = match (&binding.graphql, binding.body.as_deref()) {
        (Some(query), _) => Some(serde_json::json!({ "query": query, "variables": unbound() })),
        (None, None) => None,
        (None, Some("*")) => Some(Value::Object(unbound())),
        (None, Some(name)) => arguments.get(name).cloned(),
    };
    Ok(PreparedRequest {
        method: binding.method.clone(),
        url,
        headers,
        body,
        raw_body: binding.raw_body,
        content_type: binding.content_type.clone(),
    })
}

/// A string, number or boolean as text; anything else has no text form.
fn scalar(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn binding() -> HttpBinding {
        HttpBinding {
            method: "POST".into(),
            path: "/repos/{owner}/{repo}/issues".into(),
            query: vec!["state".into(), "labels".into()],
            headers: vec![("trace".into(), "X-Trace".into())],
            body: Some("*".into()),
            ..HttpBinding::default()
        }
    }

    fn schema() -> Value {
        json!({"type": "object", "required": ["owner", "repo"], "properties": {
            "owner": {"type": "string"}, "repo": {"type": "string"},
            "state": {"type": "string"}, "labels": {"type": "array"},
            "trace": {"type": "string"}, "title": {"type": "string"}
        }})
    }

    /// `prepare` for a tool at `base` with no headers of its own.
    fn call(
        base: &str,
        binding: &HttpBinding,
        auth: &AuthScheme,
        arguments: &Map<String, Value>,
        credential: Option<&str>,
    ) -> Result<PreparedRequest, String> {
        let headers = std::collections::BTreeMap::new();
        let target = Target {
            base_url: base,
            auth,
            headers: &headers,
            variables: &headers,
        };
        prepare(&target, binding, arguments, credential)
    }

    fn args(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn arguments_go_to_their_places_and_cannot_climb_the_path() {
        assert_eq!(check_binding(&binding(), &schema()), Ok(()));
        let request = call(
            "https://api.example/v3/",
            &binding(),
            &AuthScheme::Bearer,
            &args(json!({"owner": "../admin", "repo": "a b", "state": "open",
                "labels": ["bug", "ui"], "trace": "t1", "title": "Broken"})),
            Some("s3cret"),
        )
        .unwrap();
        assert_eq!(
            request.url.as_str(),
            "https://api.example/v3/repos/..%2Fadmin/a%20b/issues?state=open&labels=bug&labels=ui"
        );
        assert!(request.headers.contains(&("X-Trace".into(), "t1".into())));
        for dots in ["..", "."] {
            let refused = call(
                "https://api.example/v3",
                &binding(),
                &AuthScheme::None,
                &args(json!({"owner": dots, "repo": "r"})),
                None,
            )
            .unwrap_err();
            assert!(refused.contains("owner"), "{refused}");
        }
        assert!(
            request
                .headers
                .contains(&("authorization".into(), "Bearer s3cret".into()))
        );
        assert_eq!(request.body, Some(json!({"title": "Broken"})));
        let shown = format!("{request:?}");
        assert!(!shown.contains("s3cret"), "{shown}");
    }

    #[test]
    fn credentials_go_where_the_scheme_says_and_are_required() {
        let get = HttpBinding {
            method: "GET".into(),
            path: "/me".into(),
            query: vec![],
            headers: vec![],
            body: None,
            ..HttpBinding::default()
        };
        let none = Map::new();
        let q = call(
            "http://h",
            &get,
            &AuthScheme::Query { name: "key".into() },
            &none,
            Some("k1"),
        )
        .unwrap();
        assert_eq!(q.url.as_str(), "http://h/me?key=k1");
        assert!(!format!("{q:?}").contains("k1"));
        let h = call(
            "http://h",
            &get,
            &AuthScheme::Header {
                name: "PRIVATE-TOKEN".into(),
                prefix: String::new(),
            },
            &none,
            Some("t"),
        )
        .unwrap();
        assert_eq!(
            h.headers,
            vec![("private-token".to_owned(), "t".to_owned())]
        );
        let b = call("http://h", &get, &AuthScheme::Basic, &none, Some("u:p")).unwrap();
        assert_eq!(b.headers[0].1, "Basic dTpw");
        for scheme in [
            AuthScheme::Bearer,
            AuthScheme::Basic,
            AuthScheme::Query { name: "k".into() },
        ] {
            assert!(call("http://h", &get, &scheme, &none, None).is_err());
        }
        assert!(call("http://h", &get, &AuthScheme::None, &none, None).is_ok());
    }

    #[test]
    fn a_binding_must_fit_its_schema() {
        let mut b = binding();
        b.method = "BREW".into();
        assert!(check_binding(&b, &schema()).is_err());
        let mut b = binding();
        b.path = "/repos/{owner}/{missing}".into();
        assert!(
            check_binding(&b, &schema())
                .unwrap_err()
                .contains("missing")
        );
        let mut b = binding();
        b.query.push("nope".into());
        assert!(check_binding(&b, &schema()).unwrap_err().contains("nope"));
        let optional = json!({"type": "object", "properties": {"owner": {"type": "string"}, "repo": {"type": "string"}}});
        assert!(
            check_binding(&binding(), &optional).is_err(),
            "path arguments are required"
        );
    }
}
