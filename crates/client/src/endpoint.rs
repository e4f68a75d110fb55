//! Where the broker is and whom to trust on the way: `mqtt://`, `mqtts://`, `ws://` and
//! `wss://` URLs (a bare `host:port` is plain MQTT), and the TLS roots for them and for an
//! `https://` API — a private CA or the broker's development certificate from a PEM file,
//! the system's roots otherwise. A certificate that does not verify is an error naming the
//! host and the reason, never a fallback to plain. Uses rustls with ring only.

use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use rustls::{ClientConfig, RootCertStore};

use crate::ClientError;

/// The four transports a broker URL may name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// MQTT over TCP (`mqtt://`, or a bare host:port).
    Mqtt,
    /// MQTT over TLS (`mqtts://`).
    Mqtts,
    /// MQTT over WebSocket (`ws://`).
    Ws,
    /// MQTT over WebSocket over TLS (`wss://`).
    Wss,
}

impl Scheme {
    fn default_port(self) -> u16 {
        match self {
            Scheme::Mqtt => 1883,
            Scheme::Mqtts => 8883,
            Scheme::Ws => 80,
            Scheme::Wss => 443,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Scheme::Mqtt => "mqtt",
            Scheme::Mqtts => "mqtts",
            Scheme::Ws => "ws",
            Scheme::Wss => "wss",
        }
    }

    /// Whether the transport runs over TLS.
    pub fn is_tls(self) -> bool {
        matches!(self, Scheme::Mqtts | Scheme::Wss)
    }
}

/// A broker's MQTT address, with the TLS configuration its scheme needs.
#[derive(Clone)]
pub struct Broker {
    /// How to reach it.
    pub scheme: Scheme,
    /// The host name or address, as given (TLS checks the certificate against it).
    pub host: String,
    /// The TCP port (the scheme's default when the URL names none).
    pub port: u16,
    /// The WebSocket path (`/mqtt` unless the URL says otherwise); unused for TCP.
    pub path: String,
    pub(crate) tls: Option<Arc<ClientConfig>>,
}

impl std::fmt::Display for Broker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        match self.scheme {
            Scheme::Mqtt | Scheme::Mqtts => {
                write!(f, "{}://{host}:{}", self.scheme.name(), self.port)
            }
            Scheme::Ws | Scheme::Wss => {
                write!(
                    f,
                    "{}://{host}:{}{}",
                    self.scheme.name(),
                    self.port,
                    self.path
                )
            }
        }
    }
}

impl std::fmt::Debug for Broker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Broker({self})")
    }
}

fn usage(message: String) -> ClientError {
    ClientError::Usage(message)
}

impl Broker {
    /// Parses `url`; TLS schemes trust the CAs in `ca_file` if given, the system's otherwise.
    pub fn parse(url: &str, ca_file: Option<&Path>) -> Result<Broker, ClientError> {
        let (scheme, rest) = match url.split_once("://") {
            None => (Scheme::Mqtt, url),
            Some((name, rest)) => (
                match name.to_ascii_lowercase().as_str() {
                    "mqtt" | "tcp" => Scheme::Mqtt,
                    "mqtts" | "ssl" => Scheme::Mqtts,
                    "ws" => Scheme::Ws,
                    "wss" => Scheme::Wss,
                    other => {
                        return Err(usage(format!(
                        "broker URL `{url}`: scheme `{other}` is not one of mqtt, mqtts, ws, wss"
                    )))
                    }
                },
                rest,
            ),
        };
        let (authority, path) = match rest.find('/') {
            Some(at) => (&rest[..at], &rest[at..]),
            None => (rest, "/mqtt"),
        };
        let (host, port) = split_host_port(authority, scheme.default_port())
            .ok_or_else(|| usage(format!("broker URL `{url}` has no valid host[:port]")))?;
        let tls = scheme.is_tls().then(|| tls_config(ca_file)).transpose()?;
        Ok(Broker {
            scheme,
            host,
            port,
            path: path.to_owned(),
            tls,
        })
    }
}

impl FromStr for Broker {
    type Err = ClientError;

    fn from_str(url: &str) -> Result<Broker, ClientError> {
        Broker::parse(url, None)
    }
}

/// `host`, `host:port`, `[v6]`, `[v6]:port`.
fn split_host_port(authority: &str, default_port: u16) -> Option<(String, u16)> {
    if let Some(rest) = authority.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        let port = match after.strip_prefix(':') {
            Some(p) => p.parse().ok()?,
            None if after.is_empty() => default_port,
            None => return None,
        };
        return Some((host.to_owned(), port));
    }
    let (host, port) = match authority.rsplit_once(':') {
        Some((host, port)) => (host, port.parse().ok()?),
        None => (authority, default_port),
    };
    (!host.is_empty()).then(|| (host.to_owned(), port))
}

/// Reads the certificates of a PEM file (a CA, or a self-signed server certificate).
pub fn read_ca_file(path: &Path) -> Result<Vec<CertificateDer<'static>>, ClientError> {
    let bad = |reason: String| {
        usage(format!(
            "--ca-file {}: {reason}; give a PEM file of the CA (or the broker's development certificate)",
            path.display()
        ))
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| bad(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(e.to_string()))?;
    if certs.is_empty() {
        return Err(bad("no CERTIFICATE block in it".into()));
    }
    Ok(certs)
}

/// A rustls client configuration trusting `ca_file`'s certificates, or the system's roots.
pub fn tls_config(ca_file: Option<&Path>) -> Result<Arc<ClientConfig>, ClientError> {
    let mut roots = RootCertStore::empty();
    match ca_file {
        Some(path) => {
            for cert in read_ca_file(path)? {
                roots
                    .add(cert)
                    .map_err(|e| usage(format!("--ca-file {}: {e}", path.display())))?;
            }
        }
        None => {
            let native = rustls_native_certs::load_native_certs();
            roots.add_parsable_certificates(native.certs);
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| usage(format!("TLS setup: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_of_every_scheme_parse_and_print_back() {
        for (url, shown) in [
            ("127.0.0.1:1883", "mqtt://127.0.0.1:1883"),
            ("mqtt://broker.example", "mqtt://broker.example:1883"),
            ("ws://127.0.0.1:8083", "ws://127.0.0.1:8083/mqtt"),
            ("ws://h:1/custom/path", "ws://h:1/custom/path"),
            ("mqtt://[::1]:1884", "mqtt://[::1]:1884"),
        ] {
            assert_eq!(Broker::parse(url, None).unwrap().to_string(), shown);
        }
        let wss = Broker::parse("wss://h", None).unwrap();
        assert_eq!((wss.port, wss.tls.is_some()), (443, true));
        for bad in ["http://h:1", "mqtt://:1883", "mqtt://h:port", "h:"] {
            assert!(Broker::parse(bad, None).is_err(), "{bad}");
        }
    }
}
