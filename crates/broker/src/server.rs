//! Starts the broker's parts in order — directory, session threads, MQTT listener, HTTP
//! and operator APIs — and stops them as a protocol: stop accepting, signal every session,
//! wait for each to flush and record its metadata (a task tracker, not a sleep), then
//! stop the APIs, close the database and return, all within `server.shutdown_grace_secs`.
//! `main` and the integration tests both use it, so what the tests drive is what
//! operators run.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::accounting;
use crate::accounting::ledger::Ledger;
use crate::accounting::log::SessionLog;
use crate::admin::{self, AdminState};
use crate::auth::Authenticator;
use crate::cluster::{Cluster, ClusterError};
use crate::config::Config;
use crate::datadir::{self, DataError, DataLock};
use crate::directory::{Directory, DirectoryError};
use crate::http::{self, ApiState};
use crate::metrics;
use crate::mqtt::limits::Limits;
use crate::mqtt::proxy::TrustedProxies;
use crate::mqtt::transport::Front;
use crate::mqtt::{Listener, Shared, Workers};
use crate::rate::Limiter;
use crate::router::Router;
use crate::tls::{Certificate, TlsError};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot listen for {what} on {addr}: {source}; set {key} to a free address")]
    Bind {
        what: &'static str,
        addr: SocketAddr,
        key: &'static str,
        source: std::io::Error,
    },
    #[error(transparent)]
    Directory(#[from] DirectoryError),
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error(transparent)]
    Data(#[from] DataError),
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    #[error(
        "cannot turn core dumps off: {0}; set server.allow_core_dumps = true to run with them on"
    )]
    CoreDumps(std::io::Error),
}

/// Where each listener ended up (port 0 in the config picks a free one).
#[derive(Debug, Clone, Copy)]
pub struct Addresses {
    pub mqtt: SocketAddr,
    pub mqtts: Option<SocketAddr>,
    pub ws: Option<SocketAddr>,
    pub wss: Option<SocketAddr>,
    pub http: SocketAddr,
    pub https: Option<SocketAddr>,
    pub admin: SocketAddr,
}

/// Descriptors kept for everything but admitted connections: the MQTT refusals being
/// answered, the database and its WAL, the log, the listeners, and each worker thread's
/// poller and wakers (48 in all on two cores with no client, measured).
pub fn descriptor_reserve(config: &Config) -> usize {
    let threads =
        Config::worker_count(config.mqtt.workers) + Config::worker_count(config.http.workers);
    crate::mqtt::MAX_REFUSALS_IN_FLIGHT + 128 + 8 * threads
}

/// Fits `mqtt.max_connections` and `http.max_connections` under an open-file limit,
/// keeping [`descriptor_reserve`]: when together they would need more, both are lowered in
/// proportion, so that neither protocol's connections can take the descriptors the other's
/// need (a flood of API connections must not stop MQTT accepting, nor the reverse).
pub fn fit_open_files(config: &mut Config, open_files: usize) -> Fit {
    let reserve = descriptor_reserve(config);
    let (mqtt, http) = (config.mqtt.max_connections, config.http.max_connections);
    if open_files >= reserve + mqtt + http {
        return Fit::AsConfigured;
    }
    if open_files < reserve + 2 {
        return Fit::TooFew { reserve };
    }
    let room = open_files - reserve;
    let fitted_mqtt = (room * mqtt / (mqtt + http)).clamp(1, room - 1);
    config.mqtt.max_connections = fitted_mqtt;
    config.http.max_connections = room - fitted_mqtt;
    Fit::Lowered {
        configured: (mqtt, http),
        reserve,
    }
}

/// What [`fit_open_files`] did.
#[derive(Debug, PartialEq)]
pub enum Fit {
    AsConfigured,
    /// Both caps were lowered (from `configured`, MQTT first) to fit.
    Lowered {
        configured: (usize, usize),
        reserve: usize,
    },
    /// The limit does not even hold the reserve: the broker cannot run under it.
    TooFew {
        reserve: usize,
    },
}

