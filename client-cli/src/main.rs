//! `tacit`: the reference command-line client. A thin layer over `tacit-sdk`.
//!
//! The account lives in a home directory (`--home DIR` or `TACIT_HOME`, default
//! `~/.tacit`); the store passphrase comes from `TACIT_PASSPHRASE` or a prompt.

use std::io::IsTerminal as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use serde::{Deserialize, Serialize};
use tacit_sdk::{
    Client, Conversation, Incoming, IncomingKind, KeySource, MessageStatus, Progress, ReceiptKind,
    SocketEvent, Stage, Transport, Trust,
};

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
    /// Send a file, end-to-end encrypted (streamed; an interrupted upload resumes).
    #[command(
        override_usage = "tacit send-file <USERNAME> <PATH>\n       tacit send-file --group <GROUP> <PATH>"
    )]
    SendFile {
        /// Send to this group instead of a user.
        #[arg(long)]
        group: Option<String>,
        /// The recipient (unless --group) and the file to send.
        #[arg(required = true, num_args = 1..=2, value_name = "USERNAME> <PATH")]
        args: Vec<String>,
    },
    /// Fetch, print and acknowledge what arrived; save received files after checking them.
    Recv {
        /// Keep polling up to this many seconds until something arrives.
        #[arg(long, default_value_t = 0)]
        wait: u64,
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
        /// Where received files are saved (default: `<home>/files`).
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
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
    /// Stay connected and print messages as they arrive (until Ctrl-C).
    Listen {
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
    },
    /// Chat with a contact interactively: type a line to send it; Ctrl-D ends.
    Chat { username: String },
    /// Link devices to the account, list and remove them.
    #[command(subcommand)]
    Device(DeviceCommand),
    /// The account itself.
    #[command(subcommand)]
    Account(AccountCommand),
    /// Group chats.
    #[command(subcommand)]
    Group(GroupCommand),
}

#[derive(Subcommand)]
enum GroupCommand {
    /// Create a group with these members (you are its admin).
    Create {
        name: String,
        #[arg(required = true)]
        members: Vec<String>,
    },
    /// Add members (admins only; they read only what is sent from now on).
    Add {
        group: String,
        #[arg(required = true)]
        users: Vec<String>,
    },
    /// Remove members (admins only; they cannot read anything sent afterwards).
    Remove {
        group: String,
        #[arg(required = true)]
        users: Vec<String>,
    },
    /// Make members admins (admins only).
    Promote {
        group: String,
        #[arg(required = true)]
        users: Vec<String>,
    },
    /// Leave a group.
    Leave { group: String },
    /// List a group's members.
    Members {
        group: String,
        #[arg(long)]
        json: bool,
    },
    /// List your groups.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Send a text to a group (`-` reads it from standard input).
    Send { group: String, text: String },
}

#[derive(Subcommand)]
enum DeviceCommand {
    /// On a NEW device: show a link code, wait until an existing device approves it with
    /// `tacit device add CODE`, then join the account.
    Link {
        /// `https://host:port` of the account's server (or `http://` to loopback).
        server: String,
        /// A name for this device, shown in `device list`.
        #[arg(long)]
        name: Option<String>,
        /// Give up after this many seconds.
        #[arg(long, default_value_t = 600)]
        timeout: u64,
        /// Trust exactly the server certificate with this SHA-256 fingerprint.
        #[arg(long, conflicts_with = "ca_file")]
        pin: Option<String>,
        /// Trust the CA certificate(s) in this PEM file.
        #[arg(long)]
        ca_file: Option<PathBuf>,
        /// Join the account the answer names without asking (when standard input is a
        /// terminal, `tacit` otherwise asks before joining).
        #[arg(long)]
        yes: bool,
    },
    /// On an EXISTING device: approve the new device that shows this link code.
    Add { code: String },
    /// List the account's devices.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Remove a device of the account (its access ends at once).
    Remove { id: u32 },
}

