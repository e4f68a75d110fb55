//! sealrelay-client, the SDK: register and log in (keys derived and unwrapped locally),
//! add instances, then exchange sealed envelopes over MQTT. The CLI and the load tests are
//! built on it; a console or an instance embeds it.
//!
//! Modules by concern: [`crypto`] (KDF, bundles, keyring format, tokens, seal/open and the
//! replay guard), identity (registration, login, the owner's instance verbs), keyring
//! (pinning and rollback checks), messaging ([`Client`]), [`api`] (the HTTP API client) and
//! link (the MQTT connection). Depends on sealrelay-wire for everything on the wire and
//! never on the broker crate.
//!
//! A debug build of a program using this crate derives keys with an unoptimised Argon2id: one
//! login takes seconds instead of a fraction of one. Profile overrides are the consumer's to
//! set (cargo ignores a dependency's), so put in your own `Cargo.toml`:
//!
//! ```toml
//! [profile.dev.package.argon2]
//! opt-level = 3
//! [profile.dev.package.blake2]
//! opt-level = 3
//! [profile.dev.package.curve25519-dalek]
//! opt-level = 3
//! ```
//!
//! ```no_run
//! # async fn demo() -> Result<(), sealrelay_client::ClientError> {
//! use sealrelay_client::{Api, Client, Identity, MqttVersion};
//! let api = Api::new("http://127.0.0.1:8080");
//! let mut me = Identity::login_user(&api, "alice", "correct horse").await?;
//! let (instance, token) = me.add_instance(&api).await?;
//! // …hand `token.reveal()` to the instance, which runs `Client::serve`…
//! let mut console = Client::connect(api, me, "127.0.0.1:1883", MqttVersion::V5).await?;
//! let reply = console.request(instance, b"status?", std::time::Duration::from_secs(10)).await?;
//! # Ok(()) }
//! ```

#![warn(missing_docs)]

pub mod api;
pub mod crypto;
pub mod endpoint;
mod identity;
mod keyring;
mod link;
mod messaging;
pub mod password;

use std::time::Duration;

pub use api::{Api, Login};
pub use endpoint::Broker;
pub use identity::Identity;
pub use link::{puback_code, Link, MqttVersion, PublishRefusal};
pub use messaging::{Client, Message, Persistence};
// What a console or an agent names in its own code, so it needs no direct dependency on
// sealrelay-wire: ids, KDF parameters, witnesses, the directory's views.
pub use sealrelay_wire::api::{Activity, InstanceView};
pub use sealrelay_wire::envelope::Witness;
pub use sealrelay_wire::{KdfParams, PrincipalId, PrincipalKind};

use crypto::{CryptoError, OpenError};

