//! The client SDK: register and log in (keys derived and unwrapped locally), add
//! instances, then exchange sealed envelopes over MQTT. The CLI and the load tests are
//! built on it; a console or an instance embeds it.
//!
//! ```no_run
//! # async fn demo() -> Result<(), sealrelay::client::ClientError> {
//! use sealrelay::client::{Api, Client, Identity, MqttVersion};
//! let api = Api::new("http://127.0.0.1:8080");
//! let mut me = Identity::login_user(&api, "alice", "correct horse").await?;
//! let (instance, token) = me.add_instance(&api).await?;
//! // …hand `token.reveal()` to the instance, which runs `Client::serve`…
//! let mut console = Client::connect(api, me, "127.0.0.1:1883", MqttVersion::V5).await?;
//! let reply = console.request(instance, b"status?", std::time::Duration::from_secs(10)).await?;
//! # Ok(()) }
//! ```

mod api;
mod link;

use std::collections::HashMap;
use std::time::Duration;

use crypto_box::{PublicKey, SecretKey};
use rand_core::OsRng;
use zeroize::Zeroizing;

pub use api::{
    AddInstanceRequest, AdminReset, Api, ChangePasswordRequest, Enrolment, InstanceView,
    KeyringBody, Login, Me, PublicKeyView, RegisterRequest, ResetDone, ResetRequest,
    RotateTokenRequest,
};
pub use link::{Link, MqttVersion};

