//! Administration through both CLIs, end to end: `tacit-server admin ...` on the server
//! host and `tacit admin ...` on an admin's (and an auditor's, and a member's) own device,
//! against the real server binary, on SQLite and on PostgreSQL.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test: a panic is a failure

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use tacit_server::audit::Entry;
use tacit_server::audit::export::Record;
use tacit_tests::cli::{fails, ok, tacit};
use tacit_tests::{ServerProcess, TestDatabase, binary};

/// `tacit-server` on the server host: the running server's data directory and database.
struct Host {
    data: PathBuf,
    url: String,
}

impl Host {
    fn run(&self, args: &[&str]) -> Output {
        Command::new(binary("tacit-server").unwrap())
            .args(args)
            .arg("--data-dir")
            .arg(&self.data)
            .arg("--database-url")
            .arg(&self.url)
            .env("TACIT_LOG_LEVEL", "warn")
            .output()
            .unwrap()
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "tacit-server {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    fn invite(&self) -> String {
        self.ok(&["admin", "invite", "create"]).trim().to_owned()
    }
}

/// The texts among what `tacit recv --json` printed.
fn texts(home: &Path) -> Vec<String> {
    tacit_tests::cli::CLI
        .recv(home, 5)
        .iter()
        .filter(|e| e["kind"] == "text")
        .map(|e| e["text"].as_str().unwrap().to_owned())
        .collect()
}