/// A started broker. Must be created inside an actix `System`.
pub struct Running {
    pub addresses: Addresses,
    /// The certificate every TLS listener presents; `reload` swaps it.
    pub certificate: Arc<Certificate>,
    /// Stops the HTTP API; its in-flight requests get the grace period too.
    http: actix_web::dev::ServerHandle,
    admin: actix_web::dev::ServerHandle,
    /// Cancelled once by `shutdown`: the listener stops accepting, every session closes.
    shutdown: CancellationToken,
    /// One token per live session (and per pending metadata write).
    sessions: TaskTracker,
    /// The MQTT listeners' tasks; awaited so listening sockets close before sessions do.
    listeners: Vec<tokio::task::JoinHandle<()>>,
    /// Session threads, stopped last.
    workers: Workers,
    grace: Duration,
    directory: Arc<Directory>,
    /// This node's place in a cluster: told the node is leaving once its sessions are done.
    cluster: Option<Arc<Cluster>>,
    /// Asked, when leaving a cluster, whether parked sessions still wait to be taken over.
    router: Arc<Router>,
    /// Housekeeping (retention purge, auth pruning): aborted at shutdown, they hold nothing.
    tasks: Vec<tokio::task::JoinHandle<()>>,
    /// Keeps a second broker off this database until this one has closed it and is dropped.
    _lock: DataLock,
    /// Told when the broker must stop on its own (another broker took its PostgreSQL
    /// directory while the database was away); [`Running::must_stop`] waits for it.
    must_stop: Arc<tokio::sync::Notify>,
}

/// Why a broker stops without being asked.
pub const DIRECTORY_TAKEN: &str = "another broker took the PostgreSQL directory (directory.url) while the database was restarting: this broker stops, so that only one serves it (a cluster's nodes share one through [cluster])";

