//! sealrelay-wire: the vocabulary the broker and its clients share, and nothing else —
//! principal ids, the topic scheme, the envelope's clear header, reason codes and close
//! labels, printable secret forms, and the JSON bodies of the HTTP API.
//!
//! `docs/protocol.md` and `docs/http-api.md` are the normative description; this crate is
//! their executable form, and tests keep the reason-code tables and these enums in step.
//! It depends on no other sealrelay crate and on no cryptography that could open an
//! envelope or unwrap a key: the witness is a SHA-256 fingerprint, nothing more.

#![warn(missing_docs)]

pub mod api;
pub mod b64;
pub mod envelope;
pub mod id;
pub mod kdf;
pub mod reason;
pub mod secret;
pub mod topic;

pub use id::{BadPrincipalId, PrincipalId, PrincipalKind};
pub use kdf::{KdfParams, KdfRefused, KdfSpec, CLIENT_CEILING, CLIENT_FLOOR};
pub use reason::{Close, Ending, Reason};
pub use secret::{split_secret_form, verifier, BadResetCode, ResetCode};
pub use topic::{inbox_owner, INBOX_PREFIX};
