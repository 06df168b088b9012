//! Disappearing messages: a timer per conversation (pairwise or group), set by any
//! participant, carried inside the encrypted messages (the server never learns it), and
//! enforced by every device's store.
//!
//! - A timer change is its own message (`kind: "timer"`, `seconds`, 0 for off), sent to the
//!   conversation and to our own other devices. Concurrent changes converge: the one the
//!   sender says it made last (`ts`, then the sender's name) wins on every device, in
//!   whatever order the server delivers them.
//! - Every text and file carries the sender's timer (`expire`, seconds). A device keeps the
//!   message until `min(sent, received) + timer`: the sender's time from inside the message,
//!   never later than when it arrived here, so a server holding a message back cannot make
//!   it live longer. A message whose time is up on arrival is not stored.
//! - The organisation's maximum (`GET /v1/policy`, cached in the store) caps every message
//!   stored after it was learned, a conversation without a timer included; one below
//!   [`api::DISAPPEARING_POLICY_FLOOR_SECS`] is ignored (a hostile server could otherwise
//!   make clients wipe their history within seconds).
//! - The store deletes what is due when it opens, before anything reads it, and whenever
//!   the client calls [`Client::purge_expired`]; its reads leave out whatever is due even
//!   before that ([`Store::history`]).

use super::*;
use crate::store::Purged;

/// The secret that caches the server's policy.
const POLICY_SECRET: &str = "policy";
/// How long a fetched policy is used before it is fetched again (milliseconds).
const POLICY_REFRESH_MS: i64 = 10 * 60 * 1000;
/// How far ahead of this device's clock a timer change may be dated (a day).
const MAX_AHEAD_MS: i64 = 24 * 3600 * 1000;
/// The longest timer (ten years, in seconds).
pub const MAX_TIMER_SECS: u64 = 10 * 365 * 24 * 3600;

/// A conversation's disappearing-message timer as this device knows it.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Timer {
    /// Seconds a message lives after it is sent; 0: messages stay.
    pub seconds: u64,
    /// When the participant who set it says they did (milliseconds since the Unix epoch).
    pub set_at: i64,
    /// Who set it.
    pub set_by: String,
}

/// The policy as cached.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
struct CachedPolicy {
    /// The maximum accepted (`None`: none, or one below the floor, ignored).
    max_secs: Option<u64>,
    /// When it was fetched.
    fetched_at: i64,
    /// When a fetch last failed (a minute passes before the next attempt).
    #[serde(default)]
    failed_at: i64,
}

/// How long after a failed fetch of the policy the next is tried (milliseconds).
const POLICY_RETRY_MS: i64 = 60 * 1000;

/// When a message sent at `sent_at` (the sender's clock) and received at `now` disappears,
/// under `timer` seconds (`None`: it stays).
pub(crate) fn expiry(sent_at: i64, now: i64, timer: Option<u64>) -> Option<i64> {
    let timer = timer.filter(|t| *t > 0)?;
    let millis = i64::try_from(timer.min(MAX_TIMER_SECS)).ok()? * 1000;
    Some(sent_at.min(now).saturating_add(millis))
}

/// A duration for people: `30s`, `5m`, `1h`, `1d 2h` style (the largest units only).
pub fn describe(seconds: u64) -> String {
    if seconds == 0 {
        return "off".into();
    }
    let units = [
        (604_800, "w"),
        (86_400, "d"),
        (3600, "h"),
        (60, "m"),
        (1, "s"),
    ];
    let mut left = seconds;
    let mut parts = Vec::new();
    for (size, unit) in units {
        if left >= size {
            parts.push(format!("{}{unit}", left / size));
            left %= size;
        }
    }
    parts.join(" ")
}

