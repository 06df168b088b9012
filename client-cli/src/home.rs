//! The home directory: the one place that knows its files.
//!
//! A home holds `config.json` (the server and how to trust it), `store.db` (the account's
//! store, sealed under the passphrase, with SQLite's `store.db-wal` and `store.db-shm`),
//! `store.db.lock` (the SDK's single-writer lock, taken while the store is open) and
//! `files/` (where received files are saved unless `--out` says otherwise). Every path
//! inside the home is built here.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};
use tacit_sdk::{Client, KeySource, Transport, Trust};

/// What the home directory records besides the encrypted store.
#[derive(Serialize, Deserialize)]
pub(crate) struct HomeConfig {
    server: String,
    #[serde(default)]
    pin: Option<String>,
    #[serde(default)]
    ca_file: Option<PathBuf>,
}

impl HomeConfig {
    /// The configuration of a new account on `server`, trusted by `pin`, `ca_file` or else
    /// the system's roots.
    pub(crate) fn new(server: String, pin: Option<String>, ca_file: Option<PathBuf>) -> Self {
        Self {
            server,
            pin,
            ca_file,
        }
    }

    fn trust(&self) -> Result<Trust> {
        Ok(match (&self.pin, &self.ca_file) {
            (Some(pin), _) => Trust::pin_from_hex(pin)
                .with_context(|| format!("--pin {pin}: expected 64 hex digits (SHA-256)"))?,
            (None, Some(path)) => Trust::CaFile(path.clone()),
            (None, None) => Trust::SystemRoots,
        })
    }
}

/// A new account's home, ready for `Client::register` or `Client::finish_link`: the
/// directory exists and holds no account yet.
pub(crate) struct NewHome {
    /// The transport to the configured server.
    pub(crate) transport: Transport,
    /// The passphrase the new store is sealed under.
    pub(crate) passphrase: String,
}

/// An account's home directory (`--home`, `TACIT_HOME`, or `~/.tacit`).
pub(crate) struct Home {
    dir: PathBuf,
}

/// The files of the store, removed with the account.
const STORE_FILES: [&str; 3] = ["store.db", "store.db-wal", "store.db-shm"];

impl Home {
    /// The home `--home` or `TACIT_HOME` names, or else `$HOME/.tacit`.
    pub(crate) fn locate(cli_home: Option<PathBuf>) -> Result<Self> {
        if let Some(dir) = cli_home {
            return Ok(Self { dir });
        }
        let user_home = std::env::var_os("HOME").context("no --home, TACIT_HOME or HOME set")?;
        Ok(Self {
            dir: PathBuf::from(user_home).join(".tacit"),
        })
    }

    /// The directory itself (for messages).
    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    fn config_path(&self) -> PathBuf {
        self.dir.join("config.json")
    }

    /// The account's store (its lock, `store.db.lock`, is the SDK's).
    pub(crate) fn store_path(&self) -> PathBuf {
        self.dir.join(STORE_FILES[0])
    }

    /// Where received files are saved by default.
    pub(crate) fn files_dir(&self) -> PathBuf {
        self.dir.join("files")
    }

    /// Opens the account: reads the configuration, asks for the passphrase, opens the store
    /// (taking its lock) and connects the transport to the configured server.
    pub(crate) async fn open(&self) -> Result<Client> {
        let config_path = self.config_path();
        let text = std::fs::read_to_string(&config_path).with_context(|| {
            format!(
                "no account in {} (run `tacit register` first)",
                self.dir.display()
            )
        })?;
        let config: HomeConfig = serde_json::from_str(&text)
            .with_context(|| format!("{} is not valid", config_path.display()))?;
        let trust = config.trust()?;
        let passphrase = passphrase()?;
        let client = Client::open(
            &self.store_path(),
            KeySource::Passphrase(&passphrase),
            |server| Transport::new(server, &trust),
        )
        .await?;
        Ok(client)
    }

    /// Prepares the home for a new account under `config` (before `register` or `device
    /// link`): checks the trust settings and the server address, refuses a home that holds
    /// an account already, creates the directory and asks for the passphrase, in that order.
    /// The configuration is written by [`Home::write_config`] once the account exists.
    pub(crate) fn prepare(&self, config: &HomeConfig) -> Result<NewHome> {
        let trust = config.trust()?;
        let transport = Transport::new(&config.server, &trust)?;
        if self.config_path().exists() {
            bail!("{} already holds an account", self.dir.display());
        }
        std::fs::create_dir_all(&self.dir)
            .with_context(|| format!("creating {}", self.dir.display()))?;
        let passphrase = passphrase()?;
        Ok(NewHome {
            transport,
            passphrase,
        })
    }

    /// Records `config`, once the new account's store exists: a home has a `config.json`
    /// only when it holds an account.
    pub(crate) fn write_config(&self, config: &HomeConfig) -> Result<()> {
        let json = serde_json::to_string_pretty(config)?;
        std::fs::write(self.config_path(), json + "\n")
            .with_context(|| format!("writing {}", self.dir.display()))
    }

    /// Removes the account's files: the store and the configuration (received files stay).
    pub(crate) fn remove_account(&self) -> Result<()> {
        let paths = STORE_FILES.iter().map(|file| self.dir.join(file));
        for path in paths.chain([self.config_path()]) {
            if path.exists() {
                std::fs::remove_file(&path)
                    .with_context(|| format!("removing {}", path.display()))?;
            }
        }
        Ok(())
    }
}

/// The store passphrase: `TACIT_PASSPHRASE`, or else asked on the terminal.
fn passphrase() -> Result<String> {
    if let Ok(passphrase) = std::env::var("TACIT_PASSPHRASE") {
        return Ok(passphrase);
    }
    rpassword::prompt_password("Store passphrase: ").context("reading the passphrase")
}
