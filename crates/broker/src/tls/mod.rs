//! The broker's certificate and the rustls server configurations built on it, for every
//! TLS listener (mqtts, wss, https). One crypto provider, ring, for the whole process.
//!
//! The certificate is read through a resolver that can be swapped while the broker runs:
//! when the files change (checked every `tls.reload_check_secs`) or on SIGHUP, new
//! handshakes get the new pair and live sessions are untouched; a pair that does not load
//! is refused with one log line and the old one kept. With no certificate configured, a
//! development CA beside the database signs a short-lived leaf for localhost and renews it
//! (`dev`).
//! PEM is read through `rustls-pki-types` (never the unmaintained `rustls-pemfile`). This
//! module holds the broker's own TLS identity only; it never touches envelope keys.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::danger::ClientCertVerifier;
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{RootCertStore, ServerConfig};
use sha2::{Digest, Sha256};

use crate::config::Config;

mod dev;
use dev::DevFiles;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {what} {path}: {reason}; set tls.cert_file and tls.key_file to PEM files, or leave both empty for a development certificate")]
    Read {
        what: &'static str,
        path: String,
        reason: String,
    },
    #[error("the certificate in {cert} does not go with the key in {key}: {reason}")]
    Mismatch {
        cert: String,
        key: String,
        reason: String,
    },
    #[error("cannot create the development certificate in {path}: {reason}")]
    Generate { path: String, reason: String },
    #[error("cannot use {path} as mqtts.client_ca: {reason}")]
    ClientCa { path: String, reason: String },
}

/// The process-wide provider: ring (builds on a plain Debian machine with `cc` alone).
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The certificate every TLS listener presents, swappable at run time.
pub struct Certificate {
    cert_file: PathBuf,
    key_file: PathBuf,
    /// The development CA, when the config names no certificate: its leaf is renewed as the
    /// files are watched.
    dev: Option<DevFiles>,
    current: RwLock<Arc<CertifiedKey>>,
    /// Modification times of the files as last loaded: a change triggers a reload.
    loaded: RwLock<(Option<SystemTime>, Option<SystemTime>)>,
}

impl std::fmt::Debug for Certificate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Certificate({})", self.cert_file.display())
    }
}

