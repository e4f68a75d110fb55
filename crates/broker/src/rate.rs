//! Fixed-window counters: at most `max` events per window, per key or for one session. What
//! one client may do per minute or hour (register, prelogin, connect, fail a login, get a
//! publish refused) is bounded here, so a single address or account cannot lock others out,
//! grow the database or the session log faster than retention purges it, or make refusals
//! its steady state. In memory only; a restart forgets the windows, which is harmless.
//! In a cluster every node counts every node's events (each counted here is also handed to
//! the cluster, which publishes it), so a client spreading tries over N nodes gets one
//! node's budget, not N. Logins are keyed by a keyed digest, never by the typed name: what a
//! client typed as a login (a password, by mistake) is neither kept nor sent anywhere.
//! Uses dashmap, hkdf, tokio (the purge task) and the config.

use std::net::IpAddr;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use dashmap::DashMap;
use hkdf::Hkdf;
use sealrelay_wire::PrincipalId;
use sha2::Sha256;
use zeroize::Zeroizing;

use crate::config::Config;
use crate::peers::AddressBlock;

/// One fixed window: when it started and how many events it has counted.
#[derive(Debug, Clone, Copy)]
pub struct Window {
    started: Instant,
    events: u32,
}

impl Default for Window {
    fn default() -> Self {
        Window {
            started: Instant::now(),
            events: 0,
        }
    }
}

impl Window {
    /// Starts a new window if `length` has passed since this one started.
    fn roll(&mut self, length: Duration) {
        if self.started.elapsed() >= length {
            *self = Window::default();
        }
    }

    /// Whether the current window already holds `max` events (an expired one holds none).
    pub fn full(&self, length: Duration, max: u32) -> bool {
        self.started.elapsed() < length && self.events >= max
    }

    /// Counts one event in the current window; returns the window's count.
    pub fn count(&mut self, length: Duration) -> u32 {
        self.roll(length);
        self.events += 1;
        self.events
    }

    /// A fresh window holding one event.
    fn counted(mut self) -> Window {
        self.events = 1;
        self
    }

    /// Counts one event unless the current window already holds `max`; whether it counted.
    pub fn admit(&mut self, length: Duration, max: u32) -> bool {
        self.roll(length);
        if self.events >= max {
            return false;
        }
        self.events += 1;
        true
    }
}

/// What the limiter counts, and for whom: logins as typed (`L = String`, what callers
/// name) or as keyed ([`Key`], what windows are kept under). Addresses are taken as the
/// client's and counted under their block (`server.ipv6_prefix_bits`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Counted<L = String> {
    /// An MQTT CONNECT from an address (`mqtt.connects_per_ip_per_minute`).
    ConnectFrom(IpAddr),
    /// An MQTT CONNECT that logged in as a principal (`mqtt.connects_per_principal_per_minute`).
    ConnectAs(PrincipalId),
    /// An account created from an address (`auth.registrations_per_ip_per_hour`).
    Registration(IpAddr),
    /// A prelogin from an address (`auth.prelogins_per_ip_per_minute`).
    Prelogin(IpAddr),
    /// A reset completion tried from an address (`auth.resets_per_ip_per_hour`).
    ResetTry(IpAddr),
    /// A failed login from an address, any login (`auth.max_failures_per_ip`).
    FailureFrom(IpAddr),
    /// A failed login of one login from one address (`auth.max_failures_per_login`).
    FailureOfFrom(L, IpAddr),
    /// A login that succeeded from an address: the address is trusted for that login for
    /// `auth.trusted_address_days` after the last, and failures from elsewhere do not lock
    /// the login there. Kept here so that every node of a cluster trusts what one saw.
    Trusted(L, IpAddr),
    /// A failed login of one login from every address
    /// (`auth.max_failures_per_login_all_addresses`).
    FailureOf(L),
}

/// A login as the limiter keys it: HMAC-SHA-256 of the name under a key derived from the
/// prelogin key (the same on every node of a cluster), cut to 16 bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct LoginKey(pub [u8; 16]);

