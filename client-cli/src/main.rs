//! `tacit`: the reference command-line client. A thin layer over `tacit-sdk`.
//!
//! The account lives in a home directory (`--home DIR` or `TACIT_HOME`, default
//! `~/.tacit`); the store passphrase comes from `TACIT_PASSPHRASE` or a prompt.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use serde::{Deserialize, Serialize};
use tacit_sdk::{Client, IncomingKind, KeySource, Transport, Trust};

#[derive(Parser)]
#[command(
    name = "tacit",
    version,
    about = "End-to-end encrypted messaging through a Tacit server"
)]
struct Cli {
    /// The account's home directory.
    #[arg(long, env = "TACIT_HOME", global = true)]
    home: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create an account on a server.
    Register {
        /// `https://host:port` (or `http://` to a loopback address).
        server: String,
        /// Username (3 to 32 of a-z, 0-9, `_`, `-`, `.`).
        username: String,
        /// Invite token, unless the server has open registration.
        #[arg(long)]
        invite: Option<String>,
        /// Trust exactly the server certificate with this SHA-256 fingerprint.
        #[arg(long, conflicts_with = "ca_file")]
        pin: Option<String>,
        /// Trust the CA certificate(s) in this PEM file.
        #[arg(long)]
        ca_file: Option<PathBuf>,
    },
    /// Send a text message (`-` reads it from standard input).
    Send { username: String, text: String },
    /// Fetch, print and acknowledge what arrived.
    Recv {
        /// Keep polling up to this many seconds until something arrives.
        #[arg(long, default_value_t = 0)]
        wait: u64,
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
    },
    /// List contacts.
    Contacts,
    /// Show the safety number to compare with a contact.
    SafetyNumber { username: String },
    /// Mark a contact verified after comparing safety numbers.
    Verify { username: String },
    /// Accept a contact's changed identity key.
    Trust { username: String },
    /// Show the conversation with a contact.
    History {
        username: String,
        #[arg(long)]
        json: bool,
    },
}

/// What the home directory records besides the encrypted store.
#[derive(Serialize, Deserialize)]
struct HomeConfig {
    server: String,
    #[serde(default)]
    pin: Option<String>,
    #[serde(default)]
    ca_file: Option<PathBuf>,
}

