//! The operator API, on its own listener (loopback by default, `[admin]` in broker.toml):
//! what only the people running the broker may do — issue password-reset codes and invite
//! codes, list
//! accounts and live sessions, close a principal's sessions, clear a login's lockout, read a
//! principal's session metadata. Metadata only: nothing here can read an envelope or a key.
//! Every call carries `Authorization: Bearer <token>`, the token being the base64url form
//! of the 32 bytes in `admin.token_file`; `sealrelay admin …` reads that file itself.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use actix_web::{web, HttpRequest, HttpResponse};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::directory::unix_now;
use crate::http::{self, ApiError, ApiState};
use crate::revocation::Revoked;
use sealrelay_wire::api::{
    AdminInvite, AdminKicked, AdminReset, AdminSession, AdminSessionLog, AdminSessions,
    AdminUnlocked, AdminUser, AdminUsers,
};
use sealrelay_wire::{b64, Close, PrincipalId, PrincipalKind, ResetCode};

pub struct AdminState {
    api: Arc<ApiState>,
    /// SHA-256 of the token's text form: compared in constant time, never logged.
    token_digest: [u8; 32],
}

impl AdminState {
    pub fn new(api: Arc<ApiState>, token: &[u8]) -> AdminState {
        let token_digest = Sha256::digest(operator_token_text(token).as_bytes()).into();
        AdminState { api, token_digest }
    }
}

/// The bearer token for the 32 secret bytes of `admin.token_file`.
pub fn operator_token_text(token: &[u8]) -> zeroize::Zeroizing<String> {
    zeroize::Zeroizing::new(b64::encode_url(token))
}

fn operator(req: &HttpRequest, state: &AdminState) -> Result<(), ApiError> {
    let presented = http::authorization(req, "Bearer").ok_or(ApiError::NotOperator)?;
    let digest: [u8; 32] = Sha256::digest(presented.trim().as_bytes()).into();
    if bool::from(digest.ct_eq(&state.token_digest)) {
        Ok(())
    } else {
        Err(ApiError::NotOperator)
    }
}

/// The operator's call about principal `path`: checks the token, then parses the id.
fn operator_on(
    req: &HttpRequest,
    state: &AdminState,
    path: &str,
) -> Result<sealrelay_wire::PrincipalId, ApiError> {
    operator(req, state)?;
    http::id_param(path)
}

/// Issues a one-time reset code for user `name`. From this moment the old password no
/// longer logs in and the user's live sessions are closed; the code (returned once, only
/// its verifier stored) lets the user install a new key pair until it expires.
async fn reset_user(
    req: HttpRequest,
    state: web::Data<AdminState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    operator(&req, &state)?;
    let name = path.into_inner();
    let api = &state.api;
    let user = api
        .directory
        .credentials(&name)
        .filter(|c| c.kind == PrincipalKind::User)
        .ok_or(ApiError::NotFound("no user with that name"))?;
    let code = ResetCode::generate(user.id);
    let expires_at = unix_now() + api.config.admin.reset_code_ttl_secs as i64;
    let revoked = api
        .directory
        .issue_reset(user.id, crate::auth::verifier(code.secret()), expires_at)
        .await?
        .ok_or(ApiError::NotFound("no user with that name"))?;
    api.router.revoke(revoked);
    crate::metrics::key_event("reset_issued");
    tracing::info!(user = %user.id, "operator issued a password reset");
    Ok(HttpResponse::Ok().json(AdminReset {
        user_id: user.id,
        reset_code: code.reveal().into(),
        expires_at,
    }))
}

/// `POST /v1/admin/invites`: a one-time invite code for `auth.registration = "invite"`,
/// returned once; only its verifier is kept, until `admin.invite_ttl_secs` from now.
async fn invite(req: HttpRequest, state: web::Data<AdminState>) -> Result<HttpResponse, ApiError> {
    operator(&req, &state)?;
    let mut secret = zeroize::Zeroizing::new([0u8; 32]);
    rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, secret.as_mut());
    let code = zeroize::Zeroizing::new(format!(
        "{}{}",
        http::INVITE_PREFIX,
        b64::encode_url(secret.as_ref())
    ));
    let expires_at = unix_now() + state.api.config.admin.invite_ttl_secs as i64;
    state
        .api
        .directory
        .issue_invite(crate::auth::verifier(&code), expires_at)
        .await?;
    tracing::info!("operator issued an invite");
    Ok(HttpResponse::Ok().json(AdminInvite {
        invite: code.as_str().into(),
        expires_at,
    }))
}

