//! The processes a run measures: a Sextant server (the release binary, port
//! 0, a fresh data directory), a PostgreSQL 15 cluster of its own (initdb
//! as the `postgres` user when run as root) and a Prometheus taking remote
//! writes. Each stops on drop.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub(crate) struct Sextant {
    child: Child,
    pub(crate) data_dir: PathBuf,
    pub(crate) pg: String,
    pub(crate) http: String,
    pub(crate) grpc: String,
    pub(crate) flight: String,
    bin: PathBuf,
    args: Vec<String>,
    env: Vec<(String, String)>,
}

impl Sextant {
    pub(crate) fn start(bin: &Path, data_dir: &Path, args: &[String]) -> Result<Self, String> {
        Self::start_with_env(bin, data_dir, args, &[])
    }

    /// [`Sextant::start`] with more environment variables (`AWS_*`).
    pub(crate) fn start_with_env(
        bin: &Path,
        data_dir: &Path,
        args: &[String],
        env: &[(String, String)],
    ) -> Result<Self, String> {
        std::fs::create_dir_all(data_dir).map_err(|e| format!("{}: {e}", data_dir.display()))?;
        let ready = data_dir.with_extension("ready.json");
        let _ = std::fs::remove_file(&ready);
        let log =
            std::fs::File::create(data_dir.with_extension("log")).map_err(|e| e.to_string())?;
        let child = Command::new(bin)
            .arg("serve")
            .arg("--data-dir")
            .arg(data_dir)
            .args(["--pg-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0"])
            .args(["--grpc-addr", "127.0.0.1:0", "--flight-addr", "127.0.0.1:0"])
            .arg("--ready-file")
            .arg(&ready)
            .args(args)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log)
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", bin.display()))?;
        let mut s = Sextant {
            child,
            data_dir: data_dir.to_path_buf(),
            pg: String::new(),
            http: String::new(),
            grpc: String::new(),
            flight: String::new(),
            bin: bin.to_path_buf(),
            args: args.to_vec(),
            env: env.to_vec(),
        };
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            if let Some(status) = s.child.try_wait().map_err(|e| e.to_string())? {
                return Err(format!(
                    "sextant exited ({status}); see {}",
                    data_dir.with_extension("log").display()
                ));
            }
            if let Ok(text) = std::fs::read_to_string(&ready)
                && let Ok(v) = serde_json::from_str::<serde_json::Value>(&text)
            {
                let get = |k: &str| v[k].as_str().unwrap_or_default().to_string();
                s.pg = get("pg");
                s.http = get("http");
                s.grpc = get("grpc");
                s.flight = get("flight");
                return Ok(s);
            }
            if Instant::now() > deadline {
                return Err("sextant did not become ready in 120 s".into());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    pub(crate) fn pg_config(&self) -> String {
        let (host, port) = self.pg.rsplit_once(':').expect("host:port");
        format!("host={host} port={port} user=sextant dbname=sextant")
    }

    /// Stops (SIGTERM, then waits) and starts again on the same data.
    pub(crate) fn restart(self) -> Result<Self, String> {
        let (bin, dir, args, env) = (
            self.bin.clone(),
            self.data_dir.clone(),
            self.args.clone(),
            self.env.clone(),
        );
        drop(self);
        Sextant::start_with_env(&bin, &dir, &args, &env)
    }

    /// Kills the server (SIGKILL: no shutdown, as a crash) and starts it
    /// again on the same data.
    pub(crate) fn kill_and_start(mut self) -> Result<Self, String> {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let (bin, dir, args, env) = (
            self.bin.clone(),
            self.data_dir.clone(),
            self.args.clone(),
            self.env.clone(),
        );
        drop(self);
        Sextant::start_with_env(&bin, &dir, &args, &env)
    }
}

impl Drop for Sextant {
    fn drop(&mut self) {
        terminate(&mut self.child);
    }
}

/// SIGTERM, then SIGKILL if the process is still there 30 s later.
fn terminate(child: &mut Child) {
    unsafe_free_sigterm(child.id());
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// Prometheus (`--scenario promql`) with nothing to scrape, taking remote
/// writes, its TSDB and log in a directory of its own.
pub(crate) struct Prometheus {
    child: Child,
    pub(crate) url: String,
}

impl Prometheus {
    pub(crate) fn start(bin: &Path, dir: &Path) -> Result<Self, String> {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let config = dir.join("prometheus.yml");
        std::fs::write(&config, "global:\n  scrape_interval: 1m\n").map_err(|e| e.to_string())?;
        let log_path = dir.join("prometheus.log");
        let log = std::fs::File::create(&log_path).map_err(|e| e.to_string())?;
        let port = free_port()?;
        let child = Command::new(bin)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--web.enable-remote-write-receiver")
            .stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log)
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", bin.display()))?;
        let mut p = Prometheus {
            child,
            url: format!("http://127.0.0.1:{port}"),
        };
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            if let Some(status) = p.child.try_wait().map_err(|e| e.to_string())? {
                return Err(format!(
                    "prometheus exited ({status}); see {}",
                    log_path.display()
                ));
            }
            if answers_200(port, "/-/ready") {
                return Ok(p);
            }
            if Instant::now() > deadline {
                return Err("prometheus did not become ready in 120 s".into());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        terminate(&mut self.child);
    }
}

/// Whether `GET path` on 127.0.0.1:`port` answers 200.
fn answers_200(port: u16, path: &str) -> bool {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    // The status line: "HTTP/1.x 200".
    let mut status = [0u8; 12];
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").as_bytes())
        .is_ok()
        && s.read_exact(&mut status).is_ok()
        && status.ends_with(b" 200")
}

/// SIGTERM through kill(1), which keeps this crate free of unsafe code.
fn unsafe_free_sigterm(pid: u32) {
    let _ = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// CPU time (user + system, seconds) and resident memory (current and peak,
/// bytes) of a process, from /proc.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct ProcStats {
    pub(crate) cpu_s: f64,
    pub(crate) rss: u64,
    pub(crate) peak_rss: u64,
}

/// (parent pid, CPU seconds of the process, CPU seconds of its children
/// that have exited) of a process.
fn stat(pid: u32) -> Option<(u32, f64, f64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The fields after the command name (which may hold spaces) in parentheses.
    let (_, rest) = stat.rsplit_once(')')?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = 100.0; // USER_HZ on Linux
    let ppid = f.get(1)?.parse().ok()?;
    let utime: f64 = f.get(11)?.parse().ok()?;
    let stime: f64 = f.get(12)?.parse().ok()?;
    let cutime: f64 = f.get(13)?.parse().ok()?;
    let cstime: f64 = f.get(14)?.parse().ok()?;
    Some((ppid, (utime + stime) / ticks, (cutime + cstime) / ticks))
}

/// CPU of the process and its children (PostgreSQL runs a process per
/// connection); memory of the process itself.
pub(crate) fn proc_stats(pid: u32) -> ProcStats {
    let mut st = ProcStats::default();
    if let Some((_, cpu, exited)) = stat(pid) {
        st.cpu_s = cpu + exited;
    }
    if let Ok(entries) = std::fs::read_dir("/proc") {
        for e in entries.flatten() {
            if let Some(child) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok())
                && let Some((ppid, cpu, _)) = stat(child)
                && ppid == pid
            {
                st.cpu_s += cpu;
            }
        }
    }
    if let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) {
        for line in status.lines() {
            let kb = |l: &str| -> u64 {
                l.split_whitespace()
                    .nth(1)
                    .and_then(|x| x.parse().ok())
                    .unwrap_or(0)
                    * 1024
            };
            if line.starts_with("VmRSS:") {
                st.rss = kb(line);
            } else if line.starts_with("VmHWM:") {
                st.peak_rss = kb(line);
            }
        }
    }
    st
}