/// Runs `tacit` until it fails (for up to `within`); its stderr, or `None` if it never did.
fn fails_within(home: &Path, args: &[&str], within: Duration) -> Option<String> {
    let start = Instant::now();
    loop {
        let out = tacit(home, args);
        if !out.status.success() {
            return Some(String::from_utf8(out.stderr).unwrap());
        }
        if start.elapsed() > within {
            return None;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Runs `args` until it succeeds, for at most `within`; the last error if it never does.
fn succeeds_within(home: &Path, args: &[&str], within: Duration) -> Result<(), String> {
    let start = Instant::now();
    loop {
        let out = tacit(home, args);
        if out.status.success() {
            return Ok(());
        }
        if start.elapsed() > within {
            return Err(String::from_utf8(out.stderr).unwrap());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

const FORBIDDEN: &str = "this needs the admin role";
const DISABLED: &str = "this account is disabled by an administrator";

fn one_line(error: &str) {
    assert_eq!(error.trim().lines().count(), 1, "one line: {error}");
}

fn scenario(root: &Path, data: PathBuf, url: String) {
    let host = Host {
        data: data.clone(),
        url: url.clone(),
    };
    let server = ServerProcess::launch(&data, &url, &root.join("server.log")).spawn();
    let home = |name: &str| root.join(name);
    let (alice, bob, carol) = (home("alice"), home("bob"), home("carol"));
    for (name, dir) in [("alice", &alice), ("bob", &bob), ("carol", &carol)] {
        let invite = host.invite();
        ok(dir, &["register", &server.url(), name, "--invite", &invite]);
    }

    // Roles: alice admin (from the host), bob a member, carol an auditor.
    assert_eq!(
        host.ok(&["admin", "grant", "alice", "admin"]).trim(),
        "alice: admin granted"
    );
    let users = ok(&alice, &["admin", "users"]);
    for name in ["alice\t", "bob\t", "carol\t"] {
        assert!(users.lines().any(|l| l.starts_with(name)), "{users}");
    }
    assert!(users.contains("roles=admin"), "{users}");
    assert!(users.contains("  device 1\t"), "{users}");
    let json: serde_json::Value =
        serde_json::from_str(&ok(&alice, &["admin", "users", "--json"])).unwrap();
    let listed: Vec<&str> = json["users"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["username"].as_str().unwrap())
        .collect();
    assert_eq!(listed, ["alice", "bob", "carol"]);
    assert_eq!(json["users"][1]["devices"].as_array().unwrap().len(), 1);
    let found = ok(&alice, &["admin", "users", "--search", "ob"]);
    assert_eq!(found.lines().filter(|l| !l.starts_with(' ')).count(), 1);
    assert!(found.starts_with("bob\t"), "{found}");
    let bob_json: serde_json::Value =
        serde_json::from_str(&ok(&alice, &["admin", "user", "bob", "--json"])).unwrap();
    assert_eq!(bob_json["username"], "bob");
    assert!(
        fails(&alice, &["admin", "user", "nobody"]).contains("no user nobody"),
        "an unknown user is named"
    );

    let refused = fails(&bob, &["admin", "users"]);
    assert!(refused.contains(FORBIDDEN), "{refused}");
    one_line(&refused);
    assert!(fails(&bob, &["admin", "disable", "alice"]).contains(FORBIDDEN));
    assert!(fails(&bob, &["admin", "audit"]).contains("auditor or admin role"));

    host.ok(&["admin", "grant", "carol", "auditor"]);
    let audit = ok(&carol, &["admin", "audit"]);
    let records: Vec<serde_json::Value> = audit
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(
        records
            .iter()
            .any(|r| r["event"]["action"] == "role-grant" && r["user"]["target"]["name"] == "carol"),
        "{audit}"
    );
    let page = ok(&carol, &["admin", "audit", "--after", "2", "--limit", "3"]);
    let seqs: Vec<u64> = page
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["event"]["sequence"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert_eq!(seqs, [3, 4, 5], "{page}");
    let refused = fails(&carol, &["admin", "users"]);
    assert!(refused.contains(FORBIDDEN), "{refused}");

    // A conversation, so that alice has bob pinned.
    ok(&alice, &["send", "bob", "hello bob"]);
    assert_eq!(texts(&bob), ["hello bob"]);

    // Disabled and enabled from alice's device.
    assert_eq!(
        ok(&alice, &["admin", "disable", "bob"]).trim(),
        "bob: disabled"
    );
    let refused = fails(&bob, &["recv"]);
    assert!(refused.contains(DISABLED), "{refused}");
    one_line(&refused);
    assert!(fails(&bob, &["device", "list"]).contains(DISABLED));
    assert!(ok(&alice, &["admin", "user", "bob"]).contains("disabled="));
    assert_eq!(
        ok(&alice, &["admin", "enable", "bob"]).trim(),
        "bob: enabled"
    );
    ok(&bob, &["device", "list"]);

    // Disabled on the host while the server runs: refused within about a second.
    ok(&bob, &["device", "list"]);
    assert_eq!(
        host.ok(&["admin", "disable", "bob"]).trim(),
        "bob: disabled"
    );
    let refused = fails_within(&bob, &["device", "list"], Duration::from_secs(2))
        .expect("bob still works 2 s after the host disabled him");
    assert!(refused.contains(DISABLED), "{refused}");
    // Enabled on the host: the running server learns it from the revocations it polls
    // (every 250 ms), so it takes effect within about a second, not at once.
    host.ok(&["admin", "enable", "bob"]);
    if let Err(error) = succeeds_within(&bob, &["device", "list"], Duration::from_secs(2)) {
        panic!("bob still refused 2 s after the host enabled him: {error}");
    }

    // An invite for two.
    let token = ok(&alice, &["admin", "invite", "create", "--max-uses", "2"])
        .trim()
        .to_owned();
    assert_eq!(token.lines().count(), 1);
    for name in ["dave", "erin"] {
        ok(
            &home(name),
            &["register", &server.url(), name, "--invite", &token],
        );
    }
    let third = fails(
        &home("frank"),
        &["register", &server.url(), "frank", "--invite", &token],
    );
    assert!(third.contains("invite"), "{third}");
    let invites = ok(&alice, &["admin", "invite", "list"]);
    assert!(invites.contains("uses=2/2"), "{invites}");
    let revocable = ok(&alice, &["admin", "invite", "create"]).trim().to_owned();
    let listed = ok(&alice, &["admin", "invite", "list"]);
    let id = listed
        .lines()
        .find(|l| l.contains("uses=0/1") && !l.contains("revoked"))
        .and_then(|l| l.split('\t').next())
        .unwrap()
        .to_owned();
    assert_eq!(
        ok(&alice, &["admin", "invite", "revoke", &id]).trim(),
        format!("invite {id} revoked")
    );
    assert!(ok(&alice, &["admin", "invite", "list"]).contains("revoked"));
    assert!(
        fails(
            &home("frank"),
            &["register", &server.url(), "frank", "--invite", &revocable],
        )
        .contains("invite")
    );

    // Quota, and a role revoked and re-checked.
    assert_eq!(
        ok(&alice, &["admin", "quota", "dave", "--max-devices", "3"]).trim(),
        "dave: quota set"
    );
    let dave: serde_json::Value =
        serde_json::from_str(&ok(&alice, &["admin", "user", "dave", "--json"])).unwrap();
    assert_eq!(dave["max_devices"], 3);
    ok(&alice, &["admin", "grant", "dave", "admin"]);
    ok(&dave_home(root), &["admin", "users"]);
    ok(&alice, &["admin", "revoke", "dave", "admin"]);
    assert!(fails(&dave_home(root), &["admin", "users"]).contains(FORBIDDEN));
    assert!(fails(&alice, &["admin", "grant", "dave", "root"]).contains("no role"));

    // Deleted from alice's device: the name is free, the new bob has new keys.
    assert!(fails(&alice, &["admin", "delete", "bob"]).contains("--yes"));
    assert_eq!(
        ok(&alice, &["admin", "delete", "bob", "--yes"]).trim(),
        "bob: account deleted (the name can be registered again)"
    );
    assert!(fails(&bob, &["device", "list"]).contains("refused"));
    let new_bob = home("bob-again");
    let invite = host.invite();
    ok(
        &new_bob,
        &["register", &server.url(), "bob", "--invite", &invite],
    );
    let error = fails(&alice, &["send", "bob", "is that you?"]);
    assert!(error.contains("identity key has changed"), "{error}");
    one_line(&error);
    assert!(ok(&alice, &["trust", "bob"]).contains("accepted"));
    ok(&alice, &["send", "bob", "welcome back"]);
    assert_eq!(texts(&new_bob), ["welcome back"]);

    // The audit log: unbroken, and it holds what was done, by whom, and how.
    let summary = host.ok(&["audit", "verify"]);
    assert!(summary.starts_with("audit log verified: "), "{summary}");
    let export = host.ok(&["audit", "export", "--format", "jsonl"]);
    let raw: Vec<serde_json::Value> = export
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let entries: Vec<Entry> = export
        .lines()
        .map(|l| Record::from_line(l).unwrap().entry().unwrap())
        .collect();
    let find = |action: &str, target: &str, via_host: bool| -> usize {
        entries
            .iter()
            .position(|e| {
                e.action == action
                    && e.target_user.as_deref() == Some(target)
                    && (e.details.get("via").map(String::as_str) == Some("host")) == via_host
            })
            .unwrap_or_else(|| panic!("no {action} of {target} (host: {via_host}):\n{export}"))
    };
    let grant = find("role-grant", "alice", true);
    assert_eq!(
        entries[grant].details.get("role").map(String::as_str),
        Some("admin")
    );
    find("role-grant", "carol", true);
    let by_alice = find("role-grant", "dave", false);
    assert_eq!(entries[by_alice].actor.as_deref(), Some("alice"));
    assert_eq!(raw[by_alice]["user"]["name"], "alice");
    assert_eq!(raw[by_alice]["user"]["target"]["name"], "dave");
    for (action, via_host) in [
        ("user-disable", false),
        ("user-enable", false),
        ("user-disable", true),
        ("user-enable", true),
        ("account-delete", false),
    ] {
        let i = find(action, "bob", via_host);
        if !via_host {
            assert_eq!(raw[i]["user"]["name"], "alice", "{action}");
        }
        assert_eq!(raw[i]["user"]["target"]["name"], "bob", "{action}");
    }
    drop(server);
}

fn dave_home(root: &Path) -> PathBuf {
    root.join("dave")
}

#[test]
fn admin_through_both_clis_on_sqlite() {
    let root = tempfile::tempdir().unwrap();
    let data = root.path().join("server-data");
    std::fs::create_dir_all(&data).unwrap();
    let url = format!("sqlite://{}", data.join("tacit.db").display());
    scenario(root.path(), data, url);
}

#[tokio::test(flavor = "multi_thread")]
async fn admin_through_both_clis_on_postgres() {
    let db = TestDatabase::create_or_panic().await;
    let root = tempfile::tempdir().unwrap();
    let data = root.path().join("server-data");
    std::fs::create_dir_all(&data).unwrap();
    let url = db.url.clone();
    let root_path = root.path().to_owned();
    tokio::task::spawn_blocking(move || scenario(&root_path, data, url))
        .await
        .unwrap();
}
