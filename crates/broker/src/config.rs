//! Broker configuration: `broker.toml` compiled in as the defaults, an optional file on
//! top, then `SEALRELAY_<SECTION>_<KEY>` environment variables on top of that.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use sealrelay_wire::{KdfParams, KdfRefused, CLIENT_CEILING, CLIENT_FLOOR};
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
    pub cluster: Cluster,
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
    /// Leave core dumps on and the process dumpable (debugging only).
    pub allow_core_dumps: bool,
    /// IPv6 addresses count per prefix of this many bits in every per-address budget.
    pub ipv6_prefix_bits: u8,
}

impl Server {
    /// What one client address is, for every per-address budget.
    pub fn address_block(&self) -> crate::peers::AddressBlock {
        crate::peers::AddressBlock::new(self.ipv6_prefix_bits)
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Mqtt {
    #[serde(deserialize_with = "address")]
    pub listen: SocketAddr,
    pub proxy_protocol: bool,
    pub workers: usize,
    pub max_connections: usize,
    pub max_connections_per_ip: usize,
    pub max_sessions_per_principal: usize,
    pub connects_per_ip_per_minute: u32,
    pub connects_per_principal_per_minute: u32,
    pub max_packet_bytes: u32,
    pub connect_timeout_secs: u64,
    pub packet_timeout_secs: u64,
    pub send_timeout_secs: u64,
    pub publishes_per_second: u32,
    pub bytes_per_second: u64,
    pub socket_send_buffer_bytes: usize,
    pub outbound_queue_bytes: usize,
    pub outbound_total_bytes: usize,
    pub max_session_expiry_secs: u32,
    pub offline_queue_bytes: usize,
    pub offline_queue_messages: usize,
    pub offline_queue_max_age_secs: u64,
    pub offline_account_bytes: usize,
    pub offline_total_bytes: usize,
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
        resolve(text.trim())
            .map(|a| Listen(Some(a)))
            .map_err(|e| serde::de::Error::custom(format!("{e}, or \"\" to turn the listener off")))
    }
}

/// A listen address: `ip:port`, `[v6]:port`, or `host:port` resolved at start-up to the first
/// IPv4 address of the host (IPv6 if it has none).
fn resolve(text: &str) -> Result<SocketAddr, String> {
    if let Ok(addr) = text.parse() {
        return Ok(addr);
    }
    let shape =
        || format!("`{text}` is not an address: write host:port or ip:port (e.g. 127.0.0.1:1883)");
    let (host, port) = text.rsplit_once(':').ok_or_else(shape)?;
    let port: u16 = port.parse().map_err(|_| shape())?;
    let found: Vec<SocketAddr> = std::net::ToSocketAddrs::to_socket_addrs(&(host, port))
        .map_err(|e| format!("`{text}`: the host name `{host}` does not resolve ({e})"))?
        .collect();
    found
        .iter()
        .find(|a| a.is_ipv4())
        .or(found.first())
        .copied()
        .ok_or_else(|| format!("`{text}`: the host name `{host}` resolves to no address"))
}

fn address<'de, D: serde::Deserializer<'de>>(d: D) -> Result<SocketAddr, D::Error> {
    resolve(String::deserialize(d)?.trim()).map_err(serde::de::Error::custom)
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Mqtts {
    pub listen: Listen,
    pub proxy_protocol: bool,
    /// PEM file of CAs; when set, mqtts clients must present a certificate chaining to one.
    pub client_ca: PathBuf,
}

impl Mqtts {
    /// The client CA file, if one is set (an empty path means none).
    pub fn client_ca(&self) -> Option<&Path> {
        Some(self.client_ca.as_path()).filter(|p| !p.as_os_str().is_empty())
    }
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
    #[serde(deserialize_with = "address")]
    pub listen: SocketAddr,
    pub workers: usize,
    pub header_timeout_secs: u64,
    pub body_timeout_secs: u64,
    pub max_connections: usize,
    pub max_connections_per_ip: usize,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Admin {
    #[serde(deserialize_with = "address")]
    pub listen: SocketAddr,
    pub token_file: PathBuf,
    pub reset_code_ttl_secs: u64,
    pub invite_ttl_secs: u64,
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
    /// Empty: the SQLite file `database`. Else a `postgres://` URL without a password.
    pub url: String,
    pub prelogin_key_file: PathBuf,
    pub max_instances_per_user: u32,
}

/// Several broker nodes over NATS (`[cluster]`); an empty `nats_url` is a single node.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Cluster {
    pub nats_url: String,
    pub nats_user: String,
    /// Empty: plain TCP to NATS.
    pub nats_ca_file: PathBuf,
    pub answer_timeout_ms: u64,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Auth {
    pub failure_window_secs: u64,
    pub max_failures_per_ip: u32,
    pub max_failures_per_login: u32,
    pub max_failures_per_login_all_addresses: u32,
    pub trusted_address_days: u32,
    pub registrations_per_ip_per_hour: u32,
    pub prelogins_per_ip_per_minute: u32,
    pub resets_per_ip_per_hour: u32,
    pub previous_key_days: u32,
    pub registration: Registration,
}

/// Who may create an account (`auth.registration`).
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Registration {
    /// Anyone, within `auth.registrations_per_ip_per_hour`.
    Open,
    /// Whoever holds a one-time invite code from the operator (`sealrelay admin invite`).
    Invite,
    /// Nobody: the operator's users exist already.
    Closed,
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

impl Kdf {
    /// The parameters new accounts get, and unknown names get from prelogin.
    pub fn advertised(&self) -> KdfParams {
        KdfParams {
            memory_kib: self.memory_kib,
            iterations: self.iterations,
            parallelism: self.parallelism,
        }
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Accounting {
    pub retention_days: u32,
    pub aggregate_below_secs: u64,
    pub checkpoint_secs: u64,
    pub ip_mode: IpMode,
}

/// How much of a client's address the broker writes down (`accounting.ip_mode`): in log
/// lines today, and what accounting records.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum IpMode {
    /// The whole address.
    Full,
    /// IPv4 to its /24, IPv6 to its /48: the network, not the host.
    Truncated,
    /// Nothing: `-`.
    None,
}

impl IpMode {
    /// `ip` as this mode writes it.
    pub fn show(self, ip: std::net::IpAddr) -> String {
        use std::net::IpAddr;
        match (self, ip) {
            (IpMode::Full, ip) => ip.to_string(),
            (IpMode::Truncated, IpAddr::V4(v4)) => {
                let [a, b, c, _] = v4.octets();
                format!("{a}.{b}.{c}.0/24")
            }
            (IpMode::Truncated, IpAddr::V6(v6)) => {
                let s = v6.segments();
                let network = std::net::Ipv6Addr::new(s[0], s[1], s[2], 0, 0, 0, 0, 0);
                format!("{network}/48")
            }
            (IpMode::None, _) => "-".to_owned(),
        }
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Log {
    pub level: String,
    pub format: LogFormat,
    /// A line per MQTT session opened and closed (off for very large fleets).
    pub connections: bool,
}

/// How log lines are written (`log.format`).
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// `time LEVEL span{fields}: target: message fields`, for people.
    Text,
    /// One JSON object per line, for log collectors.
    Json,
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
    /// Several problems, one line each.
    #[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))]
    Problems(Vec<ConfigError>),
    /// What the caller found beyond the text (a file the config names that will not load).
    #[error("{0}")]
    Beyond(String),
}

impl Default for Config {
    fn default() -> Self {
        Config::from_layers(None, std::iter::empty()).expect("the embedded broker.toml is valid")
    }
}

/// The keys that name files.
const PATH_KEYS: [(&str, &str); 7] = [
    ("directory", "database"),
    ("directory", "prelogin_key_file"),
    ("admin", "token_file"),
    ("tls", "cert_file"),
    ("tls", "key_file"),
    ("mqtts", "client_ca"),
    ("cluster", "nats_ca_file"),
];

/// A relative file path written in the config file `origin` names a file beside that config,
/// wherever the broker or the admin CLI runs from: both are given the config, not always the
/// same working directory. Defaults and variables stay relative to the working directory.
fn beside_file(origin: &str, section: &str, key: &str, value: &mut toml::Value) {
    let dir = Path::new(origin).parent().unwrap_or(Path::new(""));
    if let toml::Value::String(path) = value {
        if PATH_KEYS.contains(&(section, key)) && !path.is_empty() && Path::new(path).is_relative()
        {
            *path = dir.join(&*path).to_string_lossy().into_owned();
        }
    }
}

impl Config {
    /// Defaults, then `path` if given, then the process environment.
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        Config::load_checking(path, |_| Vec::new())
    }

    /// [`Config::load`], with what `beyond` finds wrong in a config that parsed (the files it
    /// names, say) reported with the config's own problems: all of them at once.
    pub fn load_checking(
        path: Option<&Path>,
        beyond: impl FnOnce(&Config) -> Vec<String>,
    ) -> Result<Config, ConfigError> {
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
        Config::layers_checking(
            file.as_ref()
                .map(|(name, text)| (name.as_str(), text.as_str())),
            std::env::vars(),
            beyond,
        )
    }

    /// Merges the layers; `file` is `(name for messages, contents)`.
    pub fn from_layers(
        file: Option<(&str, &str)>,
        env: impl Iterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        Config::layers_checking(file, env, |_| Vec::new())
    }

    fn layers_checking(
        file: Option<(&str, &str)>,
        env: impl Iterator<Item = (String, String)>,
        beyond: impl FnOnce(&Config) -> Vec<String>,
    ) -> Result<Config, ConfigError> {
        let mut table = parse_table("broker.toml (embedded)", DEFAULT_TOML)?;
        // Where each key that is not a default was set, for messages: `in FILE` or `from VAR`.
        let mut origins = Origins::new();
        if let Some((origin, text)) = file {
            let overlay = parse_table(origin, text)?;
            // Every unknown name at once, one line each.
            let mut unknown = Vec::new();
            for (section, values) in overlay {
                let mut invalid = |message: String| {
                    unknown.push(ConfigError::Invalid {
                        origin: origin.to_owned(),
                        message,
                    })
                };
                let Some(target) = table.get_mut(&section).and_then(|v| v.as_table_mut()) else {
                    invalid(format!("unknown section [{section}]"));
                    continue;
                };
                let toml::Value::Table(values) = values else {
                    invalid(format!("`{section}` must be a [section]"));
                    continue;
                };
                for (key, mut value) in values {
                    if !target.contains_key(&key) {
                        invalid(format!("unknown key `{key}` in [{section}]"));
                        continue;
                    }
                    origins.insert(format!("{section}.{key}"), format!("in {origin}"));
                    beside_file(origin, &section, &key, &mut value);
                    target.insert(key, value);
                }
            }
            all_at_once(unknown)?;
        }
        apply_env(&mut table, env, &mut origins)?;
        // Deserialise from text rather than from the table: only then does an error carry
        // a span, which is how the message gets to name the offending key.
        let merged = toml::to_string(&table).expect("a toml table serialises");
        toml::from_str::<Config>(&merged)
            .map_err(|e| {
                let key = e.span().and_then(|span| key_at(&merged, span.start));
                ConfigError::Invalid {
                    origin: key.map_or_else(|| "config".into(), |k| placed(&k, &origins)),
                    message: plain_words(e.message().trim()),
                }
            })
            .and_then(|config| {
                let beyond = beyond(&config);
                config.validate(&origins, beyond)
            })
    }

    fn validate(self, origins: &Origins, beyond: Vec<String>) -> Result<Config, ConfigError> {
        let invalid = |key: &str, message: String| ConfigError::Invalid {
            origin: placed(key, origins),
            message,
        };
        // Every problem at once, one line each: an operator fixes them in one pass.
        let mut problems = Vec::new();
        if let Err(problem) = check_directory_url(&self.directory.url) {
            problems.push(invalid("directory.url", problem.into()));
        }
        if let Err((key, problem)) = check_cluster(&self.cluster, &self.directory) {
            problems.push(invalid(key, problem.into()));
        }
        // Topic, header and MQTT framing ride on top of the envelope.
        if u64::from(self.mqtt.max_packet_bytes) < u64::from(self.envelope.max_bytes) + 512 {
            problems.push(invalid(
                "mqtt.max_packet_bytes",
                format!(
                    "must be at least envelope.max_bytes + 512 ({})",
                    u64::from(self.envelope.max_bytes) + 512
                ),
            ));
        }
        // Clients derive only within their bounds (protocol §2.1): advertised parameters
        // outside them would leave new accounts, and unknown names, refused by every client.
        if self.kdf.memory_kib < self.kdf.min_memory_kib
            || self.kdf.iterations < self.kdf.min_iterations
        {
            problems.push(invalid(
                "kdf.memory_kib",
                "memory_kib and iterations must not be below min_memory_kib and min_iterations"
                    .into(),
            ));
        } else if let Err(refused) = self.kdf.advertised().within_client_bounds() {
            let (floor, ceiling) = (CLIENT_FLOOR, CLIENT_CEILING);
            problems.push(invalid(
                "kdf.memory_kib",
                format!(
                    "memory_kib, iterations and parallelism must be within what clients derive with \
                     ({}..={} KiB, {}..={} passes, {}..={} lanes); {}",
                    floor.memory_kib, ceiling.memory_kib, floor.iterations, ceiling.iterations,
                    floor.parallelism, ceiling.parallelism,
                    match refused {
                        KdfRefused::BelowFloor(_) => "these are below",
                        KdfRefused::AboveCeiling(_) => "these are above",
                    }
                ),
            ));
        }
        // Live deliveries keep what parked sessions may not take, and one account's share of
        // the parked bytes leaves room for others.
        let m = &self.mqtt;
        if !(m.offline_queue_bytes <= m.offline_account_bytes
            && m.offline_account_bytes <= m.offline_total_bytes
            && m.offline_total_bytes < m.outbound_total_bytes)
        {
            problems.push(invalid(
                "mqtt.offline_total_bytes",
                "must be offline_queue_bytes <= offline_account_bytes <= offline_total_bytes < outbound_total_bytes, so live deliveries keep a reserve parked sessions cannot take".into(),
            ));
        }
        if !(1..=128).contains(&self.server.ipv6_prefix_bits) {
            problems.push(invalid(
                "server.ipv6_prefix_bits",
                "must be 1..=128 (64: one site's subnet)".into(),
            ));
        }
        if self.mqtt.max_connections == 0 || self.mqtt.max_connections_per_ip == 0 {
            problems.push(invalid(
                "mqtt.max_connections",
                "max_connections and max_connections_per_ip must be at least 1".into(),
            ));
        }
        for (key, value) in [
            (
                "mqtt.max_sessions_per_principal",
                self.mqtt.max_sessions_per_principal as u64,
            ),
            ("mqtt.max_inflight", u64::from(self.mqtt.max_inflight)),
            (
                "http.max_connections_per_ip",
                self.http.max_connections_per_ip as u64,
            ),
            ("http.header_timeout_secs", self.http.header_timeout_secs),
            ("tls.reload_check_secs", self.tls.reload_check_secs),
            ("mqtt.packet_timeout_secs", self.mqtt.packet_timeout_secs),
            ("mqtt.send_timeout_secs", self.mqtt.send_timeout_secs),
            // A limit of 0 would refuse every login.
            ("auth.failure_window_secs", self.auth.failure_window_secs),
            (
                "auth.max_failures_per_ip",
                u64::from(self.auth.max_failures_per_ip),
            ),
            (
                "auth.max_failures_per_login",
                u64::from(self.auth.max_failures_per_login),
            ),
            (
                "auth.max_failures_per_login_all_addresses",
                u64::from(self.auth.max_failures_per_login_all_addresses),
            ),
            (
                "accounting.checkpoint_secs",
                self.accounting.checkpoint_secs,
            ),
        ] {
            if value == 0 {
                problems.push(invalid(key, "must be at least 1".into()));
            }
        }
        if self.tls.cert_file.as_os_str().is_empty() != self.tls.key_file.as_os_str().is_empty() {
            problems.push(invalid(
                "tls.cert_file",
                "set both tls.cert_file and tls.key_file, or neither (a development certificate is generated)".into(),
            ));
        }
        for (key, ws) in [("ws.path", &self.ws), ("wss.path", &self.wss)] {
            if !ws.path.starts_with('/') {
                problems.push(invalid(key, "must start with /".into()));
            }
        }
        // It goes into the console's Content-Security-Policy header: plain URL characters only.
        let url = &self.https.console_mqtt_url;
        let plain = |c: char| c.is_ascii_graphic() && !matches!(c, ';' | ',' | '\'' | '"');
        let valid = url.is_empty()
            || (url.len() > 6 && url.starts_with("wss://") && url.chars().all(plain));
        if !valid {
            problems.push(invalid(
                "https.console_mqtt_url",
                "must be a wss:// URL (a page served over HTTPS may open no other WebSocket), or empty".into(),
            ));
        }
        if let Err(e) = crate::mqtt::proxy::TrustedProxies::parse(&self.server.trusted_proxies) {
            problems.push(invalid("server.trusted_proxies", e));
        }
        if let Err(e) = check_log_filter(&self.log.level) {
            problems.push(invalid("log.level", e));
        }
        for (key, other) in self.shared_listen_addresses() {
            problems.push(invalid(
                key,
                format!("is the address {other} listens on too: each listener needs its own (port 0 picks a free one)"),
            ));
        }
        problems.extend(beyond.into_iter().map(ConfigError::Beyond));
        all_at_once(problems)?;
        Ok(self)
    }

    /// Pairs of listeners that would bind the same address (`serve` would fail on the
    /// second): `(key, the key it clashes with)`. A wildcard address (0.0.0.0, ::) takes its
    /// port on every address; port 0 is a free port each time.
    fn shared_listen_addresses(&self) -> Vec<(&'static str, &'static str)> {
        let listeners = [
            ("mqtt.listen", Some(self.mqtt.listen)),
            ("mqtts.listen", self.mqtts.listen.0),
            ("ws.listen", self.ws.listen.0),
            ("wss.listen", self.wss.listen.0),
            ("http.listen", Some(self.http.listen)),
            ("https.listen", self.https.listen.0),
            ("admin.listen", Some(self.admin.listen)),
        ];
        let on: Vec<(&'static str, SocketAddr)> = listeners
            .into_iter()
            .filter_map(|(key, addr)| Some((key, addr?)))
            .filter(|(_, addr)| addr.port() != 0)
            .collect();
        let mut clashes = Vec::new();
        for (i, (key, addr)) in on.iter().enumerate() {
            if let Some((other, _)) = on[..i].iter().find(|(_, earlier)| {
                earlier.port() == addr.port()
                    && (earlier.ip() == addr.ip()
                        || earlier.ip().is_unspecified()
                        || addr.ip().is_unspecified())
            }) {
                clashes.push((*key, *other));
            }
        }
        clashes
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
fn key_at(text: &str, at: usize) -> Option<String> {
    let before = &text[..at.min(text.len())];
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let line = text[line_start..].lines().next().unwrap_or("");
    let key = line.split('=').next().unwrap_or("").trim();
    let section = before
        .lines()
        .rev()
        .find_map(|l| l.trim().strip_prefix('[').and_then(|l| l.strip_suffix(']')))?;
    Some(if key.is_empty() {
        format!("[{section}]")
    } else {
        format!("{section}.{key}")
    })
}

/// Where keys were set: `section.key` → `in FILE` / `from VARIABLE`.
type Origins = std::collections::HashMap<String, String>;

/// Nothing, one problem, or several reported as one error with a line each.
fn all_at_once(mut problems: Vec<ConfigError>) -> Result<(), ConfigError> {
    match problems.len() {
        0 => Ok(()),
        1 => Err(problems.remove(0)),
        _ => Err(ConfigError::Problems(problems)),
    }
}

/// `directory.url` is empty or a PostgreSQL URL, and names no password: the configuration
/// is shown by `check-config` and copied around, so the password comes from PGPASSWORD or
/// ~/.pgpass, as for psql.
fn check_directory_url(url: &str) -> Result<(), &'static str> {
    if url.is_empty() {
        return Ok(());
    }
    let parsed = url::Url::parse(url).map_err(|_| {
        "is not a URL: leave it empty for the SQLite file directory.database, or give postgres://user@host:port/database"
    })?;
    if !matches!(parsed.scheme(), "postgres" | "postgresql") {
        return Err("names no PostgreSQL database: leave it empty for the SQLite file directory.database, or give postgres://user@host:port/database");
    }
    if parsed.password().is_some() {
        return Err(
            "carries a password: remove it from the URL and give it in PGPASSWORD or ~/.pgpass",
        );
    }
    Ok(())
}

/// A cluster names its NATS servers by URL without credentials, logs in as a user, and
/// shares a PostgreSQL directory: nodes on SQLite files would each have their own accounts.
fn check_cluster(
    cluster: &Cluster,
    directory: &Directory,
) -> Result<(), (&'static str, &'static str)> {
    if cluster.nats_url.is_empty() {
        return Ok(());
    }
    for url in cluster.nats_url.split(',') {
        let parsed = url::Url::parse(url.trim()).map_err(|_| {
            ("cluster.nats_url", "is not a URL: give nats://host:4222 (several separated by commas), or leave it empty for a single node")
        })?;
        if !matches!(parsed.scheme(), "nats" | "tls") {
            return Err((
                "cluster.nats_url",
                "names no NATS server: give nats://host:4222, or leave it empty for a single node",
            ));
        }
        if parsed.password().is_some() || !parsed.username().is_empty() {
            return Err(("cluster.nats_url", "carries credentials: remove them, name the user in cluster.nats_user and give the password in NATS_PASSWORD"));
        }
    }
    if cluster.nats_user.is_empty() {
        return Err((
            "cluster.nats_user",
            "is empty: a node logs in to NATS as a user (with NATS_PASSWORD), never anonymously",
        ));
    }
    if directory.url.is_empty() {
        return Err(("directory.url", "is empty, but cluster.nats_url is set: the nodes of a cluster share one PostgreSQL directory, give its postgres:// URL"));
    }
    if cluster.answer_timeout_ms == 0 {
        return Err((
            "cluster.answer_timeout_ms",
            "is 0: give the milliseconds a node waits for another's answer, e.g. 2000",
        ));
    }
    Ok(())
}

/// `key` with where it was set: `mqtt.max_inflight in broker.toml`,
/// `mqtt.listen from SEALRELAY_MQTT_LISTEN`, or the bare key for an embedded default.
fn placed(key: &str, origins: &Origins) -> String {
    match origins.get(key) {
        Some(origin) => format!("{key} {origin}"),
        None => key.to_owned(),
    }
}

/// serde's messages in an operator's words: `invalid type: string "x", expected u16`
/// becomes `expected a whole number from 0 to 65535, got the text "x"`.
fn plain_words(message: &str) -> String {
    let expected = |what: &str| match what {
        "u8" => "a whole number from 0 to 255".to_owned(),
        "u16" => "a whole number from 0 to 65535".to_owned(),
        "u32" => "a whole number from 0 to 4294967295".to_owned(),
        "u64" | "usize" => "a whole number, 0 or more".to_owned(),
        "a boolean" => "true or false".to_owned(),
        "a sequence" => "a list, e.g. [\"a\", \"b\"]".to_owned(),
        other => other.to_owned(),
    };
    let got = |what: &str| {
        if let Some(text) = what.strip_prefix("string ") {
            format!("the text {text}")
        } else if let Some((kind, value)) = what.split_once(' ') {
            format!("the {kind} {}", value.trim_matches('`'))
        } else {
            what.to_owned()
        }
    };
    let Some(rest) = message
        .strip_prefix("invalid type: ")
        .or_else(|| message.strip_prefix("invalid value: "))
    else {
        return message.to_owned();
    };
    match rest.rsplit_once(", expected ") {
        Some((found, wanted)) => format!("expected {}, got {}", expected(wanted), got(found)),
        None => message.to_owned(),
    }
}

/// A `log.level` filter that means something: every directive is a level (`off`, `error`,
/// `warn`, `info`, `debug`, `trace`), alone or for a target (`sealrelay_broker=debug`). A bare
/// word that is no level would otherwise parse as a target name and silence all logging.
fn check_log_filter(filter: &str) -> Result<(), String> {
    let directives: Vec<&str> = filter
        .split(',')
        .map(str::trim)
        .filter(|d| !d.is_empty())
        .collect();
    if directives.is_empty() {
        return Err("is empty: use info (or off, error, warn, debug, trace)".into());
    }
    for directive in directives {
        let level = directive.rsplit_once('=').map_or(directive, |(_, l)| l);
        if level
            .parse::<tracing_subscriber::filter::LevelFilter>()
            .is_err()
        {
            return Err(format!(
                "`{directive}` names no level: use off, error, warn, info, debug or trace, alone or per module (e.g. \"info,sealrelay_broker=debug\")"
            ));
        }
    }
    tracing_subscriber::EnvFilter::try_new(filter)
        .map(drop)
        .map_err(|e| e.to_string())
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

/// Variables of the `sealrelay` client commands: the broker leaves them alone. Any other
/// `SEALRELAY_*` variable must name a config key (the test harness uses `SRTEST_*`).
pub const CLIENT_VARIABLES: &[&str] = &[
    "SEALRELAY_SERVER",
    "SEALRELAY_BROKER",
    "SEALRELAY_CA_FILE",
    "SEALRELAY_STATE_DIR",
    "SEALRELAY_USER",
    "SEALRELAY_PASSWORD",
    "SEALRELAY_NEW_PASSWORD",
    "SEALRELAY_RESET_CODE",
    "SEALRELAY_TOKEN",
    "SEALRELAY_INVITE",
];

/// `SEALRELAY_MQTT_LISTEN=…` sets `mqtt.listen`. A `SEALRELAY_*` variable that names no key
/// (and is not one of the client's) is refused with the nearest key, since it is a typo that
/// would otherwise be silently ignored.
fn apply_env(
    table: &mut toml::Table,
    env: impl Iterator<Item = (String, String)>,
    origins: &mut Origins,
) -> Result<(), ConfigError> {
    for (name, raw) in env {
        let Some(rest) = name.strip_prefix("SEALRELAY_") else {
            continue;
        };
        if CLIENT_VARIABLES.contains(&name.as_str()) {
            continue;
        }
        let found = rest.split_once('_').and_then(|(section, key)| {
            let (section, key) = (section.to_ascii_lowercase(), key.to_ascii_lowercase());
            let target = table.get(&section)?.as_table()?;
            target.contains_key(&key).then_some((section, key))
        });
        let Some((section, key)) = found else {
            return Err(ConfigError::Invalid {
                origin: name.clone(),
                message: format!(
                    "names no config key (did you mean {}?); see broker.toml",
                    nearest_variable(table, &name)
                ),
            });
        };
        let target = table[&section]
            .as_table_mut()
            .expect("a section is a table");
        let current = &target[&key];
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
                    origin: format!("{section}.{key} from {name}"),
                    message: format!(
                        "expected {}, got `{raw}`",
                        match current.type_str() {
                            "integer" => "a whole number",
                            "boolean" => "true or false",
                            "array" => "a list, e.g. [\"a\", \"b\"]",
                            other => other,
                        }
                    ),
                })?,
        };
        origins.insert(format!("{section}.{key}"), format!("from {name}"));
        target.insert(key, value);
    }
    Ok(())
}

/// The config variable closest to `name` (by edit distance), for a typo's hint.
fn nearest_variable(table: &toml::Table, name: &str) -> String {
    table
        .iter()
        .filter_map(|(section, keys)| Some((section, keys.as_table()?)))
        .flat_map(|(section, keys)| {
            keys.keys()
                .map(move |key| format!("SEALRELAY_{}_{}", section, key).to_ascii_uppercase())
        })
        .chain(CLIENT_VARIABLES.iter().map(|v| v.to_string()))
        .min_by_key(|candidate| strsim::levenshtein(candidate, name))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What each `accounting.ip_mode` writes of an address: all of it, its network, nothing.
    #[test]
    fn ip_modes_write_the_address_its_network_or_nothing() {
        let v4: std::net::IpAddr = "203.0.113.77".parse().unwrap();
        let v6: std::net::IpAddr = "2001:db8:abcd:12::1".parse().unwrap();
        assert_eq!(IpMode::Full.show(v4), "203.0.113.77");
        assert_eq!(IpMode::Truncated.show(v4), "203.0.113.0/24");
        assert_eq!(IpMode::Truncated.show(v6), "2001:db8:abcd::/48");
        assert_eq!(IpMode::None.show(v6), "-");
    }

    #[test]
    fn relative_paths_in_a_config_file_name_files_beside_it() {
        let file = "[directory]\ndatabase = \"state/db.sqlite\"\n[admin]\ntoken_file = \"/abs/token\"\n[tls]\ncert_file = \"tls/chain.pem\"\nkey_file = \"tls/key.pem\"\n[log]\nlevel = \"data/x\"\n";
        let err = Config::from_layers(Some(("/etc/sealrelay/broker.toml", file)), env(&[]));
        // log.level is not a path (and "data/x" no level): untouched, and refused as such.
        assert!(err.unwrap_err().to_string().contains("log.level"));
        let file = file.replace("level = \"data/x\"", "level = \"info\"");
        let c = Config::from_layers(
            Some(("/etc/sealrelay/broker.toml", &file)),
            env(&[("SEALRELAY_DIRECTORY_PRELOGIN_KEY_FILE", "keys/prelogin.key")]),
        )
        .unwrap();
        assert_eq!(
            c.directory.database,
            PathBuf::from("/etc/sealrelay/state/db.sqlite")
        );
        assert_eq!(
            c.tls.cert_file,
            PathBuf::from("/etc/sealrelay/tls/chain.pem")
        );
        assert_eq!(
            c.admin.token_file,
            PathBuf::from("/abs/token"),
            "absolute: as written"
        );
        assert_eq!(
            c.directory.prelogin_key_file,
            PathBuf::from("keys/prelogin.key"),
            "a variable: the working directory's"
        );
        assert_eq!(
            c.mqtts.client_ca,
            PathBuf::new(),
            "empty: off, not a directory"
        );
        // A config named by a relative path: relative to the working directory, as before.
        let c = Config::from_layers(Some(("broker.toml", &file)), env(&[])).unwrap();
        assert_eq!(c.directory.database, PathBuf::from("state/db.sqlite"));
    }

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
    fn errors_name_the_key_where_it_was_set_and_what_it_should_be() {
        let error = |file: Option<&str>, vars: &[(&str, &str)]| {
            Config::from_layers(file.map(|f| ("site.toml", f)), env(vars))
                .unwrap_err()
                .to_string()
        };
        let e = error(Some("[mqtt]\nlisen = 1\n"), &[]);
        assert_eq!(e, "site.toml: unknown key `lisen` in [mqtt]");
        let e = error(Some("[mqtt]\nmax_inflight = \"x\"\n"), &[]);
        assert_eq!(
            e,
            "mqtt.max_inflight in site.toml: expected a whole number from 0 to 65535, got the text \"x\""
        );
        let e = error(Some("[mqtt]\nmax_inflight = 70000\n"), &[]);
        assert_eq!(
            e,
            "mqtt.max_inflight in site.toml: expected a whole number from 0 to 65535, got the integer 70000"
        );
        let e = error(Some("[ws]\nallowed_origins = \"https://a\"\n"), &[]);
        assert!(
            e.starts_with("ws.allowed_origins in site.toml: expected a list"),
            "{e}"
        );
        let e = error(None, &[("SEALRELAY_MQTT_MAX_INFLIGHT", "many")]);
        assert_eq!(
            e,
            "mqtt.max_inflight from SEALRELAY_MQTT_MAX_INFLIGHT: expected a whole number, got `many`"
        );
        let e = error(None, &[("SEALRELAY_HTTP_LISTEN", "nowhere")]);
        assert!(
            e.starts_with("http.listen from SEALRELAY_HTTP_LISTEN: `nowhere` is not an address"),
            "{e}"
        );
        let e = error(
            Some("[kdf]\nmemory_kib = 1024\n[mqtt]\nmax_connections = 0\n"),
            &[],
        );
        assert_eq!(
            e,
            "kdf.memory_kib in site.toml: memory_kib and iterations must not be below min_memory_kib and min_iterations\n\
             mqtt.max_connections in site.toml: max_connections and max_connections_per_ip must be at least 1",
            "every problem, one line each"
        );
    }

    #[test]
    fn advertised_kdf_parameters_outside_the_client_bounds_are_refused() {
        let error = |file: &str| {
            Config::from_layers(Some(("site.toml", file)), env(&[]))
                .unwrap_err()
                .to_string()
        };
        let e = error("[kdf]\nmemory_kib = 2097152\n");
        assert!(
            e.starts_with("kdf.memory_kib in site.toml: memory_kib, iterations and parallelism must be within what clients derive with (19456..=1048576 KiB")
                && e.ends_with("these are above"),
            "{e}"
        );
        let e = error("[kdf]\nmin_iterations = 1\niterations = 1\n");
        assert!(e.ends_with("these are below"), "{e}");
    }

    #[test]
    fn a_mistyped_variable_is_refused_with_the_nearest_key() {
        for (typo, hint) in [
            ("SEALRELAY_MQQT_LISTEN", "SEALRELAY_MQTT_LISTEN"),
            ("SEALRELAY_HTTP_LISTNE", "SEALRELAY_HTTP_LISTEN"),
            ("SEALRELAY_PASWORD", "SEALRELAY_PASSWORD"),
            ("SEALRELAY_LOGLEVEL", "SEALRELAY_LOG_LEVEL"),
        ] {
            let e = Config::from_layers(None, env(&[(typo, "x")]))
                .unwrap_err()
                .to_string();
            assert_eq!(
                e,
                format!("{typo}: names no config key (did you mean {hint}?); see broker.toml")
            );
        }
        // The client's own variables are not the broker's business.
        Config::from_layers(
            None,
            env(&[("SEALRELAY_PASSWORD", "x"), ("SEALRELAY_SERVER", "y")]),
        )
        .unwrap();
    }

    #[test]
    fn listen_addresses_take_host_names() {
        let c = Config::from_layers(
            Some((
                "t.toml",
                "[mqtt]\nlisten = \"localhost:1883\"\n[wss]\nlisten = \"localhost:0\"\n",
            )),
            env(&[]),
        )
        .unwrap();
        assert_eq!(c.mqtt.listen, "127.0.0.1:1883".parse().unwrap());
        assert_eq!(c.wss.listen.0, Some("127.0.0.1:0".parse().unwrap()));
        let e = Config::from_layers(
            None,
            env(&[("SEALRELAY_MQTT_LISTEN", "no-such-host.invalid:1883")]),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("`no-such-host.invalid` does not resolve"), "{e}");
    }

    #[test]
    fn a_log_filter_that_names_no_level_is_refused() {
        for bad in [
            "debgu",
            "warning",
            "verbose!!",
            "",
            "info,sealrelay_broker=loud",
        ] {
            let e = Config::from_layers(None, env(&[("SEALRELAY_LOG_LEVEL", bad)]))
                .unwrap_err()
                .to_string();
            assert!(
                e.starts_with("log.level from SEALRELAY_LOG_LEVEL: "),
                "{bad}: {e}"
            );
        }
        for good in ["info", "warn", "info,sealrelay_broker=debug", "off"] {
            Config::from_layers(None, env(&[("SEALRELAY_LOG_LEVEL", good)])).unwrap();
        }
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
