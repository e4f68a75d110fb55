//! Login checks shared by MQTT CONNECT and the HTTP API: the verifier, a constant-time
//! comparison that costs the same for unknown and known logins, and failure limits that
//! throttle guessing without handing an attacker a switch that locks a user out:
//!
//! - per (login, source address), hard: one address guessing one login;
//! - per source address, hard: one address guessing many logins;
//! - per login over every address: a distributed guesser. Past this limit the login is
//!   still admitted from the addresses it logged in from successfully lately (its *trusted
//!   addresses*), so failures sent from elsewhere cannot lock the real user out where the
//!   user actually is. Per-address limits still apply there.
//!
//! Trusted addresses are windows of the limiter (`Counted::Trusted`, `auth.trusted_address_days`
//! from the last login there), so a cluster's nodes share them as they share failures; in
//! memory, a restart forgets them.
//!
//! The login secret a client presents is derived from its password or token (see
//! `crypto`); the server stores only `SHA-256("sealrelay/v1/verifier" || secret)`. The
//! secret is high-entropy, so a fast hash suffices: guessing it from a stolen verifier
//! means guessing the password through Argon2id first.

use std::net::IpAddr;
use std::sync::Arc;

use subtle::ConstantTimeEq;

use crate::accounting::ledger::Ledger;
use crate::config;
use crate::directory::{Credentials, Directory};
use crate::metrics;
use crate::rate::{Counted, Limiter};

/// Longest login (user name or instance id) accepted before any lookup.
pub const MAX_LOGIN_LEN: usize = 128;

/// The verifier of a presented secret (protocol §2.3), leaving no copy of the secret behind:
/// the hash's state, which holds the secret's text, lies in the stack frames below this one,
/// and they are zeroed before returning (a login secret lives in memory only for its check).
pub fn verifier(secret: &str) -> [u8; 32] {
    let verifier = sealrelay_wire::verifier(secret);
    crate::memory::scrub_stack::<4096>();
    verifier
}

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// Unknown login and wrong secret are one case on purpose.
    #[error("login or secret is not valid")]
    Denied,
    #[error("too many failed logins from this address or for this login; retry later")]
    RateLimited,
}

pub struct Authenticator {
    /// Counts failed logins over `auth.failure_window_secs`: per source address, per
    /// (login, address) and per login from every address.
    limiter: Arc<Limiter>,
    /// How a refused login's address is written in its log line (`accounting.ip_mode`).
    ip_mode: config::IpMode,
    /// Where failed logins against existing principals are recorded, per hour.
    ledger: Ledger,
}