/// `GET /v1/admin/users`: every account, its instance count, when it was last seen.
async fn users(req: HttpRequest, state: web::Data<AdminState>) -> Result<HttpResponse, ApiError> {
    operator(&req, &state)?;
    let api = &state.api;
    let users = api
        .directory
        .users()
        .await?
        .into_iter()
        .map(|u| AdminUser {
            online: api.router.is_online(u.id),
            id: u.id,
            name: u.name,
            created_at: u.created_at,
            last_seen: u.last_seen,
            instances: u.instances,
        })
        .collect();
    Ok(HttpResponse::Ok().json(AdminUsers { users }))
}

/// `GET /v1/admin/sessions`: every live MQTT session, oldest first.
async fn sessions(
    req: HttpRequest,
    state: web::Data<AdminState>,
) -> Result<HttpResponse, ApiError> {
    operator(&req, &state)?;
    // Users by id, read once: a principal that is not a user is an instance, whose login is
    // its id.
    let names: HashMap<PrincipalId, String> = (state.api.directory.users().await?)
        .into_iter()
        .map(|u| (u.id, u.name))
        .collect();
    let mut sessions = Vec::new();
    state.api.router.each_session(|principal, session| {
        let totals = session.facts.counts.totals();
        let (login, kind) = match names.get(&principal) {
            Some(name) => (name.clone(), PrincipalKind::User),
            None => (principal.to_string(), PrincipalKind::Instance),
        };
        sessions.push(AdminSession {
            principal,
            login,
            kind,
            client_id: session.client_id.clone(),
            transport: session.facts.transport.to_owned(),
            ip: session.facts.ip.to_string(),
            since: session.facts.since,
            bytes_in: totals.bytes_in,
            bytes_out: totals.bytes_out,
            messages_in: totals.messages_in,
            messages_out: totals.messages_out,
        })
    });
    sessions.sort_by_key(|s| (s.since, s.principal.0));
    Ok(HttpResponse::Ok().json(AdminSessions { sessions }))
}

/// `POST /v1/admin/principals/{id}/kick`: closes the principal's live sessions (MQTT 5:
/// DISCONNECT 0x98 `kicked_by_operator`); its credentials still work.
async fn kick(
    req: HttpRequest,
    state: web::Data<AdminState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let principal = operator_on(&req, &state, &path)?;
    let closed = state
        .api
        .router
        .revoke(Revoked::one(Close::KickedByOperator, principal)) as u64;
    tracing::info!(principal = %principal, closed, "operator closed a principal's sessions");
    Ok(HttpResponse::Ok().json(AdminKicked { principal, closed }))
}

/// `POST /v1/admin/logins/{name}/unlock`: clears the login's failed-login window.
async fn unlock(
    req: HttpRequest,
    state: web::Data<AdminState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    operator(&req, &state)?;
    let login = path.into_inner();
    let was_locked = state.api.authenticator.unlock(&login);
    tracing::info!(was_locked, "operator cleared a login's failure window");
    Ok(HttpResponse::Ok().json(AdminUnlocked { login, was_locked }))
}

/// `GET /v1/admin/principals/{id}/session-log?since=`: sessions, live and closed, newest
/// first.
async fn session_log(
    req: HttpRequest,
    state: web::Data<AdminState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let principal = operator_on(&req, &state, &path)?;
    let since = http::since_param(req.query_string())?.unwrap_or(0);
    let sessions = state
        .api
        .log
        .of(principal, since, http::REPORT_LIMIT)
        .await?;
    Ok(HttpResponse::Ok().json(AdminSessionLog {
        principal,
        sessions,
    }))
}

