//! The SDK's side of pinning: opening the keyring the server stores sealed, refusing a
//! rolled-back version, checking every directory key against its pin, and writing new
//! pins together with the request that makes them (protocol §3.1).

use crypto_box::{PublicKey, SecretKey};

use crate::api::{Api, Login};
use crate::crypto::{CryptoError, Keyring};
use crate::identity::key_of;
use crate::{ClientError, Identity};
use sealrelay_wire::api::*;
use sealrelay_wire::envelope::Witness;
use sealrelay_wire::{b64, PrincipalId};

/// An operation that pins a peer key and must write the keyring with it, atomically.
pub(crate) enum PinWrite {
    Add(AddInstanceRequest),
    Reenrol(PrincipalId, Enrolment),
    KeyringOnly,
}

/// The keyring `me` carries, opened with this principal's key; no keyring is an empty one
/// only while the server says none was ever written.
pub(crate) fn open_keyring(me: &Me, secret: &SecretKey) -> Result<Keyring, ClientError> {
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

/// A keyring version `served` is acceptable after `seen` only if it is not older.
fn not_rolled_back(seen: u64, served: u64) -> Result<(), ClientError> {
    if served < seen {
        return Err(ClientError::KeyringRollback { seen, served });
    }
    Ok(())
}

impl Identity {
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
    pub(crate) async fn write_keyring(
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
                    request.keyring = Some(body);
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
}
