//! `bearer-guard verify`: in-process through `bearer_guard::cli::verify`, and the
//! built binary for exit statuses and `--json`.
#![cfg(feature = "cli")]

mod common;

use std::io::Write as _;
use std::process::{Command, Stdio};

use bearer_guard::cli::Cli;
use bearer_guard::cli::verify::{self, Verdict, VerifyArgs};
use clap::Parser as _;
use common::{AUDIENCE, NOW, TestKey};
use serde_json::Value;

const ISS: &str = "https://login.example.com";

fn args(argv: &[&str]) -> VerifyArgs {
    let mut full = vec!["bearer-guard", "verify"];
    full.extend_from_slice(argv);
    match Cli::try_parse_from(full).expect("arguments parse").command {
        bearer_guard::cli::Command::Verify(a) => a,
        other => panic!("not verify: {other:?}"),
    }
}

struct Fixture {
    key: TestKey,
    _dir: tempdir::Dir,
    jwks_path: String,
}

/// A JWKS written to a per-test file.
mod tempdir {
    pub struct Dir(pub std::path::PathBuf);
    impl Dir {
        pub fn new(name: &str) -> Self {
            let path = std::env::temp_dir()
                .join(format!("bearer-guard-test-{}-{name}", std::process::id()));
            std::fs::create_dir_all(&path).expect("temp dir");
            Dir(path)
        }
    }
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

fn fixture(name: &str) -> Fixture {
    let key = TestKey::new("k1");
    let dir = tempdir::Dir::new(name);
    let path = dir.0.join("jwks.json");
    std::fs::write(&path, key.jwks()).expect("write jwks");
    Fixture {
        key,
        jwks_path: path.to_string_lossy().into_owned(),
        _dir: dir,
    }
}

fn base(f: &Fixture) -> Vec<&str> {
    vec![
        "--issuer",
        ISS,
        "--jwks-file",
        &f.jwks_path,
        "--audience",
        AUDIENCE,
    ]
}

async fn run(argv: &[&str], token: &str) -> Verdict {
    let a = args(argv);
    verify::verify(&a, token).await.expect("no usage error")
}

#[tokio::test]
async fn accepts_a_valid_token_and_prints_header_and_claims() {
    let f = fixture("valid");
    let token = f.key.token(ISS, NOW, "orders:read orders:write");
    let mut argv = base(&f);
    let now = (NOW + 10).to_string();
    argv.extend(["--now", &now]);
    let verdict = run(&argv, &token).await;
    assert_eq!(verdict.exit_code(), 0, "{}", verdict.render(&token, false));
    let text = verdict.render(&token, false);
    assert!(text.contains("alg:    EdDSA"), "{text}");
    assert!(text.contains("kid:    k1"), "{text}");
    assert!(text.contains("typ:    at+jwt"), "{text}");
    assert!(text.contains("scopes: orders:read orders:write"), "{text}");
    assert!(text.contains("\"sub\": \"alice\""), "{text}");
    let signature = token.rsplit('.').next().unwrap_or_default();
    assert!(
        !text.contains(signature),
        "the signature must never be printed"
    );

    let json: Value = serde_json::from_str(&verdict.render(&token, true)).expect("json");
    assert_eq!(json["valid"], true);
    assert_eq!(json["header"]["alg"], "EdDSA");
    assert_eq!(json["claims"]["tenant"], "acme");
}

#[tokio::test]
async fn rejects_an_expired_token_with_now() {
    let f = fixture("expired");
    let token = f.key.token(ISS, NOW, "");
    let mut argv = base(&f);
    let later = (NOW + 3600 + 61).to_string();
    argv.extend(["--now", &later, "--json"]);
    let verdict = run(&argv, &token).await;
    assert_eq!(verdict.exit_code(), 1);
    let json: Value = serde_json::from_str(&verdict.render(&token, true)).expect("json");
    assert_eq!(json["valid"], false);
    assert_eq!(json["error"], "invalid_token");
    assert_eq!(json["reason"], "expired");
    assert!(
        json["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("leeway 60 s")
    );

    // A larger leeway covers the same skew.
    argv.extend(["--leeway", "120"]);
    assert_eq!(run(&argv, &token).await.exit_code(), 0);
}

#[tokio::test]
async fn rejects_a_wrong_audience() {
    let f = fixture("audience");
    let token = f.key.token(ISS, NOW, "");
    let now = NOW.to_string();
    let argv = [
        "--issuer",
        ISS,
        "--jwks-file",
        &f.jwks_path,
        "--audience",
        "https://other.example.com",
        "--now",
        &now,
    ];
    let verdict = run(&argv, &token).await;
    let Verdict::Rejected(e) = &verdict else {
        panic!("accepted a token for another audience");
    };
    assert_eq!(verify::error_name(e), "invalid_token");
    let text = verdict.render(&token, false);
    assert!(text.starts_with("rejected: invalid_token"), "{text}");
    assert!(text.contains("token audience not accepted"), "{text}");
}

#[tokio::test]
async fn scope_requirements_are_all_of() {
    let f = fixture("scope");
    let token = f.key.token(ISS, NOW, "orders:read");
    let now = NOW.to_string();
    let mut argv = base(&f);
    argv.extend(["--now", &now, "--scope", "orders:read"]);
    assert_eq!(run(&argv, &token).await.exit_code(), 0);
    argv.extend(["--scope", "orders:write"]);
    let verdict = run(&argv, &token).await;
    let Verdict::Rejected(e) = &verdict else {
        panic!("accepted without orders:write");
    };
    assert_eq!(verify::error_name(e), "insufficient_scope");
}

#[tokio::test]
async fn strict_typ_refuses_plain_jwt() {
    let f = fixture("typ");
    let token = f.key.sign_typ(
        "JWT",
        &serde_json::json!({ "iss": ISS, "aud": AUDIENCE, "exp": NOW + 60, "sub": "x" }),
    );
    let now = NOW.to_string();
    let mut argv = base(&f);
    argv.extend(["--now", &now]);
    assert_eq!(run(&argv, &token).await.exit_code(), 0, "JWT is accepted");
    argv.push("--strict-typ");
    let verdict = run(&argv, &token).await;
    assert_eq!(verdict.exit_code(), 1, "--strict-typ requires at+jwt");
}

#[tokio::test]
async fn algorithms_restrict_the_usable_keys() {
    let f = fixture("algs");
    let mut argv = base(&f);
    argv.push("--algorithms=ES256,RS256");
    // The only key is EdDSA: the configuration itself is unusable (exit 2).
    let e = verify::verify(&args(&argv), "x.y.z")
        .await
        .expect_err("no usable key");
    assert!(e.to_string().contains("no usable signing key"), "{e}");
}

#[tokio::test]
async fn discovers_keys_from_the_issuer() {
    let key = TestKey::new("disc");
    let issuer = common::spawn_issuer(key.jwks()).await;
    let token = key.token(&issuer, common::unix_now(), "a b");
    let argv = ["--issuer", issuer.as_str(), "--audience", AUDIENCE];
    let verdict = run(&argv, &token).await;
    assert_eq!(verdict.exit_code(), 0, "{}", verdict.render(&token, false));
}

#[tokio::test]
async fn usage_errors_are_reported_not_verdicts() {
    let f = fixture("usage");
    // No audience: the library's BuildError.
    let a = args(&["--issuer", ISS, "--jwks-file", &f.jwks_path]);
    let e = verify::verify(&a, "x.y.z").await.expect_err("no audience");
    assert!(e.to_string().contains("audience"), "{e}");
    // An unreadable file.
    let a = args(&[
        "--issuer",
        ISS,
        "--jwks-file",
        "/nonexistent/jwks.json",
        "--audience",
        AUDIENCE,
    ]);
    let e = verify::verify(&a, "x.y.z").await.expect_err("missing file");
    assert!(e.to_string().contains("/nonexistent/jwks.json"), "{e}");
    // An invalid scope would make RequireScope panic: refused first.
    let a = args(&["--issuer", ISS, "--audience", AUDIENCE, "--scope", "a\"b"]);
    assert!(verify::verify(&a, "x.y.z").await.is_err());
    // An unknown algorithm is a parse error.
    assert!(
        Cli::try_parse_from([
            "bearer-guard",
            "verify",
            "--issuer",
            ISS,
            "--algorithms",
            "XX1"
        ])
        .is_err()
    );
}

#[test]
fn reads_the_token_from_stdin_without_bearer_prefix() {
    let a = args(&["--issuer", ISS, "--audience", AUDIENCE]);
    let token = a.read_token(&b"  Bearer abc.def.ghi\n"[..]).expect("token");
    assert_eq!(token, "abc.def.ghi");
    let a = args(&["--issuer", ISS, "--audience", AUDIENCE, "-"]);
    assert!(
        a.read_token(&b"   \n"[..]).is_err(),
        "empty stdin is a usage error"
    );
    let a = args(&["--issuer", ISS, "--audience", AUDIENCE, "Bearer t.o.k"]);
    assert_eq!(a.read_token(&b"ignored"[..]).expect("token"), "t.o.k");
}

/// The real binary: exit statuses 0/1/2, `--json`, and the token on stdin.
#[test]
fn binary_exit_statuses_and_json() {
    let f = fixture("binary");
    let token = f.key.token(ISS, NOW, "orders:read");
    let run_bin = |extra: &[&str], stdin: &str| {
        let mut child = Command::new(env!("CARGO_BIN_EXE_bearer-guard"))
            .arg("verify")
            .args(base(&f))
            .args(extra)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(stdin.as_bytes())
            .expect("write stdin");
        child.wait_with_output().expect("wait")
    };
    let now = (NOW + 1).to_string();

    let ok = run_bin(&["--now", &now, "--json"], &format!("Bearer {token}\n"));
    assert_eq!(ok.status.code(), Some(0));
    let json: Value = serde_json::from_slice(&ok.stdout).expect("json");
    assert_eq!(json["valid"], true);
    assert_eq!(json["claims"]["sub"], "alice");

    let late = (NOW + 7200).to_string();
    let rejected = run_bin(&["--now", &late, "--json", &token], "");
    assert_eq!(rejected.status.code(), Some(1));
    let json: Value = serde_json::from_slice(&rejected.stdout).expect("json");
    assert_eq!(json["error"], "invalid_token");
    assert_eq!(json["reason"], "expired");

    let usage = run_bin(&["--leeway", "soon", &token], "");
    assert_eq!(usage.status.code(), Some(2));
    let empty = run_bin(&[], "");
    assert_eq!(empty.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&empty.stderr).contains("no token"));
}

/// A character that would drive a terminal or mislead a reader if printed raw.
fn is_unsafe(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{061c}' | '\u{200b}'..='\u{200f}' | '\u{2028}'..='\u{202e}' | '\u{2060}'..='\u{2069}' | '\u{feff}')
}

fn assert_printable(what: &str, output: &str) {
    let bad: Vec<char> = output
        .chars()
        .filter(|c| *c != '\n' && is_unsafe(*c))
        .collect();
    assert!(bad.is_empty(), "{what}: raw {bad:?} in {output:?}");
}

#[tokio::test]
async fn verify_escapes_terminal_controls_in_everything_it_prints() {
    const NASTY: &str =
        "a\u{1b}]0;pwned\u{7}\u{1b}[2J\r\u{7f}\u{9b}31m\u{202e}\u{2028}\u{2066}\u{200b}z";
    let key = TestKey::new("k\u{1b}[31m\u{202e}1");
    let dir = tempdir::Dir::new("escape");
    let jwks_path = dir.0.join("jwks.json");
    std::fs::write(&jwks_path, key.jwks()).expect("write jwks");
    let jwks_path = jwks_path.to_string_lossy().into_owned();
    let now = NOW.to_string();
    let argv = [
        "--issuer",
        ISS,
        "--jwks-file",
        &jwks_path,
        "--audience",
        AUDIENCE,
        "--now",
        &now,
    ];
    let valid = key.sign(&serde_json::json!({
        "iss": ISS, "aud": AUDIENCE, "exp": NOW + 60, "sub": NASTY,
        "scp": ["orders:read", "x\u{1b}[5mblink"], NASTY: "as a key too",
    }));
    let verdict = run(&argv, &valid).await;
    assert_eq!(verdict.exit_code(), 0, "{}", verdict.render(&valid, false));
    let text = verdict.render(&valid, false);
    assert_printable("valid, text", &text);
    assert!(text.contains("kid:    k\\u001b[31m\\u202e1"), "{text}");
    assert!(text.contains("x\\u001b[5mblink"), "scopes: {text}");
    assert!(text.contains("\\u009b31m\\u202e\\u2028"), "claims: {text}");
    let json_text = verdict.render(&valid, true);
    assert_printable("valid, --json", &json_text);
    let json: Value = serde_json::from_str(&json_text).expect("json");
    assert_eq!(
        json["claims"]["sub"], NASTY,
        "--json carries the exact value"
    );
    assert_eq!(json["claims"][NASTY], "as a key too");
    assert_eq!(json["header"]["kid"], key.kid.as_str());

    // Rejections: the detail names token values (iss, a claim's type error).
    for claims in [
        serde_json::json!({ "iss": NASTY, "aud": AUDIENCE, "exp": NOW + 60 }),
        serde_json::json!({ "iss": ISS, "aud": AUDIENCE, "exp": NASTY }),
        serde_json::json!({ "iss": ISS, "aud": NASTY, "exp": NOW + 60 }),
    ] {
        let token = key.sign(&claims);
        let verdict = run(&argv, &token).await;
        assert_eq!(verdict.exit_code(), 1);
        assert_printable("rejected, text", &verdict.render(&token, false));
        let json_text = verdict.render(&token, true);
        assert_printable("rejected, --json", &json_text);
        serde_json::from_str::<Value>(&json_text).expect("still JSON");
    }

    // The binary writes the same escaped bytes.
    let out = Command::new(env!("CARGO_BIN_EXE_bearer-guard"))
        .arg("verify")
        .args(argv)
        .arg(&valid)
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(0));
    assert_printable("binary", &String::from_utf8_lossy(&out.stdout));
}
