//! `sealrelay serve`: the broker in the foreground; and the operator's config verbs,
//! `check-config` and `default-config`. SIGHUP reloads what can be reloaded (the TLS
//! certificate, `log.level` from the config file) and never stops the broker; SIGTERM or
//! SIGINT stops it gracefully (see `sealrelay_broker::server`).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use sealrelay_broker::config::{Config, LogFormat, DEFAULT_TOML};
use sealrelay_broker::server::{self, Fit, Running};
use sealrelay_broker::tls::Certificate;
use tokio::signal::unix::{signal, SignalKind};
use tracing_subscriber::layer::{Layer, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{reload, EnvFilter, Registry};

pub(super) fn serve(path: Option<PathBuf>) -> Result<()> {
    // Everything the broker writes (database, WAL, keys, certificates, lock) is private to
    // its user, whatever umask it was started with.
    // SAFETY: umask only sets this process's file-creation mask; no memory is involved.
    unsafe { libc::umask(0o077) };
    // A file-size limit (RLIMIT_FSIZE) reached must fail the one write, as a full disk does,
    // not kill the broker with SIGXFSZ and drop every session.
    // SAFETY: ignoring a signal changes this process's disposition only.
    unsafe { libc::signal(libc::SIGXFSZ, libc::SIG_IGN) };
    let mut config = Config::load(path.as_deref())?;
    let (filter, log_level) = reload::Layer::new(EnvFilter::new(&config.log.level));
    let lines = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let lines = match config.log.format {
        LogFormat::Text => lines.boxed(),
        // A session's span fields land in each of its lines' "span" object.
        LogFormat::Json => lines
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .boxed(),
    };
    tracing_subscriber::registry()
        .with(filter)
        .with(lines)
        .init();
    let mut fitted = config.clone();
    let fit =
        raise_open_file_limit().map(|limit| (limit, server::fit_open_files(&mut fitted, limit)));
    if let Some((limit, Fit::TooFew { reserve })) = fit {
        anyhow::bail!("the open-file limit ({limit}) is below the {reserve} descriptors the broker keeps for itself, before any connection: raise it (LimitNOFILE, ulimit -n)");
    }
    actix_rt::System::new().block_on(async move {
        let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
        let mut hangup = signal(SignalKind::hangup()).context("installing the SIGHUP handler")?;
        let running = server::start(fitted.clone()).await?;
        // Said once the broker runs (a refused start says only why it was refused).
        if let Some((limit, Fit::Lowered { configured, reserve })) = fit {
            tracing::warn!(
                open_files = limit,
                reserve,
                mqtt_max_connections = fitted.mqtt.max_connections,
                http_max_connections = fitted.http.max_connections,
                "the open-file limit cannot hold mqtt.max_connections ({}) + http.max_connections ({}) + the broker's own descriptors: both lowered in proportion; raise LimitNOFILE to keep them",
                configured.0,
                configured.1,
            );
        }
        let mut failed = false;
        loop {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => break,
                _ = term.recv() => break,
                _ = hangup.recv() => reload_on_hangup(path.as_deref(), &running, &log_level, &mut config),
                _ = running.must_stop() => {
                    failed = true;
                    break;
                }
            }
        }
        tracing::info!("shutting down");
        running.shutdown().await;
        if failed {
            anyhow::bail!(server::DIRECTORY_TAKEN);
        }
        Ok(())
    })
}

/// Raises the soft open-file limit to the hard one, as other servers do at start, and returns
/// it: past it, accepting fails for MQTT and HTTP alike.
fn raise_open_file_limit() -> Option<usize> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit read and write only the struct passed to them.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return None;
        }
        let raised = libc::rlimit {
            rlim_cur: limit.rlim_max,
            ..limit
        };
        if limit.rlim_cur < limit.rlim_max && libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
            limit = raised;
        }
    }
    Some(usize::try_from(limit.rlim_cur).unwrap_or(usize::MAX))
}

/// SIGHUP: the certificate files again, and `log.level` from the config file again; every
/// other setting takes a restart, which the log says when one changed.
fn reload_on_hangup(
    path: Option<&Path>,
    running: &Running,
    log_level: &reload::Handle<EnvFilter, Registry>,
    config: &mut Config,
) {
    match running.certificate.reload(true) {
        Ok(_) => tracing::info!("SIGHUP: TLS certificate reloaded"),
        Err(e) => {
            tracing::error!(error = %e, "SIGHUP: new TLS certificate refused; still serving the previous one")
        }
    }
    let mut fresh = match Config::load(path) {
        Ok(fresh) => fresh,
        Err(e) => {
            tracing::error!(error = %e, "SIGHUP: the config does not load; keeping the running settings");
            return;
        }
    };
    if fresh.log.level != config.log.level {
        // Said under the old filter, so a switch to a quieter level is still on record.
        tracing::info!(level = %fresh.log.level, "SIGHUP: log.level reloaded");
        if let Err(e) = log_level.reload(EnvFilter::new(&fresh.log.level)) {
            tracing::error!(error = %e, "SIGHUP: log.level not reloaded");
        }
        config.log.level.clone_from(&fresh.log.level);
    }
    fresh.log.level.clone_from(&config.log.level);
    if fresh != *config {
        tracing::warn!(
            "SIGHUP: other settings changed in the config; they apply at the next restart"
        );
    }
}

/// `sealrelay check-config`: loads the config as `serve` would (defaults, file, `SEALRELAY_*`
/// variables) and the TLS files it names; one line per problem, exit 1 if any.
pub(super) fn check(path: Option<PathBuf>) -> Result<()> {
    // The config's own problems and what serve would refuse at start beyond its text (the
    // files it names): every one, one line each.
    let config = Config::load_checking(path.as_deref(), |config| {
        let mut problems = Vec::new();
        let (cert, key, dev) = Certificate::files(config);
        if !dev {
            if let Err(e) = Certificate::check_pair(&cert, &key) {
                problems.push(e.to_string());
            }
        }
        // serve builds the mqtts configuration whether or not that listener is on.
        if let Some(client_ca) = config.mqtts.client_ca() {
            if let Err(e) = sealrelay_broker::tls::client_verifier(client_ca) {
                problems.push(e.to_string());
            }
        }
        problems
    })?;
    println!(
        "config OK: {} (MQTT {}, HTTP {}, database {})",
        path.as_deref()
            .map_or("embedded defaults".into(), |p| p.display().to_string()),
        config.mqtt.listen,
        config.http.listen,
        config.directory.database.display()
    );
    Ok(())
}

/// `sealrelay health [--ready]`: the broker's own answer on its HTTP listener, reached on
/// loopback when it listens on every address.
pub(super) async fn health(path: Option<PathBuf>, ready: bool) -> Result<()> {
    let config = Config::load(path.as_deref())?;
    let mut at = config.http.listen;
    if at.port() == 0 {
        anyhow::bail!("http.listen has port 0 (the broker picked a free port at start): set the port it listens on in the config or SEALRELAY_HTTP_LISTEN");
    }
    if at.ip().is_unspecified() {
        at.set_ip(match at {
            std::net::SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            std::net::SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        });
    }
    let api = sealrelay_client::Api::new(&format!("http://{at}"));
    let answer = api
        .probe(if ready { "/readyz" } else { "/healthz" })
        .await?;
    println!("{answer}");
    Ok(())
}

/// `sealrelay default-config`: the documented defaults, exactly the shipped broker.toml.
pub(super) fn print_default() {
    print!("{DEFAULT_TOML}");
}
