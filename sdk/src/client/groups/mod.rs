//! Groups: state kept by the clients, sender keys, and one multicast per message.
//!
//! A group's state (id, name, members, admins) lives only in the members' stores and
//! travels only inside pairwise end-to-end encrypted messages (`group_update`), which the
//! pairwise sessions authenticate. Each change names an epoch, and a member applies the
//! changes it holds in (epoch, digest) order, each only if its author is an admin at that
//! place (or, for leaving, a member, and then only the leaver's removal), so concurrent
//! changes end the same way on every member whatever the delivery order (see
//! `membership`), and a member the server invents is never accepted. A group id is bound
//! to its creator, so only the creator's `Create` introduces a group.
//!
//! The server's answers are claims: a multicast's device-mismatch answer that names anyone
//! but a member (or our own account) is refused whole, so our chain goes only to the
//! members in our own roster; a member device reported stale makes us start a new chain.
//!
//! Each member encrypts its group messages with its own sender-key chain
//! ([`tacit_crypto::SenderKeyState`]) and hands the chain to the other members over the
//! pairwise sessions (`sender_key`) before first use; the message is then encrypted once and
//! sent as one multicast. When a member is removed or leaves, every remaining member drops
//! its chain and starts a new one at its next send, which only the remaining members
//! receive: a removed member can read nothing sent after its removal. A member added later
//! gets each chain at its current position and so reads only what is sent from then on.
//!
//! Inside every group message the sender names itself (user and device); a message whose
//! inner sender is not the envelope's sender is refused, so a member cannot pass another
//! member's chain off as its own.

use std::collections::{BTreeMap, BTreeSet};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};
use tacit_api as api;
use tacit_api::DeviceId;
use tacit_crypto::{
    GroupId, SenderKeyDistribution, SenderKeyMessage, SenderKeyRecord, SenderKeyState,
};
use zeroize::Zeroizing;

use super::{
    Client, ClientError, GroupError, Incoming, IncomingKind, Inconsistent, ServerClaim, random_id,
    rng,
};
use crate::store::{Conversation, GroupStore as _, SenderKeyStore};
use crate::transport::TransportError;

mod membership;

use membership::{Base, Change};

/// The version of the `group_update` payload: 2 carries the change's epoch and users.
const GROUP_UPDATE_VERSION: u8 = 2;

/// How many times a group send is retried after the server reports changed device sets.
const GROUP_SEND_ATTEMPTS: usize = 4;

/// A group as this device knows it.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct GroupInfo {
    /// The group id (32 hex digits in JSON).
    pub id: GroupId,
    /// Its name.
    pub name: String,
    /// The members' usernames.
    pub members: BTreeSet<String>,
    /// The admins' usernames (always members).
    pub admins: BTreeSet<String>,
    /// Who created the group. The id is bound to the creator and `salt` (SECURITY.md,
    /// "The client's rules"), so no one else can pass off a `Create` for it. Empty for a
    /// group made before ids were bound.
    #[serde(default)]
    pub creator: String,
    /// The random salt of the id (32 hex digits).
    #[serde(default)]
    pub salt: String,
}

/// The state kept per group (sealed in the store).
#[derive(Serialize, Deserialize, Debug, Clone)]
struct GroupState {
    info: GroupInfo,
    /// Members (and, as `me`, our own other devices) that hold our current chain.
    #[serde(default)]
    have_our_key: BTreeSet<String>,
    /// Each member's devices as last confirmed by the server.
    #[serde(default)]
    devices: BTreeMap<String, BTreeSet<DeviceId>>,
    /// Where this device's view of the membership starts (`None` in a state kept before
    /// epochs: `info` at epoch 0).
    #[serde(default)]
    base: Option<Base>,
    /// Every membership change since the base, applied in (epoch, digest) order.
    #[serde(default)]
    log: Vec<Change>,
}

impl GroupState {
    fn new(base: Base) -> Self {
        Self {
            info: base.info.clone(),
            have_our_key: BTreeSet::new(),
            devices: BTreeMap::new(),
            base: Some(base),
            log: Vec::new(),
        }
    }

    fn base(&self) -> Base {
        self.base.clone().unwrap_or_else(|| Base {
            info: self.info.clone(),
            epoch: 0,
            digest: String::new(),
        })
    }
}

/// A membership change, as carried in a `group_update` payload.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum GroupChange {
    /// The group was created with us in it.
    Create,
    /// Members were added.
    Add,
    /// Members were removed.
    Remove,
    /// The sender left.
    Leave,
    /// Members were made admins.
    Promote,
}

/// The plaintext of a group message (inside the sender-key encryption), as JSON:
/// `{"v": 1, "kind": "text" | "file", "id", "from", "from_device", "ts", ...}`.
#[derive(Serialize, Deserialize)]
struct GroupPayload {
    v: u8,
    id: String,
    /// The sender, checked against the envelope.
    from: String,
    from_device: DeviceId,
    /// When the sender sent it (its clock, milliseconds since the Unix epoch); shown instead
    /// of the server's time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    ts: Option<i64>,
    /// With texts and files: the group's disappearing-message timer as the sender had it
    /// (seconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    expire: Option<u64>,
    /// What the message is (the `kind` field and its own fields).
    #[serde(flatten)]
    content: GroupContent,
}

/// What a group message is, by its `kind`.
#[derive(Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum GroupContent {
    /// A text.
    Text {
        #[serde(default)]
        body: String,
    },
    /// A file: its descriptor (blob id, key, digest, size, name).
    File { file: crate::files::FileDescriptor },
    /// The group's disappearing-message timer changed (`ts` says when; 0: off).
    Timer { seconds: u64 },
    /// A kind this version does not know (a newer client's).
    #[serde(other)]
    Unknown,
}

/// `group_update` and `sender_key` pairwise payload bodies.
///
/// Version 2 of `group_update` adds `v`, `epoch` and `users`; a member applies only what the
/// change does (`change` of `users` at `epoch`), and reads `group` (the sender's view
/// after it) only when the update introduces the group to it. An update without `v` (from
/// a client before epochs) is refused.
#[derive(Serialize, Deserialize, Debug, Clone)]
pub(super) struct GroupUpdate {
    #[serde(default)]
    v: u8,
    change: GroupChange,
    group: GroupInfo,
    /// One more than the highest epoch the sender had seen (0 for a `Create`).
    #[serde(default)]
    epoch: u64,
    /// Whom the change adds, removes or promotes.
    #[serde(default)]
    users: BTreeSet<String>,
}

#[derive(Serialize, Deserialize)]
pub(super) struct SenderKeyBody {
    group_id: GroupId,
    /// [`SenderKeyDistribution::to_bytes`], base64: it holds the chain key.
    distribution: String,
}

