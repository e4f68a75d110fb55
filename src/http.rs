//! The JSON API (registration, prelogin, key bundles, instances, peer keys), `/healthz`
//! and `/metrics`. Every error is a 4xx/5xx with a body `{"error": code, "message": …}`;
//! no request body, secret or key is ever logged. `docs/http-api.md` is the reference.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use actix_web::dev::Service;
use actix_web::http::{header, StatusCode};
use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer, ResponseError};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use futures_util::FutureExt;
use hkdf::Hkdf;
use metrics_exporter_prometheus::PrometheusHandle;
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::auth::{verifier, AuthError, Authenticator};
use crate::config::Config;
use crate::directory::{
    unix_now, Credentials, Directory, DirectoryError, InstanceKey, InstanceSecret, KeyringWrite,
    NewSecret, NewUser,
};
use crate::envelope::Witness;
use crate::metrics;
use crate::protocol::Reason;
use crate::protocol::{
    b64, BadResetCode, KdfParams, KdfSpec, PrincipalId, PrincipalKind, ResetCode,
};
use crate::router::{Kick, Router};

const MAX_WRAPPED_KEY: usize = 1024;
/// About 2,700 pinned peers; the JSON body limit below leaves room for its base64.
const MAX_KEYRING: usize = 128 * 1024;
const MAX_NAME_LEN: usize = 64;

pub struct ApiState {
    pub config: Arc<Config>,
    pub directory: Arc<Directory>,
    pub authenticator: Arc<Authenticator>,
    pub router: Arc<Router>,
    pub metrics: PrometheusHandle,
    /// Keys the fake salts returned for unknown names.
    pub prelogin_key: [u8; 32],
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("missing or invalid credentials: send Authorization: Basic base64(login:auth-secret)")]
    Unauthorized,
    #[error("too many failed logins; retry later")]
    RateLimited,
    #[error("{0}")]
    Forbidden(&'static str),
    #[error("{0}")]
    NotFound(&'static str),
    #[error("{0}")]
    Conflict(String),
    #[error("the keyring changed since you read it (stored version {current}): re-read it, merge and retry")]
    KeyringConflict { current: i64 },
    #[error("missing or wrong operator token: send Authorization: Bearer <the token in admin.token_file>")]
    NotOperator,
    #[error("this endpoint does not take that method; see docs/http-api.md")]
    MethodNotAllowed,
    #[error("the directory is unavailable; retry later")]
    Unavailable,
}

impl ApiError {
    fn code(&self) -> &'static str {
        match self {
            ApiError::BadRequest(_) => "bad_request",
            ApiError::Unauthorized => "unauthorized",
            ApiError::RateLimited => "rate_limited",
            ApiError::Forbidden(_) => "forbidden",
            ApiError::NotFound(_) => "not_found",
            ApiError::Conflict(_) => "conflict",
            ApiError::KeyringConflict { .. } => "keyring_conflict",
            ApiError::NotOperator => "not_operator",
            ApiError::MethodNotAllowed => "method_not_allowed",
            ApiError::Unavailable => "unavailable",
        }
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::RateLimited => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Conflict(_) | ApiError::KeyringConflict { .. } => StatusCode::CONFLICT,
            ApiError::NotOperator => StatusCode::UNAUTHORIZED,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let mut response = HttpResponse::build(self.status_code());
        if matches!(self, ApiError::Unauthorized) {
            response.insert_header((header::WWW_AUTHENTICATE, "Basic realm=\"sealrelay\""));
        }
        response.json(serde_json::json!({ "error": self.code(), "message": self.to_string() }))
    }
}

impl From<DirectoryError> for ApiError {
    fn from(e: DirectoryError) -> Self {
        match e {
            DirectoryError::Conflict(what) => ApiError::Conflict(format!("{what} already exists")),
            DirectoryError::KeyringVersion { current } => ApiError::KeyringConflict { current },
            other => {
                tracing::error!(error = %other, "directory error in HTTP request");
                ApiError::Unavailable
            }
        }
    }
}

impl From<AuthError> for ApiError {
    fn from(e: AuthError) -> Self {
        match e {
            AuthError::Denied => ApiError::Unauthorized,
            AuthError::RateLimited => ApiError::RateLimited,
        }
    }
}

