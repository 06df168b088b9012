//! SCIM 2.0 provisioning (RFC 7643, RFC 7644) of users by the company's identity
//! provider: enough of `/Users` for the SCIM clients of Entra ID and Okta (docs/SCIM.md).
//!
//! A SCIM user is linked to the Tacit account of the same username, which may not exist
//! yet: creating one pre-provisions the name. Deactivating it (`active: false`, by PATCH
//! or PUT) is exactly an administrator's disable ([`Services::set_user_disabled`], with
//! `via: scim`), and its name cannot be registered while it is inactive; deleting it
//! deletes the account as an administrator does. Every change is audited. The client's
//! `password` is never read, and no request body is logged.

use std::net::IpAddr;

use serde_json::{Map, Value, json};
use tacit_api::ErrorCode;
use tracing::{info, warn};

use super::accounts::normalise_username;
use super::admin::Admin;
use super::{Origin, Services, now};
use crate::audit::{Action, Detail, Outcome};
use crate::error::ApiError;
use crate::store::{ScimUser, StoreError};

/// The core User schema.
pub(crate) const USER_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:User";
/// The error schema.
pub(crate) const ERROR_SCHEMA: &str = "urn:ietf:params:scim:api:messages:2.0:Error";
/// The list response schema.
pub(crate) const LIST_SCHEMA: &str = "urn:ietf:params:scim:api:messages:2.0:ListResponse";
/// Most users one page returns (`count` is capped to it).
pub(crate) const MAX_COUNT: u32 = 100;
/// Longest `externalId` or `displayName` kept.
const MAX_ATTRIBUTE_CHARS: usize = 256;

/// A SCIM request refused, answered with the SCIM error body (RFC 7644 §3.12).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ScimError {
    /// The server has no `[scim]`: 404.
    #[error("this server has no SCIM endpoint configured ([scim])")]
    Off,
    /// The bearer token is missing or wrong: 401.
    #[error("a valid bearer token is required")]
    Unauthorized,
    /// Too many refused tokens from this source: 429.
    #[error("too many refused requests; retry later")]
    RateLimited,
    /// No such user (or route): 404.
    #[error("{0}")]
    NotFound(String),
    /// A user with this userName exists: 409 `uniqueness`.
    #[error("a user with this userName exists")]
    Uniqueness,
    /// A value does not fit (an invalid userName): 400 `invalidValue`.
    #[error("{0}")]
    InvalidValue(String),
    /// An attempt to change an attribute that cannot change (userName): 400 `mutability`.
    #[error("{0}")]
    Mutability(String),
    /// A filter this server does not evaluate: 400 `invalidFilter`.
    #[error("{0}")]
    InvalidFilter(String),
    /// A body that is not the expected JSON: 400 `invalidSyntax`.
    #[error("{0}")]
    InvalidSyntax(String),
    /// A content type other than JSON: 415.
    #[error("the body must be application/scim+json or application/json")]
    UnsupportedMediaType,
    /// The database or another service failed.
    #[error(transparent)]
    Api(ApiError),
}

impl ScimError {
    /// The HTTP status.
    #[must_use]
    pub fn status(&self) -> u16 {
        match self {
            Self::Off | Self::NotFound(_) => 404,
            Self::Unauthorized => 401,
            Self::RateLimited => 429,
            Self::Uniqueness => 409,
            Self::InvalidValue(_)
            | Self::Mutability(_)
            | Self::InvalidFilter(_)
            | Self::InvalidSyntax(_) => 400,
            Self::UnsupportedMediaType => 415,
            Self::Api(e) => e.code().http_status(),
        }
    }