/// What a window counts: a [`Counted`] with its address replaced by the address's block and
/// its login by the login's key. What other nodes are sent and count.
pub type Key = Counted<LoginKey>;

/// What the limiter tells the other nodes of a cluster: a key counted, or cleared.
pub type Share = Box<dyn Fn(Key, bool) + Send + Sync>;

/// Every rate budget of the broker — per address, per principal, per login — with its
/// windows and their purge, in one place: what a client may do per minute or hour is
/// counted here and nowhere else.
pub struct Limiter {
    /// One window per key, each kind at its own length and limit.
    windows: DashMap<Key, Window>,
    /// Keys logins (`LoginKey`).
    login_key: Zeroizing<[u8; 32]>,
    /// In a cluster, told each key counted (`false`) or cleared (`true`) here.
    share: OnceLock<Share>,
    connects_from: (Duration, u32),
    connects_as: (Duration, u32),
    registrations: (Duration, u32),
    prelogins: (Duration, u32),
    resets: (Duration, u32),
    failures_from: (Duration, u32),
    failures_of_from: (Duration, u32),
    failures_of: (Duration, u32),
    trusted: (Duration, u32),
    block: AddressBlock,
}

const MINUTE: Duration = Duration::from_secs(60);
const HOUR: Duration = Duration::from_secs(3600);

impl Limiter {
    /// The limits of `config`, logins keyed under a key derived from `secret` (the prelogin
    /// key: the same on every node, so every node keys a login alike).
    pub fn new(config: &Config, secret: &[u8]) -> Limiter {
        let (mqtt, auth) = (&config.mqtt, &config.auth);
        let failures = Duration::from_secs(auth.failure_window_secs);
        let mut login_key = Zeroizing::new([0u8; 32]);
        Hkdf::<Sha256>::new(None, secret)
            .expand(b"sealrelay limiter login key", &mut login_key[..])
            .expect("32 bytes is a valid HKDF-SHA-256 output length");
        Limiter {
            windows: DashMap::new(),
            login_key,
            share: OnceLock::new(),
            connects_from: (MINUTE, mqtt.connects_per_ip_per_minute),
            connects_as: (MINUTE, mqtt.connects_per_principal_per_minute),
            registrations: (HOUR, auth.registrations_per_ip_per_hour),
            prelogins: (MINUTE, auth.prelogins_per_ip_per_minute),
            resets: (HOUR, auth.resets_per_ip_per_hour),
            failures_from: (failures, auth.max_failures_per_ip),
            failures_of_from: (failures, auth.max_failures_per_login),
            failures_of: (failures, auth.max_failures_per_login_all_addresses),
            trusted: (
                Duration::from_secs(u64::from(auth.trusted_address_days) * 86_400),
                1,
            ),
            block: config.server.address_block(),
        }
    }

    /// Has `share` told of every key counted or cleared here from now on (once; a cluster
    /// sets it).
    pub fn on_share(&self, share: impl Fn(Key, bool) + Send + Sync + 'static) {
        let _ = self.share.set(Box::new(share));
    }

    /// The key a login is counted under.
    pub fn login(&self, login: &str) -> LoginKey {
        let (prk, _) = Hkdf::<Sha256>::extract(Some(&self.login_key[..]), login.as_bytes());
        let mut key = [0u8; 16];
        key.copy_from_slice(&prk[..16]);
        LoginKey(key)
    }

    /// The key `what` is counted under: its address replaced by the address's block, its
    /// login by the login's key.
    fn key(&self, what: &Counted) -> Key {
        let block = |ip: &IpAddr| self.block.of(*ip);
        match what {
            Counted::ConnectFrom(ip) => Key::ConnectFrom(block(ip)),
            Counted::ConnectAs(principal) => Key::ConnectAs(*principal),
            Counted::Registration(ip) => Key::Registration(block(ip)),
            Counted::Prelogin(ip) => Key::Prelogin(block(ip)),
            Counted::ResetTry(ip) => Key::ResetTry(block(ip)),
            Counted::FailureFrom(ip) => Key::FailureFrom(block(ip)),
            Counted::FailureOfFrom(login, ip) => Key::FailureOfFrom(self.login(login), block(ip)),
            Counted::FailureOf(login) => Key::FailureOf(self.login(login)),
            Counted::Trusted(login, ip) => Key::Trusted(self.login(login), block(ip)),
        }
    }

