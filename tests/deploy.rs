//! The example deployment files in `deploy/`: the systemd unit passes
//! `systemd-analyze verify` (with `ExecStart` pointed at the built binary, since
//! the unit's `/usr/local/bin` path is not installed here). Skipped, saying so,
//! where systemd-analyze is not installed. The Containerfile is not built by
//! any test (no container engine in CI).
#![cfg(feature = "cli")]

use std::process::Command;

#[test]
fn the_systemd_unit_passes_systemd_analyze_verify() {
    let Ok(version) = Command::new("systemd-analyze").arg("--version").output() else {
        eprintln!("skipped: systemd-analyze is not installed");
        return;
    };
    assert!(version.status.success());
    let unit = include_str!("../deploy/bearer-guard-gateway.service");
    assert!(unit.contains("ExecReload=/bin/kill -HUP $MAINPID"));
    assert!(unit.contains("RestartPreventExitStatus=2"));
    let unit = unit.replace(
        "/usr/local/bin/bearer-guard",
        env!("CARGO_BIN_EXE_bearer-guard"),
    );
    let dir = std::env::temp_dir().join(format!("bg-unit-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let path = dir.join("bearer-guard-gateway.service");
    std::fs::write(&path, unit).expect("write unit");
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .expect("runs");
    let _ = std::fs::remove_dir_all(&dir);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    // verify reports unit problems as warnings on stderr, with status 0.
    let about_unit: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("bearer-guard-gateway.service"))
        .collect();
    assert!(about_unit.is_empty(), "{stderr}");
}
