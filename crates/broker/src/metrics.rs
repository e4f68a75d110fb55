//! Prometheus metrics: every name and label the broker exports is defined here, served at
//! `GET /metrics` by the HTTP module. Labels are closed sets of static words; no principal
//! id, topic, IP or payload ever becomes a label.

use std::sync::OnceLock;

use metrics::{
    counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram, Counter,
    Gauge, Histogram,
};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
static HOT: OnceLock<Hot> = OnceLock::new();
/// The process collector (`process_cpu_seconds_total`, `process_resident_memory_bytes`,
/// open file descriptors, threads, start time), read at each scrape.
static PROCESS: OnceLock<metrics_process::Collector> = OnceLock::new();

/// Counters touched for every packet, resolved once instead of per use.
pub struct Hot {
    pub sessions_active: Gauge,
    pub messages_in: Counter,
    pub bytes_in: Counter,
    pub messages_out: Counter,
    pub bytes_out: Counter,
    pub dropped_backpressure: Counter,
    pub dropped_broker_budget: Counter,
    pub dropped_offline_full: Counter,
    pub no_subscriber: Counter,
    /// Sizes of the envelopes accepted from publishers.
    pub envelope_size: Histogram,
    /// Time from an envelope's hand-off to its recipient's session until it was written to
    /// the recipient's socket.
    pub routing: Histogram,
}

/// Histogram buckets, per series: what each is measured in and the range that matters.
const BUCKETS: [(&str, &[f64]); 5] = [
    // Seconds from the router's hand-off to the recipient socket: tens of microseconds on
    // an idle broker; a recipient with a full in-flight window waits for its PUBACKs.
    (
        "sealrelay_routing_seconds",
        &[0.0001, 0.0005, 0.001, 0.005, 0.025, 0.1, 0.5, 2.5],
    ),
    // Bytes: a command's few hundred up to envelope.max_bytes's 256 KiB.
    (
        "sealrelay_envelope_bytes",
        &[256.0, 1024.0, 4096.0, 16384.0, 65536.0, 262144.0],
    ),
    // Seconds from a CONNECT read to its CONNACK: a login from memory takes well under a
    // millisecond; a takeover across nodes waits for another node.
    (
        "sealrelay_connect_seconds",
        &[0.0005, 0.001, 0.005, 0.025, 0.1, 0.5, 2.5],
    ),
    // Seconds to answer an API request: from memory, from the database, or an Argon2id
    // registration's wrap.
    (
        "sealrelay_http_request_seconds",
        &[0.001, 0.005, 0.025, 0.1, 0.5, 2.5, 10.0],
    ),
    // Seconds for one accounting transaction: a few rows, or every live session's at a
    // checkpoint of a large fleet.
    (
        "sealrelay_accounting_write_seconds",
        &[0.001, 0.01, 0.1, 0.5, 2.5, 10.0],
    ),
];

/// Installs the process-wide recorder (once) and returns the handle that renders it.
pub fn install() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let builder = BUCKETS
                .iter()
                .fold(PrometheusBuilder::new(), |b, (name, buckets)| {
                    b.set_buckets_for_metric(Matcher::Full((*name).into()), buckets)
                        .expect("every histogram has buckets")
                });
            let handle = builder
                .install_recorder()
                .expect("no other metrics recorder is installed in this process");
            describe();
            PROCESS
                .get_or_init(metrics_process::Collector::default)
                .describe();
            // Present from the first scrape, at zero: a series that appears only with its first
            // event cannot be told from one that is not exported, and `rate()` misses its start.
            hot();
            zeroes();
            gauge!(
                "sealrelay_build_info",
                "version" => env!("CARGO_PKG_VERSION"),
                "commit" => crate::BUILD_COMMIT
            )
            .set(1.0);
            handle
        })
        .clone()
}

pub fn hot() -> &'static Hot {
    HOT.get_or_init(|| Hot {
        sessions_active: gauge!("sealrelay_sessions_active"),
        messages_in: counter!("sealrelay_envelopes_received_total"),
        bytes_in: counter!("sealrelay_envelope_bytes_received_total"),
        messages_out: counter!("sealrelay_envelopes_delivered_total"),
        bytes_out: counter!("sealrelay_envelope_bytes_delivered_total"),
        dropped_backpressure: counter!("sealrelay_deliveries_refused_total", "reason" => "backpressure"),
        dropped_broker_budget: counter!("sealrelay_deliveries_refused_total", "reason" => "broker_budget"),
        dropped_offline_full: counter!("sealrelay_deliveries_refused_total", "reason" => "offline_queue_full"),
        no_subscriber: counter!("sealrelay_deliveries_refused_total", "reason" => "no_subscriber"),
        envelope_size: histogram!("sealrelay_envelope_bytes"),
        routing: histogram!("sealrelay_routing_seconds"),
    })
}

