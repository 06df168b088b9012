//! The `tacit` CLI as a child process, on a home directory of its own.

use std::path::Path;
use std::process::{Command, Output};

use crate::process::binary;

/// The passphrase of the homes the tests make (unless they choose another).
pub const PASSPHRASE: &str = "correct horse battery staple";

/// The `tacit` CLI with one passphrase (`TACIT_PASSPHRASE`). [`CLI`] uses [`PASSPHRASE`];
/// the free functions of this module use [`CLI`].
#[derive(Debug, Clone, Copy)]
pub struct Cli {
    passphrase: &'static str,
}

/// The CLI with [`PASSPHRASE`].
pub const CLI: Cli = Cli::new(PASSPHRASE);

impl Cli {
    /// The CLI with `passphrase`.
    pub const fn new(passphrase: &'static str) -> Self {
        Self { passphrase }
    }

    /// `tacit --home HOME`, with the passphrase in its environment, to add arguments to and
    /// run (for tests that talk to its stdin or read its output as it comes).
    pub fn command(&self, home: &Path) -> Command {
        let tacit = binary("tacit").unwrap_or_else(|e| panic!("{e}"));
        let mut command = Command::new(tacit);
        command
            .arg("--home")
            .arg(home)
            .env("TACIT_PASSPHRASE", self.passphrase);
        command
    }

    /// Runs `tacit --home HOME ARGS...` and returns its output.
    pub fn run(&self, home: &Path, args: &[&str]) -> Output {
        self.command(home).args(args).output().unwrap()
    }

    /// Runs `tacit`, insisting that it succeeded; returns stdout.
    pub fn ok(&self, home: &Path, args: &[&str]) -> String {
        let out = self.run(home, args);
        assert!(
            out.status.success(),
            "tacit {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Runs `tacit`, insisting that it failed; returns stderr.
    pub fn fails(&self, home: &Path, args: &[&str]) -> String {
        let out = self.run(home, args);
        assert!(
            !out.status.success(),
            "tacit {args:?} should have failed: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8(out.stderr).unwrap()
    }

    /// Everything `tacit recv --json --wait WAIT` printed, as JSON values.
    pub fn recv(&self, home: &Path, wait_secs: u32) -> Vec<serde_json::Value> {
        self.ok(home, &["recv", "--json", "--wait", &wait_secs.to_string()])
            .lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect()
    }
}

/// [`Cli::command`] with [`PASSPHRASE`].
pub fn command(home: &Path) -> Command {
    CLI.command(home)
}

/// [`Cli::run`] with [`PASSPHRASE`].
pub fn tacit(home: &Path, args: &[&str]) -> Output {
    CLI.run(home, args)
}

/// [`Cli::ok`] with [`PASSPHRASE`].
pub fn ok(home: &Path, args: &[&str]) -> String {
    CLI.ok(home, args)
}

/// [`Cli::fails`] with [`PASSPHRASE`].
pub fn fails(home: &Path, args: &[&str]) -> String {
    CLI.fails(home, args)
}

/// Links a new device in `new_home` (with `new`'s passphrase) to the account of
/// `existing` (with [`CLI`]'s) on `server`: the new device shows its code, the existing one
/// approves it. Returns what the new device printed.
pub fn link(existing: &Path, new: Cli, new_home: &Path, server: &str, name: &str) -> String {
    use std::io::{BufRead as _, Read as _};
    let mut link = new
        .command(new_home)
        .args([
            "device",
            "link",
            server,
            "--name",
            name,
            "--timeout",
            "60",
            "--yes",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = std::io::BufReader::new(link.stdout.take().unwrap());
    let mut first = String::new();
    stdout.read_line(&mut first).unwrap();
    let code = first
        .trim()
        .strip_prefix("link code: ")
        .unwrap_or_else(|| panic!("no link code in {first:?}"))
        .to_owned();
    ok(existing, &["device", "add", &code]);
    let status = link.wait().unwrap();
    let mut rest = String::new();
    stdout.read_to_string(&mut rest).unwrap();
    assert!(status.success(), "device link failed: {rest}");
    rest
}
