//! Running code and command-line tools in a sandboxed subprocess. Each run gets a
//! private temporary directory (its working and home directory, removed afterwards);
//! the process runs in its own process group, killed whole at the timeout, with
//! rlimits on CPU time, memory, file size and open files; Landlock lets it read only the
//! system's directories and write only its own; without network (the default) it runs
//! in a new user and network namespace (`unshare`) and Landlock also refuses it TCP.
//! Output past the limit is cut and the process killed.
//!
//! The confinement is applied by this same executable, started as
//! `<exe> __sandbox-exec <spec> -- <program> <args>`: a fresh single-threaded process
//! sets the limits and the Landlock ruleset on itself, then executes the program.
//! [`Sandbox::detect`] finds out at start what this machine allows, and says it: a
//! layer the kernel or the container refuses is reported, never silently skipped, and
//! code does not run without network isolation and Landlock.

use std::convert::Infallible;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The argument that makes this executable the sandbox's launcher.
const EXEC: &str = "__sandbox-exec";
/// The exit status of a launcher that could not confine or start the program.
const LAUNCH_FAILED: i32 = 125;

/// What a run may use.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub timeout: Duration,
    pub cpu_seconds: u64,
    pub memory_bytes: u64,
    /// Of stdout and stderr each.
    pub output_bytes: usize,
    pub file_bytes: u64,
}

/// How a run ended.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Ran {
    /// The program's exit status; `None` when a signal ended it.
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    pub timed_out: bool,
    /// Output passed the limit: it was cut and the process killed.
    pub truncated: bool,
    pub duration_ms: u64,
}

/// What the launcher applies to itself before it executes the program.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Confinement {
    workdir: PathBuf,
    readable: Vec<PathBuf>,
    cpu_seconds: u64,
    memory_bytes: u64,
    file_bytes: u64,
    deny_network: bool,
    /// A run allowed the network reaches it only through the egress proxy at this
    /// socket, relayed to [`RELAY_PORT`] on the loopback of its network namespace.
    #[serde(default)]
    egress: Option<PathBuf>,
}

/// The layers a run is confined by.
#[derive(Debug, Clone)]
struct Layers {
    /// In a new user and network namespace.
    namespace: bool,
    /// Landlock refuses TCP too.
    deny_network: bool,
    /// The network through the egress proxy, to these hosts (none: any).
    egress: Option<Vec<String>>,
}

/// Where a sandboxed run finds its proxy (`http_proxy`, `https_proxy`).
const RELAY_PORT: u16 = 3128;
/// The argument that makes this executable the relay to a run's proxy.
const RELAY: &str = "__sandbox-relay";

#[derive(Debug, Clone)]
pub struct Sandbox {
    exe: PathBuf,
    /// Whether a run allowed the network may reach private addresses.
    allow_private: bool,
    /// Directories a run may read (and execute from).
    readable: Vec<PathBuf>,
    /// The layers (a network namespace, Landlock) this machine refuses, and why.
    missing: Vec<String>,
}

/// The directories a sandboxed program may read: the system's, never a home or the
/// platform's data.
const SYSTEM_DIRS: &[&str] = &["/usr", "/lib", "/lib64", "/lib32", "/bin", "/sbin", "/etc"];

