//! sealrelay-load: scripted MQTT load for sealrelay and, with `--plain`, for any broker.
//!
//! Against sealrelay every message is a real sealed envelope made by the SDK: principals are
//! registered through the HTTP API, and each console→instance pair gets a pool of envelopes
//! sealed before the clock starts, so client-side crypto never limits the broker under test.
//! `--plain` speaks ordinary topics without logins and the same payload sizes, so one
//! scenario runs unchanged against mosquitto or rumqttd for a side-by-side comparison.
//!
//! Latency is end to end: from the moment the load tool publishes (for open loop, the
//! moment it was scheduled to, so a stalled broker is not excused) to the moment the
//! receiving client sees the same message. Each pool message carries a unique 8-byte tag
//! (its last 8 bytes: part of the MAC for sealed envelopes, random for plain ones).

pub mod procstat;
pub mod report;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::{Args, ValueEnum};
use hdrhistogram::Histogram;
use rand_core::{OsRng, RngCore};
use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions, Packet, QoS};
use sealrelay_client::{Api, Identity};
use sealrelay_wire::KdfParams;
use serde::Serialize;
use tokio::sync::{Semaphore, SemaphorePermit};
use tokio::task::JoinSet;

pub use report::Report;

/// What to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// N consoles, each sending to its M instances (pairs: M = 1; fan-out: N = 1).
    Traffic,
    /// Hold `--sessions` connected and idle; report the broker's memory per session.
    Idle,
    /// Connect `--sessions` clients at once; report authenticated connects per second.
    Storm,
}

/// A scenario; every knob is a flag (`sealrelay-load --help`).
#[derive(Debug, Clone, Args, Serialize, serde::Deserialize)]
pub struct Scenario {
    /// traffic, idle or storm.
    #[arg(long, value_enum, default_value = "traffic")]
    pub kind: Kind,
    /// Consoles (senders).
    #[arg(long, default_value_t = 1)]
    pub consoles: usize,
    /// Instances (receivers) per console; each console→instance link is a pair.
    #[arg(long, default_value_t = 1)]
    pub instances_per_console: usize,
    /// Message size in bytes: the whole sealed envelope (or the plain payload).
    #[arg(long, default_value_t = 256)]
    pub size: usize,
    /// MQTT QoS of publishes and subscriptions: 0 or 1.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(0..=1))]
    pub qos: u8,
    /// Open loop: total messages per second across all pairs. 0 = closed loop (see --window).
    #[arg(long, default_value_t = 0)]
    pub rate: u64,
    /// Closed loop: messages in flight per pair (sent, not yet received).
    #[arg(long, default_value_t = 10)]
    pub window: usize,
    /// Seconds of traffic (or of holding idle sessions).
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Connections opened per second while setting up; 0 = all at once.
    #[arg(long, default_value_t = 0)]
    pub ramp: u64,
    /// Traffic under churn: every instance drops its connection (no DISCONNECT) every this
    /// many seconds, staggered across instances, and comes back after --away; instances hold
    /// persistent sessions (clean session 0), and the report counts what was delivered once,
    /// twice, or never. 0 = no churn. Needs open loop (--rate) and at most 1,024 messages per
    /// pair over the run, so every message is told apart.
    #[arg(long, default_value_t = 0.0)]
    #[serde(default)]
    pub churn: f64,
    /// Milliseconds a churning instance stays away before it reconnects.
    #[arg(long, default_value_t = 500)]
    #[serde(default)]
    pub away: u64,
    /// Sessions for idle and storm (on sealrelay: 32 per instance principal, the broker's
    /// default mqtt.max_sessions_per_principal).
    #[arg(long, default_value_t = 1000)]
    pub sessions: usize,
    /// Reconnect storm: repeat the storm this many times (each round disconnects all first).
    #[arg(long, default_value_t = 1)]
    pub rounds: usize,
    /// Speak ordinary topics without logins (for mosquitto, rumqttd, ...).
    #[arg(long)]
    pub plain: bool,
    /// MQTT address of the broker under test: mqtt://, mqtts://, ws:// or wss:// URL, or a
    /// bare host:port (plain TCP).
    #[arg(long, default_value = "127.0.0.1:1883")]
    pub mqtt: String,
    /// MQTT address the instances (the receivers) connect to, if not --mqtt: another node of
    /// a sealrelay cluster, so every message crosses nodes.
    #[arg(long)]
    #[serde(default)]
    pub receive_at: Option<String>,
    /// HTTP API of sealrelay, http:// or https:// (not used with --plain).
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    pub http: String,
    /// PEM file of the CA to trust for mqtts, wss and https (e.g. sealrelay's development
    /// certificate); the system's roots otherwise.
    #[arg(long)]
    #[serde(default)]
    pub ca_file: Option<std::path::PathBuf>,
    /// PID of the broker, to report its memory and CPU (read from /proc); several,
    /// comma-separated, for the nodes of a cluster (their sums are reported).
    #[arg(long, value_delimiter = ',')]
    #[serde(default)]
    pub broker_pid: Vec<u32>,
    /// Name of the broker in the report.
    #[arg(long, default_value = "sealrelay")]
    pub broker_name: String,
}

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("setting up principals through the HTTP API failed: {0}")]
    Setup(#[from] sealrelay_client::ClientError),
    #[error("MQTT connection {0} failed: {1}")]
    Connect(String, String),
    #[error("invalid scenario: {0}")]
    Scenario(String),
}