/// A PostgreSQL cluster in a directory of its own.
pub(crate) struct Postgres {
    dir: PathBuf,
    bin: PathBuf,
    pub(crate) port: u16,
    as_postgres_user: bool,
}

impl Postgres {
    pub(crate) fn start(bin: &Path, dir: &Path) -> Result<Self, String> {
        let root = Command::new("id")
            .arg("-u")
            .output()
            .map(|o| o.stdout.starts_with(b"0"))
            .unwrap_or(false);
        std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
        let port = free_port()?;
        let pg = Postgres {
            dir: dir.to_path_buf(),
            bin: bin.to_path_buf(),
            port,
            as_postgres_user: root,
        };
        if root {
            run(Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(dir))?;
        }
        run(pg.cmd("initdb").arg("-D").arg(dir.join("data")).args([
            "-U",
            "postgres",
            "--auth=trust",
            "--no-sync",
            "-E",
            "UTF8",
            "--locale=C",
        ]))?;
        let conf = format!(
            "port = {port}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{}'\nshared_buffers = '2GB'\nwork_mem = '256MB'\nmaintenance_work_mem = '1GB'\nmax_wal_size = '8GB'\nmax_parallel_workers_per_gather = 2\n",
            dir.display()
        );
        let conf_path = dir.join("data/postgresql.auto.conf");
        std::fs::write(&conf_path, conf).map_err(|e| e.to_string())?;
        if root {
            run(Command::new("chown")
                .args(["postgres:postgres"])
                .arg(&conf_path))?;
        }
        pg.ctl("start")?;
        Ok(pg)
    }

