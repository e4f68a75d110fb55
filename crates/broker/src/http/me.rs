//! `/v1/me`, `/v1/me/password`, `/v1/me/keyring`: the caller's own account.

use actix_web::{web, HttpRequest, HttpResponse};
use sealrelay_wire::api::*;

use super::checks::*;
use super::{caller, caller_user, ApiError, ApiState, Body, Result};
use crate::metrics;
use sealrelay_wire::envelope::Witness;
use sealrelay_wire::Close;
use sealrelay_wire::{b64, PrincipalKind};

/// The caller's own id, public key and wrapped private key, plus who it may address.
pub(super) async fn me(req: HttpRequest, state: web::Data<ApiState>) -> Result<HttpResponse> {
    let credentials = caller(&req, &state).await?;
    let bundle = state
        .directory
        .key_bundle(credentials.id)
        .await?
        .ok_or(ApiError::NotFound("principal no longer exists"))?;
    Ok(HttpResponse::Ok().json(Me {
        id: bundle.id,
        kind: bundle.kind,
        witness: Witness::of(&bundle.public_key).to_string(),
        public_key: bundle.public_key.to_vec(),
        wrapped_key: bundle.wrapped_key,
        peers: state.directory.peers_of(credentials.id),
        keyring: bundle.keyring.as_deref().map(b64::encode),
        keyring_version: u64::try_from(bundle.keyring_version).unwrap_or(0),
        // What a password change should upgrade this account's KDF parameters to.
        kdf_recommended: (bundle.kind == PrincipalKind::User).then(|| default_kdf(&state.config)),
    }))
}

/// Swaps a user's salt, KDF parameters, verifier and wrapped key at once (the key pair is
/// unchanged: the client re-wrapped the same private key). Authenticated with the old
/// secret; every live session of the user is then closed, so the old password stops
/// working at once.
pub(super) async fn change_password(
    req: HttpRequest,
    state: web::Data<ApiState>,
    body: Body<ChangePasswordRequest>,
) -> Result<HttpResponse> {
    let user = caller_user(&req, &state).await?;
    let new = check_password_wrap(&state.config, body.into_inner())?;
    state.directory.change_password(user.id, new).await?;
    state.router.kick_all(user.id, Close::CredentialsChanged);
    metrics::key_event("password_changed");
    Ok(HttpResponse::Ok().json(IdBody { id: user.id }))
}

/// Deletes the caller's account and every instance it owns; all their live sessions are
/// closed. Metadata already recorded follows the accounting retention.
pub(super) async fn delete_account(
    req: HttpRequest,
    state: web::Data<ApiState>,
) -> Result<HttpResponse> {
    let user = caller_user(&req, &state).await?;
    let instances = state.directory.delete_user(user.id).await?;
    for id in instances.iter().chain(std::iter::once(&user.id)) {
        state.router.kick_all(*id, Close::AccountDeleted);
    }
    metrics::key_event("account_deleted");
    Ok(HttpResponse::Ok().json(AccountDeleted {
        id: user.id,
        deleted_instances: instances,
    }))
}

/// Replaces the caller's sealed keyring; the version must be the stored one plus one, so
/// two consoles cannot overwrite each other's pins unnoticed.
pub(super) async fn put_keyring(
    req: HttpRequest,
    state: web::Data<ApiState>,
    body: Body<KeyringBody>,
) -> Result<HttpResponse> {
    let caller = caller(&req, &state).await?;
    let keyring = check_keyring(body.into_inner())?;
    state.directory.write_keyring(caller.id, &keyring).await?;
    Ok(HttpResponse::Ok().json(KeyringVersion {
        version: keyring.version as u64,
    }))
}