#[derive(Subcommand)]
enum AccountCommand {
    /// Delete the account on the server (all devices, keys and waiting messages) and the
    /// local store. The username becomes free.
    Delete {
        /// Confirm.
        #[arg(long)]
        yes: bool,
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
            eprintln!("tacit: {}", explain(&error));
            ExitCode::FAILURE
        }
    }
}

/// An error as one line that says what is wrong and, where the CLI knows, what to do.
fn explain(error: &anyhow::Error) -> String {
    use tacit_sdk::{ConnectProblem as P, TransportError as T};
    let hint = error.chain().find_map(|cause| {
        let transport = cause.downcast_ref::<T>().or_else(|| {
            match cause.downcast_ref::<tacit_sdk::ClientError>() {
                Some(tacit_sdk::ClientError::Transport(t)) => Some(t),
                _ => None,
            }
        })?;
        Some(match transport {
            T::Connect { problem, .. } => match problem {
                P::UntrustedCertificate => {
                    "if it is the server's own certificate, pass --pin with the \
                     sha256_fingerprint its log shows on the `listening (TLS)` line (compare it \
                     with the operator's), or --ca-file with the CA that signed it"
                }
                P::PinMismatch => {
                    "check the pinned fingerprint against the one the server logs; if the \
                     server's certificate was replaced, ask its operator and compare \
                     fingerprints before trusting the new one"
                }
                P::InvalidCertificate => {
                    "check the server address (the certificate must name it) and the \
                     certificate's dates"
                }
                P::Refused => "start the server, or check the address and port",
                P::UnknownHost => "check the server's host name",
                P::TimedOut => "check the network and the server's address, then try again",
                P::WrongProtocol => {
                    "use https:// for a TLS server (the default), http:// only for a \
                     plain-HTTP server on loopback"
                }
                _ => return None,
            },
            T::Api { code, .. } if code == "invite_required" => {
                "registration on this server needs an invite: ask its operator for one and \
                 pass it with --invite (a token is accepted once)"
            }
            T::Api { code, .. } if code == "username_taken" => "choose another username",
            _ => return None,
        })
    });
    match hint {
        Some(hint) => format!("{error:#}; {hint}"),
        None => format!("{error:#}"),
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
        Command::SendFile { group, args } => {
            let (to, path) = match (&group, args.as_slice()) {
                (Some(group), [path]) => (group.clone(), PathBuf::from(path)),
                (None, [username, path]) => (username.clone(), PathBuf::from(path)),
                (Some(_), _) => {
                    bail!("with --group, give only the file: send-file --group GROUP PATH")
                }
                (None, _) => bail!("give the recipient and the file: send-file USERNAME PATH"),
            };
            let mut client = open(&home).await?;
            let bar = transfer_bar();
            let sent = if group.is_some() {
                client
                    .send_group_file(&to, &path, &mut |p| show_progress(&bar, p))
                    .await
            } else {
                client
                    .send_file(&to, &path, &mut |p| show_progress(&bar, p))
                    .await
            };
            bar.finish_and_clear();
            let sent = sent?;
            println!("sent {} ({} bytes) to {to}", sent.name, sent.size);
        }
        Command::Recv { wait, json, out } => {
            let mut client = open(&home).await?;
            let out = out.unwrap_or_else(|| home.join("files"));
            let deadline = Instant::now() + Duration::from_secs(wait);
            let mut unsaved = 0;
            loop {
                let events = client.receive().await?;
                for event in &events {
                    unsaved += usize::from(!show(&client, event, &out, json).await?);
                }
                if !events.is_empty() || Instant::now() >= deadline {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
            if unsaved > 0 {
                bail!("{unsaved} received file(s) could not be saved (see above)");
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
            if open(&home).await?.verify(&username).await? {
                println!("accepted {username}'s new identity key and marked it verified");
            } else {
                println!("{username} marked verified");
            }
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
            let is_contact = client.store().contact(&username).await?.is_some();
            let group = if is_contact {
                None
            } else {
                client.find_group(&username).await.ok()
            };
            if let Some(group) = group {
                let key = Client::group_history_key(&group)?;
                for message in client.store().history(&key).await? {
                    let text = String::from_utf8_lossy(&message.body);
                    let from = message.sender.as_deref().unwrap_or("?");
                    if json {
                        println!(
                            "{}",
                            serde_json::json!({
                                "group": group.name,
                                "from": from,
                                "device": message.sender_device,
                                "time": message.sent_at,
                                "text": text,
                            })
                        );
                    } else {
                        println!("[{}] {from}: {text}", group.name);
                    }
                }
                return Ok(());
            }
            for message in client
                .store()
                .history(&Conversation::direct(&username))
                .await?
            {
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
                            "status": message.status,
                        })
                    );
                } else if message.outgoing {
                    let mark = match message.status {
                        MessageStatus::Sent => "",
                        MessageStatus::Delivered => "  (delivered)",
                        MessageStatus::Read => "  (read)",
                    };
                    println!("{from}: {text}{mark}");
                } else {
                    println!("{from}: {text}");
                }
            }
        }
        Command::Listen { json } => {
            let mut client = open(&home).await?;
            listen(&mut client, &home.join("files"), json).await?;
        }
        Command::Chat { username } => {
            let mut client = open(&home).await?;
            chat(&mut client, &username, &home.join("files")).await?;
        }
        Command::Device(command) => device(&home, command).await?,
        Command::Group(command) => group(&home, command).await?,
        Command::Account(AccountCommand::Delete { yes }) => {
            if !yes {
                bail!(
                    "this deletes the account on the server and the store in {}; pass --yes",
                    home.display()
                );
            }
            let client = open(&home).await?;
            let username = client.username().to_owned();
            client.delete_account().await?;
            for file in ["store.db", "store.db-wal", "store.db-shm", "config.json"] {
                let path = home.join(file);
                if path.exists() {
                    std::fs::remove_file(&path)
                        .with_context(|| format!("removing {}", path.display()))?;
                }
            }
            println!("deleted the account {username} and its local store");
        }
    }
    Ok(())
}

