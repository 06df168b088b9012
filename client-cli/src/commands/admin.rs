//! `tacit admin ...`: the server's administration from this device, the same commands
//! and text as `tacit-server admin ...` on the server host (`audit` prints JSON lines).
//! What the server answers here is shown, never trusted for anything else.

use anyhow::{Context, Result, bail};
use tacit_api::{AdminUser, InviteInfo, Role, Timestamp};

use crate::cli::{AdminCommand, AdminInviteCommand};
use crate::home::Home;
use crate::output::json_line;

/// Entries asked for per page of `audit`.
const AUDIT_PAGE: u32 = 1000;

pub(super) async fn admin(home: &Home, command: AdminCommand) -> Result<()> {
    // Arguments first: a bad role or a missing --yes needs no store and no server.
    match &command {
        AdminCommand::Grant { role, .. } | AdminCommand::Revoke { role, .. } => {
            parse_role(role)?;
        }
        AdminCommand::Delete { username, yes } if !yes => bail!(
            "deleting {username} deletes their keys and waiting messages for good: run again \
             with --yes to confirm"
        ),
        _ => {}
    }
    let client = home.open().await?;
    let admin = client.admin();
    match command {
        AdminCommand::Users { search, json } => {
            let users = admin
                .users(search.as_deref())
                .await
                .context("listing users")?;
            if json {
                let list = tacit_api::AdminUserList { users, next: None };
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else {
                for user in &users {
                    print_user(user);
                }
                if users.is_empty() {
                    eprintln!("no users");
                }
            }
        }
        AdminCommand::User { username, json } => {
            let user = admin
                .user(&username)
                .await
                .with_context(|| format!("reading user {username}"))?;
            if json {
                println!("{}", serde_json::to_string_pretty(&user)?);
            } else {
                print_user(&user);
            }
        }
        AdminCommand::Disable { username } => {
            admin
                .disable(&username)
                .await
                .with_context(|| format!("disabling {username}"))?;
            println!("{username}: disabled");
        }
        AdminCommand::Enable { username } => {
            admin
                .enable(&username)
                .await
                .with_context(|| format!("enabling {username}"))?;
            println!("{username}: enabled");
        }
        AdminCommand::RemoveDevice {
            username,
            device_id,
        } => {
            admin
                .remove_device(&username, tacit_sdk::DeviceId(device_id))
                .await
                .with_context(|| format!("removing device {device_id} of {username}"))?;
            println!("{username}: device {device_id} removed");
        }
        AdminCommand::Delete { username, .. } => {
            admin
                .delete_user(&username)
                .await
                .with_context(|| format!("deleting {username}"))?;
            println!("{username}: account deleted (the name can be registered again)");
        }
        AdminCommand::Grant { username, role } => {
            let role = parse_role(&role)?;
            admin
                .grant(&username, role)
                .await
                .with_context(|| format!("granting {role} to {username}"))?;
            println!("{username}: {role} granted");
        }
        AdminCommand::Revoke { username, role } => {
            let role = parse_role(&role)?;
            admin
                .revoke(&username, role)
                .await
                .with_context(|| format!("revoking {role} from {username}"))?;
            println!("{username}: {role} revoked");
        }
        AdminCommand::Quota {
            username,
            max_devices,
            blob_quota_bytes,
        } => {
            let quota = tacit_api::SetQuotaRequest {
                max_devices,
                blob_quota_bytes,
            };
            admin
                .set_quota(&username, &quota)
                .await
                .with_context(|| format!("setting the quota of {username}"))?;
            println!("{username}: quota set");
        }
        AdminCommand::Invite(command) => match command {
            AdminInviteCommand::Create {
                expires_in,
                max_uses,
            } => {
                let request = tacit_api::CreateInviteRequest {
                    expires_in_secs: expires_in,
                    max_uses,
                };
                let created = admin
                    .create_invite(&request)
                    .await
                    .context("creating the invite")?;
                println!("{}", created.token);
            }
            AdminInviteCommand::List => {
                let list = admin.invites().await.context("listing invites")?;
                for invite in &list.invites {
                    println!("{}", invite_line(invite));
                }
            }
            AdminInviteCommand::Revoke { id } => {
                admin
                    .revoke_invite(&id)
                    .await
                    .with_context(|| format!("revoking invite {id}"))?;
                println!("invite {id} revoked");
            }
        },
        AdminCommand::Audit { after, limit } => {
            let mut after = after;
            let mut left = limit;
            while left != Some(0) {
                let ask = left.map_or(AUDIT_PAGE, |n| n.min(AUDIT_PAGE));
                let page = admin
                    .audit(after, Some(ask))
                    .await
                    .context("reading the audit log")?;
                let count = u32::try_from(page.entries.len()).unwrap_or(u32::MAX);
                for entry in &page.entries {
                    json_line(entry)?;
                }
                left = left.map(|n| n.saturating_sub(count));
                match page.next {
                    // A server that does not move forward must not keep us here.
                    Some(next) if count > 0 && after.is_none_or(|a| next > a) => {
                        after = Some(next);
                    }
                    _ => break,
                }
            }
        }
    }
    Ok(())
}

fn parse_role(name: &str) -> Result<Role> {
    Role::from_name(name)
        .with_context(|| format!("no role {name:?}: the roles are `admin` and `auditor`"))
}

/// A time for people: RFC 3339 in UTC, or `-`.
fn show_time(t: Option<Timestamp>) -> String {
    t.and_then(|t| {
        time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(t.0) * 1_000_000).ok()
    })
    .and_then(|t| {
        t.format(&time::format_description::well_known::Rfc3339)
            .ok()
    })
    .unwrap_or_else(|| "-".to_owned())
}

/// A user and their devices, as `tacit-server admin users` prints them.
fn print_user(user: &AdminUser) {
    let roles: Vec<&str> = user.roles.iter().map(|r| r.as_str()).collect();
    println!(
        "{}\tcreated={}\t{}\troles={}",
        user.username,
        show_time(Some(user.created_at)),
        if user.disabled_at.is_some() {
            format!("disabled={}", show_time(user.disabled_at))
        } else {
            "active".to_owned()
        },
        if roles.is_empty() {
            "member".to_owned()
        } else {
            roles.join(",")
        }
    );
    for d in &user.devices {
        println!(
            "  device {}\tname={}\tcreated={}\tlast_seen={}\tprekeys={}/{}\tmailbox={}",
            d.device_id.0,
            d.name.as_deref().unwrap_or("-"),
            show_time(Some(d.created_at)),
            show_time(d.last_seen_at),
            d.one_time_prekeys,
            d.one_time_kem_prekeys,
            d.mailbox_depth
        );
    }
}

/// An invite, as `tacit-server admin invite list` prints it.
fn invite_line(i: &InviteInfo) -> String {
    format!(
        "{}\tcreated={}\texpires={}\tuses={}/{}{}",
        i.id,
        show_time(Some(i.created_at)),
        show_time(i.expires_at),
        i.uses,
        i.max_uses,
        if i.revoked_at.is_some() {
            "\trevoked"
        } else {
            ""
        }
    )
}
