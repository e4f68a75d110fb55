//! `sealrelay serve`: the broker in the foreground. SIGHUP reloads what can be reloaded (the
//! TLS certificate) and never stops it; SIGTERM or SIGINT stops it gracefully (see
//! `sealrelay_broker::server`).

use std::path::PathBuf;

use anyhow::{Context, Result};
use sealrelay_broker::config::Config;
use sealrelay_broker::server;
use tokio::signal::unix::{signal, SignalKind};

pub(super) fn serve(path: Option<PathBuf>) -> Result<()> {
    let config = Config::load(path.as_deref())?;
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(tracing_subscriber::EnvFilter::new(&config.log.level))
        .init();
    actix_rt::System::new().block_on(async move {
        let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
        let mut hangup = signal(SignalKind::hangup()).context("installing the SIGHUP handler")?;
        let running = server::start(config).await?;
        loop {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => break,
                _ = term.recv() => break,
                _ = hangup.recv() => match running.certificate.reload(true) {
                    Ok(_) => tracing::info!("SIGHUP: TLS certificate reloaded"),
                    Err(e) => tracing::error!(error = %e, "SIGHUP: new TLS certificate refused; still serving the previous one"),
                },
            }
        }
        tracing::info!("shutting down");
        running.shutdown().await;
        Ok(())
    })
}
