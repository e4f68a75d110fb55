//! `/v1/instances…` and `/v1/principals/{id}/key`: a user's instances and peer keys.

use actix_web::{web, HttpRequest, HttpResponse};
use sealrelay_wire::api::*;

use super::checks::*;
use super::{caller, caller_user, ApiError, ApiState, Body, Result};
use crate::directory::{unix_now, InstanceKey, InstanceSecret};
use crate::metrics;
use sealrelay_wire::b64;
use sealrelay_wire::envelope::Witness;

pub(super) async fn add_instance(
    req: HttpRequest,
    state: web::Data<ApiState>,
    body: Body<AddInstanceRequest>,
) -> Result<HttpResponse> {
    let owner = caller_user(&req, &state).await?;
    let quota = state.config.directory.max_instances_per_user;
    if state.directory.instance_count(owner.id).await? >= u64::from(quota) {
        return Err(ApiError::Forbidden(
            "this account already owns directory.max_instances_per_user instances: remove one first",
        ));
    }
    let (instance_id, enrolment) = body.into_inner().into_parts();
    let (secret, key) = check_enrolment(enrolment)?;
    let witness = Witness::of(&key.public_key);
    state
        .directory
        .add_instance(owner.id, instance_id, secret, key)
        .await?;
    Ok(HttpResponse::Created().json(AddedInstance {
        id: instance_id,
        witness: witness.to_string(),
    }))
}

/// Removes one of the caller's instances: its key material, token verifier and pairing are
/// deleted and its live sessions closed at once. Someone else's instance, or an unknown id,
/// is the same 404, so ids cannot be probed.
pub(super) async fn remove_instance(
    req: HttpRequest,
    state: web::Data<ApiState>,
    path: web::Path<String>,
) -> Result<HttpResponse> {
    let owner = caller_user(&req, &state).await?;
    let id = id_param(&path)?;
    let revoked = state
        .directory
        .remove_instance(owner.id, id)
        .await?
        .ok_or(ApiError::NotFound("no instance of yours with that id"))?;
    state.router.revoke(revoked);
    metrics::key_event("instance_removed");
    Ok(HttpResponse::Ok().json(Removed { id, removed: true }))
}

/// Gives one of the caller's instances a new token: the owner re-wrapped the instance's
/// bundle (from its escrow copy) under the new token. The old token stops working at once
/// and the instance's live sessions are closed.
pub(super) async fn rotate_token(
    req: HttpRequest,
    state: web::Data<ApiState>,
    path: web::Path<String>,
    body: Body<RotateTokenRequest>,
) -> Result<HttpResponse> {
    let body = body.into_inner();
    let secret = instance_secret(body.wrapped_key, body.auth_secret.expose())?;
    rekey_instance(&req, &state, &path, secret, None).await
}

/// Gives one of the caller's instances a new key pair and token (after the owner's reset,
/// or when the instance's host is no longer trusted): the bundle pins the owner's current
/// key, the stale flag is cleared, the old token stops working and live sessions close.
pub(super) async fn reenrol_instance(
    req: HttpRequest,
    state: web::Data<ApiState>,
    path: web::Path<String>,
    body: Body<Enrolment>,
) -> Result<HttpResponse> {
    let (secret, key) = check_enrolment(body.into_inner())?;
    rekey_instance(&req, &state, &path, secret, Some(key)).await
}

async fn rekey_instance(
    req: &HttpRequest,
    state: &ApiState,
    path: &str,
    secret: InstanceSecret,
    new_key: Option<InstanceKey>,
) -> Result<HttpResponse> {
    let owner = caller_user(req, state).await?;
    let id = id_param(path)?;
    let revoked = state
        .directory
        .rekey_instance(owner.id, id, secret, new_key)
        .await?
        .ok_or(ApiError::NotFound("no instance of yours with that id"))?;
    metrics::key_event(revoked.why().label());
    state.router.revoke(revoked);
    Ok(HttpResponse::Ok().json(IdBody { id }))
}

pub(super) async fn list_instances(
    req: HttpRequest,
    state: web::Data<ApiState>,
) -> Result<HttpResponse> {
    let owner = caller_user(&req, &state).await?;
    let instances: Vec<_> = state
        .directory
        .instances_of(owner.id)
        .await?
        .into_iter()
        .map(|i| {
            let online = state.router.is_online(i.id);
            InstanceView {
                id: i.id,
                witness: Witness::of(&i.public_key).to_string(),
                public_key: i.public_key.to_vec(),
                created_at: i.created_at,
                owner_copy: i.owner_copy.as_deref().map(b64::encode),
                stale_owner_key: i.stale_owner_key,
                online,
                last_seen: if online {
                    Some(unix_now())
                } else {
                    i.last_seen
                },
            }
        })
        .collect();
    Ok(HttpResponse::Ok().json(InstanceList { instances }))
}

/// A peer's public key. Unknown and unpaired ids get the same 404, so ids cannot be probed.
pub(super) async fn peer_key(
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