/// Reads a duration: a number of seconds, or a number with `s`, `m`, `h`, `d` or `w`
/// (`90s`, `10m`, `1h`, `7d`, `1w`); `off` is 0.
pub fn parse_duration(text: &str) -> Option<u64> {
    let text = text.trim();
    if text.eq_ignore_ascii_case("off") {
        return Some(0);
    }
    let (number, unit) = match text.find(|c: char| !c.is_ascii_digit()) {
        Some(at) => text.split_at(at),
        None => (text, "s"),
    };
    let number: u64 = number.parse().ok()?;
    let size = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        "w" => 604_800,
        _ => return None,
    };
    number.checked_mul(size).filter(|s| *s <= MAX_TIMER_SECS)
}

impl Client {
    fn timer_secret(conversation: &Conversation) -> String {
        format!("timer:{}", conversation.key())
    }

    /// The conversation's timer, if one was ever set.
    pub async fn disappearing(
        &self,
        conversation: &Conversation,
    ) -> Result<Option<Timer>, ClientError> {
        let Some(bytes) = self.store.secret(&Self::timer_secret(conversation)).await? else {
            return Ok(None);
        };
        Ok(Some(
            serde_json::from_slice(&bytes).map_err(Inconsistent::from)?,
        ))
    }

    /// The seconds our next message in the conversation carries (`None`: no timer).
    pub(crate) async fn outgoing_timer(
        &self,
        conversation: &Conversation,
    ) -> Result<Option<u64>, ClientError> {
        Ok(self
            .disappearing(conversation)
            .await?
            .map(|t| t.seconds)
            .filter(|s| *s > 0))
    }

    /// Applies a timer change `seconds` made by `by` at `at` (their clock) unless the one
    /// kept was made later (same time: the greater name wins), so that every device ends
    /// with the same timer whatever the delivery order. A change dated more than
    /// [`MAX_AHEAD_MS`] ahead of our clock is not applied (`Ok(false)`; [`Self::on_timer`]
    /// reports it): otherwise one participant could pin the timer against every later
    /// change. Returns whether it changed.
    pub(crate) async fn apply_timer(
        &self,
        conversation: &Conversation,
        seconds: u64,
        at: i64,
        by: &str,
    ) -> Result<bool, ClientError> {
        if at > now_ms().saturating_add(MAX_AHEAD_MS) {
            return Ok(false);
        }
        let new = Timer {
            seconds: seconds.min(MAX_TIMER_SECS),
            set_at: at,
            set_by: by.to_owned(),
        };
        let name = Self::timer_secret(conversation);
        let changed = self
            .store
            .advance_secret(&name, |old| {
                let old: Option<Timer> = old.and_then(|b| serde_json::from_slice(b).ok());
                let newer = match &old {
                    Some(old) => {
                        (new.set_at, new.set_by.as_str()) > (old.set_at, old.set_by.as_str())
                    }
                    None => true,
                };
                if !newer {
                    return (None, false);
                }
                match serde_json::to_vec(&new) {
                    Ok(bytes) => (Some(Zeroizing::new(bytes)), true),
                    Err(_) => (None, false),
                }
            })
            .await?;
        Ok(changed)
    }

    /// Handles a timer change that arrived from `by`: applies it ([`Self::apply_timer`])
    /// and says what the app should see (`shown` names the conversation).
    pub(crate) async fn on_timer(
        &self,
        conversation: &Conversation,
        shown: String,
        seconds: u64,
        at: i64,
        by: &str,
    ) -> Result<IncomingKind, ClientError> {
        if at > now_ms().saturating_add(MAX_AHEAD_MS) {
            return Ok(IncomingKind::Failed {
                error: format!(
                    "{by} changed the disappearing-message timer of the conversation with \
                     {shown}, dated more than a day ahead of this device's clock; the change \
                     was refused (check the clocks)"
                ),
            });
        }
        self.apply_timer(conversation, seconds, at, by).await?;
        Ok(IncomingKind::Timer {
            peer: shown,
            seconds,
        })
    }

