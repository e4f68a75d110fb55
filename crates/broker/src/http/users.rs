//! `/v1/prelogin`, `/v1/users` and `/v1/users/reset`: the calls made before a login.

use actix_web::{web, HttpRequest, HttpResponse};
use sealrelay_wire::api::*;

use super::checks::*;
use hkdf::Hkdf;
use sha2::Sha256;

use super::{client_ip, ApiError, ApiState, Body, Result};
use crate::auth::AuthError;
use crate::directory::{unix_now, NewUser};
use crate::metrics;
use sealrelay_wire::Close;
use sealrelay_wire::{BadResetCode, KdfSpec, ResetCode};

/// Salt and KDF parameters for a name. Unknown names get a salt derived from a server
/// secret and the default parameters: stable and indistinguishable from a real account.
pub(super) async fn prelogin(
    req: HttpRequest,
    state: web::Data<ApiState>,
    body: Body<PreloginRequest>,
) -> Result<HttpResponse> {
    if !state.prelogins.admit(client_ip(&req, &state)) {
        return Err(ApiError::TooMany(
            "too many prelogin requests from this address; retry in a minute",
        ));
    }
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

pub(super) async fn register(
    req: HttpRequest,
    state: web::Data<ApiState>,
    body: Body<RegisterRequest>,
) -> Result<HttpResponse> {
    if !state.registrations.admit(client_ip(&req, &state)) {
        return Err(ApiError::TooMany(
            "too many accounts created from this address; retry in an hour",
        ));
    }
    let (name, id, public_key, password) = body.into_inner().into_parts();
    check_name(&name)?;
    state
        .directory
        .register_user(NewUser {
            id,
            public_key: key32(&public_key, "public_key")?,
            secret: check_password_wrap(&state.config, password)?,
            name,
        })
        .await?;
    Ok(HttpResponse::Created().json(IdBody { id }))
}

/// Completes an operator-issued reset: the code (checked in constant time, under the same
/// failure limits as logins) lets the user install a new key pair and password. Pairings
/// are flagged for re-enrolment, and every live session of the user is closed.
pub(super) async fn complete_reset(
    req: HttpRequest,
    state: web::Data<ApiState>,
    body: Body<ResetRequest>,
) -> Result<HttpResponse> {
    let (name, reset_code, public_key, password) = body.into_inner().into_parts();
    let denied = || {
        ApiError::Forbidden(
            "this reset code is not valid for that user (wrong, already used or expired): ask the operator for a new one",
        )
    };
    let code: ResetCode = reset_code
        .expose()
        .parse()
        .map_err(|e: BadResetCode| ApiError::BadRequest(format!("reset_code is malformed: {e}")))?;
    check_name(&name)?;
    let public_key = key32(&public_key, "public_key")?;
    let new = check_password_wrap(&state.config, password)?;
    let pending = state.directory.pending_reset(&name).await?;
    let expected = pending
        .filter(|p| p.user == code.user && p.expires_at > unix_now())
        .map(|p| p.verifier);
    state
        .authenticator
        .check(client_ip(&req, &state), &name, code.secret(), expected)
        .map_err(|e| match e {
            AuthError::Denied => denied(),
            AuthError::RateLimited => ApiError::RateLimited,
        })?;
    let stale = state
        .directory
        .complete_reset(code.user, public_key, new)
        .await?
        .ok_or_else(denied)?;
    state.router.kick_all(code.user, Close::PasswordReset);
    metrics::key_event("reset_completed");
    Ok(HttpResponse::Ok().json(ResetDone {
        id: code.user,
        stale_instances: stale,
    }))
}
