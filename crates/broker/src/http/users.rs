//! `/v1/prelogin`, `/v1/users`, `/v1/users/reset` and the rollback of a change of
//! password (`/v1/prelogin/previous`, `/v1/users/previous`, `/v1/users/rollback`): the
//! calls made without a current login.

use actix_web::{web, HttpRequest, HttpResponse};
use sealrelay_wire::api::*;

use super::checks::*;
use hkdf::Hkdf;
use sha2::Sha256;

use super::{client_ip, ApiError, ApiState, Body, Result};
use crate::auth::{verifier, AuthError};
use crate::config::Registration;
use crate::directory::{unix_now, NewUser, PreviousPassword};
use crate::metrics;
use crate::rate::Counted;
use sealrelay_wire::{BadResetCode, KdfParams, KdfSpec, PrincipalId, ResetCode};
use subtle::ConstantTimeEq;

/// Salt and KDF parameters for a name. Unknown names get a salt derived from a server
/// secret, its length and the parameters drawn from the real accounts' mix (`kdf_answer`):
/// stable and indistinguishable from a real account.
pub(super) async fn prelogin(
    req: HttpRequest,
    state: web::Data<ApiState>,
    body: Body<PreloginRequest>,
) -> Result<HttpResponse> {
    admit_prelogin(&req, &state)?;
    let found = state.directory.kdf_of(&body.name);
    Ok(kdf_answer(
        &state,
        &body.name,
        found,
        b"sealrelay/v1/fake-salt",
    ))
}

/// Salt and KDF parameters of the password a change replaced, for `name`'s rollback
/// (protocol §7.8). Names with nothing to roll back get a fake as in `prelogin` (with
/// another derivation), so the answer does not tell who changed a password recently.
pub(super) async fn prelogin_previous(
    req: HttpRequest,
    state: web::Data<ApiState>,
    body: Body<PreloginRequest>,
) -> Result<HttpResponse> {
    admit_prelogin(&req, &state)?;
    let found = (state.directory.previous_password(&body.name).await?)
        .map(|previous| (previous.secret.salt, previous.secret.kdf));
    Ok(kdf_answer(
        &state,
        &body.name,
        found,
        b"sealrelay/v1/fake-previous-salt",
    ))
}

fn admit_prelogin(req: &HttpRequest, state: &ApiState) -> Result<()> {
    if !state
        .limiter
        .admit(Counted::Prelogin(client_ip(req, state)))
    {
        return Err(ApiError::TooMany(
            "too many prelogin requests from this address; retry in a minute",
        ));
    }
    Ok(())
}

/// `found`, or for a name without one a salt derived from the server's secret (stable, and
/// indistinguishable from a random one) with parameters drawn, by the name, from the mix real
/// accounts have. Both are computed either way, so the two answers take the same work.
fn kdf_answer(
    state: &ApiState,
    name: &str,
    found: Option<(Vec<u8>, KdfParams)>,
    fake_label: &[u8],
) -> HttpResponse {
    let derive = Hkdf::<Sha256>::new(Some(&state.prelogin_key), name.as_bytes());
    let mut pick = [0u8; 8];
    derive
        .expand(b"sealrelay/v1/fake-kdf", &mut pick)
        .expect("8 bytes is a valid HKDF length");
    // The salt's length is drawn with the parameters: a client may choose 16..=64 bytes.
    let (salt_len, drawn) = (state.directory.kdf_drawn(u64::from_le_bytes(pick)))
        .unwrap_or_else(|| (16, state.config.kdf.advertised()));
    let mut salt = vec![0u8; salt_len];
    derive
        .expand(fake_label, &mut salt)
        .expect("16..=64 bytes is a valid HKDF length");
    let (salt, params) = found.unwrap_or((salt, drawn));
    HttpResponse::Ok().json(KdfSpec { salt, params })
}

/// The wrap a change of password replaced, for the holder of the previous password: its
/// login secret is checked in constant time under the login failure limits. Unknown names,
/// wrong secrets and accounts with nothing to roll back get one answer.
pub(super) async fn previous_wrap(
    req: HttpRequest,
    state: web::Data<ApiState>,
    body: Body<PreviousRequest>,
) -> Result<HttpResponse> {
    let body = body.into_inner();
    let previous = check_previous(&req, &state, &body.name, &body.auth_secret).await?;
    Ok(HttpResponse::Ok().json(PreviousWrap {
        id: previous.user,
        public_key: previous.public_key.to_vec(),
        wrapped_key: previous.secret.wrapped_key,
        changed_at: previous.changed_at,
        expires_at: previous.expires_at,
    }))
}

