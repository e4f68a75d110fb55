//! Who a client is: registration, login (the key derived and unwrapped locally), reset,
//! change of password, and the owner's instance verbs (add, re-enrol, rotate, remove).
//! Uses the crypto module and the HTTP API client; never the MQTT link.

use crypto_box::{PublicKey, SecretKey};
use rand_core::OsRng;
use zeroize::Zeroizing;

use crate::api::{Api, Login};
use crate::crypto::{self, Bundle, DerivedKeys, Keyring, Token};
use crate::keyring::{open_keyring, PinWrite};
use crate::ClientError;
use sealrelay_wire::api::*;
use sealrelay_wire::envelope::Witness;
use sealrelay_wire::{KdfParams, KdfSpec, PrincipalId, PrincipalKind, ResetCode};

/// and for an instance the owner key pinned inside its token-wrapped bundle.
/// A logged-in principal: its id, its private key (unwrapped locally), the login secret,
/// and for an instance the owner key pinned inside its token-wrapped bundle.
pub struct Identity {
    /// The principal's id.
    pub id: PrincipalId,
    /// What it logs in as: the user's name, or the instance's id in hex.
    pub login: String,
    /// User or instance.
    pub kind: PrincipalKind,
    pub(crate) secret: SecretKey,
    pub(crate) auth_secret: Zeroizing<String>,
    /// An instance's owner and the owner's key as the owner saw it when adding it.
    pub owner: Option<(PrincipalId, PublicKey)>,
    /// The peer keys this principal trusts first-hand: a user's sealed keyring from the
    /// server; an instance's owner, from inside its token-wrapped bundle.
    pub(crate) keyring: Keyring,
}

pub(crate) fn key_of(id: PrincipalId, bytes: &[u8]) -> Result<PublicKey, ClientError> {
    PublicKey::from_slice(bytes).map_err(|_| ClientError::BadKey(id))
}

