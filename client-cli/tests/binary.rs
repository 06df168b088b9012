//! The `tacit` binary itself answers (the cross-process tests in `tests/` drive it; this
//! file also makes `cargo test --workspace` build it before they run).

#![allow(clippy::unwrap_used)] // a test: a panic is a failure

use std::process::Command;

fn tacit(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_tacit"))
        .args(args)
        .env_remove("TACIT_HOME")
        .output()
        .unwrap()
}

#[test]
fn the_binary_prints_its_version_and_commands() {
    let out = tacit(&["--version"]);
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("tacit {}", env!("CARGO_PKG_VERSION"))
    );
    let out = tacit(&["--help"]);
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for command in ["register", "send", "recv", "device", "group"] {
        assert!(help.contains(command), "{help}");
    }
    let out = tacit(&["no-such-command"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("Usage"));
}
