//! `tacit disappearing`: show or set a conversation's disappearing-message timer.

use anyhow::{Result, bail};
use tacit_sdk::{Client, Conversation, describe_duration, parse_duration};

use crate::home::Home;

pub(super) async fn disappearing(home: &Home, group: Option<&str>, args: &[String]) -> Result<()> {
    let (target, duration) = match (group, args) {
        (Some(group), []) => (group.to_owned(), None),
        (Some(group), [duration]) => (group.to_owned(), Some(duration.as_str())),
        (None, [username]) => (username.clone(), None),
        (None, [username, duration]) => (username.clone(), Some(duration.as_str())),
        (Some(_), _) => {
            bail!("with --group, give only the duration: disappearing --group GROUP 1h")
        }
        (None, _) => bail!("give the user, then the duration: disappearing USERNAME 1h (or off)"),
    };
    let mut client = home.open().await?;
    let (conversation, shown) = match group {
        Some(_) => {
            let info = client.find_group(&target).await?;
            (
                Client::group_history_key(&info),
                format!("group {}", info.name),
            )
        }
        None => (Conversation::direct(&target), target.clone()),
    };
    let Some(duration) = duration else {
        match client.disappearing(&conversation).await? {
            Some(timer) if timer.seconds > 0 => println!(
                "disappearing messages with {shown}: {} (set by {})",
                describe_duration(timer.seconds),
                timer.set_by
            ),
            _ => println!("disappearing messages with {shown}: off"),
        }
        if let Some(max) = client.disappearing_max().await? {
            println!(
                "the organisation keeps messages at most {}",
                describe_duration(max)
            );
        }
        return Ok(());
    };
    let Some(seconds) = parse_duration(duration) else {
        bail!(
            "{duration:?} is not a duration: give seconds, or a number with s, m, h, d or w \
             (30s, 10m, 1h, 7d, 1w; at most ten years), or off"
        );
    };
    let timer = client.set_disappearing(&conversation, seconds).await?;
    match timer.seconds {
        0 => println!("disappearing messages with {shown}: off"),
        s => println!(
            "disappearing messages with {shown}: {} (new messages disappear that long after \
             they are sent, on every device)",
            describe_duration(s)
        ),
    }
    Ok(())
}