/// `GET /v1/admin/principals/{id}/activity?since=`: the principal's own transparency
/// report, exported for the operator (the same body as its `GET /v1/me/activity`).
async fn activity(
    req: HttpRequest,
    state: web::Data<AdminState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let principal = operator_on(&req, &state, &path)?;
    let since = http::since_param(req.query_string())?;
    let report = http::report(&state.api, principal, since)
        .await?
        .ok_or(ApiError::NotFound("no principal has this id"))?;
    Ok(HttpResponse::Ok().json(report))
}

/// `GET /v1/admin/backup`: a consistent copy of the SQLite directory, taken online
/// (`VACUUM INTO` a private file beside the database, unlinked once open, streamed). A
/// PostgreSQL directory is backed up with PostgreSQL's own tools.
async fn backup(req: HttpRequest, state: web::Data<AdminState>) -> Result<HttpResponse, ApiError> {
    operator(&req, &state)?;
    let config = &state.api.config.directory;
    if !config.url.is_empty() {
        return Err(ApiError::Conflict(
            "the directory is on PostgreSQL (directory.url): back it up with pg_dump or your PostgreSQL backups, not with this command".into(),
        ));
    }
    let mut nonce = [0u8; 8];
    rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut nonce);
    let name = config
        .database
        .file_name()
        .map_or_else(|| "sealrelay.db".into(), |n| n.to_string_lossy());
    // Beside the database: on its file system, in its private directory.
    let copy = config
        .database
        .with_file_name(format!(".{name}.backup-{}", hex::encode(nonce)));
    if let Err(e) = state.api.directory.backup_into(&copy).await {
        // A copy cut short (a full disk) is no backup: nothing is left beside the database.
        let _ = std::fs::remove_file(&copy);
        return Err(e.into());
    }
    let opened = std::fs::File::open(&copy);
    // Gone from the directory at once; the open handle keeps its bytes until streamed.
    let _ = std::fs::remove_file(&copy);
    let file = opened.map_err(|e| {
        tracing::error!(error = %e, "cannot read the backup just written");
        ApiError::Unavailable
    })?;
    let length = file.metadata().map(|m| m.len()).unwrap_or(0);
    tracing::info!(bytes = length, "operator took a backup of the directory");
    let body = tokio_util::io::ReaderStream::new(tokio::fs::File::from_std(file));
    Ok(HttpResponse::Ok()
        .content_type("application/vnd.sqlite3")
        .no_chunking(length)
        .streaming(body))
}

fn configure(cfg: &mut web::ServiceConfig) {
    use http::resource;
    cfg.service(
        resource("/v1/admin/users/{name}/reset", "admin_reset").route(web::post().to(reset_user)),
    )
    .service(resource("/v1/admin/invites", "admin_invite").route(web::post().to(invite)))
    .service(resource("/v1/admin/users", "admin_users").route(web::get().to(users)))
    .service(resource("/v1/admin/backup", "admin_backup").route(web::get().to(backup)))
    .service(resource("/v1/admin/sessions", "admin_sessions").route(web::get().to(sessions)))
    .service(resource("/v1/admin/principals/{id}/kick", "admin_kick").route(web::post().to(kick)))
    .service(
        resource("/v1/admin/logins/{name}/unlock", "admin_unlock").route(web::post().to(unlock)),
    )
    .service(
        resource("/v1/admin/principals/{id}/session-log", "admin_session_log")
            .route(web::get().to(session_log)),
    )
    .service(
        resource("/v1/admin/principals/{id}/activity", "admin_activity")
            .route(web::get().to(activity)),
    )
    .default_service(web::to(http::not_found));
}

/// Binds the operator API on `admin.listen`, one worker and a few connections: it serves a
/// person, not traffic.
pub fn bind(
    state: Arc<AdminState>,
) -> std::io::Result<(actix_web::dev::Server, std::net::SocketAddr)> {
    let listen = state.api.config.admin.listen;
    let capacity = http::Capacity {
        workers: 1,
        header_timeout: Duration::from_secs(5),
        // One operator's tools, from one address or a few: no share per address.
        caps: http::ConnectionCaps::new(
            64,
            64,
            state.api.config.server.address_block(),
            Default::default(),
        ),
    };
    let (server, addrs) = http::bind_app(listen, None, capacity, state, configure)?;
    Ok((server, addrs[0]))
}
