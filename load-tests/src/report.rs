//! Results: a table for people, JSON for scripts, and a progress line while running.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::procstat::Usage;
use crate::{Counters, Kind, Scenario};

/// End-to-end latency in microseconds.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct Latency {
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    pub p999: u64,
    pub max: u64,
}

#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct Report {
    pub broker: String,
    pub kind: Kind,
    pub scenario: Scenario,
    pub setup_seconds: f64,
    pub measured_seconds: f64,
    pub sent: u64,
    pub received: u64,
    /// Sent and never received (after a 3 s drain at the end).
    pub lost: u64,
    /// Under churn: receipts of a message already received (redeliveries).
    #[serde(default)]
    pub duplicates: u64,
    /// Under churn: connections the instances dropped and reopened.
    #[serde(default)]
    pub blinks: u64,
    pub errors: u64,
    /// Open loop: the most any send lagged its schedule, in µs. Large values mean the load
    /// tool (not the broker) could not keep the rate, and latency is understated.
    pub max_schedule_lag_us: u64,
    pub messages_per_second: f64,
    pub megabytes_per_second: f64,
    pub latency_us: Option<Latency>,
    pub sessions: usize,
    pub connects_per_second: f64,
    pub broker_usage: Option<Usage>,
    /// Idle: broker RSS growth divided by sessions held.
    pub kib_per_session: Option<f64>,
}

pub(crate) struct Traffic {
    pub setup: Duration,
    pub measured: Duration,
    pub sent: u64,
    pub sent_in_window: u64,
    pub received: u64,
    pub duplicates: u64,
    pub blinks: u64,
    pub errors: u64,
    pub max_lag_us: u64,
    pub histogram: Histogram<u64>,
    pub broker: Option<Usage>,
}

impl Report {
    fn base(s: &Scenario) -> Report {
        Report {
            broker: s.broker_name.clone(),
            kind: s.kind,
            scenario: s.clone(),
            setup_seconds: 0.0,
            measured_seconds: 0.0,
            sent: 0,
            received: 0,
            lost: 0,
            duplicates: 0,
            blinks: 0,
            errors: 0,
            max_schedule_lag_us: 0,
            messages_per_second: 0.0,
            megabytes_per_second: 0.0,
            latency_us: None,
            sessions: 0,
            connects_per_second: 0.0,
            broker_usage: None,
            kib_per_session: None,
        }
    }

    pub(crate) fn traffic(s: &Scenario, t: Traffic) -> Report {
        let secs = t.measured.as_secs_f64();
        // Throughput counts what was delivered of what was sent in the measured window.
        let delivered = t.received.min(t.sent_in_window);
        let h = &t.histogram;
        Report {
            setup_seconds: t.setup.as_secs_f64(),
            measured_seconds: secs,
            sent: t.sent,
            received: t.received,
            lost: t.sent.saturating_sub(t.received),
            duplicates: t.duplicates,
            blinks: t.blinks,
            errors: t.errors,
            max_schedule_lag_us: t.max_lag_us,
            messages_per_second: delivered as f64 / secs,
            megabytes_per_second: (delivered * s.size as u64) as f64 / secs / 1e6,
            latency_us: (!h.is_empty()).then(|| Latency {
                p50: h.value_at_quantile(0.5),
                p90: h.value_at_quantile(0.9),
                p99: h.value_at_quantile(0.99),
                p999: h.value_at_quantile(0.999),
                max: h.max(),
            }),
            sessions: s.consoles + s.consoles * s.instances_per_console,
            broker_usage: t.broker,
            ..Report::base(s)
        }
    }

    pub(crate) fn sessions(
        s: &Scenario,
        held: usize,
        took: Duration,
        errors: u64,
        broker: Option<Usage>,
    ) -> Report {
        let kib_per_session = broker
            .filter(|_| s.kind == Kind::Idle && held > 0)
            .map(|u| u.rss_after_kib.saturating_sub(u.rss_before_kib) as f64 / held as f64);
        Report {
            measured_seconds: took.as_secs_f64(),
            errors,
            sessions: held,
            connects_per_second: held as f64 / took.as_secs_f64().max(1e-9),
            broker_usage: broker,
            kib_per_session,
            ..Report::base(s)
        }
    }

