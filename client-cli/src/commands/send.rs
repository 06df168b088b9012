//! `tacit send`: a text message to a user.

use anyhow::Result;

use super::read_text;
use crate::home::Home;

pub(super) async fn send(home: &Home, username: &str, text: String) -> Result<()> {
    let text = read_text(text)?;
    let mut client = home.open().await?;
    client.send(username, &text).await?;
    Ok(())
}
