//! `tacit chat`: an interactive conversation over the WebSocket.

use std::path::Path;

use anyhow::{Context, Result};
use tacit_sdk::{Client, Conversation, IncomingKind, SocketEvent};

use super::{connect, show};
use crate::home::Home;

pub(super) async fn chat(home: &Home, peer: &str) -> Result<()> {
    let mut client = home.open().await?;
    converse(&mut client, peer, &home.files_dir()).await
}

/// Shows the last messages with `peer`, then sends each line typed and prints what arrives
/// until standard input ends.
async fn converse(client: &mut Client, peer: &str, files: &Path) -> Result<()> {
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
    let mut purge = tokio::time::interval(std::time::Duration::from_secs(1));
    purge.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        // Only reading is raced; handling runs to completion, so nothing is half-stored.
        tokio::select! {
            // Disappearing messages go while we chat, not only at the next start.
            _ = purge.tick() => {
                super::upkeep(client).await;
            }
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