/// A progress bar for a transfer, on stderr, hidden unless stderr is a terminal.
fn transfer_bar() -> indicatif::ProgressBar {
    let target = if std::io::stderr().is_terminal() {
        indicatif::ProgressDrawTarget::stderr()
    } else {
        indicatif::ProgressDrawTarget::hidden()
    };
    let bar = indicatif::ProgressBar::with_draw_target(None, target);
    if let Ok(style) = indicatif::ProgressStyle::with_template(
        "{msg:11} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} {eta}",
    ) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar
}

fn show_progress(bar: &indicatif::ProgressBar, progress: Progress) {
    let stage = match progress.stage {
        Stage::Encrypting => "encrypting",
        Stage::Uploading => "uploading",
        Stage::Downloading => "downloading",
        _ => "",
    };
    if bar.message() != stage {
        bar.set_message(stage);
        bar.reset_eta();
    }
    bar.set_length(progress.total);
    bar.set_position(progress.done);
}

/// Prints an event; a file is first saved into `files`. Returns `false` when a file could
/// not be saved (the reason is printed).
async fn show(client: &Client, event: &Incoming, files: &Path, json: bool) -> Result<bool> {
    if let IncomingKind::File { blob_id, .. } = &event.kind {
        let saved = save_file(client, blob_id, files).await;
        print_file(event, &saved, json)?;
        Ok(saved.is_ok())
    } else {
        print_event(event, json)?;
        Ok(true)
    }
}

