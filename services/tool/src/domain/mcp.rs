//! A tenant's tool from an MCP server: each of the server's tools an action, its
//! `inputSchema` the action's argument schema, its name kept for the call (an action's
//! own name is the server's with what OpenAI does not accept in a function name
//! replaced by `_`).

use serde_json::{Value, json};

use crate::domain::manifest::{Action, AuthScheme, ManifestError, ToolManifest};
use crate::domain::openapi::{MAX_ACTIONS, ToolDefaults};

/// One tool an MCP server lists.
#[derive(Debug, Clone, PartialEq)]
pub struct RemoteTool {
    pub name: String,
    pub description: String,
    pub input_schema: Value,
}

/// The server's tool `name` as an action's name: letters, digits, `_` and `-`, at most
/// 64.
fn action_name(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .take(64)
        .collect()
}

/// The manifest of an MCP server mounted at `url` as tool `defaults.id`; `bearer`: the
/// tenant's credential is sent as a bearer token.
pub fn manifest_from(
    url: &str,
    server_name: &str,
    tools: &[RemoteTool],
    defaults: &ToolDefaults,
    bearer: bool,
) -> Result<ToolManifest, ManifestError> {
    if tools.is_empty() {
        return Err(ManifestError::new("mcp", "the server lists no tools"));
    }
    if tools.len() > MAX_ACTIONS {
        return Err(ManifestError::new(
            "mcp",
            format!("the server lists more than {MAX_ACTIONS} tools"),
        ));
    }
    let mut actions: Vec<Action> = Vec::new();
    for tool in tools {
        let name = action_name(&tool.name);
        if name.is_empty() || actions.iter().any(|a| a.name == name) {
            return Err(ManifestError::new(
                format!("mcp.tools.{}", tool.name),
                "has a name no other tool of the server shares once made an action's",
            ));
        }
        let mut parameters = tool.input_schema.clone();
        if !parameters.is_object() {
            parameters = json!({"type": "object"});
        }
        actions.push(Action {
            name,
            description: tool.description.clone(),
            parameters,
            capability: "tools:invoke".into(),
            rate_limit_per_minute: defaults.rate_limit_per_minute,
            timeout: defaults.timeout,
            price_micros: defaults.price_micros,
            requires_approval: defaults.requires_approval,
            http: Default::default(),
            remote: Some(tool.name.clone()),
        });
    }
    let manifest = ToolManifest {
        id: defaults.id.clone(),
        name: Some(server_name.to_owned())
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| defaults.id.clone()),
        description: format!("MCP server at {url}"),
        version: String::new(),
        base_url: url.to_owned(),
        site_required: false,
        auth: if bearer {
            AuthScheme::Bearer
        } else {
            AuthScheme::None
        },
        headers: Default::default(),
        pagination: None,
        mcp: true,
        sandbox: None,
        browser: false,
        memory: false,
        actions,
    };
    manifest.check()?;
    Ok(manifest)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn defaults() -> ToolDefaults {
        ToolDefaults {
            id: "orders".into(),
            base_url: None,
            rate_limit_per_minute: 60,
            timeout: Duration::from_secs(30),
            price_micros: 10,
            requires_approval: false,
        }
    }

    #[test]
    fn each_server_tool_is_an_action_that_keeps_its_name() {
        let tools = [
            RemoteTool {
                name: "orders.lookup".into(),
                description: "Find an order".into(),
                input_schema: json!({"type": "object", "properties": {"id": {"type": "string"}}, "required": ["id"]}),
            },
            RemoteTool {
                name: "refund".into(),
                description: String::new(),
                input_schema: json!({"type": "object"}),
            },
        ];
        let m = manifest_from(
            "http://mcp.example/mcp",
            "Orders",
            &tools,
            &defaults(),
            true,
        )
        .unwrap();
        let names: Vec<_> = m
            .actions
            .iter()
            .map(|a| (a.name.as_str(), a.remote.as_deref()))
            .collect();
        assert_eq!(
            names,
            [
                ("orders_lookup", Some("orders.lookup")),
                ("refund", Some("refund"))
            ]
        );
        assert!(m.mcp && m.auth == AuthScheme::Bearer && m.name == "Orders");
        assert_eq!(m.actions[0].price_micros, 10);
    }

    #[test]
    fn a_server_without_tools_or_with_clashing_names_is_refused() {
        assert!(manifest_from("http://m/mcp", "", &[], &defaults(), false).is_err());
        let twin = |name: &str| RemoteTool {
            name: name.into(),
            description: String::new(),
            input_schema: json!({"type": "object"}),
        };
        let e = manifest_from(
            "http://m/mcp",
            "",
            &[twin("a.b"), twin("a/b")],
            &defaults(),
            false,
        )
        .unwrap_err();
        assert_eq!(e.field, "mcp.tools.a/b");
    }
}