impl ResolvesServerCert for Certificate {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.read().expect("lock").clone())
    }
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// SHA-256 of a DER certificate, as `openssl x509 -fingerprint -sha256` prints it.
pub fn fingerprint(cert: &CertificateDer<'_>) -> String {
    Sha256::digest(cert.as_ref())
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

fn load_pair(cert_file: &Path, key_file: &Path) -> Result<CertifiedKey, TlsError> {
    let read = |what, path: &Path, reason: String| TlsError::Read {
        what,
        path: path.display().to_string(),
        reason,
    };
    let chain = CertificateDer::pem_file_iter(cert_file)
        .map_err(|e| read("certificate file", cert_file, e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| read("certificate file", cert_file, e.to_string()))?;
    if chain.is_empty() {
        return Err(read(
            "certificate file",
            cert_file,
            "no CERTIFICATE block in it".into(),
        ));
    }
    let key = PrivateKeyDer::from_pem_file(key_file)
        .map_err(|e| read("key file", key_file, e.to_string()))?;
    CertifiedKey::from_der(chain, key, &provider()).map_err(|e| TlsError::Mismatch {
        cert: cert_file.display().to_string(),
        key: key_file.display().to_string(),
        reason: e.to_string(),
    })
}

impl Certificate {
    /// The certificate and key files the config names, or the development pair beside the
    /// database when it names none; and whether it is the development pair.
    pub fn files(config: &Config) -> (PathBuf, PathBuf, bool) {
        let dev = Certificate::dev_files(config);
        let (cert, key) = Certificate::pair_files(config, dev.as_ref());
        (cert, key, dev.is_some())
    }

    /// The pair served: the development one if `dev`, else the config's.
    fn pair_files(config: &Config, dev: Option<&DevFiles>) -> (PathBuf, PathBuf) {
        match dev {
            Some(dev) => (dev.cert.clone(), dev.key.clone()),
            None => (config.tls.cert_file.clone(), config.tls.key_file.clone()),
        }
    }

    /// The development CA's files beside the database, when the config names no certificate.
    fn dev_files(config: &Config) -> Option<DevFiles> {
        config.tls.cert_file.as_os_str().is_empty().then(|| {
            let dir = config.directory.database.parent().unwrap_or(Path::new(""));
            DevFiles::in_dir(dir)
        })
    }

    /// Loads the configured pair, or the development pair beside the database (made, or
    /// renewed, first). Logs the fingerprint and, for a development certificate, how to
    /// trust its CA.
    pub fn load(config: &Config) -> Result<Arc<Certificate>, TlsError> {
        let dev = Certificate::dev_files(config);
        if let Some(dev) = &dev {
            dev.ensure(SystemTime::now())?;
        }
        let (cert_file, key_file) = Certificate::pair_files(config, dev.as_ref());
        let pair = load_pair(&cert_file, &key_file)?;
        let print = fingerprint(&pair.cert[0]);
        match &dev {
            Some(dev) => {
                let ca = CertificateDer::pem_file_iter(&dev.ca_cert)
                    .ok()
                    .and_then(|mut certs| certs.next()?.ok())
                    .map(|ca| fingerprint(&ca))
                    .unwrap_or_default();
                tracing::warn!(
                    ca = %dev.ca_cert.display(),
                    ca_sha256 = %ca,
                    leaf_sha256 = %print,
                    "TLS listeners use a development certificate for localhost, 127.0.0.1 and ::1, signed by a local development CA and renewed by the broker; clients trust that CA with --ca-file {} (mosquitto_sub --cafile, curl --cacert; a browser imports it as an authority); set tls.cert_file and tls.key_file in production",
                    dev.ca_cert.display()
                );
            }
            None => {
                tracing::info!(cert = %cert_file.display(), sha256 = %print, "TLS certificate loaded")
            }
        }
        Ok(Arc::new(Certificate {
            loaded: RwLock::new((modified(&cert_file), modified(&key_file))),
            dev,
            cert_file,
            key_file,
            current: RwLock::new(Arc::new(pair)),
        }))
    }

    /// The PEM file of the certificate being served (what a client may pin or trust).
    pub fn cert_file(&self) -> &Path {
        &self.cert_file
    }

    /// Whether `cert_file` and `key_file` load as a matching pair (`sealrelay check-config`).
    pub fn check_pair(cert_file: &Path, key_file: &Path) -> Result<(), TlsError> {
        load_pair(cert_file, key_file).map(drop)
    }

    /// Loads the files again if `force` or if they changed; new handshakes use the new pair.
    /// A pair that does not load leaves the old one in place and is reported once.
    pub fn reload(&self, force: bool) -> Result<bool, TlsError> {
        let now = (modified(&self.cert_file), modified(&self.key_file));
        if !force && *self.loaded.read().expect("lock") == now {
            return Ok(false);
        }
        // Remember what was tried, so a bad pair is reported once, not at every check.
        *self.loaded.write().expect("lock") = now;
        let pair = load_pair(&self.cert_file, &self.key_file)?;
        let print = fingerprint(&pair.cert[0]);
        *self.current.write().expect("lock") = Arc::new(pair);
        tracing::info!(cert = %self.cert_file.display(), sha256 = %print, "TLS certificate reloaded; new handshakes use it");
        Ok(true)
    }

    /// Whether the certificate being served is valid for `host` (a DNS name or an IP address,
    /// an IPv6 one with or without brackets). A name the certificate covers is one a browser
    /// reached this broker by after checking it; a name chosen by whoever sent a request (a
    /// rebinding domain, a forged `Host`) is not, so the web console's MQTT URL and the
    /// WebSocket listeners' same-host Origin rule trust only such names.
    pub fn vouches_for(&self, host: &str) -> bool {
        let host = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        let Ok(name) = rustls::pki_types::ServerName::try_from(host) else {
            return false;
        };
        let current = self.current.read().expect("lock").clone();
        current.cert.first().is_some_and(|leaf| {
            webpki::EndEntityCert::try_from(leaf)
                .is_ok_and(|cert| cert.verify_is_valid_for_subject_name(&name).is_ok())
        })
    }

    /// Checks the files every `every` until the task is dropped.
    pub fn watch(self: Arc<Self>, every: Duration) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.tick().await;
            let mut dev_checked = std::time::Instant::now();
            loop {
                tick.tick().await;
                // Renewal has days of margin: once an hour is enough, not at every file check.
                if let Some(dev) = self
                    .dev
                    .as_ref()
                    .filter(|_| dev_checked.elapsed() >= dev::CHECK_EVERY)
                {
                    dev_checked = std::time::Instant::now();
                    match dev.ensure(SystemTime::now()) {
                        // The files changed: the reload below serves the new leaf.
                        Ok(true) => tracing::info!("development certificate renewed"),
                        Ok(false) => {}
                        Err(e) => {
                            tracing::error!(error = %e, "cannot renew the development certificate")
                        }
                    }
                }
                if let Err(e) = self.reload(false) {
                    tracing::error!(error = %e, "new TLS certificate refused; still serving the previous one");
                }
            }
        })
    }

    /// A rustls server configuration presenting this certificate, TLS 1.2 and 1.3 only,
    /// offering `alpn`, and requiring a client certificate that chains to `client_ca` if given.
    pub fn server_config(
        self: &Arc<Self>,
        alpn: &[&[u8]],
        client_ca: Option<&Path>,
    ) -> Result<Arc<ServerConfig>, TlsError> {
        let builder = ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .expect("ring supports TLS 1.2 and 1.3");
        let builder = match client_ca {
            None => builder.with_no_client_auth(),
            Some(path) => builder.with_client_cert_verifier(client_verifier(path)?),
        };
        let mut config = builder.with_cert_resolver(self.clone());
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Ok(Arc::new(config))
    }
}

