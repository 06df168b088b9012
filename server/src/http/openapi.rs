//! The OpenAPI document, derived from the handlers' `#[utoipa::path]` annotations and the
//! `tacit-api` types, with this server's configured limits written into it, so that the
//! document served at `/openapi.json` states what this server enforces.
//!
//! A rule that JSON Schema cannot state (an id given twice inside a list of objects, a
//! multicast that names the sender, the per-multicast device total) is written in the
//! operation's or the field's description instead.

use serde_json::{Value, json};
use tacit_api::{
    AckRequest, AddDeviceRequest, AddDeviceResponse, AnswerChannelRequest, ChannelState,
    ClaimBundlesRequest, ClientFrame, CreateBlobRequest, CreateBlobResponse, DeviceList,
    EnvelopeBatch, ErrorBody, LinkDeviceRequest, MulticastRequest, OpenChannelRequest,
    OpenChannelResponse, PrekeyBundles, PrekeyCount, RegisterRequest, RegisterResponse,
    SendMessageRequest, SendMessageResponse, ServerFrame, UploadKeysRequest,
};
use tacit_api::{
    AdminUser, AdminUserList, AuditPage, CreateInviteRequest, CreateInviteResponse, InviteList,
    Role, SetQuotaRequest,
};
use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{OpenApi as Document, RefOr};
use utoipa::{Modify, OpenApi, PartialSchema, ToSchema};

use super::{admin, handlers, oidc, scim, ws};
use crate::config::Config;
use crate::service::{MAX_ANSWER_BYTES, MAX_MULTICAST_DEVICES, max_blob_bytes};

/// Raw bytes in a request or response body (not JSON).
pub(super) struct RawBytes;

impl PartialSchema for RawBytes {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .content_media_type("application/octet-stream")
            .into()
    }
}

impl ToSchema for RawBytes {}

/// Any JSON object (this document).
pub(super) struct AnyObject;

impl PartialSchema for AnyObject {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new().schema_type(Type::Object).into()
    }
}

impl ToSchema for AnyObject {}

/// The bearer scheme every authenticated operation names.
struct DeviceCredentialScheme;

impl Modify for DeviceCredentialScheme {
    fn modify(&self, doc: &mut Document) {
        let components = doc.components.get_or_insert_with(Default::default);
        let mut scheme = HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build();
        scheme.description = Some("a DeviceCredential".into());
        components.add_security_scheme("deviceCredential", SecurityScheme::Http(scheme));
        let mut scim = HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build();
        scim.description = Some("the SCIM client's token ([scim] bearer_token_file)".into());
        components.add_security_scheme("scim", SecurityScheme::Http(scim));
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Tacit relay server",
        description = "A blind relay: stores and forwards opaque ciphertext and serves public \
            prekey bundles. Every error body is ErrorBody with a stable code. Lengths, counts and \
            sizes below are this server's configured limits; a request body is also capped at \
            `limits.max_body_bytes` as a whole."
    ),
    paths(
        handlers::register,
        handlers::delete_account,
        handlers::own_devices,
        handlers::add_device,
        handlers::remove_device,
        handlers::link_device,
        oidc::sso_add_device,
        oidc::config,
        oidc::backchannel_logout,
        handlers::open_channel,
        handlers::channel_state,
        handlers::answer_channel,
        handlers::user_devices,
        handlers::claim_bundles,
        handlers::upload_keys,
        handlers::prekey_count,
        handlers::policy,
        handlers::send,
        handlers::fetch,
        handlers::ack,
        handlers::multicast,
        ws::upgrade,
        handlers::create_blob,
        handlers::blob_status,
        handlers::upload_blob,
        handlers::download_blob,
        handlers::delete_blob,
        admin::list_users,
        admin::get_user,
        admin::delete_user,
        admin::disable_user,
        admin::enable_user,
        admin::remove_device,
        admin::grant_role,
        admin::revoke_role,
        admin::set_quota,
        admin::list_invites,
        admin::create_invite,
        admin::revoke_invite,
        admin::audit_log,
        scim::list_users,
        scim::create_user,
        scim::get_user,
        scim::replace_user,
        scim::patch_user,
        scim::delete_user,
        scim::service_provider_config,
        scim::resource_types,
        scim::schemas,
        handlers::healthz,
        handlers::readyz,
        handlers::metrics,
        handlers::openapi,
    ),
    components(schemas(
        ServerFrame,
        ClientFrame,
        RegisterRequest,
        RegisterResponse,
        tacit_api::SsoDeviceRequest,
        tacit_api::SsoDeviceResponse,
        tacit_api::OidcConfig,
        AddDeviceRequest,
        AddDeviceResponse,
        LinkDeviceRequest,
        OpenChannelRequest,
        OpenChannelResponse,
        ChannelState,
        AnswerChannelRequest,
        DeviceList,
        ClaimBundlesRequest,
        PrekeyBundles,
        UploadKeysRequest,
        PrekeyCount,
        tacit_api::Policy,
        SendMessageRequest,
        SendMessageResponse,
        MulticastRequest,
        EnvelopeBatch,
        AckRequest,
        CreateBlobRequest,
        CreateBlobResponse,
        ErrorBody,
        AdminUserList,
        AdminUser,
        CreateInviteRequest,
        CreateInviteResponse,
        InviteList,
        SetQuotaRequest,
        AuditPage,
        Role,
    )),
    modifiers(&DeviceCredentialScheme),
    security(("deviceCredential" = [])),
)]
struct ApiDoc;