    fn cmd(&self, tool: &str) -> Command {
        let path = self.bin.join(tool);
        if self.as_postgres_user {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(path);
            c
        } else {
            Command::new(path)
        }
    }

    fn ctl(&self, what: &str) -> Result<(), String> {
        run(self
            .cmd("pg_ctl")
            .arg("-D")
            .arg(self.dir.join("data"))
            .arg("-l")
            .arg(self.dir.join("postgres.log"))
            .args(["-w", "-t", "120", what]))
    }

    pub(crate) fn restart(&self) -> Result<(), String> {
        self.ctl("restart")
    }

    pub(crate) fn config(&self) -> String {
        format!(
            "host=127.0.0.1 port={} user=postgres dbname=postgres",
            self.port
        )
    }

    pub(crate) fn pid(&self) -> Option<u32> {
        std::fs::read_to_string(self.dir.join("data/postmaster.pid"))
            .ok()
            .and_then(|s| s.lines().next().and_then(|l| l.trim().parse().ok()))
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let _ = self.ctl("stop");
    }
}

fn run(c: &mut Command) -> Result<(), String> {
    let out = c.output().map_err(|e| format!("{c:?}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{c:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

pub(crate) fn free_port() -> Result<u16, String> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    Ok(l.local_addr().map_err(|e| e.to_string())?.port())
}

/// Bytes of every file under `dir` whose name ends in `ext` ("" for all).
pub(crate) fn dir_bytes(dir: &Path, ext: &str) -> u64 {
    let mut total = 0;
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            total += dir_bytes(&p, ext);
        } else if p.to_string_lossy().ends_with(ext) {
            total += e.metadata().map(|m| m.len()).unwrap_or(0);
        }
    }
    total
}

/// `perf record -g` of one process while a part of the run happens; on
/// stop, the hottest symbols go to `<dir>/<name>.txt` next to the data.
pub(crate) struct Profile {
    child: Option<Child>,
    data: PathBuf,
    text: PathBuf,
}

impl Profile {
    pub(crate) fn start(dir: Option<&Path>, name: &str, pid: u32) -> Profile {
        let slug: String = name
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() {
                    c.to_ascii_lowercase()
                } else {
                    '-'
                }
            })
            .collect();
        let Some(dir) = dir else {
            return Profile {
                child: None,
                data: PathBuf::new(),
                text: PathBuf::new(),
            };
        };
        let _ = std::fs::create_dir_all(dir);
        let data = dir.join(format!("{slug}.perf.data"));
        let child = Command::new("perf")
            .args(["record", "-F", "499", "-g", "-o"])
            .arg(&data)
            .args(["-p", &pid.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| eprintln!("  perf record failed to start: {e}"))
            .ok();
        // perf needs a moment to attach.
        std::thread::sleep(Duration::from_millis(300));
        Profile {
            child,
            data,
            text: dir.join(format!("{slug}.txt")),
        }
    }

    pub(crate) fn stop(mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let _ = Command::new("kill")
            .args(["-INT", &child.id().to_string()])
            .status();
        let _ = child.wait();
        let report = Command::new("perf")
            .args([
                "report",
                "--stdio",
                "--no-children",
                "--sort",
                "dso,symbol",
                "--percent-limit",
                "1",
                "-g",
                "none",
                "-i",
            ])
            .arg(&self.data)
            .output();
        if let Ok(out) = report {
            let _ = std::fs::write(&self.text, out.stdout);
        }
    }
}
