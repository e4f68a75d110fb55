//! The broker's memory and CPU, read from `/proc/<pid>` (Linux).

use serde::Serialize;

#[derive(Debug, Clone, Copy)]
pub struct Sample {
    rss_kib: u64,
    peak_rss_kib: u64,
    cpu_ticks: u64,
}

/// What the broker used between two samples.
#[derive(Debug, Clone, Copy, Default, Serialize, serde::Deserialize)]
pub struct Usage {
    pub rss_before_kib: u64,
    pub rss_after_kib: u64,
    pub peak_rss_kib: u64,
    pub cpu_seconds: f64,
}

fn status_kib(status: &str, key: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

pub fn sample(pid: u32) -> Option<Sample> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the parenthesised command name; utime and stime are the 14th and 15th.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i - 3)?.parse::<u64>().ok();
    Some(Sample {
        rss_kib: status_kib(&status, "VmRSS:")?,
        peak_rss_kib: status_kib(&status, "VmHWM:")?,
        cpu_ticks: ticks(14)? + ticks(15)?,
    })
}

/// The sum of what `pids` use (the nodes of a cluster); `None` if any cannot be read, or
/// none is given.
pub fn sample_all(pids: &[u32]) -> Option<Sample> {
    let mut sum: Option<Sample> = None;
    for pid in pids {
        let one = sample(*pid)?;
        sum = Some(match sum {
            None => one,
            Some(s) => Sample {
                rss_kib: s.rss_kib + one.rss_kib,
                peak_rss_kib: s.peak_rss_kib + one.peak_rss_kib,
                cpu_ticks: s.cpu_ticks + one.cpu_ticks,
            },
        });
    }
    sum
}

/// Clock ticks per second for /proc's CPU times; 100 on every Linux this runs on.
const TICKS_PER_SECOND: f64 = 100.0;

pub fn delta(before: Option<Sample>, after: Option<Sample>) -> Option<Usage> {
    let (b, a) = (before?, after?);
    Some(Usage {
        rss_before_kib: b.rss_kib,
        rss_after_kib: a.rss_kib,
        peak_rss_kib: a.peak_rss_kib,
        cpu_seconds: a.cpu_ticks.saturating_sub(b.cpu_ticks) as f64 / TICKS_PER_SECOND,
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_this_process() {
        let s = super::sample(std::process::id()).expect("/proc is readable");
        assert!(s.rss_kib > 0 && s.peak_rss_kib >= s.rss_kib);
    }
}
