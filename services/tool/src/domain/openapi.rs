//! A tenant's HTTP tool from an OpenAPI 3 document: each operation an action whose
//! parameters (path, query, header) and JSON request body become one argument schema,
//! the first server its base URL, the first security scheme its auth. Only local
//! `$ref`s (`#/components/...`) are followed, never a URL. An operation may set
//! `x-somagent-requires-approval` (a boolean) over the tool's default: a call of it
//! then runs only after a person approves it inside a session turn.

use std::time::Duration;

use serde_json::{Map, Value, json};

use crate::domain::manifest::{
    Action, AuthScheme, HttpBinding, ManifestError, ToolManifest, is_action_name,
};

/// The most actions one document may define.
pub const MAX_ACTIONS: usize = 200;
/// How deep `$ref`s may nest before a schema counts as recursive.
const MAX_REF_DEPTH: usize = 16;
const METHODS: &[&str] = &["get", "post", "put", "patch", "delete", "head"];

/// What a tenant chose for the tool beyond the document.
#[derive(Debug, Clone)]
pub struct ToolDefaults {
    pub id: String,
    /// Overrides the document's first server.
    pub base_url: Option<String>,
    pub rate_limit_per_minute: u32,
    pub timeout: Duration,
    pub price_micros: i64,
    pub requires_approval: bool,
}

pub fn manifest_from(doc: &Value, defaults: &ToolDefaults) -> Result<ToolManifest, ManifestError> {
    let version = doc.get("openapi").and_then(Value::as_str).unwrap_or("");
    if !version.starts_with("3.") {
        return Err(ManifestError::new("openapi", "is an OpenAPI 3 document"));
    }
    let info = doc.get("info").cloned().unwrap_or_default();
    let text = |v: &Value, key: &str| v.get(key).and_then(Value::as_str).unwrap_or("").to_owned();
    let base_url = match &defaults.base_url {
        Some(url) => url.clone(),
        None => doc
            .pointer("/servers/0/url")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| ManifestError::new("servers", "names a server, or give base_url"))?,
    };
    let paths = doc
        .get("paths")
        .and_then(Value::as_object)
        .ok_or_else(|| ManifestError::new("paths", "is an object of operations"))?;
    let mut actions = Vec::new();
    for (path, item) in paths {
        let shared = item.get("parameters").cloned().unwrap_or(json!([]));
        for method in METHODS {
            let Some(operation) = item.get(*method) else {
                continue;
            };
            let at = format!("paths.{path}.{method}");
            if actions.len() == MAX_ACTIONS {
                return Err(ManifestError::new(
                    "paths",
                    format!("has at most {MAX_ACTIONS} operations"),
                ));
            }
            let name = match operation.get("operationId").and_then(Value::as_str) {
                Some(id) => id.to_owned(),
                None => derived_name(method, path),
            };
            if !is_action_name(&name) {
                return Err(ManifestError::new(
                    format!("{at}.operationId"),
                    "is 1-64 letters, digits, '_' or '-'",
                ));
            }
            let (parameters, http) = operation_arguments(doc, path, method, &shared, operation)
                .map_err(|e| ManifestError::new(at.clone(), e))?;
            let description = [text(operation, "summary"), text(operation, "description")]
                .into_iter()
                .filter(|s| !s.is_empty())
                .collect::<Vec<_>>()
                .join("\n\n");
            actions.push(Action {
                name,
                description,
                parameters,
                capability: "tools:invoke".into(),
                rate_limit_per_minute: defaults.rate_limit_per_minute,
                timeout: defaults.timeout,
                price_micros: defaults.price_micros,
                requires_approval: match operation.get("x-somagent-requires-approval") {
                    None => defaults.requires_approval,
                    Some(Value::Bool(b)) => *b,
                    Some(_) => {
                        return Err(ManifestError::new(
                            format!("{at}.x-somagent-requires-approval"),
                            "is true or false",
                        ));
                    }
                },
                http,
                remote: None,
            });
        }
    }
    let manifest = ToolManifest {
        id: defaults.id.clone(),
        name: Some(text(&info, "title"))
            .filter(|t| !t.is_empty())
            .unwrap_or_else(|| defaults.id.clone()),
        description: text(&info, "description"),
        version: text(&info, "version"),
        base_url,
        site_required: false,
        auth: auth_of(doc)?,
        headers: Default::default(),
        pagination: None,
        mcp: false,
        sandbox: None,
        browser: false,
        memory: false,
        actions,
    };
    manifest.check()?;
    Ok(manifest)
}