    /// The window length and limit of `key`'s kind.
    fn limit(&self, key: &Key) -> (Duration, u32) {
        match key {
            Key::ConnectFrom(_) => self.connects_from,
            Key::ConnectAs(_) => self.connects_as,
            Key::Registration(_) => self.registrations,
            Key::Prelogin(_) => self.prelogins,
            Key::ResetTry(_) => self.resets,
            Key::FailureFrom(_) => self.failures_from,
            Key::FailureOfFrom(..) => self.failures_of_from,
            Key::FailureOf(_) => self.failures_of,
            Key::Trusted(..) => self.trusted,
        }
    }

    fn shared(&self, key: Key, cleared: bool) {
        if let Some(share) = self.share.get() {
            share(key, cleared);
        }
    }

    /// Counts `what` unless its window is already at its limit (the refused event is not
    /// counted); whether it counted.
    pub fn admit(&self, what: Counted) -> bool {
        let key = self.key(&what);
        let (length, max) = self.limit(&key);
        let admitted = self.windows.entry(key).or_default().admit(length, max);
        if admitted {
            self.shared(key, false);
        }
        admitted
    }

    /// Counts `what` whatever its window holds (a failure that already happened).
    pub fn count(&self, what: Counted) {
        let key = self.key(&what);
        self.count_key(key);
        self.shared(key, false);
    }

    /// Counts what another node counted. A trust is renewed, as where it happened.
    pub fn count_key(&self, key: Key) {
        if matches!(key, Key::Trusted(..)) {
            return self.renew_key(key);
        }
        let (length, _) = self.limit(&key);
        self.windows.entry(key).or_default().count(length);
    }

    /// Starts `what`'s window anew with one event in it (a trust, renewed at each login).
    pub fn renew(&self, what: Counted) {
        let key = self.key(&what);
        self.renew_key(key);
        self.shared(key, false);
    }

    fn renew_key(&self, key: Key) {
        self.windows.insert(key, Window::default().counted());
    }

    /// Whether `what`'s window is at its limit now; counts nothing.
    pub fn full(&self, what: Counted) -> bool {
        let key = self.key(&what);
        let (length, max) = self.limit(&key);
        self.windows.get(&key).is_some_and(|w| w.full(length, max))
    }

    /// Forgets the failure windows of `login`, from every address (the operator's unlock);
    /// whether any was at its limit.
    pub fn clear_login(&self, login: &str) -> bool {
        let login = self.login(login);
        let mut cleared = Vec::new();
        self.windows.retain(|key, w| {
            let keep = !matches!(key, Key::FailureOf(l) | Key::FailureOfFrom(l, _) if *l == login);
            if !keep {
                let (length, max) = self.limit(key);
                cleared.push((*key, w.full(length, max)));
            }
            keep
        });
        cleared.iter().for_each(|(key, _)| self.shared(*key, true));
        cleared.iter().any(|(_, was_full)| *was_full)
    }

    /// Forgets `what`'s window; whether it was at its limit.
    pub fn clear(&self, what: Counted) -> bool {
        let key = self.key(&what);
        self.shared(key, true);
        self.clear_key(key)
    }

    /// Forgets a window another node cleared; whether it was at its limit.
    pub fn clear_key(&self, key: Key) -> bool {
        let (length, max) = self.limit(&key);
        self.windows
            .remove(&key)
            .is_some_and(|(_, w)| w.full(length, max))
    }

    /// Drops every window that has passed, so the map holds only recent clients.
    pub fn purge(&self) {
        self.windows
            .retain(|key, w| w.started.elapsed() < self.limit(key).0);
    }