type Result<T> = std::result::Result<T, ApiError>;

#[derive(Deserialize)]
struct PreloginRequest {
    name: String,
}

#[derive(Deserialize)]
struct RegisterRequest {
    name: String,
    user_id: PrincipalId,
    #[serde(with = "b64")]
    public_key: Vec<u8>,
    #[serde(with = "b64")]
    wrapped_key: Vec<u8>,
    auth_secret: String,
    kdf: KdfSpec,
}

#[derive(Deserialize)]
struct AddInstanceRequest {
    instance_id: PrincipalId,
    #[serde(flatten)]
    enrolment: Enrolment,
}

/// A key pair and token the owner's console made for an instance, on creation and on
/// re-enrolment alike.
#[derive(Deserialize)]
struct Enrolment {
    #[serde(with = "b64")]
    public_key: Vec<u8>,
    #[serde(with = "b64")]
    wrapped_key: Vec<u8>,
    auth_secret: String,
    #[serde(with = "b64")]
    owner_copy: Vec<u8>,
    /// The owner's keyring with the new key pinned, written in the same transaction.
    #[serde(default)]
    keyring: Option<KeyringBody>,
}

impl Enrolment {
    fn check(self) -> Result<(InstanceSecret, InstanceKey)> {
        check_wrapped(&self.owner_copy)?;
        let secret = instance_secret(self.wrapped_key, &self.auth_secret)?;
        let key = InstanceKey {
            public_key: key32(&self.public_key, "public_key")?,
            owner_copy: self.owner_copy,
            keyring: self.keyring.map(check_keyring).transpose()?,
        };
        Ok((secret, key))
    }
}

#[derive(Deserialize)]
struct KeyringBody {
    version: i64,
    #[serde(with = "b64")]
    keyring: Vec<u8>,
}

#[derive(Deserialize)]
struct ResetRequest {
    name: String,
    reset_code: String,
    #[serde(with = "b64")]
    public_key: Vec<u8>,
    #[serde(with = "b64")]
    wrapped_key: Vec<u8>,
    auth_secret: String,
    kdf: KdfSpec,
}

#[derive(Deserialize)]
struct RotateTokenRequest {
    #[serde(with = "b64")]
    wrapped_key: Vec<u8>,
    auth_secret: String,
}

#[derive(Serialize)]
struct PublicKeyView {
    id: PrincipalId,
    kind: PrincipalKind,
    #[serde(with = "b64")]
    public_key: Vec<u8>,
    witness: String,
}

fn key32(bytes: &[u8], field: &str) -> Result<[u8; 32]> {
    bytes
        .try_into()
        .map_err(|_| ApiError::BadRequest(format!("{field} must be 32 bytes of base64")))
}

fn check_wrapped(bytes: &[u8]) -> Result<()> {
    if bytes.is_empty() || bytes.len() > MAX_WRAPPED_KEY {
        return Err(ApiError::BadRequest(format!(
            "wrapped_key must be 1..={MAX_WRAPPED_KEY} bytes"
        )));
    }
    Ok(())
}

fn check_keyring(body: KeyringBody) -> Result<KeyringWrite> {
    if body.keyring.is_empty() || body.keyring.len() > MAX_KEYRING || body.version < 1 {
        return Err(ApiError::BadRequest(format!(
            "keyring must be 1..={MAX_KEYRING} bytes with a version of at least 1"
        )));
    }
    Ok(KeyringWrite {
        version: body.version,
        blob: body.keyring,
    })
}

/// A token's wrapped bundle and login secret, validated.
fn instance_secret(wrapped_key: Vec<u8>, auth_secret: &str) -> Result<InstanceSecret> {
    check_wrapped(&wrapped_key)?;
    Ok(InstanceSecret {
        wrapped_key,
        verifier: check_secret(auth_secret)?,
    })
}

fn check_secret(secret: &str) -> Result<[u8; 32]> {
    if secret.len() < 32 || secret.len() > 128 {
        return Err(ApiError::BadRequest(
            "auth_secret must be 32..=128 characters".into(),
        ));
    }
    Ok(verifier(secret))
}