/// `get /repos/{owner}/issues` → `get_repos_owner_issues`.
fn derived_name(method: &str, path: &str) -> String {
    let mut name = method.to_owned();
    for part in path.split('/').filter(|p| !p.is_empty()) {
        name.push('_');
        name.extend(
            part.chars()
                .filter(|c| *c != '{' && *c != '}')
                .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' }),
        );
    }
    name.truncate(64);
    name
}

fn operation_arguments(
    doc: &Value,
    path: &str,
    method: &str,
    shared: &Value,
    operation: &Value,
) -> Result<(Value, HttpBinding), String> {
    let mut properties = Map::new();
    let mut required = Vec::new();
    let mut binding = HttpBinding {
        method: method.to_ascii_uppercase(),
        path: path.to_owned(),
        query: Vec::new(),
        headers: Vec::new(),
        body: None,
        ..HttpBinding::default()
    };
    let own = operation.get("parameters").cloned().unwrap_or(json!([]));
    // An operation's parameter overrides the path item's of the same name and place.
    let mut seen = Vec::<(String, String)>::new();
    for parameter in own
        .as_array()
        .into_iter()
        .flatten()
        .chain(shared.as_array().into_iter().flatten())
    {
        let parameter = resolve(doc, parameter, 0)?;
        let name = parameter
            .get("name")
            .and_then(Value::as_str)
            .ok_or("a parameter has no name")?;
        let place = parameter
            .get("in")
            .and_then(Value::as_str)
            .ok_or("a parameter has no `in`")?;
        if seen.contains(&(name.to_owned(), place.to_owned())) {
            continue;
        }
        seen.push((name.to_owned(), place.to_owned()));
        if properties.contains_key(name) {
            return Err(format!("two parameters are called `{name}`"));
        }
        let mut schema = match parameter.get("schema") {
            Some(s) => resolve(doc, s, 0)?,
            None => json!({"type": "string"}),
        };
        if let (Some(d), Some(obj)) = (parameter.get("description"), schema.as_object_mut()) {
            obj.entry("description").or_insert(d.clone());
        }
        match place {
            "path" => {
                required.push(name.to_owned());
            }
            "query" => binding.query.push(name.to_owned()),
            "header" => binding.headers.push((name.to_owned(), name.to_owned())),
            other => {
                return Err(format!(
                    "parameter `{name}` is in `{other}`, which tools do not send"
                ));
            }
        }
        if place != "path" && parameter.get("required").and_then(Value::as_bool) == Some(true) {
            required.push(name.to_owned());
        }
        properties.insert(name.to_owned(), schema);
    }
    if let Some(body) = operation.get("requestBody") {
        let body = resolve(doc, body, 0)?;
        let schema = body
            .pointer("/content/application~1json/schema")
            .ok_or("the request body is not application/json")?;
        if properties.contains_key("body") {
            return Err("a parameter is called `body`, which names the request body".into());
        }
        properties.insert("body".into(), resolve(doc, schema, 0)?);
        if body.get("required").and_then(Value::as_bool) == Some(true) {
            required.push("body".into());
        }
        binding.body = Some("body".into());
    }
    let schema = json!({
        "type": "object",
        "properties": properties,
        "required": required,
        "additionalProperties": false,
    });
    Ok((schema, binding))
}

