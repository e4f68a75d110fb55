//! Gives memory freed after a flood back to the system. glibc's allocator keeps what a
//! burst of connections freed in its arenas (the finding: RSS 491 → 640 → 785 MB over three
//! 20,000-connection floods, never returned), so the broker asks it to release its free
//! pages (`malloc_trim`): soon after many sessions close, and once a minute for whatever
//! else came and went (HTTP connections). Uses libc and the router's count of ended
//! sessions only.

use std::sync::Arc;
use std::time::Duration;

use crate::router::Router;

/// Sessions closed since the last trim that call for one now rather than at the minute.
const TRIM_AFTER_CLOSED: usize = 256;

/// Trims every minute, and within two seconds of `TRIM_AFTER_CLOSED` sessions ending, for
/// as long as the returned task lives.
pub fn spawn_trimmer(router: Arc<Router>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(2));
        let (mut trimmed_at, mut ticks) = (0usize, 0u32);
        loop {
            tick.tick().await;
            let ended = router.detached();
            ticks += 1;
            if ended - trimmed_at >= TRIM_AFTER_CLOSED || ticks >= 30 {
                let _ = tokio::task::spawn_blocking(trim).await;
                (trimmed_at, ticks) = (ended, 0);
            }
        }
    })
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn trim() {
    // SAFETY: malloc_trim only returns the allocator's free pages to the kernel; the
    // memory Rust holds through the system allocator is untouched.
    unsafe { libc::malloc_trim(0) };
}

/// Other allocators return memory on their own terms.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn trim() {}
