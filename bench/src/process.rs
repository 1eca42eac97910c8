//! The servers under test, as processes: our release binary on a fresh SQLite file, or the peer (node-ws, from
//! `../shared/peers/node-ws`, installed into a copy under `target/` when needed), each pinned to its own core
//! on a fixed loopback port (so a restart comes back where its clients reconnect), with request rate limits
//! off (our documented flag) and everything else as shipped. Also reads their RSS and CPU time from `/proc`,
//! and pins and unlimits this process.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// The service token both servers are started with (the product storm and broadcast scenarios PATCH stock).
pub const SERVICE_TOKEN: &str = "bench-service-token-0123456789";

/// Which server a process is: they speak the same contract with different paths and ids (see `Flavor`'s
/// methods in `target.rs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    Ours,
    NodeWs,
}

impl Flavor {
    pub fn label(self) -> &'static str {
        match self {
            Flavor::Ours => "ours",
            Flavor::NodeWs => "node-ws",
        }
    }
}

/// How to start (and restart) one server.
#[derive(Debug, Clone)]
struct Launch {
    program: PathBuf,
    args: Vec<String>,
    envs: Vec<(String, String)>,
    cwd: Option<PathBuf>,
    core: Option<usize>,
}

pub struct ServerProcess {
    child: Child,
    pub pid: u32,
    pub base: String,
    pub flavor: Flavor,
    launch: Launch,
    _dir: Option<TempDir>,
}

/// A temporary directory removed on drop (no extra dependency for one folder).
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn free_port() -> Result<u16, String> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| format!("no free port: {e}"))
}

impl ServerProcess {
    /// Our `bin` pinned to `core` (via `taskset`) with `extra` flags, on a fresh database.
    pub async fn start(bin: &Path, core: Option<usize>, extra: &[String]) -> Result<ServerProcess, String> {
        static STARTED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = STARTED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("cartwheel-bench-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).map_err(|e| format!("temp dir: {e}"))?;
        let port = free_port()?;
        let mut args: Vec<String> = [
            "--bind",
            &format!("127.0.0.1:{port}"),
            "--no-rate-limit",
            // One session holds 1,000 sockets in S1 and one address holds them all: the per-session and
            // per-address socket caps (made for browsers) are lifted like the rate limits.
            "--max-sockets-per-session",
            "100000",
            "--max-sockets-per-address",
            "200000",
            "--max-connections",
            "200000",
            "--log",
            "warn,server=info",
            "--service-token",
            &format!("bench:all:{SERVICE_TOKEN}"),
            "--database",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.push(dir.join("carts.sqlite3").display().to_string());
        args.push("--site-dir".into());
        args.push(dir.join("no-site").display().to_string());
        args.extend(extra.iter().cloned());
        let launch =
            Launch { program: bin.to_owned(), args, envs: vec![("NO_COLOR".into(), "1".into())], cwd: None, core };
        let (child, pid, base) = spawn(&launch).await?;
        Ok(ServerProcess { child, pid, base, flavor: Flavor::Ours, launch, _dir: Some(TempDir(dir)) })
    }

    /// The peer (node-ws) pinned to `core`: `source` copied to `install` and `npm ci` run there once.
    pub async fn start_peer(source: &Path, install: &Path, core: Option<usize>) -> Result<ServerProcess, String> {
        install_peer(source, install).await?;
        let port = free_port()?;
        let launch = Launch {
            program: "node".into(),
            args: vec!["server.js".into()],
            envs: vec![("PORT".into(), port.to_string()), ("SERVICE_TOKEN".into(), SERVICE_TOKEN.into())],
            cwd: Some(install.to_owned()),
            core,
        };
        let (child, pid, base) = spawn(&launch).await?;
        Ok(ServerProcess { child, pid, base, flavor: Flavor::NodeWs, launch, _dir: None })
    }

    pub fn rss_bytes(&self) -> u64 {
        rss_of(self.pid)
    }

    /// User + system CPU time so far.
    pub fn cpu_time(&self) -> Duration {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid)).unwrap_or_default();
        // Fields after the command name (which may contain spaces) start after the last ')'.
        let fields: Vec<&str> =
            stat.rsplit_once(')').map(|(_, rest)| rest.split_whitespace().collect()).unwrap_or_default();
        let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok()).unwrap_or(0);
        // utime and stime are fields 14 and 15 of the whole line: 11 and 12 after the name and state.
        let total = ticks(11) + ticks(12);
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
        Duration::from_millis(total * 1000 / hz)
    }

    /// SIGTERM, wait for the exit (killed after 30 s), and start the same command again on the same port and
    /// data. Returns how long the old process took to exit.
    pub async fn restart(&mut self) -> Result<Duration, String> {
        let asked = Instant::now();
        let pid = i32::try_from(self.pid).map_err(|_| "pid out of range")?;
        // taskset execs the server, so the pid is the server's own.
        unsafe {
            libc::kill(pid, libc::SIGTERM);
        }
        if tokio::time::timeout(Duration::from_secs(30), self.child.wait()).await.is_err() {
            let _ = self.child.start_kill();
            let _ = self.child.wait().await;
        }
        let exited = asked.elapsed();
        let (child, pid, base) = spawn(&self.launch).await?;
        if base != self.base {
            return Err(format!("restarted on {base}, not {}", self.base));
        }
        self.child = child;
        self.pid = pid;
        Ok(exited)
    }

    pub async fn stop(mut self) {
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
    }
}

