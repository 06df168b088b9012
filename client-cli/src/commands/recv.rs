//! `tacit recv`: fetch, print and acknowledge what arrived.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};

use super::show;
use crate::home::Home;

pub(super) async fn recv(home: &Home, wait: u64, json: bool, out: Option<PathBuf>) -> Result<()> {
    let mut client = home.open().await?;
    let out = out.unwrap_or_else(|| home.files_dir());
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
    Ok(())
}