/// The verifier of client certificates chaining to the CA certificates in `path`
/// (`mqtts.client_ca`); `sealrelay check-config` calls it too, so it refuses what `serve` would.
pub fn client_verifier(path: &Path) -> Result<Arc<dyn ClientCertVerifier>, TlsError> {
    let bad = |reason: String| TlsError::ClientCa {
        path: path.display().to_string(),
        reason,
    };
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(path).map_err(|e| bad(e.to_string()))? {
        roots
            .add(cert.map_err(|e| bad(e.to_string()))?)
            .map_err(|e| bad(e.to_string()))?;
    }
    WebPkiClientVerifier::builder_with_provider(roots.into(), provider())
        .build()
        .map_err(|e| bad(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_certificate_vouches_for_its_own_names_only() {
        let dir = tempfile::tempdir().unwrap();
        let dev = DevFiles::in_dir(dir.path());
        dev.ensure(SystemTime::now()).unwrap();
        let certificate = Certificate {
            current: RwLock::new(Arc::new(load_pair(&dev.cert, &dev.key).unwrap())),
            loaded: RwLock::new((None, None)),
            cert_file: dev.cert.clone(),
            key_file: dev.key.clone(),
            dev: Some(dev),
        };
        for host in ["localhost", "127.0.0.1", "LOCALHOST", "[::1]", "::1"] {
            assert!(certificate.vouches_for(host), "{host}");
        }
        for host in ["rebound.example", "127.0.0.2", "[::2]", "", "a b"] {
            assert!(!certificate.vouches_for(host), "{host}");
        }
    }
}
