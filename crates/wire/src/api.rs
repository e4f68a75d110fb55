//! The JSON bodies of the HTTP API (`docs/http-api.md`), declared once for the broker,
//! which deserialises requests and serialises answers, and for the SDK, which does the
//! opposite. Byte strings are standard base64; secrets travel as [`SecretText`], which
//! zeroizes on drop and never prints. Validation (lengths, KDF policy) is the broker's.

use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::b64;
use crate::id::{PrincipalId, PrincipalKind};
use crate::kdf::{KdfParams, KdfSpec};

/// A secret in a request body (a derived auth secret, a reset code): zeroized on drop,
/// redacted in `Debug`, so a logged request cannot leak it.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct SecretText(Zeroizing<String>);

impl SecretText {
    /// The secret's text, for the one place that must use it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl From<&str> for SecretText {
    fn from(text: &str) -> Self {
        SecretText(Zeroizing::new(text.to_owned()))
    }
}

impl From<Zeroizing<String>> for SecretText {
    fn from(text: Zeroizing<String>) -> Self {
        SecretText(text)
    }
}

impl std::fmt::Debug for SecretText {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretText(<redacted>)")
    }
}

impl Serialize for SecretText {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for SecretText {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(|s| SecretText(Zeroizing::new(s)))
    }
}

/// `POST /v1/prelogin`; answered with a [`KdfSpec`].
#[derive(Debug, Serialize, Deserialize)]
pub struct PreloginRequest {
    /// The user's name (1–64 of A-Z a-z 0-9 . _ @ -).
    pub name: String,
}

/// A user's private key wrapped under a password (protocol §2.1, §3), with the login secret
/// and KDF salt and parameters derived from the same password. It is the whole body of a
/// change of password, and part of a registration and of a reset.
#[derive(Debug, Serialize, Deserialize)]
pub struct PasswordWrap {
    /// The private key wrapped under the password- or token-derived key (protocol §3; base64).
    #[serde(with = "b64")]
    pub wrapped_key: Vec<u8>,
    /// The login secret derived with the wrapped key (protocol §2.3): the server keeps only its verifier.
    pub auth_secret: SecretText,
    /// The salt and Argon2id parameters the secret and the wrap key were derived with.
    pub kdf: KdfSpec,
    /// The key proof (protocol §2.4) of the private key inside `wrapped_key`: proves the
    /// sender holds the key, not only a login secret. Recorded at registration and reset;
    /// required by a change of password once recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_proof: Option<SecretText>,
}

/// `POST /v1/me/password`: the same private key re-wrapped under the new password.
pub type ChangePasswordRequest = PasswordWrap;

// The request bodies below that contain a `PasswordWrap` or an `Enrolment` spell its fields
// out rather than `#[serde(flatten)]` them: flattening would hide which field was malformed
// from the broker's error messages. `into_parts` / `new` convert.

/// `POST /v1/users`.
#[derive(Debug, Serialize, Deserialize)]
pub struct RegisterRequest {
    /// The user's name (1–64 of A-Z a-z 0-9 . _ @ -).
    pub name: String,
    /// The user's id, chosen by the client (32 hex digits).
    pub user_id: PrincipalId,
    /// The X25519 public key (32 bytes; base64 in JSON).
    #[serde(with = "b64")]
    pub public_key: Vec<u8>,
    /// The private key wrapped under the password- or token-derived key (protocol §3; base64).
    #[serde(with = "b64")]
    pub wrapped_key: Vec<u8>,
    /// The login secret derived with the wrapped key (protocol §2.3): the server keeps only its verifier.
    pub auth_secret: SecretText,
    /// The salt and Argon2id parameters the secret and the wrap key were derived with.
    pub kdf: KdfSpec,
    /// The key proof of the private key inside the wrap (protocol §2.4).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_proof: Option<SecretText>,
    /// A one-time invite code from the operator, where `auth.registration = "invite"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub invite: Option<SecretText>,
}

impl RegisterRequest {
    /// A registration of `name` as `user_id` with `public_key`, wrapped and proven by `p`.
    pub fn new(name: String, user_id: PrincipalId, public_key: Vec<u8>, p: PasswordWrap) -> Self {
        RegisterRequest {
            name,
            user_id,
            public_key,
            wrapped_key: p.wrapped_key,
            auth_secret: p.auth_secret,
            kdf: p.kdf,
            key_proof: p.key_proof,
            invite: None,
        }
    }

