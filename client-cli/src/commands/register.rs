//! `tacit register`: create an account on a server, in a new home.

use std::path::PathBuf;

use anyhow::Result;
use tacit_sdk::{Client, KeySource};

use crate::home::{Home, HomeConfig};

pub(super) async fn register(
    home: &Home,
    server: String,
    username: &str,
    invite: Option<&str>,
    pin: Option<String>,
    ca_file: Option<PathBuf>,
) -> Result<()> {
    let config = HomeConfig::new(server.clone(), pin, ca_file);
    let new = home.prepare(&config)?;
    let client = Client::register(
        &home.store_path(),
        KeySource::Passphrase(&new.passphrase),
        new.transport,
        username,
        invite,
    )
    .await?;
    home.write_config(&config)?;
    println!(
        "registered {} (device {}) on {server}",
        client.username(),
        client.device_id()
    );
    Ok(())
}
