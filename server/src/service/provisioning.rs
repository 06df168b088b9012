//! Device linking: provisioning channels and the link itself.
//!
//! The server relays a sealed message from an existing device to a new one and then lets
//! the new device add itself with the one-time token the message carried. It never sees
//! what the message holds; it only checks sizes, expiry and the token's hash.

use crate::store::{CHANNEL_ID_BYTES, ChannelId};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use tacit_api::{
    AddDeviceResponse, AnswerChannelRequest, ChannelState, LinkDeviceRequest, OpenChannelRequest,
    OpenChannelResponse, Timestamp,
};
use tracing::info;

use super::{AuthedDevice, Services, hash_secret, now, random_secret};
use crate::error::ApiError;
use crate::store::{ChannelAnswer, NewDevice};

/// How long a channel stays open.
const CHANNEL_TTL_MS: i64 = 10 * 60 * 1000;
/// Largest sealed answer (the account identity, a token, a little metadata).
pub(crate) const MAX_ANSWER_BYTES: usize = 64 * 1024;
/// The channel id of its wire form, or `NotFound` for anything that is not one.
fn channel_id(channel: &str) -> Result<ChannelId, ApiError> {
    URL_SAFE_NO_PAD
        .decode(channel)
        .ok()
        .and_then(|bytes| bytes.try_into().ok())
        .map(ChannelId)
        .ok_or(ApiError::NotFound("provisioning channel"))
}

fn validate_token(token: &str) -> Result<(), ApiError> {
    if (16..=128).contains(&token.len()) && token.bytes().all(|b| b.is_ascii_graphic()) {
        Ok(())
    } else {
        Err(ApiError::BadRequest(
            "link_token: 16 to 128 printable ASCII characters".into(),
        ))
    }
}

impl Services {
    /// Open a channel for a new device.
    pub async fn open_channel(
        &self,
        req: OpenChannelRequest,
    ) -> Result<OpenChannelResponse, ApiError> {
        self.validate_key("public_key", req.public_key.len())?;
        if !self.channels_opened.try_take(0, 1) {
            self.rate_limit_tripped(super::Limit::ProvisioningChannels);
            return Err(ApiError::RateLimited);
        }
        let secret = random_secret()?;
        let mut id = ChannelId([0; CHANNEL_ID_BYTES]);
        id.0.copy_from_slice(&secret[..CHANNEL_ID_BYTES]);
        let now = now();
        let expires_at = Timestamp(now.0.saturating_add(CHANNEL_TTL_MS));
        self.store
            .create_channel(&id, req.public_key.as_slice(), now, expires_at)
            .await?;
        Ok(OpenChannelResponse {
            channel: URL_SAFE_NO_PAD.encode(id.as_bytes()),
            expires_at,
        })
    }

    /// A channel's key and answer.
    pub async fn channel_state(&self, channel: &str) -> Result<ChannelState, ApiError> {
        let id = channel_id(channel)?;
        let record = self
            .store
            .channel(&id, now())
            .await?
            .ok_or(ApiError::NotFound("provisioning channel"))?;
        Ok(ChannelState {
            public_key: record.public_key.into(),
            message: record.message.map(Into::into),
        })
    }

    /// An existing device answers a channel, once.
    pub async fn answer_channel(
        &self,
        caller: &AuthedDevice,
        channel: &str,
        req: AnswerChannelRequest,
    ) -> Result<(), ApiError> {
        let id = channel_id(channel)?;
        validate_token(&req.link_token)?;
        if req.message.is_empty() {
            return Err(ApiError::BadRequest("message: empty".into()));
        }
        if req.message.len() > MAX_ANSWER_BYTES {
            return Err(ApiError::PayloadTooLarge(format!(
                "message: 1 to {MAX_ANSWER_BYTES} bytes"
            )));
        }
        let answer = self
            .store
            .answer_channel(
                &id,
                caller.mailbox.account,
                hash_secret(req.link_token.as_bytes()),
                req.message.as_slice(),
                now(),
            )
            .await?;
        match answer {
            ChannelAnswer::Stored => {
                info!(
                    account = caller.mailbox.account.0,
                    "provisioning channel answered"
                );
                Ok(())
            }
            ChannelAnswer::NotFound => Err(ApiError::NotFound("provisioning channel")),
            ChannelAnswer::AlreadyAnswered => Err(ApiError::Conflict(
                "this provisioning channel was already answered",
            )),
        }
    }

    /// The new device adds itself with the link token (audited as `link-complete`).
    pub async fn link_device(
        &self,
        req: LinkDeviceRequest,
        origin: super::Origin,
    ) -> Result<AddDeviceResponse, ApiError> {
        let id = channel_id(&req.channel)?;
        validate_token(&req.link_token)?;
        super::accounts::validate_device_name(req.device_name.as_deref())?;
        self.validate_device_keys(&req.keys)?;
        let secret = random_secret()?;
        let device = NewDevice {
            name: req.device_name,
            credential_hash: hash_secret(&secret),
            keys: req.keys,
        };
        let Some((account, device_id)) = self
            .store
            .link_device(
                &id,
                hash_secret(req.link_token.as_bytes()),
                device,
                self.config.limits.max_devices_per_account,
                now(),
                &origin.event(crate::audit::Action::LinkComplete),
            )
            .await?
        else {
            // One answer for every refusal, so that the endpoint tells nothing about which
            // channels exist.
            return Err(ApiError::NotFound(
                "answered provisioning channel with this token",
            ));
        };
        self.count_audited(crate::audit::Action::LinkComplete);
        info!(account = account.0, device = device_id.0, "device linked");
        Ok(AddDeviceResponse {
            device_id,
            credential: tacit_api::DeviceCredential {
                account: account.0,
                device: device_id,
                secret,
            },
        })
    }
}
