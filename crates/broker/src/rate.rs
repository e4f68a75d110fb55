//! Fixed-window counters: at most `max` events per window, per key or for one session. What
//! one client may do per minute or hour (register, prelogin, connect, fail a login, get a
//! publish refused) is bounded here, so a single address or account cannot lock others out,
//! grow the database or the session log faster than retention purges it, or make refusals
//! its steady state. In memory only; a restart forgets the windows, which is harmless.
//! Uses dashmap, tokio (the purge task) and the config.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use dashmap::DashMap;
use sealrelay_wire::PrincipalId;

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

/// What the limiter counts, and for whom. Addresses are taken as the client's and counted
/// under their block (`server.ipv6_prefix_bits`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Counted {
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
    FailureOfFrom(String, IpAddr),
    /// A failed login of one login from every address
    /// (`auth.max_failures_per_login_all_addresses`).
    FailureOf(String),
}

/// Every rate budget of the broker — per address, per principal, per login — with its
/// windows and their purge, in one place: what a client may do per minute or hour is
/// counted here and nowhere else, so a cluster can count it across nodes by replacing this.
pub struct Limiter {
    /// One window per key, each kind at its own length and limit.
    windows: DashMap<Counted, Window>,
    connects_from: (Duration, u32),
    connects_as: (Duration, u32),
    registrations: (Duration, u32),
    prelogins: (Duration, u32),
    resets: (Duration, u32),
    failures_from: (Duration, u32),
    failures_of_from: (Duration, u32),
    failures_of: (Duration, u32),
    block: AddressBlock,
}

const MINUTE: Duration = Duration::from_secs(60);
const HOUR: Duration = Duration::from_secs(3600);

impl Limiter {
    pub fn new(config: &Config) -> Limiter {
        let (mqtt, auth) = (&config.mqtt, &config.auth);
        let failures = Duration::from_secs(auth.failure_window_secs);
        Limiter {
            windows: DashMap::new(),
            connects_from: (MINUTE, mqtt.connects_per_ip_per_minute),
            connects_as: (MINUTE, mqtt.connects_per_principal_per_minute),
            registrations: (HOUR, auth.registrations_per_ip_per_hour),
            prelogins: (MINUTE, auth.prelogins_per_ip_per_minute),
            resets: (HOUR, auth.resets_per_ip_per_hour),
            failures_from: (failures, auth.max_failures_per_ip),
            failures_of_from: (failures, auth.max_failures_per_login),
            failures_of: (failures, auth.max_failures_per_login_all_addresses),
            block: config.server.address_block(),
        }
    }

    /// The key `what` is counted under: its address replaced by the address's block.
    fn key(&self, what: Counted) -> Counted {
        let block = |ip| self.block.of(ip);
        match what {
            Counted::ConnectFrom(ip) => Counted::ConnectFrom(block(ip)),
            Counted::Registration(ip) => Counted::Registration(block(ip)),
            Counted::Prelogin(ip) => Counted::Prelogin(block(ip)),
            Counted::ResetTry(ip) => Counted::ResetTry(block(ip)),
            Counted::FailureFrom(ip) => Counted::FailureFrom(block(ip)),
            Counted::FailureOfFrom(login, ip) => Counted::FailureOfFrom(login, block(ip)),
            other @ (Counted::ConnectAs(_) | Counted::FailureOf(_)) => other,
        }
    }

    /// The window length and limit of `what`'s kind.
    fn limit(&self, what: &Counted) -> (Duration, u32) {
        match what {
            Counted::ConnectFrom(_) => self.connects_from,
            Counted::ConnectAs(_) => self.connects_as,
            Counted::Registration(_) => self.registrations,
            Counted::Prelogin(_) => self.prelogins,
            Counted::ResetTry(_) => self.resets,
            Counted::FailureFrom(_) => self.failures_from,
            Counted::FailureOfFrom(..) => self.failures_of_from,
            Counted::FailureOf(_) => self.failures_of,
        }
    }

    /// Counts `what` unless its window is already at its limit (the refused event is not
    /// counted); whether it counted.
    pub fn admit(&self, what: Counted) -> bool {
        let (length, max) = self.limit(&what);
        self.windows
            .entry(self.key(what))
            .or_default()
            .admit(length, max)
    }

    /// Counts `what` whatever its window holds (a failure that already happened).
    pub fn count(&self, what: Counted) {
        let (length, _) = self.limit(&what);
        self.windows
            .entry(self.key(what))
            .or_default()
            .count(length);
    }

    /// Whether `what`'s window is at its limit now; counts nothing.
    pub fn full(&self, what: Counted) -> bool {
        let (length, max) = self.limit(&what);
        self.windows
            .get(&self.key(what))
            .is_some_and(|w| w.full(length, max))
    }

    /// Forgets the windows `which` selects; whether any was at its limit (the operator's
    /// unlock, a login that succeeded).
    pub fn clear_where(&self, which: impl Fn(&Counted) -> bool) -> bool {
        let mut was_full = false;
        self.windows.retain(|key, w| {
            let keep = !which(key);
            if !keep {
                let (length, max) = self.limit(key);
                was_full |= w.full(length, max);
            }
            keep
        });
        was_full
    }

    /// Forgets `what`'s window; whether it was at its limit.
    pub fn clear(&self, what: Counted) -> bool {
        let (length, max) = self.limit(&what);
        self.windows
            .remove(&self.key(what))
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
        if let Some(mut w) = self.windows.get_mut(&self.key(what)) {
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
        Limiter::new(&config)
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
        assert!(limiter.windows.contains_key(&Counted::Registration(a)));
    }
}
