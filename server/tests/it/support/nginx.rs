//! A real nginx as the load balancer in front of test instances: `deploy/nginx.conf.template` (the one
//! operators run through `scripts/lb`), on a free loopback port, killed by its PID when dropped.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::EVENT_TIMEOUT;

const TEMPLATE: &str = include_str!("../../../../deploy/nginx.conf.template");

pub struct Nginx {
    pub addr: SocketAddr,
    _dir: tempfile::TempDir,
    child: Child,
}

impl Nginx {
    /// Round robin over `instances`.
    pub fn start(instances: &[SocketAddr]) -> Nginx {
        let dir = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let upstreams: String = instances.iter().map(|i| format!("server {i}; ")).collect();
        let conf = TEMPLATE
            .replace("@PREFIX@", &dir.path().display().to_string())
            .replace("@LISTEN@", &addr.to_string())
            .replace("@UPSTREAMS@", &upstreams);
        let conf_path = dir.path().join("nginx.conf");
        std::fs::write(&conf_path, conf).unwrap();
        let child = Command::new(binary())
            .arg("-p")
            .arg(dir.path())
            .arg("-c")
            .arg(&conf_path)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("nginx starts (scripts/setup.sh installs Debian's nginx)");
        // Ready once it accepts on its port.
        let deadline = Instant::now() + EVENT_TIMEOUT;
        while std::net::TcpStream::connect(addr).is_err() {
            assert!(Instant::now() < deadline, "nginx never listened on {addr}");
            std::thread::sleep(Duration::from_millis(20));
        }
        Nginx { addr, _dir: dir, child }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn binary() -> PathBuf {
    ["/usr/sbin/nginx", "/usr/bin/nginx", "/usr/local/sbin/nginx"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .unwrap_or_else(|| PathBuf::from("nginx"))
}
