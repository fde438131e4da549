//! `somagent workflows`: a tenant admin's view of the tenant's workflow runs, through
//! the gateway's `/v1/workflows` with the admin's token or API key.

use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Subcommand};
use serde_json::Value;
use somagent_common::config::{self, CommonConfig};
use somagent_common::service::GATEWAY;

#[derive(Args)]
pub struct WorkflowsArgs {
    #[command(flatten)]
    connection: Connection,
    #[command(subcommand)]
    command: WorkflowsCommand,
}

/// Where the gateway is and who asks: a tenant admin (capability `tenant:admin`).
#[derive(Args)]
struct Connection {
    /// The gateway's base URL [default: http://127.0.0.1:<the configured gateway
    /// port>].
    #[arg(long, env = "SOMAGENT_GATEWAY_URL", global = true)]
    gateway: Option<String>,
    /// A tenant admin's access token (from POST /v1/auth/token).
    #[arg(long, env = "SOMAGENT_TOKEN", hide_env_values = true, global = true)]
    token: Option<String>,
    /// Instead of a token: an API key with the `tenant:admin` scope.
    #[arg(
        long,
        env = "SOMAGENT_API_KEY",
        hide_env_values = true,
        global = true,
        conflicts_with = "token"
    )]
    api_key: Option<String>,
}

#[derive(Subcommand)]
pub enum WorkflowsCommand {
    /// List the tenant's workflow runs, newest first: id, kind, status, start time.
    ///
    /// Session turns are runs of kind `session_turn` (ids `session-<id>-turn-<n>`).
    /// When more runs follow, the command to see the next page is printed on stderr.
    ///
    /// Example: somagent workflows list --status running
    List {
        /// Only runs of this kind (`session_turn`, ...).
        #[arg(long)]
        kind: Option<String>,
        /// Only runs in this status.
        #[arg(long, value_parser = ["running", "completed", "failed", "cancelled"])]
        status: Option<String>,
        /// At most this many runs (1-100) [default: 20].
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..=100))]
        limit: Option<u32>,
        /// Start after this page boundary (the `next_cursor` of the previous page).
        #[arg(long)]
        cursor: Option<String>,
        /// Print the page as JSON (`{"workflows": [...], "next_cursor"}`).
        #[arg(long)]
        json: bool,
    },
    /// Show one run in full, as JSON.
    ///
    /// Its steps (activities, timers, signals, child runs) with their attempts and
    /// errors, the step it is on now, the state it last published, and its result or
    /// error once it has ended.
    ///
    /// Example: somagent workflows show session-0193…-turn-1
    Show {
        /// The run's id.
        id: String,
    },
    /// Ask a running run to stop.
    ///
    /// Its current wait fails with `cancelled`, a running activity is stopped, and the
    /// run ends `cancelled` shortly after (a session turn still leaves its session
    /// idle). A run that has ended cannot be cancelled.
    ///
    /// Example: somagent workflows cancel session-0193…-turn-1
    Cancel {
        /// The run's id.
        id: String,
    },
    /// Send a signal, with an optional JSON payload, to a running run.
    ///
    /// The run reads it when it next waits for that signal (a human approval, a plan
    /// approval, ...); until then it is kept.
    ///
    /// Example: somagent workflows signal project-42 plan.approved --payload '{"ok":true}'
    Signal {
        /// The run's id.
        id: String,
        /// The signal's name: 1-64 of a-z, 0-9, `_`, `.`, `-`.
        name: String,
        /// The payload, any JSON of at most 64 KiB [default: null].
        #[arg(long)]
        payload: Option<String>,
    },
}