/// The longest base64 text that certainly carries at most `max` bytes: whole groups of
/// four characters only (a bound of `4 * ceil(max / 3)` would let 5,464 characters carry
/// 4,098 bytes where 4,096 are allowed). A precise pattern instead would need a repetition
/// count as large as the limit, which makes test generators crawl; the server's own check
/// is by bytes.
fn base64_max_len(max: u64) -> u64 {
    (max / 3).saturating_mul(4)
}

/// Where the document states a configured limit: (schema, property, keyword, value).
fn limits(config: &Config) -> Vec<(&'static str, &'static str, &'static str, Value)> {
    let l = &config.limits;
    let key = json!(base64_max_len(l.max_key_bytes));
    let envelope = json!(base64_max_len(l.max_envelope_bytes));
    let upload = json!(l.max_prekeys_per_upload);
    let devices = json!(l.max_devices_per_account);
    let per_recipient = u64::from(l.max_devices_per_account.max(1));
    // Every recipient counts with at least one device; the sender's own devices too.
    let recipients = (MAX_MULTICAST_DEVICES as u64)
        .saturating_sub(per_recipient)
        .checked_div(per_recipient)
        .unwrap_or(0);
    let mut out = Vec::new();
    for (schema, property) in [
        ("SignedPrekey", "public_key"),
        ("SignedPrekey", "signature"),
        ("OneTimePrekey", "public_key"),
        ("OneTimePrekey", "signature"),
        ("DeviceKeys", "identity_key"),
        ("UploadKeysRequest", "identity_key"),
        ("OpenChannelRequest", "public_key"),
    ] {
        out.push((schema, property, "maxLength", key.clone()));
    }
    for (schema, property) in [
        ("DeviceCiphertext", "ciphertext"),
        ("MulticastRequest", "ciphertext"),
    ] {
        out.push((schema, property, "maxLength", envelope.clone()));
    }
    out.push((
        "AnswerChannelRequest",
        "message",
        "maxLength",
        json!(base64_max_len(MAX_ANSWER_BYTES as u64)),
    ));

    for schema in ["DeviceKeys", "UploadKeysRequest"] {
        for property in ["one_time_prekeys", "one_time_kem_prekeys"] {
            out.push((schema, property, "maxItems", upload.clone()));
        }
    }
    for (schema, property) in [
        ("ClaimBundlesRequest", "device_ids"),
        ("SendMessageRequest", "recipient_devices"),
        ("SendMessageRequest", "own_devices"),
        ("MulticastRecipient", "device_ids"),
        ("MulticastRequest", "own_devices"),
    ] {
        out.push((schema, property, "maxItems", devices.clone()));
    }
    out.push((
        "MulticastRecipient",
        "device_ids",
        "uniqueItems",
        json!(true),
    ));
    out.push((
        "MulticastRequest",
        "own_devices",
        "uniqueItems",
        json!(true),
    ));
    out.push((
        "MulticastRequest",
        "recipients",
        "maxItems",
        json!(recipients),
    ));
    out.push((
        "CreateBlobRequest",
        "size",
        "maximum",
        json!(max_blob_bytes(config.blobs.max_file_bytes)),
    ));
    out
}

/// The document for a server running `config`, as JSON text.
///
/// # Errors
/// A limit names a schema property the generated document does not have (a renamed
/// field): a bug, caught by this module's tests.
pub(crate) fn document(config: &Config) -> Result<String, String> {
    let mut doc = serde_json::to_value(ApiDoc::openapi()).map_err(|e| e.to_string())?;
    for (schema, property, keyword, value) in limits(config) {
        let pointer = format!("/components/schemas/{schema}/properties/{property}");
        let target = doc
            .pointer_mut(&pointer)
            .ok_or_else(|| format!("{pointer}: not in the generated document"))?;
        // An optional field is `oneOf: [null, the schema]`; the limit goes on the schema.
        let target = match target.get_mut("oneOf").and_then(Value::as_array_mut) {
            Some(variants) => variants
                .iter_mut()
                .find(|v| v.get("type") != Some(&json!("null")))
                .ok_or_else(|| format!("{pointer}: only null"))?,
            None => target,
        };
        let object = target
            .as_object_mut()
            .ok_or_else(|| format!("{pointer}: not an object"))?;
        object.insert(keyword.to_owned(), value);
    }
    add_links(&mut doc)?;
    serde_json::to_string_pretty(&doc).map_err(|e| e.to_string())
}

