//! Why a client operation failed.

use tacit_crypto::{
    AddressError, BadSignature, DecodeError, EncryptError, GroupEncryptError, ProvisionError,
};

use super::*;
use crate::client::link::LINK_CODE_CHARS;
use tacit_api::DeviceId;

/// Why a client operation failed.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The local store failed (wrong passphrase, damaged file, full disk, ...).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The server could not be reached or refused the request.
    #[error(transparent)]
    Transport(TransportError),
    /// An administrator disabled this account (`403 account_disabled`): every request of
    /// every device of it is refused until an administrator enables it again. Made from
    /// any [`TransportError::Api`] with that code.
    #[error(
        "this account is disabled by an administrator of the server; ask them to enable it \
         again"
    )]
    AccountDisabled,
    /// An administration request needs a role this account does not hold (`403
    /// forbidden`). Made by [`Admin`](crate::client::Admin)'s methods, which know which
    /// role each one needs.
    #[error(
        "this needs the {needs} role, which this account does not hold; an admin can grant \
         it (`tacit admin grant USER ROLE`, or `tacit-server admin grant` on the server host)"
    )]
    Forbidden {
        /// The role (or roles, `auditor or admin`) the request needs.
        needs: &'static str,
    },
    /// The server refused the identity provider's ID token (`401 id_token_refused`):
    /// expired, issued for another client, from another issuer, badly signed, or its
    /// username claim does not make a valid username. Made from any
    /// [`TransportError::Api`] with that code; `reason` is the server's message.
    #[error("the server refused the sign-in with the identity provider: {reason}; sign in again")]
    IdTokenRefused {
        /// The server's explanation.
        reason: String,
    },
    /// The ID token was already used once (`409 id_token_replayed`): each sign-in registers
    /// or adds a device at most once. Made from any [`TransportError::Api`] with that code.
    #[error("this sign-in was already used once; sign in with the identity provider again")]
    IdTokenReplayed,
    /// Signing in through the identity provider would replace the account's other devices
    /// (`409 conflict` from `POST /v1/devices/sso`), and the caller did not allow that
    /// ([`Client::add_device_sso`](crate::client::Client::add_device_sso)'s
    /// `replace_devices`). Nothing changed.
    #[error(
        "the account already has devices, and a device signed in through the identity \
         provider replaces them all (it cannot receive the account identity, so the other \
         devices are signed out and contacts see a new identity): link from one of them \
         instead, or allow the replacement"
    )]
    SsoWouldReplaceDevices,
    /// A disappearing-message timer longer than the organisation's maximum (or off, while
    /// there is one) was refused; nothing was sent.
    #[error(
        "the organisation keeps messages at most {} (the server's policy); a timer of {} is \
         not allowed",
        crate::client::describe_duration(*.max),
        if *.seconds == 0 { "off (keep forever)".to_owned() } else { crate::client::describe_duration(*.seconds) }
    )]
    TimerAbovePolicy {
        /// The timer asked for (0: off).
        seconds: u64,
        /// The organisation's maximum.
        max: u64,
    },
    /// A disappearing-message timer longer than ten years was refused.
    #[error("a disappearing-message timer is at most ten years ({0} seconds asked)")]
    TimerTooLong(u64),
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
        reason: BadKey,
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
    Inconsistent(#[from] Inconsistent),
    /// A device of our own account has an identity key that is not the account's: a device
    /// someone else added (or a server that lies). Nothing was sent to it.
    #[error(
        "device {0} of your account has a different identity key; if you did not link it, remove it with `device remove {0}`"
    )]
    ForeignDevice(DeviceId),
    /// Device linking failed.
    #[error("device link failed: {0}")]
    Link(#[from] LinkError),
    /// A group operation was refused.
    #[error("{0}")]
    Group(#[from] GroupError),
    /// The server claimed something that our own state contradicts (a device of someone
    /// who is not in the conversation, a device list or bundle of another user, ...). The
    /// claim was not acted on; the variant says what was refused.
    #[error("refused what the server claimed: {0}")]
    ServerClaimRefused(#[from] ServerClaim),
    /// Sending or saving a file failed.
    #[error(transparent)]
    File(#[from] crate::files::FileError),
}

impl From<TransportError> for ClientError {
    /// Wraps a transport error, except that the server's `account_disabled`,
    /// `id_token_refused` and `id_token_replayed` become [`ClientError::AccountDisabled`],
    /// [`ClientError::IdTokenRefused`] and [`ClientError::IdTokenReplayed`] wherever they
    /// come from.
    fn from(error: TransportError) -> Self {
        match error {
            TransportError::Api { code, .. }
                if code == api::ErrorCode::AccountDisabled.as_str() =>
            {
                Self::AccountDisabled
            }
            TransportError::Api { code, message }
                if code == api::ErrorCode::IdTokenRefused.as_str() =>
            {
                Self::IdTokenRefused { reason: message }
            }
            TransportError::Api { code, .. }
                if code == api::ErrorCode::IdTokenReplayed.as_str() =>
            {
                Self::IdTokenReplayed
            }
            other => Self::Transport(other),
        }
    }
}

/// What was wrong with a key or bundle the server handed out.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum BadKey {
    /// A key or signature does not decode.
    #[error(transparent)]
    Malformed(#[from] DecodeError),
    /// A prekey's signature does not verify under the identity key.
    #[error(transparent)]
    Signature(#[from] BadSignature),
}

/// Which local state is missing or unreadable.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum Inconsistent {
    /// A record this client wrote (account, group state, payload) does not (de)serialize.
    #[error(transparent)]
    Record(#[from] serde_json::Error),
    /// A stored key, chain or record does not decode.
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// A username and device do not make an address (too long a name).
    #[error(transparent)]
    Address(#[from] AddressError),
    /// The operating system's random number generator failed.
    #[error(transparent)]
    Random(#[from] getrandom::Error),
    /// The account record is there but the identity is not.
    #[error("identity missing")]
    IdentityMissing,
    /// A stored session does not decode.
    #[error("stored session: {0}")]
    StoredSession(DecodeError),
    /// The active session was deleted between choosing it and encrypting under it.
    #[error("the session went away while sending; send again")]
    SessionGone,
    /// Another session became the active one between choosing it and encrypting under it.
    #[error("the active session changed while sending; send again")]
    SessionChanged,
    /// A pairwise session refused to encrypt.
    #[error(transparent)]
    Encrypt(#[from] EncryptError),
    /// Our sender-key chain for a group refused to encrypt.
    #[error(transparent)]
    GroupEncrypt(#[from] GroupEncryptError),
    /// Our sender-key chain for a group was deleted between choosing it and using it.
    #[error("our chain went away")]
    ChainGone,
    /// Our own group file message, handled as received, was refused (the sentence says why).
    #[error("{0}")]
    OwnGroupFile(String),
    /// The timer just stored could not be read back.
    #[error("the disappearing-message timer went away while it was set")]
    TimerLost,
}

/// Why linking a device failed (on either side).
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum LinkError {
    /// The server's channel id is not the length a channel id has.
    #[error("the server sent a malformed channel id")]
    MalformedChannel,
    /// The server no longer knows the channel.
    #[error("the link code expired; start again with a new one")]
    Expired,
    /// No device answered before the timeout or the code's expiry.
    #[error("no device approved the link in time; start again with a new code")]
    TimedOut,
    /// The answer was not made under the link code's secret.
    #[error(
        "the answer was not made by a device that saw the link code (the server or another \
         account answered it); nothing was linked: start again with a new code"
    )]
    NotFromLinkCode,
    /// The answer fails to open for another reason.
    #[error("the answer does not open: {0}")]
    AnswerDoesNotOpen(ProvisionError),
    /// The answer opens but is not a link payload.
    #[error("the answer is not a link payload")]
    NotALinkPayload,
    /// The account identity in the answer does not decode.
    #[error("the account identity is malformed: {0}")]
    MalformedIdentity(DecodeError),
    /// The user declined to join the account the answer names.
    #[error("declined to join {username}; nothing was linked")]
    Declined {
        /// The account the answer named.
        username: String,
    },
    /// The link code does not decode to the length a link code has.
    #[error("malformed link code (copy all {LINK_CODE_CHARS} characters)")]
    MalformedCode,
    /// The link code's secret part is not the length a link secret has.
    #[error("malformed link code")]
    MalformedSecret,
    /// The server knows no channel of the code.
    #[error("unknown or expired link code")]
    UnknownCode,
    /// The channel was already answered.
    #[error("this link code was already used")]
    CodeUsed,
    /// The new device's key on the server does not decode.
    #[error("the new device's key is malformed: {0}")]
    MalformedDeviceKey(DecodeError),
    /// The new device's key on the server is not the one the code names.
    #[error(
        "the key on the server does not match the link code: someone may be interfering; \
         nothing was sent"
    )]
    KeyMismatch,
    /// Sealing the answer to the new device failed.
    #[error(transparent)]
    Seal(ProvisionError),
    /// `device remove` named the device in use.
    #[error("this is the device you are using; remove it from another device")]
    RemoveThisDevice,
}

/// Why a group operation was refused.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum GroupError {
    /// No group of ours has this name or id (prefix).
    #[error("no group {0:?}")]
    NotFound(String),
    /// Several groups of ours have this name or id prefix.
    #[error("{0:?} names several groups; use the id")]
    Ambiguous(String),
    /// A group name must be 1 to 64 bytes without control characters.
    #[error("a group name is 1 to 64 bytes, no control characters")]
    BadName,
    /// A new group must have a member besides us.
    #[error("a group needs another member")]
    NeedsAnotherMember,
    /// Our username is too long to bind a group id to.
    #[error("username too long")]
    UsernameTooLong,
    /// The group's log holds the most changes kept.
    #[error("{group} has had {max} membership changes, the most kept; make a new group")]
    TooManyChanges {
        /// The group's name.
        group: String,
        /// The most changes kept.
        max: usize,
    },
    /// A name in a change is too long to encode.
    #[error("a name is too long")]
    NameTooLong,
    /// Only an admin may make this change.
    #[error("only an admin of {group} can do that")]
    NotAdmin {
        /// The group's name.
        group: String,
    },
    /// Every user to add is a member already.
    #[error("they are all members already")]
    AlreadyMembers,
    /// None of the users to remove is a member.
    #[error("none of them is a member")]
    NoneAreMembers,
    /// A user to promote is not a member.
    #[error("{user} is not a member")]
    NotAMember {
        /// The user.
        user: String,
    },
    /// The group is listed but its state is not in the store.
    #[error("group state missing")]
    StateMissing,
    /// We are the group's only member.
    #[error("the group has no other member")]
    NoOtherMember,
    /// No member has a device to send to.
    #[error("no member has a device")]
    NoMemberDevices,
    /// A group id that is not exactly 32 lowercase hex digits.
    #[error("malformed group id")]
    MalformedId,
}

/// A claim of the server that our own state contradicts, refused before it was acted on.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum ServerClaim {
    /// A device list of another user than the one asked for.
    #[error("asked for {asked}'s devices, the server answered with {answered}'s")]
    DevicesOfAnother {
        /// Whose devices were asked for.
        asked: String,
        /// Whose the answer says they are.
        answered: String,
    },
    /// Bundles of another user than the one asked for.
    #[error("asked for {asked}'s bundles, the server answered with {answered}'s")]
    BundlesOfAnother {
        /// Whose bundles were asked for.
        asked: String,
        /// Whose the answer says they are.
        answered: String,
    },
    /// A bundle for a device that was not asked for (or twice for one device).
    #[error("the server answered with a bundle for {username}.{device}, which was not asked for")]
    UnaskedBundle {
        /// The user.
        username: String,
        /// The device.
        device: DeviceId,
    },
    /// A device of a stranger named as a device to send a pairwise message to.
    #[error(
        "the server named {named}.{device} as a device of a message to {recipient}; nothing \
         was sent to {named}"
    )]
    DeviceOfStranger {
        /// The user the server named.
        named: String,
        /// Their device.
        device: DeviceId,
        /// The message's recipient.
        recipient: String,
    },
    /// A username that breaks the username rules, as the name of our own account.
    #[error("the server named our account {answered:?}, which is not a valid username")]
    InvalidUsername {
        /// What the server answered.
        answered: String,
    },
    /// This device named as one to send to.
    #[error("the server named this device as one to send to; nothing was sent")]
    ThisDevice,
    /// A device of a non-member named as a device of a group.
    #[error(
        "the server named {user}.{device} as a device of group {group}, but {user} is not a \
         member; nothing was sent to {user}"
    )]
    DeviceOfNonMember {
        /// The user the server named.
        user: String,
        /// Their device.
        device: DeviceId,
        /// The group's name.
        group: String,
    },
    /// A member device named as missing that the member's device list does not have.
    #[error(
        "the server named {user}.{device} as missing from {group}, but does not list it \
         among {user}'s devices; nothing was sent"
    )]
    UnlistedDevice {
        /// The member.
        user: String,
        /// The device named.
        device: DeviceId,
        /// The group's name.
        group: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api_error(code: api::ErrorCode, message: &str) -> TransportError {
        TransportError::Api {
            code: code.as_str().to_owned(),
            message: message.to_owned(),
        }
    }

    #[test]
    fn id_token_refused_keeps_the_servers_reason() {
        let error = ClientError::from(api_error(api::ErrorCode::IdTokenRefused, "token expired"));
        assert!(
            matches!(&error, ClientError::IdTokenRefused { reason } if reason == "token expired"),
            "{error:?}"
        );
        assert!(error.to_string().contains("token expired"), "{error}");
    }

    #[test]
    fn id_token_replayed_says_to_sign_in_again() {
        let error = ClientError::from(api_error(api::ErrorCode::IdTokenReplayed, "used"));
        assert!(matches!(error, ClientError::IdTokenReplayed), "{error:?}");
        assert!(error.to_string().contains("sign in"), "{error}");
    }

    #[test]
    fn other_api_errors_stay_transport_errors() {
        let error = ClientError::from(api_error(api::ErrorCode::Unauthorized, "no"));
        assert!(matches!(error, ClientError::Transport(_)), "{error:?}");
    }
}