pub async fn run(args: WorkflowsArgs) -> ExitCode {
    let gateway = match args.connection.gateway {
        Some(url) => url.trim_end_matches('/').to_owned(),
        None => {
            let port = config::load::<CommonConfig>()
                .map(|c| c.port(&GATEWAY))
                .unwrap_or(GATEWAY.port);
            format!("http://127.0.0.1:{port}")
        }
    };
    let credential = match (args.connection.token, args.connection.api_key) {
        (Some(token), _) => Credential::Bearer(token),
        (None, Some(key)) => Credential::ApiKey(key),
        (None, None) => {
            eprintln!(
                "somagent: a tenant admin's credential is needed: --token (SOMAGENT_TOKEN) or --api-key (SOMAGENT_API_KEY)"
            );
            return ExitCode::from(2);
        }
    };
    let client = match reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
    {
        Ok(client) => client,
        Err(e) => {
            eprintln!("somagent: cannot build an HTTP client: {e}");
            return ExitCode::FAILURE;
        }
    };
    let api = Api {
        client,
        gateway,
        credential,
    };
    match args.command {
        WorkflowsCommand::List {
            kind,
            status,
            limit,
            cursor,
            json,
        } => {
            let query = [
                ("kind", kind),
                ("status", status),
                ("limit", limit.map(|l| l.to_string())),
                ("cursor", cursor),
            ];
            let page = match api.call(reqwest::Method::GET, "", &query, None).await {
                Ok(page) => page,
                Err(code) => return code,
            };
            print_page(&page, json);
            ExitCode::SUCCESS
        }
        WorkflowsCommand::Show { id } => {
            let path = format!("/{}", segment(&id));
            print_json(api.call(reqwest::Method::GET, &path, &[], None).await)
        }
        WorkflowsCommand::Cancel { id } => {
            let path = format!("/{}/cancel", segment(&id));
            print_json(api.call(reqwest::Method::POST, &path, &[], None).await)
        }
        WorkflowsCommand::Signal { id, name, payload } => {
            let payload = match payload.as_deref().map(serde_json::from_str::<Value>) {
                None => None,
                Some(Ok(value)) => Some(value),
                Some(Err(e)) => {
                    eprintln!("somagent: --payload is not JSON: {e}");
                    return ExitCode::from(2);
                }
            };
            let path = format!("/{}/signals/{}", segment(&id), segment(&name));
            print_json(
                api.call(reqwest::Method::POST, &path, &[], payload.as_ref())
                    .await,
            )
        }
    }
}

enum Credential {
    Bearer(String),
    ApiKey(String),
}

struct Api {
    client: reqwest::Client,
    gateway: String,
    credential: Credential,
}

impl Api {
    /// Calls `/v1/workflows<path>`; a refusal is told on stderr and becomes the exit
    /// code.
    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        query: &[(&str, Option<String>)],
        body: Option<&Value>,
    ) -> Result<Value, ExitCode> {
        let url = format!("{}/v1/workflows{path}", self.gateway);
        let mut url = reqwest::Url::parse(&url).map_err(|e| {
            eprintln!("somagent: `{url}` is not a URL: {e}");
            ExitCode::from(2)
        })?;
        for (key, value) in query {
            if let Some(value) = value {
                url.query_pairs_mut().append_pair(key, value);
            }
        }
        let mut request = self.client.request(method, url);
        request = match &self.credential {
            Credential::Bearer(token) => request.bearer_auth(token),
            Credential::ApiKey(key) => request.header("x-api-key", key),
        };
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().await.map_err(|e| {
            eprintln!(
                "somagent: cannot reach the gateway at {}: {e}",
                self.gateway
            );
            ExitCode::FAILURE
        })?;
        let status = response.status();
        let answer: Value = response.json().await.unwrap_or(Value::Null);
        if status.is_success() {
            return Ok(answer);
        }
        let error = &answer["error"];
        eprintln!(
            "somagent: {} {}: {}",
            status.as_u16(),
            error["code"].as_str().unwrap_or("error"),
            error["message"].as_str().unwrap_or("the gateway refused"),
        );
        if let Some(fields) = error["details"]["fields"].as_object() {
            for (field, why) in fields {
                eprintln!("  {field}: {}", why.as_str().unwrap_or_default());
            }
        }
        Err(ExitCode::FAILURE)
    }
}

/// A path segment, percent-encoded.
fn segment(raw: &str) -> String {
    let mut url = reqwest::Url::parse("http://x/").expect("a fixed URL");
    url.path_segments_mut().expect("a base URL").push(raw);
    url.path().trim_start_matches('/').to_owned()
}

fn print_json(answer: Result<Value, ExitCode>) -> ExitCode {
    match answer {
        Ok(value) => {
            println!(
                "{}",
                serde_json::to_string_pretty(&value).unwrap_or_default()
            );
            ExitCode::SUCCESS
        }
        Err(code) => code,
    }
}

fn print_page(page: &Value, json: bool) {
    if json {
        println!("{page}");
        return;
    }
    let runs = page["workflows"].as_array().cloned().unwrap_or_default();
    if runs.is_empty() {
        eprintln!("no workflow runs");
    }
    for run in &runs {
        let field = |name: &str| run[name].as_str().unwrap_or("-").to_owned();
        println!(
            "{:<52} {:<14} {:<10} {}",
            field("id"),
            field("kind"),
            field("status"),
            field("created_at")
        );
    }
    if let Some(next) = page["next_cursor"].as_str() {
        eprintln!("more: somagent workflows list --cursor {next} (with the same filters)");
    }
}
