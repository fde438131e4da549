//! The browser tool's engine: a headless Chromium driven over the Chrome DevTools
//! Protocol, as Playwright drives it. One browser per service, started on first use
//! (and again if it died) and bound to the service (it dies with it); each call gets a
//! browser context of its own (no cookies, storage or cache shared with any other call,
//! downloads refused, dialogs dismissed) that is thrown away at its end. Everything the
//! browser fetches goes through the egress proxy (`egress_proxy`), which connects only
//! to addresses tools may reach; a name the browser would resolve itself resolves to
//! nothing.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::io::AsyncBufReadExt;
use tokio::net::TcpStream;
use tokio::sync::Mutex;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::domain::browser::{Operation, Step};
use crate::egress;

/// Where Chromium is looked for when the operator names none.
const CANDIDATES: &[&str] = &[
    "/usr/bin/chromium",
    "/usr/bin/chromium-browser",
    "/usr/bin/google-chrome",
];

/// The running browser: its process and DevTools endpoint.
struct Running {
    child: tokio::process::Child,
    endpoint: String,
    _profile: tempfile::TempDir,
}

/// The most of an answer (a full-page screenshot, a script's value) passed on.
const MAX_ANSWER: usize = 8 << 20;

pub struct Browser {
    executable: Option<PathBuf>,
    allow_private: bool,
    running: Mutex<Option<Running>>,
    /// The egress proxy the browser goes out through, once started.
    proxy: Mutex<Option<std::net::SocketAddr>>,
}

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

impl Browser {
    /// The browser at `configured`, or the first of the usual places that has one.
    pub fn detect(configured: &str, allow_private: bool) -> Self {
        let executable = if configured.is_empty() {
            CANDIDATES.iter().map(PathBuf::from).find(|p| p.is_file())
        } else {
            Some(PathBuf::from(configured)).filter(|p| p.is_file())
        };
        match &executable {
            Some(path) => {
                tracing::info!(browser = %path.display(), "the browser tool drives this Chromium")
            }
            None => tracing::warn!("no Chromium here: the browser tool is unavailable"),
        }
        Self {
            executable,
            allow_private,
            running: Mutex::new(None),
            proxy: Mutex::new(None),
        }
    }

    /// Why the browser tool cannot run here, if it cannot.
    pub fn unavailable(&self) -> Option<String> {
        self.executable.is_none().then(|| {
            "no Chromium is installed where the tool service runs (Debian's `chromium`, or tool.chromium)"
                .to_owned()
        })
    }

