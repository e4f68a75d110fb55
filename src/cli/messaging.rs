//! `sealrelay agent` (an instance: opens each envelope and answers it) and `sealrelay send`
//! (a console: seals one message to an instance and prints its reply).

use std::io::{Read, Write};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use sealrelay_client::crypto::Token;
use sealrelay_client::{Client, ClientError, Identity};
use sealrelay_wire::PrincipalId;
use zeroize::Zeroizing;

use super::{log_in, secret, Endpoints};

/// Runs as the instance whose token is in SEALRELAY_TOKEN, `token_file` or a prompt.
pub(super) async fn agent(endpoints: Endpoints, token_file: Option<PathBuf>) -> Result<()> {
    let token_text = match token_file {
        Some(path) => Zeroizing::new(
            std::fs::read_to_string(&path)
                .with_context(|| format!("cannot read token file {}", path.display()))?,
        ),
        None => secret("SEALRELAY_TOKEN", "Instance token: ", false)?,
    };
    let token: Token = token_text.trim().parse()?;
    let api = endpoints.api()?;
    let me = Identity::login_instance(&api, &token).await?;
    let (id, witness) = (me.id, me.witness());
    let mut client =
        Client::connect_to(api, me, endpoints.broker()?, endpoints.mqtt_version).await?;
    println!(
        "agent {id} (key witness {witness}) connected to {}; serving",
        endpoints.broker
    );
    std::io::stdout().flush()?;
    let mut backoff = Duration::from_millis(250);
    loop {
        if let Err(e) = client.serve(|message| message.payload.to_vec()).await {
            tracing::warn!(error = %e, "connection lost; reconnecting");
        }
        loop {
            tokio::time::sleep(backoff).await;
            match client.reconnect().await {
                Ok(()) => break,
                // A refused login (token revoked, instance removed) is final.
                Err(e @ ClientError::Refused(_)) => return Err(e.into()),
                Err(e) => tracing::warn!(error = %e, "reconnect failed"),
            }
            backoff = (backoff * 2).min(Duration::from_secs(30));
        }
        backoff = Duration::from_millis(250);
        tracing::warn!("reconnected");
    }
}

/// Seals `message` (or standard input) to instance `to` and prints its reply.
pub(super) async fn send(
    endpoints: Endpoints,
    user: super::UserArg,
    to: PrincipalId,
    message: Option<String>,
    timeout_secs: u64,
) -> Result<()> {
    let payload = match message {
        Some(text) => text.into_bytes(),
        None => {
            let mut buf = Vec::new();
            std::io::stdin().read_to_end(&mut buf)?;
            buf
        }
    };
    let (api, me) = log_in(&endpoints, &user).await?;
    let mut client =
        Client::connect_to(api, me, endpoints.broker()?, endpoints.mqtt_version).await?;
    let reply = client
        .request(to, &payload, Duration::from_secs(timeout_secs))
        .await?;
    let mut out = std::io::stdout().lock();
    out.write_all(&reply)?;
    out.write_all(b"\n")?;
    Ok(())
}