/// Sealed envelopes carry 150 bytes of framing around the payload: header 54, box nonce
/// 24, MAC 16, and the authenticated prefix (sender, recipient, message id, time) 56.
const SEALED_OVERHEAD: usize = 54 + 24 + 16 + 56;
/// Most messages per pair pool; the in-flight count per pair must stay below its size.
const POOL: usize = 1024;
const TAG: usize = 8;
/// The load tool's registrations use the server's floor so setup stays short.
const LOAD_KDF: KdfParams = KdfParams {
    memory_kib: 19_456,
    iterations: 2,
    parallelism: 1,
};

/// One side of a connection: how it logs in and which topic is its inbox.
#[derive(Clone)]
struct Endpoint {
    login: Option<(String, String)>,
    inbox: String,
}

/// A console→instance link with its pre-made messages.
struct Pair {
    topic: String,
    pool: Vec<Bytes>,
    tags: HashMap<u64, u32>,
    /// Nanoseconds since the run's start at which each pool slot was (to be) sent.
    sent_at: Vec<AtomicU64>,
    window: Semaphore,
}

fn tag_of(message: &[u8]) -> u64 {
    u64::from_le_bytes(message[message.len() - TAG..].try_into().expect("8 bytes"))
}

impl Pair {
    fn new(topic: String, pool: Vec<Bytes>, window: usize) -> Pair {
        let tags = pool
            .iter()
            .enumerate()
            .map(|(i, m)| (tag_of(m), i as u32))
            .collect();
        Pair {
            topic,
            sent_at: (0..pool.len()).map(|_| AtomicU64::new(0)).collect(),
            tags,
            pool,
            window: Semaphore::new(window),
        }
    }
}

fn options(
    scenario: &Scenario,
    mqtt: &str,
    client_id: String,
    login: &Option<(String, String)>,
    inflight: u16,
    persistent: bool,
) -> Result<MqttOptions, LoadError> {
    let broker = sealrelay_client::Broker::parse(mqtt, scenario.ca_file.as_deref())
        .map_err(|e| LoadError::Scenario(format!("--mqtt / --receive-at: {e}")))?;
    let (host, port, transport) = broker.rumqttc();
    let mut options = MqttOptions::new(client_id, host, port);
    options
        .set_transport(transport)
        .set_keep_alive(Duration::from_secs(60))
        .set_max_packet_size(1 << 20, 1 << 20)
        .set_inflight(inflight.max(1))
        .set_request_channel_capacity(usize::from(inflight.max(1)) * 2)
        .set_clean_session(!persistent);
    if let Some((user, secret)) = login {
        options.set_credentials(user, secret);
    }
    Ok(options)
}

/// How a connection starts: subscribing to its inbox or not; with a persistent session (an
/// instance under churn) or a clean one.
#[derive(Clone, Copy)]
struct Start {
    subscribe: bool,
    persistent: bool,
}

/// A console: publishes only, on a clean session.
const CONSOLE: Start = Start {
    subscribe: false,
    persistent: false,
};

