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
    /// Disappearing messages only: when it is deleted (milliseconds since the Unix epoch).
    #[serde(skip_serializing_if = "Option::is_none")]
    expires: Option<i64>,
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

/// ` (disappears in 59m 58s)` for a message that disappears, or nothing.
fn countdown(expires: Option<i64>) -> String {
    let Some(at) = expires else {
        return String::new();
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
    let left = u64::try_from(at.saturating_sub(now) / 1000)
        .unwrap_or(0)
        .max(1);
    format!("  (disappears in {})", tacit_sdk::describe_duration(left))
}

/// The timer line above a history (text only): what new messages do.
async fn timer_line(client: &Client, conversation: &Conversation) -> Result<()> {
    if let Some(timer) = client.disappearing(conversation).await?
        && timer.seconds > 0
    {
        println!(
            "-- disappearing messages: {} (set by {}) --",
            tacit_sdk::describe_duration(timer.seconds),
            timer.set_by
        );
    }
    Ok(())
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
        if !json {
            timer_line(&client, &key).await?;
        }
        for message in client.store().history(&key).await? {
            let text = String::from_utf8_lossy(&message.body);
            let from = message.sender.as_deref().unwrap_or("?");
            if json {
                json_line(&HistoryLine {
                    device: message.sender_device,
                    expires: message.expires_at,
                    from,
                    group: Some(&group.name),
                    status: None,
                    text: &text,
                    time: message.sent_at,
                })?;
            } else {
                println!(
                    "[{}] {from}: {text}{}",
                    group.name,
                    countdown(message.expires_at)
                );
            }
        }
        return Ok(());
    }
    let conversation = Conversation::direct(username);
    if !json {
        timer_line(&client, &conversation).await?;
    }
    for message in client.store().history(&conversation).await? {
        let text = String::from_utf8_lossy(&message.body);
        let from = if message.outgoing { "me" } else { username };
        if json {
            json_line(&HistoryLine {
                device: message.sender_device,
                expires: message.expires_at,
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
            println!("{from}: {text}{mark}{}", countdown(message.expires_at));
        } else {
            println!("{from}: {text}{}", countdown(message.expires_at));
        }
    }
    Ok(())
}
