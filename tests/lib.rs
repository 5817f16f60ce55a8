//! Test support for Sextant's end-to-end tests: start the real `sextant`
//! binary and talk to it with real clients.
//!
//! The one type that matters is [`Server`]: it starts `sextant serve` on a
//! data directory with every listener on an ephemeral port (`127.0.0.1:0`),
//! waits for the `--ready-file` the server writes once all listeners accept
//! connections, and then hands out the bound addresses and pgwire clients.
//! It can stop the server cleanly ([`Server::terminate`], SIGTERM), crash it
//! ([`Server::kill9`], SIGKILL) and start it again on the same data directory
//! ([`Server::restart`]). Dropping a [`Server`] SIGKILLs the process, so no
//! server outlives its test.
//!
//! The server's stdout and stderr go to a log file (never to a pipe that
//! could fill up); [`Server::log`] reads it. When a test panics while a
//! [`Server`] is alive, the tail of that log is printed and the temporary
//! directories are kept on disk (their paths are printed) for inspection.
//!
//! The binary is found by [`sextant_bin`]: `SEXTANT_BIN` if set, otherwise
//! the `sextant` next to the running test executable (built or rebuilt with
//! `cargo build -p sextant-server --bin sextant` when missing or older than
//! its sources, once per test process).
//!
//! ```no_run
//! # async fn demo() {
//! let mut server = sextant_tests::Server::start(&[]);
//! let client = server.connect().await;
//! client.batch_execute("CREATE TABLE t (time TIMESTAMP NOT NULL, n BIGINT)").await.unwrap();
//! server.kill9();
//! server.restart();
//! # }
//! ```

#![warn(missing_docs)]

pub mod faultfs;

use std::ffi::OsString;
use std::fs::{self, OpenOptions};
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use tempfile::TempDir;

/// How long [`Server::start`] waits for the ready file.
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// How often the ready file and the child's status are polled.
const POLL_INTERVAL: Duration = Duration::from_millis(20);
/// How long [`Server::terminate`] waits for the process to exit after SIGTERM.
const TERMINATE_TIMEOUT: Duration = Duration::from_secs(30);
/// How many log lines failure messages show.
const LOG_TAIL_LINES: usize = 80;

/// The path of the `sextant` binary the tests run.
///
/// 1. `SEXTANT_BIN`, if set, is used as is (it must exist).
/// 2. Otherwise the binary of the same build profile as the running test
///    executable is used: `std::env::current_exe()` is
///    `<target>/<profile>/deps/<test>-<hash>`, so the binary is
///    `<target>/<profile>/sextant` (falling back to `CARGO_TARGET_DIR` or the
///    workspace's `target/`).
/// 3. If that binary does not exist, or cargo's dep-info (`sextant.d`) shows a
///    source file newer than it, `cargo build -p sextant-server --bin sextant`
///    runs first, once per process even when tests run in parallel. A test
///    therefore never silently runs a stale server.
///
/// Panics (with cargo's output above the message) if the build fails.
pub fn sextant_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(locate_or_build).clone()
}

fn locate_or_build() -> PathBuf {
    if let Some(bin) = std::env::var_os("SEXTANT_BIN") {
        let bin = PathBuf::from(bin);
        assert!(
            bin.is_file(),
            "SEXTANT_BIN={} does not name a file",
            bin.display()
        );
        return bin;
    }
    let profile_dir = profile_dir_name();
    let mut candidates = Vec::new();
    if let Some(dir) = exe_profile_dir() {
        candidates.push(dir.join(BIN_NAME));
    }
    candidates.push(target_dir().join(&profile_dir).join(BIN_NAME));
    if let Some(bin) = candidates.iter().find(|bin| bin.is_file())
        && !is_stale(bin)
    {
        return bin.clone();
    }
    build_sextant(&profile_dir)
}

const BIN_NAME: &str = "sextant";

/// The workspace root: the parent of this crate's manifest directory.
/// `cargo test` says where the manifest is at run time; the path compiled in
/// can name another checkout when a target directory is shared.
fn workspace_root() -> PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")))
        .parent()
        .expect("tests/ has a parent directory")
        .to_path_buf()
}