/// Connects, waits for CONNACK, and subscribes to `inbox` if asked (waiting for SUBACK).
async fn connect(
    scenario: &Scenario,
    id: String,
    endpoint: &Endpoint,
    Start {
        subscribe,
        persistent,
    }: Start,
    inflight: u16,
) -> Result<(AsyncClient, EventLoop), LoadError> {
    // Receivers (subscribing, or coming back to a kept session) may be on another node.
    let mqtt = match (subscribe || persistent, &scenario.receive_at) {
        (true, Some(there)) => there.as_str(),
        _ => scenario.mqtt.as_str(),
    };
    let (client, mut eventloop) = AsyncClient::new(
        options(
            scenario,
            mqtt,
            id.clone(),
            &endpoint.login,
            inflight,
            persistent,
        )?,
        usize::from(inflight.max(1)) * 2,
    );
    // rumqttc leaves Nagle on; the load tool must not add 40 ms to what it measures.
    let mut network = eventloop.network_options();
    network.set_tcp_nodelay(true);
    eventloop.set_network_options(network);
    let fail = |e: String| LoadError::Connect(id.clone(), e);
    if subscribe {
        let qos = if scenario.qos == 0 {
            QoS::AtMostOnce
        } else {
            QoS::AtLeastOnce
        };
        client
            .subscribe(endpoint.inbox.clone(), qos)
            .await
            .map_err(|e| fail(e.to_string()))?;
    }
    loop {
        match eventloop.poll().await.map_err(|e| fail(e.to_string()))? {
            Event::Incoming(Packet::ConnAck(_)) if !subscribe => return Ok((client, eventloop)),
            Event::Incoming(Packet::SubAck(ack)) => {
                if ack
                    .return_codes
                    .iter()
                    .any(|c| matches!(c, rumqttc::SubscribeReasonCode::Failure))
                {
                    return Err(fail("subscription refused".into()));
                }
                return Ok((client, eventloop));
            }
            _ => {}
        }
    }
}

/// Pool size per pair: several times what can be in flight (closed loop: the window; open
/// loop: about two seconds of the pair's rate), bounded so a 1,000-pair fan-out stays small.
fn pool_size(s: &Scenario) -> usize {
    let pairs = (s.consoles * s.instances_per_console).max(1) as u64;
    if s.churn > 0.0 {
        // One slot per message of the run: a message is told apart from a redelivery.
        return churn_messages_per_pair(s).max(64);
    }
    let in_flight = if s.rate > 0 {
        (s.rate * 2 / pairs) as usize
    } else {
        s.window * 8
    };
    in_flight.clamp(64, POOL)
}

/// Messages one pair sends in a churn run (rounded up).
fn churn_messages_per_pair(s: &Scenario) -> usize {
    let pairs = (s.consoles * s.instances_per_console).max(1) as f64;
    (s.rate as f64 * s.duration / pairs).ceil() as usize + 1
}

fn random_payload(size: usize) -> Vec<u8> {
    let mut payload = vec![0u8; size];
    OsRng.fill_bytes(&mut payload);
    payload
}

/// Consoles, their instances, and a message pool per pair.
struct Cast {
    consoles: Vec<Endpoint>,
    instances: Vec<Endpoint>,
    /// pools[c * m + j]: console c → its instance j.
    pools: Vec<Vec<Bytes>>,
}

async fn plain_cast(s: &Scenario, run: &str) -> Cast {
    let pairs = s.consoles * s.instances_per_console;
    let plain = |kind: &str, i: usize| Endpoint {
        login: None,
        inbox: format!("bench/{run}/{kind}/{i}"),
    };
    Cast {
        consoles: (0..s.consoles).map(|i| plain("c", i)).collect(),
        instances: (0..pairs).map(|i| plain("i", i)).collect(),
        pools: (0..pairs)
            .map(|_| {
                (0..pool_size(s))
                    .map(|_| Bytes::from(random_payload(s.size)))
                    .collect()
            })
            .collect(),
    }
}