    /// When a message in `conversation` sent at `sent_at` disappears on this device: the
    /// stricter of the timer the message carries and the conversation's own timer here if
    /// it was set before the message was sent (so a change the server withheld from the
    /// sender still applies on this side), capped by the organisation's maximum (as last
    /// fetched).
    pub(crate) async fn expiry_of(
        &self,
        conversation: &Conversation,
        sent_at: i64,
        timer: Option<u64>,
    ) -> Result<Option<i64>, ClientError> {
        let max = self.cached_policy().await?.and_then(|p| p.max_secs);
        // The conversation's timer here counts for what was sent since it was set (a
        // message from before it, delivered late, keeps its own).
        let local = self
            .disappearing(conversation)
            .await?
            .filter(|t| t.seconds > 0 && sent_at >= t.set_at)
            .map(|t| t.seconds);
        let timer = [timer.filter(|t| *t > 0), local, max]
            .into_iter()
            .flatten()
            .min();
        Ok(expiry(sent_at, now_ms(), timer))
    }

    /// [`Self::expiry_of`] for a message that arrived from `sender`: `None` when its time
    /// is already up (it is not stored), otherwise when it disappears (`Some(None)`:
    /// never). A timer the message carries in a conversation without one here (a device
    /// linked, or a member added, after it was set) becomes this device's timer too.
    pub(crate) async fn keep_until(
        &self,
        conversation: &Conversation,
        sender: &str,
        sent_at: i64,
        timer: Option<u64>,
    ) -> Result<Option<Option<i64>>, ClientError> {
        if let Some(seconds) = timer.filter(|t| *t > 0)
            && self.disappearing(conversation).await?.is_none()
        {
            // Dated before any real change, so that every explicit change outranks it
            // (and devices still converge on the explicit ones).
            self.apply_timer(conversation, seconds, i64::MIN, sender)
                .await?;
        }
        Ok(match self.expiry_of(conversation, sent_at, timer).await? {
            Some(at) if at <= now_ms() => None,
            other => Some(other),
        })
    }

    async fn cached_policy(&self) -> Result<Option<CachedPolicy>, ClientError> {
        let Some(bytes) = self.store.secret(POLICY_SECRET).await? else {
            return Ok(None);
        };
        Ok(serde_json::from_slice(&bytes).ok())
    }

    async fn save_policy(&self, policy: &CachedPolicy) -> Result<(), ClientError> {
        let bytes = serde_json::to_vec(policy).map_err(Inconsistent::from)?;
        Ok(self.store.put_secret(POLICY_SECRET, &bytes).await?)
    }

    /// The organisation's maximum for disappearing messages as last fetched from the server
    /// (seconds; `None`: none).
    pub async fn disappearing_max(&self) -> Result<Option<u64>, ClientError> {
        Ok(self.cached_policy().await?.and_then(|p| p.max_secs))
    }

    /// Fetches the server's policy and caches it. A maximum below
    /// [`api::DISAPPEARING_POLICY_FLOOR_SECS`] is ignored; a server without the endpoint
    /// has no policy. Returns the maximum now in force.
    pub async fn refresh_policy(&mut self) -> Result<Option<u64>, ClientError> {
        let policy = match self.transport.policy().await {
            Ok(policy) => policy,
            Err(TransportError::Api { code, .. }) if code == "not_found" => api::Policy::default(),
            Err(other) => return Err(other.into()),
        };
        let max_secs = policy
            .disappearing_max_secs
            .filter(|max| *max >= api::DISAPPEARING_POLICY_FLOOR_SECS)
            .map(|max| max.min(MAX_TIMER_SECS));
        self.save_policy(&CachedPolicy {
            max_secs,
            fetched_at: now_ms(),
            failed_at: 0,
        })
        .await?;
        Ok(max_secs)
    }

