//! `tacit-server audit ...` on the real binary, against a running server's database: the
//! audited actions land in the log, `verify` names the first entry broken by an edit, a
//! deletion, an insertion or a reordering done directly in SQL, a kept checkpoint reveals
//! a truncation, and the export round-trips and holds no credential, token or message byte.

// Test helpers outside #[test] functions unwrap too.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::process::{Command, Output};

use reqwest::Method;
use tacit_api::*;
use tacit_server::audit::chain::{Head, verify};
use tacit_server::audit::export::Record;
use tacit_server::audit::{Action, Entry, Event, Outcome};
use tacit_tests::*;

/// The real binary on this data directory and database.
struct Host {
    data: PathBuf,
    url: String,
    backend: Backend,
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

    /// Runs a command that must succeed; its stdout.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// `audit verify` with these extra arguments: `Ok(summary)` or `Err(message)`.
    fn verify(&self, extra: &[&str]) -> Result<String, String> {
        let mut args = vec!["audit", "verify"];
        args.extend_from_slice(extra);
        let out = self.run(&args);
        let stdout = String::from_utf8(out.stdout).unwrap();
        let stderr = String::from_utf8(out.stderr).unwrap();
        if out.status.success() {
            assert!(stderr.is_empty(), "{stderr}");
            Ok(stdout)
        } else {
            assert_eq!(out.status.code(), Some(1), "{stderr}");
            assert!(stdout.is_empty(), "{stdout}");
            Err(stderr)
        }
    }

    /// Runs SQL statements on the database, directly (as someone who can write it).
    async fn sql(&self, statements: &[String]) {
        use sqlx::Connection as _;
        match self.backend {
            Backend::Sqlite => {
                let mut c = sqlx::SqliteConnection::connect(&self.url).await.unwrap();
                for s in statements {
                    sqlx::query(s).execute(&mut c).await.unwrap();
                }
                c.close().await.unwrap();
            }
            Backend::Postgres => {
                let mut c = sqlx::PgConnection::connect(&self.url).await.unwrap();
                for s in statements {
                    sqlx::query(s).execute(&mut c).await.unwrap();
                }
                c.close().await.unwrap();
            }
        }
    }

    /// A bytes literal in this backend's SQL.
    fn bytes(&self, bytes: &[u8]) -> String {
        match self.backend {
            Backend::Sqlite => format!("X'{}'", hex::encode(bytes)),
            Backend::Postgres => format!("decode('{}', 'hex')", hex::encode(bytes)),
        }
    }

    /// Every entry, read back from `audit export`.
    fn export(&self, extra: &[&str]) -> (String, Vec<Entry>) {
        let mut args = vec!["audit", "export", "--format", "jsonl"];
        args.extend_from_slice(extra);
        let text = self.ok(&args);
        let entries = text
            .lines()
            .map(|line| Record::from_line(line).unwrap().entry().unwrap())
            .collect();
        (text, entries)
    }

    /// Saves the log (rows and head), to put it back after each tampering.
    async fn save(&self) {
        self.sql(&[
            "DROP TABLE IF EXISTS saved_log".into(),
            "DROP TABLE IF EXISTS saved_head".into(),
            "DROP TABLE IF EXISTS saved_checkpoints".into(),
            "CREATE TABLE saved_log AS SELECT * FROM audit_log".into(),
            "CREATE TABLE saved_head AS SELECT * FROM audit_head".into(),
            "CREATE TABLE saved_checkpoints AS SELECT * FROM audit_checkpoints".into(),
        ])
        .await;
    }

    async fn restore(&self) {
        self.sql(&[
            "DELETE FROM audit_log".into(),
            "INSERT INTO audit_log SELECT * FROM saved_log".into(),
            "DELETE FROM audit_head".into(),
            "INSERT INTO audit_head SELECT * FROM saved_head".into(),
            "DELETE FROM audit_checkpoints".into(),
            "INSERT INTO audit_checkpoints SELECT * FROM saved_checkpoints".into(),
        ])
        .await;
        assert!(self.verify(&[]).is_ok());
    }
}

