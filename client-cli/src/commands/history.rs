//! `tacit history`: the conversation with a contact, or a group's.

use anyhow::Result;
use serde::Serialize;
use tacit_sdk::{Client, Conversation, MessageStatus};

use crate::home::Home;
use crate::output::json_line;

/// One message of a history as a JSON line (keys in alphabetical order, as always).
#[derive(Serialize)]
struct HistoryLine<'a> {
    device: tacit_sdk::DeviceId,
    from: &'a str,
    /// Group histories only: the group's name.
    #[serde(skip_serializing_if = "Option::is_none")]
    group: Option<&'a str>,
    /// Pairwise histories only: sent, delivered or read.
    #[serde(skip_serializing_if = "Option::is_none")]
    status: Option<MessageStatus>,
    text: &'a str,
    time: i64,
}

pub(super) async fn history(home: &Home, username: &str, json: bool) -> Result<()> {
    let client = home.open().await?;
    let is_contact = client.store().contact(username).await?.is_some();
    let group = if is_contact {
        None
    } else {
        client.find_group(username).await.ok()
    };
    if let Some(group) = group {
        let key = Client::group_history_key(&group);
        for message in client.store().history(&key).await? {
            let text = String::from_utf8_lossy(&message.body);
            let from = message.sender.as_deref().unwrap_or("?");
            if json {
                json_line(&HistoryLine {
                    device: message.sender_device,
                    from,
                    group: Some(&group.name),
                    status: None,
                    text: &text,
                    time: message.sent_at,
                })?;
            } else {
                println!("[{}] {from}: {text}", group.name);
            }
        }
        return Ok(());
    }
    for message in client
        .store()
        .history(&Conversation::direct(username))
        .await?
    {
        let text = String::from_utf8_lossy(&message.body);
        let from = if message.outgoing { "me" } else { username };
        if json {
            json_line(&HistoryLine {
                device: message.sender_device,
                from,
                group: None,
                status: Some(message.status),
                text: &text,
                time: message.sent_at,
            })?;
        } else if message.outgoing {
            let mark = match message.status {
                MessageStatus::Sent => "",
                MessageStatus::Delivered => "  (delivered)",
                MessageStatus::Read => "  (read)",
            };
            println!("{from}: {text}{mark}");
        } else {
            println!("{from}: {text}");
        }
    }
    Ok(())
}