/// MQTT transports and protocol versions, the labels of `sealrelay_sessions`.
const TRANSPORTS: [&str; 4] = ["tcp", "tls", "ws", "wss"];
const VERSIONS: [&str; 2] = ["3.1.1", "5.0"];

/// Counters of one label whose values are a closed set: (name, label, values).
const ZEROED: [(&str, &str, &[&str]); 6] = [
    (
        "sealrelay_auth_total",
        "result",
        &["ok", "denied", "rate_limited"],
    ),
    (
        "sealrelay_throttled_total",
        "limit",
        &["publishes_per_second", "bytes_per_second"],
    ),
    (
        "sealrelay_key_events_total",
        "event",
        &[
            "password_changed",
            "password_rolled_back",
            "reset_issued",
            "reset_completed",
            "token_rotated",
            "reenrolled",
            "instance_removed",
            "account_deleted",
        ],
    ),
    (
        "sealrelay_refused_total",
        "reason",
        &[
            "bad_packet",
            "retain",
            "subscribe_not_own_inbox",
            "client_max_packet",
            "cluster_bad_frame",
            "cluster_no_answer",
            "cluster_config_mismatch",
        ],
    ),
    (
        "sealrelay_publish_refused_total",
        "reason",
        &[
            "topic_not_inbox",
            "not_paired",
            "sender_spoofed",
            "envelope_too_large",
            "bad_header",
            "recipient_mismatch",
            "packet_id_in_use",
            "retain_refused",
        ],
    ),
    (
        "sealrelay_offline_discarded_total",
        "reason",
        &[
            "session_expired",
            "clean_start",
            "offline_share",
            "broker_budget",
        ],
    ),
];

/// Every series of a closed label set, at zero, so that alerts and dashboards see it
/// before its first event.
fn zeroes() {
    for (name, label, values) in ZEROED {
        for value in values {
            counter!(name, label => *value).absolute(0);
        }
    }
    for transport in TRANSPORTS {
        for version in VERSIONS {
            gauge!("sealrelay_sessions", "transport" => transport, "version" => version).set(0.0);
        }
        counter!("sealrelay_connections_total", "transport" => transport, "outcome" => "accepted")
            .absolute(0);
    }
    // The outcomes an alert watches (the caps), on every listener.
    for transport in TRANSPORTS.into_iter().chain(["http", "https"]) {
        for outcome in ["refused_capacity", "refused_ip_capacity"] {
            counter!("sealrelay_connections_total", "transport" => transport, "outcome" => outcome)
                .absolute(0);
        }
    }
    for close in sealrelay_wire::Close::ALL {
        counter!("sealrelay_sessions_closed_total", "reason" => close.label()).absolute(0);
    }
    for kind in ["events", "checkpoint"] {
        for outcome in ["ok", "failed", "dropped"] {
            counter!("sealrelay_accounting_writes_total", "kind" => kind, "outcome" => outcome)
                .absolute(0);
        }
    }
    held_bytes(0, 0);
    for transport in ["http", "https"] {
        gauge!("sealrelay_http_connections_open", "transport" => transport).set(0.0);
    }
    counter!("sealrelay_storage_full_total").absolute(0);
    sessions_parked(0);
    // A single node knows itself; a cluster's nodes count the others as they hear them.
    cluster_nodes(1);
}

/// A session reached CONNACK (`+1`) or left (`-1`) on `transport` in `version`.
pub fn session_count(transport: &'static str, version: &'static str, delta: f64) {
    gauge!("sealrelay_sessions", "transport" => transport, "version" => version).increment(delta);
}

/// Envelope bytes held now: queued for live sessions, and parked with persistent ones.
pub fn held_bytes(queued: usize, parked: usize) {
    gauge!("sealrelay_held_bytes", "state" => "queued").set(queued as f64);
    gauge!("sealrelay_held_bytes", "state" => "parked").set(parked as f64);
}