/// `CARGO_TARGET_DIR`, or the workspace's `target/`.
fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => {
            let dir = PathBuf::from(dir);
            if dir.is_absolute() {
                dir
            } else {
                workspace_root().join(dir)
            }
        }
        None => workspace_root().join("target"),
    }
}

/// `<target>/<profile>` derived from the running executable
/// (`<target>/<profile>/deps/<name>-<hash>`), if it looks like that.
fn exe_profile_dir() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let deps = exe.parent()?;
    if deps.file_name()? != "deps" {
        return None;
    }
    deps.parent().map(Path::to_path_buf)
}

/// The name of the profile directory the tests were built in (`debug`,
/// `release`, or a custom profile's name); `debug` when unknown.
fn profile_dir_name() -> String {
    exe_profile_dir()
        .and_then(|dir| dir.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_else(|| "debug".to_owned())
}

/// True if cargo's dep-info next to `bin` is missing or lists a file that is
/// missing or newer than `bin`.
fn is_stale(bin: &Path) -> bool {
    let Ok(bin_time) = fs::metadata(bin).and_then(|m| m.modified()) else {
        return true;
    };
    let Ok(dep_info) = fs::read_to_string(bin.with_extension("d")) else {
        return true;
    };
    let newer = |path: &Path| -> bool {
        fs::metadata(path)
            .and_then(|m| m.modified())
            .map_or(true, |t: SystemTime| t > bin_time)
    };
    dep_info_paths(&dep_info)
        .iter()
        .chain([workspace_root().join("Cargo.lock")].iter())
        .any(|p| newer(p))
}

/// The prerequisites listed in a Makefile-style dep-info file
/// (`target: dep dep ...`, spaces in paths escaped as `\ `).
fn dep_info_paths(dep_info: &str) -> Vec<PathBuf> {
    let mut paths = Vec::new();
    for line in dep_info.lines() {
        // Only the first rule (the binary itself) matters; later lines are
        // empty rules `dep:` that cargo emits for every prerequisite.
        let Some(colon) = find_rule_colon(line) else {
            continue;
        };
        let mut current = String::new();
        let mut chars = line[colon + 1..].chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '\\' if chars.peek() == Some(&' ') => {
                    current.push(' ');
                    chars.next();
                }
                ' ' | '\t' => {
                    if !current.is_empty() {
                        paths.push(PathBuf::from(std::mem::take(&mut current)));
                    }
                }
                _ => current.push(c),
            }
        }
        if !current.is_empty() {
            paths.push(PathBuf::from(current));
        }
        break;
    }
    paths
}

/// The position of the `:` that ends a rule's target (skipping escaped
/// spaces, and not confused by paths without colons).
fn find_rule_colon(line: &str) -> Option<usize> {
    let bytes = line.as_bytes();
    (0..bytes.len()).find(|&i| bytes[i] == b':' && (i + 1 == bytes.len() || bytes[i + 1] == b' '))
}

/// Runs `cargo build -p sextant-server --bin sextant` for `profile_dir`'s
/// profile and returns the executable path cargo reports.
fn build_sextant(profile_dir: &str) -> PathBuf {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| OsString::from("cargo"));
    let profile = if profile_dir == "debug" {
        "dev"
    } else {
        profile_dir
    };
    eprintln!(
        "sextant-tests: building the sextant binary (cargo build -p sextant-server --bin sextant --profile {profile})"
    );
    let output = Command::new(&cargo)
        .current_dir(workspace_root())
        .args([
            "build",
            "-p",
            "sextant-server",
            "--bin",
            BIN_NAME,
            "--profile",
            profile,
            "--message-format=json-render-diagnostics",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        // Progress and compiler errors go straight to the terminal.
        .stderr(Stdio::inherit())
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run {cargo:?} to build sextant: {e} (set SEXTANT_BIN to a built binary)")
        });
    assert!(
        output.status.success(),
        "`cargo build -p sextant-server --bin sextant` failed ({}); see cargo's output above",
        output.status
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    let mut executable = None;
    for line in stdout.lines() {
        let Ok(msg) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        if msg["reason"] == "compiler-artifact"
            && msg["target"]["name"] == BIN_NAME
            && let Some(path) = msg["executable"].as_str()
        {
            executable = Some(PathBuf::from(path));
        }
    }
    let bin = executable.unwrap_or_else(|| target_dir().join(profile_dir).join(BIN_NAME));
    assert!(
        bin.is_file(),
        "cargo built sextant but {} does not exist",
        bin.display()
    );
    bin
}

