//! `bearer-guard gateway` and `ext-authz` run as the built binary: JSON logs (one
//! access line per request with its fields, never a token), the request id,
//! the Prometheus endpoint's HELP text and latency histogram, reload on SIGHUP,
//! log filters, and exit status 2 with the address named when a bind fails.
#![cfg(feature = "cli")]

mod common;

use std::io::BufRead as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::checks::{Issuer, sections, spawn_recorder};
use serde_json::Value;
use tokio::sync::mpsc;

/// Far longer than the binary needs to act; a bound, never a pause.
const DEADLINE: Duration = Duration::from_secs(20);

/// The binary, its stderr lines as they come; killed when dropped.
struct Running {
    child: Child,
    lines: mpsc::UnboundedReceiver<String>,
    seen: Vec<String>,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Running {
    fn spawn(args: &[&str], config: &PathBuf, env: &[(&str, &str)]) -> Running {
        let mut command = Command::new(env!("CARGO_BIN_EXE_bearer-guard"));
        command
            .args(args)
            .arg("--config")
            .arg(config)
            .env_remove("BEARER_GUARD_LOG")
            .env_remove("RUST_LOG")
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (k, v) in env {
            command.env(k, v);
        }
        let mut child = command.spawn().expect("the binary starts");
        let stderr = child.stderr.take().expect("piped");
        let (tx, lines) = mpsc::unbounded_channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr).lines() {
                let Ok(line) = line else { return };
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        Running {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// The next stderr line for which `wanted` holds (all lines are kept).
    async fn wait_for(&mut self, what: &str, wanted: impl Fn(&str) -> bool) -> String {
        let found = tokio::time::timeout(DEADLINE, async {
            while let Some(line) = self.lines.recv().await {
                self.seen.push(line.clone());
                if wanted(&line) {
                    return Some(line);
                }
            }
            None
        })
        .await;
        match found {
            Ok(Some(line)) => line,
            _ => panic!("no stderr line {what}; saw:\n{}", self.seen.join("\n")),
        }
    }

    fn signal(&self, name: &str) {
        let sent = Command::new("kill")
            .args([&format!("-{name}"), &self.child.id().to_string()])
            .status()
            .expect("kill");
        assert!(sent.success());
    }

    /// SIGTERM, then every remaining stderr line until the process exits.
    async fn stop(mut self) -> Vec<String> {
        self.signal("TERM");
        let rest = tokio::time::timeout(DEADLINE, async {
            while let Some(line) = self.lines.recv().await {
                self.seen.push(line);
            }
        })
        .await;
        assert!(rest.is_ok(), "stderr still open: {:?}", self.seen);
        std::mem::take(&mut self.seen)
    }
}

fn write_config(name: &str, text: &str) -> PathBuf {
    let path = std::env::temp_dir().join(format!("bg-cli-gw-{}-{name}.toml", std::process::id()));
    std::fs::write(&path, text).expect("write config");
    path
}

fn gateway_toml(upstream: SocketAddr, issuer: &str, extra: &str) -> String {
    format!(
        "listen = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\nupstream = \"http://{upstream}\"\n{extra}\n{}",
        sections(issuer)
    )
}

/// The addresses of a "listening on A, admin endpoints on B" line (the message
/// of a JSON line, or the line itself).
fn listening_addrs(line: &str) -> Vec<SocketAddr> {
    let message = serde_json::from_str::<Value>(line)
        .ok()
        .and_then(|v| v["message"].as_str().map(str::to_owned))
        .unwrap_or_else(|| line.to_owned());
    message
        .split([' ', ','])
        .filter_map(|word| word.parse().ok())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_carry_one_access_line_per_request_and_never_the_token() {
    let issuer = Issuer::start().await;
    let upstream = spawn_recorder().await;
    let path = write_config("json", &gateway_toml(upstream, &issuer.url, ""));
    let mut gw = Running::spawn(
        &["--log-format", "json", "gateway"],
        &path,
        &[("RUST_LOG", "bearer_guard=info")],
    );
    let line = gw
        .wait_for("listening", |l| l.contains("listening on"))
        .await;
    let addrs = listening_addrs(&line);
    let (addr, admin) = (addrs[0], addrs[1]);
    let client = common::http();
    let token = issuer.token("orders:read");
    let expired = issuer.expired();

    let allowed = client
        .get(format!("http://{addr}/orders/7?secret=q"))
        .bearer_auth(&token)
        .header("x-request-id", "client-chosen")
        .send()
        .await
        .expect("response");
    assert_eq!(allowed.status(), 200);
    let id = allowed.headers()["x-request-id"]
        .to_str()
        .expect("ascii")
        .to_owned();
    assert_eq!(id.len(), 32, "a fresh id, not the client's: {id}");
    let echoed: Value = allowed.json().await.expect("json");
    assert_eq!(
        echoed["headers"]["x-request-id"],
        id.as_str(),
        "forwarded upstream"
    );

    let refused = client
        .get(format!("http://{addr}/orders/7"))
        .bearer_auth(&expired)
        .send()
        .await
        .expect("response");
    assert_eq!(refused.status(), 401);
    let refused_id = refused.headers()["x-request-id"]
        .to_str()
        .expect("ascii")
        .to_owned();
    let missing = client
        .get(format!("http://{addr}/nowhere"))
        .send()
        .await
        .expect("response");
    assert_eq!(missing.status(), 404);

    let metrics = client
        .get(format!("http://{admin}/-/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    for wanted in [
        "# HELP bearer_guard_gateway_requests_total ",
        "# HELP bearer_guard_validations_total ",
        "# HELP bearer_guard_request_duration_seconds ",
        "# TYPE bearer_guard_request_duration_seconds histogram",
        "bearer_guard_request_duration_seconds_bucket{outcome=\"forwarded\",le=\"0.001\"}",
        "bearer_guard_request_duration_seconds_bucket{outcome=\"rejected\",le=\"+Inf\"} 1",
        "bearer_guard_request_duration_seconds_count{outcome=\"not_found\"} 1",
    ] {
        assert!(metrics.contains(wanted), "{wanted} missing in:\n{metrics}");
    }

    let lines = gw.stop().await;
    let events: Vec<Value> = lines
        .iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let signature = token.rsplit('.').next().expect("signature");
    for line in &lines {
        assert!(
            !line.contains(signature) && !line.contains(&expired[20..60]),
            "a token in the logs: {line}"
        );
        assert!(!line.contains("secret=q"), "a query in the logs: {line}");
    }
    let access: Vec<&Value> = events
        .iter()
        .filter(|e| e["target"] == "bearer_guard::access" && e["path"] != "/-/metrics")
        .collect();
    assert_eq!(access.len(), 3, "{access:?}");
    let ok = access[0];
    assert_eq!(ok["level"], "INFO");
    assert_eq!(ok["request_id"], id.as_str());
    assert_eq!(ok["method"], "GET");
    assert_eq!(ok["path"], "/orders/7");
    assert_eq!(ok["route"], "/orders");
    assert_eq!(ok["status"], 200);
    assert_eq!(ok["outcome"], "forwarded");
    assert_eq!(ok["sub"], "alice");
    assert_eq!(ok["client_id"], "cli-app");
    assert!(
        ok["peer"]
            .as_str()
            .is_some_and(|p| p.starts_with("127.0.0.1:"))
    );
    assert!(ok["latency_us"].as_u64().is_some());
    assert!(ok.get("reason").is_none_or(Value::is_null));

    let no = access[1];
    assert_eq!(no["request_id"], refused_id.as_str());
    assert_eq!(no["status"], 401);
    assert_eq!(no["outcome"], "rejected");
    assert_eq!(no["reason"], "expired");
    assert_eq!(no["route"], "/orders");
    assert!(
        no.get("sub").is_none_or(Value::is_null),
        "no claims of a refused token"
    );

    let lost = access[2];
    assert_eq!(
        (lost["status"].as_u64(), lost["outcome"].as_str()),
        (Some(404), Some("not_found"))
    );
    let _ = std::fs::remove_file(path);
}

/// A client of the gateway's `/orders` with a valid token, asking which
/// upstream (by the recorder's port) a request reached.
struct Upstream {
    client: reqwest::Client,
    addr: SocketAddr,
    token: String,
}

impl Upstream {
    /// The binary started with `args` and `config`, once it listens.
    async fn behind(args: &[&str], config: &PathBuf, issuer: &Issuer) -> (Running, Upstream) {
        let mut gw = Running::spawn(args, config, &[]);
        let line = gw
            .wait_for("listening", |l| l.contains("listening on"))
            .await;
        let upstream = Upstream {
            client: common::http(),
            addr: listening_addrs(&line)[0],
            token: issuer.token("orders:read"),
        };
        (gw, upstream)
    }

    /// The Host the recorder received: its own address.
    async fn host(&self) -> String {
        let r = self
            .client
            .get(format!("http://{}/orders", self.addr))
            .bearer_auth(&self.token)
            .send()
            .await
            .expect("response");
        assert_eq!(r.status(), 200);
        let v: Value = r.json().await.expect("json");
        v["headers"]["host"].as_str().unwrap_or_default().to_owned()
    }
}

/// `--watch`: a rewritten file and an editor's atomic rename are each applied
/// without a signal; a bad file is refused once and the running one kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_reloads_a_changed_file_and_a_bad_file_keeps_the_running_configuration() {
    let issuer = Issuer::start().await;
    let (a, b) = (spawn_recorder().await, spawn_recorder().await);
    let path = write_config("watch", &gateway_toml(a, &issuer.url, ""));
    let (mut gw, upstream) = Upstream::behind(&["gateway", "--watch=0.02"], &path, &issuer).await;
    assert_eq!(upstream.host().await, a.to_string());

    // Rewritten in place (a longer file: the size tells even within one tick
    // of the clock).
    std::fs::write(&path, gateway_toml(b, &issuer.url, "# moved to b")).expect("rewrite");
    gw.wait_for("reloaded", |l| l.contains("configuration reloaded"))
        .await;
    assert_eq!(upstream.host().await, b.to_string());

    // Replaced by a rename, as editors and `kubectl` do.
    let next = path.with_extension("next");
    std::fs::write(&next, gateway_toml(a, &issuer.url, "# back to a, renamed")).expect("write");
    std::fs::rename(&next, &path).expect("rename");
    gw.wait_for("reloaded", |l| l.contains("configuration reloaded"))
        .await;
    assert_eq!(upstream.host().await, a.to_string());

    std::fs::write(
        &path,
        gateway_toml(b, &issuer.url, "upstream_timeout_secs = -2"),
    )
    .expect("rewrite");
    let refused = gw
        .wait_for("refused", |l| l.contains("reload refused"))
        .await;
    assert!(refused.contains("upstream_timeout_secs"), "{refused}");
    assert_eq!(
        upstream.host().await,
        a.to_string(),
        "the running configuration kept"
    );
    let seen = gw.stop().await;
    let refusals = seen.iter().filter(|l| l.contains("reload refused")).count();
    assert_eq!(refusals, 1, "refused once, not at every check: {seen:?}");
    let _ = std::fs::remove_file(path);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_file_and_a_bad_file_keeps_the_running_configuration() {
    let issuer = Issuer::start().await;
    let (a, b) = (spawn_recorder().await, spawn_recorder().await);
    let path = write_config("hup", &gateway_toml(a, &issuer.url, ""));
    let (mut gw, upstream) = Upstream::behind(&["gateway"], &path, &issuer).await;
    assert_eq!(upstream.host().await, a.to_string());

    std::fs::write(&path, gateway_toml(b, &issuer.url, "")).expect("rewrite");
    gw.signal("HUP");
    gw.wait_for("reloaded", |l| l.contains("configuration reloaded"))
        .await;
    assert_eq!(upstream.host().await, b.to_string());

    std::fs::write(
        &path,
        gateway_toml(a, &issuer.url, "upstream_timeout_secs = -2"),
    )
    .expect("rewrite");
    gw.signal("HUP");
    let refused = gw
        .wait_for("refused", |l| l.contains("reload refused"))
        .await;
    assert!(refused.contains("upstream_timeout_secs"), "{refused}");
    assert!(refused.contains(&path.display().to_string()), "{refused}");
    assert_eq!(
        upstream.host().await,
        b.to_string(),
        "the running configuration kept"
    );
    assert!(
        gw.child.try_wait().expect("status").is_none(),
        "still running"
    );
    let _ = std::fs::remove_file(path);
}

#[test]
fn a_log_filter_that_does_not_parse_is_a_usage_error() {
    let path = write_config("filter", "not read");
    let out = Command::new(env!("CARGO_BIN_EXE_bearer-guard"))
        .args(["gateway", "--config"])
        .arg(&path)
        .env("BEARER_GUARD_LOG", "bearer_guard=loudest")
        .output()
        .expect("runs");
    let _ = std::fs::remove_file(path);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("BEARER_GUARD_LOG"), "{stderr}");
}

#[test]
fn ext_authz_bind_failure_names_the_address_and_exits_2() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("addr");
    let path = write_config(
        "ext-bind",
        &format!(
            "http_listen = \"{addr}\"\nadmin_listen = \"127.0.0.1:0\"\n{}",
            sections("https://login.example.com")
        ),
    );
    let out = Command::new(env!("CARGO_BIN_EXE_bearer-guard"))
        .args(["ext-authz", "--config"])
        .arg(&path)
        .output()
        .expect("runs");
    let _ = std::fs::remove_file(path);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(&format!("http_listen = {addr}: cannot listen: ")),
        "{stderr}"
    );
    assert!(!stderr.contains("listening"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ext_authz_says_listening_with_the_bound_addresses_and_survives_sighup() {
    let path = write_config(
        "ext-listen",
        &format!(
            "grpc_listen = \"127.0.0.1:0\"\nhttp_listen = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\n{}",
            sections("https://login.example.com")
        ),
    );
    let mut ext = Running::spawn(&["ext-authz"], &path, &[]);
    let line = ext.wait_for("listening", |l| l.contains("listening")).await;
    let addrs = listening_addrs(&line);
    assert_eq!(addrs.len(), 3, "{line}");
    assert!(addrs.iter().all(|a| a.port() != 0), "{line}");
    let health = common::http()
        .get(format!("http://{}/-/health", addrs[2]))
        .send()
        .await
        .expect("health");
    assert_eq!(health.status(), 200);
    // A SIGHUP (meant as a reload) does not stop it.
    ext.signal("HUP");
    ext.wait_for("SIGHUP ignored", |l| l.contains("SIGHUP ignored"))
        .await;
    assert!(
        ext.child.try_wait().expect("status").is_none(),
        "still running"
    );
    let _ = ext.stop().await;
    let _ = std::fs::remove_file(path);
}