/// Registers the consoles, adds their instances and seals every pool, through the SDK.
async fn sealed_cast(s: &Scenario, run: &str) -> Result<Cast, LoadError> {
    if s.size < SEALED_OVERHEAD + 1 {
        return Err(LoadError::Scenario(format!(
            "--size must be at least {} for a sealed envelope",
            SEALED_OVERHEAD + 1
        )));
    }
    let api = Api::with_ca(&s.http, s.ca_file.as_deref())?;
    let mut tasks = JoinSet::new();
    for c in 0..s.consoles {
        let (api, run, m, size, pool_size) = (
            api.clone(),
            run.to_owned(),
            s.instances_per_console,
            s.size,
            pool_size(s),
        );
        tasks.spawn(async move {
            let name = format!("load-{run}-c{c}");
            let mut console =
                Identity::register_user(&api, &name, &format!("pw-{name}"), LOAD_KDF).await?;
            let mut instances = Vec::with_capacity(m);
            for _ in 0..m {
                let (_, token) = console.add_instance(&api).await?;
                let instance = Identity::login_instance(&api, &token).await?;
                let sealer = console.sealer_to(instance.id, &instance.public_key());
                let pool = (0..pool_size)
                    .map(|_| sealer.seal(&random_payload(size - SEALED_OVERHEAD)))
                    .collect::<Result<Vec<_>, _>>()?;
                instances.push((endpoint_of(&instance), pool));
            }
            Ok::<_, sealrelay_client::ClientError>((c, endpoint_of(&console), instances))
        });
    }
    let mut consoles = vec![None; s.consoles];
    let mut per_console = vec![Vec::new(); s.consoles];
    while let Some(done) = tasks.join_next().await {
        let (c, console, instances) = done.expect("setup task")?;
        consoles[c] = Some(console);
        per_console[c] = instances;
    }
    let (instances, pools) = per_console.into_iter().flatten().unzip();
    Ok(Cast {
        consoles: consoles
            .into_iter()
            .map(|c| c.expect("every console set up"))
            .collect(),
        instances,
        pools,
    })
}

fn endpoint_of(identity: &Identity) -> Endpoint {
    Endpoint {
        login: Some((identity.login.clone(), identity.auth_secret().to_owned())),
        inbox: identity.id.inbox_topic(),
    }
}

fn run_id() -> String {
    format!("{:08x}", OsRng.next_u32())
}

/// Counts of a run that its tasks add to.
#[derive(Default)]
struct Counters {
    sent: AtomicU64,
    /// Distinct messages received (under churn; all receipts otherwise).
    received: AtomicU64,
    /// Under churn: receipts of a message already received.
    duplicates: AtomicU64,
    /// Under churn: connections dropped and reopened.
    blinks: AtomicU64,
    errors: AtomicU64,
    /// Open loop: the most a send lagged its schedule (the tool itself falling behind).
    max_lag_us: AtomicU64,
}

/// Waits for the next send: its scheduled time (open loop) or a free window slot (closed
/// loop). Returns how late the send is against its schedule (zero in closed loop).
async fn pace(
    start: Instant,
    open_loop: Option<Duration>,
    seq: u64,
    pair: &Pair,
) -> Option<(Duration, Option<SemaphorePermit<'_>>)> {
    match open_loop {
        Some(interval) => {
            let due = start + interval.mul_f64(seq as f64);
            tokio::time::sleep_until(due.into()).await;
            Some((due.elapsed(), None))
        }
        None => Some((Duration::ZERO, Some(pair.window.acquire().await.ok()?))),
    }
}