/// Everything the SDK can fail with; each message names the thing and what to do.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The HTTP API refused a request (docs/http-api.md lists the codes).
    #[error("server answered {status} {code}: {message}")]
    Api {
        /// The HTTP status.
        status: u16,
        /// The API's error code (`error` in its JSON body).
        code: String,
        /// The API's sentence.
        message: String,
    },
    /// The HTTP API could not be reached or answered something unreadable.
    #[error("cannot reach the server: {0}")]
    Transport(String),
    /// The MQTT connection failed or broke.
    #[error("MQTT: {0}")]
    Mqtt(String),
    /// The broker refused the login (CONNACK): retrying will not help.
    #[error("the broker refused the connection: {0}")]
    Refused(String),
    /// The broker is full or is rate-limiting this login (CONNACK 0x97, 0x9F, 0x88, 0x89;
    /// 3.1.1: 3): the same login may succeed later.
    #[error("the broker turned the connection away for now (full, or too many attempts): {0}; retry later")]
    Busy(String),
    /// The broker refused one message (MQTT 5 PUBACK); the connection is still up.
    #[error("the broker refused the message to {to}: {why} (PUBACK 0x{code:02x})")]
    PublishRefused {
        /// The recipient the message was addressed to.
        to: PrincipalId,
        /// The PUBACK reason code.
        code: u8,
        /// The reason, in words.
        why: PublishRefusal,
    },
    /// Deriving, wrapping or sealing failed here.
    #[error(transparent)]
    Crypto(#[from] CryptoError),
    /// An envelope that arrived could not be opened.
    #[error(transparent)]
    Open(#[from] OpenError),
    /// The directory served a key of the wrong length.
    #[error("the server sent a key that is not 32 bytes for {0}")]
    BadKey(PrincipalId),
    /// No reply to a request within the time given.
    #[error("no reply from {0} within {1:?}: it is busy or disconnected (an instance with a persistent session, as `sealrelay agent` holds, gets the request when it is back, and answers then)")]
    Timeout(PrincipalId, Duration),
    /// The directory's key for a peer is not the one pinned: refused, never used.
    #[error("the server's key for {peer} (witness {served}) is not the key pinned for it (witness {pinned}); refusing it. Either the server is substituting keys, or {peer}'s key was replaced (a password reset or a re-enrolment): compare witnesses out of band before trusting the new key")]
    PinMismatch {
        /// The peer whose key it is.
        peer: PrincipalId,
        /// The witness of the pinned key.
        pinned: Witness,
        /// The witness of the key the directory served.
        served: Witness,
    },
    /// A peer that is not in the keyring: the directory's word alone is not trusted.
    #[error("{0} is not in your keyring, so the server's word alone cannot vouch for its key: it was not added from this account, or the server served an old keyring. Compare its witness out of band and pin it (`sealrelay instance pin`), or re-enrol it")]
    NotPinned(PrincipalId),
    #[error("the server served keyring version {served}, older than version {seen} already seen for this key: refusing a rolled-back keyring")]
    /// The server served an older keyring than this machine has seen: refused.
    KeyringRollback {
        /// The newest version seen before.
        seen: u64,
        /// The version served now.
        served: u64,
    },
    /// The caller asked for something this SDK cannot do; the message says what.
    #[error("{0}")]
    Usage(String),
    /// The API turned a user's login away. The server answers a wrong password and an unknown
    /// name alike, so the message cannot say which.
    #[error("wrong password for {login}, or no account by that name; if the password was changed or reset, log in with the new one (a forgotten password: ask the operator for a reset code)")]
    WrongPassword {
        /// The login that was refused.
        login: String,
    },
    /// The API turned an instance's token away.
    #[error("this token no longer logs in to instance {instance}: the instance was removed, or its token was rotated or re-enrolled; its owner makes a new one (`sealrelay instance rotate-token` or `reenrol`)")]
    TokenRefused {
        /// The instance whose token it was.
        instance: PrincipalId,
    },
    /// Too many failed logins: the broker refuses more for a while.
    #[error("too many failed logins for {login} or from this address: wait a minute, then retry")]
    TooManyFailures {
        /// The login that was tried.
        login: String,
    },
    /// `POST /v1/users/previous` refused: no change of password within the server's grace
    /// period, or not with that previous password (the server does not say which).
    #[error("no change of {login}'s password can be undone with that password: it is not the password before the last change, or the change is older than the server keeps (auth.previous_key_days)")]
    NothingToRollBack {
        /// The user's name.
        login: String,
    },
    /// The directory does not list `0` as a peer of the caller: a typo, or someone else's.
    #[error("no instance of yours has the id {0}: `sealrelay instance list` shows yours")]
    NotYours(PrincipalId),
    /// MQTT 5 PUBACK 0x10: the recipient has no session, live or persistent, so nothing was
    /// delivered or kept (a persistent session between connections keeps what is sent to it;
    /// protocol §5.6).
    #[error("{0} is not connected (the broker has no session for it), so nothing was delivered: start its agent, then retry")]
    Offline(PrincipalId),
}