/// Start `launch` and wait (30 s at most) for the line that gives its address.
async fn spawn(launch: &Launch) -> Result<(Child, u32, String), String> {
    let mut command = pinned(launch.program.as_os_str(), launch.core);
    command.args(&launch.args).envs(launch.envs.iter().cloned()).stdout(Stdio::piped()).stderr(Stdio::inherit());
    if let Some(cwd) = &launch.cwd {
        command.current_dir(cwd);
    }
    command.kill_on_drop(true);
    let mut child = command.spawn().map_err(|e| format!("cannot start {}: {e}", launch.program.display()))?;
    let pid = child.id().ok_or("the server exited at once")?;
    // Ours says "serving on http://…", the peer "node-ws cart server on http://…".
    let base = await_line(&mut child, "the server never printed its address", |line| {
        let at = line.find("http://").filter(|_| line.contains("serving on ") || line.contains("cart server on "))?;
        line[at..].split_whitespace().next().map(|s| s.trim_end_matches('/').to_owned())
    })
    .await?;
    Ok((child, pid, base))
}

/// `program`, pinned to `core` with `taskset` when one is given.
fn pinned(program: &std::ffi::OsStr, core: Option<usize>) -> Command {
    match core {
        Some(core) => {
            let mut c = Command::new("taskset");
            c.arg("-c").arg(core.to_string()).arg(program);
            c
        }
        None => Command::new(program),
    }
}

/// Read `child`'s stdout (30 s at most) until `found` makes something of a line, then keep draining it in the
/// background so the child never blocks on a full pipe; `missing` is the error otherwise.
async fn await_line<T>(
    child: &mut Child,
    missing: &str,
    mut found: impl FnMut(&str) -> Option<T>,
) -> Result<T, String> {
    let stdout = child.stdout.take().ok_or("no stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    let answer = tokio::time::timeout(Duration::from_secs(30), async {
        while let Ok(Some(line)) = lines.next_line().await {
            if let Some(answer) = found(&line) {
                return Some(answer);
            }
        }
        None
    })
    .await
    .ok()
    .flatten()
    .ok_or_else(|| missing.to_owned())?;
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Ok(answer)
}

/// Copy the peer's three files to `install` and run `npm ci` there unless its lockfile is already installed.
async fn install_peer(source: &Path, install: &Path) -> Result<(), String> {
    std::fs::create_dir_all(install).map_err(|e| format!("{}: {e}", install.display()))?;
    for file in ["package.json", "package-lock.json", "server.js"] {
        std::fs::copy(source.join(file), install.join(file))
            .map_err(|e| format!("copy {} from {}: {e}", file, source.display()))?;
    }
    let lock = std::fs::read(install.join("package-lock.json")).unwrap_or_default();
    let stamp = install.join("node_modules/.bench-installed-lock");
    if std::fs::read(&stamp).ok().as_deref() == Some(lock.as_slice()) {
        return Ok(());
    }
    let status = Command::new("npm")
        .args(["ci", "--no-audit", "--no-fund", "--loglevel=error"])
        .current_dir(install)
        .status()
        .await
        .map_err(|e| format!("npm ci: {e}"))?;
    if !status.success() {
        return Err(format!("npm ci in {} failed: {status}", install.display()));
    }
    std::fs::write(&stamp, &lock).map_err(|e| format!("{}: {e}", stamp.display()))
}

/// The resident set of process `pid`, in bytes (0 when it cannot be read).
pub fn rss_of(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kib| kib * 1024)
}

/// A real `redis-server` for the Redis-mode runs: free loopback port, fresh data directory, `appendonly yes`
/// with `appendfsync always` (as we recommend), pinned like the server, killed on drop.
pub struct RedisProcess {
    child: Child,
    pub url: String,
    _dir: TempDir,
}

impl RedisProcess {
    pub async fn start(core: Option<usize>) -> Result<RedisProcess, String> {
        let port = free_port()?;
        let dir = std::env::temp_dir().join(format!("cartwheel-bench-redis-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).map_err(|e| format!("temp dir: {e}"))?;
        let mut command = pinned("redis-server".as_ref(), core);
        command
            .args(["--bind", "127.0.0.1", "--port", &port.to_string(), "--save", "", "--daemonize", "no"])
            .args(["--appendonly", "yes", "--appendfsync", "always", "--dir"])
            .arg(&dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
        let mut child = command.spawn().map_err(|e| format!("cannot start redis-server: {e}"))?;
        await_line(&mut child, "redis-server never became ready", |line| {
            line.contains("Ready to accept connections").then_some(())
        })
        .await?;
        Ok(RedisProcess { child, url: format!("redis://127.0.0.1:{port}/"), _dir: TempDir(dir) })
    }

    pub async fn stop(mut self) {
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
    }
}

/// Pin this process to `core`.
pub fn pin_self(core: usize) -> Result<(), String> {
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(core, &mut set);
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            return Err(format!("sched_setaffinity: {}", std::io::Error::last_os_error()));
        }
    }
    Ok(())
}

/// Raise the open-files limit to the hard limit (each WebSocket is a file here and one in the server, which
/// inherits it); returns the limit now in force.
pub fn raise_open_files() -> u64 {
    unsafe {
        let mut limit: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return 0;
        }
        limit.rlim_cur = limit.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        limit.rlim_cur
    }
}