    /// A short table for the terminal.
    pub fn table(&self) -> String {
        let mut out = format!("broker      {}\nscenario    {:?}\n", self.broker, self.kind);
        let mut row = |k: &str, v: String| out.push_str(&format!("{k:<12}{v}\n"));
        match self.kind {
            Kind::Traffic => {
                row(
                    "sent",
                    format!("{} (lost {}, errors {})", self.sent, self.lost, self.errors),
                );
                if self.scenario.churn > 0.0 {
                    row(
                        "churn",
                        format!(
                            "{} reconnects; {} delivered once, {} redelivered, {} never",
                            self.blinks, self.received, self.duplicates, self.lost
                        ),
                    );
                }
                row(
                    "throughput",
                    format!(
                        "{:.0} msg/s, {:.2} MB/s over {:.1} s",
                        self.messages_per_second, self.megabytes_per_second, self.measured_seconds
                    ),
                );
                if let Some(l) = &self.latency_us {
                    row(
                        "latency µs",
                        format!(
                            "p50 {}  p90 {}  p99 {}  p99.9 {}  max {}",
                            l.p50, l.p90, l.p99, l.p999, l.max
                        ),
                    );
                }
                if self.scenario.rate > 0 {
                    row(
                        "schedule",
                        format!(
                            "sends lagged their schedule by at most {} µs",
                            self.max_schedule_lag_us
                        ),
                    );
                }
                row(
                    "setup",
                    format!("{:.1} s for {} sessions", self.setup_seconds, self.sessions),
                );
            }
            Kind::Idle | Kind::Storm => {
                row(
                    "sessions",
                    format!("{} (errors {})", self.sessions, self.errors),
                );
                row("connects", format!("{:.0}/s", self.connects_per_second));
                if let Some(k) = self.kib_per_session {
                    row("per session", format!("{k:.1} KiB of broker RSS"));
                }
            }
        }
        if let Some(u) = &self.broker_usage {
            row(
                "broker",
                format!(
                    "RSS {} → {} KiB (peak {} KiB), CPU {:.2} s",
                    u.rss_before_kib, u.rss_after_kib, u.peak_rss_kib, u.cpu_seconds
                ),
            );
        }
        out
    }
}

/// Prints sent/received once a second to stderr until aborted.
pub(crate) fn progress(counters: Arc<Counters>, duration: f64) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.tick().await;
        let (mut last, mut elapsed) = (0, 0);
        loop {
            tick.tick().await;
            elapsed += 1;
            let received = counters.received.load(Ordering::Relaxed);
            eprint!(
                "\r[{elapsed:>4}/{duration:.0} s] sent {:>10}  received {:>10}  {:>8} msg/s  errors {}   ",
                counters.sent.load(Ordering::Relaxed),
                received,
                received - last,
                counters.errors.load(Ordering::Relaxed)
            );
            last = received;
        }
    })
}

/// Keeps, of the repeated runs of each (label, broker), the median one by the figure that
/// scenario is judged on. Runs of a group must be adjacent (compare.sh's file names sort so).
pub fn medians(runs: Vec<(String, Report)>) -> Vec<(String, Report)> {
    let figure = |label: &str, r: &Report| match r.kind {
        Kind::Traffic if label.starts_with("f-") => {
            r.latency_us.as_ref().map_or(f64::MAX, |l| l.p99 as f64)
        }
        Kind::Traffic => r.messages_per_second,
        Kind::Idle => r.kib_per_session.unwrap_or(f64::MAX),
        Kind::Storm => r.connects_per_second,
    };
    let mut out: Vec<(String, Report)> = Vec::new();
    let mut group: Vec<(String, Report)> = Vec::new();
    let flush = |group: &mut Vec<(String, Report)>, out: &mut Vec<(String, Report)>| {
        group.sort_by(|(la, a), (lb, b)| figure(la, a).total_cmp(&figure(lb, b)));
        let middle = group.len() / 2;
        if let Some(median) = group.drain(..).nth(middle) {
            out.push(median);
        }
    };
    for run in runs {
        if group
            .first()
            .is_some_and(|(l, r)| *l != run.0 || r.broker != run.1.broker)
        {
            flush(&mut group, &mut out);
        }
        group.push(run);
    }
    flush(&mut group, &mut out);
    out
}