    /// Name, user id, public key, and the password wrap.
    pub fn into_parts(self) -> (String, PrincipalId, Vec<u8>, PasswordWrap) {
        let wrap = PasswordWrap {
            wrapped_key: self.wrapped_key,
            auth_secret: self.auth_secret,
            kdf: self.kdf,
            key_proof: self.key_proof,
        };
        (self.name, self.user_id, self.public_key, wrap)
    }
}

/// The answer naming the principal a call created or changed (`POST /v1/users`,
/// `POST /v1/me/password`, token rotation, re-enrolment).
#[derive(Debug, Serialize, Deserialize)]
pub struct IdBody {
    /// The principal's id.
    pub id: PrincipalId,
}

/// `GET /v1/me`: the caller's own key material and who it may address.
#[derive(Debug, Serialize, Deserialize)]
pub struct Me {
    /// The principal's id.
    pub id: PrincipalId,
    /// User or instance.
    pub kind: PrincipalKind,
    /// The X25519 public key (32 bytes; base64 in JSON).
    #[serde(with = "b64")]
    pub public_key: Vec<u8>,
    /// The private key wrapped under the password- or token-derived key (protocol §3; base64).
    #[serde(with = "b64")]
    pub wrapped_key: Vec<u8>,
    /// The public key's fingerprint (protocol §4), hex.
    pub witness: String,
    /// The principals it is paired with (a user's instances; an instance's owner).
    pub peers: Vec<PrincipalId>,
    /// For users: the KDF parameters the server recommends now (upgrade on password change);
    /// `null` for instances.
    #[serde(default)]
    pub kdf_recommended: Option<KdfParams>,
    /// The sealed keyring (base64), `null` until first written.
    #[serde(default)]
    pub keyring: Option<String>,
    /// The stored keyring's version (0 before the first write).
    #[serde(default)]
    pub keyring_version: u64,
    /// For users: whether the server holds this account's key proof (§2.4). A client that
    /// sees `false` records it with `PUT /v1/me/key-proof`.
    #[serde(default)]
    pub key_proof_recorded: bool,
}

/// `PUT /v1/me/key-proof`: records the key proof of an account registered before key
/// proofs existed (once: a recorded proof never changes with the password).
#[derive(Debug, Serialize, Deserialize)]
pub struct KeyProofBody {
    /// The key proof of the private key inside the wrap (protocol §2.4).
    pub key_proof: SecretText,
}

/// `POST /v1/users/previous`: the password wrap a change of password replaced, for the
/// holder of the previous password (its login secret in `auth_secret`).
#[derive(Debug, Serialize, Deserialize)]
pub struct PreviousRequest {
    /// The user's name (1–64 of A-Z a-z 0-9 . _ @ -).
    pub name: String,
    /// The login secret derived with the wrapped key (protocol §2.3): the server keeps only its verifier.
    pub auth_secret: SecretText,
}

/// The answer to `POST /v1/users/previous`.
#[derive(Debug, Serialize, Deserialize)]
pub struct PreviousWrap {
    /// The account's id.
    pub id: PrincipalId,
    /// The account's public key (unchanged by a change of password).
    #[serde(with = "b64")]
    pub public_key: Vec<u8>,
    /// The private key wrapped under the previous password.
    #[serde(with = "b64")]
    pub wrapped_key: Vec<u8>,
    /// Unix seconds: when the password was changed, and until when it can be undone.
    pub changed_at: i64,
    /// Unix seconds: until when the change can be undone.
    pub expires_at: i64,
}

/// `POST /v1/users/rollback`: undoes the last change of password (within
/// `auth.previous_key_days`), proven by the previous password's login secret and the key
/// proof of the account's private key.
#[derive(Debug, Serialize, Deserialize)]
pub struct RollbackRequest {
    /// The user's name (1–64 of A-Z a-z 0-9 . _ @ -).
    pub name: String,
    /// The login secret derived with the wrapped key (protocol §2.3): the server keeps only its verifier.
    pub auth_secret: SecretText,
    /// The key proof of the private key inside the wrap (protocol §2.4).
    pub key_proof: SecretText,
}