/// Downloads a received file into `dir` with a progress bar; returns where it was saved.
async fn save_file(client: &Client, blob_id: &str, dir: &Path) -> Result<PathBuf> {
    let bar = transfer_bar();
    let saved = client
        .download_file(blob_id, dir, &mut |p| show_progress(&bar, p))
        .await;
    bar.finish_and_clear();
    Ok(saved?)
}

/// Prints a received file and where it was saved: a line, or with `--json` the event's
/// object with `kind` = `file`, `name`, `size`, `blob_id`, and `path` (or `null` and an
/// `error`).
fn print_file(event: &Incoming, saved: &Result<PathBuf>, json: bool) -> Result<()> {
    let IncomingKind::File {
        peer, name, size, ..
    } = &event.kind
    else {
        return print_event(event, json);
    };
    if json {
        let mut value = serde_json::to_value(event)?;
        if let Some(map) = value.as_object_mut() {
            let (path, error) = match saved {
                Ok(path) => (serde_json::json!(path), serde_json::Value::Null),
                Err(e) => (serde_json::Value::Null, serde_json::json!(format!("{e:#}"))),
            };
            map.insert("path".into(), path);
            map.insert("error".into(), error);
        }
        println!("{value}");
    } else {
        let from = if *peer == event.sender {
            format!("{}.{}", event.sender, event.sender_device)
        } else {
            format!("(to {peer}, from your device {})", event.sender_device)
        };
        match saved {
            Ok(path) => println!(
                "{from}: file {name} ({size} bytes) saved to {}",
                path.display()
            ),
            Err(_) => println!("{from}: file {name} ({size} bytes) NOT saved"),
        }
    }
    if let Err(e) = saved {
        eprintln!("tacit: {name}: {e:#}");
    }
    Ok(())
}

/// Prints one event: a line of text, or one JSON object with `--json` (stable keys:
/// `sender`, `sender_device`, `time`, `kind`, and `peer`, `text`, `message_id` for text,
/// `receipt`, `message_ids` for receipts, `name`, `size`, `blob_id` for files, `error` for
/// failures).
fn print_event(event: &Incoming, json: bool) -> Result<()> {
    if json {
        let mut value = serde_json::to_value(event)?;
        if let (Some(map), IncomingKind::Text { .. }) = (value.as_object_mut(), &event.kind) {
            map.entry("error").or_insert(serde_json::Value::Null);
        }
        println!("{value}");
        return Ok(());
    }
    let from = format!("{}.{}", event.sender, event.sender_device);
    match &event.kind {
        IncomingKind::Text { peer, text, .. } if *peer == event.sender => {
            println!("{from}: {text}");
        }
        IncomingKind::Text { peer, text, .. } => {
            println!(
                "(to {peer}, from your device {}): {text}",
                event.sender_device
            );
        }
        IncomingKind::Receipt {
            peer,
            receipt,
            message_ids,
        } => {
            let what = match receipt {
                ReceiptKind::Delivered => "received",
                ReceiptKind::Read => "read",
            };
            let n = message_ids.len();
            let plural = if n == 1 { "" } else { "s" };
            if *peer == event.sender {
                println!("[{peer} {what} {n} message{plural}]");
            } else {
                println!(
                    "[you {what} {n} message{plural} from {peer} on device {}]",
                    event.sender_device
                );
            }
        }
        IncomingKind::GroupText { group, text, .. } => println!("[{group}] {from}: {text}"),
        IncomingKind::GroupUpdate { description, .. } => println!("[{description}]"),
        IncomingKind::File {
            peer, name, size, ..
        } => println!("{from}: [file {name}, {size} bytes, in the conversation with {peer}]"),
        IncomingKind::Failed { error } => println!("{from}: [message failed: {error}]"),
    }
    Ok(())
}