/// User names: 1..=64 of `[A-Za-z0-9._@-]`, and never a principal id (instances log in
/// by their id, and the login namespace is shared).
fn check_name(name: &str) -> Result<()> {
    let ok_chars = name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'@' | b'-'));
    if name.is_empty()
        || name.len() > MAX_NAME_LEN
        || !ok_chars
        || name.parse::<PrincipalId>().is_ok()
    {
        return Err(ApiError::BadRequest(format!(
            "name must be 1..={MAX_NAME_LEN} characters of A-Z a-z 0-9 . _ @ - and not a 32-hex-digit id"
        )));
    }
    Ok(())
}

pub(crate) fn peer_ip(req: &HttpRequest) -> IpAddr {
    req.peer_addr()
        .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |a| a.ip())
}

/// The credentials of an `Authorization: <scheme> <credentials>` header.
pub(crate) fn authorization<'r>(req: &'r HttpRequest, scheme: &str) -> Option<&'r str> {
    req.headers()
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix(scheme)?
        .strip_prefix(' ')
}

/// Checks `Authorization: Basic base64(login:secret)` like an MQTT CONNECT.
async fn caller(req: &HttpRequest, state: &ApiState) -> Result<Credentials> {
    let value = authorization(req, "Basic").ok_or(ApiError::Unauthorized)?;
    let decoded = zeroize::Zeroizing::new(
        B64.decode(value.trim())
            .map_err(|_| ApiError::Unauthorized)?,
    );
    let text = std::str::from_utf8(&decoded).map_err(|_| ApiError::Unauthorized)?;
    let (login, secret) = text.split_once(':').ok_or(ApiError::Unauthorized)?;
    Ok(state
        .authenticator
        .authenticate(&state.directory, peer_ip(req), login, secret)?)
}

async fn caller_user(req: &HttpRequest, state: &ApiState) -> Result<Credentials> {
    let credentials = caller(req, state).await?;
    if credentials.kind != PrincipalKind::User {
        return Err(ApiError::Forbidden("only a user may do this"));
    }
    Ok(credentials)
}

async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({ "status": "ok" }))
}

async fn metrics_page(state: web::Data<ApiState>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(state.metrics.render())
}

/// Salt and KDF parameters for a name. Unknown names get a salt derived from a server
/// secret and the default parameters: stable and indistinguishable from a real account.
async fn prelogin(
    state: web::Data<ApiState>,
    body: web::Json<PreloginRequest>,
) -> Result<HttpResponse> {
    let (salt, params) = match state.directory.kdf_of(&body.name).await? {
        Some(found) => found,
        None => {
            let mut salt = vec![0u8; 16];
            Hkdf::<Sha256>::new(Some(&state.prelogin_key), body.name.as_bytes())
                .expand(b"sealrelay/v1/fake-salt", &mut salt)
                .expect("16 bytes is a valid HKDF length");
            (salt, default_kdf(&state.config))
        }
    };
    Ok(HttpResponse::Ok().json(KdfSpec { salt, params }))
}

pub fn default_kdf(config: &Config) -> KdfParams {
    KdfParams {
        memory_kib: config.kdf.memory_kib,
        iterations: config.kdf.iterations,
        parallelism: config.kdf.parallelism,
    }
}

/// The server's policy for a user's KDF: at least its minimum (so a weak client cannot
/// make a weak account), at most what clients can run, and a salt of sane length.
fn check_kdf(config: &Config, spec: &KdfSpec) -> Result<KdfParams> {
    let (kdf, min) = (spec.params, &config.kdf);
    if kdf.memory_kib < min.min_memory_kib
        || kdf.iterations < min.min_iterations
        || kdf.parallelism == 0
    {
        return Err(ApiError::BadRequest(format!(
            "KDF parameters are below this server's minimum (memory_kib >= {}, iterations >= {}, parallelism >= 1)",
            min.min_memory_kib, min.min_iterations
        )));
    }
    if kdf.memory_kib > 4 * 1024 * 1024 || kdf.iterations > 64 || kdf.parallelism > 16 {
        return Err(ApiError::BadRequest(
            "KDF parameters are beyond what clients can run (memory_kib <= 4194304, iterations <= 64, parallelism <= 16)".into(),
        ));
    }
    if !(16..=64).contains(&spec.salt.len()) {
        return Err(ApiError::BadRequest(
            "kdf.salt must be 16..=64 bytes".into(),
        ));
    }
    Ok(kdf)
}