/// `POST /v1/instances`: an [`Enrolment`] plus the id the console chose.
#[derive(Debug, Serialize, Deserialize)]
pub struct AddInstanceRequest {
    /// The new instance's id, chosen by the console.
    pub instance_id: PrincipalId,
    /// The X25519 public key (32 bytes; base64 in JSON).
    #[serde(with = "b64")]
    pub public_key: Vec<u8>,
    /// The private key wrapped under the password- or token-derived key (protocol §3; base64).
    #[serde(with = "b64")]
    pub wrapped_key: Vec<u8>,
    /// The login secret derived with the wrapped key (protocol §2.3): the server keeps only its verifier.
    pub auth_secret: SecretText,
    /// The instance's bundle wrapped under a key only its owner derives (the escrow copy, protocol §3; base64).
    #[serde(with = "b64")]
    pub owner_copy: Vec<u8>,
    /// The owner's keyring with the new pin, written with the instance (protocol §3.1).
    #[serde(default)]
    pub keyring: Option<KeyringBody>,
}

impl AddInstanceRequest {
    /// The request adding instance `instance_id` with enrolment `e`.
    pub fn new(instance_id: PrincipalId, e: Enrolment) -> Self {
        AddInstanceRequest {
            instance_id,
            public_key: e.public_key,
            wrapped_key: e.wrapped_key,
            auth_secret: e.auth_secret,
            owner_copy: e.owner_copy,
            keyring: e.keyring,
        }
    }

    /// The instance's id and its enrolment.
    pub fn into_parts(self) -> (PrincipalId, Enrolment) {
        let e = Enrolment {
            public_key: self.public_key,
            wrapped_key: self.wrapped_key,
            auth_secret: self.auth_secret,
            owner_copy: self.owner_copy,
            keyring: self.keyring,
        };
        (self.instance_id, e)
    }
}

/// An instance key pair and token made by its owner's console: the body of a
/// re-enrolment (`POST /v1/instances/{id}/reenrol`), and of an addition with the id.
#[derive(Debug, Serialize, Deserialize)]
pub struct Enrolment {
    /// The X25519 public key (32 bytes; base64 in JSON).
    #[serde(with = "b64")]
    pub public_key: Vec<u8>,
    /// The private key wrapped under the password- or token-derived key (protocol §3; base64).
    #[serde(with = "b64")]
    pub wrapped_key: Vec<u8>,
    /// The login secret derived with the wrapped key (protocol §2.3): the server keeps only its verifier.
    pub auth_secret: SecretText,
    /// The instance's bundle wrapped under a key only its owner derives (the escrow copy, protocol §3; base64).
    #[serde(with = "b64")]
    pub owner_copy: Vec<u8>,
    /// The owner's keyring with the new key pinned, written in the same transaction.
    #[serde(default)]
    pub keyring: Option<KeyringBody>,
}

/// The answer to `POST /v1/instances`.
#[derive(Debug, Serialize, Deserialize)]
pub struct AddedInstance {
    /// The new instance's id.
    pub id: PrincipalId,
    /// Its public key's fingerprint, to compare out of band.
    pub witness: String,
}

/// `PUT /v1/me/keyring` (and inside an [`Enrolment`]): a sealed keyring and its version,
/// the stored one plus one.
#[derive(Debug, Serialize, Deserialize)]
pub struct KeyringBody {
    /// The new version: the stored one plus one, or the write is refused (409 `keyring_conflict`).
    pub version: u64,
    /// The sealed keyring (protocol §3.1; base64).
    #[serde(with = "b64")]
    pub keyring: Vec<u8>,
}

/// The answer to `PUT /v1/me/keyring`.
#[derive(Debug, Serialize, Deserialize)]
pub struct KeyringVersion {
    /// The version now stored.
    pub version: u64,
}

/// `POST /v1/users/reset`: a new key pair under a new password, authorised by a reset code.
#[derive(Debug, Serialize, Deserialize)]
pub struct ResetRequest {
    /// The user's name (1–64 of A-Z a-z 0-9 . _ @ -).
    pub name: String,
    /// The one-time reset code from the operator.
    pub reset_code: SecretText,
    /// The X25519 public key (32 bytes; base64 in JSON).
    #[serde(with = "b64")]
    pub public_key: Vec<u8>,
    /// The private key wrapped under the password- or token-derived key (protocol §3; base64).
    #[serde(with = "b64")]
    pub wrapped_key: Vec<u8>,
    /// The login secret derived with the wrapped key (protocol §2.3): the server keeps only its verifier.
    pub auth_secret: SecretText,
    /// The salt and Argon2id parameters the secret and the wrap key were derived with.
    pub kdf: KdfSpec,
    /// The key proof of the private key inside the wrap (protocol §2.4).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_proof: Option<SecretText>,
}