fn describe() {
    describe_gauge!(
        "sealrelay_sessions_active",
        "MQTT sessions past CONNACK, right now."
    );
    describe_gauge!(
        "sealrelay_sessions_parked",
        "Persistent MQTT sessions between connections, holding their queues in memory."
    );
    describe_gauge!(
        "sealrelay_sessions",
        "MQTT sessions past CONNACK, right now, by listener transport and protocol version."
    );
    describe_gauge!(
        "sealrelay_held_bytes",
        metrics::Unit::Bytes,
        "Envelope bytes the broker holds for recipients: queued for live sessions (written, not yet acknowledged or flushed) and parked with persistent sessions between connections."
    );
    describe_gauge!(
        "sealrelay_held_bytes_max",
        metrics::Unit::Bytes,
        "The most envelope bytes the broker holds for recipients (mqtt.outbound_total_bytes): past it deliveries are refused as broker_budget."
    );
    describe_histogram!(
        "sealrelay_routing_seconds",
        metrics::Unit::Seconds,
        "Time from an envelope's hand-off to its recipient's session (right after its PUBLISH was read and checked, or its arrival from another node) until it was written to the recipient's socket; sampled, one delivery in 16."
    );
    describe_histogram!(
        "sealrelay_envelope_bytes",
        metrics::Unit::Bytes,
        "Sizes of the envelopes accepted from publishers."
    );
    describe_histogram!(
        "sealrelay_connect_seconds",
        metrics::Unit::Seconds,
        "Time from a CONNECT read to its CONNACK, accepted or refused."
    );
    describe_histogram!(
        "sealrelay_http_request_seconds",
        metrics::Unit::Seconds,
        "Time to answer an API request, by route."
    );
    describe_histogram!(
        "sealrelay_accounting_write_seconds",
        metrics::Unit::Seconds,
        "Time of one accounting transaction (rows at CONNACK and close, checkpoints), by kind."
    );
    describe_counter!(
        "sealrelay_storage_full_total",
        "API writes the directory database refused because its disk is full or read-only (answered 507)."
    );
    describe_counter!(
        "sealrelay_accounting_writes_total",
        "Accounting transactions by kind (events, checkpoint) and outcome (ok, failed: retried with the next; dropped: past the rows a failing database may leave waiting)."
    );
    describe_gauge!(
        "sealrelay_build_info",
        "Always 1; its labels say which version and commit the broker was built from."
    );
    describe_gauge!(
        "sealrelay_connections_max",
        "Connections the broker admits at once, per protocol: the caps in force, after lowering them to fit the open-file limit."
    );
    describe_gauge!(
        "sealrelay_cluster_nodes",
        "Broker nodes this node knows of in its cluster, itself included (1 on a single node)."
    );
    describe_counter!(
        "sealrelay_offline_discarded_total",
        "Envelopes queued for a persistent session and discarded with it, by why it ended."
    );
    describe_gauge!(
        "sealrelay_http_connections_open",
        "API connections (HTTP, HTTPS) held right now against http.max_connections: refused ones aside, an idle one evicted for room leaves at once."
    );
    describe_counter!(
        "sealrelay_connections_total",
        "Connections by listener transport and outcome (MQTT: CONNECT, caps, handshakes; HTTP: caps, none requested)."
    );
    describe_counter!(
        "sealrelay_auth_total",
        "Login checks (MQTT and HTTP) by result."
    );
    describe_counter!(
        "sealrelay_envelopes_received_total",
        "Envelopes accepted from publishers."
    );
    describe_counter!(
        "sealrelay_envelope_bytes_received_total",
        "Bytes of envelopes accepted from publishers."
    );
    describe_counter!(
        "sealrelay_envelopes_delivered_total",
        "Envelopes written to subscriber sessions."
    );
    describe_counter!(
        "sealrelay_envelope_bytes_delivered_total",
        "Bytes of envelopes written to subscriber sessions."
    );
    describe_counter!(
        "sealrelay_deliveries_refused_total",
        "Envelopes not handed to a recipient session, by reason."
    );
    describe_counter!(
        "sealrelay_refused_total",
        "Packets other than publishes refused (subscriptions, retain, oversized deliveries, bad packets), by reason."
    );
    describe_counter!(
        "sealrelay_publish_refused_total",
        "Publishes refused by the ACL or envelope checks, by reason; the session stays."
    );
    describe_counter!(
        "sealrelay_throttled_total",
        "Pauses in reading a session's socket, by the per-session limit that caused them."
    );
    describe_counter!(
        "sealrelay_sessions_closed_total",
        "Closed MQTT sessions by reason."
    );
    describe_counter!(
        "sealrelay_http_requests_total",
        "HTTP API requests by route and status class."
    );
    describe_counter!(
        "sealrelay_key_events_total",
        "Key lifecycle events (password changes, resets, rotations, re-enrolments, removals, deletions)."
    );
}

pub fn connection(transport: &'static str, outcome: &'static str) {
    counter!("sealrelay_connections_total", "transport" => transport, "outcome" => outcome)
        .increment(1);
}

/// `count` envelopes queued for a persistent session, discarded with it for `why` (a close
/// label, `session_expired`, `clean_start` or `parked_sessions_cap`).
pub fn offline_discarded(why: &'static str, count: usize) {
    if count > 0 {
        counter!("sealrelay_offline_discarded_total", "reason" => why).increment(count as u64);
    }
}