async fn group(home: &Path, command: GroupCommand) -> Result<()> {
    let mut client = open(home).await?;
    let show = |info: &tacit_sdk::GroupInfo| {
        format!(
            "{} ({}): {}",
            info.name,
            &info.id[..8],
            info.members
                .iter()
                .map(|m| if info.admins.contains(m) {
                    format!("{m} (admin)")
                } else {
                    m.clone()
                })
                .collect::<Vec<_>>()
                .join(", ")
        )
    };
    match command {
        GroupCommand::Create { name, members } => {
            let info = client.create_group(&name, &members).await?;
            println!("created {}", show(&info));
        }
        GroupCommand::Add { group, users } => {
            let info = client.add_members(&group, &users).await?;
            println!("{}", show(&info));
        }
        GroupCommand::Remove { group, users } => {
            let info = client.remove_members(&group, &users).await?;
            println!("{}", show(&info));
        }
        GroupCommand::Promote { group, users } => {
            let info = client.promote_members(&group, &users).await?;
            println!("{}", show(&info));
        }
        GroupCommand::Leave { group } => {
            client.leave_group(&group).await?;
            println!("left {group}");
        }
        GroupCommand::Members { group, json } => {
            let info = client.find_group(&group).await?;
            for member in &info.members {
                let admin = info.admins.contains(member);
                if json {
                    println!(
                        "{}",
                        serde_json::json!({"username": member, "admin": admin})
                    );
                } else {
                    println!("{member}{}", if admin { "\tadmin" } else { "" });
                }
            }
        }
        GroupCommand::List { json } => {
            for info in client.groups().await? {
                if json {
                    println!("{}", serde_json::to_string(&info)?);
                } else {
                    println!("{}", show(&info));
                }
            }
        }
        GroupCommand::Send { group, text } => {
            let text = if text == "-" {
                std::io::read_to_string(std::io::stdin()).context("reading the message")?
            } else {
                text
            };
            client.send_group(&group, &text).await?;
        }
    }
    Ok(())
}

/// Connects the WebSocket, retrying with a growing pause; says so on stderr.
async fn connect(client: &mut Client) -> Result<tacit_sdk::Socket> {
    let mut pause = Duration::from_millis(500);
    loop {
        match client.connect().await {
            Ok(socket) => return Ok(socket),
            Err(tacit_sdk::ClientError::Transport(
                error @ (tacit_sdk::TransportError::Connect { .. }
                | tacit_sdk::TransportError::Socket(_)),
            )) if error.is_transient() => {
                eprintln!("tacit: {error}; retrying in {} s", pause.as_secs_f32());
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(30));
            }
            Err(other) => return Err(other.into()),
        }
    }
}

async fn listen(client: &mut Client, files: &Path, json: bool) -> Result<()> {
    let mut socket = connect(client).await?;
    loop {
        let frame = tokio::select! {
            frame = socket.next_frame() => frame,
            _ = tokio::signal::ctrl_c() => {
                socket.close().await;
                return Ok(());
            }
        };
        match frame {
            Ok(Some(frame)) => {
                if let SocketEvent::Incoming(event) = client.on_frame(&mut socket, frame).await? {
                    show(client, &event, files, json).await?;
                }
            }
            Ok(None) | Err(_) => {
                eprintln!("tacit: connection closed; reconnecting");
                socket = connect(client).await?;
            }
        }
    }
}

