//! Fixed-window rate limits keyed by address or principal: at most `max` events per window.
//! What one client may do per minute or hour (register, prelogin, connect) is bounded here,
//! so a single address or account cannot grow the database or the session log faster than
//! retention purges it. In memory only; a restart forgets the windows, which is harmless.
//! Uses dashmap and std only.

use std::hash::Hash;
use std::time::{Duration, Instant};

use dashmap::DashMap;

/// Events per key per window.
pub struct Windows<K: Hash + Eq> {
    window: Duration,
    max: u32,
    /// key → (window start, events in it)
    seen: DashMap<K, (Instant, u32)>,
}

impl<K: Hash + Eq> Windows<K> {
    pub fn new(window: Duration, max: u32) -> Self {
        Windows {
            window,
            max,
            seen: DashMap::new(),
        }
    }

    /// Counts one event for `key`; `false` when the key is already at its limit for the
    /// current window (the refused event is not counted).
    pub fn admit(&self, key: K) -> bool {
        let mut entry = self.seen.entry(key).or_insert((Instant::now(), 0));
        if entry.0.elapsed() >= self.window {
            *entry = (Instant::now(), 0);
        }
        if entry.1 >= self.max {
            return false;
        }
        entry.1 += 1;
        true
    }

    /// Drops keys whose window has passed, so the map holds only recent clients.
    pub fn prune(&self) {
        self.seen
            .retain(|_, (start, _)| start.elapsed() < self.window);
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
