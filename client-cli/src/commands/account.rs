//! `tacit account delete`: the account on the server, then its files in the home.

use anyhow::{Result, bail};

use crate::home::Home;

pub(super) async fn delete(home: &Home, yes: bool) -> Result<()> {
    if !yes {
        bail!(
            "this deletes the account on the server and the store in {}; pass --yes",
            home.dir().display()
        );
    }
    let client = home.open().await?;
    let username = client.username().to_owned();
    client.delete_account().await?;
    home.remove_account()?;
    println!("deleted the account {username} and its local store");
    Ok(())
}
