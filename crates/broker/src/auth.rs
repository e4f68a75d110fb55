//! Login checks shared by MQTT CONNECT and the HTTP API: the verifier, a constant-time
//! comparison that costs the same for unknown and known logins, and failure limits per
//! source IP and per login.
//!
//! The login secret a client presents is derived from its password or token (see
//! `crypto`); the server stores only `SHA-256("sealrelay/v1/verifier" || secret)`. The
//! secret is high-entropy, so a fast hash suffices: guessing it from a stolen verifier
//! means guessing the password through Argon2id first.

use std::net::IpAddr;
use std::time::Duration;

use subtle::ConstantTimeEq;

use crate::config;
use crate::directory::{Credentials, Directory};
use crate::metrics;
use crate::rate::Windows;

/// Longest login (user name or instance id) accepted before any lookup.
pub const MAX_LOGIN_LEN: usize = 128;

pub use sealrelay_wire::verifier;

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// Unknown login and wrong secret are one case on purpose.
    #[error("login or secret is not valid")]
    Denied,
    #[error("too many failed logins from this address or for this login; retry later")]
    RateLimited,
}

pub struct Authenticator {
    /// Failed logins per source address and per login, over `auth.failure_window_secs`.
    by_ip: Windows<IpAddr>,
    by_login: Windows<String>,
}

impl Authenticator {
    pub fn new(cfg: &config::Auth) -> Self {
        let window = Duration::from_secs(cfg.failure_window_secs);
        Authenticator {
            by_ip: Windows::new(window, cfg.max_failures_per_ip),
            by_login: Windows::new(window, cfg.max_failures_per_login),
        }
    }

    /// Checks `secret` for `login` from `ip`; the same work is done whether or not the
    /// login exists, so neither the answer nor its timing tells which.
    pub fn authenticate(
        &self,
        directory: &Directory,
        ip: IpAddr,
        login: &str,
        secret: &str,
    ) -> Result<Credentials, AuthError> {
        let found = if login.is_empty() || login.len() > MAX_LOGIN_LEN {
            None
        } else {
            directory.credentials(login)
        };
        self.check(ip, login, secret, found.as_ref().map(|c| c.verifier))?;
        found.ok_or(AuthError::Denied)
    }

    /// Checks `secret` against `expected` (the verifier on record, `None` if there is none)
    /// under the failure limits of `ip` and `login`: for logins and for one-time codes alike.
    pub fn check(
        &self,
        ip: IpAddr,
        login: &str,
        secret: &str,
        expected: Option<[u8; 32]>,
    ) -> Result<(), AuthError> {
        if self.by_ip.full(&ip) || self.by_login.full(login) {
            metrics::auth_result("rate_limited");
            return Err(AuthError::RateLimited);
        }
        let presented = verifier(secret);
        let matches: bool = presented.ct_eq(&expected.unwrap_or([0u8; 32])).into();
        if expected.is_some() && matches {
            self.by_login.clear(login);
            metrics::auth_result("ok");
            return Ok(());
        }
        self.by_ip.count(ip);
        if login.len() <= MAX_LOGIN_LEN {
            self.by_login.count(login.to_owned());
        }
        metrics::auth_result("denied");
        Err(AuthError::Denied)
    }

    /// Clears `login`'s failure window (the operator's `unlock`); whether it was locked out.
    pub fn unlock(&self, login: &str) -> bool {
        self.by_login.clear(login)
    }

    /// Drops expired windows so the maps stay as small as the recent failures.
    pub fn prune(&self) {
        self.by_ip.prune();
        self.by_login.prune();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::{Digest, Sha256};

    #[test]
    fn verifier_is_domain_separated_sha256() {
        let plain: [u8; 32] = Sha256::digest(b"secret").into();
        assert_ne!(verifier("secret"), plain);
        assert_eq!(verifier("secret"), verifier("secret"));
    }

    use crate::config::Config;

    #[test]
    fn failures_block_after_the_limit_and_expire() {
        let a = Authenticator::new(&config::Auth {
            failure_window_secs: 60,
            max_failures_per_ip: 3,
            max_failures_per_login: 2,
            ..Config::default().auth
        });
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        a.by_login.count("alice".to_owned());
        assert!(!a.by_login.full("alice"));
        a.by_login.count("alice".to_owned());
        assert!(a.by_login.full("alice"));
        for _ in 0..3 {
            a.by_ip.count(ip);
        }
        assert!(a.by_ip.full(&ip));
        a.by_ip.backdate(&ip, Duration::from_secs(61));
        assert!(!a.by_ip.full(&ip), "an expired window no longer blocks");
        a.prune();
        assert!(a.by_ip.is_empty());
    }
}