    /// Runs one operation in a fresh browser context.
    pub async fn run(&self, operation: &Operation, max_text: usize) -> Result<Value, String> {
        // Said plainly up front; the proxy would refuse it anyway.
        if !self.allow_private && !reaches_public(&operation.url).await {
            return Err("the page's address is on a private network".into());
        }
        let endpoint = self.endpoint().await?;
        let (socket, _) = tokio_tungstenite::connect_async(endpoint.as_str())
            .await
            .map_err(|_| "the browser does not answer".to_owned())?;
        let mut cdp = Cdp {
            socket,
            next_id: 0,
            events: VecDeque::new(),
        };
        let context = cdp
            .call(
                "Target.createBrowserContext",
                json!({"disposeOnDetach": true}),
                None,
            )
            .await?["browserContextId"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let outcome = async {
            cdp.call(
                "Browser.setDownloadBehavior",
                json!({"behavior": "deny", "browserContextId": context}),
                None,
            )
            .await?;
            cdp.drive(&context, operation, max_text).await
        }
        .await;
        // The context goes whatever happened: its pages, cookies and cache with it.
        let _ = cdp
            .call(
                "Target.disposeBrowserContext",
                json!({"browserContextId": context}),
                None,
            )
            .await;
        let answer = outcome?;
        if answer.to_string().len() > MAX_ANSWER {
            return Err(format!(
                "the page's answer is over {} MiB",
                MAX_ANSWER >> 20
            ));
        }
        Ok(answer)
    }

    /// The DevTools endpoint of the running browser, started if it is not running.
    async fn endpoint(&self) -> Result<String, String> {
        let mut running = self.running.lock().await;
        if let Some(r) = running.as_mut() {
            if matches!(r.child.try_wait(), Ok(None)) {
                return Ok(r.endpoint.clone());
            }
            tracing::warn!("the browser exited: starting it again");
        }
        let executable = self
            .executable
            .as_deref()
            .ok_or_else(|| "no browser is installed".to_owned())?;
        let proxy = {
            let mut proxy = self.proxy.lock().await;
            match *proxy {
                Some(address) => address,
                None => {
                    let address = crate::egress_proxy::start(self.allow_private)
                        .await
                        .map_err(|e| format!("the browser's proxy cannot start: {e}"))?;
                    *proxy = Some(address);
                    address
                }
            }
        };
        let started = launch(executable, proxy).await?;
        let endpoint = started.endpoint.clone();
        *running = Some(started);
        Ok(endpoint)
    }
}

/// Starts Chromium headless with a private profile, and reads its DevTools endpoint.
async fn launch(executable: &Path, proxy: std::net::SocketAddr) -> Result<Running, String> {
    let profile = tempfile::Builder::new()
        .prefix("somagent-browser-")
        .tempdir()
        .map_err(|e| format!("no profile directory for the browser: {e}"))?;
    let mut command = crate::sandbox::bound_command(executable);
    command
        .args([
            "--headless",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--no-default-browser-check",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-extensions",
            "--disable-dev-shm-usage",
            "--mute-audio",
            "--remote-debugging-port=0",
            "--remote-allow-origins=*",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        // Everything through the proxy, loopback included; nothing resolved or sent
        // around it (WebRTC's UDP included).
        .arg(format!("--proxy-server=http://{proxy}"))
        .arg("--proxy-bypass-list=<-loopback>")
        .arg("--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1")
        .arg("--force-webrtc-ip-handling-policy=disable_non_proxied_udp");
    // Chromium's own sandbox refuses to run as root (run the service as another user to
    // keep it); what the browser reaches is still only what the proxy lets through.
    if nix::unistd::geteuid().is_root() {
        command.arg("--no-sandbox");
    }
    command
        .arg("about:blank")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    let mut child = command
        .spawn()
        .map_err(|e| format!("the browser does not start: {e}"))?;
    let stderr = child
        .stderr
        .take()
        .ok_or_else(|| "the browser's output cannot be read".to_owned())?;
    let mut lines = tokio::io::BufReader::new(stderr).lines();
    let endpoint = tokio::time::timeout(Duration::from_secs(30), async {
        while let Ok(Some(line)) = lines.next_line().await {
            if let Some(at) = line.find("ws://") {
                return Some(line[at..].trim().to_owned());
            }
        }
        None
    })
    .await
    .ok()
    .flatten()
    .ok_or_else(|| "the browser started but gave no DevTools endpoint".to_owned())?;
    // The rest of its output is drained so the browser never blocks writing it.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Ok(Running {
        child,
        endpoint,
        _profile: profile,
    })
}

/// One DevTools connection: commands answered by id, events kept until waited for,
/// dialogs dismissed as they open.
struct Cdp {
    socket: Socket,
    next_id: u64,
    events: VecDeque<Value>,
}

/// How long a page may take to load before the operation goes on with what it has.
const LOAD_WAIT: Duration = Duration::from_secs(15);
/// How long a click is given to start loading a page before the page is read as it is.
const SETTLE: Duration = Duration::from_millis(500);

impl Cdp {
    async fn send(
        &mut self,
        method: &str,
        params: Value,
        session: Option<&str>,
    ) -> Result<u64, String> {
        self.next_id += 1;
        let mut message = json!({"id": self.next_id, "method": method, "params": params});
        if let Some(session) = session {
            message["sessionId"] = json!(session);
        }
        self.socket
            .send(Message::Text(message.to_string().into()))
            .await
            .map_err(|_| "the browser connection broke".to_owned())?;
        Ok(self.next_id)
    }