async fn register(
    state: web::Data<ApiState>,
    body: web::Json<RegisterRequest>,
) -> Result<HttpResponse> {
    let body = body.into_inner();
    check_name(&body.name)?;
    check_wrapped(&body.wrapped_key)?;
    let kdf = check_kdf(&state.config, &body.kdf)?;
    state
        .directory
        .register_user(NewUser {
            id: body.user_id,
            name: body.name,
            public_key: key32(&body.public_key, "public_key")?,
            wrapped_key: body.wrapped_key,
            verifier: check_secret(&body.auth_secret)?,
            salt: body.kdf.salt,
            kdf,
        })
        .await?;
    Ok(HttpResponse::Created().json(serde_json::json!({ "id": body.user_id })))
}

/// The caller's own id, public key and wrapped private key, plus who it may address.
async fn me(req: HttpRequest, state: web::Data<ApiState>) -> Result<HttpResponse> {
    let credentials = caller(&req, &state).await?;
    let bundle = state
        .directory
        .key_bundle(credentials.id)
        .await?
        .ok_or(ApiError::NotFound("principal no longer exists"))?;
    Ok(HttpResponse::Ok().json(serde_json::json!({
        "id": bundle.id,
        "kind": bundle.kind,
        "public_key": b64::encode(&bundle.public_key),
        "wrapped_key": b64::encode(&bundle.wrapped_key),
        "witness": Witness::of(&bundle.public_key).to_string(),
        "peers": state.directory.peers_of(credentials.id),
        "keyring": bundle.keyring.as_deref().map(b64::encode),
        "keyring_version": bundle.keyring_version,
        // What a password change should upgrade this account's KDF parameters to.
        "kdf_recommended": (bundle.kind == PrincipalKind::User).then(|| default_kdf(&state.config)),
    })))
}

#[derive(Deserialize)]
struct ChangePasswordRequest {
    #[serde(with = "b64")]
    wrapped_key: Vec<u8>,
    auth_secret: String,
    kdf: KdfSpec,
}

/// Swaps a user's salt, KDF parameters, verifier and wrapped key at once (the key pair is
/// unchanged: the client re-wrapped the same private key). Authenticated with the old
/// secret; every live session of the user is then closed, so the old password stops
/// working at once.
async fn change_password(
    req: HttpRequest,
    state: web::Data<ApiState>,
    body: web::Json<ChangePasswordRequest>,
) -> Result<HttpResponse> {
    let user = caller_user(&req, &state).await?;
    let body = body.into_inner();
    let kdf = check_kdf(&state.config, &body.kdf)?;
    check_wrapped(&body.wrapped_key)?;
    state
        .directory
        .change_password(
            user.id,
            NewSecret {
                wrapped_key: body.wrapped_key,
                verifier: check_secret(&body.auth_secret)?,
                salt: body.kdf.salt,
                kdf,
            },
        )
        .await?;
    state.router.kick_all(
        user.id,
        Kick(Reason::AdministrativeAction, "credentials_changed"),
    );
    metrics::key_event("password_changed");
    Ok(HttpResponse::Ok().json(serde_json::json!({ "id": user.id })))
}

async fn add_instance(
    req: HttpRequest,
    state: web::Data<ApiState>,
    body: web::Json<AddInstanceRequest>,
) -> Result<HttpResponse> {
    let owner = caller_user(&req, &state).await?;
    let AddInstanceRequest {
        instance_id,
        enrolment,
    } = body.into_inner();
    let (secret, key) = enrolment.check()?;
    let witness = Witness::of(&key.public_key);
    state
        .directory
        .add_instance(owner.id, instance_id, secret, key)
        .await?;
    Ok(HttpResponse::Created().json(serde_json::json!({
        "id": instance_id,
        "witness": witness.to_string(),
    })))
}

/// Removes one of the caller's instances: its key material, token verifier and pairing are
/// deleted and its live sessions closed at once. Someone else's instance, or an unknown id,
/// is the same 404, so ids cannot be probed.
async fn remove_instance(
    req: HttpRequest,
    state: web::Data<ApiState>,
    path: web::Path<String>,
) -> Result<HttpResponse> {
    let owner = caller_user(&req, &state).await?;
    let id = id_param(&path)?;
    if !state.directory.remove_instance(owner.id, id).await? {
        return Err(ApiError::NotFound("no instance of yours with that id"));
    }
    state
        .router
        .kick_all(id, Kick(Reason::NotAuthorized, "instance_removed"));
    metrics::key_event("instance_removed");
    Ok(HttpResponse::Ok().json(serde_json::json!({ "id": id, "removed": true })))
}

