//! sealrelay-broker: the blind relay. It authenticates consoles and instances, routes each
//! sealed envelope by its clear header to the recipient's live sessions, and records
//! metadata only (who, from where, when, how many bytes).
//!
//! - [`server`]: boot in order and shutdown as a protocol (signal, drain, record, close);
//! - [`config`]: `broker.toml` compiled in, then a file, then `SEALRELAY_*` variables;
//! - [`datadir`]: the files on disk, created private, and the single-node database lock;
//! - [`mqtt`]: listeners (TCP, TLS, WebSocket, WebSocket over TLS) feeding one session
//!   code through one stream abstraction, the codec for both protocol versions;
//! - [`tls`]: the broker's certificate, reloadable, and the rustls configurations;
//! - [`router`]: principal → live sessions, reached only through a `SessionHandle`;
//! - [`revocation`]: what a directory write ended, published once to the router;
//! - [`cluster`]: several nodes as one broker over NATS: who holds whom, deliveries to
//!   other nodes, directory changes and revocations published to them;
//! - [`directory`]: accounts, instances and pairings in SQLite or PostgreSQL, one module
//!   per aggregate, with the in-memory cache the hot path reads, fed by change events;
//! - [`peers`]: what counts as one client address, and the MQTT listeners' per-address
//!   shares (the HTTP listeners keep theirs, with a fair share, in `http`);
//! - [`http`], [`admin`]: the JSON API and the operator API; [`auth`]: verifiers and
//!   failure limits; [`rate`]: the one limiter, every rate budget's windows and their purge;
//!   [`accounting`]: metadata records and the session log; [`metrics`]: Prometheus names; [`memory`]: freed
//!   memory handed back to the system after floods.
//!
//! It uses sealrelay-wire for everything on the wire. It must never depend on the client
//! SDK or on `crypto_box`, `argon2` or `chacha20poly1305`: the broker has no code that could
//! open an envelope or unwrap a key, by construction (`.ci/run` checks with `cargo tree`).

pub mod accounting;
pub mod admin;
pub mod auth;
pub mod cluster;
pub mod config;
pub mod datadir;
pub mod directory;
pub mod http;
pub mod memory;
pub mod metrics;
pub mod mqtt;
pub mod peers;
pub mod rate;
pub mod revocation;
pub mod router;
pub mod server;
pub mod tls;

/// The commit the broker was built from (12 hex digits; "unknown" outside a git checkout).
pub const BUILD_COMMIT: &str = env!("SR_BUILD_COMMIT");

/// What `sealrelay --version` says: the version and the commit.
pub const VERSION_LINE: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("SR_BUILD_COMMIT"),
    ")"
);