impl Drop for SenderKeyBody {
    fn drop(&mut self) {
        use zeroize::Zeroize as _;
        self.distribution.zeroize();
    }
}

fn inconsistent(e: impl Into<Inconsistent>) -> ClientError {
    ClientError::Inconsistent(e.into())
}

impl Client {
    async fn load_group(&self, id: GroupId) -> Result<Option<GroupState>, ClientError> {
        match self.store.group(id).await? {
            Some(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(inconsistent),
            None => Ok(None),
        }
    }

    async fn save_group(&self, state: &GroupState) -> Result<(), ClientError> {
        let bytes = Zeroizing::new(serde_json::to_vec(state).map_err(inconsistent)?);
        self.store.put_group(state.info.id, &bytes).await?;
        Ok(())
    }

    /// The groups this device is a member of.
    pub async fn groups(&self) -> Result<Vec<GroupInfo>, ClientError> {
        let mut out = Vec::new();
        for (_, bytes) in self.store.groups().await? {
            let state: GroupState = serde_json::from_slice(&bytes).map_err(inconsistent)?;
            out.push(state.info);
        }
        Ok(out)
    }

    /// Finds one of our groups by name or by (a prefix of) its id.
    pub async fn find_group(&self, name_or_id: &str) -> Result<GroupInfo, ClientError> {
        let groups = self.groups().await?;
        let by_name: Vec<_> = groups.iter().filter(|g| g.name == name_or_id).collect();
        let found: Vec<_> = if by_name.is_empty() {
            groups
                .iter()
                .filter(|g| name_or_id.len() >= 4 && g.id.to_string().starts_with(name_or_id))
                .collect()
        } else {
            by_name
        };
        match found.as_slice() {
            [one] => Ok((*one).clone()),
            [] => Err(GroupError::NotFound(name_or_id.to_owned()).into()),
            _ => Err(GroupError::Ambiguous(name_or_id.to_owned()).into()),
        }
    }

    /// A group's conversation (what [`Store::history`](crate::store::Store::history)
    /// takes).
    #[must_use]
    pub fn group_history_key(info: &GroupInfo) -> Conversation {
        Conversation::Group(info.id)
    }

    /// Creates a group with us as its admin and tells every member.
    pub async fn create_group(
        &mut self,
        name: &str,
        members: &[String],
    ) -> Result<GroupInfo, ClientError> {
        if name.is_empty() || name.len() > 64 || name.chars().any(char::is_control) {
            return Err(GroupError::BadName.into());
        }
        let me = self.account.username.clone();
        let mut all: BTreeSet<String> = members.iter().cloned().collect();
        all.remove(&me);
        if all.is_empty() {
            return Err(GroupError::NeedsAnotherMember.into());
        }
        all.insert(me.clone());
        let salt = GroupId::generate(&mut rng()).0;
        let info = GroupInfo {
            id: bound_group_id(&me, &salt).ok_or(GroupError::UsernameTooLong)?,
            name: name.to_owned(),
            members: all,
            admins: BTreeSet::from([me.clone()]),
            creator: me,
            salt: hex::encode(salt),
        };
        let state = GroupState::new(Base {
            info: info.clone(),
            epoch: 0,
            digest: String::new(),
        });
        self.save_group(&state).await?;
        self.broadcast_update(
            &info,
            GroupChange::Create,
            0,
            &BTreeSet::new(),
            &info.members,
        )
        .await?;
        Ok(info)
    }

    /// Makes a change of ours at the next epoch: logs it, applies it, and returns the
    /// change and the roster before it.
    async fn make_change(
        &self,
        state: &mut GroupState,
        change: GroupChange,
        users: BTreeSet<String>,
    ) -> Result<(Change, GroupInfo), ClientError> {
        let base = state.base();
        if state.log.len() >= membership::MAX_CHANGES {
            return Err(GroupError::TooManyChanges {
                group: state.info.name.clone(),
                max: membership::MAX_CHANGES,
            }
            .into());
        }
        let epoch = membership::next_epoch(&base, &state.log);
        let id = state.info.id;
        let me = self.account.username.clone();
        let change =
            Change::new(&id.0, epoch, &me, change, users).ok_or(GroupError::NameTooLong)?;
        state.log.push(change.clone());
        let before = state.info.clone();
        let folded = membership::fold(&base, &state.log);
        if folded.superseded.contains(&change.digest) {
            return Err(GroupError::NotAdmin {
                group: state.info.name.clone(),
            }
            .into());
        }
        state.base = Some(base);
        state.info = folded.info;
        Ok((change, before))
    }

    /// Adds members (admins only).
    pub async fn add_members(
        &mut self,
        group: &str,
        users: &[String],
    ) -> Result<GroupInfo, ClientError> {
        let state = self.admin_state(group).await?;
        let users: BTreeSet<String> = users
            .iter()
            .filter(|u| !state.info.members.contains(*u))
            .cloned()
            .collect();
        if users.is_empty() {
            return Err(GroupError::AlreadyMembers.into());
        }
        self.commit_change(state, GroupChange::Add, users).await
    }

    /// Removes members (admins only) and rotates our sender key; every remaining member
    /// rotates theirs when the update reaches them.
    pub async fn remove_members(
        &mut self,
        group: &str,
        users: &[String],
    ) -> Result<GroupInfo, ClientError> {
        let state = self.admin_state(group).await?;
        let removed: BTreeSet<String> = users
            .iter()
            .filter(|u| state.info.members.contains(*u) && **u != self.account.username)
            .cloned()
            .collect();
        if removed.is_empty() {
            return Err(GroupError::NoneAreMembers.into());
        }
        self.commit_change(state, GroupChange::Remove, removed)
            .await
    }

    /// Makes members admins (admins only).
    pub async fn promote_members(
        &mut self,
        group: &str,
        users: &[String],
    ) -> Result<GroupInfo, ClientError> {
        let state = self.admin_state(group).await?;
        for user in users {
            if !state.info.members.contains(user) {
                return Err(GroupError::NotAMember { user: user.clone() }.into());
            }
        }
        let users = users.iter().cloned().collect();
        self.commit_change(state, GroupChange::Promote, users).await
    }

    /// Makes an admin's change (see [`Self::make_change`]), drops the chains of whom it
    /// removes, stores the group and tells everyone who was or is a member (the removed
    /// too, so that they stop).
    async fn commit_change(
        &mut self,
        mut state: GroupState,
        kind: GroupChange,
        users: BTreeSet<String>,
    ) -> Result<GroupInfo, ClientError> {
        let (change, before) = self.make_change(&mut state, kind, users).await?;
        if kind == GroupChange::Remove {
            self.forget_members(&mut state, &change.users).await?;
        }
        self.save_group(&state).await?;
        let info = state.info.clone();
        let told: BTreeSet<String> = before.members.union(&info.members).cloned().collect();
        self.broadcast_update(&info, change.change, change.epoch, &change.users, &told)
            .await?;
        Ok(info)
    }

    /// Leaves a group: tells the members, then forgets the group and its keys.
    pub async fn leave_group(&mut self, group: &str) -> Result<(), ClientError> {
        let info = self.find_group(group).await?;
        let mut state = self
            .load_group(info.id)
            .await?
            .ok_or(GroupError::StateMissing)?;
        let (change, before) = self
            .make_change(&mut state, GroupChange::Leave, BTreeSet::new())
            .await?;
        self.broadcast_update(
            &state.info,
            change.change,
            change.epoch,
            &change.users,
            &before.members,
        )
        .await?;
        self.forget_group(info.id).await
    }

    async fn admin_state(&self, group: &str) -> Result<GroupState, ClientError> {
        let info = self.find_group(group).await?;
        let state = self
            .load_group(info.id)
            .await?
            .ok_or(GroupError::StateMissing)?;
        if !state.info.admins.contains(&self.account.username) {
            return Err(GroupError::NotAdmin {
                group: state.info.name.clone(),
            }
            .into());
        }
        Ok(state)
    }

    async fn forget_group(&self, id: GroupId) -> Result<(), ClientError> {
        self.store.delete_group(id).await?;
        Ok(())
    }

    /// Drops removed members' chains and our own (a new one is made at the next send).
    async fn forget_members(
        &self,
        state: &mut GroupState,
        removed: &BTreeSet<String>,
    ) -> Result<(), ClientError> {
        let id = state.info.id;
        forget_members(&self.store, id, removed).await?;
        for user in removed {
            state.devices.remove(user);
        }
        state.have_our_key.clear();
        Ok(())
    }

    /// Sends a `group_update` to each of `to` (but us) over the pairwise sessions; our own
    /// other devices get a copy with each send.
    async fn broadcast_update(
        &mut self,
        info: &GroupInfo,
        change: GroupChange,
        epoch: u64,
        users: &BTreeSet<String>,
        to: &BTreeSet<String>,
    ) -> Result<(), ClientError> {
        let update = GroupUpdate {
            v: GROUP_UPDATE_VERSION,
            change,
            group: info.clone(),
            epoch,
            users: users.clone(),
        };
        let body = serde_json::to_string(&update).map_err(inconsistent)?;
        let me = self.account.username.clone();
        for user in to.iter().filter(|u| **u != me) {
            let payload = |to: Option<&str>| super::Payload::group_update(&body, to);
            let to_them = payload(None).to_bytes()?;
            let to_us = payload(Some(user)).to_bytes()?;
            self.send_payload(user, &to_them, &to_us).await?;
        }
        Ok(())
    }

    /// Our sender-key chain for the group, made (and stored) if there is none.
    async fn own_chain(&self, state: &mut GroupState) -> Result<SenderKeyState, ClientError> {
        let id = state.info.id;
        let (chain, new) = own_chain(&self.store, id).await?;
        if new {
            state.have_our_key.clear();
        }
        Ok(chain)
    }

    /// Hands our current chain to `user` (all their devices; our own other devices get it
    /// with the same send).
    async fn distribute(
        &mut self,
        chain: &SenderKeyState,
        group_id: GroupId,
        user: &str,
    ) -> Result<(), ClientError> {
        let body = SenderKeyBody {
            group_id,
            distribution: STANDARD.encode(chain.distribution().to_bytes()),
        };
        let body = Zeroizing::new(serde_json::to_string(&body).map_err(inconsistent)?);
        let to_them = Zeroizing::new(super::Payload::sender_key(&body, None).to_bytes()?);
        let to_us = Zeroizing::new(super::Payload::sender_key(&body, Some(user)).to_bytes()?);
        self.send_payload(user, &to_them, &to_us).await?;
        Ok(())
    }

    /// Sends a text to a group: encrypted once with our sender key, one multicast to every
    /// member's devices and our own other devices. Returns the local history id.
    pub async fn send_group(&mut self, group: &str, text: &str) -> Result<i64, ClientError> {
        let uid = random_id()?;
        let (info, time, expire) = self
            .send_group_payload(
                group,
                &uid,
                GroupContent::Text {
                    body: text.to_owned(),
                },
                super::now_ms(),
            )
            .await?;
        let expires_at = self
            .expiry_of(&Conversation::Group(info.id), time, expire)
            .await?;
        let id = self
            .store
            .add_group_message(
                info.id,
                &self.account.username,
                true,
                self.account.device,
                time,
                text.as_bytes(),
                Some(&uid),
                expires_at,
            )
            .await?;
        Ok(id)
    }

    /// Sends a change of the group's disappearing-message timer, dated `at`, to every
    /// member's devices and our own other devices.
    pub(super) async fn send_group_timer(
        &mut self,
        group: GroupId,
        seconds: u64,
        at: i64,
    ) -> Result<(), ClientError> {
        let uid = random_id()?;
        self.send_group_payload(
            &group.to_string(),
            &uid,
            GroupContent::Timer { seconds },
            at,
        )
        .await?;
        Ok(())
    }

    /// Sends a file to a group: encrypted and uploaded once (see [`Client::upload_file`]),
    /// then announced in one group message that carries its descriptor.
    pub async fn send_group_file(
        &mut self,
        group: &str,
        path: &std::path::Path,
        progress: &mut (dyn FnMut(crate::files::Progress) + Send),
    ) -> Result<crate::files::SentFile, ClientError> {
        let info = self.find_group(group).await?;
        let file = self.upload_file(path, progress).await?;
        let uid = random_id()?;
        let (info, time, expire) = self
            .send_group_payload(
                &info.id.to_string(),
                &uid,
                GroupContent::File {
                    file: file.descriptor.clone(),
                },
                super::now_ms(),
            )
            .await?;
        let kind = self
            .receive_file(
                &self.account.username.clone(),
                &Self::group_history_key(&info),
                true,
                self.account.device,
                (time, expire),
                Some(uid.clone()),
                Some(file.descriptor.clone()),
            )
            .await?;
        if let IncomingKind::Failed { error } = kind {
            return Err(inconsistent(Inconsistent::OwnGroupFile(error)));
        }
        Ok(crate::files::SentFile {
            blob_id: file.blob_id().to_owned(),
            name: file.name().to_owned(),
            size: file.size(),
            message_id: uid,
        })
    }

    /// Encrypts one group payload with our sender key and multicasts it; returns the group,
    /// the time the payload says it was sent and the disappearing-message timer it carries.
    ///
    /// The server's device-mismatch answers are claims, checked against our own roster
    /// before anything is acted on (see [`Self::check_group_mismatch`]): a device of anyone
    /// but a member (or our own account) is refused and gets nothing, and a member device
    /// that is gone makes us start a new chain before the message is encrypted again.
    async fn send_group_payload(
        &mut self,
        group: &str,
        uid: &str,
        content: GroupContent,
        ts: i64,
    ) -> Result<(GroupInfo, i64, Option<u64>), ClientError> {
        let info = self.find_group(group).await?;
        let mut state = self
            .load_group(info.id)
            .await?
            .ok_or(GroupError::StateMissing)?;
        let me = self.account.username.clone();
        let others: Vec<String> = state
            .info
            .members
            .iter()
            .filter(|m| **m != me)
            .cloned()
            .collect();
        if others.is_empty() {
            return Err(GroupError::NoOtherMember.into());
        }
        let expire = match content {
            GroupContent::Timer { .. } => None,
            _ => self.outgoing_timer(&Conversation::Group(info.id)).await?,
        };
        let payload = GroupPayload {
            v: 1,
            id: uid.to_owned(),
            from: me.clone(),
            from_device: self.account.device,
            ts: Some(ts),
            expire,
            content,
        };
        let plaintext = Zeroizing::new(serde_json::to_vec(&payload).map_err(inconsistent)?);
        for user in others.iter().chain([&me]) {
            if !state.devices.contains_key(user) {
                let devices = self.checked_devices(user).await?;
                state.devices.insert(user.clone(), devices);
            }
        }
        let client_message_id = random_id()?;
        // The ciphertext under the current chain; made again after a rotation.
        let mut ciphertext: Option<Vec<u8>> = None;
        for _ in 0..GROUP_SEND_ATTEMPTS {
            let chain = self.own_chain(&mut state).await?;
            for user in &others {
                if !state.have_our_key.contains(user) {
                    self.distribute(&chain, info.id, user).await?;
                    state.have_our_key.insert(user.clone());
                    self.save_group(&state).await?;
                }
            }
            let body = match &ciphertext {
                Some(body) => body.clone(),
                None => {
                    // The chain is loaded, used and its advanced state stored in one store
                    // transaction, before the send: a key is never used twice.
                    let body = self
                        .store
                        .advance_own_chain(info.id, |bytes| {
                            let Some(bytes) = bytes else {
                                return (None, Err(inconsistent(Inconsistent::ChainGone)));
                            };
                            match SenderKeyState::from_bytes(bytes) {
                                Ok(mut chain) => match chain.encrypt(&plaintext) {
                                    Ok(body) => (Some(chain.to_bytes()), Ok(body)),
                                    Err(e) => (None, Err(inconsistent(e))),
                                },
                                Err(e) => (None, Err(inconsistent(e))),
                            }
                        })
                        .await??;
                    ciphertext = Some(body.clone());
                    body
                }
            };
            let request = api::MulticastRequest {
                client_message_id: client_message_id.clone(),
                recipients: others
                    .iter()
                    .filter_map(|user| {
                        let devices = state.devices.get(user)?;
                        (!devices.is_empty()).then(|| api::MulticastRecipient {
                            username: user.clone(),
                            device_ids: devices.iter().copied().collect(),
                        })
                    })
                    .collect(),
                own_devices: state
                    .devices
                    .get(&me)
                    .map(|d| d.iter().copied().collect())
                    .unwrap_or_default(),
                ciphertext: api::Ciphertext(body.into()),
            };
            if request.recipients.is_empty() {
                return Err(GroupError::NoMemberDevices.into());
            }
            match self.transport.multicast(&request).await {
                Ok(_) => {
                    self.save_group(&state).await?;
                    return Ok((info, payload.ts.unwrap_or_default(), payload.expire));
                }
                Err(TransportError::DeviceMismatch(mismatch)) => {
                    let (rotate, needs_key) = self.check_group_mismatch(&mut state, &mismatch)?;
                    for user in needs_key {
                        // Re-read the member's devices: each must carry the pinned identity.
                        let devices = self.checked_devices(&user).await?;
                        let claimed = mismatch
                            .missing
                            .iter()
                            .filter(|a| a.username == user)
                            .map(|a| a.device_id);
                        for device in claimed {
                            if !devices.contains(&device) {
                                return Err(ServerClaim::UnlistedDevice {
                                    user: user.clone(),
                                    device,
                                    group: info.name.clone(),
                                }
                                .into());
                            }
                        }
                        state.devices.insert(user.clone(), devices);
                        if rotate {
                            // The new chain goes to everyone at the next attempt.
                            continue;
                        }
                        if user != me {
                            self.distribute(&chain, info.id, &user).await?;
                        } else if let Some(other) = others.first() {
                            // Our own new device gets the chain with any pairwise send.
                            let other = other.clone();
                            self.distribute(&chain, info.id, &other).await?;
                        }
                    }
                    if rotate {
                        // A device that held our chain is gone: it must read nothing more.
                        self.store.delete_own_chain(info.id).await?;
                        state.have_our_key.clear();
                        ciphertext = None;
                    }
                    self.save_group(&state).await?;
                }
                Err(other) => return Err(other.into()),
            }
        }
        Err(ClientError::DevicesUnstable)
    }

    /// Checks a multicast's device-mismatch answer against our own view of the group before
    /// any of it is used. Every named user must be a member or ourselves, otherwise the
    /// whole answer is refused (a server that names an outsider's device is asking us to
    /// hand it our chain). Stale devices that we had are dropped; returns whether any was
    /// dropped (our chain must then be replaced) and the users with new devices.
    fn check_group_mismatch(
        &self,
        state: &mut GroupState,
        mismatch: &api::DeviceMismatch,
    ) -> Result<(bool, BTreeSet<String>), ClientError> {
        let me = &self.account.username;
        for address in mismatch.missing.iter().chain(&mismatch.stale) {
            let user = &address.username;
            if user != me && !state.info.members.contains(user) {
                return Err(ServerClaim::DeviceOfNonMember {
                    user: user.clone(),
                    device: address.device_id,
                    group: state.info.name.clone(),
                }
                .into());
            }
            if *user == *me && address.device_id == self.account.device {
                return Err(ServerClaim::ThisDevice.into());
            }
        }
        let mut rotate = false;
        for address in &mismatch.stale {
            if let Some(set) = state.devices.get_mut(&address.username)
                && set.remove(&address.device_id)
            {
                rotate = true;
            }
        }
        let needs_key = mismatch
            .missing
            .iter()
            .map(|a| a.username.clone())
            .collect();
        Ok((rotate, needs_key))
    }

    /// Handles a pairwise `group_update` from `sender`. Returns the event to report, or
    /// `None` for a change this device already has (our own other devices get a copy with
    /// each recipient's).
    ///
    /// The change is logged and the roster computed again from the base and every logged
    /// change in (epoch, digest) order (see `membership`), so the result does not depend on
    /// the order in which the server delivered the changes. A change its author could not
    /// make at its place in that order is reported as superseded, never applied.
    pub(super) async fn on_group_update(
        &mut self,
        sender: &str,
        body: &str,
        make: impl FnOnce(IncomingKind) -> Incoming,
    ) -> Result<Option<Incoming>, ClientError> {
        Ok(self.group_update_kind(sender, body).await?.map(make))
    }

    async fn group_update_kind(
        &mut self,
        sender: &str,
        body: &str,
    ) -> Result<Option<IncomingKind>, ClientError> {
        let failed = |error: String| Ok::<_, ClientError>(Some(IncomingKind::Failed { error }));
        let Ok(update) = serde_json::from_str::<GroupUpdate>(body) else {
            return failed("unreadable group update".into());
        };
        if update.v != GROUP_UPDATE_VERSION {
            return failed(format!(
                "refused a group update from {sender} without an epoch (a client from before \
                 membership epochs)"
            ));
        }
        let me = self.account.username.clone();
        let new = update.group;
        let id = new.id;
        if !new.admins.is_subset(&new.members) {
            return failed("malformed group update".into());
        }
        let refused = |name: &str| {
            format!("refused a change to group {name:?} from {sender}, who may not make it")
        };
        let change = match update.change {
            GroupChange::Create => None,
            kind => match Change::new(&id.0, update.epoch, sender, kind, update.users.clone()) {
                Some(change) if update.epoch > 0 => Some(change),
                _ => return failed("malformed group update".into()),
            },
        };
        let Some(mut state) = self.load_group(new.id).await? else {
            // An unknown group is learnt only from its creation (by the creator its id is
            // bound to) or from being added to it (by an admin, with a bound id); our own
            // other devices learn it from any change we made. The base is then the view the
            // sender showed, at the change's place in the order.
            let introduced = id_is_bound(&new)
                && new.members.contains(&me)
                && match (&change, update.change) {
                    (None, _) => {
                        update.epoch == 0 && new.creator == sender && new.admins.contains(sender)
                    }
                    (Some(_), _) if sender == me => true,
                    (Some(_), GroupChange::Add) => {
                        new.admins.contains(sender) && update.users.contains(&me)
                    }
                    (Some(_), _) => false,
                };
            if !introduced {
                return failed(refused(&new.name));
            }
            let base = Base {
                info: new.clone(),
                epoch: update.epoch,
                digest: change.map(|c| c.digest).unwrap_or_default(),
            };
            self.save_group(&GroupState::new(base)).await?;
            let list = new.members.iter().cloned().collect::<Vec<_>>().join(", ");
            let description = match update.change {
                GroupChange::Create => format!("{sender} created {} with {list}", new.name),
                _ => format!("{sender} added you to {} (members: {list})", new.name),
            };
            return Ok(Some(IncomingKind::GroupUpdate {
                group: new.name.clone(),
                group_id: new.id,
                change: update.change,
                description,
            }));
        };
        let name = state.info.name.clone();
        let Some(change) = change else {
            // A copy of the creation we already have; anyone else's `Create` is refused.
            return match sender == state.info.creator {
                true => Ok(None),
                false => failed(refused(&name)),
            };
        };
        let base = state.base();
        if state.log.iter().any(|c| c.digest == change.digest) {
            return Ok(None);
        }
        if !base.precedes(&change) {
            return failed(format!(
                "refused {sender}'s change to {name} at epoch {}: it is from before this \
                 device joined (epoch {})",
                change.epoch, base.epoch
            ));
        }
        if state.log.len() >= membership::MAX_CHANGES {
            return failed(format!(
                "refused {sender}'s change to {name}: the group has had {} changes, the most \
                 kept",
                membership::MAX_CHANGES
            ));
        }
        let superseded_before = membership::fold(&base, &state.log).superseded;
        state.log.push(change.clone());
        let folded = membership::fold(&base, &state.log);
        let undone: Vec<String> = state
            .log
            .iter()
            .filter(|c| {
                folded.superseded.contains(&c.digest)
                    && !superseded_before.contains(&c.digest)
                    && c.digest != change.digest
            })
            .map(|c| format!("{}'s change at epoch {}", c.author, c.epoch))
            .collect();
        let previous = state.info.clone();
        let new = folded.info;
        if !new.members.contains(&me) {
            self.forget_group(new.id).await?;
            return Ok(Some(IncomingKind::GroupUpdate {
                group: new.name.clone(),
                group_id: new.id,
                change: change.change,
                description: format!("{sender} removed you from {}", new.name),
            }));
        }
        let removed: BTreeSet<String> =
            previous.members.difference(&new.members).cloned().collect();
        let added: Vec<String> = new.members.difference(&previous.members).cloned().collect();
        if !removed.is_empty() {
            self.forget_members(&mut state, &removed).await?;
        }
        state.base = Some(base);
        state.info = new.clone();
        self.save_group(&state).await?;
        if folded.superseded.contains(&change.digest) {
            return failed(format!(
                "{sender}'s change to {name} at epoch {} was superseded by a concurrent change \
                 ({sender} may not make it at its place in the order); not applied",
                change.epoch
            ));
        }
        let list = |set: &[String]| set.join(", ");
        let mut what = match change.change {
            GroupChange::Create => String::new(),
            GroupChange::Add => format!("{sender} added {} to {}", list(&added), new.name),
            GroupChange::Remove => format!(
                "{sender} removed {} from {}",
                list(&removed.into_iter().collect::<Vec<_>>()),
                new.name
            ),
            GroupChange::Leave => format!("{sender} left {}", new.name),
            GroupChange::Promote => format!(
                "{sender} changed the admins of {}: {}",
                new.name,
                list(&new.admins.iter().cloned().collect::<Vec<_>>())
            ),
        };
        if !undone.is_empty() {
            what.push_str(&format!(
                "; it comes first in the order, so {} was superseded and undone (members now: \
                 {})",
                undone.join(", "),
                list(&new.members.iter().cloned().collect::<Vec<_>>())
            ));
        }
        Ok(Some(IncomingKind::GroupUpdate {
            group: new.name.clone(),
            group_id: new.id,
            change: change.change,
            description: what,
        }))
    }

    /// Handles a pairwise `sender_key` from `sender`'s `device`: the chain is kept in the
    /// record for (group, sender, device); whether the sender may write to the group is
    /// checked when a message arrives.
    pub(super) async fn on_sender_key(
        &self,
        sender: &str,
        device: DeviceId,
        body: &str,
    ) -> Result<Option<String>, ClientError> {
        let Ok(body) = serde_json::from_str::<SenderKeyBody>(body) else {
            return Ok(Some("unreadable sender key".into()));
        };
        let group = body.group_id;
        let Some(distribution) = STANDARD
            .decode(&body.distribution)
            .ok()
            .map(Zeroizing::new)
            .and_then(|bytes| SenderKeyDistribution::from_bytes(&bytes).ok())
        else {
            return Ok(Some("malformed sender key".into()));
        };
        self.store
            .advance_sender_key(group, sender, device, |bytes| {
                let mut record = match bytes.map(SenderKeyRecord::from_bytes) {
                    Some(Ok(record)) => record,
                    Some(Err(e)) => return (None, Err(inconsistent(e))),
                    None => SenderKeyRecord::new(group),
                };
                match record.process(&distribution) {
                    Ok(()) => (Some(record.to_bytes()), Ok(None)),
                    Err(error) => (None, Ok(Some(format!("sender key refused: {error}")))),
                }
            })
            .await?
    }

    /// Decrypts a group message from `sender`'s `device`; `Ok(Err(reason))` for a message
    /// that is reported as failed.
    pub(super) async fn open_group_message(
        &mut self,
        sender: &str,
        device: DeviceId,
        bytes: &[u8],
        time: i64,
    ) -> Result<Result<(IncomingKind, i64), String>, ClientError> {
        let message = match SenderKeyMessage::from_bytes(bytes) {
            Ok(message) => message,
            Err(error) => return Ok(Err(format!("malformed group message: {error}"))),
        };
        let id = message.group_id();
        let Some(state) = self.load_group(id).await? else {
            return Ok(Err("a message for a group this device is not in".into()));
        };
        if !state.info.members.contains(sender) {
            return Ok(Err(format!(
                "a message in {} from {sender}, who is not a member",
                state.info.name
            )));
        }
        let opened = self
            .store
            .advance_sender_key(message.group_id(), sender, device, |bytes| {
                let Some(bytes) = bytes else {
                    return (
                        None,
                        Ok(Err(format!(
                            "no sender key from {sender}.{device} for {}",
                            state.info.name
                        ))),
                    );
                };
                let mut record = match SenderKeyRecord::from_bytes(bytes) {
                    Ok(record) => record,
                    Err(e) => return (None, Err(inconsistent(e))),
                };
                match record.decrypt(&message) {
                    Ok(plaintext) => (Some(record.to_bytes()), Ok(Ok(Zeroizing::new(plaintext)))),
                    Err(error) => (None, Ok(Err(format!("could not decrypt: {error}")))),
                }
            })
            .await??;
        let plaintext = match opened {
            Ok(plaintext) => plaintext,
            Err(error) => return Ok(Err(error)),
        };
        let Ok(payload) = serde_json::from_slice::<GroupPayload>(&plaintext) else {
            return Ok(Err("unreadable group message".into()));
        };
        if payload.from != sender || payload.from_device != device {
            return Ok(Err(format!(
                "a group message from {sender}.{device} claims to be from {}.{}",
                payload.from, payload.from_device
            )));
        }
        // The sender's own time, from inside the message; the server's only for a message
        // without one.
        let time = payload.ts.unwrap_or(time);
        let expire = payload.expire;
        let body = match payload.content {
            GroupContent::Timer { seconds } => {
                let conversation = Conversation::Group(id);
                let shown = format!("group {}", state.info.name);
                let kind = self
                    .on_timer(&conversation, shown, seconds, time, sender)
                    .await?;
                return Ok(Ok((kind, time)));
            }
            GroupContent::File { file } => {
                let history = Conversation::Group(message.group_id());
                let outgoing = sender == self.account.username;
                let kind = self
                    .receive_file(
                        sender,
                        &history,
                        outgoing,
                        device,
                        (time, expire),
                        Some(payload.id),
                        Some(file),
                    )
                    .await?;
                let kind = match kind {
                    IncomingKind::File {
                        name,
                        size,
                        blob_id,
                        message_id,
                        conversation,
                        ..
                    } => IncomingKind::File {
                        peer: format!("group {}", state.info.name),
                        conversation,
                        name,
                        size,
                        blob_id,
                        message_id,
                    },
                    other => other,
                };
                return Ok(Ok((kind, time)));
            }
            GroupContent::Unknown => {
                return Ok(Err(
                    "unsupported group message kind (a newer client?)".into()
                ));
            }
            GroupContent::Text { body } => body,
        };
        let Some(expires_at) = self
            .keep_until(&Conversation::Group(id), sender, time, expire)
            .await?
        else {
            return Ok(Ok((
                IncomingKind::Expired {
                    peer: format!("group {}", state.info.name),
                },
                time,
            )));
        };
        self.store
            .add_group_message(
                message.group_id(),
                sender,
                sender == self.account.username,
                device,
                time,
                body.as_bytes(),
                Some(&payload.id),
                expires_at,
            )
            .await?;
        Ok(Ok((
            IncomingKind::GroupText {
                group: state.info.name,
                group_id: id,
                text: body,
                message_id: Some(payload.id),
            },
            time,
        )))
    }
}

/// A group id bound to its creator: the first 16 bytes of
/// `SHA-256("Tacit_GroupId_v1" || len(creator) (1) || creator || salt (16))`, in hex.
/// `None` for a creator name longer than 255 bytes.
fn bound_group_id(creator: &str, salt: &[u8; 16]) -> Option<GroupId> {
    use sha2::Digest as _;
    let len = u8::try_from(creator.len()).ok()?;
    let mut hash = sha2::Sha256::new();
    hash.update(b"Tacit_GroupId_v1");
    hash.update([len]);
    hash.update(creator.as_bytes());
    hash.update(salt);
    let mut id = [0u8; 16];
    id.copy_from_slice(&hash.finalize()[..16]);
    Some(GroupId(id))
}

/// Whether a group's id is the one bound to its creator and salt.
fn id_is_bound(info: &GroupInfo) -> bool {
    let Some(salt) = GroupId::from_hex(&info.salt) else {
        return false;
    };
    !info.creator.is_empty() && bound_group_id(&info.creator, &salt.0) == Some(info.id)
}

/// Our sender-key chain for a group, and whether it is new: the stored one if there is
/// one, else a new chain, stored before it is returned (the rule of when our chain
/// rotates: only once [`forget_members`] or a stale device deleted it).
async fn own_chain<S: SenderKeyStore>(
    store: &S,
    group: GroupId,
) -> Result<(SenderKeyState, bool), ClientError> {
    if let Some(bytes) = store.own_chain(group).await? {
        return Ok((
            SenderKeyState::from_bytes(&bytes).map_err(inconsistent)?,
            false,
        ));
    }
    let chain = SenderKeyState::generate(&mut rng(), group);
    store.put_own_chain(group, &chain.to_bytes()).await?;
    Ok((chain, true))
}

/// Members left or were removed: their chains are dropped (nothing more of theirs is read)
/// and so is ours, so that the next send starts a chain they never get.
async fn forget_members<S: SenderKeyStore>(
    store: &S,
    group: GroupId,
    removed: &BTreeSet<String>,
) -> Result<(), ClientError> {
    for user in removed {
        store.delete_sender_keys(group, user).await?;
    }
    store.delete_own_chain(group).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::offline_client;

    const GROUP: &str = "00112233445566778899aabbccddeeff";

    fn set(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|n| (*n).to_owned()).collect()
    }

