//! Broker configuration: `broker.toml` compiled in as the defaults, an optional file on
//! top, then `SEALRELAY_<SECTION>_<KEY>` environment variables on top of that.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// The documented defaults; `Config::default()` is exactly this file.
pub const DEFAULT_TOML: &str = include_str!("../../../broker.toml");

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub server: Server,
    pub mqtt: Mqtt,
    pub mqtts: Mqtts,
    pub ws: Ws,
    pub wss: Ws,
    pub https: Https,
    pub tls: Tls,
    pub http: Http,
    pub admin: Admin,
    pub envelope: Envelope,
    pub directory: Directory,
    pub auth: Auth,
    pub kdf: Kdf,
    pub accounting: Accounting,
    pub log: Log,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Server {
    pub shutdown_grace_secs: u64,
    /// Addresses (IPs or CIDR blocks) whose PROXY protocol headers are believed.
    pub trusted_proxies: Vec<String>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Mqtt {
    pub listen: SocketAddr,
    pub proxy_protocol: bool,
    pub workers: usize,
    pub max_connections: usize,
    pub max_connections_per_ip: usize,
    pub max_packet_bytes: u32,
    pub connect_timeout_secs: u64,
    pub outbound_queue_bytes: usize,
    pub max_inflight: u16,
    pub max_refusals_per_minute: u32,
    pub refusal_cooldown_secs: u64,
}

/// An optional listener address: `""` in the file turns the listener off.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Listen(pub Option<SocketAddr>);

impl<'de> Deserialize<'de> for Listen {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        if text.trim().is_empty() {
            return Ok(Listen(None));
        }
        text.trim().parse().map(|a| Listen(Some(a))).map_err(|_| {
            serde::de::Error::custom(format!(
                "`{text}` is not an address: write ip:port (e.g. 127.0.0.1:8883), or \"\" to turn the listener off"
            ))
        })
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Mqtts {
    pub listen: Listen,
    pub proxy_protocol: bool,
    /// PEM file of CAs; when set, mqtts clients must present a certificate chaining to one.
    pub client_ca: PathBuf,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Ws {
    pub listen: Listen,
    pub proxy_protocol: bool,
    pub path: String,
    pub allowed_origins: Vec<String>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Https {
    pub listen: Listen,
    /// Serve the web console (web/dist, compiled in) at `/` on this listener.
    pub console: bool,
    /// The MQTT URL the console connects to; empty means this broker's wss listener on the
    /// host the page was loaded from.
    pub console_mqtt_url: String,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Tls {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    pub reload_check_secs: u64,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Http {
    pub listen: SocketAddr,
    pub workers: usize,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Admin {
    pub listen: SocketAddr,
    pub token_file: PathBuf,
    pub reset_code_ttl_secs: u64,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Envelope {
    pub max_bytes: u32,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Directory {
    pub database: PathBuf,
    pub prelogin_key_file: PathBuf,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Auth {
    pub failure_window_secs: u64,
    pub max_failures_per_ip: u32,
    pub max_failures_per_login: u32,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Kdf {
    pub memory_kib: u32,
    pub iterations: u32,
    pub parallelism: u32,
    pub min_memory_kib: u32,
    pub min_iterations: u32,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Accounting {
    pub retention_days: u32,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Log {
    pub level: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{origin}: {message}")]
    Invalid { origin: String, message: String },
}

impl Default for Config {
    fn default() -> Self {
        Config::from_layers(None, std::iter::empty()).expect("the embedded broker.toml is valid")
    }
}

impl Config {
    /// Defaults, then `path` if given, then the process environment.
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        let file = match path {
            Some(path) => Some((
                path.display().to_string(),
                std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.to_owned(),
                    source,
                })?,
            )),
            None => None,
        };
        Config::from_layers(
            file.as_ref()
                .map(|(name, text)| (name.as_str(), text.as_str())),
            std::env::vars(),
        )
    }

    /// Merges the layers; `file` is `(name for messages, contents)`.
    pub fn from_layers(
        file: Option<(&str, &str)>,
        env: impl Iterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let mut table = parse_table("broker.toml (embedded)", DEFAULT_TOML)?;
        if let Some((origin, text)) = file {
            let overlay = parse_table(origin, text)?;
            for (section, values) in overlay {
                let invalid = |message: String| ConfigError::Invalid {
                    origin: origin.to_owned(),
                    message,
                };
                let Some(target) = table.get_mut(&section).and_then(|v| v.as_table_mut()) else {
                    return Err(invalid(format!("unknown section [{section}]")));
                };
                let toml::Value::Table(values) = values else {
                    return Err(invalid(format!("`{section}` must be a [section]")));
                };
                for (key, value) in values {
                    if !target.contains_key(&key) {
                        return Err(invalid(format!("unknown key `{key}` in [{section}]")));
                    }
                    target.insert(key, value);
                }
            }
        }
        apply_env(&mut table, env)?;
        // Deserialise from text rather than from the table: only then does an error carry
        // a span, which is how the message gets to name the offending key.
        let merged = toml::to_string(&table).expect("a toml table serialises");
        toml::from_str::<Config>(&merged)
            .map_err(|e| ConfigError::Invalid {
                origin: e
                    .span()
                    .map(|span| key_at(&merged, span.start))
                    .unwrap_or_else(|| "config".into()),
                message: e.message().trim().to_owned(),
            })
            .and_then(Config::validate)
    }

    fn validate(self) -> Result<Config, ConfigError> {
        let invalid = |key: &str, message: String| ConfigError::Invalid {
            origin: key.to_owned(),
            message,
        };
        // Topic, header and MQTT framing ride on top of the envelope.
        if u64::from(self.mqtt.max_packet_bytes) < u64::from(self.envelope.max_bytes) + 512 {
            return Err(invalid(
                "mqtt.max_packet_bytes",
                format!(
                    "must be at least envelope.max_bytes + 512 ({})",
                    u64::from(self.envelope.max_bytes) + 512
                ),
            ));
        }
        if self.kdf.memory_kib < self.kdf.min_memory_kib
            || self.kdf.iterations < self.kdf.min_iterations
        {
            return Err(invalid(
                "kdf",
                "memory_kib/iterations must not be below min_memory_kib/min_iterations".into(),
            ));
        }
        if self.mqtt.max_connections == 0 || self.mqtt.max_connections_per_ip == 0 {
            return Err(invalid(
                "mqtt.max_connections",
                "max_connections and max_connections_per_ip must be at least 1".into(),
            ));
        }
        if self.tls.cert_file.as_os_str().is_empty() != self.tls.key_file.as_os_str().is_empty() {
            return Err(invalid(
                "tls.cert_file",
                "set both tls.cert_file and tls.key_file, or neither (a development certificate is generated)".into(),
            ));
        }
        for (key, ws) in [("ws.path", &self.ws), ("wss.path", &self.wss)] {
            if !ws.path.starts_with('/') {
                return Err(invalid(key, "must start with /".into()));
            }
        }
        // It goes into the console's Content-Security-Policy header: plain URL characters only.
        let url = &self.https.console_mqtt_url;
        let plain = |c: char| c.is_ascii_graphic() && !matches!(c, ';' | ',' | '\'' | '"');
        let valid = url.is_empty()
            || (url.len() > 6 && url.starts_with("wss://") && url.chars().all(plain));
        if !valid {
            return Err(invalid(
                "https.console_mqtt_url",
                "must be a wss:// URL (a page served over HTTPS may open no other WebSocket), or empty".into(),
            ));
        }
        if let Err(e) = crate::mqtt::proxy::TrustedProxies::parse(&self.server.trusted_proxies) {
            return Err(invalid("server.trusted_proxies", e));
        }
        if self.tls.reload_check_secs == 0 {
            return Err(invalid(
                "tls.reload_check_secs",
                "must be at least 1".into(),
            ));
        }
        if self.mqtt.max_inflight == 0 {
            return Err(invalid("mqtt.max_inflight", "must be at least 1".into()));
        }
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&self.log.level) {
            return Err(invalid("log.level", e.to_string()));
        }
        Ok(self)
    }

    /// `workers = 0` means one per core.
    pub fn worker_count(configured: usize) -> usize {
        if configured == 0 {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        } else {
            configured
        }
    }
}

/// `section.key` of the line holding byte `at` in a serialised config.
fn key_at(text: &str, at: usize) -> String {
    let before = &text[..at.min(text.len())];
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let line = text[line_start..].lines().next().unwrap_or("");
    let key = line.split('=').next().unwrap_or("").trim();
    let section = before
        .lines()
        .rev()
        .find_map(|l| l.trim().strip_prefix('[').and_then(|l| l.strip_suffix(']')))
        .unwrap_or("");
    match (section.is_empty(), key.is_empty()) {
        (false, false) => format!("config key {section}.{key}"),
        (false, true) => format!("config section [{section}]"),
        _ => "config".into(),
    }
}

fn parse_table(origin: &str, text: &str) -> Result<toml::Table, ConfigError> {
    text.parse::<toml::Table>().map_err(|e| {
        let line = e
            .span()
            .map(|span| text[..span.start].lines().count().max(1))
            .unwrap_or(0);
        ConfigError::Invalid {
            origin: format!("{origin} line {line}"),
            message: e.message().trim().to_owned(),
        }
    })
}

/// `SEALRELAY_MQTT_LISTEN=…` sets `mqtt.listen`. Variables whose first segment is not a
/// config section (SEALRELAY_PASSWORD, SEALRELAY_SERVER, …) belong to the client CLI and
/// are left alone; a known section with an unknown key is an error, since it is a typo.
fn apply_env(
    table: &mut toml::Table,
    env: impl Iterator<Item = (String, String)>,
) -> Result<(), ConfigError> {
    for (name, raw) in env {
        let Some(rest) = name.strip_prefix("SEALRELAY_") else {
            continue;
        };
        let Some((section, key)) = rest.split_once('_') else {
            continue;
        };
        let (section, key) = (section.to_ascii_lowercase(), key.to_ascii_lowercase());
        let Some(target) = table.get_mut(&section).and_then(|v| v.as_table_mut()) else {
            continue;
        };
        let Some(current) = target.get(&key) else {
            return Err(ConfigError::Invalid {
                origin: name,
                message: format!("there is no key `{key}` in [{section}]"),
            });
        };
        // Keep the type of the default: a number stays a number, so "abc" for a port
        // count is reported against the variable rather than silently becoming a string.
        let value = match current {
            toml::Value::String(_) => toml::Value::String(raw),
            _ => format!("v = {raw}")
                .parse::<toml::Table>()
                .ok()
                .and_then(|mut t| t.remove("v"))
                .filter(|v| v.type_str() == current.type_str())
                .ok_or_else(|| ConfigError::Invalid {
                    origin: name.clone(),
                    message: format!("expected a {} for {section}.{key}", current.type_str()),
                })?,
        };
        target.insert(key, value);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> impl Iterator<Item = (String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<Vec<_>>()
            .into_iter()
    }

    #[test]
    fn embedded_defaults_parse() {
        let c = Config::default();
        assert_eq!(c.mqtt.listen.port(), 1883);
        assert_eq!(c.http.listen.port(), 8080);
        assert_eq!(c.directory.database, PathBuf::from("data/sealrelay.db"));
        assert_eq!(c.server.shutdown_grace_secs, 10);
    }

    #[test]
    fn file_then_env_override_defaults() {
        let c = Config::from_layers(
            Some((
                "t.toml",
                "[mqtt]\nlisten = \"127.0.0.1:0\"\n[envelope]\nmax_bytes = 1000\n",
            )),
            env(&[
                ("SEALRELAY_MQTT_MAX_INFLIGHT", "7"),
                ("SEALRELAY_PASSWORD", "ignored"),
            ]),
        )
        .unwrap();
        assert_eq!(c.mqtt.listen.port(), 0);
        assert_eq!(c.envelope.max_bytes, 1000);
        assert_eq!(c.mqtt.max_inflight, 7);
    }

    #[test]
    fn errors_name_the_key() {
        let e = Config::from_layers(Some(("t.toml", "[mqtt]\nlisen = 1\n")), env(&[]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("lisen") && e.contains("[mqtt]"), "{e}");
        let e = Config::from_layers(None, env(&[("SEALRELAY_MQTT_MAX_INFLIGHT", "many")]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("SEALRELAY_MQTT_MAX_INFLIGHT"), "{e}");
        let e = Config::from_layers(None, env(&[("SEALRELAY_HTTP_LISTEN", "nowhere")]))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("http.listen") && e.contains("socket address"),
            "{e}"
        );
        let e = Config::from_layers(None, env(&[("SEALRELAY_HTTP_LISTNE", "x")]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("listne"), "{e}");
        assert!(!e.contains('\n'), "one line: {e}");
    }

    #[test]
    fn the_console_mqtt_url_is_a_plain_wss_url() {
        let with = |url: &str| {
            Config::from_layers(None, env(&[("SEALRELAY_HTTPS_CONSOLE_MQTT_URL", url)]))
                .map(|c| c.https.console_mqtt_url)
        };
        assert_eq!(
            with("wss://mqtt.example.com/mqtt").unwrap(),
            "wss://mqtt.example.com/mqtt"
        );
        assert_eq!(with("").unwrap(), "");
        for bad in [
            "ws://mqtt.example.com/mqtt",
            "wss://",
            "wss://a; script-src *",
            "wss://a b",
        ] {
            let e = with(bad).unwrap_err().to_string();
            assert!(
                e.contains("https.console_mqtt_url") && e.contains("wss://"),
                "{bad}: {e}"
            );
        }
    }
}