/// N consoles × M instances: the pairs scenario (M = 1) and fan-out (N = 1).
pub async fn traffic(s: &Scenario) -> Result<Report, LoadError> {
    if s.window >= POOL {
        return Err(LoadError::Scenario(format!(
            "--window must be below {POOL}"
        )));
    }
    if s.churn > 0.0 && (s.rate == 0 || churn_messages_per_pair(s) > POOL) {
        return Err(LoadError::Scenario(format!(
            "--churn needs --rate, and --rate × --duration ÷ pairs at most {POOL}"
        )));
    }
    let run = run_id();
    let setup_started = Instant::now();
    let cast = if s.plain {
        plain_cast(s, &run).await
    } else {
        sealed_cast(s, &run).await?
    };
    let pairs: Vec<Arc<Pair>> = cast
        .pools
        .into_iter()
        .zip(&cast.instances)
        .map(|(pool, instance)| Arc::new(Pair::new(instance.inbox.clone(), pool, s.window)))
        .collect();
    let counters = Arc::new(Counters::default());
    let qos = if s.qos == 0 {
        QoS::AtMostOnce
    } else {
        QoS::AtLeastOnce
    };
    let inflight = u16::try_from(s.window.max(10) * s.instances_per_console).unwrap_or(u16::MAX);
    // A watch, not a Notify: a sender that starts waiting late still sees the gate open.
    let (start_tx, start_rx) = tokio::sync::watch::channel(false);
    let clock = Arc::new(std::sync::OnceLock::<Instant>::new());

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(());
    // Receivers first, so nothing is published to an inbox nobody holds.
    let mut receivers = JoinSet::new();
    for (i, (instance, pair)) in cast.instances.iter().zip(&pairs).enumerate() {
        pace_ramp(s.ramp, setup_started, i).await;
        let id = format!("load-{run}-i{i}");
        let start = Start {
            subscribe: true,
            persistent: s.churn > 0.0,
        };
        let (mut client, mut eventloop) = connect(s, id.clone(), instance, start, 100).await?;
        let (pair, counters, clock, mut stop) = (
            pair.clone(),
            counters.clone(),
            clock.clone(),
            stop_rx.clone(),
        );
        let (s, instance) = (s.clone(), instance.clone());
        // Under churn, instance i first drops its connection at (i / n) of the period.
        let period = Duration::from_secs_f64(s.churn.max(0.0));
        let offset = period.mul_f64(i as f64 / cast.instances.len() as f64);
        receivers.spawn(async move {
            let mut histogram =
                Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram bounds");
            let mut seen = vec![false; pair.pool.len()];
            let mut blink_at = (!period.is_zero()).then(|| tokio::time::Instant::now() + offset);
            loop {
                let blink = async {
                    match blink_at {
                        Some(at) => tokio::time::sleep_until(at).await,
                        None => std::future::pending().await,
                    }
                };
                let event = tokio::select! {
                    event = eventloop.poll() => event,
                    _ = blink => {
                        // Dropped without DISCONNECT, as a network that fails; back with
                        // the same client id, not subscribing again (the session is kept).
                        drop(eventloop);
                        tokio::time::sleep(Duration::from_millis(s.away)).await;
                        counters.blinks.fetch_add(1, Ordering::Relaxed);
                        let back = Start {
                            subscribe: false,
                            persistent: true,
                        };
                        match connect(&s, id.clone(), &instance, back, 100).await {
                            Ok((c, e)) => (client, eventloop) = (c, e),
                            Err(_) => return (histogram, client),
                        }
                        blink_at = blink_at.map(|at| at + period);
                        continue;
                    }
                    _ = stop.changed() => return (histogram, client),
                };
                match event {
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        let Some(start) = clock.get() else { continue };
                        let now = start.elapsed().as_nanos() as u64;
                        if let Some(&slot) = pair.tags.get(&tag_of(&p.payload)) {
                            if !period.is_zero()
                                && std::mem::replace(&mut seen[slot as usize], true)
                            {
                                counters.duplicates.fetch_add(1, Ordering::Relaxed);
                                continue;
                            }
                            let sent = pair.sent_at[slot as usize].load(Ordering::Acquire);
                            let _ = histogram.record(now.saturating_sub(sent).max(1000) / 1000);
                        }
                        counters.received.fetch_add(1, Ordering::Relaxed);
                        pair.window.add_permits(1);
                    }
                    Ok(_) => {}
                    Err(_) if !period.is_zero() => {
                        // A broker that dropped the connection: churn reconnects at once.
                        blink_at = Some(tokio::time::Instant::now());
                    }
                    Err(_) => return (histogram, client),
                }
            }
        });
    }

    // Event loops (PUBACKs) and publishers are kept apart: the run waits for the publishers
    // to stop before draining, and only then ends the event loops.
    let mut pollers = JoinSet::new();
    let mut publishers = JoinSet::new();
    let open_loop =
        (s.rate > 0).then(|| Duration::from_secs_f64(pairs.len() as f64 / s.rate as f64));
    for (c, console) in cast.consoles.iter().enumerate() {
        let (client, mut eventloop) =
            connect(s, format!("load-{run}-c{c}"), console, CONSOLE, inflight).await?;
        pollers.spawn(async move {
            // PUBACKs arrive here; the loop ends when the client disconnects.
            while eventloop.poll().await.is_ok() {}
        });
        for pair in &pairs[c * s.instances_per_console..(c + 1) * s.instances_per_console] {
            let (client, pair, counters, mut gate, clock) = (
                client.clone(),
                pair.clone(),
                counters.clone(),
                start_rx.clone(),
                clock.clone(),
            );
            let duration = Duration::from_secs_f64(s.duration);
            publishers.spawn(async move {
                if gate.wait_for(|open| *open).await.is_err() {
                    return;
                }
                let start = *clock.get().expect("clock is set before the gate opens");
                let mut seq = 0u64;
                while start.elapsed() < duration {
                    let Some((late, permit)) = pace(start, open_loop, seq, &pair).await else {
                        break;
                    };
                    // Pacing may have slept past the end: nothing is sent outside the window.
                    if start.elapsed() >= duration {
                        break;
                    }
                    counters
                        .max_lag_us
                        .fetch_max(late.as_micros() as u64, Ordering::Relaxed);
                    let slot = (seq % pair.pool.len() as u64) as usize;
                    pair.sent_at[slot].store(start.elapsed().as_nanos() as u64, Ordering::Release);
                    if client
                        .publish_bytes(pair.topic.clone(), qos, false, pair.pool[slot].clone())
                        .await
                        .is_err()
                    {
                        counters.errors.fetch_add(1, Ordering::Relaxed);
                        break;
                    }
                    // The receiver returns the window slot.
                    permit.into_iter().for_each(SemaphorePermit::forget);
                    counters.sent.fetch_add(1, Ordering::Relaxed);
                    seq += 1;
                }
            });
        }
    }
    let setup = setup_started.elapsed();

    let before = procstat::sample_all(&s.broker_pid);
    clock.set(Instant::now()).expect("clock set once");
    start_tx.send_replace(true);
    let progress = report::progress(counters.clone(), s.duration);
    let duration = Duration::from_secs_f64(s.duration);
    tokio::time::sleep(duration).await;
    let measured = clock.get().expect("set").elapsed();
    // Publishers stop by themselves at the deadline; one still waiting for a window slot
    // that will never come back (a lost message) is stopped after a grace period.
    let grace = tokio::time::timeout(Duration::from_secs(2), async {
        while publishers.join_next().await.is_some() {}
    });
    if grace.await.is_err() {
        publishers.abort_all();
    }
    let sent_at_end = counters.sent.load(Ordering::Relaxed);
    // Let what is in flight arrive (or be declared lost); under churn, give the last
    // instances away time to come back.
    let drain = Instant::now();
    let drain_for = Duration::from_secs(3) + Duration::from_millis(s.away).mul_f64(2.0);
    while counters.received.load(Ordering::Relaxed) < counters.sent.load(Ordering::Relaxed)
        && drain.elapsed() < drain_for
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let after = procstat::sample_all(&s.broker_pid);
    progress.abort();
    pollers.abort_all();
    stop_tx.send_replace(());
    let mut histogram =
        Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram bounds");
    while let Some(done) = receivers.join_next().await {
        if let Ok((h, _)) = done {
            histogram.add(h).expect("same bounds");
        }
    }
    let sent = counters.sent.load(Ordering::Relaxed);
    let received = counters.received.load(Ordering::Relaxed);
    Ok(Report::traffic(
        s,
        report::Traffic {
            setup,
            measured,
            sent,
            sent_in_window: sent_at_end,
            received,
            duplicates: counters.duplicates.load(Ordering::Relaxed),
            blinks: counters.blinks.load(Ordering::Relaxed),
            errors: counters.errors.load(Ordering::Relaxed),
            max_lag_us: counters.max_lag_us.load(Ordering::Relaxed),
            histogram,
            broker: procstat::delta(before, after),
        },
    ))
}