/// Deletes the caller's account and every instance it owns; all their live sessions are
/// closed. Metadata already recorded follows the accounting retention.
async fn delete_account(req: HttpRequest, state: web::Data<ApiState>) -> Result<HttpResponse> {
    let user = caller_user(&req, &state).await?;
    let instances = state.directory.delete_user(user.id).await?;
    for id in instances.iter().chain(std::iter::once(&user.id)) {
        state
            .router
            .kick_all(*id, Kick(Reason::NotAuthorized, "account_deleted"));
    }
    metrics::key_event("account_deleted");
    Ok(HttpResponse::Ok()
        .json(serde_json::json!({ "id": user.id, "deleted_instances": instances })))
}

/// Gives one of the caller's instances a new token: the owner re-wrapped the instance's
/// bundle (from its escrow copy) under the new token. The old token stops working at once
/// and the instance's live sessions are closed.
async fn rotate_token(
    req: HttpRequest,
    state: web::Data<ApiState>,
    path: web::Path<String>,
    body: web::Json<RotateTokenRequest>,
) -> Result<HttpResponse> {
    let body = body.into_inner();
    let secret = instance_secret(body.wrapped_key, &body.auth_secret)?;
    rekey_instance(&req, &state, &path, secret, None, "token_rotated").await
}

/// Gives one of the caller's instances a new key pair and token (after the owner's reset,
/// or when the instance's host is no longer trusted): the bundle pins the owner's current
/// key, the stale flag is cleared, the old token stops working and live sessions close.
async fn reenrol_instance(
    req: HttpRequest,
    state: web::Data<ApiState>,
    path: web::Path<String>,
    body: web::Json<Enrolment>,
) -> Result<HttpResponse> {
    let (secret, key) = body.into_inner().check()?;
    rekey_instance(&req, &state, &path, secret, Some(key), "reenrolled").await
}

async fn rekey_instance(
    req: &HttpRequest,
    state: &ApiState,
    path: &str,
    secret: InstanceSecret,
    new_key: Option<InstanceKey>,
    reason: &'static str,
) -> Result<HttpResponse> {
    let owner = caller_user(req, state).await?;
    let id = id_param(path)?;
    if !state
        .directory
        .rekey_instance(owner.id, id, secret, new_key)
        .await?
    {
        return Err(ApiError::NotFound("no instance of yours with that id"));
    }
    state
        .router
        .kick_all(id, Kick(Reason::AdministrativeAction, reason));
    metrics::key_event(reason);
    Ok(HttpResponse::Ok().json(serde_json::json!({ "id": id })))
}

/// Replaces the caller's sealed keyring; the version must be the stored one plus one, so
/// two consoles cannot overwrite each other's pins unnoticed.
async fn put_keyring(
    req: HttpRequest,
    state: web::Data<ApiState>,
    body: web::Json<KeyringBody>,
) -> Result<HttpResponse> {
    let caller = caller(&req, &state).await?;
    let keyring = check_keyring(body.into_inner())?;
    state.directory.write_keyring(caller.id, &keyring).await?;
    Ok(HttpResponse::Ok().json(serde_json::json!({ "version": keyring.version })))
}

