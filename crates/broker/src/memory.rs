//! The broker's memory as a place secrets pass through, and as something to give back.
//!
//! Secrets: a login secret, reset code, key proof or operator token reaches the broker for
//! one check and must not outlive it (protocol §2.3; docs/security.md, "What the broker's
//! memory holds"). Most copies are made by code we do not own (rumqttc's parser, rustls,
//! actix, serde), and a freed block keeps its bytes until it is reused, so the broker's
//! allocator wipes every block as it frees it ([`WipeOnFree`]); what stays allocated is wiped
//! where it lives (the MQTT codec's buffer, the TLS receive buffer: `mqtt::transport`) or
//! freed soon (an HTTP connection that carried a secret is closed after its answer). Core
//! dumps are off unless configured ([`forbid_core_dumps`]).
//!
//! Giving back: glibc's allocator keeps what a burst of connections freed in its arenas (the
//! finding: RSS 491 → 640 → 785 MB over three 20,000-connection floods, never returned), so
//! the broker asks it to release its free pages (`malloc_trim`): soon after many sessions
//! close, and once a minute for whatever else came and went (HTTP connections).
//!
//! Uses libc, the system allocator and the router's count of ended sessions only.

use std::alloc::{GlobalAlloc, Layout, System};
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

/// The system allocator, wiping each block when it is freed or moved by a reallocation, so
/// no freed memory holds what it held (a login secret parsed by a library, a request body).
/// Installed by the `sealrelay` binary as its global allocator. The cost is one `memset` of
/// each block as it is freed: measured in docs/benchmarks.md ("Wiping freed memory").
pub struct WipeOnFree;

// SAFETY: every method forwards to `System` with the layout it was given; the wipe writes
// only inside the block being freed (or the tail a shrink gives up), before it is freed.
unsafe impl GlobalAlloc for WipeOnFree {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        System.alloc(layout)
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        System.alloc_zeroed(layout)
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        wipe(ptr, layout.size());
        System.dealloc(ptr, layout);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if new_size <= layout.size() {
            // Shrinking keeps the block's start where it is; the tail given up is wiped.
            wipe(ptr.add(new_size), layout.size() - new_size);
            return System.realloc(ptr, layout, new_size);
        }
        // Growing may move the block, and the system would free the old one unwiped: move
        // it here instead.
        let new_layout = Layout::from_size_align_unchecked(new_size, layout.align());
        let new = System.alloc(new_layout);
        if !new.is_null() {
            std::ptr::copy_nonoverlapping(ptr, new, layout.size());
            self.dealloc(ptr, layout);
        }
        new
    }
}

/// Zeroes `len` bytes at `ptr` in a way the compiler may not remove as a dead store before
/// `free`.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
unsafe fn wipe(ptr: *mut u8, len: usize) {
    libc::explicit_bzero(ptr.cast(), len);
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
unsafe fn wipe(ptr: *mut u8, len: usize) {
    zeroize::Zeroize::zeroize(std::slice::from_raw_parts_mut(ptr, len));
}

/// Zeroes `BYTES` of the stack below the caller's frame, where the frames of what it just
/// called lay (libsodium's `sodium_stackzero`): a hash of a secret leaves the secret's bytes in
/// the hash's state there — the operator token's digest, made at start on a main thread whose
/// stack is rarely reused, and each login secret's verifier.
#[inline(never)]
pub fn scrub_stack<const BYTES: usize>() {
    let mut below = [0u8; BYTES];
    zeroize::Zeroize::zeroize(&mut below[..]);
    std::hint::black_box(&below);
}

/// Turns core dumps off for this process (`RLIMIT_CORE` 0, and not dumpable: no core file,
/// and only root may read its memory or attach a debugger), unless `allowed` (the
/// `server.allow_core_dumps` key, for debugging), which is warned about.
pub fn forbid_core_dumps(allowed: bool) -> std::io::Result<()> {
    if allowed {
        tracing::warn!(
            "server.allow_core_dumps is on: a core dump or a debugger attached as this user can read login secrets in flight; turn it off outside debugging"
        );
        return Ok(());
    }
    #[cfg(unix)]
    {
        let none = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: setrlimit reads the struct it is given.
        if unsafe { libc::setrlimit(libc::RLIMIT_CORE, &none) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    #[cfg(target_os = "linux")]
    // SAFETY: PR_SET_DUMPABLE takes one integer argument.
    if unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn freed_and_outgrown_blocks_are_wiped_and_contents_move_intact() {
        let alloc = WipeOnFree;
        let layout = Layout::from_size_align(64, 8).unwrap();
        // SAFETY: each block is used within its layout and freed once, with that layout.
        unsafe {
            let block = alloc.alloc(layout);
            std::ptr::write_bytes(block, 0xAB, 64);
            let grown = alloc.realloc(block, layout, 4096);
            assert_eq!(std::slice::from_raw_parts(grown, 64), &[0xAB; 64][..]);
            let shrunk = alloc.realloc(grown, Layout::from_size_align(4096, 8).unwrap(), 16);
            assert_eq!(std::slice::from_raw_parts(shrunk, 16), &[0xAB; 16][..]);
            alloc.dealloc(shrunk, Layout::from_size_align(16, 8).unwrap());
            // The wipe itself, on a block that stays allocated to look at it.
            let kept = alloc.alloc(layout);
            std::ptr::write_bytes(kept, 0xCD, 64);
            wipe(kept, 64);
            assert_eq!(std::slice::from_raw_parts(kept, 64), &[0u8; 64][..]);
            System.dealloc(kept, layout);
        }
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn core_dumps_are_off_unless_allowed() {
        forbid_core_dumps(false).unwrap();
        // SAFETY: PR_GET_DUMPABLE takes no argument; getrlimit writes the struct it is given.
        let dumpable = unsafe { libc::prctl(libc::PR_GET_DUMPABLE, 0, 0, 0, 0) };
        let mut limit = libc::rlimit {
            rlim_cur: 1,
            rlim_max: 1,
        };
        unsafe { libc::getrlimit(libc::RLIMIT_CORE, &mut limit) };
        assert_eq!((dumpable, limit.rlim_cur, limit.rlim_max), (0, 0, 0));
    }
}
