//! The browser tool's engine: a headless Chromium driven over the Chrome DevTools
//! Protocol, as Playwright drives it. One browser per service, started on first use
//! (and again if it died) and bound to the service (it dies with it), spoken to over a
//! pipe only the service holds (no DevTools port); each call gets a
//! browser context of its own (no cookies, storage or cache shared with any other call,
//! downloads refused, dialogs dismissed) that is thrown away at its end. Everything the
//! browser fetches goes through the egress proxy (`egress_proxy`), which connects only
//! to addresses tools may reach; a name the browser would resolve itself resolves to
//! nothing.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex as StdMutex};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
use tokio::sync::{Mutex, mpsc, oneshot};

use crate::domain::browser::{Operation, Step};
use somagent_common::egress;

/// Where Chromium is looked for when the operator names none.
const CANDIDATES: &[&str] = &[
    "/usr/bin/chromium",
    "/usr/bin/chromium-browser",
    "/usr/bin/google-chrome",
];

/// The running browser: its process and its DevTools pipe.
struct Running {
    child: tokio::process::Child,
    pipe: Arc<Pipe>,
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
        let mut cdp = Cdp::new(self.pipe().await?);
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

    /// The DevTools pipe of the running browser, started if it is not running.
    async fn pipe(&self) -> Result<Arc<Pipe>, String> {
        let mut running = self.running.lock().await;
        if let Some(r) = running.as_mut() {
            if matches!(r.child.try_wait(), Ok(None)) {
                return Ok(r.pipe.clone());
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
        let started = launch(executable, proxy)?;
        let pipe = started.pipe.clone();
        *running = Some(started);
        Ok(pipe)
    }
}

/// Starts Chromium headless with a private profile, its DevTools protocol on a pipe
/// only this process holds (no port another process on the machine could attach to).
fn launch(executable: &Path, proxy: std::net::SocketAddr) -> Result<Running, String> {
    let profile = tempfile::Builder::new()
        .prefix("somagent-browser-")
        .tempdir()
        .map_err(|e| format!("no profile directory for the browser: {e}"))?;
    // Run as root, the browser runs as nobody instead, with Chromium's own sandbox on:
    // its profile is all it writes.
    let as_nobody = nix::unistd::geteuid().is_root();
    if as_nobody {
        let owner = Some(nix::unistd::Uid::from_raw(crate::sandbox::NOBODY));
        let group = Some(nix::unistd::Gid::from_raw(crate::sandbox::NOBODY));
        nix::unistd::chown(profile.path(), owner, group)
            .map_err(|e| format!("the browser's profile cannot be handed to nobody: {e}"))?;
    }
    let how = crate::sandbox::Bound {
        pipe_fds: true,
        as_nobody,
    };
    let mut command = crate::sandbox::bound_command(executable, how);
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
            "--remote-debugging-pipe",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        // Everything through the proxy, loopback included; nothing resolved or sent
        // around it (WebRTC's UDP included).
        .arg(format!("--proxy-server=http://{proxy}"))
        .arg("--proxy-bypass-list=<-loopback>")
        .arg("--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1")
        .arg("--force-webrtc-ip-handling-policy=disable_non_proxied_udp");
    // Nothing of the service's environment (its keys may be there) reaches a browser
    // that runs other people's pages.
    command
        .env_clear()
        .env("PATH", "/usr/local/bin:/usr/bin:/bin")
        .env("LANG", "C.UTF-8")
        .env("HOME", profile.path())
        .arg("about:blank")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true);
    let mut child = command
        .spawn()
        .map_err(|e| format!("the browser does not start: {e}"))?;
    let (Some(commands), Some(answers)) = (child.stdin.take(), child.stdout.take()) else {
        return Err("the browser's pipe cannot be reached".into());
    };
    Ok(Running {
        child,
        pipe: Pipe::start(commands, answers),
        _profile: profile,
    })
}

/// The browser's DevTools connection over its pipe (`--remote-debugging-pipe`: commands
/// in on its fd 3, answers and events out on fd 4, each message ended by a NUL): shared
/// by every call, answers routed by id, events by session. Only this process holds the
/// pipe; no port is open for anything else on the machine to attach to.
struct Pipe {
    writer: Mutex<tokio::process::ChildStdin>,
    next_id: AtomicU64,
    pending: StdMutex<HashMap<u64, oneshot::Sender<Value>>>,
    sessions: StdMutex<HashMap<String, mpsc::UnboundedSender<Value>>>,
}

impl Pipe {
    fn start(writer: tokio::process::ChildStdin, reader: tokio::process::ChildStdout) -> Arc<Self> {
        let pipe = Arc::new(Self {
            writer: Mutex::new(writer),
            next_id: AtomicU64::new(0),
            pending: StdMutex::default(),
            sessions: StdMutex::default(),
        });
        let routed = pipe.clone();
        tokio::spawn(async move {
            let mut reader = tokio::io::BufReader::new(reader);
            let mut frame = Vec::new();
            loop {
                frame.clear();
                match reader.read_until(0, &mut frame).await {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
                if frame.last() == Some(&0) {
                    frame.pop();
                }
                let Ok(message) = serde_json::from_slice::<Value>(&frame) else {
                    continue;
                };
                routed.route(message).await;
            }
            // The browser is gone: every waiting call learns it.
            lock(&routed.pending).clear();
            lock(&routed.sessions).clear();
        });
        pipe
    }

    async fn route(&self, message: Value) {
        if let Some(id) = message.get("id").and_then(Value::as_u64) {
            if let Some(waiting) = lock(&self.pending).remove(&id) {
                let _ = waiting.send(message);
            }
            return;
        }
        let session = message.get("sessionId").and_then(Value::as_str);
        // A dialog (`alert`, `confirm`, `beforeunload`) is dismissed at once: it would
        // block the page's scripts and the call waiting on them.
        if message.get("method").and_then(Value::as_str) == Some("Page.javascriptDialogOpening") {
            let _ = self
                .send(
                    "Page.handleJavaScriptDialog",
                    json!({"accept": false}),
                    session,
                )
                .await;
            return;
        }
        if let Some(session) = session
            && let Some(events) = lock(&self.sessions).get(session)
        {
            let _ = events.send(message);
        }
    }

    /// Writes a command; the receiver of its answer.
    async fn send(
        &self,
        method: &str,
        params: Value,
        session: Option<&str>,
    ) -> Result<oneshot::Receiver<Value>, String> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed) + 1;
        let mut message = json!({"id": id, "method": method, "params": params});
        if let Some(session) = session {
            message["sessionId"] = json!(session);
        }
        let (answer, answered) = oneshot::channel();
        lock(&self.pending).insert(id, answer);
        let mut bytes = message.to_string().into_bytes();
        bytes.push(0);
        let mut writer = self.writer.lock().await;
        writer
            .write_all(&bytes)
            .await
            .map_err(|_| "the browser connection broke".to_owned())?;
        Ok(answered)
    }
}

