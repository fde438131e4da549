//! The built-in adapters: clients of the APIs agents use most, each one declarative
//! manifest (`adapters/<id>.json`: base URL, auth, headers, pagination, and for each
//! action its JSON-Schema and HTTP binding) read into the same shape as a tenant's own
//! tools, so they run through the same checks, policy, limits and metering. Every tenant
//! sees them; a tenant uses one once it has set its credential (and, for an API served
//! per customer such as a Jira site, its base URL).

use std::sync::LazyLock;

use serde_json::{Value, json};

use crate::domain::manifest::{MAX_PAGES, MAX_PAGES_ARGUMENT, ManifestError, ToolManifest};

/// The adapters shipped in the binary (`adapters/<id>.json`), by id, and beside each its
/// documented requests (`adapters/examples/<id>.json`) for the tests.
macro_rules! shipped {
    ($($id:literal),* $(,)?) => {
        const FILES: &[(&str, &str)] =
            &[$(($id, include_str!(concat!("../adapters/", $id, ".json")))),*];
        #[cfg(test)]
        const EXAMPLES: &[(&str, &str)] =
            &[$(($id, include_str!(concat!("../adapters/examples/", $id, ".json")))),*];
    };
}

shipped!(
    "aws",
    "azure",
    "confluence",
    "discord",
    "figma",
    "gcp",
    "github",
    "gitlab",
    "jira",
    "kubernetes",
    "linear",
    "notion",
    "plane",
    "slack",
);

static BUILTIN: LazyLock<Vec<ToolManifest>> = LazyLock::new(|| {
    let mut all: Vec<ToolManifest> = FILES
        .iter()
        .filter_map(|(id, text)| match load(id, text) {
            Ok(manifest) => Some(manifest),
            Err(e) => {
                tracing::error!(adapter = id, error = %e, "a built-in adapter does not load and is left out");
                None
            }
        })
        .collect();
    // The platform's own memory, with no API of its own to describe.
    all.push(crate::domain::memory_tool::manifest());
    all
});

/// Every built-in adapter, by id.
pub fn all() -> &'static [ToolManifest] {
    &BUILTIN
}

/// The built-in adapter `id`, if there is one.
pub fn find(id: &str) -> Option<&'static ToolManifest> {
    BUILTIN.iter().find(|m| m.id == id)
}

/// Reads an adapter's file: its manifest, each paginated action given `max_pages`.
pub fn load(id: &str, text: &str) -> Result<ToolManifest, ManifestError> {
    let mut manifest: ToolManifest =
        serde_json::from_str(text).map_err(|e| ManifestError::new(id, e.to_string()))?;
    if manifest.id != id {
        return Err(ManifestError::new("id", format!("is `{id}`, as its file")));
    }
    for action in &mut manifest.actions {
        if !action.http.paginated {
            continue;
        }
        let Some(properties) = action
            .parameters
            .get_mut("properties")
            .and_then(Value::as_object_mut)
        else {
            continue;
        };
        properties.insert(
            MAX_PAGES_ARGUMENT.into(),
            json!({
                "type": "integer", "minimum": 1, "maximum": MAX_PAGES,
                "description": format!("How many pages to read and join (1-{MAX_PAGES}); 1 unless more are needed."),
            }),
        );
    }
    manifest.check()?;
    Ok(manifest)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use serde_json::{Map, Value};

    use super::*;
    use crate::domain::arguments::ArgumentSchema;
    use crate::domain::request::{Target, prepare};

    #[test]
    fn every_adapter_loads() {
        for (id, text) in FILES {
            let manifest = load(id, text).unwrap_or_else(|e| panic!("{id}: {e}"));
            assert!(
                (5..=12).contains(&manifest.actions.len()),
                "{id}: {} actions",
                manifest.actions.len()
            );
            assert!(manifest.auth.needs_credential(), "{id}");
        }
        assert_eq!(
            all().len(),
            FILES.len() + 1,
            "the adapters and the memory tool"
        );
    }

    /// Each adapter's documented requests, field by field: the examples beside it say,
    /// for arguments, the method, the path and query, the headers and the JSON body sent.
    #[test]
    fn each_adapter_sends_the_documented_requests() {
        let mut checked = 0;
        let mut headers_checked = 0;
        for (id, text) in EXAMPLES {
            let manifest = find(id).unwrap();
            let cases: Vec<Value> = serde_json::from_str(text).unwrap();
            assert!(cases.len() >= 2, "{id}: at least two examples");
            let base = "https://api.example.test/root";
            // What a cloud credential gives the paths (a project, a subscription).
            let variables: BTreeMap<String, String> = [
                ("project_id", "demo-project"),
                ("subscription_id", "sub-1"),
                ("region", "us-east-1"),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
            let target = Target {
                base_url: base,
                auth: &manifest.auth,
                headers: &manifest.headers,
                variables: &variables,
            };
            for case in cases {
                let action = manifest
                    .action(case["action"].as_str().unwrap())
                    .unwrap_or_else(|| panic!("{id}: {case}"));
                let arguments: Map<String, Value> = case["arguments"].as_object().unwrap().clone();
                ArgumentSchema::compile(&action.parameters)
                    .unwrap()
                    .check(&Value::Object(arguments.clone()))
                    .unwrap_or_else(|e| panic!("{id}.{}: {e:?}", action.name));
                let request = prepare(&target, &action.http, &arguments, Some("user:secret"))
                    .unwrap_or_else(|e| panic!("{id}.{}: {e}", action.name));
                let path = &request.url.as_str()[base.len()..];
                assert_eq!(
                    (request.method.as_str(), path),
                    (
                        case["method"].as_str().unwrap(),
                        case["path"].as_str().unwrap()
                    ),
                    "{id}.{}",
                    action.name
                );
                // The headers the API asks for, the credential where its scheme says.
                if let Some(headers) = case.get("headers").and_then(Value::as_object) {
                    for (name, value) in headers {
                        let sent = request
                            .headers
                            .iter()
                            .find(|(n, _)| n.eq_ignore_ascii_case(name))
                            .map(|(_, v)| v.as_str());
                        assert_eq!(sent, value.as_str(), "{id}.{}: {name}", action.name);
                    }
                    headers_checked += 1;
                }
                assert_eq!(
                    request.body.unwrap_or(Value::Null),
                    case["body"],
                    "{id}.{}",
                    action.name
                );
                checked += 1;
            }
        }
        assert!(checked >= 20, "{checked}");
        // Every adapter but AWS (signed when sent, checked against MinIO) says its headers.
        assert_eq!(headers_checked, EXAMPLES.len() - 1);
    }

    #[test]
    fn a_paginated_action_takes_max_pages() {
        let github = find("github").unwrap();
        let list = github.actions.iter().find(|a| a.http.paginated).unwrap();
        assert_eq!(
            list.parameters["properties"][MAX_PAGES_ARGUMENT]["maximum"],
            MAX_PAGES
        );
    }
}
