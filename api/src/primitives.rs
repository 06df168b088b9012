//! The primitive types of the wire: byte strings, ciphertexts, device numbers, times.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use utoipa::openapi::schema::{ObjectBuilder, Schema, SchemaFormat, Type};
use utoipa::openapi::{KnownFormat, RefOr};
use utoipa::{PartialSchema, ToSchema};

use crate::whole;

/// The pattern of a canonical standard base64 string with padding (the only spelling
/// [`Bytes`] accepts: trailing bits must be zero).
pub const BASE64_PATTERN: &str =
    r"^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}[AEIMQUYcgkosw048]=|[A-Za-z0-9+/][AQgw]==)?$";

/// An opaque byte string, base64 (standard alphabet, padded) on the wire.
#[derive(Clone, PartialEq, Eq, Hash, Default)]
pub struct Bytes(pub Vec<u8>);

impl Bytes {
    /// The raw bytes.
    #[must_use]
    pub fn as_slice(&self) -> &[u8] {
        &self.0
    }

    /// Length in bytes (not in base64 characters).
    #[must_use]
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether the byte string is empty.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Any byte string; fields that take a bounded one say so where they are declared.
impl PartialSchema for Bytes {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .content_encoding("base64")
            .pattern(Some(BASE64_PATTERN))
            .description(Some("Bytes in standard base64 with padding."))
            .into()
    }
}

impl ToSchema for Bytes {}

impl From<Vec<u8>> for Bytes {
    fn from(v: Vec<u8>) -> Self {
        Self(v)
    }
}

/// Prints only the length, so that a stray `{:?}` never logs key material or ciphertext.
impl fmt::Debug for Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Bytes({} bytes)", self.0.len())
    }
}

impl Serialize for Bytes {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&STANDARD.encode(&self.0))
    }
}

impl<'de> Deserialize<'de> for Bytes {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = Bytes;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a base64 string (standard alphabet, padded)")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Bytes, E> {
                STANDARD
                    .decode(v)
                    .map(Bytes)
                    .map_err(|_| E::custom("invalid base64"))
            }
        }
        d.deserialize_str(Visitor)
    }
}

/// An end-to-end encrypted message for one device. The server stores and forwards it
/// without ever looking inside.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(transparent)]
pub struct Ciphertext(pub Bytes);

impl fmt::Debug for Ciphertext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Ciphertext({} bytes)", self.0.len())
    }
}

impl PartialSchema for Ciphertext {
    fn schema() -> RefOr<Schema> {
        Bytes::schema()
    }
}

impl ToSchema for Ciphertext {}

/// A device number, unique within one account and never reused after a device is removed
/// (so that a ciphertext made for a removed device can never reach a new one).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct DeviceId(pub u32);

impl<'de> Deserialize<'de> for DeviceId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        whole::deserialize(d).map(Self)
    }
}

impl PartialSchema for DeviceId {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::Integer)
            .format(Some(SchemaFormat::KnownFormat(KnownFormat::Int64)))
            .minimum(Some(0))
            .maximum(Some(u32::MAX))
            .into()
    }
}

impl ToSchema for DeviceId {}

impl fmt::Display for DeviceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Milliseconds since the Unix epoch, as assigned by the server.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, ToSchema,
)]
#[serde(transparent)]
pub struct Timestamp(pub i64);

/// The rule for usernames, as said to people.
pub const USERNAME_RULE: &str = "3 to 32 characters of a-z, 0-9, `_`, `-`, `.`";

/// Whether `name` is a username: 3 to 32 of `a-z 0-9 _ - .` ([`USERNAME_RULE`]). The server
/// registers no other; a client refuses a message whose sender the server names otherwise
/// (a name such as `group:<id>` would pass for another conversation).
#[must_use]
pub fn is_username(name: &str) -> bool {
    (3..=32).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"_-.".contains(&b))
}

/// The username an identity provider's claim makes ([`OidcConfig::username_claim`](crate::OidcConfig::username_claim)):
/// surrounding white space trimmed, lower-cased, an `@domain` suffix removed when the
/// domain is one of `allowed_domains` (case-insensitive), and then a valid username
/// ([`is_username`]), or nothing: never a silent rewrite. The server and the clients use
/// this one function, so that both derive the same name.
#[must_use]
pub fn username_from_claim(claim: &str, allowed_domains: &[String]) -> Option<String> {
    let mut name = claim.trim().to_lowercase();
    if let Some((local, domain)) = name.rsplit_once('@')
        && allowed_domains
            .iter()
            .any(|d| d.trim().eq_ignore_ascii_case(domain))
    {
        name = local.to_owned();
    }
    is_username(&name).then_some(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claims_make_usernames_by_one_rule() {
        let domains = ["Example.com".to_owned()];
        let name = |claim: &str, domains: &[String]| username_from_claim(claim, domains);
        assert_eq!(name("  Alice ", &domains).as_deref(), Some("alice"));
        assert_eq!(name("Bob@EXAMPLE.com", &domains).as_deref(), Some("bob"));
        assert_eq!(
            name("J.Doe_1@example.com", &domains).as_deref(),
            Some("j.doe_1")
        );
        // Another domain is not stripped, and `@` is no username character; nothing is
        // folded into another name.
        for bad in [
            "bob@other.org",
            "a b",
            "ab",
            "jörg",
            "bob@example.com@example.com",
        ] {
            assert_eq!(name(bad, &domains), None, "{bad}");
        }
        assert_eq!(name("bob@example.com", &[]), None);
    }

    #[test]
    fn usernames_follow_one_rule() {
        for good in ["bob", "alice.smith", "a_b-c", &"x".repeat(32)] {
            assert!(is_username(good), "{good}");
        }
        for bad in [
            "",
            "al",
            "Bob",
            "group:00112233445566778899aabbccddeeff",
            "b o b",
            "bøb",
            &"x".repeat(33),
        ] {
            assert!(!is_username(bad), "{bad}");
        }
    }

    #[test]
    fn bytes_are_base64_and_debug_hides_them() {
        let b = Bytes(vec![0xde, 0xad, 0xbe, 0xef]);
        assert_eq!(serde_json::to_string(&b).unwrap(), "\"3q2+7w==\"");
        let back: Bytes = serde_json::from_str("\"3q2+7w==\"").unwrap();
        assert_eq!(back, b);
        assert!(serde_json::from_str::<Bytes>("\"not base64!\"").is_err());
        assert_eq!(format!("{b:?}"), "Bytes(4 bytes)");
    }
}
