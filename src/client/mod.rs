//! The client SDK: register and log in (keys derived and unwrapped locally), add
//! instances, then exchange sealed envelopes over MQTT. The CLI and the load tests are
//! built on it; a console or an instance embeds it.
//!
//! ```no_run
//! # async fn demo() -> Result<(), sealrelay::client::ClientError> {
//! use sealrelay::client::{Api, Client, Identity, MqttVersion};
//! let api = Api::new("http://127.0.0.1:8080");
//! let me = Identity::login_user(&api, "alice", "correct horse").await?;
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
    AddInstanceRequest, Api, ChangePasswordRequest, InstanceView, Login, Me, PublicKeyView,
    RegisterRequest, RotateTokenRequest,
};
pub use link::{Link, MqttVersion};

use crate::crypto::{self, Bundle, CryptoError, DerivedKeys, OpenError, ReplayGuard, Token};
use crate::envelope::{Header, Witness};
use crate::protocol::{KdfParams, KdfSpec, PrincipalId, PrincipalKind};

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
}

fn key_of(id: PrincipalId, bytes: &[u8]) -> Result<PublicKey, ClientError> {
    PublicKey::from_slice(bytes).map_err(|_| ClientError::BadKey(id))
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
        let spec = KdfSpec {
            salt: crypto::random_salt().to_vec(),
            params,
        };
        let keys = derive(password, &spec).await?;
        let id = PrincipalId::random();
        let secret = SecretKey::generate(&mut OsRng);
        let wrapped = keys.wrap(
            id,
            &Bundle::User {
                secret: secret.clone(),
            }
            .encode(),
        );
        let auth_secret = keys.auth_secret();
        api.register(RegisterRequest {
            name,
            user_id: id,
            public_key: secret.public_key().as_bytes().to_vec(),
            wrapped_key: wrapped,
            auth_secret: &auth_secret,
            kdf: spec,
        })
        .await?;
        Ok(Identity {
            id,
            login: name.to_owned(),
            kind: PrincipalKind::User,
            secret,
            auth_secret,
            owner: None,
        })
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
        Ok(Identity {
            id: me.id,
            login: login.to_owned(),
            kind: me.kind,
            secret,
            auth_secret,
            owner,
        })
    }

    /// Creates an instance owned by this user: its key pair and token are made here; the
    /// server gets the public key, the token-wrapped bundle and the token's auth secret.
    /// The token is returned once and never stored.
    pub async fn add_instance(&self, api: &Api) -> Result<(PrincipalId, Token), ClientError> {
        let id = PrincipalId::random();
        let token = Token::generate(id);
        let keys = token.keys();
        let secret = SecretKey::generate(&mut OsRng);
        let bundle = Bundle::Instance {
            secret: secret.clone(),
            owner: self.id,
            owner_public: self.public_key(),
        };
        let auth_secret = keys.auth_secret();
        let encoded = bundle.encode();
        api.add_instance(
            self.api_login(),
            AddInstanceRequest {
                instance_id: id,
                public_key: secret.public_key().as_bytes().to_vec(),
                wrapped_key: keys.wrap(id, &encoded),
                auth_secret: &auth_secret,
                owner_copy: crypto::escrow_keys(&self.secret).wrap(id, &encoded),
            },
        )
        .await?;
        Ok((id, token))
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
        let spec = KdfSpec {
            salt: crypto::random_salt().to_vec(),
            params,
        };
        let keys = derive(new_password, &spec).await?;
        let wrapped_key = keys.wrap(
            self.id,
            &Bundle::User {
                secret: self.secret.clone(),
            }
            .encode(),
        );
        let auth_secret = keys.auth_secret();
        api.change_password(
            self.api_login(),
            ChangePasswordRequest {
                wrapped_key,
                auth_secret: &auth_secret,
                kdf: spec,
            },
        )
        .await?;
        self.auth_secret = auth_secret;
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
    /// are closed at once.
    pub async fn remove_instance(&self, api: &Api, id: PrincipalId) -> Result<(), ClientError> {
        api.remove_instance(self.api_login(), id).await
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
    keys: HashMap<PrincipalId, PublicKey>,
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
        let mut keys = HashMap::new();
        if let Some((owner, owner_key)) = &identity.owner {
            // Pinned: the owner's key came authenticated inside the token-wrapped bundle.
            keys.insert(*owner, owner_key.clone());
        }
        Ok(Client {
            api,
            identity,
            link,
            broker: broker.to_owned(),
            version,
            keys,
            replay: ReplayGuard::default(),
        })
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

    async fn key_for(&mut self, peer: PrincipalId) -> Result<PublicKey, ClientError> {
        if let Some(key) = self.keys.get(&peer) {
            return Ok(key.clone());
        }
        let view = self.api.public_key(self.identity.api_login(), peer).await?;
        let key = key_of(peer, &view.public_key)?;
        self.keys.insert(peer, key.clone());
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
        let header = Header::parse(&envelope).map_err(OpenError::from)?;
        let sender_key = match header.kind {
            crate::envelope::Kind::Authenticated => Some(self.key_for(header.sender).await?),
            crate::envelope::Kind::Anonymous => None,
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