    /// Sends a command and waits for its answer.
    async fn call(
        &mut self,
        method: &str,
        params: Value,
        session: Option<&str>,
    ) -> Result<Value, String> {
        let id = self.send(method, params, session).await?;
        loop {
            let message = self.read().await?;
            if message.get("id").and_then(Value::as_u64) == Some(id) {
                if let Some(error) = message.get("error") {
                    let said = error
                        .get("message")
                        .and_then(Value::as_str)
                        .unwrap_or("refused");
                    return Err(format!("the browser refused {method}: {said}"));
                }
                return Ok(message.get("result").cloned().unwrap_or(Value::Null));
            }
            if message.get("method").is_some() {
                self.events.push_back(message);
            }
        }
    }

    /// The next message. A dialog a page opens (`alert`, `confirm`, `beforeunload`) is
    /// dismissed here, whatever is being waited for, so it blocks nothing.
    async fn read(&mut self) -> Result<Value, String> {
        loop {
            let frame = self
                .socket
                .next()
                .await
                .ok_or_else(|| "the browser connection closed".to_owned())?
                .map_err(|_| "the browser connection broke".to_owned())?;
            let Message::Text(text) = frame else { continue };
            let message: Value = serde_json::from_str(&text)
                .map_err(|_| "the browser sent something that is not JSON".to_owned())?;
            if message.get("method").and_then(Value::as_str) == Some("Page.javascriptDialogOpening")
            {
                let session = message
                    .get("sessionId")
                    .and_then(Value::as_str)
                    .map(str::to_owned);
                self.send(
                    "Page.handleJavaScriptDialog",
                    json!({"accept": false}),
                    session.as_deref(),
                )
                .await?;
                continue;
            }
            return Ok(message);
        }
    }

    /// Waits for an event of the session, up to `wait`; whether it came.
    async fn wait_for(
        &mut self,
        method: &str,
        session: &str,
        wait: Duration,
    ) -> Result<bool, String> {
        let matches = |e: &Value| {
            e.get("method").and_then(Value::as_str) == Some(method)
                && e.get("sessionId").and_then(Value::as_str) == Some(session)
        };
        if let Some(at) = self.events.iter().position(matches) {
            self.events.remove(at);
            return Ok(true);
        }
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            match tokio::time::timeout_at(deadline, self.read()).await {
                Err(_) => return Ok(false),
                Ok(message) => {
                    let message = message?;
                    if matches(&message) {
                        return Ok(true);
                    }
                }
            }
        }
    }

