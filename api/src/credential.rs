//! The device credential: the secret a device presents on every request.

use std::fmt;
use std::str::FromStr;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use utoipa::openapi::RefOr;
use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};
use utoipa::{PartialSchema, ToSchema};

use crate::DeviceId;

/// The header that carries a device credential: `Authorization: Bearer <credential>`.
pub const AUTHORIZATION_SCHEME: &str = "Bearer";

/// The secret a device presents on every request and on its WebSocket.
///
/// Its string form is `<account>.<device>.<secret>` where the secret is 32 random bytes in
/// unpadded base64url. The server keeps only a SHA-256 hash of the secret and compares it in
/// constant time. `Debug` never prints the secret.
#[derive(Clone, PartialEq, Eq)]
pub struct DeviceCredential {
    /// The server's number for the account (not secret).
    pub account: i64,
    /// The device within the account (not secret).
    pub device: DeviceId,
    /// The 32 secret bytes.
    pub secret: [u8; 32],
}

impl fmt::Debug for DeviceCredential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Self {
            account,
            device,
            secret: _,
        } = self;
        f.debug_struct("DeviceCredential")
            .field("account", account)
            .field("device", device)
            .finish_non_exhaustive()
    }
}

impl fmt::Display for DeviceCredential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}.{}.{}",
            self.account,
            self.device,
            URL_SAFE_NO_PAD.encode(self.secret)
        )
    }
}

impl PartialSchema for DeviceCredential {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .pattern(Some(
                r"^-?[0-9]+\.[0-9]+\.[A-Za-z0-9_-]{42}[AEIMQUYcgkosw048]$",
            ))
            .description(Some(
                "`<account>.<device>.<secret>`: the secret is 32 bytes in unpadded base64url.",
            ))
            .into()
    }
}

impl ToSchema for DeviceCredential {}

/// Why a credential string could not be parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MalformedCredential;

impl fmt::Display for MalformedCredential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("malformed device credential")
    }
}

impl std::error::Error for MalformedCredential {}

impl FromStr for DeviceCredential {
    type Err = MalformedCredential;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut parts = s.split('.');
        let (Some(account), Some(device), Some(secret), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(MalformedCredential);
        };
        let account = account.parse().map_err(|_| MalformedCredential)?;
        let device = DeviceId(device.parse().map_err(|_| MalformedCredential)?);
        let bytes = URL_SAFE_NO_PAD
            .decode(secret)
            .map_err(|_| MalformedCredential)?;
        let secret = bytes.try_into().map_err(|_| MalformedCredential)?;
        Ok(Self {
            account,
            device,
            secret,
        })
    }
}

impl Serialize for DeviceCredential {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for DeviceCredential {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credential_round_trips_and_hides_secret() {
        let c = DeviceCredential {
            account: 7,
            device: DeviceId(2),
            secret: [0xab; 32],
        };
        let s = c.to_string();
        assert_eq!(s.parse::<DeviceCredential>().unwrap(), c);
        assert!(!format!("{c:?}").contains("ab"));
        for bad in ["", "1.2", "1.2.3.4", "x.1.AAAA", "1.2.AAAA", "1.-2.AAAA"] {
            assert!(bad.parse::<DeviceCredential>().is_err(), "{bad}");
        }
    }
}
