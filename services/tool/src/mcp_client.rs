//! Talking to a mounted MCP server (rmcp's client): the tools it lists, and calls of
//! them. Over Streamable HTTP, requests go through the tool service's HTTP client (no
//! redirects; public addresses only unless the operator allows private ones), with the
//! tenant's credential as a bearer token when one is set. Over stdio, the server is a
//! program the operator allowed, started in the sandbox for the call (the credential,
//! when it takes one, in the environment variable the operator named) and killed after
//! it. Each call opens its own MCP connection: nothing of one tenant's call stays for
//! another's.

use rmcp::ServiceExt;
use rmcp::model::{CallToolRequestParams, ContentBlock};
use rmcp::service::{RoleClient, RunningService};
use rmcp::transport::streamable_http_client::{
    StreamableHttpClientTransport, StreamableHttpClientTransportConfig,
};
use serde_json::{Map, Value, json};

use crate::config::StdioServer;
use crate::domain::mcp::RemoteTool;
use crate::sandbox::{Limits, Sandbox, Started};

/// How a call of a server's tool ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Called {
    /// The tool's result: its structured content, or `{"content": [texts]}`.
    Ok(Value),
    /// The tool said it failed (MCP's `isError`): its text, meant for the caller.
    ToolError(String),
}

/// Where an MCP server is reached.
pub enum Endpoint<'a> {
    Http {
        http: &'a reqwest::Client,
        url: &'a str,
        bearer: Option<&'a str>,
    },
    Stdio {
        sandbox: &'a Sandbox,
        server: &'a StdioServer,
        credential: Option<&'a str>,
        limits: Limits,
    },
}

/// The URL a stdio server's mount is stored under: `stdio:<name>`.
pub const STDIO: &str = "stdio:";

/// A connection to the server, and for a stdio server the program behind it (killed
/// when this is dropped).
struct Connected {
    client: RunningService<RoleClient, ()>,
    _program: Option<Started>,
}

async fn connect(endpoint: &Endpoint<'_>) -> Result<Connected, String> {
    let handshake = |e: rmcp::service::ClientInitializeError| {
        format!("the MCP server did not complete its handshake: {e}")
    };
    match endpoint {
        Endpoint::Http { http, url, bearer } => {
            let mut config = StreamableHttpClientTransportConfig::with_uri((*url).to_owned());
            if let Some(token) = bearer {
                config = config.auth_header((*token).to_owned());
            }
            let transport = StreamableHttpClientTransport::with_client((*http).clone(), config);
            let client = ().serve(transport).await.map_err(handshake)?;
            Ok(Connected {
                client,
                _program: None,
            })
        }
        Endpoint::Stdio {
            sandbox,
            server,
            credential,
            limits,
        } => {
            let [program, args @ ..] = server.command.as_slice() else {
                return Err("the MCP server's command is empty".into());
            };
            let mut env: Vec<(String, String)> = server
                .env
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            if let (Some(name), Some(secret)) = (&server.credential_env, credential) {
                env.push((name.clone(), (*secret).to_owned()));
            }
            let mut started = sandbox.start(
                program,
                args,
                &env,
                &server.read,
                server.network.then_some(server.allow_hosts.as_slice()),
                limits,
            )?;
            let (Some(stdout), Some(stdin)) = (started.stdout.take(), started.stdin.take()) else {
                return Err("the MCP server's input and output are not reachable".into());
            };
            let client = ().serve((stdout, stdin)).await.map_err(handshake)?;
            Ok(Connected {
                client,
                _program: Some(started),
            })
        }
    }
}

/// The server's name and its tools.
pub async fn list(endpoint: &Endpoint<'_>) -> Result<(String, Vec<RemoteTool>), String> {
    let Connected {
        client,
        _program: program,
    } = connect(endpoint).await?;
    let name = client
        .peer_info()
        .and_then(|info| info.server_info.as_ref().map(|s| s.name.clone()))
        .unwrap_or_default();
    let listed = client.list_all_tools().await;
    let _ = client.cancel().await;
    drop(program);
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
    endpoint: &Endpoint<'_>,
    name: &str,
    arguments: Map<String, Value>,
) -> Result<Called, String> {
    let Connected {
        client,
        _program: program,
    } = connect(endpoint).await?;
    let called = client
        .call_tool(CallToolRequestParams::new(name.to_owned()).with_arguments(arguments))
        .await;
    let _ = client.cancel().await;
    drop(program);
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