fn contains(haystack: &str, needle: &[u8]) -> bool {
    haystack
        .as_bytes()
        .windows(needle.len())
        .any(|window| window == needle)
}

async fn audit_cli(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let db = match backend {
        Backend::Sqlite => None,
        Backend::Postgres => Some(TestDatabase::create_or_panic().await),
    };
    let data = dir.path().join("data");
    let url = match &db {
        Some(db) => db.url.clone(),
        None => format!("sqlite://{}", data.join("tacit.db").display()),
    };
    let host = Host {
        data: data.clone(),
        url: url.clone(),
        backend,
    };

    // An empty log verifies.
    let summary = host.verify(&[]).unwrap();
    assert!(
        summary.starts_with("audit log verified: 0 entries, head "),
        "{summary}"
    );

    // Invites on the host, then registrations, a device added and removed, and a message,
    // through the running server.
    let invites: Vec<String> = (0..2)
        .map(|_| host.ok(&["invite", "create"]).trim().to_owned())
        .collect();
    let server = ServerProcess::launch(&data, &url, &dir.path().join("server.log")).spawn();
    let anon = server.client(None);
    let mut clients = Vec::new();
    let mut secrets: Vec<String> = Vec::new();
    for (name, invite) in ["alice", "bob"].iter().zip(&invites) {
        let (_, r): (_, RegisterResponse) = anon
            .call(
                Method::POST,
                "/v1/accounts",
                Some(&RegisterRequest {
                    username: (*name).into(),
                    invite: Some(invite.clone()),
                    id_token: None,
                    device_name: None,
                    keys: keys(1, 0),
                }),
            )
            .await
            .unwrap();
        secrets.push(r.credential.to_string());
        secrets.push(hex::encode(r.credential.secret));
        clients.push(server.client(Some(&r.credential)));
    }
    let alice = &clients[0];
    let (_, added): (_, AddDeviceResponse) = alice
        .call(
            Method::POST,
            "/v1/devices",
            Some(&AddDeviceRequest {
                device_name: Some("phone".into()),
                keys: keys(1, 0),
            }),
        )
        .await
        .unwrap();
    secrets.push(added.credential.to_string());
    let marker = b"TACIT-AUDIT-MARKER-9d2f";
    alice
        .send("m1", "bob", &[(1, marker)], &[(added.device_id.0, marker)])
        .await
        .unwrap();
    alice
        .call_empty::<()>(
            Method::DELETE,
            &format!("/v1/devices/{}", added.device_id.0),
            None,
        )
        .await
        .unwrap();

    // A checkpoint signed while the server runs, kept outside.
    let public_key = host.ok(&["audit", "public-key"]);
    assert_eq!(public_key.trim().len(), 64);
    let checkpoint = host.ok(&["audit", "checkpoint"]);
    let kept = dir.path().join("kept-checkpoints.jsonl");
    std::fs::write(&kept, &checkpoint).unwrap();
    let kept_arg = kept.to_str().unwrap();
    let signed: serde_json::Value = serde_json::from_str(checkpoint.trim()).unwrap();
    assert_eq!(signed["seq"], 6, "{checkpoint}");
    assert_eq!(signed["public_key"], public_key.trim());

    // Verified, with the checkpoint, under the key file or the public key given.
    let summary = host.verify(&["--checkpoint", kept_arg]).unwrap();
    assert!(
        summary.starts_with("audit log verified: 7 entries, head "),
        "{summary}"
    );
    host.verify(&["--checkpoint", kept_arg, "--public-key", public_key.trim()])
        .unwrap();
    let other = "ab".repeat(32);
    let refused = host.verify(&["--checkpoint", kept_arg, "--public-key", &other]);
    assert!(refused.is_err());

    // The export: what happened, in order, re-verifiable, and nothing secret.
    let (text, entries) = host.export(&[]);
    let actions: Vec<&str> = entries.iter().map(|e| e.action.as_str()).collect();
    assert_eq!(
        actions,
        [
            "invite-create",
            "invite-create",
            "account-register",
            "account-register",
            "device-add",
            "device-remove",
            "audit-checkpoint"
        ]
    );
    assert_eq!(
        entries[0].details.get("via").map(String::as_str),
        Some("host")
    );
    assert_eq!(entries[2].target_user.as_deref(), Some("alice"));
    assert_eq!(entries[2].source_ip.as_deref(), Some("127.0.0.1"));
    assert_eq!(entries[5].target_device, Some(added.device_id.0));
    let head = verify(&entries, vec![]).unwrap();
    assert_eq!(head.seq, 7);
    assert!(summary.contains(&head.hash.to_string()), "{summary}");
    assert!(
        !contains(&text, marker),
        "the message marker is in the export"
    );
    for secret in invites.iter().chain(&secrets) {
        assert!(
            !contains(&text, secret.as_bytes()),
            "a secret is in the export"
        );
    }
    // The export was itself recorded (after what it exported).
    let (_, again) = host.export(&["--since", "8"]);
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].action, "audit-export");
    assert_eq!(again[0].details.get("count").map(String::as_str), Some("7"));
    assert_eq!(host.export(&["--since", "3"]).1[0].seq, 3);
    assert!(
        host.export(&["--since", "2999-01-01T00:00:00Z"])
            .1
            .is_empty()
    );
    // Each export above appended its own entry: 8 to 11 now.
    assert_eq!(
        host.export(&["--since", "2000-01-01T00:00:00Z"]).1.len(),
        11
    );
    assert!(
        !host
            .run(&["audit", "export", "--since", "yesterday"])
            .status
            .success()
    );

    let (_, entries) = host.export(&[]);
    let n = entries.len();
    assert_eq!(n, 12);
    host.save().await;

    // Edited: a field rewritten in place.
    host.sql(&["UPDATE audit_log SET actor = 'mallory' WHERE seq = 3".into()])
        .await;
    let broken = host.verify(&[]).unwrap_err();
    assert!(
        broken.contains("audit entry 3: its contents do not match"),
        "{broken}"
    );
    host.restore().await;

    // Edited into something no append writes.
    host.sql(&["UPDATE audit_log SET details = 'not json' WHERE seq = 4".into()])
        .await;
    let broken = host.verify(&[]).unwrap_err();
    assert!(broken.contains("audit entry 4: its details"), "{broken}");
    host.restore().await;

    // Deleted.
    host.sql(&["DELETE FROM audit_log WHERE seq = 4".into()])
        .await;
    let broken = host.verify(&[]).unwrap_err();
    assert!(
        broken.contains("audit entry 4: it is missing (deleted)"),
        "{broken}"
    );
    host.restore().await;

    // Inserted: a well-formed forged entry at 3, the later ones moved up by one.
    let forged = Head::of(&entries[1]).next(
        &Event::new(Action::AccountRegister, Outcome::Success).target("mallory"),
        entries[2].time_ms,
    );
    host.sql(&[
        "UPDATE audit_log SET seq = seq + 1000 WHERE seq >= 3".into(),
        "UPDATE audit_log SET seq = seq - 999 WHERE seq >= 1003".into(),
        format!(
            "INSERT INTO audit_log (seq, time_ms, action, outcome, actor, target_user, \
             target_device, source_ip, details, prev_hash, hash) \
             VALUES (3, {}, 'account-register', 'success', NULL, 'mallory', NULL, NULL, '{{}}', {}, {})",
            forged.time_ms,
            host.bytes(&forged.prev_hash.0),
            host.bytes(&forged.hash.0)
        ),
    ])
    .await;
    let broken = host.verify(&[]).unwrap_err();
    assert!(
        broken.contains("audit entry 4: its contents do not match"),
        "{broken}"
    );
    host.restore().await;

    // Reordered: two rows' numbers swapped.
    host.sql(&[
        "UPDATE audit_log SET seq = 0 - 1 WHERE seq = 3".into(),
        "UPDATE audit_log SET seq = 3 WHERE seq = 4".into(),
        "UPDATE audit_log SET seq = 4 WHERE seq = 0 - 1".into(),
    ])
    .await;
    let broken = host.verify(&[]).unwrap_err();
    assert!(
        broken.contains("audit entry 3: its contents do not match"),
        "{broken}"
    );
    host.restore().await;

    // Truncated: the last rows deleted. The head the database records shows it...
    host.sql(&["DELETE FROM audit_log WHERE seq >= 5".into()])
        .await;
    let broken = host.verify(&[]).unwrap_err();
    assert!(broken.contains("audit entry 5: it is missing"), "{broken}");
    assert!(broken.contains("truncated"), "{broken}");
    // ... and when the head and the stored checkpoints are rewritten too, only the kept
    // checkpoint does.
    host.sql(&[
        format!(
            "UPDATE audit_head SET seq = 4, hash = {}",
            host.bytes(&entries[3].hash.0)
        ),
        "DELETE FROM audit_checkpoints".into(),
    ])
    .await;
    assert!(
        host.verify(&[]).is_ok(),
        "without a kept checkpoint it looks whole"
    );
    let broken = host.verify(&["--checkpoint", kept_arg]).unwrap_err();
    assert_eq!(
        broken.trim(),
        "audit log is broken: audit entry 5: it is missing: the log ends at entry 4 but a \
         signed checkpoint covers it (truncated)"
    );
    host.restore().await;

    // An action whose entry cannot be appended is not committed either: with the head row
    // gone, a registration fails whole (its invite stays unused, its name free).
    let invite = host.ok(&["invite", "create"]).trim().to_owned();
    host.save().await;
    host.sql(&["DELETE FROM audit_head".into()]).await;
    let register = RegisterRequest {
        username: "carol".into(),
        invite: Some(invite),
        id_token: None,
        device_name: None,
        keys: keys(1, 0),
    };
    let refused = anon
        .call::<_, RegisterResponse>(Method::POST, "/v1/accounts", Some(&register))
        .await;
    assert!(refused.is_err());
    host.restore().await;
    // The server kept appending all along: with the head back, the same registration
    // succeeds, and the log still verifies.
    let (_, _carol): (_, RegisterResponse) = anon
        .call(Method::POST, "/v1/accounts", Some(&register))
        .await
        .unwrap();
    let summary = host.verify(&["--checkpoint", kept_arg]).unwrap();
    // The last export's entry, an invite and a registration.
    let expected = format!("audit log verified: {} entries", n + 3);
    assert!(summary.starts_with(&expected), "{summary}");
    drop(server);
}

both!(audit_cli);

/// The binary refuses an unknown export format, and `verify` of a checkpoint file that is
/// not one fails without claiming the log is broken.
#[test]
fn bad_arguments_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let host = Host {
        data: dir.path().to_owned(),
        url: format!("sqlite://{}", dir.path().join("tacit.db").display()),
        backend: Backend::Sqlite,
    };
    assert!(
        !host
            .run(&["audit", "export", "--format", "csv"])
            .status
            .success()
    );
    let bad = dir.path().join("bad.jsonl");
    std::fs::write(&bad, "{\"seq\":1}\n").unwrap();
    let out = host.run(&["audit", "verify", "--checkpoint", bad.to_str().unwrap()]);
    assert!(!out.status.success());
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(stderr.contains("checkpoint"), "{stderr}");
    assert!(!stderr.contains("audit log is broken"), "{stderr}");
}