/// Completes an operator-issued reset: the code (checked in constant time, under the same
/// failure limits as logins) lets the user install a new key pair and password. Pairings
/// are flagged for re-enrolment, and every live session of the user is closed.
async fn complete_reset(
    req: HttpRequest,
    state: web::Data<ApiState>,
    body: web::Json<ResetRequest>,
) -> Result<HttpResponse> {
    let body = body.into_inner();
    let denied = || {
        ApiError::Forbidden(
            "this reset code is not valid for that user (wrong, already used or expired): ask the operator for a new one",
        )
    };
    let code: ResetCode = body
        .reset_code
        .parse()
        .map_err(|e: BadResetCode| ApiError::BadRequest(format!("reset_code is malformed: {e}")))?;
    check_name(&body.name)?;
    check_wrapped(&body.wrapped_key)?;
    let kdf = check_kdf(&state.config, &body.kdf)?;
    let public_key = key32(&body.public_key, "public_key")?;
    let new = NewSecret {
        wrapped_key: body.wrapped_key,
        verifier: check_secret(&body.auth_secret)?,
        salt: body.kdf.salt,
        kdf,
    };
    let pending = state.directory.pending_reset(&body.name).await?;
    let expected = pending
        .filter(|p| p.user == code.user && p.expires_at > unix_now())
        .map(|p| p.verifier);
    state
        .authenticator
        .check(peer_ip(&req), &body.name, code.secret(), expected)
        .map_err(|e| match e {
            AuthError::Denied => denied(),
            AuthError::RateLimited => ApiError::RateLimited,
        })?;
    let stale = state
        .directory
        .complete_reset(code.user, public_key, new)
        .await?
        .ok_or_else(denied)?;
    state.router.kick_all(
        code.user,
        Kick(Reason::AdministrativeAction, "password_reset"),
    );
    metrics::key_event("reset_completed");
    Ok(HttpResponse::Ok().json(serde_json::json!({ "id": code.user, "stale_instances": stale })))
}

/// A principal id from a URL path segment.
fn id_param(path: &str) -> Result<PrincipalId> {
    path.parse()
        .map_err(|_| ApiError::BadRequest("the id must be 32 lowercase hex characters".into()))
}

async fn list_instances(req: HttpRequest, state: web::Data<ApiState>) -> Result<HttpResponse> {
    let owner = caller_user(&req, &state).await?;
    let instances: Vec<_> = state
        .directory
        .instances_of(owner.id)
        .await?
        .into_iter()
        .map(|i| {
            serde_json::json!({
                "id": i.id,
                "public_key": b64::encode(&i.public_key),
                "witness": Witness::of(&i.public_key).to_string(),
                "created_at": i.created_at,
                "owner_copy": i.owner_copy.as_deref().map(b64::encode),
                "stale_owner_key": i.stale_owner_key,
                "online": state.router.is_online(i.id),
            })
        })
        .collect();
    Ok(HttpResponse::Ok().json(serde_json::json!({ "instances": instances })))
}

/// A peer's public key. Unknown and unpaired ids get the same 404, so ids cannot be probed.
async fn peer_key(
    req: HttpRequest,
    state: web::Data<ApiState>,
    path: web::Path<String>,
) -> Result<HttpResponse> {
    let credentials = caller(&req, &state).await?;
    let not_found = ApiError::NotFound("no paired principal with that id");
    let id = id_param(&path)?;
    if id != credentials.id && !state.directory.is_paired(credentials.id, id) {
        return Err(not_found);
    }
    let (kind, public_key) = state.directory.public_key(id).await?.ok_or(not_found)?;
    Ok(HttpResponse::Ok().json(PublicKeyView {
        id,
        kind,
        public_key: public_key.to_vec(),
        witness: Witness::of(&public_key).to_string(),
    }))
}

/// Names the field and the problem, never the value sent (it may be a secret).
pub(crate) fn json_error(
    err: actix_web::error::JsonPayloadError,
    _req: &HttpRequest,
) -> actix_web::Error {
    use actix_web::error::JsonPayloadError as J;
    let message = match &err {
        J::Deserialize(e) if e.is_data() => {
            let text = e.to_string();
            let detail = if text.starts_with("missing field") || text.starts_with("unknown field") {
                text.split(" at line").next().unwrap_or("").to_owned()
            } else {
                "a field has the wrong type or format".to_owned()
            };
            format!(
                "request body does not match this endpoint: {detail} (line {}, column {})",
                e.line(),
                e.column()
            )
        }
        J::Deserialize(e) => format!(
            "request body is not valid JSON (line {}, column {})",
            e.line(),
            e.column()
        ),
        J::ContentType => "send Content-Type: application/json".to_owned(),
        J::Overflow { limit } | J::OverflowKnownLength { limit, .. } => {
            format!("request body exceeds {limit} bytes")
        }
        _ => "request body could not be read".to_owned(),
    };
    ApiError::BadRequest(message).into()
}

