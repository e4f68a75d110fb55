//! `/v1/me`, `/v1/me/password`, `/v1/me/key-proof`, `/v1/me/keyring`, `/v1/me/activity`:
//! the caller's own account, and everything the server holds about it.

use actix_web::{web, HttpRequest, HttpResponse};
use sealrelay_wire::api::*;

use super::checks::*;
use super::users::require_key_proof;
use super::{caller, caller_user, ApiError, ApiState, Body, Result};
use crate::directory::unix_now;
use crate::metrics;
use sealrelay_wire::envelope::Witness;
use sealrelay_wire::{b64, PrincipalId, PrincipalKind};

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
        kdf_recommended: (bundle.kind == PrincipalKind::User)
            .then(|| state.config.kdf.advertised()),
        key_proof_recorded: bundle.key_proof_recorded,
    }))
}

/// Records of each kind a report (or the operator's session log) carries per principal at
/// most: a month of hourly usage is 720; short sessions beyond this are summed per hour.
pub(crate) const REPORT_LIMIT: u32 = 1000;

/// `GET /v1/me/activity?since=`: everything the server holds about the caller and, for a
/// user, the instances it is paired with.
pub(super) async fn activity(req: HttpRequest, state: web::Data<ApiState>) -> Result<HttpResponse> {
    let since = since_param(req.query_string())?;
    let caller = caller(&req, &state).await?;
    let report = report(&state, caller.id, since)
        .await?
        .ok_or(ApiError::NotFound("principal no longer exists"))?;
    Ok(HttpResponse::Ok().json(report))
}

/// The activity report of `id` from `since` (default: the retention period); `None` if
/// `id` does not exist. The principal's own records first, then those of each instance a
/// user is paired with — never another user's.
pub(crate) async fn report(
    state: &ApiState,
    id: PrincipalId,
    since: Option<i64>,
) -> Result<Option<Activity>> {
    let now = unix_now();
    let since = since.unwrap_or(now - i64::from(state.config.accounting.retention_days) * 86_400);
    let Some(held) = state.directory.held_about(id).await? else {
        return Ok(None);
    };
    let mut principals = vec![held.principal];
    if principals[0].kind == PrincipalKind::User {
        for pairing in held.pairings.iter().filter(|p| p.user == id) {
            if let Some(instance) = state.directory.principal_held(pairing.instance).await? {
                principals.push(instance);
            }
        }
    }
    for p in &mut principals {
        p.sessions = state.log.of(p.id, since, REPORT_LIMIT).await?;
        p.usage = state.log.usage_of(p.id, since, REPORT_LIMIT).await?;
        p.login_failures = state.log.failures_of(p.id, since, REPORT_LIMIT).await?;
    }
    Ok(Some(Activity {
        generated_at: now,
        since,
        principals,
        pairings: held.pairings,
        held: held.held,
    }))
}

/// Swaps a user's salt, KDF parameters, verifier and wrapped key at once (the key pair is
/// unchanged: the client re-wrapped the same private key). Authenticated with the old
/// secret and the key proof; every live session of the user is then closed, so the old
/// password stops working at once. What was replaced is kept `auth.previous_key_days` for
/// a rollback.
pub(super) async fn change_password(
    req: HttpRequest,
    state: web::Data<ApiState>,
    body: Body<ChangePasswordRequest>,
) -> Result<HttpResponse> {
    let user = caller_user(&req, &state).await?;
    let (new, proof) = check_password_wrap(&state.config, body.into_inner())?;
    // A login secret alone must not replace the wrap of a key it cannot open.
    require_key_proof(&state, user.id, proof).await?;
    let days = i64::from(state.config.auth.previous_key_days);
    let keep_until = (days > 0).then(|| unix_now() + days * 86_400);
    let revoked = state
        .directory
        .change_password(user.id, new, keep_until)
        .await?;
    state.router.revoke(revoked);
    metrics::key_event("password_changed");
    Ok(HttpResponse::Ok().json(IdBody { id: user.id }))
}

/// Deletes the caller's account and every instance it owns; all their live sessions are
/// closed. Metadata already recorded follows the accounting retention.
pub(super) async fn delete_account(
    req: HttpRequest,
    state: web::Data<ApiState>,
    body: Option<Body<KeyProofBody>>,
) -> Result<HttpResponse> {
    let user = caller_user(&req, &state).await?;
    // Nor may a login secret alone destroy the account: the key proof, once recorded, is
    // the body of the request (an account without one is deleted as before).
    let proof = body
        .map(|b| secret_verifier(b.key_proof.expose(), "key_proof"))
        .transpose()?;
    require_key_proof(&state, user.id, proof).await?;
    let (instances, revoked) = state.directory.delete_user(user.id).await?;
    state.router.revoke(revoked);
    metrics::key_event("account_deleted");
    Ok(HttpResponse::Ok().json(AccountDeleted {
        id: user.id,
        deleted_instances: instances,
    }))
}

/// Records the key proof of an account registered before key proofs existed; once only.
pub(super) async fn put_key_proof(
    req: HttpRequest,
    state: web::Data<ApiState>,
    body: Body<KeyProofBody>,
) -> Result<HttpResponse> {
    let user = caller_user(&req, &state).await?;
    let key_verifier = secret_verifier(body.key_proof.expose(), "key_proof")?;
    if !state
        .directory
        .record_key_verifier(user.id, key_verifier)
        .await?
    {
        return Err(ApiError::Conflict(
            "this account's key proof is already recorded; it never changes with the password"
                .into(),
        ));
    }
    Ok(HttpResponse::Ok().json(IdBody { id: user.id }))
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