    /// Fetches the policy again if the cached one is older than ten minutes (or missing).
    /// A server that cannot be asked leaves the cached one in force (only a local failure
    /// is an error).
    pub async fn refresh_policy_if_stale(&mut self) -> Result<(), ClientError> {
        let cached = self.cached_policy().await?;
        let now = now_ms();
        let due = cached.is_none_or(|p| {
            now.saturating_sub(p.fetched_at) >= POLICY_REFRESH_MS
                && now.saturating_sub(p.failed_at) >= POLICY_RETRY_MS
        });
        if !due {
            return Ok(());
        }
        match self.refresh_policy().await {
            Ok(_) => Ok(()),
            Err(ClientError::Transport(_)) => {
                // Keep what was known; try again in a minute, not at every call.
                let failed = CachedPolicy {
                    failed_at: now,
                    ..cached.unwrap_or(CachedPolicy {
                        max_secs: None,
                        fetched_at: 0,
                        failed_at: 0,
                    })
                };
                self.save_policy(&failed).await
            }
            Err(other) => Err(other),
        }
    }

    /// Sets the disappearing-message timer of a conversation (`seconds`; 0 turns it off)
    /// for every participant: sends the change (to the other party and our other devices,
    /// or to the group), then keeps it. Refused with [`ClientError::TimerAbovePolicy`]
    /// when the organisation's maximum is lower (0 included: messages would stay).
    pub async fn set_disappearing(
        &mut self,
        conversation: &Conversation,
        seconds: u64,
    ) -> Result<Timer, ClientError> {
        if seconds > MAX_TIMER_SECS {
            return Err(ClientError::TimerTooLong(seconds));
        }
        let max = self.refresh_policy().await?;
        if let Some(max) = max
            && (seconds == 0 || seconds > max)
        {
            return Err(ClientError::TimerAbovePolicy { seconds, max });
        }
        // Later than the change kept now, even if its setter's clock runs ahead of ours:
        // a change made here never loses to the one it replaces.
        let time = match self.disappearing(conversation).await? {
            Some(current) => now_ms().max(current.set_at.saturating_add(1)),
            None => now_ms(),
        };
        match conversation {
            Conversation::Direct(username) => {
                let to_them = Payload::timer(seconds, None).at(time).to_bytes()?;
                let to_us = Payload::timer(seconds, Some(username))
                    .at(time)
                    .to_bytes()?;
                self.send_payload(username, &to_them, &to_us).await?;
            }
            Conversation::Group(id) => self.send_group_timer(*id, seconds, time).await?,
        }
        let me = self.account.username.clone();
        self.apply_timer(conversation, seconds, time, &me).await?;
        self.disappearing(conversation)
            .await?
            .ok_or_else(|| Inconsistent::TimerLost.into())
    }

