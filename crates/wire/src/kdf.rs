//! Argon2id parameters as they travel in the JSON API. The wire only carries them; the
//! client runs the KDF and the broker checks them against its floor and ceiling.

use serde::{Deserialize, Serialize};

use crate::b64;

/// Argon2id cost parameters, stored per account and returned by prelogin. The broker only
/// stores and checks them against its minimum; clients run the KDF.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct KdfParams {
    pub memory_kib: u32,
    pub iterations: u32,
    pub parallelism: u32,
}

/// A salt with its KDF parameters: the prelogin answer and part of a registration.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct KdfSpec {
    #[serde(with = "b64")]
    pub salt: Vec<u8>,
    #[serde(flatten)]
    pub params: KdfParams,
}