    /// Purges every `every` until the task is dropped.
    pub fn spawn_purge(self: &Arc<Self>, every: Duration) -> tokio::task::JoinHandle<()> {
        let limiter = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            loop {
                tick.tick().await;
                limiter.purge();
            }
        })
    }

    /// Ages `what`'s window by `by`, as time passing would (tests).
    #[cfg(test)]
    pub(crate) fn backdate(&self, what: Counted, by: Duration) {
        if let Some(mut w) = self.windows.get_mut(&self.key(&what)) {
            w.started -= by;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter() -> Limiter {
        let mut config = Config::default();
        config.auth.prelogins_per_ip_per_minute = 2;
        config.mqtt.connects_per_principal_per_minute = 1;
        Limiter::new(&config, b"test prelogin key")
    }

    #[test]
    fn each_kind_has_its_own_windows_and_limit_and_addresses_count_per_block() {
        let limiter = limiter();
        let a = IpAddr::from([192, 0, 2, 1]);
        let b = IpAddr::from([192, 0, 2, 2]);
        assert!(limiter.admit(Counted::Prelogin(a)) && limiter.admit(Counted::Prelogin(a)));
        assert!(
            !limiter.admit(Counted::Prelogin(a)),
            "the third in the window"
        );
        assert!(limiter.admit(Counted::Prelogin(b)), "another address");
        assert!(limiter.admit(Counted::Registration(a)), "another kind");
        let v6 = |s: &str| s.parse::<IpAddr>().unwrap();
        assert!(limiter.admit(Counted::Prelogin(v6("2001:db8::1"))));
        assert!(limiter.admit(Counted::Prelogin(v6("2001:db8::2"))));
        assert!(
            !limiter.admit(Counted::Prelogin(v6("2001:db8::3"))),
            "one /64"
        );
        let p = PrincipalId([7; 16]);
        assert!(limiter.admit(Counted::ConnectAs(p)));
        assert!(!limiter.admit(Counted::ConnectAs(p)));
    }

    /// Two nodes' limiters joined as a cluster joins them: what one counts or clears, the
    /// other does, so failures spread over both lock a login as they would on one; logins
    /// are keyed alike on both, and never by their name.
    #[test]
    fn limiters_that_share_count_one_budget() {
        let mut config = Config::default();
        config.auth.max_failures_per_login = 4;
        let (a, b) = (
            Arc::new(Limiter::new(&config, b"shared key")),
            Arc::new(Limiter::new(&config, b"shared key")),
        );
        for (from, to) in [(&a, &b), (&b, &a)] {
            let to = to.clone();
            from.on_share(move |key, cleared| {
                if cleared {
                    to.clear_key(key);
                } else {
                    to.count_key(key);
                }
            });
        }
        let ip = IpAddr::from([192, 0, 2, 1]);
        let pair = || Counted::FailureOfFrom("alice".into(), ip);
        a.count(pair());
        b.count(pair());
        a.count(pair());
        assert!(!a.full(pair()) && !b.full(pair()));
        b.count(pair());
        assert!(
            a.full(pair()) && b.full(pair()),
            "4 failures over two nodes"
        );
        assert!(b.clear(pair()));
        assert!(
            !a.full(pair()),
            "a login that succeeded on b clears a's window"
        );
        assert_eq!(a.login("alice"), b.login("alice"));
        assert_ne!(
            a.login("alice"),
            Limiter::new(&config, b"other key").login("alice")
        );
        assert!(a
            .windows
            .iter()
            .all(|w| !format!("{:?}", w.key()).contains("alice")));
    }

    #[test]
    fn a_purge_drops_windows_that_passed_and_only_those() {
        let limiter = limiter();
        let a = IpAddr::from([192, 0, 2, 1]);
        limiter.admit(Counted::Prelogin(a));
        limiter.admit(Counted::Registration(a));
        limiter.backdate(Counted::Prelogin(a), MINUTE);
        limiter.backdate(Counted::Registration(a), MINUTE);
        limiter.purge();
        assert_eq!(
            limiter.windows.len(),
            1,
            "an hour's window outlives a minute"
        );
        assert!(limiter.windows.contains_key(&Key::Registration(a)));
    }
}