/// Persistent sessions between connections, now.
pub fn sessions_parked(count: usize) {
    gauge!("sealrelay_sessions_parked").set(count as f64);
}

/// Folds the samples the histograms recorded into their buckets, every second, for as
/// long as the returned task lives: the exporter keeps each sample until then, so a broker
/// nobody scrapes would otherwise hold one per envelope, growing without bound.
pub fn spawn_upkeep(handle: PrometheusHandle) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
        loop {
            tick.tick().await;
            handle.run_upkeep();
        }
    })
}

/// Renders every series for a scrape, the process's read now.
pub fn render(handle: &PrometheusHandle) -> String {
    if let Some(process) = PROCESS.get() {
        process.collect();
    }
    handle.render()
}

/// An API request on `route` answered in `seconds`.
pub fn http_seconds(route: &str, seconds: f64) {
    histogram!("sealrelay_http_request_seconds", "route" => route.to_owned()).record(seconds);
}

/// A write the directory database refused for want of space (or a read-only disk).
pub fn storage_full() {
    counter!("sealrelay_storage_full_total").increment(1);
}

/// An accounting transaction of `kind` (`events`, `checkpoint`) ended with `outcome`.
pub fn accounting_write(kind: &'static str, outcome: &'static str, seconds: f64) {
    counter!("sealrelay_accounting_writes_total", "kind" => kind, "outcome" => outcome)
        .increment(1);
    if outcome != "dropped" {
        histogram!("sealrelay_accounting_write_seconds", "kind" => kind).record(seconds);
    }
}

/// A CONNECT answered (accepted or refused), `seconds` after it was read.
pub fn connect_answered(seconds: f64) {
    histogram!("sealrelay_connect_seconds").record(seconds);
}

/// The connection caps in force (after fitting the open-file limit), per protocol, and
/// the bytes the broker holds for recipients at most (`mqtt.outbound_total_bytes`).
pub fn connection_caps(mqtt: usize, http: usize, held_bytes: usize) {
    gauge!("sealrelay_connections_max", "protocol" => "mqtt").set(mqtt as f64);
    gauge!("sealrelay_connections_max", "protocol" => "http").set(http as f64);
    gauge!("sealrelay_held_bytes_max").set(held_bytes as f64);
}

/// Nodes of the cluster this node knows, itself included; every second.
pub fn cluster_nodes(count: usize) {
    gauge!("sealrelay_cluster_nodes").set(count as f64);
}

/// An API connection opened (`1.0`) or closed (`-1.0`).
pub fn http_connections(transport: &'static str, change: f64) {
    gauge!("sealrelay_http_connections_open", "transport" => transport).increment(change);
}

pub fn auth_result(result: &'static str) {
    counter!("sealrelay_auth_total", "result" => result).increment(1);
}

/// A publish refused (answered per message, never by closing), by its fixed label.
pub fn publish_refused(reason: &'static str) {
    counter!("sealrelay_publish_refused_total", "reason" => reason).increment(1);
}

pub fn refused(reason: &'static str) {
    counter!("sealrelay_refused_total", "reason" => reason).increment(1);
}

/// A session's reading paused by its rate limit (`publishes_per_second`, `bytes_per_second`).
pub fn throttled(limit: &'static str) {
    counter!("sealrelay_throttled_total", "limit" => limit).increment(1);
}

pub fn session_closed(reason: &'static str) {
    counter!("sealrelay_sessions_closed_total", "reason" => reason).increment(1);
}

/// A key lifecycle event, by its fixed name (never a principal or a key).
pub fn key_event(event: &'static str) {
    counter!("sealrelay_key_events_total", "event" => event).increment(1);
}

pub fn http_request(route: &str, status: u16) {
    let class = match status {
        200..=299 => "2xx",
        400..=499 => "4xx",
        _ => "5xx",
    };
    counter!("sealrelay_http_requests_total", "route" => route.to_owned(), "status" => class)
        .increment(1);
}

#[cfg(test)]
mod tests {
    use super::ZEROED;

    /// The per-message publish refusals zeroed at start are close labels (the names
    /// `publish_refused` is called with): a typo would export a series nothing counts.
    #[test]
    fn zeroed_publish_refusals_are_close_labels() {
        let labels: Vec<_> = sealrelay_wire::Close::ALL
            .iter()
            .map(|c| c.label())
            .collect();
        let (_, _, refusals) = ZEROED
            .iter()
            .find(|(name, _, _)| *name == "sealrelay_publish_refused_total")
            .unwrap();
        for reason in *refusals {
            assert!(labels.contains(reason), "{reason} is no close label");
        }
    }
}
