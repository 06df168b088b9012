//! `tacit listen`: stay connected and print messages as they arrive.

use std::path::Path;

use anyhow::Result;
use tacit_sdk::{Client, SocketEvent};

use super::{connect, show};
use crate::home::Home;

pub(super) async fn listen(home: &Home, json: bool) -> Result<()> {
    let mut client = home.open().await?;
    print_arrivals(&mut client, &home.files_dir(), json).await
}

/// Prints what arrives until Ctrl-C, reconnecting when the connection drops.
async fn print_arrivals(client: &mut Client, files: &Path, json: bool) -> Result<()> {
    let mut socket = connect(client).await?;
    // Disappearing messages go while we listen, not only at the next start.
    let mut purge = tokio::time::interval(std::time::Duration::from_secs(1));
    purge.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let frame = tokio::select! {
            frame = socket.next_frame() => frame,
            _ = purge.tick() => {
                super::upkeep(client).await;
                continue;
            }
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