/// The addresses a started server reported in its ready file.
#[derive(Debug, Clone, Copy)]
struct Addrs {
    pg: SocketAddr,
    http: SocketAddr,
    grpc: Option<SocketAddr>,
    flight: Option<SocketAddr>,
}

/// Parses the ready file. `Ok(None)`: not (completely) written yet, retry.
/// `Err`: complete JSON that breaks the contract.
fn parse_ready_file(text: &str) -> Result<Option<Addrs>, String> {
    let Ok(json) = serde_json::from_str::<serde_json::Value>(text) else {
        return Ok(None);
    };
    let addr = |key: &str| -> Result<Option<SocketAddr>, String> {
        match json.get(key) {
            None | Some(serde_json::Value::Null) => Ok(None),
            Some(serde_json::Value::String(s)) => s
                .parse()
                .map(Some)
                .map_err(|e| format!("\"{key}\": {s:?} is not a socket address: {e}")),
            Some(other) => Err(format!("\"{key}\": {other} is not a string")),
        }
    };
    let pg = addr("pg")?.ok_or("no \"pg\" address")?;
    let http = addr("http")?.ok_or("no \"http\" address")?;
    Ok(Some(Addrs {
        pg,
        http,
        grpc: addr("grpc")?,
        flight: addr("flight")?,
    }))
}

/// A running (or stopped) `sextant serve` process and its data directory.
///
/// Every listener binds `127.0.0.1:0`, so each start (including
/// [`restart`](Server::restart)) gets new ports; ask [`pg_addr`](Server::pg_addr)
/// and friends after each start. Dropping the value SIGKILLs the process.
#[derive(Debug)]
pub struct Server {
    /// The `sextant` binary.
    bin: PathBuf,
    /// The child process, `None` while stopped.
    child: Option<Child>,
    /// Addresses from the last successful start.
    addrs: Addrs,
    /// The data directory passed as `--data-dir`.
    data_dir: PathBuf,
    /// Extra command-line arguments, repeated on every restart.
    args: Vec<String>,
    /// Holds the log file, the ready file and (for [`Server::start`]) the
    /// data directory; deleted on drop unless a test is panicking.
    run_dir: Option<TempDir>,
    /// `run_dir`'s path (kept when `run_dir` is released).
    run_path: PathBuf,
    /// How many times the process has been started.
    starts: u32,
    /// Set once a failure message already included the log tail.
    log_reported: bool,
}

impl Server {
    /// Starts `sextant serve` on a fresh temporary data directory with
    /// `args` appended to the standard arguments, and waits until it is ready.
    ///
    /// Panics with the tail of the server's log if it exits or is not ready
    /// within 60 s.
    pub fn start(args: &[&str]) -> Server {
        let bin = sextant_bin();
        let run_dir = new_run_dir();
        let data_dir = run_dir.path().join("data");
        fs::create_dir(&data_dir).expect("create data directory");
        Server::launch(bin, run_dir, data_dir, args)
    }

    /// Like [`start`](Server::start) but on an existing data directory `dir`
    /// (created if missing), which the caller owns and which is not deleted.
    pub fn start_in(dir: &Path, args: &[&str]) -> Server {
        let bin = sextant_bin();
        fs::create_dir_all(dir)
            .unwrap_or_else(|e| panic!("create data directory {}: {e}", dir.display()));
        let dir = dir
            .canonicalize()
            .unwrap_or_else(|e| panic!("canonicalize {}: {e}", dir.display()));
        Server::launch(bin, new_run_dir(), dir, args)
    }

    fn launch(bin: PathBuf, run_dir: TempDir, data_dir: PathBuf, args: &[&str]) -> Server {
        let mut server = Server {
            bin,
            child: None,
            addrs: Addrs {
                pg: SocketAddr::from(([0, 0, 0, 0], 0)),
                http: SocketAddr::from(([0, 0, 0, 0], 0)),
                grpc: None,
                flight: None,
            },
            data_dir,
            args: args.iter().map(|a| (*a).to_owned()).collect(),
            run_path: run_dir.path().to_path_buf(),
            run_dir: Some(run_dir),
            starts: 0,
            log_reported: false,
        };
        server.spawn_and_wait();
        server
    }