    /// The `scimType` (RFC 7644 Table 9), where one applies.
    #[must_use]
    pub fn scim_type(&self) -> Option<&'static str> {
        match self {
            Self::Uniqueness => Some("uniqueness"),
            Self::InvalidValue(_) => Some("invalidValue"),
            Self::Mutability(_) => Some("mutability"),
            Self::InvalidFilter(_) => Some("invalidFilter"),
            Self::InvalidSyntax(_) => Some("invalidSyntax"),
            _ => None,
        }
    }

    /// The SCIM error body.
    #[must_use]
    pub fn body(&self) -> Value {
        let detail = match self {
            // The API error's own client message (an internal error's cause is logged
            // once by it, never sent).
            Self::Api(e) => e.body().message,
            e => e.to_string(),
        };
        let mut body = json!({
            "schemas": [ERROR_SCHEMA],
            "status": self.status().to_string(),
            "detail": detail,
        });
        if let (Some(kind), Some(map)) = (self.scim_type(), body.as_object_mut()) {
            map.insert("scimType".into(), kind.into());
        }
        body
    }
}

impl From<ApiError> for ScimError {
    fn from(e: ApiError) -> Self {
        Self::Api(e)
    }
}

impl From<StoreError> for ScimError {
    fn from(e: StoreError) -> Self {
        Self::Api(e.into())
    }
}

/// What a filter selects (RFC 7644 §3.4.2.2): only `userName eq "..."` and
/// `externalId eq "..."`, the lookups Entra ID and Okta make.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Filter {
    /// `userName eq "value"` (the value as sent; compared after normalisation).
    UserName(String),
    /// `externalId eq "value"` (compared exactly: `caseExact` is true for it).
    ExternalId(String),
}

/// Parse a filter: an attribute (case-insensitive), `eq` (case-insensitive) and a JSON
/// string.
pub(crate) fn parse_filter(filter: &str) -> Result<Filter, ScimError> {
    let unsupported = || {
        ScimError::InvalidFilter(
            "only `userName eq \"...\"` and `externalId eq \"...\"` are supported".into(),
        )
    };
    let filter = filter.trim();
    let (attribute, rest) = filter
        .split_once(char::is_whitespace)
        .ok_or_else(unsupported)?;
    let (op, value) = rest
        .trim_start()
        .split_once(char::is_whitespace)
        .ok_or_else(unsupported)?;
    if !op.eq_ignore_ascii_case("eq") {
        return Err(unsupported());
    }
    let value: String = serde_json::from_str(value.trim()).map_err(|_| unsupported())?;
    let attribute = attribute
        .strip_prefix(USER_SCHEMA)
        .and_then(|a| a.strip_prefix(':'))
        .unwrap_or(attribute);
    if attribute.eq_ignore_ascii_case("userName") {
        Ok(Filter::UserName(value))
    } else if attribute.eq_ignore_ascii_case("externalId") {
        Ok(Filter::ExternalId(value))
    } else {
        Err(unsupported())
    }
}

/// What a PATCH (or a PUT) changes of the attributes kept. `None`: unchanged.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Changes {
    /// `active`.
    pub active: Option<bool>,
    /// `externalId` (`Some(None)`: removed).
    pub external_id: Option<Option<String>>,
    /// `displayName` (`Some(None)`: removed).
    pub display_name: Option<Option<String>>,
    /// A `userName` given: refused unless it normalises to the current one.
    pub user_name: Option<String>,
}

/// `value` as a boolean: `true`/`false`, or the strings `"True"`/`"False"` in any case
/// (Entra ID's default PATCH sends `"False"`).
pub(crate) fn parse_bool(value: &Value) -> Result<bool, ScimError> {
    match value {
        Value::Bool(b) => Ok(*b),
        Value::String(s) if s.eq_ignore_ascii_case("true") => Ok(true),
        Value::String(s) if s.eq_ignore_ascii_case("false") => Ok(false),
        _ => Err(ScimError::InvalidValue(
            "active: a boolean, or the string \"True\" or \"False\"".into(),
        )),
    }
}

fn attribute_text(name: &str, value: &Value) -> Result<Option<String>, ScimError> {
    match value {
        Value::Null => Ok(None),
        Value::String(s) if s.chars().count() <= MAX_ATTRIBUTE_CHARS => Ok(Some(s.clone())),
        _ => Err(ScimError::InvalidValue(format!(
            "{name}: a string of at most {MAX_ATTRIBUTE_CHARS} characters"
        ))),
    }
}

