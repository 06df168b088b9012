//! `tacit device …`: link a new device, approve one, list and remove devices.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Result, bail};
use serde::Serialize;
use tacit_sdk::{Client, KeySource};

use crate::cli::DeviceCommand;
use crate::home::{Home, HomeConfig};
use crate::output::json_line;

/// One device of the account as a JSON line (keys in alphabetical order, as always).
#[derive(Serialize)]
struct DeviceLine<'a> {
    created_at: i64,
    id: tacit_sdk::DeviceId,
    name: Option<&'a str>,
    this_device: bool,
}

pub(super) async fn device(home: &Home, command: DeviceCommand) -> Result<()> {
    match command {
        DeviceCommand::Link {
            server,
            name,
            timeout,
            pin,
            ca_file,
            yes,
            sso,
            sso_flow,
            issuer,
            replace_devices,
        } => {
            if sso {
                let sso = SsoLink {
                    flow: sso_flow,
                    issuer: issuer.as_deref(),
                    replace_devices,
                };
                link_sso(home, server, name.as_deref(), sso, pin, ca_file).await?;
            } else {
                link(home, server, name.as_deref(), timeout, pin, ca_file, yes).await?;
            }
        }
        DeviceCommand::Add { code } => {
            let client = home.open().await?;
            client.approve_link(&code).await?;
            println!(
                "approved: the new device is joining {}; it must show identity fingerprint {}",
                client.username(),
                client.fingerprint()
            );
        }
        DeviceCommand::List { json } => {
            let client = home.open().await?;
            for device in client.devices().await? {
                let id = device.device_id;
                let this = id == client.device_id();
                if json {
                    json_line(&DeviceLine {
                        created_at: device.created_at.0,
                        id,
                        name: device.name.as_deref(),
                        this_device: this,
                    })?;
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
            home.open()
                .await?
                .remove_device(tacit_sdk::DeviceId(id))
                .await?;
            println!("removed device {id}");
        }
    }
    Ok(())
}

/// On a new device: shows a link code, waits for an existing device to answer it, and
/// joins the account it names (after the user confirmed, see [`confirm_link`]).
async fn link(
    home: &Home,
    server: String,
    name: Option<&str>,
    timeout: u64,
    pin: Option<String>,
    ca_file: Option<PathBuf>,
    yes: bool,
) -> Result<()> {
    let config = HomeConfig::new(server, pin, ca_file);
    let new = home.prepare(&config)?;
    let pending = Client::begin_link(new.transport).await?;
    println!("link code: {}", pending.code());
    eprintln!(
        "On a device already in the account, run:\n  tacit device add {}\nWaiting up to {timeout} s...",
        pending.code()
    );
    let client = Client::finish_link(
        pending,
        &home.store_path(),
        KeySource::Passphrase(&new.passphrase),
        name,
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
    home.write_config(&config)?;
    println!(
        "linked: this is device {} of {}",
        client.device_id(),
        client.username()
    );
    Ok(())
}

/// How `device link --sso` signs in.
struct SsoLink<'a> {
    flow: crate::sso::Flow,
    issuer: Option<&'a str>,
    replace_devices: bool,
}

/// On a new device: signs in with the server's identity provider and recovers the account
/// bound to that identity onto this machine, with an identity key of its own that replaces
/// the account's other devices.
async fn link_sso(
    home: &Home,
    server: String,
    name: Option<&str>,
    sso: SsoLink<'_>,
    pin: Option<String>,
    ca_file: Option<PathBuf>,
) -> Result<()> {
    // Every account has a device, and one signed in through the provider replaces them
    // all (it cannot receive the account identity): ask for consent before any sign-in.
    if !sso.replace_devices {
        bail!(
            "a device signed in through the identity provider cannot receive the account \
             identity, so it replaces the account: every other device is signed out and \
             contacts see a new identity. While another device is at hand, link with a code \
             instead (`tacit device link {server}` here, then `tacit device add CODE` there); \
             to recover the account onto this machine, run again with --replace-devices"
        );
    }
    let config = HomeConfig::new(server.clone(), pin, ca_file);
    let new = home.prepare(&config)?;
    let oidc = new.transport.oidc_config().await.map_err(|e| match e {
        tacit_sdk::TransportError::Api { ref code, .. } if code == "not_found" => {
            anyhow::anyhow!("{server} has no identity provider configured (use a link code)")
        }
        other => other.into(),
    })?;
    let signed_in = crate::sso::sign_in(&oidc, sso.flow, sso.issuer).await?;
    eprintln!(
        "tacit: the identity provider names you {}; recovering your account onto this device",
        signed_in.username
    );
    let client = Client::add_device_sso(
        &home.store_path(),
        KeySource::Passphrase(&new.passphrase),
        new.transport,
        &signed_in.id_token,
        name,
        true,
    )
    .await?;
    home.write_config(&config)?;
    if client.username() != signed_in.username {
        // Sign-in follows the provider's subject; the account keeps its registered name.
        eprintln!(
            "tacit: the server says your account is {} (registered under that name; the \
             identity provider now calls you {})",
            client.username(),
            signed_in.username
        );
    }
    println!(
        "linked: this is device {} of {}, with a new identity key; the account's other \
         devices were signed out and contacts must compare safety numbers and trust it",
        client.device_id(),
        client.username()
    );
    Ok(())
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