pub async fn start(config: Config) -> Result<Running, ServerError> {
    let config = Arc::new(config);
    crate::memory::forbid_core_dumps(config.server.allow_core_dumps)
        .map_err(ServerError::CoreDumps)?;
    let metrics_handle = metrics::install();
    metrics::connection_caps(
        config.mqtt.max_connections,
        config.http.max_connections,
        config.mqtt.outbound_total_bytes,
    );
    datadir::ensure_parent(&config.directory.database, "database directory")?;
    datadir::ensure_parent(
        &config.directory.prelogin_key_file,
        "prelogin key directory",
    )?;
    datadir::ensure_parent(&config.admin.token_file, "admin token directory")?;
    let lock = DataLock::acquire(&config.directory.database)?;
    if config.directory.url.is_empty() {
        datadir::create_database(&config.directory.database)?;
    }
    let clustered = !config.cluster.nats_url.is_empty();
    let directory = Arc::new(Directory::open(&config.directory, clustered).await?);
    let prelogin_key = datadir::key_file(&config.directory.prelogin_key_file, "prelogin key")?;
    let operator_token = datadir::key_file(&config.admin.token_file, "admin token")?;
    let limiter = Arc::new(Limiter::new(&config, &prelogin_key));
    let log = SessionLog::new(directory.pool());
    // A single node owns its database (the lock above, or PostgreSQL's advisory lock), so
    // the ledger closes every row a stopped broker left live before it writes a new one.
    let ledger = Ledger::start(log.clone(), &config.accounting, clustered).await;
    let authenticator = Arc::new(Authenticator::new(
        config.accounting.ip_mode,
        (limiter.clone(), ledger.clone()),
    ));
    let router = Arc::new(Router::new(&config.mqtt));
    // Joined before the listeners open: no session exists that the other nodes were not told of.
    let cluster = match clustered {
        true => Some({
            let joined = (router.clone(), directory.clone(), limiter.clone());
            Cluster::join(&config, joined, &prelogin_key).await?
        }),
        false => None,
    };

    let shutdown = CancellationToken::new();
    let sessions = TaskTracker::new();
    let shared = Arc::new(Shared {
        config: config.clone(),
        directory: directory.clone(),
        ledger,
        authenticator: authenticator.clone(),
        router: router.clone(),
        shutdown: shutdown.clone(),
        sessions: sessions.clone(),
        cooldown: dashmap::DashMap::new(),
        limiter: limiter.clone(),
    });
    let workers = Workers::new(Config::worker_count(config.mqtt.workers));
    let certificate = Certificate::load(&config)?;
    let db = config.directory.database.display().to_string();
    let (_, tls_key, _) = Certificate::files(&config);
    datadir::warn_if_exposed(&[
        config.directory.database.clone(),
        format!("{db}-wal").into(),
        format!("{db}-shm").into(),
        config.directory.prelogin_key_file.clone(),
        config.admin.token_file.clone(),
        tls_key,
    ]);
    let limits = Arc::new(Limits::new(&config.mqtt, config.server.address_block()));
    let max_packet = config.mqtt.max_packet_bytes;
    let client_ca = config.mqtts.client_ca();
    let trusted =
        TrustedProxies::parse(&config.server.trusted_proxies).expect("validated with the config");
    let proxies = |on: bool| on.then(|| trusted.clone());
    type Listening = (&'static str, &'static str, Option<SocketAddr>, Front, bool);
    let fronts: Vec<Listening> = vec![
        (
            "MQTT",
            "mqtt.listen",
            Some(config.mqtt.listen),
            Front::tcp(),
            config.mqtt.proxy_protocol,
        ),
        (
            "MQTT over TLS",
            "mqtts.listen",
            config.mqtts.listen.0,
            Front::tls(certificate.server_config(&[b"mqtt"], client_ca)?),
            config.mqtts.proxy_protocol,
        ),
        (
            "MQTT over WebSocket",
            "ws.listen",
            config.ws.listen.0,
            Front::ws(&config.ws, max_packet, None, certificate.clone()),
            config.ws.proxy_protocol,
        ),
        (
            "MQTT over WebSocket and TLS",
            "wss.listen",
            config.wss.listen.0,
            Front::ws(
                &config.wss,
                max_packet,
                Some(certificate.server_config(&[b"http/1.1"], None)?),
                certificate.clone(),
            ),
            config.wss.proxy_protocol,
        ),
    ];
    let mut bound = Vec::new();
    let mut mqtt_addrs = Vec::new();
    for (what, key, listen, front, proxy) in fronts {
        let Some(addr) = listen else {
            mqtt_addrs.push(None);
            continue;
        };
        let bind_error = |source| ServerError::Bind {
            what,
            addr,
            key,
            source,
        };
        let listener = Listener::bind(
            addr,
            front,
            proxies(proxy),
            shared.clone(),
            &workers,
            limits.clone(),
        )
        .map_err(bind_error)?;
        mqtt_addrs.push(Some(listener.local_addr().map_err(bind_error)?));
        bound.push(listener);
    }

    let api = Arc::new(ApiState {
        config: config.clone(),
        directory: directory.clone(),
        log: log.clone(),
        authenticator: authenticator.clone(),
        router: router.clone(),
        metrics: metrics_handle,
        prelogin_key,
        trusted_proxies: trusted.clone(),
        wss_port: mqtt_addrs[3].map(|a| a.port()),
        certificate: certificate.clone(),
        limiter: limiter.clone(),
        cluster: cluster.clone(),
    });
    let https = match config.https.listen.0 {
        Some(addr) => Some((addr, certificate.server_config(&[b"http/1.1"], None)?)),
        None => None,
    };
    let (http_server, http_addr, https_addr) =
        http::bind(api.clone(), https).map_err(|source| ServerError::Bind {
            what: "HTTP or HTTPS",
            addr: config.http.listen,
            key: "http.listen / https.listen",
            source,
        })?;
    let admin_state = Arc::new(AdminState::new(api.clone(), &operator_token));
    // From here on the broker keeps only the token's digest.
    drop(operator_token);
    crate::memory::scrub_stack::<{ 64 * 1024 }>();
    let (admin_server, admin_addr) =
        admin::bind(admin_state).map_err(|source| ServerError::Bind {
            what: "the admin API",
            addr: config.admin.listen,
            key: "admin.listen (SEALRELAY_ADMIN_LISTEN)",
            source,
        })?;
    let http = http_server.handle();
    let admin = admin_server.handle();

    let listeners = bound.into_iter().map(|l| tokio::spawn(l.run())).collect();
    let mut tasks = vec![
        accounting::spawn_retention((log, directory.clone()), config.accounting.retention_days),
        certificate
            .clone()
            .watch(Duration::from_secs(config.tls.reload_check_secs)),
    ];
    tasks.push(crate::memory::spawn_trimmer(router.clone()));
    tasks.push(metrics::spawn_upkeep(api.metrics.clone()));
    let expiring = router.clone();
    tasks.push(tokio::spawn(async move {
        // Resumption checks expiry itself; this gives expired sessions' memory back, and
        // refreshes the gauges of what is held.
        let mut tick = tokio::time::interval(Duration::from_secs(5));
        loop {
            tick.tick().await;
            metrics::sessions_parked(expiring.expire_parked());
            let (queued, parked) = expiring.held_bytes();
            metrics::held_bytes(queued, parked);
        }
    }));
    tasks.push(limiter.spawn_purge(Duration::from_secs(60)));
    let must_stop = Arc::new(tokio::sync::Notify::new());
    let (claimed, stop) = (directory.clone(), must_stop.clone());
    tasks.push(tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(5));
        loop {
            tick.tick().await;
            match claimed.keep_claim().await {
                crate::directory::Claim::Retaken => tracing::info!(
                    "the PostgreSQL directory is back: this broker holds its lock again"
                ),
                crate::directory::Claim::Lost => {
                    tracing::error!("{DIRECTORY_TAKEN}");
                    stop.notify_one();
                    return;
                }
                crate::directory::Claim::Held | crate::directory::Claim::Unreachable => {}
            }
        }
    }));
    for server in [http_server, admin_server] {
        actix_rt::spawn(async move {
            if let Err(e) = server.await {
                tracing::error!(error = %e, "HTTP server stopped");
            }
        });
    }
    let addresses = Addresses {
        mqtt: mqtt_addrs[0].expect("the TCP listener is always on"),
        mqtts: mqtt_addrs[1],
        ws: mqtt_addrs[2],
        wss: mqtt_addrs[3],
        http: http_addr,
        https: https_addr,
        admin: admin_addr,
    };
    let off = |a: Option<SocketAddr>| a.map_or_else(|| "off".to_owned(), |a| a.to_string());
    tracing::info!(
        version = %env!("CARGO_PKG_VERSION"),
        commit = %crate::BUILD_COMMIT,
        mqtt = %addresses.mqtt,
        mqtts = %off(addresses.mqtts),
        ws = %off(addresses.ws),
        wss = %off(addresses.wss),
        http = %addresses.http,
        https = %off(addresses.https),
        admin = %addresses.admin,
        "sealrelay listening"
    );
    Ok(Running {
        addresses,
        certificate,
        http,
        admin,
        shutdown,
        sessions,
        listeners,
        workers,
        grace: Duration::from_secs(config.server.shutdown_grace_secs),
        directory,
        cluster,
        router,
        tasks,
        _lock: lock,
        must_stop,
    })
}