impl ResetRequest {
    /// A reset completion for `name` with the operator's `code`, a new `public_key`, wrapped and proven by `p`.
    pub fn new(name: String, code: SecretText, public_key: Vec<u8>, p: PasswordWrap) -> Self {
        ResetRequest {
            name,
            reset_code: code,
            public_key,
            wrapped_key: p.wrapped_key,
            auth_secret: p.auth_secret,
            kdf: p.kdf,
            key_proof: p.key_proof,
        }
    }

    /// Name, reset code, public key, and the password wrap.
    pub fn into_parts(self) -> (String, SecretText, Vec<u8>, PasswordWrap) {
        let wrap = PasswordWrap {
            wrapped_key: self.wrapped_key,
            auth_secret: self.auth_secret,
            kdf: self.kdf,
            key_proof: self.key_proof,
        };
        (self.name, self.reset_code, self.public_key, wrap)
    }
}

/// The answer to a completed reset: the instances whose bundles pin the old key.
#[derive(Debug, Serialize, Deserialize)]
pub struct ResetDone {
    /// The user's id.
    pub id: PrincipalId,
    /// The user's instances, now to be re-enrolled: they pin the replaced key.
    pub stale_instances: Vec<PrincipalId>,
}

/// `POST /v1/instances/{id}/token`: the same instance key re-wrapped under a new token.
#[derive(Debug, Serialize, Deserialize)]
pub struct RotateTokenRequest {
    /// The private key wrapped under the password- or token-derived key (protocol §3; base64).
    #[serde(with = "b64")]
    pub wrapped_key: Vec<u8>,
    /// The login secret derived with the wrapped key (protocol §2.3): the server keeps only its verifier.
    pub auth_secret: SecretText,
}

/// The answer to `DELETE /v1/instances/{id}`.
#[derive(Debug, Serialize, Deserialize)]
pub struct Removed {
    /// The instance's id.
    pub id: PrincipalId,
    /// Whether it existed and was removed.
    pub removed: bool,
}

/// The answer to `DELETE /v1/me`.
#[derive(Debug, Serialize, Deserialize)]
pub struct AccountDeleted {
    /// The deleted user's id.
    pub id: PrincipalId,
    /// Its instances, deleted with it.
    pub deleted_instances: Vec<PrincipalId>,
}

/// One entry of `GET /v1/instances`.
#[derive(Debug, Serialize, Deserialize)]
pub struct InstanceView {
    /// The instance's id.
    pub id: PrincipalId,
    /// The X25519 public key (32 bytes; base64 in JSON).
    #[serde(with = "b64")]
    pub public_key: Vec<u8>,
    /// The public key's fingerprint (protocol §4), hex.
    pub witness: String,
    /// Unix seconds: when it was added.
    pub created_at: i64,
    /// Whether it has a live MQTT session now.
    pub online: bool,
    /// The owner's escrow copy of the instance bundle (base64), if it has one.
    pub owner_copy: Option<String>,
    /// The owner's key was replaced by a reset: re-enrol this instance.
    #[serde(default)]
    pub stale_owner_key: bool,
    /// Unix seconds: now while online, else when its last session ended; None if it never
    /// connected.
    #[serde(default)]
    pub last_seen: Option<i64>,
}

/// `GET /v1/instances`.
#[derive(Debug, Serialize, Deserialize)]
pub struct InstanceList {
    /// The caller's instances.
    pub instances: Vec<InstanceView>,
}

/// `GET /v1/principals/{id}/key`.
#[derive(Debug, Serialize, Deserialize)]
pub struct PublicKeyView {
    /// The principal's id.
    pub id: PrincipalId,
    /// User or instance.
    pub kind: PrincipalKind,
    /// The X25519 public key (32 bytes; base64 in JSON).
    #[serde(with = "b64")]
    pub public_key: Vec<u8>,
    /// The public key's fingerprint (protocol §4), hex.
    pub witness: String,
}