    /// Starts the server again on the same data directory with the same
    /// arguments and waits until it is ready; the addresses change.
    ///
    /// Panics if the server is still running: stop it first with
    /// [`terminate`](Server::terminate) or [`kill9`](Server::kill9).
    pub fn restart(&mut self) {
        if let Some(child) = &mut self.child {
            match child.try_wait() {
                Ok(Some(status)) => panic!(
                    "restart(): the server exited on its own ({status}) instead of being stopped by the test\n{}",
                    self.take_log_tail()
                ),
                _ => panic!("restart() needs a stopped server; call terminate() or kill9() first"),
            }
        }
        self.spawn_and_wait();
    }

    /// The pgwire address (`--pg-addr`) of the current start.
    pub fn pg_addr(&self) -> SocketAddr {
        self.addrs.pg
    }

    /// The HTTP address (`--http-addr`: OTLP/HTTP, `/health`, other
    /// endpoints) of the current start.
    pub fn http_addr(&self) -> SocketAddr {
        self.addrs.http
    }

    /// The gRPC address (`--grpc-addr`), if the ready file listed one.
    pub fn grpc_addr(&self) -> Option<SocketAddr> {
        self.addrs.grpc
    }

    /// The Arrow Flight SQL address (`--flight-addr`), if the ready file
    /// listed one.
    pub fn flight_addr(&self) -> Option<SocketAddr> {
        self.addrs.flight
    }

    /// The data directory passed as `--data-dir` (absolute).
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// The extra arguments given to [`start`](Server::start).
    pub fn args(&self) -> &[String] {
        &self.args
    }

    /// The process id while the server runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// A libpq-style connection string for the current pgwire address:
    /// `host=127.0.0.1 port=<port> user=sextant dbname=sextant`.
    pub fn pg_config(&self) -> String {
        format!(
            "host={} port={} user=sextant dbname=sextant",
            self.addrs.pg.ip(),
            self.addrs.pg.port()
        )
    }

