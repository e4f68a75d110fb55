//! The operator API, on its own listener (loopback by default, `[admin]` in broker.toml):
//! what only the people running the broker may do — today, issuing password-reset codes.
//! Every call carries `Authorization: Bearer <token>`, the token being the base64url form
//! of the 32 bytes in `admin.token_file`; `sealrelay admin …` reads that file itself.

use std::sync::Arc;

use actix_web::{web, HttpRequest, HttpResponse};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::directory::unix_now;
use crate::http::{self, ApiError, ApiState};
use sealrelay_wire::api::AdminReset;
use sealrelay_wire::{b64, Close, PrincipalKind, ResetCode};

pub struct AdminState {
    api: Arc<ApiState>,
    /// SHA-256 of the token's text form: compared in constant time, never logged.
    token_digest: [u8; 32],
}

impl AdminState {
    pub fn new(api: Arc<ApiState>, token: &[u8; 32]) -> AdminState {
        let token_digest = Sha256::digest(operator_token_text(token).as_bytes()).into();
        AdminState { api, token_digest }
    }
}

/// The bearer token for the 32 secret bytes of `admin.token_file`.
pub fn operator_token_text(token: &[u8; 32]) -> zeroize::Zeroizing<String> {
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
    if !api
        .directory
        .issue_reset(user.id, crate::auth::verifier(code.secret()), expires_at)
        .await?
    {
        return Err(ApiError::NotFound("no user with that name"));
    }
    api.router.kick_all(user.id, Close::PasswordReset);
    crate::metrics::key_event("reset_issued");
    tracing::info!(user = %user.id, "operator issued a password reset");
    Ok(HttpResponse::Ok().json(AdminReset {
        user_id: user.id,
        reset_code: code.reveal().into(),
        expires_at,
    }))
}

fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/v1/admin/users/{name}/reset")
            .route(web::post().to(reset_user))
            .default_service(web::to(http::method_not_allowed)),
    )
    .default_service(web::to(http::not_found));
}

/// Binds the operator API on `admin.listen`, one worker: it serves a person, not traffic.
pub fn bind(
    state: Arc<AdminState>,
) -> std::io::Result<(actix_web::dev::Server, std::net::SocketAddr)> {
    let listen = state.api.config.admin.listen;
    let (server, addrs) = http::bind_app(listen, None, 1, state, configure)?;
    Ok((server, addrs[0]))
}
