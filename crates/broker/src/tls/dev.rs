//! The development certificate authority, for a broker given no certificate: a local CA
//! (kept in the data directory, ten years, a name unique to its key) and a short-lived leaf
//! for localhost, 127.0.0.1 and ::1 that it signs and renews. A person trusts the CA once
//! (`tls-dev-ca.pem`), and the leaf underneath can change every few weeks without them
//! noticing — as with a real CA, and unlike a self-signed leaf that every renewal would
//! break. Uses rcgen to issue and rustls's own verifier to decide when to renew; it never
//! touches envelope keys, and it is never used when `tls.cert_file` is set.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::client::danger::ServerCertVerifier;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use sha2::{Digest, Sha256};

use super::{provider, TlsError};

/// How long a leaf is valid, and how long before its end it is replaced.
const LEAF_LIFETIME: Duration = Duration::from_secs(30 * 86_400);
const RENEW_BEFORE: Duration = Duration::from_secs(10 * 86_400);
const CA_LIFETIME: Duration = Duration::from_secs(10 * 365 * 86_400);
/// How often a running broker asks whether its leaf is due (it is due `RENEW_BEFORE` ahead).
pub(super) const CHECK_EVERY: Duration = Duration::from_secs(3600);
/// The names the leaf covers: what a person or a test on the broker's machine connects to.
const NAMES: [&str; 3] = ["localhost", "127.0.0.1", "::1"];

/// The development pair's files in a data directory.
pub(super) struct DevFiles {
    pub(super) ca_cert: PathBuf,
    ca_key: PathBuf,
    pub(super) cert: PathBuf,
    pub(super) key: PathBuf,
}

impl DevFiles {
    pub(super) fn in_dir(dir: &Path) -> DevFiles {
        DevFiles {
            ca_cert: dir.join("tls-dev-ca.pem"),
            ca_key: dir.join("tls-dev-ca-key.pem"),
            cert: dir.join("tls-dev-cert.pem"),
            key: dir.join("tls-dev-key.pem"),
        }
    }

    /// Makes the CA if there is none and a leaf if the one there would not verify against
    /// it `RENEW_BEFORE` from `now` (missing, expiring, for other names, or signed by another
    /// key — a self-signed leaf from before this CA existed). Whether a leaf was issued.
    pub(super) fn ensure(&self, now: SystemTime) -> Result<bool, TlsError> {
        let ca_key = self.ca_key_pair()?;
        let ca_params = ca_params(&ca_key);
        if !self.ca_cert.exists() {
            let mut params = ca_params.clone();
            params.not_before = (now - Duration::from_secs(3600)).into();
            params.not_after = (now + CA_LIFETIME).into();
            let ca = params.self_signed(&ca_key).map_err(self.failed())?;
            write_file(&self.ca_cert, ca.pem().as_bytes(), 0o644).map_err(self.failed())?;
        }
        let ca_pem = std::fs::read_to_string(&self.ca_cert).map_err(self.failed())?;
        if self.leaf_holds_until(&ca_pem, now + RENEW_BEFORE) {
            return Ok(false);
        }
        let leaf_key = KeyPair::generate().map_err(self.failed())?;
        let mut params = CertificateParams::new(NAMES.map(String::from)).map_err(self.failed())?;
        params
            .distinguished_name
            .push(DnType::CommonName, "sealrelay development (localhost)");
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        params.not_before = (now - Duration::from_secs(3600)).into();
        params.not_after = (now + LEAF_LIFETIME).into();
        let issuer = Issuer::new(ca_params, &ca_key);
        let leaf = params
            .signed_by(&leaf_key, &issuer)
            .map_err(self.failed())?;
        // The key first: a leaf beside a key it does not match would fail to load.
        write_file(&self.key, leaf_key.serialize_pem().as_bytes(), 0o600).map_err(self.failed())?;
        let chain = format!("{}{}", leaf.pem(), ca_pem);
        write_file(&self.cert, chain.as_bytes(), 0o644).map_err(self.failed())?;
        Ok(true)
    }

    /// The CA's key, made (mode 0600) if there is none.
    fn ca_key_pair(&self) -> Result<KeyPair, TlsError> {
        match std::fs::read_to_string(&self.ca_key) {
            Ok(pem) => KeyPair::from_pem(&pem).map_err(self.failed()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let key = KeyPair::generate().map_err(self.failed())?;
                write_file(&self.ca_key, key.serialize_pem().as_bytes(), 0o600)
                    .map_err(self.failed())?;
                Ok(key)
            }
            Err(e) => Err(self.failed()(e)),
        }
    }