async fn pace_ramp(ramp: u64, since: Instant, i: usize) {
    if ramp > 0 {
        tokio::time::sleep_until((since + Duration::from_secs_f64(i as f64 / ramp as f64)).into())
            .await;
    }
}

/// Sessions the idle and storm scenarios put on one principal: the broker's default
/// `mqtt.max_sessions_per_principal`.
pub const SESSIONS_PER_PRINCIPAL: usize = 32;

/// Logins and inboxes for `count` idle/storm sessions, one per [`SESSIONS_PER_PRINCIPAL`]
/// sessions (instances of one owner); session `i` uses `endpoints[i / SESSIONS_PER_PRINCIPAL]`.
async fn session_endpoints(
    s: &Scenario,
    run: &str,
    count: usize,
) -> Result<Vec<Endpoint>, LoadError> {
    if s.plain {
        return Ok(vec![Endpoint {
            login: None,
            inbox: format!("bench/{run}/idle"),
        }]);
    }
    let api = Api::with_ca(&s.http, s.ca_file.as_deref())?;
    let name = format!("load-{run}-owner");
    let mut owner = Identity::register_user(&api, &name, &format!("pw-{name}"), LOAD_KDF).await?;
    let mut endpoints = Vec::new();
    for _ in 0..count.div_ceil(SESSIONS_PER_PRINCIPAL).max(1) {
        let (_, token) = owner.add_instance(&api).await?;
        endpoints.push(endpoint_of(&Identity::login_instance(&api, &token).await?));
    }
    Ok(endpoints)
}