use crate::crypto::{
    self, Bundle, CryptoError, DerivedKeys, Keyring, OpenError, ReplayGuard, Token,
};
use crate::envelope::{Kind, Witness};
use crate::protocol::{b64, KdfParams, KdfSpec, PrincipalId, PrincipalKind, ResetCode};

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("server answered {status} {code}: {message}")]
    Api {
        status: u16,
        code: String,
        message: String,
    },
    #[error("cannot reach the server: {0}")]
    Transport(String),
    #[error("MQTT: {0}")]
    Mqtt(String),
    /// The broker refused the login (CONNACK): retrying will not help.
    #[error("the broker refused the connection: {0}")]
    Refused(String),
    #[error(transparent)]
    Crypto(#[from] CryptoError),
    #[error(transparent)]
    Open(#[from] OpenError),
    #[error("the server sent a key that is not 32 bytes for {0}")]
    BadKey(PrincipalId),
    #[error("no reply from {0} within {1:?}")]
    Timeout(PrincipalId, Duration),
    /// The directory's key for a peer is not the one pinned: refused, never used.
    #[error("the server's key for {peer} (witness {served}) is not the key pinned for it (witness {pinned}); refusing it. Either the server is substituting keys, or {peer}'s key was replaced (a password reset or a re-enrolment): compare witnesses out of band before trusting the new key")]
    PinMismatch {
        peer: PrincipalId,
        pinned: Witness,
        served: Witness,
    },
    #[error("{0} is not in your keyring, so the server's word alone cannot vouch for its key: it was not added from this account, or the server served an old keyring. Compare its witness out of band and pin it (`sealrelay instance pin`), or re-enrol it")]
    NotPinned(PrincipalId),
    #[error("the server served keyring version {served}, older than version {seen} already seen for this key: refusing a rolled-back keyring")]
    KeyringRollback { seen: u64, served: u64 },
    #[error("{0}")]
    Usage(String),
}

/// A logged-in principal: its id, its private key (unwrapped locally), the login secret,
/// and for an instance the owner key pinned inside its token-wrapped bundle.
pub struct Identity {
    pub id: PrincipalId,
    pub login: String,
    pub kind: PrincipalKind,
    secret: SecretKey,
    auth_secret: Zeroizing<String>,
    /// An instance's owner and the owner's key as the owner saw it when adding it.
    pub owner: Option<(PrincipalId, PublicKey)>,
    /// The peer keys this principal trusts first-hand: a user's sealed keyring from the
    /// server; an instance's owner, from inside its token-wrapped bundle.
    keyring: Keyring,
}

/// An operation that pins a peer key and must write the keyring with it, atomically.
enum PinWrite {
    Add(AddInstanceRequest),
    Reenrol(PrincipalId, Enrolment),
    KeyringOnly,
}

fn key_of(id: PrincipalId, bytes: &[u8]) -> Result<PublicKey, ClientError> {
    PublicKey::from_slice(bytes).map_err(|_| ClientError::BadKey(id))
}

/// The keyring `me` carries, opened with this principal's key; no keyring is an empty one
/// only while the server says none was ever written.
fn open_keyring(me: &Me, secret: &SecretKey) -> Result<Keyring, ClientError> {
    let bad = |what| ClientError::Crypto(CryptoError::KeyringFormat(what));
    let Some(text) = &me.keyring else {
        return match me.keyring_version {
            0 => Ok(Keyring::default()),
            _ => Err(bad(
                "the server states a keyring version but sent no keyring",
            )),
        };
    };
    let sealed = b64::decode(text).ok_or(bad("not base64"))?;
    let ring = Keyring::open(me.id, secret, &sealed)?;
    if ring.version != me.keyring_version {
        return Err(bad("the version the server states is not the sealed one"));
    }
    Ok(ring)
}

/// A user's private key wrapped under keys from a password with a fresh salt, and what
/// the server is sent with it.
struct WrappedUserKey {
    kdf: KdfSpec,
    wrapped_key: Vec<u8>,
    auth_secret: Zeroizing<String>,
}

async fn wrap_user_key(
    id: PrincipalId,
    secret: &SecretKey,
    password: &str,
    params: KdfParams,
) -> Result<WrappedUserKey, ClientError> {
    let kdf = KdfSpec {
        salt: crypto::random_salt().to_vec(),
        params,
    };
    let keys = derive(password, &kdf).await?;
    let bundle = Bundle::User {
        secret: secret.clone(),
    }
    .encode();
    Ok(WrappedUserKey {
        wrapped_key: keys.wrap(id, &bundle),
        auth_secret: keys.auth_secret(),
        kdf,
    })
}

/// A keyring version `served` is acceptable after `seen` only if it is not older.
fn not_rolled_back(seen: u64, served: u64) -> Result<(), ClientError> {
    if served < seen {
        return Err(ClientError::KeyringRollback { seen, served });
    }
    Ok(())
}

/// Argon2id is deliberately slow; keep it off the async workers.
async fn derive(password: &str, spec: &KdfSpec) -> Result<DerivedKeys, ClientError> {
    let password = Zeroizing::new(password.to_owned());
    let (salt, params) = (spec.salt.clone(), spec.params);
    tokio::task::spawn_blocking(move || crypto::derive_from_password(&password, &salt, params))
        .await
        .map_err(|e| ClientError::Usage(format!("key derivation task failed: {e}")))?
        .map_err(ClientError::from)
}

impl Identity {
    pub fn public_key(&self) -> PublicKey {
        self.secret.public_key()
    }

    pub fn witness(&self) -> Witness {
        Witness::of(self.public_key().as_bytes())
    }

    /// The login secret derived from the password or token: the MQTT password and the
    /// HTTP Basic password. It opens nothing, but it logs in: keep it like a session key.
    pub fn auth_secret(&self) -> &str {
        &self.auth_secret
    }

    fn api_login(&self) -> Login<'_> {
        Login {
            login: &self.login,
            secret: &self.auth_secret,
        }
    }

    /// Creates a user: a fresh key pair, wrapped under a key from `password`; the server
    /// receives the public key, the wrapped key, the salt and the auth secret only.
    pub async fn register_user(
        api: &Api,
        name: &str,
        password: &str,
        params: KdfParams,
    ) -> Result<Identity, ClientError> {
        let id = PrincipalId::random();
        let secret = SecretKey::generate(&mut OsRng);
        let wrapped = wrap_user_key(id, &secret, password, params).await?;
        api.register(RegisterRequest {
            name,
            user_id: id,
            public_key: secret.public_key().as_bytes().to_vec(),
            wrapped_key: wrapped.wrapped_key,
            auth_secret: &wrapped.auth_secret,
            kdf: wrapped.kdf,
        })
        .await?;
        Ok(Identity::new_user(id, name, secret, wrapped.auth_secret))
    }

    /// A user with a key pair just made here: nothing pinned yet.
    fn new_user(
        id: PrincipalId,
        name: &str,
        secret: SecretKey,
        auth_secret: Zeroizing<String>,
    ) -> Identity {
        Identity {
            id,
            login: name.to_owned(),
            kind: PrincipalKind::User,
            secret,
            auth_secret,
            owner: None,
            keyring: Keyring::default(),
        }
    }

    /// Completes an operator-issued password reset: a *new* key pair, wrapped under a key
    /// from `new_password`, replaces the old one. What was sealed to the old key can no
    /// longer be opened (opening it reports [`OpenError::StaleKey`]); the keyring, sealed
    /// under the old key, starts empty; the returned instances pin the old key and must be
    /// re-enrolled ([`Identity::reenrol_instance`]).
    pub async fn complete_reset(
        api: &Api,
        name: &str,
        code: &ResetCode,
        new_password: &str,
        params: KdfParams,
    ) -> Result<(Identity, Vec<PrincipalId>), ClientError> {
        let secret = SecretKey::generate(&mut OsRng);
        let wrapped = wrap_user_key(code.user, &secret, new_password, params).await?;
        let done = api
            .complete_reset(ResetRequest {
                name,
                reset_code: &code.reveal(),
                public_key: secret.public_key().as_bytes().to_vec(),
                wrapped_key: wrapped.wrapped_key,
                auth_secret: &wrapped.auth_secret,
                kdf: wrapped.kdf,
            })
            .await?;
        let me = Identity::new_user(done.id, name, secret, wrapped.auth_secret);
        Ok((me, done.stale_instances))
    }

    /// Logs a user in: prelogin for salt and parameters, derive, fetch and unwrap the key.
    pub async fn login_user(
        api: &Api,
        name: &str,
        password: &str,
    ) -> Result<Identity, ClientError> {
        let spec = api.prelogin(name).await?;
        let keys = derive(password, &spec).await?;
        let auth_secret = keys.auth_secret();
        Self::unlock(api, name, keys, auth_secret).await
    }

    /// Logs an instance in with its token.
    pub async fn login_instance(api: &Api, token: &Token) -> Result<Identity, ClientError> {
        let keys = token.keys();
        let auth_secret = keys.auth_secret();
        Self::unlock(api, &token.instance.to_string(), keys, auth_secret).await
    }

    async fn unlock(
        api: &Api,
        login: &str,
        keys: DerivedKeys,
        auth_secret: Zeroizing<String>,
    ) -> Result<Identity, ClientError> {
        let me = api
            .me(Login {
                login,
                secret: &auth_secret,
            })
            .await?;
        let bundle = Bundle::decode(&keys.unwrap(me.id, &me.wrapped_key)?)?;
        let (secret, owner) = match bundle {
            Bundle::User { secret } => (secret, None),
            Bundle::Instance {
                secret,
                owner,
                owner_public,
            } => (secret, Some((owner, owner_public))),
        };
        if secret.public_key().as_bytes()[..] != me.public_key[..] {
            // The stored public key does not belong to the key we just unwrapped.
            return Err(ClientError::BadKey(me.id));
        }
        let keyring = match &owner {
            Some((owner, owner_public)) => {
                let mut ring = Keyring::default();
                ring.pin(*owner, owner_public);
                ring
            }
            None => open_keyring(&me, &secret)?,
        };
        Ok(Identity {
            id: me.id,
            login: login.to_owned(),
            kind: me.kind,
            secret,
            auth_secret,
            owner,
            keyring,
        })
    }

    /// The version of the keyring this identity holds. A client that persists it between
    /// runs passes it to [`Identity::require_keyring_version`] after the next login, which
    /// turns a rolled-back keyring into an error.
    pub fn keyring_version(&self) -> u64 {
        self.keyring.version
    }

    /// Refuses a keyring older than `seen` (a version this client saw for this key before).
    pub fn require_keyring_version(&self, seen: u64) -> Result<(), ClientError> {
        not_rolled_back(seen, self.keyring.version)
    }

    /// The key pinned for `peer`, if any.
    pub fn pinned(&self, peer: PrincipalId) -> Option<PublicKey> {
        self.keyring.get(peer)
    }

    /// Accepts a key the directory served for `peer` only if it is the pinned one.
    pub fn check_served_key(
        &self,
        peer: PrincipalId,
        served: &[u8],
    ) -> Result<PublicKey, ClientError> {
        let served = key_of(peer, served)?;
        match self.keyring.get(peer) {
            Some(pinned) if pinned == served => Ok(pinned),
            Some(pinned) => Err(ClientError::PinMismatch {
                peer,
                pinned: Witness::of(pinned.as_bytes()),
                served: Witness::of(served.as_bytes()),
            }),
            None => Err(ClientError::NotPinned(peer)),
        }
    }

    /// Re-reads the keyring from the server (after another console changed it); a version
    /// older than the one held is a rollback.
    pub async fn refresh_keyring(&mut self, api: &Api) -> Result<(), ClientError> {
        let me = api.me(self.api_login()).await?;
        if me.public_key[..] != self.public_key().as_bytes()[..] {
            return Err(ClientError::BadKey(self.id));
        }
        let ring = open_keyring(&me, &self.secret)?;
        not_rolled_back(self.keyring.version, ring.version)?;
        self.keyring = ring;
        Ok(())
    }

    /// Applies `change` to a new keyring version and writes it with `op`; when another
    /// console wrote the keyring meanwhile, re-reads it and applies `change` again.
    async fn write_keyring(
        &mut self,
        api: &Api,
        change: impl Fn(&mut Keyring),
        mut op: PinWrite,
    ) -> Result<(), ClientError> {
        let mut attempts = 0;
        loop {
            let mut ring = self.keyring.clone();
            change(&mut ring);
            ring.version += 1;
            let body = KeyringBody {
                version: ring.version,
                keyring: ring.seal(self.id, &self.secret),
            };
            let login = Login {
                login: &self.login,
                secret: &self.auth_secret,
            };
            let result = match &mut op {
                PinWrite::Add(request) => {
                    request.enrolment.keyring = Some(body);
                    api.add_instance(login, request).await
                }
                PinWrite::Reenrol(id, enrolment) => {
                    enrolment.keyring = Some(body);
                    api.reenrol_instance(login, *id, enrolment).await
                }
                PinWrite::KeyringOnly => api.put_keyring(login, body).await,
            };
            match result {
                Ok(()) => {
                    self.keyring = ring;
                    return Ok(());
                }
                Err(ClientError::Api {
                    status: 409, code, ..
                }) if code == "keyring_conflict" && attempts < 3 => {
                    attempts += 1;
                    self.refresh_keyring(api).await?;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Pins the directory's current key for one of this user's instances after the caller
    /// compared its witness with the one the instance shows (`sealrelay agent` prints it):
    /// for instances enrolled before keyrings existed, or enrolled from another account.
    pub async fn pin_instance(
        &mut self,
        api: &Api,
        id: PrincipalId,
        witness: Witness,
    ) -> Result<(), ClientError> {
        let view = api.public_key(self.api_login(), id).await?;
        let served = key_of(id, &view.public_key)?;
        if Witness::of(served.as_bytes()) != witness {
            return Err(ClientError::PinMismatch {
                peer: id,
                pinned: witness,
                served: Witness::of(served.as_bytes()),
            });
        }
        self.write_keyring(api, |ring| ring.pin(id, &served), PinWrite::KeyringOnly)
            .await
    }

    /// Creates an instance owned by this user: its key pair and token are made here; the
    /// server gets the public key, the token-wrapped bundle and the token's auth secret.
    /// The token is returned once and never stored.
    pub async fn add_instance(&mut self, api: &Api) -> Result<(PrincipalId, Token), ClientError> {
        let instance_id = PrincipalId::random();
        let (token, public, enrolment) = self.enrol(instance_id);
        let request = AddInstanceRequest {
            instance_id,
            enrolment,
        };
        // The key was made here: pin it, in the same transaction as the instance.
        self.write_keyring(
            api,
            |ring| ring.pin(instance_id, &public),
            PinWrite::Add(request),
        )
        .await?;
        Ok((instance_id, token))
    }

    /// Gives one of this user's instances a new key pair and token: after this user's
    /// password reset (the instance's bundle pins the old user key) or when the instance's
    /// host can no longer be trusted. The new bundle pins this user's current key, the new
    /// key is pinned in the keyring, the old token dies and the instance is disconnected.
    pub async fn reenrol_instance(
        &mut self,
        api: &Api,
        id: PrincipalId,
    ) -> Result<Token, ClientError> {
        let (token, public, enrolment) = self.enrol(id);
        self.write_keyring(
            api,
            |ring| ring.pin(id, &public),
            PinWrite::Reenrol(id, enrolment),
        )
        .await?;
        Ok(token)
    }

    /// A new key pair and token for instance `id`: its bundle (pinning this user as owner)
    /// wrapped under the token and, as this user's escrow copy, under this user's key.
    fn enrol(&self, id: PrincipalId) -> (Token, PublicKey, Enrolment) {
        let token = Token::generate(id);
        let keys = token.keys();
        let secret = SecretKey::generate(&mut OsRng);
        let encoded = Bundle::Instance {
            secret: secret.clone(),
            owner: self.id,
            owner_public: self.public_key(),
        }
        .encode();
        let enrolment = Enrolment {
            public_key: secret.public_key().as_bytes().to_vec(),
            wrapped_key: keys.wrap(id, &encoded),
            auth_secret: keys.auth_secret(),
            owner_copy: crypto::escrow_keys(&self.secret).wrap(id, &encoded),
            keyring: None,
        };
        (token, secret.public_key(), enrolment)
    }

    /// Changes a user's password: the *same* private key is re-wrapped under a key from
    /// `new_password` with a fresh salt and `params`, so everything sealed to it still opens.
    /// The server checks the old login secret, swaps everything at once and closes the
    /// user's live sessions; from then on only the new password works.
    pub async fn change_password(
        &mut self,
        api: &Api,
        new_password: &str,
        params: KdfParams,
    ) -> Result<(), ClientError> {
        if self.kind != PrincipalKind::User {
            return Err(ClientError::Usage(
                "only a user has a password; instances rotate their token".into(),
            ));
        }
        let wrapped = wrap_user_key(self.id, &self.secret, new_password, params).await?;
        api.change_password(
            self.api_login(),
            ChangePasswordRequest {
                wrapped_key: wrapped.wrapped_key,
                auth_secret: &wrapped.auth_secret,
                kdf: wrapped.kdf,
            },
        )
        .await?;
        self.auth_secret = wrapped.auth_secret;
        Ok(())
    }

    /// The KDF parameters the server recommends for this user now.
    pub async fn recommended_kdf(&self, api: &Api) -> Result<Option<KdfParams>, ClientError> {
        Ok(api.me(self.api_login()).await?.kdf_recommended)
    }

    /// Seals `payload` from this principal to `to` (sender-authenticated) without sending.
    pub fn seal_to(
        &self,
        to: PrincipalId,
        key: &PublicKey,
        payload: &[u8],
    ) -> Result<bytes::Bytes, ClientError> {
        Ok(self.sealer_to(to, key).seal(payload)?)
    }

    /// A sealer for many envelopes to one peer (the key exchange is done once), for callers
    /// that publish through their own MQTT client, like the load tests.
    pub fn sealer_to(&self, to: PrincipalId, key: &PublicKey) -> crypto::Sealer {
        crypto::Sealer::new(self.id, &self.secret, to, key)
    }

    /// Gives one of this user's instances a new token: the instance's bundle is recovered from
    /// this user's escrow copy, checked (it must name this user as owner and hold the key
    /// matching the instance's public key), and re-wrapped under the new token. The old token
    /// stops working at once and the instance's live sessions are closed.
    pub async fn rotate_token(&self, api: &Api, id: PrincipalId) -> Result<Token, ClientError> {
        let view = self
            .instances(api)
            .await?
            .into_iter()
            .find(|i| i.id == id)
            .ok_or_else(|| ClientError::Usage(format!("{id} is not one of your instances")))?;
        let copy = view
            .owner_copy
            .and_then(|c| crate::protocol::b64::decode(&c))
            .ok_or_else(|| {
                ClientError::Usage(format!("instance {id} has no escrow copy: re-enrol it"))
            })?;
        let bundle = crypto::escrow_keys(&self.secret).unwrap(id, &copy)?;
        match Bundle::decode(&bundle)? {
            Bundle::Instance { secret, owner, .. }
                if owner == self.id
                    && secret.public_key().as_bytes()[..] == view.public_key[..] => {}
            _ => return Err(ClientError::BadKey(id)),
        }
        let token = Token::generate(id);
        let keys = token.keys();
        let auth_secret = keys.auth_secret();
        api.rotate_token(
            self.api_login(),
            id,
            RotateTokenRequest {
                wrapped_key: keys.wrap(id, &bundle),
                auth_secret: &auth_secret,
            },
        )
        .await?;
        Ok(token)
    }

    /// Deletes this user's account and every instance it owns: keys, verifiers and pairings
    /// are gone, all their live sessions are closed, and the name is free again.
    pub async fn delete_account(self, api: &Api) -> Result<(), ClientError> {
        if self.kind != PrincipalKind::User {
            return Err(ClientError::Usage(
                "only a user account can be deleted; instances are removed by their owner".into(),
            ));
        }
        api.delete_account(self.api_login()).await
    }

    /// Removes one of this user's instances: its token stops working and its live sessions
    /// are closed at once; then its pin leaves the keyring.
    pub async fn remove_instance(&mut self, api: &Api, id: PrincipalId) -> Result<(), ClientError> {
        api.remove_instance(self.api_login(), id).await?;
        if self.keyring.get(id).is_some() {
            self.write_keyring(
                api,
                |ring| {
                    ring.unpin(id);
                },
                PinWrite::KeyringOnly,
            )
            .await?;
        }
        Ok(())
    }

    pub async fn instances(&self, api: &Api) -> Result<Vec<InstanceView>, ClientError> {
        api.instances(self.api_login()).await
    }
}

/// An opened envelope and who sent it.
#[derive(Debug)]
pub struct Message {
    pub from: PrincipalId,
    pub authenticated: bool,
    pub payload: Zeroizing<Vec<u8>>,
}

/// A connected principal: seals to peers, opens what arrives, remembers peer keys.
pub struct Client {
    api: Api,
    identity: Identity,
    link: Link,
    broker: String,
    version: MqttVersion,
    /// Peer keys checked this session: pinned, and the directory agreed.
    verified: HashMap<PrincipalId, PublicKey>,
    replay: ReplayGuard,
}

impl Client {
    pub async fn connect(
        api: Api,
        identity: Identity,
        broker: &str,
        version: MqttVersion,
    ) -> Result<Client, ClientError> {
        let link = Self::link(&identity, broker, version).await?;
        let owner = identity.owner.as_ref().map(|(id, _)| *id);
        let mut client = Client {
            api,
            identity,
            link,
            broker: broker.to_owned(),
            version,
            verified: HashMap::new(),
            replay: ReplayGuard::default(),
        };
        if let Some(owner) = owner {
            // An instance checks its owner's key at once, so a replaced or substituted one
            // stops it at start-up with PinMismatch rather than at its first message.
            client.key_for(owner).await?;
        }
        Ok(client)
    }

    async fn link(
        identity: &Identity,
        broker: &str,
        version: MqttVersion,
    ) -> Result<Link, ClientError> {
        let client_id = format!(
            "{}-{}",
            identity.kind.as_str(),
            hex::encode(&PrincipalId::random().0[..6])
        );
        Link::connect(
            broker,
            version,
            &client_id,
            &identity.login,
            &identity.auth_secret,
            identity.id,
        )
        .await
    }

    /// Replaces a lost connection with a new one to the same broker, as the same principal.
    pub async fn reconnect(&mut self) -> Result<(), ClientError> {
        self.link = Self::link(&self.identity, &self.broker, self.version).await?;
        Ok(())
    }

    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    /// Disconnects cleanly (MQTT DISCONNECT) rather than dropping the socket.
    pub async fn close(self) {
        self.link.disconnect().await;
    }

    /// The key to seal to or verify `peer` with: the pinned one, and only once the
    /// directory agrees with it (a disagreement is refused, loudly, and never cached).
    async fn key_for(&mut self, peer: PrincipalId) -> Result<PublicKey, ClientError> {
        if let Some(key) = self.verified.get(&peer) {
            return Ok(key.clone());
        }
        if self.identity.pinned(peer).is_none() {
            return Err(ClientError::NotPinned(peer));
        }
        let view = self.api.public_key(self.identity.api_login(), peer).await?;
        let key = self.identity.check_served_key(peer, &view.public_key)?;
        self.verified.insert(peer, key.clone());
        Ok(key)
    }

    /// Seals `payload` to `to` (sender-authenticated) and publishes it.
    pub async fn send(
        &mut self,
        to: PrincipalId,
        payload: &[u8],
        qos: u8,
    ) -> Result<(), ClientError> {
        let key = self.key_for(to).await?;
        let envelope = self.identity.seal_to(to, &key, payload)?;
        self.link.publish(to, envelope, qos).await
    }

    /// Waits for the next envelope and opens it. An envelope that does not open is an
    /// `Err` for that envelope; the connection stays usable.
    pub async fn next(&mut self) -> Result<Message, ClientError> {
        let envelope = self.link.recv().await?;
        // Addressing and witness first: an envelope sealed to a replaced key is reported as
        // such, whoever its sender is.
        let header = crypto::addressed_to(self.identity.id, &self.identity.secret, &envelope)?;
        let sender_key = match header.kind {
            Kind::Authenticated => Some(self.key_for(header.sender).await?),
            Kind::Anonymous => None,
        };
        let opened = crypto::open(
            self.identity.id,
            &self.identity.secret,
            &envelope,
            sender_key.as_ref(),
            &mut self.replay,
        )?;
        Ok(Message {
            from: opened.sender,
            authenticated: opened.authenticated,
            payload: opened.payload,
        })
    }

    /// Sends `payload` to `to` and waits for its authenticated reply.
    pub async fn request(
        &mut self,
        to: PrincipalId,
        payload: &[u8],
        timeout: Duration,
    ) -> Result<Zeroizing<Vec<u8>>, ClientError> {
        self.send(to, payload, 1).await?;
        tokio::time::timeout(timeout, async {
            loop {
                match self.next().await {
                    Ok(m) if m.from == to && m.authenticated => return Ok(m.payload),
                    Ok(_) => continue,
                    Err(ClientError::Open(e)) => {
                        tracing::warn!(error = %e, "ignoring an envelope that does not open")
                    }
                    Err(e) => return Err(e),
                }
            }
        })
        .await
        .map_err(|_| ClientError::Timeout(to, timeout))?
    }

    /// Answers every authenticated envelope with `handler`'s reply, sealed back to its
    /// sender, until the connection ends. Envelopes that do not open are logged (never
    /// their content) and skipped; unauthenticated ones get no reply, since their sender
    /// is not proven.
    pub async fn serve<F>(&mut self, mut handler: F) -> Result<(), ClientError>
    where
        F: FnMut(&Message) -> Vec<u8>,
    {
        loop {
            let message = match self.next().await {
                Ok(m) => m,
                Err(ClientError::Open(e)) => {
                    tracing::warn!(error = %e, "skipping an envelope that does not open");
                    continue;
                }
                Err(ClientError::Api { status: 404, .. }) => {
                    tracing::warn!("skipping an envelope from a principal that is not paired");
                    continue;
                }
                Err(e @ (ClientError::PinMismatch { .. } | ClientError::NotPinned(_))) => {
                    tracing::error!(error = %e, "refusing an envelope from an untrusted key");
                    continue;
                }
                Err(e) => return Err(e),
            };
            if !message.authenticated {
                tracing::warn!(from = %message.from, "skipping an unauthenticated envelope");
                continue;
            }
            let reply = handler(&message);
            self.send(message.from, &reply, 1).await?;
        }
    }
}