impl Running {
    /// Resolves when the broker must stop on its own; the reason is [`DIRECTORY_TAKEN`].
    pub async fn must_stop(&self) {
        self.must_stop.notified().await;
    }

    /// Stops the broker without losing what it accepted: stop accepting, tell every session
    /// the server is going away (MQTT 5: DISCONNECT 0x8B), wait until each has flushed and
    /// written its metadata, stop the APIs, close the database. Whatever is still open when
    /// `server.shutdown_grace_secs` runs out is cut, and counted in the log.
    pub async fn shutdown(self) {
        let deadline = tokio::time::Instant::now() + self.grace;
        tracing::info!(grace_secs = self.grace.as_secs(), "sealrelay stopping");
        // Stop accepting everywhere first; requests already in flight still finish below.
        tokio::join!(self.http.pause(), self.admin.pause());
        self.shutdown.cancel();
        self.sessions.close();
        for listener in self.listeners {
            let _ = listener.await;
        }
        for task in &self.tasks {
            task.abort();
        }
        let drained = tokio::time::timeout_at(deadline, self.sessions.wait()).await;
        let cut = self.sessions.len();
        // Sessions are done (or out of time): their threads can go.
        self.workers.stop();
        let apis = async {
            tokio::join!(self.http.stop(true), self.admin.stop(true));
        };
        if tokio::time::timeout_at(deadline, apis).await.is_err() {
            tracing::warn!("HTTP requests still running at the end of the grace period were cut");
        }
        if let Some(cluster) = &self.cluster {
            // Draining: the persistent sessions just closed reconnect to other nodes, which
            // take them over from here with their queues; wait for that (within the grace
            // period) before leaving, or their queues would go with this node.
            while self.router.parked_sessions() > 0 && tokio::time::Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            let left = self.router.parked_sessions();
            if left > 0 {
                tracing::warn!(sessions = left, "persistent sessions not taken over by another node before the grace period ended; their queues are lost");
            }
            cluster.leave().await;
        }
        self.directory.close().await;
        if drained.is_err() {
            tracing::warn!(
                sessions = cut,
                "grace period over: sessions still flushing or recording were cut"
            );
        }
        tracing::info!("sealrelay stopped");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_caps_are_lowered_in_proportion_to_fit_the_open_file_limit() {
        let mut config = Config::load(None).unwrap();
        config.mqtt.workers = 1;
        config.http.workers = 1;
        let reserve = descriptor_reserve(&config);
        config.mqtt.max_connections = 3000;
        config.http.max_connections = 1000;
        assert_eq!(
            fit_open_files(&mut config, reserve + 4000),
            Fit::AsConfigured
        );
        assert_eq!(
            fit_open_files(&mut config, reserve + 400),
            Fit::Lowered {
                configured: (3000, 1000),
                reserve
            }
        );
        assert_eq!(
            (config.mqtt.max_connections, config.http.max_connections),
            (300, 100)
        );
        assert_eq!(
            fit_open_files(&mut config, reserve + 1),
            Fit::TooFew { reserve }
        );
    }
}