pub(crate) async fn method_not_allowed() -> Result<HttpResponse> {
    Err(ApiError::MethodNotAllowed)
}

pub(crate) async fn not_found() -> Result<HttpResponse> {
    Err(ApiError::NotFound("no such endpoint; see docs/http-api.md"))
}

/// A static label for the metrics, from the matched route pattern.
fn route_label(pattern: Option<&str>) -> &'static str {
    match pattern {
        Some("/healthz") => "healthz",
        Some("/metrics") => "metrics",
        Some("/v1/prelogin") => "prelogin",
        Some("/v1/users") => "users",
        Some("/v1/me") => "me",
        Some("/v1/me/password") => "password",
        Some("/v1/instances") => "instances",
        Some("/v1/instances/{id}") => "instance",
        Some("/v1/instances/{id}/token") => "instance_token",
        Some("/v1/principals/{id}/key") => "principal_key",
        Some("/v1/me/keyring") => "keyring",
        Some("/v1/users/reset") => "reset",
        Some("/v1/instances/{id}/reenrol") => "instance_reenrol",
        Some("/v1/admin/users/{name}/reset") => "admin_reset",
        _ => "unmatched",
    }
}

pub fn configure(cfg: &mut web::ServiceConfig) {
    // Each path is one resource so a wrong method gets our JSON 405, not an empty one.
    let resource =
        |path: &str| web::resource(path.to_owned()).default_service(web::to(method_not_allowed));
    cfg.app_data(
        web::JsonConfig::default()
            .limit(256 * 1024)
            .error_handler(json_error),
    )
    .service(resource("/healthz").route(web::get().to(healthz)))
    .service(resource("/metrics").route(web::get().to(metrics_page)))
    .service(resource("/v1/prelogin").route(web::post().to(prelogin)))
    .service(resource("/v1/users").route(web::post().to(register)))
    .service(resource("/v1/users/reset").route(web::post().to(complete_reset)))
    .service(
        resource("/v1/me")
            .route(web::get().to(me))
            .route(web::delete().to(delete_account)),
    )
    .service(resource("/v1/me/password").route(web::post().to(change_password)))
    .service(resource("/v1/me/keyring").route(web::put().to(put_keyring)))
    .service(
        resource("/v1/instances")
            .route(web::post().to(add_instance))
            .route(web::get().to(list_instances)),
    )
    .service(resource("/v1/instances/{id}").route(web::delete().to(remove_instance)))
    .service(resource("/v1/instances/{id}/token").route(web::post().to(rotate_token)))
    .service(resource("/v1/instances/{id}/reenrol").route(web::post().to(reenrol_instance)))
    .service(resource("/v1/principals/{id}/key").route(web::get().to(peer_key)))
    .default_service(web::to(not_found));
}

/// Binds the API; the returned server runs until stopped through its handle.
pub fn bind(
    state: Arc<ApiState>,
) -> std::io::Result<(actix_web::dev::Server, std::net::SocketAddr)> {
    let (listen, workers) = (state.config.http.listen, state.config.http.workers);
    bind_app(listen, workers, state, configure)
}

/// An HTTP server on `listen` whose app is `configure` over `state`, with per-route request
/// metrics. Shared by the public API and the operator API.
pub(crate) fn bind_app<T: Send + Sync + 'static>(
    listen: std::net::SocketAddr,
    workers: usize,
    state: Arc<T>,
    configure: fn(&mut web::ServiceConfig),
) -> std::io::Result<(actix_web::dev::Server, std::net::SocketAddr)> {
    let workers = Config::worker_count(workers);
    let data = web::Data::from(state);
    let server = HttpServer::new(move || {
        App::new()
            .app_data(data.clone())
            .wrap_fn(|req, srv| {
                srv.call(req).map(|res| {
                    // The route is known only after routing, so it is read off the response.
                    if let Ok(res) = &res {
                        let route = route_label(res.request().match_pattern().as_deref());
                        metrics::http_request(route, res.status().as_u16());
                    }
                    res
                })
            })
            .configure(configure)
    })
    .workers(workers)
    .disable_signals()
    .shutdown_timeout(5)
    .bind(listen)?;
    let addr = server.addrs().first().copied().unwrap_or(listen);
    Ok((server.run(), addr))
}