/// The answer to the operator's `POST /v1/admin/invites`: a one-time invite code, shown once.
#[derive(Debug, Serialize, Deserialize)]
pub struct AdminInvite {
    /// The one-time invite code (shown once).
    pub invite: SecretText,
    /// Unix seconds: until when it is valid or kept.
    pub expires_at: i64,
}

/// The answer to the operator's `POST /v1/admin/users/{name}/reset`: the code, shown once.
#[derive(Debug, Serialize, Deserialize)]
pub struct AdminReset {
    /// The user's id.
    pub user_id: PrincipalId,
    /// The one-time reset code (shown once): hand it to the user.
    pub reset_code: SecretText,
    /// Unix seconds: until when it is valid or kept.
    pub expires_at: i64,
}

/// One account in the operator's `GET /v1/admin/users`.
#[derive(Debug, Serialize, Deserialize)]
pub struct AdminUser {
    /// The principal's id.
    pub id: PrincipalId,
    /// The user's name.
    pub name: String,
    /// Unix seconds: when it was created.
    pub created_at: i64,
    /// When its last MQTT session ended (unix seconds); `None` if it never connected.
    pub last_seen: Option<i64>,
    /// How many instances it owns.
    pub instances: u64,
    /// Whether it has a live MQTT session now.
    pub online: bool,
}

/// `GET /v1/admin/users`.
#[derive(Debug, Serialize, Deserialize)]
pub struct AdminUsers {
    /// Every user account, by name.
    pub users: Vec<AdminUser>,
}

/// One live MQTT session in the operator's `GET /v1/admin/sessions`. Metadata only.
#[derive(Debug, Serialize, Deserialize)]
pub struct AdminSession {
    /// The principal the session logged in as.
    pub principal: PrincipalId,
    /// The user's name, or an instance's id (its login).
    pub login: String,
    /// User or instance.
    pub kind: PrincipalKind,
    /// The MQTT client id.
    pub client_id: String,
    /// `tcp`, `tls`, `ws` or `wss`.
    pub transport: String,
    /// The client's address, per the broker's `accounting.ip_mode`.
    pub ip: String,
    /// Unix seconds.
    pub since: i64,
    /// Envelope bytes from the client.
    pub bytes_in: u64,
    /// Envelope bytes to the client.
    pub bytes_out: u64,
    /// Envelopes from the client.
    pub messages_in: u64,
    /// Envelopes to the client.
    pub messages_out: u64,
}

/// `GET /v1/admin/sessions`.
#[derive(Debug, Serialize, Deserialize)]
pub struct AdminSessions {
    /// Every live MQTT session, oldest first.
    pub sessions: Vec<AdminSession>,
}

/// `POST /v1/admin/principals/{id}/kick`: how many live sessions were told to close.
#[derive(Debug, Serialize, Deserialize)]
pub struct AdminKicked {
    /// The principal whose sessions were closed.
    pub principal: PrincipalId,
    /// How many sessions were closed on the node that answered.
    pub closed: u64,
}

/// `POST /v1/admin/logins/{name}/unlock`: whether a failed-login lockout was cleared.
#[derive(Debug, Serialize, Deserialize)]
pub struct AdminUnlocked {
    /// The login whose windows were cleared.
    pub login: String,
    /// Whether any of them had locked it.
    pub was_locked: bool,
}

/// One session of `GET /v1/admin/principals/{id}/session-log` and of an activity report.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AdminSessionRecord {
    /// Per the broker's `accounting.ip_mode`: the address, its network, or `-`.
    pub ip: String,
    /// `tcp`, `tls`, `ws` or `wss`; `null` on rows recorded before it was.
    #[serde(default)]
    pub transport: Option<String>,
    /// `3.1.1` or `5.0`; `null` on rows recorded before it was.
    #[serde(default)]
    pub protocol_version: Option<String>,
    /// The MQTT client id; `null` on rows recorded before it was.
    #[serde(default)]
    pub client_id: Option<String>,
    /// Unix seconds: when it connected.
    pub connected_at: i64,
    /// When it closed; while `close_reason` is `live`, its last checkpoint.
    pub disconnected_at: i64,
    /// What it counted, each way.
    #[serde(flatten)]
    pub traffic: Traffic,
    /// `live` while it lasts; `unclean_shutdown` when its node stopped without closing it.
    pub close_reason: String,
    /// How many sessions this row stands for: 1, or more for short sessions summed per
    /// address, close reason and hour (`accounting.aggregate_below_secs`); the times then
    /// span from the first connect to the last disconnect.
    #[serde(default = "one")]
    pub sessions: u64,
}

