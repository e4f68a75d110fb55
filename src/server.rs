//! Starts the broker's parts in order — directory, MQTT listener and session threads,
//! HTTP API — and stops them in reverse. `main` and the integration tests both use it,
//! so what the tests drive is what operators run.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use crate::accounting;
use crate::admin::{self, AdminState};
use crate::auth::Authenticator;
use crate::config::Config;
use crate::directory::{Directory, DirectoryError};
use crate::http::{self, ApiState};
use crate::metrics;
use crate::mqtt::{Listener, Shared};
use crate::protocol::Reason;
use crate::router::{Kick, Router};

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
    #[error("cannot use the {what} file {path}: {source}")]
    KeyFile {
        what: &'static str,
        path: String,
        source: std::io::Error,
    },
}

/// A started broker. Must be created inside an actix `System`.
pub struct Running {
    pub mqtt_addr: SocketAddr,
    pub http_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    http: actix_web::dev::ServerHandle,
    admin: actix_web::dev::ServerHandle,
    router: Arc<Router>,
    directory: Arc<Directory>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

/// Reads a 32-byte secret (prelogin's fake-salt key, the operator token), creating it
/// (mode 0600) if absent.
fn key_file(path: &Path, what: &'static str) -> Result<[u8; 32], ServerError> {
    match read_key_file(path, what) {
        Err(ServerError::KeyFile { source, .. })
            if source.kind() == std::io::ErrorKind::NotFound =>
        {
            create_key_file(path, what)
        }
        other => other,
    }
}

/// Reads a 32-byte secret the broker created; never creates one (the admin CLI must find
/// the broker's token, not make its own).
pub fn read_key_file(path: &Path, what: &'static str) -> Result<[u8; 32], ServerError> {
    let err = |source| ServerError::KeyFile {
        what,
        path: path.display().to_string(),
        source,
    };
    std::fs::read(path).map_err(err)?.try_into().map_err(|_| {
        err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "expected exactly 32 bytes",
        ))
    })
}

fn create_key_file(path: &Path, what: &'static str) -> Result<[u8; 32], ServerError> {
    use rand_core::RngCore;
    use std::io::Write;
    let mut key = [0u8; 32];
    rand_core::OsRng.fill_bytes(&mut key);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options
        .open(path)
        .and_then(|mut f| f.write_all(&key))
        .map_err(|source| ServerError::KeyFile {
            what,
            path: path.display().to_string(),
            source,
        })?;
    Ok(key)
}

pub async fn start(config: Config) -> Result<Running, ServerError> {
    let config = Arc::new(config);
    let metrics_handle = metrics::install();
    let directory = Arc::new(Directory::open(&config.directory.database).await?);
    let prelogin_key = key_file(&config.directory.prelogin_key_file, "prelogin key")?;
    let operator_token = key_file(&config.admin.token_file, "admin token")?;
    let authenticator = Arc::new(Authenticator::new(&config.auth));
    let router = Arc::new(Router::new(config.mqtt.outbound_queue_bytes));

    let shared = Arc::new(Shared {
        config: config.clone(),
        directory: directory.clone(),
        authenticator: authenticator.clone(),
        router: router.clone(),
    });
    let listener = Listener::bind(shared)
        .await
        .map_err(|source| ServerError::Bind {
            what: "MQTT",
            addr: config.mqtt.listen,
            key: "mqtt.listen (SEALRELAY_MQTT_LISTEN)",
            source,
        })?;
    let mqtt_addr = listener.local_addr().map_err(|source| ServerError::Bind {
        what: "MQTT",
        addr: config.mqtt.listen,
        key: "mqtt.listen (SEALRELAY_MQTT_LISTEN)",
        source,
    })?;

    let api = Arc::new(ApiState {
        config: config.clone(),
        directory: directory.clone(),
        authenticator: authenticator.clone(),
        router: router.clone(),
        metrics: metrics_handle,
        prelogin_key,
    });
    let (http_server, http_addr) = http::bind(api.clone()).map_err(|source| ServerError::Bind {
        what: "HTTP",
        addr: config.http.listen,
        key: "http.listen (SEALRELAY_HTTP_LISTEN)",
        source,
    })?;
    let (admin_server, admin_addr) = admin::bind(Arc::new(AdminState::new(api, &operator_token)))
        .map_err(|source| ServerError::Bind {
        what: "the admin API",
        addr: config.admin.listen,
        key: "admin.listen (SEALRELAY_ADMIN_LISTEN)",
        source,
    })?;
    let http = http_server.handle();
    let admin = admin_server.handle();

    let mut tasks = vec![
        tokio::spawn(listener.run()),
        accounting::spawn_retention(directory.clone(), config.accounting.retention_days),
    ];
    tasks.push(tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(60));
        loop {
            tick.tick().await;
            authenticator.prune();
        }
    }));
    for server in [http_server, admin_server] {
        actix_rt::spawn(async move {
            if let Err(e) = server.await {
                tracing::error!(error = %e, "HTTP server stopped");
            }
        });
    }
    tracing::info!(mqtt = %mqtt_addr, http = %http_addr, admin = %admin_addr, "sealrelay listening");
    Ok(Running {
        mqtt_addr,
        http_addr,
        admin_addr,
        http,
        admin,
        router,
        directory,
        tasks,
    })
}

impl Running {
    /// Stops accepting, tells every session the server is going away, and closes the
    /// directory once sessions have had a moment to record their metadata.
    pub async fn shutdown(self) {
        for task in &self.tasks {
            task.abort();
        }
        self.router
            .kick_everyone(Kick(Reason::ServerShuttingDown, "server_shutdown"));
        self.http.stop(true).await;
        self.admin.stop(true).await;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
        while self.router.session_count() > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // Session metadata is written as sessions stop; give those writes a moment.
        tokio::time::sleep(Duration::from_millis(100)).await;
        self.directory.close().await;
        tracing::info!("sealrelay stopped");
    }
}