impl HomeConfig {
    fn trust(&self) -> Result<Trust> {
        Ok(match (&self.pin, &self.ca_file) {
            (Some(pin), _) => Trust::pin_from_hex(pin)
                .with_context(|| format!("--pin {pin}: expected 64 hex digits (SHA-256)"))?,
            (None, Some(path)) => Trust::CaFile(path.clone()),
            (None, None) => Trust::SystemRoots,
        })
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("tacit: cannot start: {error}");
            return ExitCode::from(2);
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("tacit: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn home(cli_home: Option<PathBuf>) -> Result<PathBuf> {
    if let Some(home) = cli_home {
        return Ok(home);
    }
    let user_home = std::env::var_os("HOME").context("no --home, TACIT_HOME or HOME set")?;
    Ok(PathBuf::from(user_home).join(".tacit"))
}

fn passphrase() -> Result<String> {
    if let Ok(passphrase) = std::env::var("TACIT_PASSPHRASE") {
        return Ok(passphrase);
    }
    rpassword::prompt_password("Store passphrase: ").context("reading the passphrase")
}

async fn open(home: &Path) -> Result<Client> {
    let config_path = home.join("config.json");
    let text = std::fs::read_to_string(&config_path).with_context(|| {
        format!(
            "no account in {} (run `tacit register` first)",
            home.display()
        )
    })?;
    let config: HomeConfig = serde_json::from_str(&text)
        .with_context(|| format!("{} is not valid", config_path.display()))?;
    let trust = config.trust()?;
    let passphrase = passphrase()?;
    let client = Client::open(
        &home.join("store.db"),
        KeySource::Passphrase(&passphrase),
        |server| Transport::new(server, &trust),
    )
    .await?;
    Ok(client)
}

async fn run(cli: Cli) -> Result<()> {
    let home = home(cli.home)?;
    match cli.command {
        Command::Register {
            server,
            username,
            invite,
            pin,
            ca_file,
        } => {
            let config = HomeConfig {
                server: server.clone(),
                pin,
                ca_file,
            };
            let trust = config.trust()?;
            let transport = Transport::new(&server, &trust)?;
            if home.join("config.json").exists() {
                bail!("{} already holds an account", home.display());
            }
            std::fs::create_dir_all(&home)
                .with_context(|| format!("creating {}", home.display()))?;
            let passphrase = passphrase()?;
            let client = Client::register(
                &home.join("store.db"),
                KeySource::Passphrase(&passphrase),
                transport,
                &username,
                invite.as_deref(),
            )
            .await?;
            let json = serde_json::to_string_pretty(&config)?;
            std::fs::write(home.join("config.json"), json + "\n")
                .with_context(|| format!("writing {}", home.display()))?;
            println!(
                "registered {} (device {}) on {server}",
                client.username(),
                client.device_id()
            );
        }
        Command::Send { username, text } => {
            let text = if text == "-" {
                std::io::read_to_string(std::io::stdin()).context("reading the message")?
            } else {
                text
            };
            let mut client = open(&home).await?;
            client.send(&username, &text).await?;
        }
        Command::Recv { wait, json } => {
            let mut client = open(&home).await?;
            let deadline = Instant::now() + Duration::from_secs(wait);
            loop {
                let events = client.receive().await?;
                for event in &events {
                    if json {
                        let mut value = serde_json::to_value(event)?;
                        if let (Some(map), IncomingKind::Text { .. }) =
                            (value.as_object_mut(), &event.kind)
                        {
                            map.entry("error").or_insert(serde_json::Value::Null);
                        }
                        println!("{value}");
                    } else {
                        match &event.kind {
                            IncomingKind::Text { peer, text } if *peer == event.sender => {
                                println!("{}.{}: {text}", event.sender, event.sender_device)
                            }
                            IncomingKind::Text { peer, text } => {
                                println!(
                                    "(to {peer}, from your device {}): {text}",
                                    event.sender_device
                                )
                            }
                            IncomingKind::Failed { error } => println!(
                                "{}.{}: [message failed: {error}]",
                                event.sender, event.sender_device
                            ),
                        }
                    }
                }
                if !events.is_empty() || Instant::now() >= deadline {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        }
        Command::Contacts => {
            let client = open(&home).await?;
            for contact in client.store().contacts().await? {
                let state = match (&contact.changed_identity_key, contact.verified) {
                    (Some(_), _) => "IDENTITY CHANGED (run `tacit trust`)",
                    (None, true) => "verified",
                    (None, false) => "not verified",
                };
                println!("{}\t{state}", contact.username);
            }
        }
        Command::SafetyNumber { username } => {
            let client = open(&home).await?;
            println!("{}", client.safety_number(&username).await?.grouped());
        }
        Command::Verify { username } => {
            open(&home).await?.verify(&username).await?;
            println!("{username} marked verified");
        }
        Command::Trust { username } => {
            if open(&home).await?.trust(&username).await? {
                println!("accepted {username}'s new identity key");
            } else {
                println!("{username}'s identity key has not changed");
            }
        }
        Command::History { username, json } => {
            let client = open(&home).await?;
            for message in client.store().history(&username).await? {
                let text = String::from_utf8_lossy(&message.body);
                let from = if message.outgoing {
                    "me"
                } else {
                    username.as_str()
                };
                if json {
                    println!(
                        "{}",
                        serde_json::json!({
                            "from": from,
                            "device": message.sender_device,
                            "time": message.sent_at,
                            "text": text,
                        })
                    );
                } else {
                    println!("{from}: {text}");
                }
            }
        }
    }
    Ok(())
}