impl Changes {
    /// Apply `value` to the attribute `path` (case-insensitive, as SCIM attribute names
    /// are); attributes not kept are ignored.
    fn set(&mut self, path: &str, value: &Value) -> Result<(), ScimError> {
        let path = path
            .strip_prefix(USER_SCHEMA)
            .and_then(|a| a.strip_prefix(':'))
            .unwrap_or(path);
        if path.eq_ignore_ascii_case("active") {
            self.active = Some(parse_bool(value)?);
        } else if path.eq_ignore_ascii_case("externalId") {
            self.external_id = Some(attribute_text("externalId", value)?);
        } else if path.eq_ignore_ascii_case("displayName") {
            self.display_name = Some(attribute_text("displayName", value)?);
        } else if path.eq_ignore_ascii_case("userName") {
            match value {
                Value::String(s) => self.user_name = Some(s.clone()),
                _ => return Err(ScimError::InvalidValue("userName: a string".into())),
            }
        }
        Ok(())
    }

    fn remove(&mut self, path: &str) -> Result<(), ScimError> {
        let path = path
            .strip_prefix(USER_SCHEMA)
            .and_then(|a| a.strip_prefix(':'))
            .unwrap_or(path);
        if path.eq_ignore_ascii_case("externalId") {
            self.external_id = Some(None);
        } else if path.eq_ignore_ascii_case("displayName") {
            self.display_name = Some(None);
        } else if path.eq_ignore_ascii_case("active") || path.eq_ignore_ascii_case("userName") {
            return Err(ScimError::Mutability(format!("{path} cannot be removed")));
        }
        Ok(())
    }
}

/// Parse a PatchOp body (RFC 7644 §3.5.2): `op` case-insensitive (`add`, `replace`,
/// `remove`); with a `path`, or without one and an object `value` whose keys are paths.
pub fn parse_patch(body: &Value) -> Result<Changes, ScimError> {
    let syntax = |m: &str| ScimError::InvalidSyntax(m.to_owned());
    let operations = body
        .get("Operations")
        .and_then(Value::as_array)
        .ok_or_else(|| syntax("a PatchOp with an Operations array is expected"))?;
    let mut changes = Changes::default();
    for operation in operations {
        let op = operation
            .get("op")
            .and_then(Value::as_str)
            .ok_or_else(|| syntax("each operation needs an op"))?;
        let path = match operation.get("path") {
            None | Some(Value::Null) => None,
            Some(Value::String(p)) => Some(p.as_str()),
            Some(_) => return Err(syntax("path: a string")),
        };
        let value = operation.get("value").unwrap_or(&Value::Null);
        if op.eq_ignore_ascii_case("remove") {
            let path = path.ok_or_else(|| syntax("remove needs a path"))?;
            changes.remove(path)?;
        } else if op.eq_ignore_ascii_case("add") || op.eq_ignore_ascii_case("replace") {
            match path {
                Some(path) => changes.set(path, value)?,
                None => {
                    let attributes = value.as_object().ok_or_else(|| {
                        syntax("an operation without a path needs an object value")
                    })?;
                    for (path, value) in attributes {
                        changes.set(path, value)?;
                    }
                }
            }
        } else {
            return Err(syntax("op: add, replace or remove"));
        }
    }
    Ok(changes)
}

/// A PUT body (a whole User): the kept attributes it replaces. An absent `active` leaves
/// the user as it is; absent `externalId` and `displayName` are removed.
pub fn parse_put(body: &Value) -> Result<Changes, ScimError> {
    let attributes = body
        .as_object()
        .ok_or_else(|| ScimError::InvalidSyntax("a User object is expected".into()))?;
    let mut changes = Changes {
        external_id: Some(None),
        display_name: Some(None),
        ..Changes::default()
    };
    for (path, value) in attributes {
        changes.set(path, value)?;
    }
    Ok(changes)
}

