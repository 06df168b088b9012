//! The command line: clap's types for every command and its arguments.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "tacit",
    version,
    about = "End-to-end encrypted messaging through a Tacit server"
)]
pub(crate) struct Cli {
    /// The account's home directory.
    #[arg(long, env = "TACIT_HOME", global = true)]
    pub(crate) home: Option<PathBuf>,
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Subcommand)]
pub(crate) enum Command {
    /// Create an account on a server.
    Register {
        /// `https://host:port` (or `http://` to a loopback address).
        server: String,
        /// Username (3 to 32 of a-z, 0-9, `_`, `-`, `.`); with `--sso`, the identity
        /// provider's claim decides it and this may be left out.
        #[arg(required_unless_present = "sso")]
        username: Option<String>,
        /// Invite token, unless the server has open registration.
        #[arg(long, conflicts_with = "sso")]
        invite: Option<String>,
        /// Sign in with the server's identity provider (OpenID Connect) instead of an
        /// invite: prints `tacit: sign in at URL with code CODE (or open URL)` on stderr,
        /// waits for the sign-in, says `registering as NAME` and registers.
        #[arg(long)]
        sso: bool,
        /// How to sign in with `--sso`: `device` (a URL and a code, for any browser) or
        /// `pkce` (a URL to open on this machine; the answer comes back to a loopback port).
        #[arg(long, value_enum, default_value = "device", requires = "sso")]
        sso_flow: crate::sso::Flow,
        /// With `--sso`: the identity provider you expect (its issuer URL). The server
        /// names the provider, so without this a lying server could send you to a sign-in
        /// page of its choosing; with it, any other provider is refused before anything
        /// opens.
        #[arg(long, requires = "sso")]
        issuer: Option<String>,
        /// Trust exactly the server certificate with this SHA-256 fingerprint.
        #[arg(long, conflicts_with = "ca_file")]
        pin: Option<String>,
        /// Trust the CA certificate(s) in this PEM file.
        #[arg(long)]
        ca_file: Option<PathBuf>,
    },
    /// Send a text message (`-` reads it from standard input).
    Send {
        username: String,
        /// The text (it may begin with `-`; `-` alone reads standard input).
        #[arg(allow_hyphen_values = true)]
        text: String,
    },
    /// Send a file, end-to-end encrypted (streamed; an interrupted upload resumes).
    #[command(
        override_usage = "tacit send-file <USERNAME> <PATH>\n       tacit send-file --group <GROUP> <PATH>"
    )]
    SendFile {
        /// Send to this group instead of a user.
        #[arg(long)]
        group: Option<String>,
        /// The recipient (unless --group) and the file to send.
        #[arg(required = true, num_args = 1..=2, value_name = "USERNAME> <PATH")]
        args: Vec<String>,
    },
    /// Fetch, print and acknowledge what arrived; save received files after checking them.
    Recv {
        /// Keep polling up to this many seconds until something arrives.
        #[arg(long, default_value_t = 0)]
        wait: u64,
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
        /// Where received files are saved (default: `<home>/files`).
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
    },
    /// List contacts.
    Contacts,
    /// Show the safety number to compare with a contact.
    SafetyNumber { username: String },
    /// Mark a contact verified after comparing safety numbers.
    Verify { username: String },
    /// Accept a contact's changed identity key.
    Trust { username: String },
    /// Show the conversation with a contact.
    History {
        username: String,
        #[arg(long)]
        json: bool,
    },
    /// Show or set the disappearing-message timer of a conversation, for everyone in it:
    /// `30s`, `10m`, `1h`, `7d`, `1w`, or `off`. Messages (and received files, with their
    /// saved copies) are deleted on every device when their time is up.
    #[command(
        override_usage = "tacit disappearing <USERNAME> [DURATION|off]\n       tacit disappearing --group <GROUP> [DURATION|off]"
    )]
    Disappearing {
        /// A group's conversation instead of a user's.
        #[arg(long)]
        group: Option<String>,
        /// The user (unless --group), then the new timer (none: show the current one).
        #[arg(num_args = 0..=2, value_name = "USERNAME> <DURATION")]
        args: Vec<String>,
    },
    /// Stay connected and print messages as they arrive (until Ctrl-C).
    Listen {
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
    },
    /// Chat with a contact interactively: type a line to send it; Ctrl-D ends.
    Chat { username: String },
    /// Link devices to the account, list and remove them.
    #[command(subcommand)]
    Device(DeviceCommand),
    /// The account itself.
    #[command(subcommand)]
    Account(AccountCommand),
    /// Group chats.
    #[command(subcommand)]
    Group(GroupCommand),
    /// Administer the server from this device (needs the admin role; `audit` the auditor
    /// role): the same commands as `tacit-server admin` on the server host.
    #[command(subcommand)]
    Admin(AdminCommand),
}

