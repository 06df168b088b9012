//! Why a client operation failed.

use super::*;

/// Why a client operation failed.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The local store failed (wrong passphrase, damaged file, full disk, ...).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The server could not be reached or refused the request.
    #[error(transparent)]
    Transport(#[from] TransportError),
    /// The home directory holds no account yet.
    #[error("no account here yet: register first")]
    NotRegistered,
    /// The home directory already holds an account.
    #[error("this home directory already holds the account {0}")]
    AlreadyRegistered(String),
    /// The contact's identity key changed since it was pinned; nothing was sent.
    #[error(
        "{username}'s identity key has changed{}: compare safety numbers, then accept it with `trust`",
        if *.verified { " (they were VERIFIED)" } else { "" }
    )]
    IdentityChanged {
        /// The contact.
        username: String,
        /// Whether the old key had been verified.
        verified: bool,
    },
    /// The user has no devices (or does not exist).
    #[error("{0} has no devices to send to")]
    NoDevices(String),
    /// A prekey bundle or key from the server is malformed or badly signed.
    #[error("bad key material from the server for {username}: {reason}")]
    BadBundle {
        /// Whose bundle.
        username: String,
        /// What was wrong.
        reason: String,
    },
    /// Session setup failed.
    #[error("session setup failed: {0}")]
    Setup(#[from] SetupError),
    /// The device set kept changing while sending.
    #[error("the recipient's devices kept changing; try again")]
    DevicesUnstable,
    /// We have never talked to this user.
    #[error("unknown contact {0}")]
    UnknownContact(String),
    /// The server has no account of this name.
    #[error("no user {0} on this server")]
    UnknownUser(String),
    /// Local state that should be there is missing or unreadable.
    #[error("local state is inconsistent: {0}")]
    Inconsistent(String),
    /// A device of our own account has an identity key that is not the account's: a device
    /// someone else added (or a server that lies). Nothing was sent to it.
    #[error(
        "device {0} of your account has a different identity key; if you did not link it, remove it with `device remove {0}`"
    )]
    ForeignDevice(u32),
    /// Device linking failed.
    #[error("device link failed: {0}")]
    Link(String),
    /// A group operation was refused.
    #[error("{0}")]
    Group(String),
    /// The server claimed something that our own state contradicts (a device of someone
    /// who is not in the conversation, a device list or bundle of another user, ...). The
    /// claim was not acted on; the sentence says what was refused.
    #[error("refused what the server claimed: {0}")]
    ServerClaimRefused(String),
    /// Sending or saving a file failed.
    #[error(transparent)]
    File(#[from] crate::files::FileError),
}