    /// Connects a tokio-postgres client (no TLS) and spawns its connection
    /// task on the current tokio runtime. Connection errors after the
    /// connect (for example when the test kills the server) are ignored by
    /// the task; they surface as errors of the client's calls.
    pub async fn try_connect(&self) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
        let (client, connection) =
            tokio_postgres::connect(&self.pg_config(), tokio_postgres::NoTls).await?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(client)
    }

    /// Connects as `user` with `password` (SCRAM-SHA-256 once users exist).
    pub async fn connect_as(
        &self,
        user: &str,
        password: &str,
    ) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
        let mut config: tokio_postgres::Config = self.pg_config().parse()?;
        config.user(user).password(password);
        let (client, connection) = config.connect(tokio_postgres::NoTls).await?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(client)
    }

    /// Like [`try_connect`](Server::try_connect), panicking on failure.
    pub async fn connect(&self) -> tokio_postgres::Client {
        match self.try_connect().await {
            Ok(client) => client,
            Err(e) => panic!("cannot connect to sextant at {}: {e:?}", self.addrs.pg),
        }
    }

    /// Sends SIGKILL and waits for the process to be gone (a crash: nothing
    /// gets a chance to flush).
    ///
    /// Panics if the server had already exited on its own, or is not running.
    pub fn kill9(&mut self) {
        let Some(mut child) = self.child.take() else {
            panic!("kill9(): the server is not running");
        };
        let sent = send_signal(&child, libc::SIGKILL);
        let status = child.wait().expect("wait for the killed server");
        if status.signal() != Some(libc::SIGKILL) {
            panic!(
                "kill9(): the server had already exited on its own ({status}; sending SIGKILL: {sent:?})\n{}",
                self.take_log_tail()
            );
        }
    }

    /// Sends SIGTERM and waits up to 30 s for the process to exit, returning
    /// its exit status (a clean shutdown exits with status 0).
    ///
    /// Panics with the log tail if it does not exit in time (it is then
    /// SIGKILLed), if it had already exited on its own, or is not running.
    pub fn terminate(&mut self) -> ExitStatus {
        self.stop_with(libc::SIGTERM, "SIGTERM")
    }

    /// Like [`terminate`](Server::terminate) but sends SIGINT (Ctrl-C).
    pub fn interrupt(&mut self) -> ExitStatus {
        self.stop_with(libc::SIGINT, "SIGINT")
    }

    fn stop_with(&mut self, signal: libc::c_int, name: &str) -> ExitStatus {
        let Some(mut child) = self.child.take() else {
            panic!("{name}: the server is not running");
        };
        if let Ok(Some(status)) = child.try_wait() {
            panic!(
                "{name}: the server had already exited on its own ({status})\n{}",
                self.take_log_tail()
            );
        }
        send_signal(&child, signal).unwrap_or_else(|e| panic!("send {name}: {e}"));
        let deadline = Instant::now() + TERMINATE_TIMEOUT;
        loop {
            match child.try_wait() {
                Ok(Some(status)) => return status,
                Ok(None) if Instant::now() < deadline => thread::sleep(POLL_INTERVAL),
                Ok(None) => {
                    let _ = send_signal(&child, libc::SIGKILL);
                    let _ = child.wait();
                    panic!(
                        "the server did not exit within {TERMINATE_TIMEOUT:?} of {name}\n{}",
                        self.take_log_tail()
                    );
                }
                Err(e) => panic!("wait for the server after {name}: {e}"),
            }
        }
    }

    /// Everything the server wrote to stdout and stderr, across all starts
    /// (each start begins with a `==== sextant-tests: start #N ====` line).
    pub fn log(&self) -> String {
        let bytes = fs::read(self.log_path()).unwrap_or_default();
        String::from_utf8_lossy(&bytes).into_owned()
    }

    /// The last `lines` lines of [`log`](Server::log).
    pub fn log_tail(&self, lines: usize) -> String {
        let log = self.log();
        let all: Vec<&str> = log.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// The file the server's stdout and stderr go to.
    pub fn log_path(&self) -> PathBuf {
        self.run_path.join("server.log")
    }

    fn ready_path(&self) -> PathBuf {
        self.run_path.join("ready.json")
    }

    /// The log tail formatted for a panic message; marks it as reported so
    /// `Drop` does not print it a second time.
    fn take_log_tail(&mut self) -> String {
        self.log_reported = true;
        format!(
            "---- last {LOG_TAIL_LINES} lines of {} ----\n{}\n---- end of log ----",
            self.log_path().display(),
            self.log_tail(LOG_TAIL_LINES)
        )
    }

    fn spawn_and_wait(&mut self) {
        let bin = self.bin.clone();
        let ready = self.ready_path();
        match fs::remove_file(&ready) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => panic!("remove stale ready file {}: {e}", ready.display()),
        }
        self.starts += 1;
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("open server log");
        writeln!(log, "==== sextant-tests: start #{} ====", self.starts).expect("write server log");
        let mut cmd = Command::new(&bin);
        cmd.arg("serve")
            .arg("--data-dir")
            .arg(&self.data_dir)
            .args(["--pg-addr", "127.0.0.1:0"])
            .args(["--http-addr", "127.0.0.1:0"])
            .args(["--grpc-addr", "127.0.0.1:0"])
            .args(["--flight-addr", "127.0.0.1:0"])
            .arg("--ready-file")
            .arg(&ready)
            .args(&self.args)
            // Relative defaults (such as ./sextant-data) never land in the repo.
            .current_dir(&self.run_path)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone log file handle"))
            .stderr(log);
        // The test's own environment must not reconfigure the server.
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("SEXTANT_") {
                cmd.env_remove(key);
            }
        }
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", bin.display()));
        self.child = Some(child);

        let started = Instant::now();
        loop {
            if let Ok(text) = fs::read_to_string(&ready) {
                match parse_ready_file(&text) {
                    Ok(Some(addrs)) => {
                        self.addrs = addrs;
                        return;
                    }
                    Ok(None) => {} // partially written; read again
                    Err(e) => panic!(
                        "bad ready file {}: {e}\ncontent: {text}\n{}",
                        ready.display(),
                        self.take_log_tail()
                    ),
                }
            }
            let child = self.child.as_mut().expect("child was just spawned");
            if let Ok(Some(status)) = child.try_wait() {
                self.child = None;
                let starts = self.starts;
                panic!(
                    "sextant exited ({status}) before it was ready (start #{starts})\n{}",
                    self.take_log_tail()
                );
            }
            if started.elapsed() > READY_TIMEOUT {
                let _ = send_signal(child, libc::SIGKILL);
                let _ = child.wait();
                self.child = None;
                let starts = self.starts;
                panic!(
                    "sextant did not write its ready file {} within {READY_TIMEOUT:?} (start #{starts})\n{}",
                    ready.display(),
                    self.take_log_tail()
                );
            }
            thread::sleep(POLL_INTERVAL);
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = send_signal(&child, libc::SIGKILL);
            let _ = child.wait();
        }
        if thread::panicking() {
            if !self.log_reported {
                eprintln!(
                    "---- sextant log tail ({}) ----\n{}\n---- end of log ----",
                    self.log_path().display(),
                    self.log_tail(LOG_TAIL_LINES)
                );
            }
            if let Some(dir) = self.run_dir.take() {
                let kept = dir.keep();
                eprintln!(
                    "sextant-tests: kept {} (log, ready file, data) for inspection",
                    kept.display()
                );
            }
        }
    }
}