/// Undoes the last change of password: the previous password's login secret and the key
/// proof of the account's private key (which only that password's wrap gave back) are both
/// required, so a captured login secret can neither make a change stick nor undo the
/// owner's own remedy. Every live session of the user is closed.
pub(super) async fn roll_back(
    req: HttpRequest,
    state: web::Data<ApiState>,
    body: Body<RollbackRequest>,
) -> Result<HttpResponse> {
    let body = body.into_inner();
    let presented = secret_verifier(body.key_proof.expose(), "key_proof")?;
    let previous = check_previous(&req, &state, &body.name, &body.auth_secret).await?;
    let recorded = require_key_proof(&state, previous.user, Some(presented)).await?;
    // An account from before key proofs: the first proof presented is recorded.
    let record = (!recorded).then_some(presented);
    let revoked = state
        .directory
        .roll_back(&previous, record)
        .await?
        .ok_or_else(previous_denied)?;
    state.router.revoke(revoked);
    metrics::key_event("password_rolled_back");
    Ok(HttpResponse::Ok().json(IdBody { id: previous.user }))
}

/// Once `user`'s key proof is on record, `presented` (the verifier of the one sent) must
/// match it, in constant time: for what only the holder of the private key may do. Whether
/// one is on record.
pub(super) async fn require_key_proof(
    state: &ApiState,
    user: PrincipalId,
    presented: Option<[u8; 32]>,
) -> Result<bool> {
    let Some(expected) = state.directory.key_verifier(user).await? else {
        return Ok(false);
    };
    if presented.is_some_and(|p| bool::from(expected.ct_eq(&p))) {
        Ok(true)
    } else {
        Err(ApiError::Forbidden(
            "key_proof does not match this account's key: it must be derived from the private key the account was registered with (protocol §2.4)",
        ))
    }
}

fn previous_denied() -> ApiError {
    ApiError::Forbidden(
        "no change of password within the grace period (auth.previous_key_days) can be undone with that previous password",
    )
}

async fn check_previous(
    req: &HttpRequest,
    state: &ApiState,
    name: &str,
    auth_secret: &SecretText,
) -> Result<PreviousPassword> {
    check_name(name)?;
    let previous = state.directory.previous_password(name).await?;
    state
        .authenticator
        .check(
            client_ip(req, state),
            name,
            auth_secret.expose(),
            previous.as_ref().map(|p| p.secret.verifier),
        )
        .map_err(|e| match e {
            AuthError::Denied => previous_denied(),
            AuthError::RateLimited => ApiError::RateLimited,
        })?;
    previous.ok_or_else(previous_denied)
}

/// Invite codes: `sri1.` then 43 base64url characters (32 random bytes).
pub(crate) const INVITE_PREFIX: &str = "sri1.";

const INVITE_REQUIRED: &str =
    "this server creates accounts by invite only: send the invite code your operator gave you (`sealrelay admin invite` makes one)";

/// Creates a user, as `auth.registration` allows: anyone, the holder of an invite, or
/// nobody. Without a valid invite the name is not even looked at, so the 409 for a taken
/// name tells only invite holders which names exist.
pub(super) async fn register(
    req: HttpRequest,
    state: web::Data<ApiState>,
    body: Body<RegisterRequest>,
) -> Result<HttpResponse> {
    if !state
        .limiter
        .admit(Counted::Registration(client_ip(&req, &state)))
    {
        return Err(ApiError::TooMany(
            "too many accounts created from this address; retry in an hour",
        ));
    }
    let mut body = body.into_inner();
    let invite = match state.config.auth.registration {
        Registration::Open => None,
        Registration::Closed => return Err(ApiError::Forbidden(
            "this server takes no new accounts (auth.registration = \"closed\"): ask its operator",
        )),
        Registration::Invite => match body.invite.take() {
            Some(code) if code.expose().starts_with(INVITE_PREFIX) => Some(verifier(code.expose())),
            _ => return Err(ApiError::Forbidden(INVITE_REQUIRED)),
        },
    };
    let (name, id, public_key, password) = body.into_parts();
    check_name(&name)?;
    let (secret, key_verifier) = check_password_wrap(&state.config, password)?;
    state
        .directory
        .register_user(NewUser {
            id,
            public_key: key32(&public_key, "public_key")?,
            secret,
            key_verifier,
            invite,
            name,
        })
        .await?;
    Ok(HttpResponse::Created().json(IdBody { id }))
}

/// Completes an operator-issued reset: the code (checked in constant time, under the same
/// failure limits as logins, and every attempt under `auth.resets_per_ip_per_hour`) lets
/// the user install a new key pair and password. Pairings are flagged for re-enrolment,
/// and every live session of the user is closed.
pub(super) async fn complete_reset(
    req: HttpRequest,
    state: web::Data<ApiState>,
    body: Body<ResetRequest>,
) -> Result<HttpResponse> {
    // Counted before anything is checked: a reset installs a key and writes the database,
    // so one address may not try (or, holding codes, complete) many an hour.
    if !state
        .limiter
        .admit(Counted::ResetTry(client_ip(&req, &state)))
    {
        return Err(ApiError::TooMany(
            "too many password resets tried from this address; retry in an hour",
        ));
    }
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
    let (new, key_verifier) = check_password_wrap(&state.config, password)?;
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
    let (stale, revoked) = state
        .directory
        .complete_reset(code.user, public_key, new, key_verifier)
        .await?
        .ok_or_else(denied)?;
    state.router.revoke(revoked);
    metrics::key_event("reset_completed");
    Ok(HttpResponse::Ok().json(ResetDone {
        id: code.user,
        stale_instances: stale,
    }))
}
