//! Per-session rate limits on what a client sends: publishes per second and bytes per
//! second (`mqtt.publishes_per_second`, `mqtt.bytes_per_second`), token buckets refilled
//! continuously that hold one second's worth. A client over either is not refused and
//! nothing it sent is dropped: its session stops reading the socket until the buckets hold
//! a whole token again, so TCP pushes back on the publisher instead of the broker buffering.
//! Each pause is counted by the limit that caused it. Uses tokio's timer; knows nothing of
//! MQTT beyond "a PUBLISH was decoded", which the codec reports.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{ready, Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, ReadBuf};
use tokio::time::Sleep;

use crate::metrics;

/// One session's two buckets. Spending may take a bucket below zero (a packet is counted
/// whole once read): the debt is paid by a longer pause.
pub struct Throttle {
    publishes_per_second: f64,
    bytes_per_second: f64,
    buckets: Mutex<Buckets>,
}

struct Buckets {
    publishes: f64,
    bytes: f64,
    refilled: Instant,
}

impl Throttle {
    /// Buckets for `publishes_per_second` and `bytes_per_second` (0: that one unlimited);
    /// `None` when both are unlimited.
    pub fn new(publishes_per_second: u32, bytes_per_second: u64) -> Option<Arc<Throttle>> {
        // An unlimited bucket is infinite and stays so: refills add ∞ (or, when no time has
        // passed, 0 × ∞ = NaN, which `f64::min` discards), and it is never below one token.
        let rate = |r: f64| if r == 0.0 { f64::INFINITY } else { r };
        let (publishes, bytes) = (
            rate(f64::from(publishes_per_second)),
            rate(bytes_per_second as f64),
        );
        (publishes.is_finite() || bytes.is_finite()).then(|| {
            Arc::new(Throttle {
                publishes_per_second: publishes,
                bytes_per_second: bytes,
                buckets: Mutex::new(Buckets {
                    publishes,
                    bytes,
                    refilled: Instant::now(),
                }),
            })
        })
    }

    /// Counts a decoded PUBLISH.
    pub fn spend_publish(&self) {
        self.spend(1.0, 0.0);
    }

    fn spend(&self, publishes: f64, bytes: f64) {
        let mut b = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        b.publishes -= publishes;
        b.bytes -= bytes;
    }

    /// How long reading must pause for both buckets to hold a whole token again, and which
    /// limit makes it pause; `None` to read now.
    fn pause(&self) -> Option<(Duration, &'static str)> {
        let mut b = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        let elapsed = b.refilled.elapsed().as_secs_f64();
        b.refilled = Instant::now();
        // A bucket holds at most one second's worth: the burst.
        b.publishes =
            (b.publishes + elapsed * self.publishes_per_second).min(self.publishes_per_second);
        b.bytes = (b.bytes + elapsed * self.bytes_per_second).min(self.bytes_per_second);
        let wait = |level: f64, rate: f64| (level < 1.0).then(|| (1.0 - level) / rate);
        [
            (
                wait(b.publishes, self.publishes_per_second),
                "publishes_per_second",
            ),
            (wait(b.bytes, self.bytes_per_second), "bytes_per_second"),
        ]
        .into_iter()
        .filter_map(|(wait, limit)| wait.map(|w| (w, limit)))
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(wait, limit)| (Duration::from_secs_f64(wait), limit))
    }
}

/// A session's reader that waits out its throttle before each read.
pub struct ThrottledRead<R> {
    inner: R,
    throttle: Arc<Throttle>,
    paused: Option<Pin<Box<Sleep>>>,
}

impl<R> ThrottledRead<R> {
    pub fn new(inner: R, throttle: Arc<Throttle>) -> Self {
        ThrottledRead {
            inner,
            throttle,
            paused: None,
        }
    }
}

impl<R: AsyncRead + Unpin> AsyncRead for ThrottledRead<R> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        loop {
            if let Some(paused) = &mut self.paused {
                ready!(paused.as_mut().poll(cx));
                self.paused = None;
            }
            match self.throttle.pause() {
                Some((wait, limit)) => {
                    metrics::throttled(limit);
                    self.paused = Some(Box::pin(tokio::time::sleep(wait)));
                }
                None => break,
            }
        }
        let before = buf.filled().len();
        ready!(Pin::new(&mut self.inner).poll_read(cx, buf))?;
        let read = buf.filled().len() - before;
        self.throttle.spend(0.0, read as f64);
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_allows_its_burst_then_pauses_for_the_debt() {
        let t = Throttle::new(10, 0).unwrap();
        assert!(t.pause().is_none());
        for _ in 0..10 {
            t.spend_publish();
        }
        let (wait, limit) = t.pause().unwrap();
        assert_eq!(limit, "publishes_per_second");
        assert!(wait > Duration::from_millis(90) && wait <= Duration::from_millis(101));
        let b = Throttle::new(0, 1000).unwrap();
        b.spend(0.0, 3000.0);
        let (wait, limit) = b.pause().unwrap();
        assert_eq!(limit, "bytes_per_second");
        assert!(wait > Duration::from_millis(1990), "{wait:?}");
        assert!(Throttle::new(0, 0).is_none(), "both unlimited: no throttle");
    }
}
