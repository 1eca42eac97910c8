//! The real server binary as its own process (for what only a process shows: `kill -9`, a lowered file limit),
//! on a free port and the given database, with its log captured line by line.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;

use super::EVENT_TIMEOUT;

pub struct ServerProcess {
    pub child: Child,
    pub base: String,
    /// Every log line so far: those up to "serving on", then whatever [`ServerProcess::log`] collected.
    seen: Vec<String>,
    lines: mpsc::Receiver<String>,
}

impl ServerProcess {
    /// `wrapper` runs the binary (e.g. `["prlimit", "--nofile=256:256"]`; empty: directly); `args` are extra
    /// flags. No bundles are served: these tests are about the process, not the page.
    pub fn start(wrapper: &[&str], db: &Path, args: &[&str]) -> ServerProcess {
        let binary = env!("CARGO_BIN_EXE_server");
        let mut command = match wrapper.split_first() {
            Some((program, rest)) => {
                let mut c = Command::new(program);
                c.args(rest).arg(binary);
                c
            }
            None => Command::new(binary),
        };
        let mut child = command
            .args(["--bind", "127.0.0.1:0", "--database"])
            .arg(db)
            .arg("--site-dir")
            .arg(db.with_file_name("no-site"))
            .args(args)
            .env("CARTWHEEL_LOG", "info")
            .env("NO_COLOR", "1")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("the server binary starts");
        // Keep draining the log so the server never blocks on a full pipe.
        let stdout = BufReader::new(child.stdout.take().expect("piped stdout")).lines();
        let (log, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in stdout.map_while(Result::ok) {
                let _ = log.send(line);
            }
        });
        let mut seen = Vec::new();
        let base = loop {
            let line = lines.recv_timeout(EVENT_TIMEOUT).expect("server printed its address");
            seen.push(line.clone());
            if let Some(rest) = line.split("serving on ").nth(1) {
                break rest.split_whitespace().next().unwrap_or_default().to_owned();
            }
        };
        ServerProcess { child, base, seen, lines }
    }

    /// Every log line up to now.
    pub fn log(&mut self) -> &[String] {
        self.seen.extend(self.lines.try_iter());
        &self.seen
    }

    /// `kill -9` (SIGKILL), and wait for it to be gone; its whole log.
    pub fn kill_9(mut self) -> Vec<String> {
        self.kill();
        self.log().to_vec()
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for ServerProcess {
    /// A test that fails half-way leaves no server behind.
    fn drop(&mut self) {
        self.kill();
    }
}