/// The RFC 3339 time of a timestamp (ms).
fn rfc3339(ms: i64) -> Value {
    use time::format_description::well_known::Rfc3339;
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .map_or(Value::Null, Value::String)
}

/// A user as the SCIM resource (RFC 7643 §4.1).
#[must_use]
pub(crate) fn resource(user: &ScimUser) -> Value {
    let mut map = Map::new();
    map.insert("schemas".into(), json!([USER_SCHEMA]));
    map.insert("id".into(), user.id.clone().into());
    if let Some(external_id) = &user.external_id {
        map.insert("externalId".into(), external_id.clone().into());
    }
    map.insert("userName".into(), user.username.clone().into());
    if let Some(name) = &user.display_name {
        map.insert("displayName".into(), name.clone().into());
    }
    map.insert("active".into(), user.active.into());
    map.insert(
        "meta".into(),
        json!({
            "resourceType": "User",
            "created": rfc3339(user.created_at.0),
            "lastModified": rfc3339(user.updated_at.0),
            "location": format!("/scim/v2/Users/{}", user.id),
        }),
    );
    Value::Object(map)
}

/// A random (version 4) UUID.
fn random_uuid() -> Result<String, ApiError> {
    let mut b = super::random_secret()?;
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = hex::encode(&b[..16]);
    Ok(format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    ))
}

impl Services {
    /// The `[scim]` endpoint is configured.
    fn scim_on(&self) -> Result<(), ScimError> {
        if self.config.scim.is_some() {
            Ok(())
        } else {
            Err(ScimError::Off)
        }
    }

    /// Check the SCIM client's bearer token (compared in constant time); a refusal is
    /// audited (`scim-auth-refused`) and counts as a failed authentication of its source.
    pub async fn scim_authorize(
        &self,
        bearer: Option<&str>,
        source: Option<IpAddr>,
    ) -> Result<(), ScimError> {
        self.scim_on()?;
        let key = source.map(super::source_key);
        if let Some(key) = key
            && !self.auth_attempt(key)
        {
            return Err(ScimError::RateLimited);
        }
        let good = match (&self.scim_token, bearer) {
            // Digests of equal length, so that the comparison does not stop early on a
            // length difference (which would tell the token's length).
            (Some(token), Some(given)) => super::hash_secret(token.expose().as_bytes())
                .ct_eq(&super::hash_secret(given.trim().as_bytes())),
            _ => false,
        };
        if let Some(key) = key {
            self.auth_outcome(key, good);
        }
        if good {
            return Ok(());
        }
        let mut event = Origin::Client(source).event(Action::ScimAuthRefused);
        event.outcome = Outcome::Failure;
        let event = event.detail(
            Detail::Reason,
            if bearer.is_some() {
                "wrong_token"
            } else {
                "no_token"
            },
        );
        if let Err(e) = self.audit_event(&event).await {
            warn!(error = %e, "recording a refused SCIM request failed");
        }
        Err(ScimError::Unauthorized)
    }

    /// The username a SCIM `userName` gives: the normalisation of the OpenID Connect
    /// username claim (with `[oidc] allowed_domains`), or `invalidValue`.
    fn scim_username(&self, user_name: &str) -> Result<String, ScimError> {
        let domains = self
            .oidc_settings()
            .map(|o| o.allowed_domains.as_slice())
            .unwrap_or_default();
        normalise_username(user_name, domains).map_err(|_| {
            ScimError::InvalidValue(format!(
                "userName does not give a valid username ({}; an @domain suffix is removed \
                 only for a domain of [oidc] allowed_domains)",
                tacit_api::USERNAME_RULE
            ))
        })
    }

