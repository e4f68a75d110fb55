//! `sealrelay agent` (an instance: opens each envelope and answers it) and `sealrelay send`
//! (a console: seals one message to an instance and prints its reply).

use std::io::{Read, Write};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use sealrelay_client::crypto::Token;
use sealrelay_client::{Client, ClientError, Identity, Persistence};
use sealrelay_wire::PrincipalId;
use zeroize::Zeroizing;

use super::{log_in, secret, Endpoints};

/// Attempts to log in and connect at start before the agent gives up.
const START_ATTEMPTS: u32 = 8;
/// How long the agent asks the broker to keep its session (and what is sent to it) while
/// it is disconnected; the broker may grant less (`mqtt.max_session_expiry_secs`).
const SESSION_EXPIRY_SECS: u32 = 86_400;

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
    let (api, broker) = (endpoints.server.api()?, endpoints.broker()?);
    // At start as after a drop, an unreachable server or broker is retried; a refused token
    // is final. The start is bounded, so a wrong address does not hang a service manager.
    let mut backoff = Duration::from_millis(500);
    let mut attempt = 1;
    let mut client = loop {
        let started = async {
            let me = Identity::login_instance(&api, &token).await?;
            // One agent per instance: a stable client id names its session, so what is sent
            // while its network blinks waits for it at the broker (protocol §5.6).
            let persistence = Persistence {
                client_id: format!("agent-{}", me.id),
                expiry_secs: SESSION_EXPIRY_SECS,
            };
            let version = endpoints.mqtt_version;
            Client::connect_persistent(api.clone(), me, broker.clone(), version, persistence).await
        };
        match started.await {
            Ok(client) => break client,
            // Unreachable, busy or rate-limited: all pass; a refused login does not.
            Err(
                e @ (ClientError::Transport(_)
                | ClientError::Mqtt(_)
                | ClientError::Busy(_)
                | ClientError::TooManyFailures { .. }),
            ) if attempt < START_ATTEMPTS => {
                // A closed stderr (a supervisor gone) must not stop the agent: best effort.
                let _ = writeln!(
                    std::io::stderr(),
                    "sealrelay agent: {e}; attempt {attempt} of {START_ATTEMPTS}, retrying in {backoff:?}"
                );
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(15));
                attempt += 1;
            }
            Err(e) => return Err(e.into()),
        }
    };
    let (id, witness) = (client.identity().id, client.identity().witness());
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
    let (api, me) = log_in(&endpoints.server, &user).await?;
    let mut client =
        Client::connect_to(api, me, endpoints.broker()?, endpoints.mqtt_version).await?;
    let answer = client
        .request(to, &payload, Duration::from_secs(timeout_secs))
        .await;
    // A normal end is a DISCONNECT, recorded as client_disconnect, not a dropped connection.
    client.close().await;
    let reply = answer?;
    let mut out = std::io::stdout().lock();
    out.write_all(&reply)?;
    out.write_all(b"\n")?;
    Ok(())
}
