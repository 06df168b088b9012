//! One module per command (or family of commands), and what several of them share.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use tacit_sdk::{Client, Incoming, IncomingKind};

use crate::cli::{AccountCommand, Cli, Command};
use crate::home::Home;
use crate::output::{print_event, print_file};

mod account;
mod admin;
mod chat;
mod device;
mod disappearing;
mod files;
mod group;
mod history;
mod listen;
mod recv;
mod register;
mod send;
mod trust;

/// Runs one command in the home the command line names.
pub(crate) async fn run(cli: Cli) -> Result<()> {
    let home = Home::locate(cli.home)?;
    match cli.command {
        Command::Register {
            server,
            username,
            invite,
            sso,
            sso_flow,
            issuer,
            pin,
            ca_file,
        } => {
            let how = if sso {
                register::How::Sso(sso_flow, issuer.as_deref())
            } else {
                register::How::Invite(invite.as_deref())
            };
            register::register(&home, server, username.as_deref(), how, pin, ca_file).await
        }
        Command::Send { username, text } => send::send(&home, &username, text).await,
        Command::SendFile { group, args } => files::send_file(&home, group, &args).await,
        Command::Recv { wait, json, out } => recv::recv(&home, wait, json, out).await,
        Command::Contacts => trust::contacts(&home).await,
        Command::SafetyNumber { username } => trust::safety_number(&home, &username).await,
        Command::Verify { username } => trust::verify(&home, &username).await,
        Command::Trust { username } => trust::trust(&home, &username).await,
        Command::History { username, json } => history::history(&home, &username, json).await,
        Command::Disappearing { group, args } => {
            disappearing::disappearing(&home, group.as_deref(), &args).await
        }
        Command::Listen { json } => listen::listen(&home, json).await,
        Command::Chat { username } => chat::chat(&home, &username).await,
        Command::Device(command) => device::device(&home, command).await,
        Command::Group(command) => group::group(&home, command).await,
        Command::Account(AccountCommand::Delete { yes }) => account::delete(&home, yes).await,
        Command::Admin(command) => admin::admin(&home, command).await,
    }
}

/// The text of a message: `text` itself, or standard input when it is `-`.
fn read_text(text: String) -> Result<String> {
    if text == "-" {
        std::io::read_to_string(std::io::stdin()).context("reading the message")
    } else {
        Ok(text)
    }
}

/// Prints an event; a file is first saved into `files`. Returns `false` when a file could
/// not be saved (the reason is printed).
async fn show(client: &Client, event: &Incoming, files: &Path, json: bool) -> Result<bool> {
    if let IncomingKind::File { blob_id, .. } = &event.kind {
        let saved: Result<PathBuf> = files::save_file(client, blob_id, files).await;
        print_file(event, &saved, json)?;
        Ok(saved.is_ok())
    } else {
        print_event(event, json)?;
        Ok(true)
    }
}

/// What a long-running command does every second: deletes the disappearing messages that
/// are due and fetches the organisation's policy when the cached one is stale. A failure is
/// said on stderr and the command goes on (the next second tries again).
async fn upkeep(client: &mut Client) {
    if let Err(e) = client.purge_expired().await {
        eprintln!("tacit: deleting disappearing messages failed: {e}");
    }
    // Bounded: a server that does not answer must not hold up what arrives.
    match tokio::time::timeout(Duration::from_secs(5), client.refresh_policy_if_stale()).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => eprintln!("tacit: reading the organisation's policy failed: {e}"),
        Err(_) => eprintln!("tacit: reading the organisation's policy timed out"),
    }
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