    /// `GET /scim/v2/Users`: a ListResponse (RFC 7644 §3.4.2), `startIndex` from 1.
    pub async fn scim_list(
        &self,
        filter: Option<&str>,
        start_index: Option<i64>,
        count: Option<i64>,
    ) -> Result<Value, ScimError> {
        self.scim_on()?;
        let start = u32::try_from(start_index.unwrap_or(1).max(1)).unwrap_or(u32::MAX);
        let count =
            u32::try_from(count.unwrap_or(i64::from(MAX_COUNT)).clamp(0, 100)).unwrap_or(MAX_COUNT);
        let (username, external_id) = match filter.map(parse_filter).transpose()? {
            None => (None, None),
            Some(Filter::UserName(name)) => match self.scim_username(&name) {
                Ok(name) => (Some(name), None),
                // No user can have a name that is not one.
                Err(_) => return Ok(list(0, start, &[])),
            },
            Some(Filter::ExternalId(id)) => (None, Some(id)),
        };
        let (total, users) = self
            .store
            .scim_users(
                username.as_deref(),
                external_id.as_deref(),
                start - 1,
                count,
            )
            .await?;
        Ok(list(total, start, &users))
    }

    /// The SCIM user `id`, or 404.
    async fn scim_find(&self, id: &str) -> Result<ScimUser, ScimError> {
        self.scim_on()?;
        self.store
            .scim_user(Some(id), None)
            .await?
            .ok_or_else(|| ScimError::NotFound(format!("no user with id {id:?}")))
    }

    /// `GET /scim/v2/Users/{id}`.
    pub async fn scim_get(&self, id: &str) -> Result<Value, ScimError> {
        Ok(resource(&self.scim_find(id).await?))
    }