    fn update(change: GroupChange, name: &str, members: &[&str], admins: &[&str]) -> String {
        serde_json::to_string(&GroupUpdate {
            v: GROUP_UPDATE_VERSION,
            change,
            epoch: 1,
            users: BTreeSet::new(),
            group: GroupInfo {
                id: GroupId::from_hex(GROUP).unwrap(),
                name: name.into(),
                members: set(members),
                admins: set(admins),
                creator: String::new(),
                salt: String::new(),
            },
        })
        .unwrap()
    }

    fn from(sender: &str) -> impl FnOnce(IncomingKind) -> Incoming {
        let sender = sender.to_owned();
        move |kind| Incoming {
            sender,
            sender_device: DeviceId(1),
            time: 0,
            kind,
        }
    }

    #[tokio::test]
    async fn a_leave_removes_the_leaver_and_changes_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let mut alice = offline_client(dir.path(), "alice").await;
        let info = GroupInfo {
            id: GroupId::from_hex(GROUP).unwrap(),
            name: "team".into(),
            members: set(&["alice", "bob", "carol"]),
            admins: set(&["alice"]),
            creator: "alice".into(),
            salt: String::new(),
        };
        alice
            .save_group(&GroupState {
                info: info.clone(),
                have_our_key: set(&["bob", "carol"]),
                devices: BTreeMap::new(),
                base: None,
                log: Vec::new(),
            })
            .await
            .unwrap();
        // Bob leaves, and his update also renames the group and makes Carol an admin.
        let forged = update(
            GroupChange::Leave,
            "taken over",
            &["alice", "carol"],
            &["carol"],
        );
        let event = alice
            .on_group_update("bob", &forged, from("bob"))
            .await
            .unwrap()
            .expect("an event");
        assert!(
            matches!(
                event.kind,
                IncomingKind::GroupUpdate {
                    change: GroupChange::Leave,
                    ..
                }
            ),
            "{event:?}"
        );
        let after = alice.find_group(GROUP).await.unwrap();
        assert_eq!(after.members, set(&["alice", "carol"]), "only Bob went");
        assert_eq!(after.admins, set(&["alice"]), "the admins are unchanged");
        assert_eq!(after.name, "team", "the name is unchanged");
    }

    /// A `Create` as JSON (so that the test reads the same against a client that has no
    /// creator or salt fields).
    fn create(id: &str, sender: &str, creator: &str, salt: &str) -> String {
        serde_json::json!({
            "v": 2, "change": "create", "epoch": 0,
            "group": {
                "id": id, "name": "team",
                "members": ["alice", sender], "admins": [sender],
                "creator": creator, "salt": salt,
            }
        })
        .to_string()
    }

    /// The first `Create` for an unknown group id used to win, from anyone (a member who
    /// saw the id, or an account of the server's, could pre-empt the real creator). A group
    /// id is now bound to its creator.
    #[tokio::test]
    async fn a_create_is_accepted_only_from_the_creator_its_id_is_bound_to() {
        let dir = tempfile::tempdir().unwrap();
        let mut alice = offline_client(dir.path(), "alice").await;
        let salt = [9u8; 16];
        let carols = bound_group_id("carol", &salt).unwrap();
        // An id bound to no one; an id bound to Carol, sent by Mallory as hers or as Carol's.
        for (id, creator) in [
            (GROUP.to_owned(), "mallory"),
            (carols.to_string(), "mallory"),
            (carols.to_string(), "carol"),
        ] {
            let forged = create(&id, "mallory", creator, &hex::encode(salt));
            let event = alice
                .on_group_update("mallory", &forged, from("mallory"))
                .await
                .unwrap()
                .expect("an event");
            assert!(
                matches!(event.kind, IncomingKind::Failed { .. }),
                "{id} from mallory as {creator}: {event:?}"
            );
        }
        assert!(alice.groups().await.unwrap().is_empty());
        // Carol's own Create opens it.
        let real = create(&carols.to_string(), "carol", "carol", &hex::encode(salt));
        let event = alice
            .on_group_update("carol", &real, from("carol"))
            .await
            .unwrap()
            .expect("an event");
        assert!(
            matches!(event.kind, IncomingKind::GroupUpdate { .. }),
            "{event:?}"
        );
        assert_eq!(
            alice.find_group(&carols.to_string()).await.unwrap().admins,
            set(&["carol"])
        );
    }

    #[tokio::test]
    async fn a_leave_for_an_unknown_group_creates_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let mut alice = offline_client(dir.path(), "alice").await;
        // Mallory names herself admin of a group Alice has never heard of.
        let forged = update(
            GroupChange::Leave,
            "ghost",
            &["alice", "mallory"],
            &["mallory"],
        );
        let event = alice
            .on_group_update("mallory", &forged, from("mallory"))
            .await
            .unwrap()
            .expect("an event");
        assert!(
            matches!(event.kind, IncomingKind::Failed { .. }),
            "{event:?}"
        );
        assert!(alice.groups().await.unwrap().is_empty());
    }

    /// A change as a v2 `group_update` body (the sender's view is the team as below: only
    /// the id, the name and the change itself are read).
    fn change_body(change: GroupChange, epoch: u64, users: &[&str]) -> String {
        serde_json::to_string(&GroupUpdate {
            v: GROUP_UPDATE_VERSION,
            change,
            epoch,
            users: set(users),
            group: team(),
        })
        .unwrap()
    }

    fn team() -> GroupInfo {
        GroupInfo {
            id: GroupId::from_hex(GROUP).unwrap(),
            name: "team".into(),
            members: set(&["alice", "bob", "carol", "dave", "erin"]),
            admins: set(&["alice", "bob"]),
            creator: "alice".into(),
            salt: String::new(),
        }
    }

    /// Every order of every permutation of four changes (two admins changing the group at
    /// once, one building on its own change, a member leaving at the same time) leaves a
    /// member with one roster, the one the set of changes gives; a change that loses is
    /// reported (when it arrives, or when the change that beats it arrives later).
    #[tokio::test]
    async fn concurrent_changes_converge_in_every_delivery_order() {
        let changes = [
            ("alice", change_body(GroupChange::Remove, 1, &["bob"])),
            ("bob", change_body(GroupChange::Remove, 1, &["erin"])),
            ("bob", change_body(GroupChange::Add, 2, &["frank"])),
            ("carol", change_body(GroupChange::Leave, 1, &[])),
        ];
        let mut orders = vec![vec![]];
        for _ in 0..changes.len() {
            orders = orders
                .into_iter()
                .flat_map(|order: Vec<usize>| {
                    (0..changes.len())
                        .filter(|i| !order.contains(i))
                        .map(|i| [order.clone(), vec![i]].concat())
                        .collect::<Vec<_>>()
                })
                .collect();
        }
        assert_eq!(orders.len(), 24);
        let mut rosters = BTreeSet::new();
        for order in &orders {
            let dir = tempfile::tempdir().unwrap();
            let mut dave = offline_client(dir.path(), "dave").await;
            dave.save_group(&GroupState::new(Base {
                info: team(),
                epoch: 0,
                digest: String::new(),
            }))
            .await
            .unwrap();
            let mut reported = 0;
            for &i in order {
                let (sender, body) = &changes[i];
                let event = dave
                    .on_group_update(sender, body, from(sender))
                    .await
                    .unwrap();
                let text = format!("{event:?}");
                reported += usize::from(text.contains("superseded"));
            }
            let state = dave
                .load_group(GroupId::from_hex(GROUP).unwrap())
                .await
                .unwrap()
                .unwrap();
            let folded = membership::fold(&state.base(), &state.log);
            assert_eq!(state.info, folded.info, "{order:?}");
            assert_eq!(
                reported > 0,
                !folded.superseded.is_empty(),
                "{order:?}: a superseded change is reported"
            );
            rosters.insert((state.info.members, state.info.admins));
        }
        assert_eq!(
            rosters.len(),
            1,
            "every order gives one roster: {rosters:?}"
        );
        let (members, admins) = rosters.into_iter().next().unwrap();
        assert!(!members.contains("carol") && admins.is_subset(&members));
    }

    /// An update from a client before epochs (no `v`, no epoch) is refused and changes
    /// nothing.
    #[tokio::test]
    async fn an_update_without_an_epoch_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut dave = offline_client(dir.path(), "dave").await;
        dave.save_group(&GroupState::new(Base {
            info: team(),
            epoch: 0,
            digest: String::new(),
        }))
        .await
        .unwrap();
        let old = serde_json::json!({
            "change": "remove",
            "group": {"id": GROUP, "name": "team", "members": ["alice", "dave"],
                      "admins": ["alice"], "creator": "alice", "salt": ""},
        })
        .to_string();
        let event = dave
            .on_group_update("alice", &old, from("alice"))
            .await
            .unwrap()
            .expect("an event");
        assert!(
            matches!(&event.kind, IncomingKind::Failed { error } if error.contains("without an epoch")),
            "{event:?}"
        );
        assert_eq!(
            dave.find_group(GROUP).await.unwrap().members,
            team().members
        );
    }
    /// When our chain rotates: it is kept across sends, and a removal drops it (and the
    /// removed member's records, not the others'), so the next send makes a new one.
    #[tokio::test]
    async fn our_chain_rotates_only_when_members_go() {
        use crate::store::MemoryStore;
        let store = MemoryStore::new();
        let group = GroupId::from_hex(GROUP).unwrap();
        let (first, new) = own_chain(&store, group).await.unwrap();
        assert!(new);
        let (again, new) = own_chain(&store, group).await.unwrap();
        assert!(!new);
        assert_eq!(again.chain_id(), first.chain_id());
        let record = |user: &str| {
            let distribution = SenderKeyState::generate(&mut rng(), group).distribution();
            let mut record = SenderKeyRecord::new(group);
            record.process(&distribution).unwrap();
            (user.to_owned(), record.to_bytes())
        };
        for (user, bytes) in [record("bob"), record("carol")] {
            store
                .advance_sender_key(group, &user, api::DeviceId(1), |_| (Some(bytes), ()))
                .await
                .unwrap();
        }
        forget_members(&store, group, &set(&["bob"])).await.unwrap();
        let held = |user: &'static str| {
            let store = &store;
            async move {
                store
                    .advance_sender_key(group, user, api::DeviceId(1), |b| (None, b.is_some()))
                    .await
                    .unwrap()
            }
        };
        assert!(!held("bob").await, "the removed member's chain is gone");
        assert!(held("carol").await, "the others' chains stay");
        let (rotated, new) = own_chain(&store, group).await.unwrap();
        assert!(new);
        assert_ne!(rotated.chain_id(), first.chain_id());
    }
}