fn one() -> u64 {
    1
}

/// `GET /v1/admin/principals/{id}/session-log?since=<unix seconds>`: newest first.
#[derive(Debug, Serialize, Deserialize)]
pub struct AdminSessionLog {
    /// The principal asked about.
    pub principal: PrincipalId,
    /// Its sessions, live and closed, newest first.
    pub sessions: Vec<AdminSessionRecord>,
}

/// What a session or an hour counted, each way (`_in`: from the client): envelopes and
/// their bytes, and the MQTT bytes the connection carried (after TLS, inside WebSocket
/// frames). Counts only grow.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Traffic {
    /// Envelope bytes from the client.
    pub bytes_in: u64,
    /// Envelope bytes to the client.
    pub bytes_out: u64,
    /// Envelopes from the client.
    pub messages_in: u64,
    /// Envelopes to the client.
    pub messages_out: u64,
    /// MQTT bytes from the client (after TLS, inside WebSocket frames).
    pub wire_bytes_in: u64,
    /// MQTT bytes to the client (after TLS, inside WebSocket frames).
    pub wire_bytes_out: u64,
}

impl Traffic {
    /// What was counted since `earlier`.
    pub fn since(self, earlier: Traffic) -> Traffic {
        Traffic {
            bytes_in: self.bytes_in - earlier.bytes_in,
            bytes_out: self.bytes_out - earlier.bytes_out,
            messages_in: self.messages_in - earlier.messages_in,
            messages_out: self.messages_out - earlier.messages_out,
            wire_bytes_in: self.wire_bytes_in - earlier.wire_bytes_in,
            wire_bytes_out: self.wire_bytes_out - earlier.wire_bytes_out,
        }
    }

    /// Adds what `more` counted.
    pub fn add(&mut self, more: Traffic) {
        self.bytes_in += more.bytes_in;
        self.bytes_out += more.bytes_out;
        self.messages_in += more.messages_in;
        self.messages_out += more.messages_out;
        self.wire_bytes_in += more.wire_bytes_in;
        self.wire_bytes_out += more.wire_bytes_out;
    }
}

/// One principal's counts in one hour (`usage` of [`PrincipalActivity`]).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UsageRecord {
    /// Unix seconds at the start of the hour.
    pub hour_start: i64,
    /// Sessions opened in the hour.
    pub sessions: u64,
    /// What it counted, each way.
    #[serde(flatten)]
    pub traffic: Traffic,
}

/// Failed logins against one principal in one hour from one address.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LoginFailureRecord {
    /// Unix seconds at the start of the hour.
    pub hour_start: i64,
    /// Per the broker's `accounting.ip_mode`.
    pub ip: String,
    /// `denied` (wrong secret) or `rate_limited` (refused before it was checked).
    pub reason: String,
    /// How many failed in the hour.
    pub failures: u64,
    /// Unix seconds: the last of them.
    pub last_at: i64,
}

/// A value the server stores and cannot read (a wrapped key, a verifier, a sealed
/// keyring): shown by its column, size and SHA-256, never its bytes.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StoredBlob {
    /// What the value is (the table column it is kept in).
    pub column: String,
    /// Its size in bytes.
    pub bytes: u64,
    /// Hex SHA-256 of the stored bytes: a client compares it with its own copy.
    pub sha256: String,
}