    /// Make the account of `username`, if there is one, enabled (`active`) or disabled,
    /// as an administrator does (`via: scim`).
    async fn scim_apply_active(
        &self,
        username: &str,
        active: bool,
        source: Option<IpAddr>,
    ) -> Result<(), ScimError> {
        let admin = Admin::Idp {
            via: "scim",
            source,
        };
        match self.set_user_disabled(admin, username, !active).await {
            Ok(_) | Err(ApiError::NotFound(_)) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// `POST /scim/v2/Users`: create (pre-provision) a user; `password` is ignored.
    pub async fn scim_create(
        &self,
        body: &Value,
        source: Option<IpAddr>,
    ) -> Result<Value, ScimError> {
        self.scim_on()?;
        let Some(attributes) = body.as_object() else {
            return Err(ScimError::InvalidSyntax("a User object is expected".into()));
        };
        let user_name = attributes
            .get("userName")
            .and_then(Value::as_str)
            .ok_or_else(|| ScimError::InvalidValue("userName is required".into()))?;
        let username = self.scim_username(user_name)?;
        let mut changes = Changes::default();
        for (path, value) in attributes {
            changes.set(path, value)?;
        }
        let at = now();
        let user = ScimUser {
            id: random_uuid()?,
            username,
            external_id: changes.external_id.flatten(),
            active: changes.active.unwrap_or(true),
            display_name: changes.display_name.flatten(),
            created_at: at,
            updated_at: at,
        };
        let audit = Admin::Idp {
            via: "scim",
            source,
        }
        .event(Action::ScimUserCreate)
        .target(&user.username);
        match self.store.create_scim_user(&user, &audit).await {
            Ok(()) => {}
            Err(StoreError::UsernameTaken) => return Err(ScimError::Uniqueness),
            Err(e) => return Err(e.into()),
        }
        self.count_audited(Action::ScimUserCreate);
        info!("user provisioned over SCIM");
        if !user.active {
            self.scim_apply_active(&user.username, false, source)
                .await?;
        }
        Ok(resource(&user))
    }

    /// `PATCH` (`changes` from [`parse_patch`]) or `PUT` ([`parse_put`]) of user `id`.
    pub async fn scim_update(
        &self,
        id: &str,
        changes: Changes,
        source: Option<IpAddr>,
    ) -> Result<Value, ScimError> {
        let mut user = self.scim_find(id).await?;
        if let Some(user_name) = &changes.user_name
            && self.scim_username(user_name).ok().as_deref() != Some(user.username.as_str())
        {
            return Err(ScimError::Mutability(
                "userName cannot change: a Tacit username is permanent (delete the user and \
                 create another)"
                    .into(),
            ));
        }
        let was_active = user.active;
        if let Some(active) = changes.active {
            user.active = active;
        }
        if let Some(external_id) = changes.external_id {
            user.external_id = external_id;
        }
        if let Some(name) = changes.display_name {
            user.display_name = name;
        }
        user.updated_at = now();
        let what = match (was_active, user.active) {
            (true, false) => "active=false",
            (false, true) => "active=true",
            _ => "attributes",
        };
        let audit = Admin::Idp {
            via: "scim",
            source,
        }
        .event(Action::ScimUserUpdate)
        .target(&user.username)
        .detail(Detail::Reason, what);
        if !self.store.update_scim_user(&user, &audit).await? {
            return Err(ScimError::NotFound(format!("no user with id {id:?}")));
        }
        self.count_audited(Action::ScimUserUpdate);
        // A deactivation is applied every time it is sent (disabling is idempotent), so a
        // retry after a failure here still disables; an activation only when it changes the
        // SCIM state, so that a full PUT with `active: true` does not lift a disable made
        // by an administrator or a back-channel logout.
        match changes.active {
            Some(false) => {
                self.scim_apply_active(&user.username, false, source)
                    .await?
            }
            Some(true) if !was_active => {
                self.scim_apply_active(&user.username, true, source).await?;
            }
            _ => {}
        }
        Ok(resource(&user))
    }

    /// `DELETE /scim/v2/Users/{id}`: delete the user and, when there is one, its
    /// account (as an administrator's delete: the name is free again).
    pub async fn scim_delete(&self, id: &str, source: Option<IpAddr>) -> Result<(), ScimError> {
        let user = self.scim_find(id).await?;
        let admin = Admin::Idp {
            via: "scim",
            source,
        };
        match self.admin_delete_user(admin, &user.username).await {
            Ok(()) | Err(ApiError::NotFound(_)) => {}
            Err(e) => return Err(e.into()),
        }
        let audit = admin.event(Action::ScimUserDelete).target(&user.username);
        if !self.store.delete_scim_user(id, now(), &audit).await? {
            return Err(ScimError::NotFound(format!("no user with id {id:?}")));
        }
        self.count_audited(Action::ScimUserDelete);
        info!("user deprovisioned over SCIM");
        Ok(())
    }

    /// Whether `username` may be registered as far as SCIM says: not while its SCIM user
    /// is inactive, and (with `require_provisioning`) through the identity provider only
    /// when SCIM created it.
    pub(crate) async fn scim_allows_registration(
        &self,
        username: &str,
        through_provider: bool,
    ) -> Result<(), ApiError> {
        let Some(settings) = &self.config.scim else {
            return Ok(());
        };
        match self.store.scim_user(None, Some(username)).await? {
            Some(user) if !user.active => Err(ApiError::Status {
                code: ErrorCode::Forbidden,
                message: "this user is deactivated by the identity provider (SCIM)".into(),
            }),
            None if through_provider && settings.require_provisioning => Err(ApiError::Status {
                code: ErrorCode::Forbidden,
                message: "this user is not provisioned: the identity provider's SCIM \
                              client must create it first (scim.require_provisioning)"
                    .into(),
            }),
            _ => Ok(()),
        }
    }
}

/// A ListResponse of one page.
fn list(total: u64, start: u32, users: &[ScimUser]) -> Value {
    json!({
        "schemas": [LIST_SCHEMA],
        "totalResults": total,
        "startIndex": start,
        "itemsPerPage": users.len(),
        "Resources": users.iter().map(resource).collect::<Vec<_>>(),
    })
}

/// `GET /scim/v2/ServiceProviderConfig` (RFC 7643 §5).
#[must_use]
pub fn service_provider_config() -> Value {
    json!({
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:ServiceProviderConfig"],
        "documentationUri": "https://github.com/tacit/tacit/blob/main/docs/SCIM.md",
        "patch": {"supported": true},
        "bulk": {"supported": false, "maxOperations": 0, "maxPayloadSize": 0},
        "filter": {"supported": true, "maxResults": MAX_COUNT},
        "changePassword": {"supported": false},
        "sort": {"supported": false},
        "etag": {"supported": false},
        "authenticationSchemes": [{
            "type": "oauthbearertoken",
            "name": "Bearer token",
            "description": "The token of [scim] bearer_token_file, in Authorization: Bearer",
            "primary": true,
        }],
        "meta": {"resourceType": "ServiceProviderConfig", "location": "/scim/v2/ServiceProviderConfig"},
    })
}

/// `GET /scim/v2/ResourceTypes` (RFC 7643 §6): User only.
#[must_use]
pub fn resource_types() -> Value {
    json!({
        "schemas": [LIST_SCHEMA],
        "totalResults": 1,
        "startIndex": 1,
        "itemsPerPage": 1,
        "Resources": [{
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:ResourceType"],
            "id": "User",
            "name": "User",
            "endpoint": "/Users",
            "schema": USER_SCHEMA,
            "meta": {"resourceType": "ResourceType", "location": "/scim/v2/ResourceTypes/User"},
        }],
    })
}

/// `GET /scim/v2/Schemas` (RFC 7643 §7): the User attributes kept.
#[must_use]
pub fn schemas() -> Value {
    let attribute = |name: &str, kind: &str, mutability: &str, uniqueness: &str, required: bool| {
        json!({
            "name": name, "type": kind, "multiValued": false, "required": required,
            "caseExact": name == "externalId", "mutability": mutability,
            "returned": "default", "uniqueness": uniqueness,
        })
    };
    json!({
        "schemas": [LIST_SCHEMA],
        "totalResults": 1,
        "startIndex": 1,
        "itemsPerPage": 1,
        "Resources": [{
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:Schema"],
            "id": USER_SCHEMA,
            "name": "User",
            "description": "A Tacit user (the rest of the core schema is accepted and ignored)",
            "attributes": [
                attribute("userName", "string", "immutable", "server", true),
                attribute("externalId", "string", "readWrite", "none", false),
                attribute("displayName", "string", "readWrite", "none", false),
                attribute("active", "boolean", "readWrite", "none", false),
            ],
            "meta": {"resourceType": "Schema", "location": format!("/scim/v2/Schemas/{USER_SCHEMA}")},
        }],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_of_entra_and_okta() {
        assert_eq!(
            parse_filter("userName eq \"Test_User_00aa00aa-bb11\"").unwrap(),
            Filter::UserName("Test_User_00aa00aa-bb11".into())
        );
        // Okta's, once percent-decoded.
        assert_eq!(
            parse_filter("userName eq \"test.user@okta.local\"").unwrap(),
            Filter::UserName("test.user@okta.local".into())
        );
        assert_eq!(
            parse_filter("USERNAME EQ \"a\\\"b\"").unwrap(),
            Filter::UserName("a\"b".into())
        );
        assert_eq!(
            parse_filter("externalId eq \"0a21f0f2\"").unwrap(),
            Filter::ExternalId("0a21f0f2".into())
        );
        assert_eq!(
            parse_filter("urn:ietf:params:scim:schemas:core:2.0:User:userName eq \"x\"").unwrap(),
            Filter::UserName("x".into())
        );
        for bad in [
            "",
            "userName",
            "userName eq",
            "userName ne \"x\"",
            "userName eq x",
            "emails[type eq \"work\"].value eq \"x@y\"",
            "userName eq \"x\" and externalId eq \"y\"",
            "nickName eq \"x\"",
        ] {
            assert!(
                matches!(parse_filter(bad), Err(ScimError::InvalidFilter(_))),
                "{bad}"
            );
        }
    }

    fn patch(operations: Value) -> Result<Changes, ScimError> {
        parse_patch(&json!({
            "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
            "Operations": operations,
        }))
    }

    #[test]
    fn the_three_deactivations_of_entra_and_okta() {
        for op in [
            json!([{"op": "Replace", "path": "active", "value": "False"}]),
            json!([{"op": "replace", "path": "active", "value": false}]),
            json!([{"op": "replace", "value": {"active": false}}]),
        ] {
            assert_eq!(patch(op.clone()).unwrap().active, Some(false), "{op}");
        }
        assert_eq!(
            patch(json!([{"op": "Add", "path": "active", "value": "TRUE"}]))
                .unwrap()
                .active,
            Some(true)
        );
    }

    #[test]
    fn a_string_is_not_true_because_it_is_not_empty() {
        for bad in [json!("no"), json!(0), json!("0"), json!(null), json!("")] {
            assert!(
                matches!(parse_bool(&bad), Err(ScimError::InvalidValue(_))),
                "{bad}"
            );
        }
        assert!(!parse_bool(&json!("fAlSe")).unwrap());
    }

    #[test]
    fn attributes_not_kept_are_ignored() {
        let changes = patch(json!([
            {"op": "Replace", "path": "emails[type eq \"work\"].value", "value": "a@b.c"},
            {"op": "Replace", "path": "name.familyName", "value": "Jensen"},
            {"op": "Add", "path": "nickName", "value": "Babs"},
            {"op": "replace", "value": {"displayName": "Babs J", "name.givenName": "Barbara"}},
        ]))
        .unwrap();
        assert_eq!(
            changes,
            Changes {
                display_name: Some(Some("Babs J".into())),
                ..Changes::default()
            }
        );
    }

    #[test]
    fn user_name_and_removals() {
        let changes =
            patch(json!([{"op": "Replace", "path": "userName", "value": "bob"}])).unwrap();
        assert_eq!(changes.user_name.as_deref(), Some("bob"));
        let changes = patch(json!([{"op": "remove", "path": "externalId"}])).unwrap();
        assert_eq!(changes.external_id, Some(None));
        assert!(matches!(
            patch(json!([{"op": "remove", "path": "active"}])),
            Err(ScimError::Mutability(_))
        ));
    }

    #[test]
    fn malformed_patches() {
        for bad in [
            json!({"Operations": "replace"}),
            json!({}),
            json!({"Operations": [{"path": "active", "value": false}]}),
            json!({"Operations": [{"op": "move", "path": "active", "value": false}]}),
            json!({"Operations": [{"op": "replace", "value": false}]}),
            json!({"Operations": [{"op": "remove"}]}),
        ] {
            assert!(
                matches!(parse_patch(&bad), Err(ScimError::InvalidSyntax(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn put_reads_active_and_replaces_the_rest() {
        // Okta's wizard apps deactivate by PUT of the whole user.
        let changes = parse_put(&json!({
            "schemas": [USER_SCHEMA], "id": "x", "userName": "test.user@okta.local",
            "name": {"givenName": "Test"}, "active": false, "password": "1mz050nq",
        }))
        .unwrap();
        assert_eq!(changes.active, Some(false));
        assert_eq!(changes.external_id, Some(None));
        assert_eq!(changes.user_name.as_deref(), Some("test.user@okta.local"));
    }

    #[test]
    fn error_bodies() {
        let body = ScimError::NotFound("no user".into()).body();
        assert_eq!(
            body,
            json!({"schemas": [ERROR_SCHEMA], "status": "404", "detail": "no user"})
        );
        assert_eq!(ScimError::Uniqueness.body()["scimType"], "uniqueness");
        assert_eq!(ScimError::Uniqueness.status(), 409);
    }

    #[test]
    fn an_empty_list_is_what_entra_expects() {
        assert_eq!(
            list(0, 1, &[]),
            json!({"schemas": [LIST_SCHEMA], "totalResults": 0, "startIndex": 1,
                   "itemsPerPage": 0, "Resources": []})
        );
    }

    #[test]
    fn uuids_are_version_4() {
        let id = random_uuid().unwrap();
        assert_eq!(id.len(), 36);
        assert_eq!(&id[14..15], "4");
        assert_ne!(id, random_uuid().unwrap());
    }
}
