//! A real `redis-server` for the replay-store tests (Debian's package; `.ci/run`
//! installs it).

use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// `redis-server` on a free port, without persistence; killed on drop.
pub struct RedisServer {
    child: Child,
    /// `redis://127.0.0.1:<port>/`.
    pub url: String,
}

impl RedisServer {
    // The lint cannot see that `Drop` kills and waits for the child.
    #[allow(clippy::zombie_processes)]
    pub async fn start() -> RedisServer {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot run redis-server ({e}): install it (Debian: apt-get install redis-server)"
                )
            });
        // Ready when it accepts connections (bounded: 10 s).
        for _ in 0..1000 {
            if tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
            {
                return RedisServer {
                    child,
                    url: format!("redis://127.0.0.1:{port}/"),
                };
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("redis-server did not start listening on port {port}");
    }

    /// Kills it (the fail-closed tests stop Redis under a running guard).
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}
