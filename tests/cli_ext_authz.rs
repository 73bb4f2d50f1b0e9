//! `bearer-guard ext-authz`, run as the built binary: configuration errors name
//! the file and the key (exit 2); a running service answers checks and its admin
//! endpoints, and stops cleanly on SIGTERM.
#![cfg(feature = "cli")]

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::checks::{Issuer, sections};

/// Kills the process when the test ends, pass or fail.
struct Running(std::process::Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn write_config(name: &str, text: &str) -> std::path::PathBuf {
    let path =
        std::env::temp_dir().join(format!("bg-ext-authz-{}-{name}.toml", std::process::id()));
    std::fs::write(&path, text).expect("write config");
    path
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

#[test]
fn configuration_errors_name_the_file_and_key_and_exit_2() {
    let path = write_config(
        "bad",
        "http_listen = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\n\
         [[issuer]]\nissuer = \"https://login.example.com\"\naudiences = [\"a\"]\n\
         [[route]]\npath = \"/orders\"\nscopes_any = [\"a b\"]\n",
    );
    let out = Command::new(env!("CARGO_BIN_EXE_bearer-guard"))
        .arg("ext-authz")
        .arg("--config")
        .arg(&path)
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&path.display().to_string()), "{err}");
    assert!(err.contains("route[0].scopes_any[0]"), "{err}");
    let _ = std::fs::remove_file(path);
}

#[tokio::test]
async fn the_service_checks_requests_and_stops_on_sigterm() {
    let issuer = Issuer::start().await;
    let (http, admin) = (free_port(), free_port());
    let path = write_config(
        "run",
        &format!(
            "http_listen = \"127.0.0.1:{http}\"\nadmin_listen = \"127.0.0.1:{admin}\"\n{}",
            sections(&issuer.url)
        ),
    );
    let child = Command::new(env!("CARGO_BIN_EXE_bearer-guard"))
        .arg("ext-authz")
        .arg("--config")
        .arg(&path)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("the binary starts");
    let mut running = Running(child);
    let client = common::http();
    let mut health = None;
    for _ in 0..200 {
        if let Ok(r) = client
            .get(format!("http://127.0.0.1:{admin}/-/health"))
            .send()
            .await
        {
            health = Some(r.status());
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(health.map(|s| s.as_u16()), Some(200), "admin listener up");

    let token = issuer.token("orders:read");
    let allowed = client
        .get(format!("http://127.0.0.1:{http}/check"))
        .bearer_auth(&token)
        .header("x-forwarded-method", "GET")
        .header("x-forwarded-uri", "/orders/7")
        .send()
        .await
        .expect("check");
    assert_eq!(allowed.status(), 200);
    assert_eq!(allowed.headers()["x-auth-sub"], "alice");
    let metrics = client
        .get(format!("http://127.0.0.1:{admin}/-/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    assert!(
        metrics.contains(
            "bearer_guard_ext_authz_checks_total{protocol=\"http\",outcome=\"allowed\"} 1"
        ),
        "{metrics}"
    );

    let pid = running.0.id().to_string();
    let killed = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill");
    assert!(killed.success());
    let mut status = None;
    for _ in 0..400 {
        if let Ok(Some(s)) = running.0.try_wait() {
            status = Some(s);
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(
        status.and_then(|s| s.code()),
        Some(0),
        "a clean exit on SIGTERM"
    );
    let _ = std::fs::remove_file(path);
}