async fn chat(client: &mut Client, peer: &str, files: &Path) -> Result<()> {
    use tokio::io::AsyncBufReadExt as _;
    let history = client.store().history(&Conversation::direct(peer)).await?;
    for message in history.iter().skip(history.len().saturating_sub(10)) {
        let from = if message.outgoing { "me" } else { peer };
        println!("{from}: {}", String::from_utf8_lossy(&message.body));
    }
    eprintln!("-- chatting with {peer}: type a line and press Enter to send; Ctrl-D to quit --");
    client.mark_read(peer).await?;
    let mut socket = connect(client).await?;
    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    loop {
        // Only reading is raced; handling runs to completion, so nothing is half-stored.
        tokio::select! {
            line = lines.next_line() => {
                let Some(line) = line.context("reading standard input")? else {
                    socket.close().await;
                    return Ok(());
                };
                let text = line.trim_end();
                if text.is_empty() {
                    continue;
                }
                match client.send(peer, text).await {
                    Ok(_) => {}
                    // A failed send is reported and the chat goes on.
                    Err(error) => eprintln!("tacit: not sent: {error}"),
                }
            }
            frame = socket.next_frame() => match frame {
                Ok(Some(frame)) => {
                    if let SocketEvent::Incoming(event) = client.on_frame(&mut socket, frame).await? {
                        let from_peer = matches!(&event.kind, IncomingKind::Text { peer: p, .. } if p == peer)
                            && event.sender == peer;
                        show(client, &event, files, false).await?;
                        if from_peer {
                            client.mark_read(peer).await?;
                        }
                    }
                }
                Ok(None) | Err(_) => {
                    eprintln!("tacit: connection closed; reconnecting");
                    socket = connect(client).await?;
                }
            },
        }
    }
}

/// Whether to join the account a link answer names: yes with `--yes` or when standard
/// input is not a terminal (a script), otherwise the user is asked after seeing the account
/// name and identity fingerprint.
fn confirm_link(yes: bool) -> bool {
    use std::io::IsTerminal as _;
    if yes || !std::io::stdin().is_terminal() {
        return true;
    }
    eprint!("Join this account? Compare the fingerprint with the approving device [y/N] ");
    let mut answer = String::new();
    std::io::stdin().read_line(&mut answer).is_ok()
        && matches!(answer.trim(), "y" | "Y" | "yes" | "YES")
}

async fn device(home: &Path, command: DeviceCommand) -> Result<()> {
    match command {
        DeviceCommand::Link {
            server,
            name,
            timeout,
            pin,
            ca_file,
            yes,
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
            std::fs::create_dir_all(home)
                .with_context(|| format!("creating {}", home.display()))?;
            let passphrase = passphrase()?;
            let pending = Client::begin_link(transport).await?;
            println!("link code: {}", pending.code());
            eprintln!(
                "On a device already in the account, run:\n  tacit device add {}\nWaiting up to {timeout} s...",
                pending.code()
            );
            let client = Client::finish_link(
                pending,
                &home.join("store.db"),
                KeySource::Passphrase(&passphrase),
                name.as_deref(),
                Duration::from_secs(timeout),
                |preview| {
                    println!(
                        "joining account {} (identity fingerprint {})",
                        preview.username, preview.fingerprint
                    );
                    confirm_link(yes)
                },
            )
            .await?;
            let json = serde_json::to_string_pretty(&config)?;
            std::fs::write(home.join("config.json"), json + "\n")
                .with_context(|| format!("writing {}", home.display()))?;
            println!(
                "linked: this is device {} of {}",
                client.device_id(),
                client.username()
            );
        }
        DeviceCommand::Add { code } => {
            let client = open(home).await?;
            client.approve_link(&code).await?;
            println!(
                "approved: the new device is joining {}; it must show identity fingerprint {}",
                client.username(),
                client.fingerprint()
            );
        }
        DeviceCommand::List { json } => {
            let client = open(home).await?;
            for device in client.devices().await? {
                let id = device.device_id.0;
                let this = id == client.device_id();
                if json {
                    println!(
                        "{}",
                        serde_json::json!({
                            "id": id,
                            "name": device.name,
                            "created_at": device.created_at.0,
                            "this_device": this,
                        })
                    );
                } else {
                    println!(
                        "{id}\t{}{}",
                        device.name.as_deref().unwrap_or("-"),
                        if this { "\t(this device)" } else { "" }
                    );
                }
            }
        }
        DeviceCommand::Remove { id } => {
            open(home).await?.remove_device(id).await?;
            println!("removed device {id}");
        }
    }
    Ok(())
}