fn new_run_dir() -> TempDir {
    tempfile::Builder::new()
        .prefix("sextant-test-")
        .tempdir()
        .expect("create temporary directory")
}

/// Sends `signal` to `child` with `kill(2)`.
#[allow(unsafe_code)]
fn send_signal(child: &Child, signal: libc::c_int) -> io::Result<()> {
    let pid = libc::pid_t::try_from(child.id()).expect("pid fits in pid_t");
    // SAFETY: kill(2) has no memory-safety preconditions. `child` has not
    // been waited for yet, so its pid cannot have been reused by another
    // process.
    let rc = unsafe { libc::kill(pid, signal) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// A response read by [`http_get`].
#[derive(Debug, Clone)]
pub struct HttpResponse {
    /// The status code, e.g. 200.
    pub status: u16,
    /// Header names (lower-cased) and values, in order.
    pub headers: Vec<(String, String)>,
    /// The body (de-chunked if `Transfer-Encoding: chunked`), lossily UTF-8.
    pub body: String,
}

impl HttpResponse {
    /// The first header named `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Starts the binary by hand on `data` with `args` and returns its exit
/// status and stderr, for a start that is refused (it must exit on its own).
pub fn start_expecting_failure(data: &Path, args: &[&str]) -> (ExitStatus, String) {
    let out = Command::new(sextant_bin())
        .args([
            "serve",
            "--pg-addr",
            "127.0.0.1:0",
            "--http-addr",
            "127.0.0.1:0",
        ])
        .arg("--data-dir")
        .arg(data)
        .args(args)
        .env("SEXTANT_LOG_FILTER", "warn")
        .output()
        .expect("run sextant");
    (
        out.status,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Sends `GET <path>` as a minimal HTTP/1.1 request (`Connection: close`)
/// over a plain [`TcpStream`] and reads the whole response (10 s timeout).
pub fn http_get(addr: SocketAddr, path: &str) -> io::Result<HttpResponse> {
    http_request(addr, "GET", path, &[("Accept", "*/*")], None)
}

/// Sends `POST <path>` with `body` and extra `headers` (name, value) as a
/// minimal HTTP/1.1 request and reads the whole response (10 s timeout).
pub fn http_post(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> io::Result<HttpResponse> {
    http_request(addr, "POST", path, headers, Some(body))
}

fn http_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
) -> io::Result<HttpResponse> {
    let timeout = Duration::from_secs(10);
    let mut stream = TcpStream::connect_timeout(&addr, timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: sextant-tests\r\nConnection: close\r\n"
    );
    if let Some(body) = body {
        head.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    for (n, v) in headers {
        head.push_str(&format!("{n}: {v}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes())?;
    if let Some(body) = body {
        // The server may answer (413) before reading the whole body.
        let _ = stream.write_all(body);
    }
    let _ = stream.flush();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    parse_http_response(&raw).map_err(|e| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{e}: {:?}", String::from_utf8_lossy(&raw)),
        )
    })
}

fn parse_http_response(raw: &[u8]) -> Result<HttpResponse, String> {
    let head_end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or("no end of headers")?;
    let head = String::from_utf8_lossy(&raw[..head_end]);
    let mut lines = head.split("\r\n");
    let status_line = lines.next().ok_or("empty response")?;
    let mut parts = status_line.split_whitespace();
    let version = parts.next().unwrap_or_default();
    if !version.starts_with("HTTP/1.") {
        return Err(format!("bad status line {status_line:?}"));
    }
    let status = parts
        .next()
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or_else(|| format!("bad status line {status_line:?}"))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let mut body = raw[head_end + 4..].to_vec();
    let chunked = headers
        .iter()
        .any(|(n, v)| n == "transfer-encoding" && v.to_ascii_lowercase().contains("chunked"));
    if chunked {
        body = dechunk(&body)?;
    }
    Ok(HttpResponse {
        status,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

fn dechunk(mut data: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    loop {
        let line_end = data
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or("truncated chunk size")?;
        let size_text = String::from_utf8_lossy(&data[..line_end]);
        let size_text = size_text.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_text, 16)
            .map_err(|e| format!("bad chunk size {size_text:?}: {e}"))?;
        data = &data[line_end + 2..];
        if size == 0 {
            return Ok(out);
        }
        if data.len() < size + 2 {
            return Err("truncated chunk".to_owned());
        }
        out.extend_from_slice(&data[..size]);
        data = &data[size + 2..];
    }
}

/// Reads an environment variable and parses it, with a default when unset
/// (panicking on a value that does not parse).
pub fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T
where
    T::Err: std::fmt::Display,
{
    match std::env::var(name) {
        Ok(v) => v
            .trim()
            .parse()
            .unwrap_or_else(|e| panic!("{name}={v:?} does not parse: {e}")),
        Err(_) => default,
    }
}

/// Runs `sql` over the simple query protocol and returns every row as the
/// text Postgres clients see, `NULL` for nulls.
pub async fn text_rows(client: &tokio_postgres::Client, sql: &str) -> Vec<Vec<String>> {
    message_rows(
        client
            .simple_query(sql)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e:?}")),
    )
}

/// The rows of a simple query's answer, as [`text_rows`] gives them.
pub fn message_rows(messages: Vec<tokio_postgres::SimpleQueryMessage>) -> Vec<Vec<String>> {
    messages
        .into_iter()
        .filter_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => Some(
                (0..r.len())
                    .map(|i| r.get(i).unwrap_or("NULL").to_string())
                    .collect(),
            ),
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod unit {
    use super::*;

    #[test]
    fn ready_file_parsing() {
        assert!(parse_ready_file("").unwrap().is_none());
        assert!(
            parse_ready_file("{\"pg\": \"127.0.0.1:1")
                .unwrap()
                .is_none()
        );
        let a = parse_ready_file(
            r#"{"pg": "127.0.0.1:40123", "http": "127.0.0.1:2", "grpc": "127.0.0.1:3", "flight": "127.0.0.1:4"}"#,
        )
        .unwrap()
        .unwrap();
        assert_eq!(a.pg.port(), 40123);
        assert_eq!(a.flight.unwrap().port(), 4);
        assert!(parse_ready_file(r#"{"http": "127.0.0.1:2"}"#).is_err());
        assert!(parse_ready_file(r#"{"pg": "nope", "http": "127.0.0.1:2"}"#).is_err());
    }

    #[test]
    fn dep_info() {
        let d = "/t/debug/sextant: /w/server/src/main.rs /w/a\\ b.rs\n\n/w/server/src/main.rs:\n";
        assert_eq!(
            dep_info_paths(d),
            vec![
                PathBuf::from("/w/server/src/main.rs"),
                PathBuf::from("/w/a b.rs")
            ]
        );
    }

    #[test]
    fn http_parsing() {
        let r = parse_http_response(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok").unwrap();
        assert_eq!((r.status, r.body.as_str()), (200, "ok"));
        assert_eq!(r.header("content-length"), Some("2"));
        let r = parse_http_response(
            b"HTTP/1.1 503 Service Unavailable\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nnot\r\n6\r\n ready\r\n0\r\n\r\n",
        )
        .unwrap();
        assert_eq!((r.status, r.body.as_str()), (503, "not ready"));
    }
}