/// Opens `count` sessions concurrently; returns them with the time it took.
async fn open_sessions(
    s: &Scenario,
    run: &str,
    round: usize,
    endpoints: &[Endpoint],
    count: usize,
) -> (
    Vec<(AsyncClient, tokio::task::JoinHandle<()>)>,
    Duration,
    u64,
) {
    let started = Instant::now();
    let mut tasks = JoinSet::new();
    for i in 0..count {
        let (s, endpoint, id) = (
            s.clone(),
            endpoints[(i / SESSIONS_PER_PRINCIPAL) % endpoints.len()].clone(),
            format!("load-{run}-r{round}-s{i}"),
        );
        let ramp = s.ramp;
        tasks.spawn(async move {
            pace_ramp(ramp, started, i).await;
            let start = Start {
                subscribe: true,
                persistent: false,
            };
            connect(&s, id, &endpoint, start, 10).await
        });
    }
    let mut sessions = Vec::with_capacity(count);
    let mut errors = 0;
    while let Some(done) = tasks.join_next().await {
        match done.expect("connect task") {
            Ok((client, mut eventloop)) => sessions.push((
                client,
                tokio::spawn(async move { while eventloop.poll().await.is_ok() {} }),
            )),
            Err(e) => {
                errors += 1;
                if errors == 1 {
                    eprintln!("first connect error: {e}");
                }
            }
        }
    }
    (sessions, started.elapsed(), errors)
}

async fn close_sessions(sessions: Vec<(AsyncClient, tokio::task::JoinHandle<()>)>) {
    for (client, _) in &sessions {
        let _ = client.try_disconnect();
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    for (_, task) in sessions {
        task.abort();
    }
}

/// Holds `--sessions` idle sessions for `--duration` and reports the broker's memory.
pub async fn idle(s: &Scenario) -> Result<Report, LoadError> {
    let run = run_id();
    let endpoints = session_endpoints(s, &run, s.sessions).await?;
    let before = procstat::sample_all(&s.broker_pid);
    let (sessions, took, errors) = open_sessions(s, &run, 0, &endpoints, s.sessions).await;
    tokio::time::sleep(Duration::from_secs_f64(s.duration)).await;
    let after = procstat::sample_all(&s.broker_pid);
    let held = sessions.len();
    close_sessions(sessions).await;
    Ok(Report::sessions(
        s,
        held,
        took,
        errors,
        procstat::delta(before, after),
    ))
}

/// Connects `--sessions` clients at once, `--rounds` times; reports connects per second.
pub async fn storm(s: &Scenario) -> Result<Report, LoadError> {
    let run = run_id();
    let endpoints = session_endpoints(s, &run, s.sessions).await?;
    let before = procstat::sample_all(&s.broker_pid);
    let (mut connected, mut took, mut errors) = (0, Duration::ZERO, 0);
    for round in 0..s.rounds.max(1) {
        let (sessions, t, e) = open_sessions(s, &run, round, &endpoints, s.sessions).await;
        connected += sessions.len();
        took += t;
        errors += e;
        close_sessions(sessions).await;
    }
    let after = procstat::sample_all(&s.broker_pid);
    Ok(Report::sessions(
        s,
        connected,
        took,
        errors,
        procstat::delta(before, after),
    ))
}

pub async fn run(s: &Scenario) -> Result<Report, LoadError> {
    match s.kind {
        Kind::Traffic => traffic(s).await,
        Kind::Idle => idle(s).await,
        Kind::Storm => storm(s).await,
    }
}
