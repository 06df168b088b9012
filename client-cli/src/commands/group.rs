//! `tacit group …`: group chats.

use anyhow::Result;
use serde::Serialize;
use tacit_sdk::GroupInfo;

use super::read_text;
use crate::cli::GroupCommand;
use crate::home::Home;
use crate::output::json_line;

/// One member of a group as a JSON line (keys in alphabetical order, as always).
#[derive(Serialize)]
struct MemberLine<'a> {
    admin: bool,
    username: &'a str,
}

/// A group on one line: its name, the start of its id, and its members (admins marked).
fn describe(info: &GroupInfo) -> String {
    format!(
        "{} ({}): {}",
        info.name,
        &info.id.to_string()[..8],
        info.members
            .iter()
            .map(|m| if info.admins.contains(m) {
                format!("{m} (admin)")
            } else {
                m.clone()
            })
            .collect::<Vec<_>>()
            .join(", ")
    )
}

pub(super) async fn group(home: &Home, command: GroupCommand) -> Result<()> {
    let mut client = home.open().await?;
    match command {
        GroupCommand::Create { name, members } => {
            let info = client.create_group(&name, &members).await?;
            println!("created {}", describe(&info));
        }
        GroupCommand::Add { group, users } => {
            let info = client.add_members(&group, &users).await?;
            println!("{}", describe(&info));
        }
        GroupCommand::Remove { group, users } => {
            let info = client.remove_members(&group, &users).await?;
            println!("{}", describe(&info));
        }
        GroupCommand::Promote { group, users } => {
            let info = client.promote_members(&group, &users).await?;
            println!("{}", describe(&info));
        }
        GroupCommand::Leave { group } => {
            client.leave_group(&group).await?;
            println!("left {group}");
        }
        GroupCommand::Members { group, json } => {
            let info = client.find_group(&group).await?;
            for member in &info.members {
                let admin = info.admins.contains(member);
                if json {
                    json_line(&MemberLine {
                        admin,
                        username: member,
                    })?;
                } else {
                    println!("{member}{}", if admin { "\tadmin" } else { "" });
                }
            }
        }
        GroupCommand::List { json } => {
            for info in client.groups().await? {
                if json {
                    json_line(&info)?;
                } else {
                    println!("{}", describe(&info));
                }
            }
        }
        GroupCommand::Send { group, text } => {
            let text = read_text(text)?;
            client.send_group(&group, &text).await?;
        }
    }
    Ok(())
}