/// A value with every local `$ref` inside it replaced by what it points to.
fn resolve(doc: &Value, value: &Value, depth: usize) -> Result<Value, String> {
    if depth > MAX_REF_DEPTH {
        return Err("a schema refers to itself too deeply (recursive $ref)".into());
    }
    match value {
        Value::Object(map) => {
            if let Some(reference) = map.get("$ref").and_then(Value::as_str) {
                let pointer = reference
                    .strip_prefix('#')
                    .filter(|p| p.starts_with("/components/"))
                    .ok_or_else(|| format!("`$ref: {reference}` is not local to the document"))?;
                let target = doc
                    .pointer(pointer)
                    .ok_or_else(|| format!("`$ref: {reference}` points at nothing"))?;
                return resolve(doc, target, depth + 1);
            }
            map.iter()
                .map(|(k, v)| Ok((k.clone(), resolve(doc, v, depth)?)))
                .collect::<Result<Map<_, _>, String>>()
                .map(Value::Object)
        }
        Value::Array(items) => items
            .iter()
            .map(|v| resolve(doc, v, depth))
            .collect::<Result<Vec<_>, _>>()
            .map(Value::Array),
        other => Ok(other.clone()),
    }
}

/// The first security scheme the document declares, as a tool's auth.
fn auth_of(doc: &Value) -> Result<AuthScheme, ManifestError> {
    let Some((_, scheme)) = doc
        .pointer("/components/securitySchemes")
        .and_then(Value::as_object)
        .and_then(|s| s.iter().next())
    else {
        return Ok(AuthScheme::None);
    };
    let scheme = resolve(doc, scheme, 0).map_err(|e| ManifestError::new("securitySchemes", e))?;
    let field = |k: &str| {
        scheme
            .get(k)
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_ascii_lowercase()
    };
    let name = scheme
        .get("name")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned();
    Ok(
        match (
            field("type").as_str(),
            field("scheme").as_str(),
            field("in").as_str(),
        ) {
            ("http", "bearer", _) | ("oauth2" | "openidconnect", _, _) => AuthScheme::Bearer,
            ("http", "basic", _) => AuthScheme::Basic,
            ("apikey", _, "header") if !name.is_empty() => AuthScheme::Header {
                name,
                prefix: String::new(),
            },
            ("apikey", _, "query") if !name.is_empty() => AuthScheme::Query { name },
            (kind, scheme, place) => {
                return Err(ManifestError::new(
                    "securitySchemes",
                    format!(
                        "`{kind}` {scheme}{place} is not a scheme tools can send (bearer, basic, an API key in a header or the query)"
                    ),
                ));
            }
        },
    )
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::domain::arguments::ArgumentSchema;

    fn defaults() -> ToolDefaults {
        ToolDefaults {
            id: "acme-crm".into(),
            base_url: None,
            rate_limit_per_minute: 60,
            timeout: Duration::from_secs(30),
            price_micros: 1_000,
            requires_approval: false,
        }
    }

    fn crm() -> Value {
        json!({
            "openapi": "3.0.3",
            "info": {"title": "Acme CRM", "version": "2.1"},
            "servers": [{"url": "https://crm.acme.example/api"}],
            "components": {
                "securitySchemes": {"key": {"type": "apiKey", "in": "header", "name": "X-API-Key"}},
                "schemas": {"Contact": {"type": "object", "required": ["email"],
                    "properties": {"email": {"type": "string", "format": "email"}, "name": {"type": "string"}}}},
                "parameters": {"Id": {"name": "id", "in": "path", "required": true, "schema": {"type": "integer"}}}
            },
            "paths": {
                "/contacts": {
                    "get": {"operationId": "list_contacts", "summary": "List contacts",
                        "parameters": [{"name": "q", "in": "query", "schema": {"type": "string"}}]},
                    "post": {"operationId": "create_contact", "requestBody": {"required": true,
                        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Contact"}}}}}
                },
                "/contacts/{id}": {
                    "parameters": [{"$ref": "#/components/parameters/Id"}],
                    "delete": {}
                }
            }
        })
    }

    #[test]
    fn an_operation_may_require_approval_over_the_default() {
        let mut doc = crm();
        doc["paths"]["/contacts/{id}"]["delete"]["x-somagent-requires-approval"] = json!(true);
        let m = manifest_from(&doc, &defaults()).unwrap();
        let approval: Vec<_> = m
            .actions
            .iter()
            .map(|a| (a.name.as_str(), a.requires_approval))
            .collect();
        assert_eq!(
            approval,
            [
                ("list_contacts", false),
                ("create_contact", false),
                ("delete_contacts_id", true)
            ]
        );
        doc["paths"]["/contacts/{id}"]["delete"]["x-somagent-requires-approval"] = json!("yes");
        let e = manifest_from(&doc, &defaults()).unwrap_err();
        assert_eq!(
            e.field,
            "paths./contacts/{id}.delete.x-somagent-requires-approval"
        );
    }

    #[test]
    fn each_operation_becomes_an_action_with_one_schema() {
        let m = manifest_from(&crm(), &defaults()).unwrap();
        assert_eq!((m.name.as_str(), m.version.as_str()), ("Acme CRM", "2.1"));
        assert_eq!(m.base_url, "https://crm.acme.example/api");
        assert_eq!(
            m.auth,
            AuthScheme::Header {
                name: "X-API-Key".into(),
                prefix: String::new(),
            }
        );
        let names: Vec<_> = m.actions.iter().map(|a| a.name.as_str()).collect();
        assert_eq!(
            names,
            ["list_contacts", "create_contact", "delete_contacts_id"]
        );

        let create = m.action("create_contact").unwrap();
        assert_eq!(create.http.body.as_deref(), Some("body"));
        let schema = ArgumentSchema::compile(&create.parameters).unwrap();
        assert!(
            schema
                .check(&json!({"body": {"email": "a@b.example"}}))
                .is_ok()
        );
        assert_eq!(
            schema
                .check(&json!({"body": {"name": "x"}}))
                .unwrap_err()
                .field,
            "body"
        );
        assert_eq!(schema.check(&json!({})).unwrap_err().field, "arguments");

        let delete = m.action("delete_contacts_id").unwrap();
        assert_eq!(delete.http.method, "DELETE");
        assert_eq!(delete.parameters["required"], json!(["id"]));
        let schema = ArgumentSchema::compile(&delete.parameters).unwrap();
        assert_eq!(
            schema.check(&json!({"id": "seven"})).unwrap_err().field,
            "id"
        );
        assert_eq!(m.action("list_contacts").unwrap().http.query, ["q"]);
    }

    #[test]
    fn what_cannot_be_a_tool_is_refused_with_where() {
        let mut doc = crm();
        doc["openapi"] = json!("2.0");
        assert_eq!(
            manifest_from(&doc, &defaults()).unwrap_err().field,
            "openapi"
        );

        let mut doc = crm();
        doc["paths"]["/contacts"]["post"]["requestBody"]["content"]["application/json"]["schema"] =
            json!({"$ref": "https://evil.example/schema.json"});
        assert!(
            manifest_from(&doc, &defaults())
                .unwrap_err()
                .message
                .contains("not local")
        );

        let mut doc = crm();
        doc["components"]["schemas"]["Contact"]["properties"]["friend"] =
            json!({"$ref": "#/components/schemas/Contact"});
        assert!(
            manifest_from(&doc, &defaults())
                .unwrap_err()
                .message
                .contains("recursive")
        );

        let mut doc = crm();
        doc["components"]["securitySchemes"] = json!({"m": {"type": "mutualTLS"}});
        assert_eq!(
            manifest_from(&doc, &defaults()).unwrap_err().field,
            "securitySchemes"
        );

        let mut doc = crm();
        doc.as_object_mut().unwrap().remove("servers");
        assert_eq!(
            manifest_from(&doc, &defaults()).unwrap_err().field,
            "servers"
        );
        let chosen = ToolDefaults {
            base_url: Some("http://127.0.0.1:9/crm".into()),
            ..defaults()
        };
        assert_eq!(
            manifest_from(&doc, &chosen).unwrap().base_url,
            "http://127.0.0.1:9/crm"
        );
    }
}