/// A user's private key wrapped under keys from a password with a fresh salt, and the
/// login secret derived with them (to keep for this session).
async fn wrap_user_key(
    id: PrincipalId,
    secret: &SecretKey,
    password: &str,
    params: KdfParams,
) -> Result<(PasswordWrap, Zeroizing<String>), ClientError> {
    let kdf = KdfSpec {
        salt: crypto::random_salt().to_vec(),
        params,
    };
    let keys = derive(password, &kdf).await?;
    let bundle = Bundle::User {
        secret: secret.clone(),
    }
    .encode();
    let auth_secret = keys.auth_secret();
    let wrap = PasswordWrap {
        wrapped_key: keys.wrap(id, &bundle),
        auth_secret: auth_secret.clone().into(),
        kdf,
        key_proof: Some(crypto::key_proof(secret).into()),
    };
    Ok((wrap, auth_secret))
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
    /// This principal's public key.
    pub fn public_key(&self) -> PublicKey {
        self.secret.public_key()
    }

    /// The fingerprint of this principal's public key (protocol §4), to compare out of band.
    pub fn witness(&self) -> Witness {
        Witness::of(self.public_key().as_bytes())
    }

    /// The login secret derived from the password or token: the MQTT password and the
    /// HTTP Basic password. It opens nothing, but it logs in: keep it like a session key.
    pub fn auth_secret(&self) -> &str {
        &self.auth_secret
    }

    /// The key proof (protocol §2.4): what authorises a change of this key's wrap. Only this
    /// key gives it; the server keeps its verifier.
    pub fn key_proof(&self) -> Zeroizing<String> {
        crypto::key_proof(&self.secret)
    }

    pub(crate) fn api_login(&self) -> Login<'_> {
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
        Self::register_invited(api, name, password, params, None).await
    }

    /// [`Identity::register_user`] on a server that creates accounts by invite: `invite` is
    /// the one-time code its operator gave.
    pub async fn register_invited(
        api: &Api,
        name: &str,
        password: &str,
        params: KdfParams,
        invite: Option<&str>,
    ) -> Result<Identity, ClientError> {
        let id = PrincipalId::random();
        let secret = SecretKey::generate(&mut OsRng);
        let (password, auth_secret) = wrap_user_key(id, &secret, password, params).await?;
        let public_key = secret.public_key().as_bytes().to_vec();
        let mut request = RegisterRequest::new(name.into(), id, public_key, password);
        request.invite = invite.map(Into::into);
        api.register(request).await?;
        Ok(Identity::new_user(id, name, secret, auth_secret))
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
    /// longer be opened (opening it reports [`crate::crypto::OpenError::StaleKey`]); the
    /// keyring, sealed under the old key, starts empty; the returned instances pin the old key
    /// and must be re-enrolled ([`Identity::reenrol_instance`]).
    pub async fn complete_reset(
        api: &Api,
        name: &str,
        code: &ResetCode,
        new_password: &str,
        params: KdfParams,
    ) -> Result<(Identity, Vec<PrincipalId>), ClientError> {
        let secret = SecretKey::generate(&mut OsRng);
        let (password, auth_secret) =
            wrap_user_key(code.user, &secret, new_password, params).await?;
        let public_key = secret.public_key().as_bytes().to_vec();
        let request = ResetRequest::new(name.into(), code.reveal().into(), public_key, password);
        let done = api.complete_reset(request).await?;
        let me = Identity::new_user(done.id, name, secret, auth_secret);
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
        Self::unlock(api, name, keys, auth_secret)
            .await
            .map_err(|e| match e {
                ClientError::Api { status: 401, .. } => ClientError::WrongPassword {
                    login: name.to_owned(),
                },
                ClientError::Api { status: 429, .. } => ClientError::TooManyFailures {
                    login: name.to_owned(),
                },
                other => other,
            })
    }

    /// Logs an instance in with its token.
    pub async fn login_instance(api: &Api, token: &Token) -> Result<Identity, ClientError> {
        let keys = token.keys();
        let auth_secret = keys.auth_secret();
        let login = token.instance.to_string();
        Self::unlock(api, &login, keys, auth_secret)
            .await
            .map_err(|e| match e {
                ClientError::Api { status: 401, .. } => ClientError::TokenRefused {
                    instance: token.instance,
                },
                ClientError::Api { status: 429, .. } => ClientError::TooManyFailures { login },
                other => other,
            })
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
        if me.kind == PrincipalKind::User && !me.key_proof_recorded {
            // An account from before key proofs: record it now, so from here on a captured
            // login secret alone cannot change this account's password.
            let body = KeyProofBody {
                key_proof: crypto::key_proof(&secret).into(),
            };
            let login = Login {
                login,
                secret: &auth_secret,
            };
            match api.put_key_proof(login, &body).await {
                // Another client of this user recorded it first: the same proof.
                Ok(()) | Err(ClientError::Api { status: 409, .. }) => {}
                Err(e) => return Err(e),
            }
        }
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
}

impl Identity {
    /// Creates an instance owned by this user: its key pair and token are made here; the
    /// server gets the public key, the token-wrapped bundle and the token's auth secret.
    /// The token is returned once and never stored.
    pub async fn add_instance(&mut self, api: &Api) -> Result<(PrincipalId, Token), ClientError> {
        self.add_named_instance(api, "").await
    }

    /// [`Identity::add_instance`], with the name the user gives it (kept in the sealed
    /// keyring: the server never learns it; empty for none).
    pub async fn add_named_instance(
        &mut self,
        api: &Api,
        name: &str,
    ) -> Result<(PrincipalId, Token), ClientError> {
        let name = crypto::check_name(name)?;
        let instance_id = PrincipalId::random();
        let (token, public, enrolment) = self.enrol(instance_id);
        let request = AddInstanceRequest::new(instance_id, enrolment);
        // The key was made here: pin it, in the same transaction as the instance.
        self.write_keyring(
            api,
            |ring| {
                ring.pin(instance_id, &public);
                ring.set_name(instance_id, name).expect("checked above");
            },
            PinWrite::Add(request),
        )
        .await?;
        Ok((instance_id, token))
    }

    /// Names one of this user's pinned instances (an empty name clears it): a keyring write,
    /// so the server stores the name sealed and never learns it.
    pub async fn rename_instance(
        &mut self,
        api: &Api,
        id: PrincipalId,
        name: &str,
    ) -> Result<(), ClientError> {
        let name = crypto::check_name(name)?;
        if self.keyring.get(id).is_none() {
            return Err(ClientError::NotPinned(id));
        }
        self.write_keyring(
            api,
            |ring| {
                // Another console may have removed it meanwhile: then there is nothing to name.
                let _ = ring.set_name(id, name);
            },
            PinWrite::KeyringOnly,
        )
        .await
    }

    /// The name this user gave instance `id`, if any.
    pub fn instance_name(&self, id: PrincipalId) -> Option<&str> {
        self.keyring.name(id)
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
            auth_secret: keys.auth_secret().into(),
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
        let (password, auth_secret) =
            wrap_user_key(self.id, &self.secret, new_password, params).await?;
        api.change_password(self.api_login(), password).await?;
        self.auth_secret = auth_secret;
        Ok(())
    }

    /// Undoes the last change of `name`'s password, within the server's grace period
    /// (protocol §7.8): the wrap it replaced is fetched with `previous_password`'s login
    /// secret and opened here, and the key proof of the key inside authorises the rollback.
    /// Returns the user logged in with `previous_password` again, and when the change was
    /// made (unix seconds). Every other session of the user is closed.
    pub async fn roll_back_password(
        api: &Api,
        name: &str,
        previous_password: &str,
    ) -> Result<(Identity, i64), ClientError> {
        let spec = api.prelogin_previous(name).await?;
        let keys = derive(previous_password, &spec).await?;
        let auth_secret = keys.auth_secret();
        let request = PreviousRequest {
            name: name.into(),
            auth_secret: auth_secret.clone().into(),
        };
        let previous = api.previous_wrap(&request).await.map_err(|e| match e {
            ClientError::Api { status: 403, .. } => ClientError::NothingToRollBack {
                login: name.to_owned(),
            },
            ClientError::Api { status: 429, .. } => ClientError::TooManyFailures {
                login: name.to_owned(),
            },
            other => other,
        })?;
        let secret = match Bundle::decode(&keys.unwrap(previous.id, &previous.wrapped_key)?)? {
            Bundle::User { secret }
                if secret.public_key().as_bytes()[..] == previous.public_key[..] =>
            {
                secret
            }
            _ => return Err(ClientError::BadKey(previous.id)),
        };
        api.roll_back(&RollbackRequest {
            name: name.into(),
            auth_secret: auth_secret.into(),
            key_proof: crypto::key_proof(&secret).into(),
        })
        .await?;
        let me = Identity::login_user(api, name, previous_password).await?;
        Ok((me, previous.changed_at))
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
            .and_then(|c| sealrelay_wire::b64::decode(&c))
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
                auth_secret: auth_secret.clone().into(),
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
        let body = KeyProofBody {
            key_proof: self.key_proof().into(),
        };
        api.delete_account(self.api_login(), &body).await
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

    /// The caller's instances as the directory lists them (ids, when last online).
    pub async fn instances(&self, api: &Api) -> Result<Vec<InstanceView>, ClientError> {
        api.instances(self.api_login()).await
    }

    /// Everything the server holds about this principal (and a user's instances): see
    /// [`Api::activity`].
    pub async fn activity(&self, api: &Api, since: Option<i64>) -> Result<Activity, ClientError> {
        api.activity(self.api_login(), since).await
    }
}