/// Everything the server holds about one principal.
#[derive(Debug, Serialize, Deserialize)]
pub struct PrincipalActivity {
    /// The principal's id.
    pub id: PrincipalId,
    /// User or instance.
    pub kind: PrincipalKind,
    /// What it logs in as: the user's name, or the instance's id.
    pub login: String,
    /// The X25519 public key (32 bytes; base64 in JSON).
    #[serde(with = "b64")]
    pub public_key: Vec<u8>,
    /// The public key's fingerprint (protocol §4), hex.
    pub witness: String,
    /// Users only: the KDF parameters the wrapped key was made with (salt as a blob).
    #[serde(default)]
    pub kdf: Option<KdfParams>,
    /// The values the server keeps for it and cannot read, by size and hash.
    pub stored: Vec<StoredBlob>,
    /// Its keyring's version (users; 0 for none).
    pub keyring_version: u64,
    /// Unix seconds: when it was created.
    pub created_at: i64,
    /// When the wrapped key and verifier were last replaced; `null`: never.
    pub changed_at: Option<i64>,
    /// When its last session closed; `null`: never.
    pub last_seen: Option<i64>,
    /// Sessions, live and closed, newest first.
    pub sessions: Vec<AdminSessionRecord>,
    /// Counts per hour, newest first.
    pub usage: Vec<UsageRecord>,
    /// Failed logins against it, per hour and address.
    pub login_failures: Vec<LoginFailureRecord>,
}

/// One pairing of [`Activity`].
#[derive(Debug, Serialize, Deserialize)]
pub struct PairingActivity {
    /// The owner.
    pub user: PrincipalId,
    /// The instance.
    pub instance: PrincipalId,
    /// Unix seconds: when the instance was added.
    pub created_at: i64,
    /// The owner's escrow copy of the instance's bundle, if kept.
    #[serde(default)]
    pub owner_copy: Option<StoredBlob>,
    /// Set when a reset replaced the user's key and the instance must be re-enrolled.
    pub stale_owner_key: bool,
}

/// Other rows kept about a user for a while: replaced password material (for a rollback)
/// and a pending reset code, each by what it is and until when.
#[derive(Debug, Serialize, Deserialize)]
pub struct HeldUntil {
    /// What it is: `previous_password` (for a rollback) or `reset_code`.
    pub what: String,
    /// Its values, by size and hash.
    pub stored: Vec<StoredBlob>,
    /// Unix seconds: when it is deleted.
    pub expires_at: i64,
}

/// `GET /v1/me/activity` and `GET /v1/admin/principals/{id}/activity`: everything the
/// server holds about a principal and, for a user, the instances it is paired with.
#[derive(Debug, Serialize, Deserialize)]
pub struct Activity {
    /// Unix seconds: when the report was made.
    pub generated_at: i64,
    /// Records from this time on (unix seconds; `?since=`, default the retention period).
    pub since: i64,
    /// The principal asked about first, then its paired instances.
    pub principals: Vec<PrincipalActivity>,
    /// The user–instance pairings among them.
    pub pairings: Vec<PairingActivity>,
    /// Rows kept for a while: replaced password material, a pending reset code.
    pub held: Vec<HeldUntil>,
}

/// Every 4xx and 5xx answer: a stable machine-readable code and a sentence for people.
#[derive(Debug, Serialize, Deserialize)]
pub struct ErrorBody {
    /// The stable code (docs/http-api.md, Errors).
    pub error: String,
    /// A sentence for people, naming what to do.
    pub message: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_serialise_as_plain_strings_and_never_debug_print() {
        let body = RotateTokenRequest {
            wrapped_key: vec![1, 2, 3],
            auth_secret: "s3cret-value".into(),
        };
        let json = serde_json::to_string(&body).unwrap();
        assert_eq!(
            json,
            r#"{"wrapped_key":"AQID","auth_secret":"s3cret-value"}"#
        );
        assert!(!format!("{body:?}").contains("s3cret"));
        let back: RotateTokenRequest = serde_json::from_str(&json).unwrap();
        assert_eq!(back.auth_secret.expose(), "s3cret-value");
    }

    #[test]
    fn an_add_request_is_an_enrolment_plus_the_id_at_top_level() {
        let id = PrincipalId([7; 16]);
        let enrolment = Enrolment {
            public_key: vec![0; 32],
            wrapped_key: vec![1],
            auth_secret: "x".into(),
            owner_copy: vec![2],
            keyring: None,
        };
        let mut expected = serde_json::to_value(&enrolment).unwrap();
        expected["instance_id"] = id.to_string().into();
        let request = AddInstanceRequest::new(id, enrolment);
        assert_eq!(serde_json::to_value(&request).unwrap(), expected);
        let (back_id, back) = request.into_parts();
        assert_eq!((back_id, back.owner_copy), (id, vec![2]));
    }
}