    /// Whether the leaf on disk chains to the CA in `ca_pem` and covers every name at `at`.
    fn leaf_holds_until(&self, ca_pem: &str, at: SystemTime) -> bool {
        let Ok(chain) = CertificateDer::pem_file_iter(&self.cert)
            .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        else {
            return false;
        };
        let Some((leaf, rest)) = chain.split_first() else {
            return false;
        };
        let mut roots = rustls::RootCertStore::empty();
        for ca in CertificateDer::pem_slice_iter(ca_pem.as_bytes()).flatten() {
            let _ = roots.add(ca);
        }
        let Ok(verifier) =
            rustls::client::WebPkiServerVerifier::builder_with_provider(roots.into(), provider())
                .build()
        else {
            return false;
        };
        let at = UnixTime::since_unix_epoch(
            at.duration_since(SystemTime::UNIX_EPOCH)
                .unwrap_or_default(),
        );
        self.key.exists()
            && NAMES.iter().all(|name| {
                ServerName::try_from(*name).is_ok_and(|name| {
                    verifier
                        .verify_server_cert(leaf, rest, &name, &[], at)
                        .is_ok()
                })
            })
    }

    fn failed<E: std::fmt::Display>(&self) -> impl Fn(E) -> TlsError + '_ {
        move |e| TlsError::Generate {
            path: self.cert.display().to_string(),
            reason: e.to_string(),
        }
    }
}

/// What the CA's certificate says, rebuilt from its key alone: the name ends with a digest of
/// the key, so two machines' development CAs never share a name, and a leaf can be signed
/// without parsing the CA certificate back.
fn ca_params(key: &KeyPair) -> CertificateParams {
    let digest = Sha256::digest(key.public_key_raw());
    let mut params = CertificateParams::default();
    params.distinguished_name.push(
        DnType::CommonName,
        format!("sealrelay development CA {}", hex::encode(&digest[..4])),
    );
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params
}

/// Replaces `path` with `bytes` at `mode` through a new file renamed over it, so a reader (the
/// broker's reload, a client) sees the old file or the new one, never half of one.
fn write_file(path: &Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let fresh = path.with_extension("pem.new");
    let _ = std::fs::remove_file(&fresh);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&fresh)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(&fresh, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a client of the development pair trusts: the CA as the only root.
    fn ca_roots(ca_cert: &Path) -> std::sync::Arc<rustls::RootCertStore> {
        let mut roots = rustls::RootCertStore::empty();
        for ca in CertificateDer::pem_file_iter(ca_cert).unwrap() {
            roots.add(ca.unwrap()).unwrap();
        }
        roots.into()
    }

    const DAY: Duration = Duration::from_secs(86_400);

    #[test]
    fn the_leaf_is_issued_once_kept_while_fresh_and_renewed_under_the_same_ca() {
        let dir = tempfile::tempdir().unwrap();
        let files = DevFiles::in_dir(dir.path());
        let now = SystemTime::now();
        assert!(files.ensure(now).unwrap(), "a first leaf");
        let ca = std::fs::read(&files.ca_cert).unwrap();
        let first = std::fs::read(&files.cert).unwrap();
        assert!(
            !files.ensure(now + 19 * DAY).unwrap(),
            "kept while 10 days remain"
        );
        assert_eq!(std::fs::read(&files.cert).unwrap(), first);
        assert!(
            files.ensure(now + 21 * DAY).unwrap(),
            "renewed within 10 days of its end"
        );
        assert_ne!(std::fs::read(&files.cert).unwrap(), first);
        assert_eq!(
            std::fs::read(&files.ca_cert).unwrap(),
            ca,
            "the CA a person trusted stays"
        );

        // What a client trusting only the CA sees: the renewed leaf, valid, for each name.
        let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(
            ca_roots(&files.ca_cert),
            provider(),
        )
        .build()
        .unwrap();
        let chain: Vec<_> = CertificateDer::pem_file_iter(&files.cert)
            .unwrap()
            .map(Result::unwrap)
            .collect();
        let at = |t: SystemTime| {
            UnixTime::since_unix_epoch(t.duration_since(SystemTime::UNIX_EPOCH).unwrap())
        };
        for name in NAMES {
            let name = ServerName::try_from(name).unwrap();
            verifier
                .verify_server_cert(&chain[0], &chain[1..], &name, &[], at(now + 22 * DAY))
                .unwrap();
        }
        let other = ServerName::try_from("example.com").unwrap();
        assert!(verifier
            .verify_server_cert(&chain[0], &chain[1..], &other, &[], at(now + 22 * DAY))
            .is_err());
        assert!(
            verifier
                .verify_server_cert(
                    &chain[0],
                    &chain[1..],
                    &ServerName::try_from("localhost").unwrap(),
                    &[],
                    at(now + 52 * DAY)
                )
                .is_err(),
            "short-lived: gone 30 days after its renewal"
        );
    }

    #[test]
    fn a_self_signed_leaf_from_before_the_ca_is_replaced_and_the_keys_are_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let files = DevFiles::in_dir(dir.path());
        let old = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        std::fs::write(&files.cert, old.cert.pem()).unwrap();
        std::fs::write(&files.key, old.signing_key.serialize_pem()).unwrap();
        assert!(files.ensure(SystemTime::now()).unwrap());
        assert_ne!(
            std::fs::read_to_string(&files.cert).unwrap(),
            old.cert.pem()
        );
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&files.ca_key), 0o600);
        assert_eq!(mode(&files.key), 0o600);
        let ca = std::fs::read_to_string(&files.ca_cert).unwrap();
        assert!(ca.starts_with("-----BEGIN CERTIFICATE-----"));
    }
}