impl Authenticator {
    pub fn new(ip_mode: config::IpMode, (limiter, ledger): (Arc<Limiter>, Ledger)) -> Self {
        Authenticator {
            limiter,
            ledger,
            ip_mode,
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
        let checked = self.check(ip, login, secret, found.as_ref().map(|c| c.verifier));
        if let (Err(e), Some(found)) = (&checked, &found) {
            // Only against a name that exists: a name that does not may be a password typed
            // into the wrong field, and is never written down.
            let reason = match e {
                AuthError::Denied => "denied",
                AuthError::RateLimited => "rate_limited",
            };
            self.ledger.login_failed(found.id, ip, reason);
        }
        checked?;
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
        // An over-long login names nobody: only its address is counted.
        let named = login.len() <= MAX_LOGIN_LEN;
        let pair = || Counted::FailureOfFrom(login.to_owned(), ip);
        let everywhere = || Counted::FailureOf(login.to_owned());
        let limiter = &self.limiter;
        let limited = (named && limiter.full(pair()))
            || (!(named && limiter.full(Counted::Trusted(login.to_owned(), ip)))
                && (limiter.full(Counted::FailureFrom(ip))
                    || (named && limiter.full(everywhere()))));
        let refused = |reason: &str| {
            tracing::info!(
                login = if named { login } else { "(longer than a login)" },
                ip = %self.ip_mode.show(ip),
                reason,
                "login refused"
            );
        };
        if limited {
            metrics::auth_result("rate_limited");
            refused("rate_limited");
            return Err(AuthError::RateLimited);
        }
        let presented = verifier(secret);
        let matches: bool = presented.ct_eq(&expected.unwrap_or([0u8; 32])).into();
        if expected.is_some() && matches {
            if named {
                limiter.clear(pair());
                limiter.renew(Counted::Trusted(login.to_owned(), ip));
            }
            metrics::auth_result("ok");
            return Ok(());
        }
        limiter.count(Counted::FailureFrom(ip));
        if named {
            limiter.count(pair());
            limiter.count(everywhere());
        }
        metrics::auth_result("denied");
        refused("denied");
        Err(AuthError::Denied)
    }

    /// Clears `login`'s failure windows, from every address (the operator's `unlock`);
    /// whether any of them had locked it.
    pub fn unlock(&self, login: &str) -> bool {
        self.limiter.clear_login(login)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::{Digest, Sha256};
    use std::time::Duration;

    #[test]
    fn verifier_is_domain_separated_sha256() {
        let plain: [u8; 32] = Sha256::digest(b"secret").into();
        assert_ne!(verifier("secret"), plain);
        assert_eq!(verifier("secret"), verifier("secret"));
    }

    use crate::config::Config;

    #[test]
    fn failures_lock_the_pair_not_the_login_and_trusted_addresses_stay_open() {
        let config = Config {
            auth: config::Auth {
                failure_window_secs: 60,
                max_failures_per_ip: 3,
                max_failures_per_login: 2,
                max_failures_per_login_all_addresses: 4,
                ..Config::default().auth
            },
            ..Config::default()
        };
        let limiter = Arc::new(Limiter::new(&config, b"test prelogin key"));
        let a = Authenticator::new(config::IpMode::Full, (limiter.clone(), Ledger::nowhere()));
        let right = Some(verifier("right"));
        let ip = |n: u8| IpAddr::from([127, 0, 0, n]);
        assert!(a.check(ip(1), "alice", "right", right).is_ok(), "home");
        for _ in 0..2 {
            assert!(matches!(
                a.check(ip(9), "alice", "guess", right),
                Err(AuthError::Denied)
            ));
        }
        assert!(matches!(
            a.check(ip(9), "alice", "right", right),
            Err(AuthError::RateLimited)
        ));
        assert!(
            a.check(ip(2), "alice", "right", right).is_ok(),
            "another address"
        );
        // Spread over addresses, the guesses fill the login's window: new addresses are
        // refused, the ones alice logged in from are not.
        assert!(a.check(ip(10), "alice", "guess", right).is_err());
        assert!(a.check(ip(11), "alice", "guess", right).is_err());
        assert!(matches!(
            a.check(ip(3), "alice", "right", right),
            Err(AuthError::RateLimited)
        ));
        assert!(a.check(ip(1), "alice", "right", right).is_ok(), "trusted");
        assert!(a.check(ip(2), "alice", "right", right).is_ok(), "trusted");
        assert!(
            a.check(ip(3), "bob", "right", right).is_ok(),
            "bob is not alice"
        );
        // The operator's unlock clears every window of the login.
        assert!(a.unlock("alice"));
        assert!(a.check(ip(3), "alice", "right", right).is_ok());
        assert!(a.check(ip(9), "alice", "right", right).is_ok());
        // Per address, hard: one address guessing many logins.
        for login in ["c1", "c2", "c3"] {
            assert!(a.check(ip(20), login, "guess", None).is_err());
        }
        assert!(matches!(
            a.check(ip(20), "dave", "right", right),
            Err(AuthError::RateLimited)
        ));
        limiter.backdate(Counted::FailureFrom(ip(20)), Duration::from_secs(61));
        assert!(
            a.check(ip(20), "dave", "right", right).is_ok(),
            "an expired window"
        );
    }
}