/// OpenAPI links: the id a creating operation answers is what the operations on that
/// resource take (so that clients and test generators can follow them).
fn add_links(doc: &mut Value) -> Result<(), String> {
    let links = [
        (
            "/v1/blobs",
            "post",
            "201",
            "blob_id",
            &["blobStatus", "uploadBlob", "downloadBlob", "deleteBlob"][..],
        ),
        (
            "/v1/provisioning",
            "post",
            "201",
            "channel",
            &["channelState", "answerChannel"][..],
        ),
    ];
    for (path, method, status, field, targets) in links {
        let pointer = format!(
            "/paths/{}/{method}/responses/{status}",
            path.replace('/', "~1")
        );
        let response = doc
            .pointer_mut(&pointer)
            .and_then(Value::as_object_mut)
            .ok_or_else(|| format!("{pointer}: not in the generated document"))?;
        let mut map = serde_json::Map::new();
        for target in targets {
            map.insert(
                (*target).to_owned(),
                json!({
                    "operationId": target,
                    "parameters": { field: format!("$response.body#/{field}") },
                }),
            );
        }
        response.insert("links".to_owned(), Value::Object(map));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_limit_lands_in_the_document() {
        let mut config = Config::default();
        config.limits.max_key_bytes = 300;
        config.limits.max_devices_per_account = 7;
        let text = document(&config).unwrap();
        let doc: Value = serde_json::from_str(&text).unwrap();
        let prop = |schema: &str, property: &str| {
            doc.pointer(&format!(
                "/components/schemas/{schema}/properties/{property}"
            ))
            .unwrap()
            .clone()
        };
        assert_eq!(prop("SignedPrekey", "public_key")["maxLength"], json!(400));
        assert_eq!(
            prop("DeviceCiphertext", "ciphertext")["maxLength"],
            json!(349_524)
        );
        assert_eq!(
            prop("MulticastRecipient", "device_ids")["maxItems"],
            json!(7)
        );
        assert_eq!(
            prop("MulticastRequest", "recipients")["maxItems"],
            json!(713)
        );
        assert_eq!(doc["openapi"], json!("3.1.0"));
        // 21 for devices, 10 under /v1/admin/, each of which documents the 403 of a
        // caller without the role, and 5 of SCIM.
        let paths = doc["paths"].as_object().unwrap();
        assert_eq!(paths.len(), 40);
        assert_eq!(
            paths.keys().filter(|p| p.starts_with("/scim/v2/")).count(),
            5
        );
        let admin: Vec<_> = paths
            .iter()
            .filter(|(path, _)| path.starts_with("/v1/admin/"))
            .collect();
        assert_eq!(admin.len(), 10);
        for (path, ops) in admin {
            for (method, op) in ops.as_object().unwrap() {
                assert!(
                    op["responses"]["403"].is_object(),
                    "{method} {path} documents no 403"
                );
            }
        }
        let link = &doc["paths"]["/v1/blobs"]["post"]["responses"]["201"]["links"]["uploadBlob"];
        assert_eq!(
            link["parameters"]["blob_id"],
            json!("$response.body#/blob_id")
        );
    }

    #[test]
    fn base64_bounds_never_admit_more_bytes() {
        for max in 0..50 {
            let chars = base64_max_len(max);
            assert_eq!(chars % 4, 0);
            // The longest text admitted carries at most `max` bytes, and at least max - 2.
            assert!(chars / 4 * 3 <= max && chars / 4 * 3 + 2 >= max, "{max}");
        }
        assert_eq!(base64_max_len(4096), 5460);
    }

    #[test]
    fn request_bodies_refuse_unknown_fields() {
        let doc: Value = serde_json::from_str(&document(&Config::default()).unwrap()).unwrap();
        for schema in [
            "RegisterRequest",
            "DeviceKeys",
            "SignedPrekey",
            "SendMessageRequest",
            "MulticastRequest",
            "AckRequest",
            "CreateBlobRequest",
        ] {
            assert_eq!(
                doc["components"]["schemas"][schema]["additionalProperties"],
                json!(false),
                "{schema}"
            );
        }
    }
}