#[cfg(test)]
mod payload_wire {
    use super::{GroupContent, GroupPayload};

    /// The group message's JSON is what the struct it replaced wrote (older members still
    /// read it), and what older members wrote still reads.
    #[test]
    fn the_group_wire_format_is_unchanged() {
        let text = GroupPayload {
            v: 1,
            id: "u1".into(),
            from: "alice".into(),
            from_device: tacit_api::DeviceId(2),
            ts: Some(9),
            expire: None,
            content: GroupContent::Text { body: "hi".into() },
        };
        assert_eq!(
            serde_json::to_value(&text).unwrap(),
            serde_json::json!({"v": 1, "kind": "text", "body": "hi", "id": "u1",
                "from": "alice", "from_device": 2, "ts": 9})
        );
        let older: GroupPayload = serde_json::from_str(
            r#"{"v":1,"kind":"text","body":"hi","id":"u1","from":"alice","from_device":2}"#,
        )
        .unwrap();
        assert!(matches!(older.content, GroupContent::Text { body } if body == "hi"));
        let newer: GroupPayload = serde_json::from_str(
            r#"{"v":1,"kind":"poll","id":"u2","from":"alice","from_device":2}"#,
        )
        .unwrap();
        assert!(matches!(newer.content, GroupContent::Unknown));
        assert!(
            serde_json::from_str::<GroupPayload>(
                r#"{"v":1,"kind":"file","body":"","id":"u3","from":"alice","from_device":2}"#
            )
            .is_err()
        );
    }
}
