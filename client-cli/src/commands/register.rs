//! `tacit register`: create an account on a server, in a new home.

use std::path::PathBuf;

use anyhow::{Result, bail};
use tacit_sdk::{Client, KeySource};

use crate::home::{Home, HomeConfig};
use crate::sso::{self, Flow};

/// What admits the new account.
pub(crate) enum How<'a> {
    /// An invite, or none for open registration.
    Invite(Option<&'a str>),
    /// An ID token from the server's identity provider, got with this flow, from the
    /// pinned issuer if one is given.
    Sso(Flow, Option<&'a str>),
}

pub(super) async fn register(
    home: &Home,
    server: String,
    username: Option<&str>,
    how: How<'_>,
    pin: Option<String>,
    ca_file: Option<PathBuf>,
) -> Result<()> {
    let config = HomeConfig::new(server.clone(), pin, ca_file);
    let new = home.prepare(&config)?;
    let store = home.store_path();
    let key = KeySource::Passphrase(&new.passphrase);
    let client = match how {
        How::Invite(invite) => {
            let Some(username) = username else {
                bail!("a username is needed (or --sso)");
            };
            Client::register(&store, key, new.transport, username, invite).await?
        }
        How::Sso(flow, pinned) => {
            let oidc = new.transport.oidc_config().await.map_err(|e| match e {
                tacit_sdk::TransportError::Api { ref code, .. } if code == "not_found" => {
                    anyhow::anyhow!(
                        "{server} has no identity provider configured (register with an invite)"
                    )
                }
                other => other.into(),
            })?;
            let signed_in = sso::sign_in(&oidc, flow, pinned).await?;
            if let Some(asked) = username
                && asked != signed_in.username
            {
                bail!(
                    "the identity provider names you {}, not {asked}",
                    signed_in.username
                );
            }
            eprintln!("tacit: registering as {}", signed_in.username);
            Client::register_with_id_token(
                &store,
                key,
                new.transport,
                &signed_in.username,
                &signed_in.id_token,
            )
            .await?
        }
    };
    home.write_config(&config)?;
    println!(
        "registered {} (device {}) on {server}",
        client.username(),
        client.device_id()
    );
    Ok(())
}
