//! A throwaway `redis-server` on a free loopback port, killed when dropped.

use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub(crate) struct RedisServer {
    binary: PathBuf,
    port: u16,
    child: Option<Child>,
}

/// The `redis-server` on `PATH`. Without one, the Redis tests skip with a plain message,
/// except under `CI=true`, where a missing server is a failure.
pub(crate) fn redis_server_binary() -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|dir| dir.join("redis-server"))
            .find(|candidate| candidate.is_file())
    });
    if found.is_none() {
        let message = "redis-server is not on PATH: the Redis store tests cannot run \
                       (install it with `apt-get install -y redis-server`)";
        crate::support::skip_or_fail(message);
    }
    found
}

impl RedisServer {
    /// Starts a server, or `None` (after saying so) when `redis-server` is missing.
    pub(crate) fn start() -> Option<Self> {
        let binary = redis_server_binary()?;
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free loopback port")
            .port();
        let mut server = Self {
            binary,
            port,
            child: None,
        };
        server.restart();
        Some(server)
    }

    pub(crate) fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// Kills the server, as a crash would.
    pub(crate) fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops the server with SIGSTOP: its socket stays open and accepts connections, but
    /// nothing is answered, as with a server stuck in a long command or swapped out.
    pub(crate) fn pause(&self) {
        self.signal("-STOP");
    }

    /// Lets a paused server run again with SIGCONT.
    pub(crate) fn resume(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, signal: &str) {
        let child = self.child.as_ref().expect("the server is running");
        // The shell's builtin `kill`: a machine with only `sh` still has it.
        let status = Command::new("sh")
            .args(["-c", &format!("kill {signal} {}", child.id())])
            .status()
            .expect("sh runs");
        assert!(status.success(), "kill {signal} {}", child.id());
    }

    /// Starts the server again on the same port and waits until it accepts connections.
    pub(crate) fn restart(&mut self) {
        self.kill();
        let child = Command::new(&self.binary)
            .args(["--bind", "127.0.0.1", "--port", &self.port.to_string()])
            .args([
                "--save",
                "",
                "--appendonly",
                "no",
                "--protected-mode",
                "yes",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server starts");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "redis-server did not start on port {}",
                self.port
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        // SIGKILL ends a stopped process too: a test that fails while its server is paused
        // leaves no server behind.
        self.kill();
    }
}