    /// A page in the context, attached.
    async fn open_page(&mut self, context: &str) -> Result<String, String> {
        let target = self
            .call(
                "Target.createTarget",
                json!({"url": "about:blank", "browserContextId": context}),
                None,
            )
            .await?["targetId"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let session = self
            .call(
                "Target.attachToTarget",
                json!({"targetId": target, "flatten": true}),
                None,
            )
            .await?["sessionId"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        self.call("Page.enable", json!({}), Some(&session)).await?;
        self.call(
            "Emulation.setDeviceMetricsOverride",
            json!({"width": 1280, "height": 800, "deviceScaleFactor": 1, "mobile": false}),
            Some(&session),
        )
        .await?;
        Ok(session)
    }

    async fn navigate(&mut self, session: &str, url: &str) -> Result<(), String> {
        self.events.clear();
        let answer = self
            .call("Page.navigate", json!({"url": url}), Some(session))
            .await?;
        if let Some(error) = answer.get("errorText").and_then(Value::as_str) {
            return Err(format!("the page did not load: {error}"));
        }
        self.wait_for("Page.loadEventFired", session, LOAD_WAIT)
            .await?;
        Ok(())
    }

    /// Evaluates a script in the page; its value, by value.
    async fn evaluate(&mut self, session: &str, script: &str) -> Result<Value, String> {
        let answer = self
            .call(
                "Runtime.evaluate",
                json!({"expression": script, "returnByValue": true, "awaitPromise": true, "timeout": 10_000}),
                Some(session),
            )
            .await?;
        if let Some(exception) = answer.get("exceptionDetails") {
            let said = exception
                .pointer("/exception/description")
                .or_else(|| exception.get("text"))
                .and_then(Value::as_str)
                .unwrap_or("it threw");
            return Err(format!("the script failed: {said}"));
        }
        Ok(answer
            .pointer("/result/value")
            .cloned()
            .unwrap_or(Value::Null))
    }

    async fn drive(
        &mut self,
        context: &str,
        operation: &Operation,
        max_text: usize,
    ) -> Result<Value, String> {
        let session = self.open_page(context).await?;
        self.navigate(&session, &operation.url).await?;
        let mut result = serde_json::Map::new();
        for step in &operation.steps {
            match step {
                Step::Fill { selector, value } => {
                    let script = crate::domain::browser::fill_script(selector, value);
                    self.evaluate(&session, &script).await?;
                }
                Step::Click { selector } => {
                    self.events.clear();
                    let script = crate::domain::browser::click_script(selector);
                    self.evaluate(&session, &script).await?;
                    // A click may navigate: if a load starts soon, wait for the new page.
                    if self
                        .wait_for("Page.frameStartedLoading", &session, SETTLE)
                        .await?
                    {
                        self.wait_for("Page.loadEventFired", &session, LOAD_WAIT)
                            .await?;
                    }
                }
                Step::Evaluate { expression } => {
                    let value = self.evaluate(&session, expression).await?;
                    result.insert("value".into(), value);
                }
                Step::Screenshot { full_page } => {
                    let shot = self
                        .call(
                            "Page.captureScreenshot",
                            json!({"format": "png", "captureBeyondViewport": full_page}),
                            Some(&session),
                        )
                        .await?;
                    result.insert("png_base64".into(), shot["data"].clone());
                }
                Step::Links => {
                    let links = self
                        .evaluate(&session, crate::domain::browser::LINKS_SCRIPT)
                        .await?;
                    result.insert("links".into(), links);
                }
            }
        }
        let page = self
            .evaluate(&session, crate::domain::browser::PAGE_SCRIPT)
            .await?;
        result.insert("url".into(), page["url"].clone());
        result.insert("title".into(), page["title"].clone());
        if operation.with_text {
            let text = page["text"].as_str().unwrap_or_default();
            let cut = &text[..text.floor_char_boundary(max_text)];
            result.insert("text".into(), json!(cut));
            if cut.len() < text.len() {
                result.insert("text_truncated".into(), json!(true));
            }
        }
        Ok(Value::Object(result))
    }
}

/// Whether the page's own URL is one tools may reach: http(s) at public addresses (the
/// name resolved here; the proxy checks again when it connects).
async fn reaches_public(url: &str) -> bool {
    let Ok(parsed) = url::Url::parse(url) else {
        return false;
    };
    match parsed.scheme() {
        "data" | "blob" | "about" => return true,
        "http" | "https" | "ws" | "wss" => {}
        _ => return false,
    }
    if egress::check_literal(&parsed).is_err() {
        return false;
    }
    let Some(host) = parsed.host_str() else {
        return false;
    };
    let port = parsed.port_or_known_default().unwrap_or(443);
    match tokio::net::lookup_host((host.trim_matches(['[', ']']), port)).await {
        Ok(addresses) => {
            let addresses: Vec<_> = addresses.collect();
            !addresses.is_empty() && addresses.iter().all(|a| !egress::is_private(a.ip()))
        }
        Err(_) => false,
    }
}