/// A markdown table of reports, one row per (label, broker), in the order given, plus the
/// throughput ratios of the first broker against each other one for every label.
pub fn markdown(runs: &[(String, Report)]) -> String {
    let mut out = String::from(
        "| scenario | broker | msg/s | MB/s | p50 µs | p99 µs | p99.9 µs | max µs | lost | errors | connects/s | KiB/session | broker CPU s | broker peak RSS MiB |\n\
         |---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for (label, r) in runs {
        let l = r.latency_us.as_ref();
        let num = |v: Option<u64>| v.map_or("–".to_owned(), |v| v.to_string());
        let (msgs, mbs) = if r.kind == Kind::Traffic {
            (
                format!("{:.0}", r.messages_per_second),
                format!("{:.1}", r.megabytes_per_second),
            )
        } else {
            ("–".into(), "–".into())
        };
        out.push_str(&format!(
            "| {label} | {} | {msgs} | {mbs} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
            r.broker,
            num(l.map(|l| l.p50)),
            num(l.map(|l| l.p99)),
            num(l.map(|l| l.p999)),
            num(l.map(|l| l.max)),
            r.lost,
            r.errors,
            if r.kind == Kind::Traffic {
                "–".into()
            } else {
                format!("{:.0}", r.connects_per_second)
            },
            r.kib_per_session.map_or("–".into(), |k| format!("{k:.1}")),
            r.broker_usage
                .map_or("–".into(), |u| format!("{:.1}", u.cpu_seconds)),
            r.broker_usage.map_or("–".into(), |u| format!(
                "{:.1}",
                u.peak_rss_kib as f64 / 1024.0
            )),
        ));
    }
    out
}

/// The issue-3 targets, checked against the reports of one compare run (labels as
/// compare.sh names them). Each line says the figure, the target, and whether it holds.
pub fn targets(runs: &[(String, Report)]) -> String {
    let find = |label: &str, broker: &str| {
        runs.iter()
            .find(|(l, r)| l == label && r.broker == broker)
            .map(|(_, r)| r)
    };
    let verdict = |ok: bool| if ok { "met" } else { "**missed**" };
    let mut out = String::from("| target | figure | |\n|---|---|---|\n");
    for label in ["a-pairs-qos0", "b-pairs-qos1"] {
        let Some(ours) = find(label, "sealrelay") else {
            continue;
        };
        for (peer, want) in [("mosquitto", 1.5), ("rumqttd", 1.0)] {
            if let Some(theirs) = find(label, peer) {
                let ratio = ours.messages_per_second / theirs.messages_per_second.max(1e-9);
                out.push_str(&format!(
                    "| {label}: throughput ≥ {want}× {peer} | {ratio:.2}× ({:.0} vs {:.0} msg/s) | {} |\n",
                    ours.messages_per_second,
                    theirs.messages_per_second,
                    verdict(ratio >= want)
                ));
            }
        }
    }
    let p99 = |r: &Report| r.latency_us.as_ref().map_or(u64::MAX, |l| l.p99);
    if let (Some(ours), Some(theirs)) = (
        find("f-latency-qos1", "sealrelay"),
        find("f-latency-qos1", "mosquitto"),
    ) {
        out.push_str(&format!(
            "| f-latency-qos1: p99 at half of sealrelay's max rate ≤ mosquitto's | {} µs vs {} µs | {} |\n",
            p99(ours),
            p99(theirs),
            verdict(p99(ours) <= p99(theirs))
        ));
    }
    if let Some(k) = find("d-idle", "sealrelay").and_then(|r| r.kib_per_session) {
        out.push_str(&format!(
            "| d-idle: memory per idle session ≤ 16 KiB | {k:.1} KiB | {} |\n",
            verdict(k <= 16.0)
        ));
    }
    if let Some(r) = find("e-storm", "sealrelay") {
        out.push_str(&format!(
            "| e-storm: authenticated connects ≥ 5,000/s | {:.0}/s | {} |\n",
            r.connects_per_second,
            verdict(r.connects_per_second >= 5000.0)
        ));
    }
    out
}

