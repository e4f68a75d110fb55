//! Fixed-window counters: at most `max` events per window, per key or for one session. What
//! one client may do per minute or hour (register, prelogin, connect, fail a login, get a
//! publish refused) is bounded here, so a single address or account cannot lock others out,
//! grow the database or the session log faster than retention purges it, or make refusals
//! its steady state. In memory only; a restart forgets the windows, which is harmless.
//! Uses dashmap and std only.

use std::borrow::Borrow;
use std::hash::Hash;
use std::time::{Duration, Instant};

use dashmap::DashMap;

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

/// A window per key, all of one length and limit.
pub struct Windows<K: Hash + Eq> {
    length: Duration,
    max: u32,
    seen: DashMap<K, Window>,
}

impl<K: Hash + Eq> Windows<K> {
    pub fn new(length: Duration, max: u32) -> Self {
        Windows {
            length,
            max,
            seen: DashMap::new(),
        }
    }

    /// Counts one event for `key`; `false` when the key is already at its limit for the
    /// current window (the refused event is not counted).
    pub fn admit(&self, key: K) -> bool {
        self.seen
            .entry(key)
            .or_default()
            .admit(self.length, self.max)
    }

    /// Counts one event for `key` whatever its count (a failure that already happened).
    pub fn count(&self, key: K) {
        self.seen.entry(key).or_default().count(self.length);
    }

    /// Whether `key` is at its limit now; counts nothing.
    pub fn full<Q: Hash + Eq + ?Sized>(&self, key: &Q) -> bool
    where
        K: Borrow<Q>,
    {
        self.seen
            .get(key)
            .is_some_and(|w| w.full(self.length, self.max))
    }

    /// Forgets `key`'s window; whether it was at its limit.
    pub fn clear<Q: Hash + Eq + ?Sized>(&self, key: &Q) -> bool
    where
        K: Borrow<Q>,
    {
        self.seen
            .remove(key)
            .is_some_and(|(_, w)| w.full(self.length, self.max))
    }

    /// Forgets the windows of every key `which` selects; whether any was at its limit.
    pub fn clear_where(&self, which: impl Fn(&K) -> bool) -> bool {
        let mut was_full = false;
        self.seen.retain(|key, w| {
            let keep = !which(key);
            was_full |= !keep && w.full(self.length, self.max);
            keep
        });
        was_full
    }

    /// Drops keys whose window has passed, so the map holds only recent clients.
    pub fn prune(&self) {
        self.seen.retain(|_, w| w.started.elapsed() < self.length);
    }

    /// Ages `key`'s window by `by`, as time passing would (tests).
    #[cfg(test)]
    pub(crate) fn backdate<Q: Hash + Eq + ?Sized>(&self, key: &Q, by: Duration)
    where
        K: Borrow<Q>,
    {
        if let Some(mut w) = self.seen.get_mut(key) {
            w.started -= by;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_window_admits_its_max_then_refuses_until_it_passes() {
        let w = Windows::new(Duration::from_millis(100), 2);
        assert!(w.admit("a") && w.admit("a"));
        assert!(!w.admit("a"), "the third in the window");
        assert!(w.admit("b"), "another key has its own window");
        std::thread::sleep(Duration::from_millis(120));
        assert!(w.admit("a"), "a new window");
        w.prune();
        assert_eq!(w.seen.len(), 1);
    }
}