#[derive(Subcommand)]
pub(crate) enum AdminCommand {
    /// List users with their devices (name, created, last seen, prekey stock, mailbox
    /// depth).
    Users {
        /// Only users whose name contains this.
        #[arg(long)]
        search: Option<String>,
        /// Print JSON (the API's AdminUserList) instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Show one user with their devices.
    User {
        username: String,
        /// Print JSON (the API's AdminUser) instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Disable a user: every credential refused, every socket closed.
    Disable { username: String },
    /// Enable a disabled user again.
    Enable { username: String },
    /// Remove one device of a user (not the last: delete the account instead).
    RemoveDevice { username: String, device_id: u32 },
    /// Delete a user's account (for one who lost every device); the name is free again.
    Delete {
        username: String,
        /// Confirm: the account's keys and waiting messages are deleted for good.
        #[arg(long)]
        yes: bool,
    },
    /// Grant a role (`admin` or `auditor`).
    Grant { username: String, role: String },
    /// Revoke a role.
    Revoke { username: String, role: String },
    /// Set a user's own limits; an option left out returns that limit to the server's.
    Quota {
        username: String,
        /// Most devices.
        #[arg(long, value_name = "N")]
        max_devices: Option<u32>,
        /// Most bytes of blobs.
        #[arg(long, value_name = "BYTES")]
        blob_quota_bytes: Option<u64>,
    },
    /// Manage invites with expiry and use counts.
    #[command(subcommand)]
    Invite(AdminInviteCommand),
    /// Print audit log entries as ECS-style JSON lines (auditor or admin), following
    /// pages to the end.
    Audit {
        /// Entries after this sequence number.
        #[arg(long, value_name = "SEQ")]
        after: Option<u64>,
        /// At most this many entries.
        #[arg(long, value_name = "N")]
        limit: Option<u32>,
    },
}

#[derive(Subcommand)]
pub(crate) enum AdminInviteCommand {
    /// Create an invite and print its token (alone) on stdout.
    Create {
        /// Seconds until it expires (default: never).
        #[arg(long, value_name = "SECS")]
        expires_in: Option<u64>,
        /// How many registrations it admits (default 1).
        #[arg(long, value_name = "N")]
        max_uses: Option<u32>,
    },
    /// List invites (id, created, expires, uses).
    List,
    /// Revoke an invite by its id (from `list`).
    Revoke { id: String },
}

#[derive(Subcommand)]
pub(crate) enum GroupCommand {
    /// Create a group with these members (you are its admin).
    Create {
        name: String,
        #[arg(required = true)]
        members: Vec<String>,
    },
    /// Add members (admins only; they read only what is sent from now on).
    Add {
        group: String,
        #[arg(required = true)]
        users: Vec<String>,
    },
    /// Remove members (admins only; they cannot read anything sent afterwards).
    Remove {
        group: String,
        #[arg(required = true)]
        users: Vec<String>,
    },
    /// Make members admins (admins only).
    Promote {
        group: String,
        #[arg(required = true)]
        users: Vec<String>,
    },
    /// Leave a group.
    Leave { group: String },
    /// List a group's members.
    Members {
        group: String,
        #[arg(long)]
        json: bool,
    },
    /// List your groups.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Send a text to a group (`-` reads it from standard input).
    Send {
        group: String,
        /// The text (it may begin with `-`; `-` alone reads standard input).
        #[arg(allow_hyphen_values = true)]
        text: String,
    },
}

#[derive(Subcommand)]
pub(crate) enum DeviceCommand {
    /// On a NEW device: show a link code, wait until an existing device approves it with
    /// `tacit device add CODE`, then join the account.
    Link {
        /// `https://host:port` of the account's server (or `http://` to loopback).
        server: String,
        /// A name for this device, shown in `device list`.
        #[arg(long)]
        name: Option<String>,
        /// Give up after this many seconds.
        #[arg(long, default_value_t = 600)]
        timeout: u64,
        /// Trust exactly the server certificate with this SHA-256 fingerprint.
        #[arg(long, conflicts_with = "ca_file")]
        pin: Option<String>,
        /// Trust the CA certificate(s) in this PEM file.
        #[arg(long)]
        ca_file: Option<PathBuf>,
        /// Join the account the answer names without asking (when standard input is a
        /// terminal, `tacit` otherwise asks before joining).
        #[arg(long)]
        yes: bool,
        /// Recover the account bound to your identity at the server's identity provider
        /// (OpenID Connect) onto this machine, instead of a link code. No other device takes
        /// part, so this device makes an identity key of its own, which becomes the
        /// account's: the account's other devices are signed out (needs
        /// `--replace-devices`) and contacts see a changed identity (they compare safety
        /// numbers and `trust` it). Use a link code while another device of the account is
        /// at hand.
        #[arg(long)]
        sso: bool,
        /// How to sign in with `--sso` (`device` or `pkce`, as for `register`).
        #[arg(long, value_enum, default_value = "device", requires = "sso")]
        sso_flow: crate::sso::Flow,
        /// With `--sso`: the identity provider you expect (as for `register`).
        #[arg(long, requires = "sso")]
        issuer: Option<String>,
        /// With `--sso`: consent to signing out (removing) every other device of the
        /// account.
        #[arg(long, requires = "sso")]
        replace_devices: bool,
    },
    /// On an EXISTING device: approve the new device that shows this link code.
    Add {
        /// The code (URL-safe base64, so it may begin with `-`).
        #[arg(allow_hyphen_values = true)]
        code: String,
    },
    /// List the account's devices.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Remove a device of the account (its access ends at once).
    Remove { id: u32 },
}

#[derive(Subcommand)]
pub(crate) enum AccountCommand {
    /// Delete the account on the server (all devices, keys and waiting messages) and the
    /// local store. The username becomes free.
    Delete {
        /// Confirm.
        #[arg(long)]
        yes: bool,
    },
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use clap::Parser as _;

    use super::*;

    /// Link codes are URL-safe base64 and texts are anything: either may begin with `-`
    /// (a link code did, one run in 64, and `device add` refused it as an unknown flag).
    #[test]
    fn values_may_begin_with_a_hyphen() {
        let cli = Cli::try_parse_from(["tacit", "device", "add", "-DtferRPXR-x8FZ"]).unwrap();
        assert!(matches!(
            cli.command,
            Command::Device(DeviceCommand::Add { code }) if code == "-DtferRPXR-x8FZ"
        ));
        let cli = Cli::try_parse_from(["tacit", "send", "bob", "-1 from me"]).unwrap();
        assert!(matches!(cli.command, Command::Send { text, .. } if text == "-1 from me"));
        let cli = Cli::try_parse_from(["tacit", "group", "send", "g", "--x"]).unwrap();
        assert!(matches!(
            cli.command,
            Command::Group(GroupCommand::Send { text, .. }) if text == "--x"
        ));
        let cli = Cli::try_parse_from(["tacit", "send", "bob", "-"]).unwrap();
        assert!(matches!(cli.command, Command::Send { text, .. } if text == "-"));
        // Flags still work where they are flags.
        assert!(Cli::try_parse_from(["tacit", "--bogus", "send", "bob", "x"]).is_err());
    }
}