impl Sandbox {
    /// Finds out which layers this machine allows (running a probe through each) and
    /// reports it in the log.
    pub async fn detect(allow_private: bool) -> Self {
        let exe = std::env::current_exe().unwrap_or_else(|_| PathBuf::from("/proc/self/exe"));
        let readable: Vec<PathBuf> = SYSTEM_DIRS
            .iter()
            .map(PathBuf::from)
            .filter(|p| p.exists())
            .collect();
        let mut sandbox = Sandbox {
            exe,
            allow_private,
            readable,
            missing: Vec::new(),
        };
        let namespaces = tokio::process::Command::new("unshare")
            .args(["--user", "--map-root-user", "--net", "--", "true"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .output()
            .await;
        match namespaces {
            Ok(out) if out.status.success() => {}
            Ok(out) => sandbox.missing.push(format!(
                "network namespace: unshare refused: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            )),
            Err(e) => sandbox
                .missing
                .push(format!("network namespace: unshare cannot run: {e}")),
        }
        let layers = Layers {
            namespace: false,
            deny_network: true,
            egress: None,
        };
        let probe = sandbox
            .run_in(
                "true",
                &[],
                &[],
                b"",
                layers,
                &Limits {
                    timeout: Duration::from_secs(10),
                    cpu_seconds: 5,
                    memory_bytes: 256 << 20,
                    output_bytes: 4096,
                    file_bytes: 1 << 20,
                },
            )
            .await;
        match probe {
            Ok(ran) if ran.exit_code == Some(0) => {}
            Ok(ran) => sandbox
                .missing
                .push(format!("landlock: {}", ran.stderr.trim())),
            Err(e) => sandbox.missing.push(format!("landlock: {e}")),
        }
        if sandbox.missing.is_empty() {
            tracing::info!(
                "the sandbox for code and command-line tools isolates network and files"
            );
        } else {
            tracing::warn!(
                missing = ?sandbox.missing,
                "the sandbox cannot isolate code here: code and command-line tools will not run"
            );
        }
        sandbox
    }

    /// Whether code may run here: every layer is available.
    pub fn ready(&self) -> Result<(), String> {
        if self.missing.is_empty() {
            Ok(())
        } else {
            Err(self.missing.join("; "))
        }
    }

    /// Runs `program` with `args` in a new private directory holding `files`, `stdin`
    /// on its input, with network only when `network`.
    pub async fn run(
        &self,
        program: &str,
        args: &[String],
        files: &[(String, String)],
        stdin: &[u8],
        network: Option<&[String]>,
        limits: &Limits,
    ) -> Result<Ran, String> {
        self.ready()?;
        // With the network, still in a namespace of its own: its only way out is the
        // egress proxy, to the hosts allowed.
        let layers = Layers {
            namespace: true,
            deny_network: true,
            egress: network.map(<[String]>::to_vec),
        };
        self.run_in(program, args, files, stdin, layers, limits)
            .await
    }

    async fn run_in(
        &self,
        program: &str,
        args: &[String],
        files: &[(String, String)],
        stdin: &[u8],
        layers: Layers,
        limits: &Limits,
    ) -> Result<Ran, String> {
        let dir = tempfile::Builder::new()
            .prefix("somagent-sandbox-")
            .tempdir()
            .map_err(|e| format!("no private directory: {e}"))?;
        for (name, content) in files {
            let path = dir.path().join(name);
            if path.parent() != Some(dir.path()) {
                return Err(format!("a file name `{name}` names a directory"));
            }
            std::fs::write(&path, content).map_err(|e| format!("cannot write {name}: {e}"))?;
        }
        let proxy = match &layers.egress {
            Some(hosts) => Some(self.egress_proxy(dir.path(), hosts)?),
            None => None,
        };
        let confinement = Confinement {
            workdir: dir.path().to_owned(),
            readable: self.readable.clone(),
            cpu_seconds: limits.cpu_seconds,
            memory_bytes: limits.memory_bytes,
            file_bytes: limits.file_bytes,
            deny_network: layers.deny_network,
            egress: proxy.as_ref().map(|(path, _)| path.clone()),
        };
        let ran = self
            .spawn(program, args, &confinement, layers.namespace, stdin, limits)
            .await;
        if let Some((_, task)) = proxy {
            task.abort();
        }
        ran
    }

    /// The egress proxy of a run, on a socket in its directory.
    fn egress_proxy(
        &self,
        dir: &Path,
        hosts: &[String],
    ) -> Result<(PathBuf, tokio::task::JoinHandle<()>), String> {
        let path = dir.join(".egress.sock");
        let listener = tokio::net::UnixListener::bind(&path)
            .map_err(|e| format!("no proxy for the run: {e}"))?;
        Ok((
            path,
            crate::egress_proxy::serve_unix(
                listener,
                crate::egress_proxy::Rules {
                    allow_private: self.allow_private,
                    hosts: hosts.to_vec(),
                },
            ),
        ))
    }

    /// The launcher's command for `program`: confined as `confinement` says, in new
    /// namespaces when `namespace`, with a clean environment (PATH, LANG and `env`), in
    /// its own process group.
    fn command(
        &self,
        program: &str,
        args: &[String],
        confinement: &Confinement,
        namespace: bool,
        env: &[(String, String)],
    ) -> Result<tokio::process::Command, String> {
        let spec = serde_json::to_string(confinement).map_err(|e| e.to_string())?;
        let mut command = if namespace {
            let mut c = tokio::process::Command::new("unshare");
            c.args(["--user", "--map-root-user", "--net", "--"])
                .arg(&self.exe);
            c
        } else {
            tokio::process::Command::new(&self.exe)
        };
        command
            .arg(EXEC)
            .arg(spec)
            .arg("--")
            .arg(program)
            .args(args)
            .env_clear()
            .env("PATH", "/usr/local/bin:/usr/bin:/bin")
            .env("LANG", "C.UTF-8")
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        Ok(command)
    }

    /// Starts a program that keeps running while its caller talks to it over its
    /// stdin and stdout (an MCP server over stdio), confined like any run, with `env`
    /// and the directories in `read` readable besides the system's. It is killed with
    /// everything it started when the handle is dropped, or by its CPU-time limit.
    pub fn start(
        &self,
        program: &str,
        args: &[String],
        env: &[(String, String)],
        read: &[PathBuf],
        network: Option<&[String]>,
        limits: &Limits,
    ) -> Result<Started, String> {
        self.ready()?;
        let dir = tempfile::Builder::new()
            .prefix("somagent-sandbox-")
            .tempdir()
            .map_err(|e| format!("no private directory: {e}"))?;
        let mut readable = self.readable.clone();
        readable.extend(read.iter().filter(|p| p.exists()).cloned());
        let proxy = match network {
            Some(hosts) => Some(self.egress_proxy(dir.path(), hosts)?),
            None => None,
        };
        let confinement = Confinement {
            workdir: dir.path().to_owned(),
            readable,
            cpu_seconds: limits.cpu_seconds,
            memory_bytes: limits.memory_bytes,
            file_bytes: limits.file_bytes,
            deny_network: true,
            egress: proxy.as_ref().map(|(path, _)| path.clone()),
        };
        let mut command = self.command(program, args, &confinement, true, env)?;
        command.stderr(Stdio::null());
        let mut child = command
            .spawn()
            .map_err(|e| format!("the sandbox cannot start: {e}"))?;
        let group = child.id().and_then(|id| i32::try_from(id).ok());
        let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            return Err("the sandboxed program's input and output are not reachable".into());
        };
        Ok(Started {
            stdin: Some(stdin),
            stdout: Some(stdout),
            _child: child,
            group,
            proxy: proxy.map(|(_, task)| task),
            _dir: dir,
        })
    }

    async fn spawn(
        &self,
        program: &str,
        args: &[String],
        confinement: &Confinement,
        namespace: bool,
        stdin: &[u8],
        limits: &Limits,
    ) -> Result<Ran, String> {
        let mut command = self.command(program, args, confinement, namespace, &[])?;
        let started = Instant::now();
        let mut child = command
            .spawn()
            .map_err(|e| format!("the sandbox cannot start: {e}"))?;
        let group = child.id().and_then(|id| i32::try_from(id).ok());
        let kill_group = move || kill_process_group(group);
        if let Some(mut input) = child.stdin.take() {
            let stdin = stdin.to_vec();
            tokio::spawn(async move {
                let _ = input.write_all(&stdin).await;
            });
        }
        let (Some(stdout), Some(stderr)) = (child.stdout.take(), child.stderr.take()) else {
            return Err("the sandbox's output is not readable".into());
        };
        let max = limits.output_bytes;
        let reading = async { tokio::join!(read_capped(stdout, max), read_capped(stderr, max)) };
        let waited = tokio::time::timeout(limits.timeout, async {
            let ((out, out_cut), (err, err_cut)) = reading.await;
            if out_cut || err_cut {
                kill_group();
            }
            let status = child.wait().await;
            (out, err, out_cut || err_cut, status)
        })
        .await;
        match waited {
            Ok((stdout, stderr, truncated, status)) => {
                let status = status.map_err(|e| e.to_string())?;
                // Whatever the program left running goes with it.
                kill_group();
                use std::os::unix::process::ExitStatusExt;
                Ok(Ran {
                    exit_code: status.code(),
                    signal: status.signal(),
                    stdout,
                    stderr,
                    timed_out: false,
                    truncated,
                    duration_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
                })
            }
            Err(_) => {
                kill_group();
                Ok(Ran {
                    exit_code: None,
                    signal: Some(9),
                    stdout: String::new(),
                    stderr: String::new(),
                    timed_out: true,
                    truncated: false,
                    duration_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
                })
            }
        }
    }
}

fn kill_process_group(group: Option<i32>) {
    if let Some(pgid) = group {
        let _ = nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(pgid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
}

/// A program started by [`Sandbox::start`]: its input and output, taken by whoever
/// talks to it; dropping the handle kills its process group and removes its directory.
pub struct Started {
    pub stdin: Option<tokio::process::ChildStdin>,
    pub stdout: Option<tokio::process::ChildStdout>,
    _child: tokio::process::Child,
    group: Option<i32>,
    proxy: Option<tokio::task::JoinHandle<()>>,
    _dir: tempfile::TempDir,
}

impl Drop for Started {
    fn drop(&mut self) {
        kill_process_group(self.group);
        if let Some(proxy) = &self.proxy {
            proxy.abort();
        }
    }
}

/// Reads at most `max` bytes; true if there was more (the rest is not read).
async fn read_capped<R: tokio::io::AsyncRead + Unpin>(mut from: R, max: usize) -> (String, bool) {
    let mut kept = Vec::new();
    let mut buffer = [0u8; 8192];
    loop {
        match from.read(&mut buffer).await {
            Ok(0) | Err(_) => return (String::from_utf8_lossy(&kept).into_owned(), false),
            Ok(n) => {
                let room = max.saturating_sub(kept.len());
                kept.extend_from_slice(&buffer[..n.min(room)]);
                if n > room {
                    return (String::from_utf8_lossy(&kept).into_owned(), true);
                }
            }
        }
    }
}

/// When this executable was started as the sandbox's launcher: confines itself and
/// becomes the program (never returns). Call first thing in `main`, before any thread
/// starts.
pub fn exec_if_asked() {
    let mut args = std::env::args_os();
    let _exe = args.next();
    let asked = args.next();
    let Err(why) = match asked.as_deref() {
        Some(a) if a == EXEC => launch(args.collect()),
        Some(a) if a == BOUND => launch_bound(args.collect()),
        Some(a) if a == RELAY => relay(args.collect()),
        _ => return,
    };
    eprintln!("sandbox: {why}");
    std::process::exit(LAUNCH_FAILED);
}

/// The argument that makes this executable start a program bound to its parent.
const BOUND: &str = "__bound-exec";

/// With [`BOUND`]: the program talks over a pipe pair given as its stdin and stdout,
/// moved to fds 3 and 4 (Chromium's `--remote-debugging-pipe`).
const PIPE_FDS: &str = "--pipe-fds";

/// With [`BOUND`]: the program runs as the unprivileged user `nobody` (uid and gid
/// 65534, no supplementary groups) when the launcher is root.
const AS_NOBODY: &str = "--as-nobody";

/// The uid and gid a program dropped to `nobody` runs as; whatever it must write
/// (a browser's profile) is handed to this owner first.
pub const NOBODY: u32 = 65534;

/// How a bound program is started.
#[derive(Debug, Clone, Copy, Default)]
pub struct Bound {
    /// Its stdin and stdout reach it as fds 3 and 4 (its own stdin and stdout empty).
    pub pipe_fds: bool,
    /// It runs as [`NOBODY`] when the service runs as root.
    pub as_nobody: bool,
}

/// A command that runs `program` killed when the process that started it dies (a
/// helper such as the browser must not outlive the service, even one killed hard),
/// started as `how` says.
pub fn bound_command(program: &Path, how: Bound) -> tokio::process::Command {
    let exe = std::env::current_exe().unwrap_or_else(|_| PathBuf::from("/proc/self/exe"));
    let mut command = tokio::process::Command::new(exe);
    command.arg(BOUND);
    if how.pipe_fds {
        command.arg(PIPE_FDS);
    }
    if how.as_nobody {
        command.arg(AS_NOBODY);
    }
    command.arg("--").arg(program);
    command
}

/// Moves stdin to fd 3 and stdout to fd 4 (left open across exec) and puts `/dev/null`
/// in their places.
fn move_pipe_to_3_and_4() -> Result<(), String> {
    use std::os::fd::{FromRawFd, IntoRawFd, OwnedFd};
    // nix can only duplicate onto a descriptor it is given to own.
    // SAFETY: this launcher is single-threaded and about to exec. Fds 3 and 4 are
    // either closed or hold a descriptor inherited by accident (a lock file of whoever
    // started the service) that nothing in this process uses; they are owned here only
    // to be replaced by dup2, then released to the program without being closed.
    #[allow(unsafe_code)]
    let (mut three, mut four) = unsafe { (OwnedFd::from_raw_fd(3), OwnedFd::from_raw_fd(4)) };
    let fail = |e: nix::Error| format!("cannot move the pipe: {e}");
    nix::unistd::dup2(std::io::stdin(), &mut three).map_err(fail)?;
    nix::unistd::dup2(std::io::stdout(), &mut four).map_err(fail)?;
    let empty = std::fs::File::options()
        .read(true)
        .write(true)
        .open("/dev/null")
        .map_err(|e| format!("cannot open /dev/null: {e}"))?;
    nix::unistd::dup2_stdin(&empty).map_err(fail)?;
    nix::unistd::dup2_stdout(&empty).map_err(fail)?;
    // dup2 left them without close-on-exec: the program finds them open.
    let _ = (three.into_raw_fd(), four.into_raw_fd());
    Ok(())
}

/// Gives up root for [`NOBODY`]: no supplementary groups, then the group, then the
/// user (in that order: once the user is dropped, the rest can no longer change).
fn drop_to_nobody() -> Result<(), String> {
    use nix::unistd::{Gid, Uid};
    if !nix::unistd::geteuid().is_root() {
        return Ok(());
    }
    let fail = |e: nix::Error| format!("cannot drop to nobody: {e}");
    nix::unistd::setgroups(&[]).map_err(fail)?;
    nix::unistd::setgid(Gid::from_raw(NOBODY)).map_err(fail)?;
    nix::unistd::setuid(Uid::from_raw(NOBODY)).map_err(fail)?;
    Ok(())
}

fn launch_bound(args: Vec<OsString>) -> Result<Infallible, String> {
    const USAGE: &str = "usage: __bound-exec [--pipe-fds] [--as-nobody] -- <program> [args]";
    let mut args = args.as_slice();
    let (mut pipe_fds, mut as_nobody) = (false, false);
    while let Some((first, rest)) = args.split_first() {
        match first.to_str() {
            Some(PIPE_FDS) => pipe_fds = true,
            Some(AS_NOBODY) => as_nobody = true,
            _ => break,
        }
        args = rest;
    }
    let [separator, program, rest @ ..] = args else {
        return Err(USAGE.into());
    };
    if separator != "--" {
        return Err(USAGE.into());
    }
    // Before the death signal: a change of credentials clears it.
    if as_nobody {
        drop_to_nobody()?;
    }
    let parent = nix::unistd::getppid();
    nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)
        .map_err(|e| format!("cannot bind to the parent: {e}"))?;
    // The parent may have died before the binding took.
    if nix::unistd::getppid() != parent {
        return Err("the parent is gone".into());
    }
    if pipe_fds {
        move_pipe_to_3_and_4()?;
    }
    use std::os::unix::process::CommandExt;
    let error = std::process::Command::new(program).args(rest).exec();
    Err(format!("cannot run {}: {error}", program.to_string_lossy()))
}

fn launch(args: Vec<OsString>) -> Result<Infallible, String> {
    let [spec, separator, program, rest @ ..] = args.as_slice() else {
        return Err("usage: __sandbox-exec <spec> -- <program> [args]".into());
    };
    if separator != "--" {
        return Err("usage: __sandbox-exec <spec> -- <program> [args]".into());
    }
    let confinement: Confinement = serde_json::from_str(&spec.to_string_lossy())
        .map_err(|e| format!("the confinement does not read: {e}"))?;
    limit(&confinement)?;
    if let Some(socket) = &confinement.egress {
        start_relay(socket)?;
    }
    confine(&confinement)?;
    std::env::set_current_dir(&confinement.workdir)
        .map_err(|e| format!("cannot enter the private directory: {e}"))?;
    use std::os::unix::process::CommandExt;
    let mut command = std::process::Command::new(program);
    command
        .args(rest)
        .env("HOME", &confinement.workdir)
        .env("TMPDIR", &confinement.workdir);
    if confinement.egress.is_some() {
        let proxy = format!("http://127.0.0.1:{RELAY_PORT}");
        for name in [
            "http_proxy",
            "https_proxy",
            "HTTP_PROXY",
            "HTTPS_PROXY",
            "ALL_PROXY",
        ] {
            command.env(name, &proxy);
        }
    }
    let error = command.exec();
    Err(format!("cannot run {}: {error}", program.to_string_lossy()))
}

/// Brings up the loopback of the run's network namespace and starts the relay from
/// [`RELAY_PORT`] there to the run's proxy socket; returns once it listens.
fn start_relay(socket: &Path) -> Result<(), String> {
    let up = std::process::Command::new("ip")
        .args(["link", "set", "lo", "up"])
        .status()
        .map_err(|e| format!("cannot bring up the loopback: {e}"))?;
    if !up.success() {
        return Err("cannot bring up the loopback".into());
    }
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let mut relay = std::process::Command::new(exe)
        .arg(RELAY)
        .arg(socket)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start the relay: {e}"))?;
    let mut ready = [0u8; 6];
    use std::io::Read;
    relay
        .stdout
        .take()
        .ok_or("the relay says nothing")?
        .read_exact(&mut ready)
        .map_err(|e| format!("the relay did not start: {e}"))?;
    Ok(())
}

/// The relay inside a run's network namespace: each connection to [`RELAY_PORT`] on its
/// loopback carried to the proxy socket. Dies with the run.
fn relay(args: Vec<OsString>) -> Result<Infallible, String> {
    let [socket] = args.as_slice() else {
        return Err("usage: __sandbox-relay <socket>".into());
    };
    nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)
        .map_err(|e| format!("cannot bind to the run: {e}"))?;
    let listener = std::net::TcpListener::bind(("127.0.0.1", RELAY_PORT))
        .map_err(|e| format!("the relay cannot listen: {e}"))?;
    use std::io::Write;
    let mut out = std::io::stdout();
    let _ = out.write_all(b"ready\n").and_then(|()| out.flush());
    let socket = PathBuf::from(socket);
    for client in listener.incoming().flatten() {
        let socket = socket.clone();
        std::thread::spawn(move || {
            let Ok(upstream) = std::os::unix::net::UnixStream::connect(&socket) else {
                return;
            };
            let (Ok(mut client_in), Ok(mut upstream_in)) =
                (client.try_clone(), upstream.try_clone())
            else {
                return;
            };
            let (mut client_out, mut upstream_out) = (client, upstream);
            let up = std::thread::spawn(move || {
                let _ = std::io::copy(&mut client_in, &mut upstream_out);
                let _ = upstream_out.shutdown(std::net::Shutdown::Write);
            });
            let _ = std::io::copy(&mut upstream_in, &mut client_out);
            let _ = client_out.shutdown(std::net::Shutdown::Write);
            let _ = up.join();
        });
    }
    Err("the relay stopped".into())
}

fn limit(c: &Confinement) -> Result<(), String> {
    use nix::sys::resource::{Resource, setrlimit};
    let set = |resource, value: u64, what: &str| {
        setrlimit(resource, value, value).map_err(|e| format!("cannot limit {what}: {e}"))
    };
    setrlimit(Resource::RLIMIT_CPU, c.cpu_seconds, c.cpu_seconds + 1)
        .map_err(|e| format!("cannot limit CPU time: {e}"))?;
    set(Resource::RLIMIT_AS, c.memory_bytes, "memory")?;
    set(Resource::RLIMIT_FSIZE, c.file_bytes, "file size")?;
    set(Resource::RLIMIT_CORE, 0, "core dumps")?;
    set(Resource::RLIMIT_NOFILE, 256, "open files")?;
    Ok(())
}

fn confine(c: &Confinement) -> Result<(), String> {
    use landlock::{
        ABI, Access, AccessFs, AccessNet, NetPort, Ruleset, RulesetAttr, RulesetCreatedAttr,
        RulesetStatus, path_beneath_rules,
    };
    let abi = ABI::V6;
    let fail = |e: landlock::RulesetError| format!("landlock: {e}");
    let mut ruleset = Ruleset::default()
        .handle_access(AccessFs::from_all(abi))
        .map_err(fail)?;
    if c.deny_network {
        ruleset = ruleset
            .handle_access(AccessNet::from_all(abi))
            .map_err(fail)?;
    }
    let readable: Vec<&Path> = c.readable.iter().map(PathBuf::as_path).collect();
    let mut created = ruleset
        .create()
        .map_err(fail)?
        .add_rules(path_beneath_rules(readable, AccessFs::from_read(abi)))
        .map_err(fail)?
        .add_rules(path_beneath_rules([&c.workdir], AccessFs::from_all(abi)))
        .map_err(fail)?
        .add_rules(path_beneath_rules(
            ["/dev/null", "/dev/zero", "/dev/urandom"],
            AccessFs::from_file(abi),
        ))
        .map_err(fail)?;
    if c.egress.is_some() {
        // The one connection a run allowed the network may make: to its relay.
        created = created
            .add_rule(NetPort::new(RELAY_PORT, AccessNet::ConnectTcp))
            .map_err(fail)?;
    }
    let status = created.restrict_self().map_err(fail)?;
    if status.ruleset == RulesetStatus::NotEnforced {
        return Err("this kernel does not enforce Landlock".into());
    }
    Ok(())
}
