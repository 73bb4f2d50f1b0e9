//! `bearer-guard authz-server`, run as the built binary: it prints its issuer and
//! a curl line, serves the client-credentials flow, and a Guard accepts its tokens.
#![cfg(feature = "cli")]

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use bearer_guard::Guard;
use serde_json::Value;

/// Kills the server process when the test ends, pass or fail.
struct Running(std::process::Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn demo_server_issues_tokens_a_guard_accepts() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_bearer-guard"))
        .args(["authz-server", "--listen", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("the binary starts");
    let stdout = child.stdout.take().expect("stdout");
    let _running = Running(child);
    let mut lines = BufReader::new(stdout).lines();
    let first = lines.next().expect("a banner").expect("utf-8");
    let issuer = first.rsplit(' ').next().expect("the issuer URL").to_owned();
    assert!(issuer.starts_with("http://127.0.0.1:"), "{first}");
    let banner: Vec<String> = lines.take(3).map(|l| l.expect("utf-8")).collect();
    let curl = banner
        .iter()
        .find(|l| l.contains("curl"))
        .expect("a curl line");
    assert!(curl.contains("demo-client:demo-secret") && curl.contains(&format!("{issuer}/token")));

    let body: Value = reqwest::Client::new()
        .post(format!("{issuer}/token"))
        .basic_auth("demo-client", Some("demo-secret"))
        .form(&[("grant_type", "client_credentials"), ("scope", "read")])
        .send()
        .await
        .expect("POST /token")
        .json()
        .await
        .expect("json");
    let token = body["access_token"].as_str().expect("a token");
    let guard = Guard::builder()
        .issuer(issuer.as_str())
        .audience("https://api.example.com")
        .build()
        .expect("guard");
    let verified = guard.validate(token).await.expect("valid");
    assert_eq!(verified.client_id(), Some("demo-client"));
    assert!(verified.scopes().contains("read"));
}

#[test]
fn bad_config_exits_2_and_names_the_file() {
    let dir = std::env::temp_dir().join(format!("bg-authz-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("tmp dir");
    let path = dir.join("authz.toml");
    std::fs::write(
        &path,
        "audiences = [\"https://a\"]\nsigning_algorithm = \"HS256\"\n",
    )
    .expect("write");
    let out = Command::new(env!("CARGO_BIN_EXE_bearer-guard"))
        .args(["authz-server", "--listen", "127.0.0.1:0", "--config"])
        .arg(&path)
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("signing_algorithm") && err.contains("authz.toml"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
