//! A real `redis-server` for the scale-out tests: its own data directory, a free loopback port, append-only
//! persistence as we recommend it to operators, killed by its PID when dropped.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;

use super::EVENT_TIMEOUT;

pub struct RedisServer {
    pub port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl RedisServer {
    pub fn start() -> RedisServer {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let mut redis = RedisServer { port, dir: tempfile::tempdir().unwrap(), child: None };
        redis.launch();
        redis
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// `kill -9`: no shutdown, no final save; what survives is what the append-only file holds.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Start again on the same port and data directory.
    pub fn restart(&mut self) {
        self.kill();
        self.launch();
    }

    fn launch(&mut self) {
        let mut child = Command::new(binary())
            .args(["--bind", "127.0.0.1", "--port", &self.port.to_string(), "--save", "", "--daemonize", "no"])
            .args(["--appendonly", "yes", "--appendfsync", "always", "--protected-mode", "yes"])
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("redis-server starts (scripts/setup.sh installs Debian's redis-server)");
        let stdout = child.stdout.take().unwrap();
        self.child = Some(child);
        // Ready when it says so; keep draining its log afterwards so it never blocks on a full pipe.
        let (ready, is_ready) = mpsc::channel();
        std::thread::spawn(move || {
            let mut ready = Some(ready);
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if line.contains("Ready to accept connections") {
                    if let Some(r) = ready.take() {
                        let _ = r.send(());
                    }
                }
            }
        });
        is_ready.recv_timeout(EVENT_TIMEOUT).expect("redis-server is ready");
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

fn binary() -> PathBuf {
    ["/usr/bin/redis-server", "/usr/sbin/redis-server", "/usr/local/bin/redis-server"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .unwrap_or_else(|| PathBuf::from("redis-server"))
}
