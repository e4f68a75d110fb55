//! `sealrelay serve`: the broker in the foreground until SIGTERM or SIGINT, then a graceful
//! stop (see `sealrelay_broker::server`).

use std::path::PathBuf;

use anyhow::Result;
use sealrelay_broker::config::Config;
use sealrelay_broker::server;

pub(super) fn serve(path: Option<PathBuf>) -> Result<()> {
    let config = Config::load(path.as_deref())?;
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(tracing_subscriber::EnvFilter::new(&config.log.level))
        .init();
    actix_rt::System::new().block_on(async move {
        let running = server::start(config).await?;
        shutdown_signal().await;
        tracing::info!("shutting down");
        running.shutdown().await;
        Ok(())
    })
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler installs");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
}