    /// Deletes the messages and files whose time is up (and the saved copies of those
    /// files). The store does it when it opens; a client that stays open calls this as it
    /// goes (the CLI's `listen` and `chat` every second).
    pub async fn purge_expired(&self) -> Result<Purged, ClientError> {
        Ok(self.store.purge_expired(now_ms()).await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_and_print() {
        for (text, secs) in [
            ("90", 90),
            ("90s", 90),
            ("10m", 600),
            ("1h", 3600),
            ("7d", 604_800),
            ("2w", 1_209_600),
            ("off", 0),
            ("OFF", 0),
        ] {
            assert_eq!(parse_duration(text), Some(secs), "{text}");
        }
        for bad in ["", "h", "1x", "-1h", "1.5h", "99999999999w", "1h30m"] {
            assert_eq!(parse_duration(bad), None, "{bad}");
        }
        assert_eq!(describe(0), "off");
        assert_eq!(describe(3600), "1h");
        assert_eq!(describe(90_061), "1d 1h 1m 1s");
    }

    #[test]
    fn a_message_never_outlives_its_arrival_plus_its_timer() {
        // Sent at 1000, arrived at 5000: counted from the sender's time.
        assert_eq!(expiry(1_000, 5_000, Some(10)), Some(11_000));
        // A sender clock ahead (or a server holding it back does not matter): from arrival.
        assert_eq!(expiry(9_000, 5_000, Some(10)), Some(15_000));
        assert_eq!(expiry(1_000, 5_000, None), None);
        assert_eq!(expiry(1_000, 5_000, Some(0)), None);
    }

    /// Concurrent timer changes converge whatever order they arrive in: the later one (by
    /// the setter's time, then name) wins on every device.
    #[tokio::test]
    async fn timer_changes_converge_in_any_order() {
        let changes = [
            (60, 2_000, "bob"),
            (3600, 1_000, "alice"),
            (300, 2_000, "alice"),
        ];
        let mut finals = Vec::new();
        for order in [[0, 1, 2], [2, 1, 0], [1, 0, 2]] {
            let dir = tempfile::tempdir().unwrap();
            let client = offline_client(dir.path(), "carol").await;
            let conversation = Conversation::direct("bob");
            for i in order {
                let (secs, at, by) = changes[i];
                client
                    .apply_timer(&conversation, secs, at, by)
                    .await
                    .unwrap();
            }
            finals.push(client.disappearing(&conversation).await.unwrap().unwrap());
        }
        assert!(finals.iter().all(|t| *t == finals[0]), "{finals:?}");
        assert_eq!((finals[0].seconds, finals[0].set_by.as_str()), (60, "bob"));

        // A change dated a year ahead is refused; one a little ahead is kept, and a change
        // made here after it still wins.
        let dir = tempfile::tempdir().unwrap();
        let client = offline_client(dir.path(), "carol").await;
        let conversation = Conversation::direct("mallory");
        let year = 365 * 24 * 3600 * 1000;
        let refused = client
            .on_timer(
                &conversation,
                "mallory".into(),
                0,
                now_ms() + year,
                "mallory",
            )
            .await
            .unwrap();
        assert!(
            matches!(refused, IncomingKind::Failed { .. }),
            "{refused:?}"
        );
        assert!(client.disappearing(&conversation).await.unwrap().is_none());
        let ahead = now_ms() + 3_600_000;
        client
            .apply_timer(&conversation, 60, ahead, "mallory")
            .await
            .unwrap();
        // What set_disappearing dates its change with: above the kept one.
        let current = client.disappearing(&conversation).await.unwrap().unwrap();
        let mine = now_ms().max(current.set_at + 1);
        assert!(
            client
                .apply_timer(&conversation, 300, mine, "carol")
                .await
                .unwrap()
        );
        let kept = client.disappearing(&conversation).await.unwrap().unwrap();
        assert_eq!(kept.seconds, 300);
    }

    /// A message counts under the stricter of its own timer and the conversation's here (a
    /// change the server withheld from its sender still applies), and a device that knows
    /// no timer adopts the one messages carry (a device linked or a member added later).
    #[tokio::test]
    async fn the_stricter_timer_applies_and_an_unknown_one_is_adopted() {
        let dir = tempfile::tempdir().unwrap();
        let client = offline_client(dir.path(), "carol").await;
        let bob = Conversation::direct("bob");
        let now = now_ms();
        client
            .apply_timer(&bob, 60, now - 10, "carol")
            .await
            .unwrap();
        // Bob never learned of it: his message carries no timer.
        let kept = client.keep_until(&bob, "bob", now, None).await.unwrap();
        assert_eq!(kept, Some(Some(now + 60_000)));
        // His stricter one counts.
        let kept = client.keep_until(&bob, "bob", now, Some(5)).await.unwrap();
        assert_eq!(kept, Some(Some(now + 5_000)));
        // Out of time on arrival (under its own timer): not kept.
        let late = client
            .keep_until(&bob, "bob", now - 120_000, Some(60))
            .await
            .unwrap();
        assert_eq!(late, None);
        // A conversation without a timer here adopts the one a message carries.
        let dave = Conversation::direct("dave");
        client
            .keep_until(&dave, "dave", now, Some(30))
            .await
            .unwrap();
        let adopted = client.disappearing(&dave).await.unwrap().unwrap();
        assert_eq!((adopted.seconds, adopted.set_by.as_str()), (30, "dave"));
        // Any explicit change, even one made before that message, outranks an adoption.
        assert!(
            client
                .apply_timer(&dave, 300, now - 5_000, "erin")
                .await
                .unwrap()
        );
        // The conversation's timer does not reach back to a message sent before it was set.
        let erin = Conversation::direct("erin");
        client.apply_timer(&erin, 60, now, "carol").await.unwrap();
        let older = client
            .keep_until(&erin, "erin", now - 1_000, None)
            .await
            .unwrap();
        assert_eq!(older, Some(None));
    }

    /// The store deletes what is due at open (an offline device), binds the time of
    /// deletion into the row's seal (clearing it makes the row fail, not live on), and
    /// history leaves out what is due before any purge.
    #[tokio::test]
    async fn the_store_deletes_due_messages_and_refuses_a_cleared_expiry() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.db");
        let key = || KeySource::Key(crate::store::StoreKey::from_bytes([7; 32]));
        let bob = Conversation::direct("bob");
        let now = now_ms();
        {
            let store = Store::open(&path, key()).await.unwrap();
            for (body, expires) in [
                ("stays", None),
                ("due soon", Some(now + 300)),
                ("later", Some(now + 3_600_000)),
            ] {
                store
                    .add_message(
                        &bob,
                        false,
                        DeviceId(1),
                        now,
                        body.as_bytes(),
                        None,
                        expires,
                    )
                    .await
                    .unwrap();
            }
            store.close().await;
        }
        tokio::time::sleep(std::time::Duration::from_millis(400)).await;
        // Hidden even before a purge; deleted at the next open.
        let raw = || async {
            use sqlx::Connection as _;
            let mut c = sqlx::SqliteConnection::connect(&format!("sqlite://{}", path.display()))
                .await
                .unwrap();
            let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM messages")
                .fetch_one(&mut c)
                .await
                .unwrap();
            c.close().await.unwrap();
            n
        };
        assert_eq!(raw().await, 3);
        let store = Store::open(&path, key()).await.unwrap();
        let bodies: Vec<Vec<u8>> = store
            .history(&bob)
            .await
            .unwrap()
            .into_iter()
            .map(|m| m.body)
            .collect();
        assert_eq!(bodies, [b"stays".to_vec(), b"later".to_vec()]);
        store.close().await;
        assert_eq!(
            raw().await,
            2,
            "the due message was deleted when the store opened"
        );
        // Clearing the time of deletion by hand: the row no longer opens.
        {
            use sqlx::Connection as _;
            let mut c = sqlx::SqliteConnection::connect(&format!("sqlite://{}", path.display()))
                .await
                .unwrap();
            sqlx::query("UPDATE messages SET expires_at = NULL")
                .execute(&mut c)
                .await
                .unwrap();
            c.close().await.unwrap();
        }
        let store = Store::open(&path, key()).await.unwrap();
        let err = store.history(&bob).await.unwrap_err();
        assert!(matches!(err, StoreError::Corrupt(_)), "{err}");
        // A file's expiry moved into its message id (in clear, at the end of the seal's
        // context) and cleared: the descriptor no longer opens.
        store
            .put_file(&crate::store::NewFile {
                blob_id: "blob1",
                sender: "bob",
                peer: &bob,
                message_id: "m1",
                outgoing: false,
                sender_device: DeviceId(1),
                sent_at: now,
                descriptor: b"{}",
                expires_at: Some(now + 3_600_000),
            })
            .await
            .unwrap();
        assert!(store.file("blob1").await.unwrap().is_some());
        store.close().await;
        {
            use sqlx::Connection as _;
            let mut c = sqlx::SqliteConnection::connect(&format!("sqlite://{}", path.display()))
                .await
                .unwrap();
            sqlx::query(
                "UPDATE files SET message_id = message_id || '|expires:' || expires_at, \
                 expires_at = NULL",
            )
            .execute(&mut c)
            .await
            .unwrap();
            c.close().await.unwrap();
        }
        let store = Store::open(&path, key()).await.unwrap();
        let err = store.file("blob1").await.unwrap_err();
        assert!(matches!(err, StoreError::Corrupt(_)), "{err}");
        store.close().await;
    }
}