/// A two-panel SVG: throughput of the traffic scenarios, and p99 latency of the half-rate
/// run, one bar per broker. Written by hand: a plotting crate would bring a font stack
/// just to measure these few labels.
pub fn chart(runs: &[(String, Report)]) -> String {
    const W: f64 = 760.0;
    const LEFT: f64 = 150.0;
    const BAR: f64 = 16.0;
    let brokers: Vec<&str> = runs.iter().fold(Vec::new(), |mut seen, (_, r)| {
        if !seen.contains(&r.broker.as_str()) {
            seen.push(&r.broker);
        }
        seen
    });
    let colour = |b: &str| match brokers.iter().position(|x| *x == b) {
        Some(0) => "#2b6cb0",
        Some(1) => "#dd6b20",
        _ => "#718096",
    };
    let panel = |title: &str,
                 unit: &str,
                 rows: Vec<(&str, &str, f64)>,
                 top: f64|
     -> (String, f64) {
        let max = rows.iter().map(|r| r.2).fold(0.0, f64::max).max(1e-9);
        let mut svg = format!(
            "<text x=\"10\" y=\"{}\" font-weight=\"bold\">{title}</text>\n",
            top + 16.0
        );
        let mut y = top + 28.0;
        let mut last_label = "";
        for (label, broker, value) in rows {
            if label != last_label {
                y += 8.0;
                svg.push_str(&format!(
                    "<text x=\"10\" y=\"{}\">{label}</text>\n",
                    y + BAR - 4.0
                ));
                last_label = label;
            }
            let width = (W - LEFT - 120.0) * value / max;
            svg.push_str(&format!(
                "<rect x=\"{LEFT}\" y=\"{y}\" width=\"{width:.1}\" height=\"{}\" fill=\"{}\"/><text x=\"{:.1}\" y=\"{}\" font-size=\"11\">{broker} {value:.1} {unit}</text>\n",
                BAR - 2.0,
                colour(broker),
                LEFT + width + 4.0,
                y + BAR - 5.0
            ));
            y += BAR;
        }
        (svg, y)
    };
    let traffic: Vec<_> = runs
        .iter()
        .filter(|(l, r)| r.kind == Kind::Traffic && !l.starts_with("f-"))
        .map(|(l, r)| {
            (
                l.as_str(),
                r.broker.as_str(),
                r.messages_per_second / 1000.0,
            )
        })
        .collect();
    let latency: Vec<_> = runs
        .iter()
        .filter(|(l, _)| l.starts_with("f-"))
        .filter_map(|(l, r)| {
            Some((
                l.as_str(),
                r.broker.as_str(),
                r.latency_us.as_ref()?.p99 as f64 / 1000.0,
            ))
        })
        .collect();
    let (first, y) = panel(
        "Throughput (thousand messages/s, higher is better)",
        "k/s",
        traffic,
        0.0,
    );
    let (second, height) = panel(
        "p99 latency at half of sealrelay's QoS 1 rate (ms, lower is better)",
        "ms",
        latency,
        y + 16.0,
    );
    format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{W}\" height=\"{:.0}\" font-family=\"sans-serif\" font-size=\"12\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n{first}{second}</svg>\n",
        height + 10.0
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Flags {
        #[command(flatten)]
        scenario: Scenario,
    }

    #[test]
    fn summary_table_has_a_row_per_run_and_survives_json() {
        let scenario = Flags::parse_from(["x", "--broker-name", "mosquitto"]).scenario;
        let mut histogram = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap();
        histogram.record(250).unwrap();
        let report = Report::traffic(
            &scenario,
            Traffic {
                setup: Duration::from_secs(1),
                measured: Duration::from_secs(2),
                sent: 100,
                sent_in_window: 100,
                received: 98,
                duplicates: 0,
                blinks: 0,
                errors: 0,
                max_lag_us: 0,
                histogram,
                broker: None,
            },
        );
        let back: Report = serde_json::from_str(&serde_json::to_string(&report).unwrap()).unwrap();
        // Of three runs, the median by throughput is kept.
        let mut slow = back.clone();
        slow.messages_per_second = 10.0;
        let mut fast = back.clone();
        fast.messages_per_second = 90.0;
        let label = || "b-pairs-qos1".to_owned();
        let kept = medians(vec![
            (label(), fast),
            (label(), back.clone()),
            (label(), slow),
        ]);
        assert_eq!(kept.len(), 1);
        assert_eq!(kept[0].1.messages_per_second, back.messages_per_second);
        let table = markdown(&[("b-pairs-qos1".into(), back)]);
        let row = table.lines().nth(2).unwrap();
        assert!(
            row.starts_with("| b-pairs-qos1 | mosquitto | 49 | 0.0 | 250 |"),
            "{row}"
        );
        assert!(row.contains("| 2 | 0 |"), "two lost, no errors: {row}");
    }
}
