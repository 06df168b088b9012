//! Trust in contacts: `tacit contacts`, `safety-number`, `verify` and `trust`.

use anyhow::Result;

use crate::home::Home;

pub(super) async fn contacts(home: &Home) -> Result<()> {
    let client = home.open().await?;
    for contact in client.store().contacts().await? {
        let state = match (&contact.changed_identity_key, contact.verified) {
            (Some(_), _) => "IDENTITY CHANGED (run `tacit trust`)",
            (None, true) => "verified",
            (None, false) => "not verified",
        };
        println!("{}\t{state}", contact.username);
    }
    Ok(())
}

pub(super) async fn safety_number(home: &Home, username: &str) -> Result<()> {
    let client = home.open().await?;
    println!("{}", client.safety_number(username).await?.grouped());
    Ok(())
}

pub(super) async fn verify(home: &Home, username: &str) -> Result<()> {
    if home.open().await?.verify(username).await? {
        println!("accepted {username}'s new identity key and marked it verified");
    } else {
        println!("{username} marked verified");
    }
    Ok(())
}

pub(super) async fn trust(home: &Home, username: &str) -> Result<()> {
    if home.open().await?.trust(username).await? {
        println!("accepted {username}'s new identity key");
    } else {
        println!("{username}'s identity key has not changed");
    }
    Ok(())
}
