//! sealrelay: a blind relay broker.
//!
//! Consoles and edge instances exchange sealed envelopes through an MQTT broker that
//! routes on each envelope's clear header and cannot open its body. The crate holds both
//! sides; the module layout keeps them apart:
//!
//! - shared wire types: [`protocol`] (ids, topics, reason codes), [`envelope`] (the clear header);
//! - the broker: [`config`], [`mqtt`] (listener, codec, one actor per session), [`router`]
//!   (principal → live sessions), [`directory`] (accounts, instances, pairings), [`auth`]
//!   (verifiers, failure limits), [`http`] (JSON API), [`accounting`] (metadata only),
//!   [`metrics`], and [`server`] which starts them together;
//! - the client side: [`crypto`] (key derivation, wrapping, sealing) and [`client`] (the SDK
//!   used by the CLI and the load tests). No broker module imports either.

pub mod accounting;
pub mod auth;
pub mod client;
pub mod config;
pub mod crypto;
pub mod directory;
pub mod envelope;
pub mod http;
pub mod metrics;
pub mod mqtt;
pub mod protocol;
pub mod router;
pub mod server;
