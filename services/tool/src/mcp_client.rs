//! Talking to a mounted MCP server over Streamable HTTP (rmcp's client): the tools it
//! lists, and calls of them. Requests go through the tool service's HTTP client (no
//! redirects; public addresses only unless the operator allows private ones), with the
//! tenant's credential as a bearer token when one is set. Each call opens its own MCP
//! connection: nothing of one tenant's call stays for another's.

use rmcp::ServiceExt;
use rmcp::model::{CallToolRequestParams, ContentBlock};
use rmcp::service::{RoleClient, RunningService};
use rmcp::transport::streamable_http_client::{
    StreamableHttpClientTransport, StreamableHttpClientTransportConfig,
};
use serde_json::{Map, Value, json};

use crate::domain::mcp::RemoteTool;

/// How a call of a server's tool ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Called {
    /// The tool's result: its structured content, or `{"content": [texts]}`.
    Ok(Value),
    /// The tool said it failed (MCP's `isError`): its text, meant for the caller.
    ToolError(String),
}

async fn connect(
    http: &reqwest::Client,
    url: &str,
    bearer: Option<&str>,
) -> Result<RunningService<RoleClient, ()>, String> {
    let mut config = StreamableHttpClientTransportConfig::with_uri(url.to_owned());
    if let Some(token) = bearer {
        config = config.auth_header(token.to_owned());
    }
    let transport = StreamableHttpClientTransport::with_client(http.clone(), config);
    ().serve(transport)
        .await
        .map_err(|e| format!("the MCP server did not complete its handshake: {e}"))
}

/// The server's name and its tools.
pub async fn list(
    http: &reqwest::Client,
    url: &str,
    bearer: Option<&str>,
) -> Result<(String, Vec<RemoteTool>), String> {
    let client = connect(http, url, bearer).await?;
    let name = client
        .peer_info()
        .and_then(|info| info.server_info.as_ref().map(|s| s.name.clone()))
        .unwrap_or_default();
    let listed = client.list_all_tools().await;
    let _ = client.cancel().await;
    let tools = listed.map_err(|e| format!("the MCP server did not list its tools: {e}"))?;
    Ok((
        name,
        tools
            .into_iter()
            .map(|t| RemoteTool {
                name: t.name.into_owned(),
                description: t.description.map(|d| d.into_owned()).unwrap_or_default(),
                input_schema: Value::Object((*t.input_schema).clone()),
            })
            .collect(),
    ))
}

fn texts(content: &[ContentBlock]) -> Vec<String> {
    content
        .iter()
        .filter_map(|c| match c {
            ContentBlock::Text(t) => Some(t.text.clone()),
            _ => None,
        })
        .collect()
}

/// Calls the server's tool `name` with `arguments`.
pub async fn call(
    http: &reqwest::Client,
    url: &str,
    bearer: Option<&str>,
    name: &str,
    arguments: Map<String, Value>,
) -> Result<Called, String> {
    let client = connect(http, url, bearer).await?;
    let called = client
        .call_tool(CallToolRequestParams::new(name.to_owned()).with_arguments(arguments))
        .await;
    let _ = client.cancel().await;
    let result = called.map_err(|e| format!("the MCP call failed: {e}"))?;
    let said = texts(&result.content);
    if result.is_error == Some(true) {
        return Ok(Called::ToolError(said.join("\n")));
    }
    Ok(Called::Ok(match result.structured_content {
        Some(structured) => structured,
        // Many servers answer one JSON text: that is the result.
        None => match said.as_slice() {
            [only] => serde_json::from_str::<Value>(only)
                .ok()
                .filter(Value::is_object)
                .unwrap_or_else(|| json!({ "content": said })),
            _ => json!({ "content": said }),
        },
    }))
}