fn lock<T>(m: &StdMutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// One call's use of the pipe: its commands, and the events of the pages it opened.
struct Cdp {
    pipe: Arc<Pipe>,
    events: mpsc::UnboundedReceiver<Value>,
    sender: mpsc::UnboundedSender<Value>,
    sessions: Vec<String>,
}

impl Drop for Cdp {
    fn drop(&mut self) {
        let mut sessions = lock(&self.pipe.sessions);
        for session in &self.sessions {
            sessions.remove(session);
        }
    }
}

/// How long a page may take to load before the operation goes on with what it has.
const LOAD_WAIT: Duration = Duration::from_secs(15);
/// How long a click is given to start loading a page before the page is read as it is.
const SETTLE: Duration = Duration::from_millis(500);

impl Cdp {
    fn new(pipe: Arc<Pipe>) -> Self {
        let (sender, events) = mpsc::unbounded_channel();
        Self {
            pipe,
            events,
            sender,
            sessions: Vec::new(),
        }
    }

    /// Sends a command and waits for its answer.
    async fn call(
        &mut self,
        method: &str,
        params: Value,
        session: Option<&str>,
    ) -> Result<Value, String> {
        let answered = self.pipe.send(method, params, session).await?;
        let message = answered
            .await
            .map_err(|_| "the browser connection closed".to_owned())?;
        if let Some(error) = message.get("error") {
            let said = error
                .get("message")
                .and_then(Value::as_str)
                .unwrap_or("refused");
            return Err(format!("the browser refused {method}: {said}"));
        }
        Ok(message.get("result").cloned().unwrap_or(Value::Null))
    }

    /// Routes the events of `session` to this call.
    fn listen(&mut self, session: &str) {
        lock(&self.pipe.sessions).insert(session.to_owned(), self.sender.clone());
        self.sessions.push(session.to_owned());
    }

    /// Forgets the events so far.
    fn clear_events(&mut self) {
        while self.events.try_recv().is_ok() {}
    }

    /// Waits for an event of the session, up to `wait`; whether it came.
    async fn wait_for(
        &mut self,
        method: &str,
        session: &str,
        wait: Duration,
    ) -> Result<bool, String> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            match tokio::time::timeout_at(deadline, self.events.recv()).await {
                Err(_) => return Ok(false),
                Ok(None) => return Err("the browser connection closed".into()),
                Ok(Some(event)) => {
                    if event.get("method").and_then(Value::as_str) == Some(method)
                        && event.get("sessionId").and_then(Value::as_str) == Some(session)
                    {
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
        self.listen(&session);
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
        self.clear_events();
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
                    self.clear_events();
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
