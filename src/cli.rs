//! Command-line front end. Secrets (passwords, tokens) are read from an environment
//! variable, a file or a prompt — never from argv, where `ps` and shell history see them.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use zeroize::Zeroizing;

use sealrelay::client::{Api, Client, ClientError, Identity, MqttVersion};
use sealrelay::config::Config;
use sealrelay::crypto::Token;
use sealrelay::protocol::{KdfParams, PrincipalId};
use sealrelay::server;

/// The weakest Argon2id parameters this client will use, whatever a server advertises
/// (OWASP's minimum for Argon2id): a hostile server cannot talk it into a weak key.
const CLIENT_MIN_KDF: KdfParams = KdfParams {
    memory_kib: 19_456,
    iterations: 2,
    parallelism: 1,
};

#[derive(Parser)]
#[command(
    name = "sealrelay",
    version,
    about = "A blind relay broker for sealed console ↔ instance messages"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the broker (MQTT + HTTP API) on broker.toml's defaults or a given file.
    Serve {
        /// Config file layered over the built-in defaults (see broker.toml).
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Manage a user account.
    #[command(subcommand)]
    User(UserCommand),
    /// Add and list your instances.
    #[command(subcommand)]
    Instance(InstanceCommand),
    /// Run as an instance: open each envelope, answer it with a sealed reply (echo).
    Agent {
        #[command(flatten)]
        endpoints: Endpoints,
        /// Read the instance token from this file instead of SEALRELAY_TOKEN or a prompt.
        #[arg(long)]
        token_file: Option<PathBuf>,
    },
    /// Act as a console: seal a message to an instance, wait for and print its reply.
    Send {
        #[command(flatten)]
        endpoints: Endpoints,
        #[command(flatten)]
        user: UserArg,
        /// The instance id (from `sealrelay instance add` or `instance list`).
        #[arg(long)]
        to: PrincipalId,
        /// The message; read from standard input when absent.
        message: Option<String>,
        /// Seconds to wait for the reply.
        #[arg(long, default_value_t = 10)]
        timeout_secs: u64,
    },
}

#[derive(Subcommand)]
enum UserCommand {
    /// Create an account: the key pair is made here and only its wrapped form is uploaded.
    Register {
        #[command(flatten)]
        endpoints: Endpoints,
        #[command(flatten)]
        user: UserArg,
    },
    /// Delete your account and every instance you own, with their keys. Irreversible: what
    /// was sealed to your key can never be opened again. Needs --yes.
    Delete {
        #[command(flatten)]
        endpoints: Endpoints,
        #[command(flatten)]
        user: UserArg,
        /// Confirm the deletion.
        #[arg(long)]
        yes: bool,
    },
    /// Change your password: the same key is re-wrapped (KDF parameters upgraded to the
    /// server's recommendation); your other sessions are disconnected. The old password
    /// comes from SEALRELAY_PASSWORD or a prompt, the new from SEALRELAY_NEW_PASSWORD or a prompt.
    Passwd {
        #[command(flatten)]
        endpoints: Endpoints,
        #[command(flatten)]
        user: UserArg,
    },
}

#[derive(Subcommand)]
enum InstanceCommand {
    /// Create an instance and print its id and one-time token (shown once, never stored).
    Add {
        #[command(flatten)]
        endpoints: Endpoints,
        #[command(flatten)]
        user: UserArg,
    },
    /// List your instances with their key witness and whether they are online.
    List {
        #[command(flatten)]
        endpoints: Endpoints,
        #[command(flatten)]
        user: UserArg,
    },
    /// Give one of your instances a new token (printed once); the old one stops working and
    /// the instance is disconnected until it logs in with the new one.
    RotateToken(InstanceTarget),
    /// Remove one of your instances: its token stops working and it is disconnected at once.
    Remove(InstanceTarget),
}

#[derive(Args)]
struct Endpoints {
    /// Base URL of the broker's HTTP API.
    #[arg(
        long,
        env = "SEALRELAY_SERVER",
        default_value = "http://127.0.0.1:8080"
    )]
    server: String,
    /// host:port of the broker's MQTT listener.
    #[arg(long, env = "SEALRELAY_BROKER", default_value = "127.0.0.1:1883")]
    broker: String,
    /// MQTT protocol version: 5 or 3.1.1.
    #[arg(long, default_value = "5")]
    mqtt_version: MqttVersion,
}

/// One of your instances, and you to act on it.
#[derive(Args)]
struct InstanceTarget {
    #[command(flatten)]
    endpoints: Endpoints,
    #[command(flatten)]
    user: UserArg,
    /// The instance id.
    #[arg(long)]
    instance: PrincipalId,
}

#[derive(Args)]
struct UserArg {
    /// Your user name. The password comes from SEALRELAY_PASSWORD or a prompt.
    #[arg(long, env = "SEALRELAY_USER")]
    user: String,
}

/// Each Argon2id parameter at its largest among `candidates`: never weaker than any.
fn strongest(candidates: &[KdfParams]) -> KdfParams {
    candidates.iter().fold(CLIENT_MIN_KDF, |a, b| KdfParams {
        memory_kib: a.memory_kib.max(b.memory_kib),
        iterations: a.iterations.max(b.iterations),
        parallelism: a.parallelism.max(b.parallelism),
    })
}

pub fn run() -> Result<()> {
    let cli = Cli::parse();
    if let Command::Serve { config } = cli.command {
        return serve(config);
    }
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .init();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(client_command(cli.command))
}

fn serve(path: Option<PathBuf>) -> Result<()> {
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

/// The API at `endpoints` and `user` logged in with the password (env or prompt).
async fn log_in(endpoints: &Endpoints, user: &UserArg) -> Result<(Api, Identity)> {
    let api = Api::new(&endpoints.server);
    let me = Identity::login_user(&api, &user.user, &password(false)?).await?;
    Ok((api, me))
}

/// A secret from `variable`, else an interactive prompt (twice when `confirm`).
fn secret(variable: &str, prompt: &str, confirm: bool) -> Result<Zeroizing<String>> {
    if let Ok(value) = std::env::var(variable) {
        return Ok(Zeroizing::new(value));
    }
    let first = Zeroizing::new(
        rpassword::prompt_password(prompt)
            .with_context(|| format!("no {variable} set and no terminal to prompt on"))?,
    );
    if confirm {
        let again = Zeroizing::new(rpassword::prompt_password("Repeat: ")?);
        if *first != *again {
            bail!("the two entries differ");
        }
    }
    Ok(first)
}

fn password(confirm: bool) -> Result<Zeroizing<String>> {
    let password = secret("SEALRELAY_PASSWORD", "Password: ", confirm)?;
    if password.is_empty() {
        bail!("the password is empty");
    }
    Ok(password)
}

async fn client_command(command: Command) -> Result<()> {
    match command {
        Command::Serve { .. } => unreachable!("handled before the client runtime starts"),
        Command::User(UserCommand::Register { endpoints, user }) => {
            let api = Api::new(&endpoints.server);
            let password = password(true)?;
            // Unknown names get the server's default parameters from prelogin; never
            // accept weaker ones than our own floor.
            let advertised = api.prelogin(&user.user).await?.params;
            let params = strongest(&[advertised, CLIENT_MIN_KDF]);
            let me = Identity::register_user(&api, &user.user, &password, params).await?;
            println!(
                "registered user {} (id {}, key witness {})",
                me.login,
                me.id,
                me.witness()
            );
        }
        Command::User(UserCommand::Passwd { endpoints, user }) => {
            let (api, mut me) = log_in(&endpoints, &user).await?;
            let new = secret("SEALRELAY_NEW_PASSWORD", "New password: ", true)?;
            if new.is_empty() {
                bail!("the new password is empty");
            }
            let current = api.prelogin(&user.user).await?.params;
            let recommended = me.recommended_kdf(&api).await?.unwrap_or(current);
            let params = strongest(&[current, recommended, CLIENT_MIN_KDF]);
            me.change_password(&api, &new, params).await?;
            println!(
                "password changed for {} (key witness unchanged: {}; Argon2id m={} KiB t={} p={})",
                me.login,
                me.witness(),
                params.memory_kib,
                params.iterations,
                params.parallelism
            );
        }
        Command::Instance(InstanceCommand::Add { endpoints, user }) => {
            let (api, me) = log_in(&endpoints, &user).await?;
            let (id, token) = me.add_instance(&api).await?;
            println!("instance {id}");
            println!("token {}", &*token.reveal());
            eprintln!("The token is shown once: give it to the instance (SEALRELAY_TOKEN) and keep no other copy.");
        }
        Command::Instance(InstanceCommand::List { endpoints, user }) => {
            let (api, me) = log_in(&endpoints, &user).await?;
            println!(
                "{:<32}  {:<32}  {:<7}  created",
                "instance", "witness", "online"
            );
            for i in me.instances(&api).await? {
                println!(
                    "{}  {}  {:<7}  {}",
                    i.id,
                    i.witness,
                    if i.online { "yes" } else { "no" },
                    i.created_at
                );
            }
        }
        Command::User(UserCommand::Delete {
            endpoints,
            user,
            yes,
        }) => {
            if !yes {
                bail!("deleting an account cannot be undone; add --yes to confirm");
            }
            let (api, me) = log_in(&endpoints, &user).await?;
            let name = me.login.clone();
            me.delete_account(&api).await?;
            println!("deleted user {name} and its instances");
        }
        Command::Instance(InstanceCommand::RotateToken(InstanceTarget {
            endpoints,
            user,
            instance,
        })) => {
            let (api, me) = log_in(&endpoints, &user).await?;
            let token = me.rotate_token(&api, instance).await?;
            println!("instance {instance}");
            println!("token {}", &*token.reveal());
            eprintln!("The new token is shown once; the old one no longer works.");
        }
        Command::Instance(InstanceCommand::Remove(InstanceTarget {
            endpoints,
            user,
            instance,
        })) => {
            let (api, me) = log_in(&endpoints, &user).await?;
            me.remove_instance(&api, instance).await?;
            println!("removed instance {instance}");
        }
        Command::Agent {
            endpoints,
            token_file,
        } => {
            let token_text = match token_file {
                Some(path) => Zeroizing::new(
                    std::fs::read_to_string(&path)
                        .with_context(|| format!("cannot read token file {}", path.display()))?,
                ),
                None => secret("SEALRELAY_TOKEN", "Instance token: ", false)?,
            };
            let token: Token = token_text.trim().parse()?;
            let api = Api::new(&endpoints.server);
            let me = Identity::login_instance(&api, &token).await?;
            let id = me.id;
            let mut client =
                Client::connect(api, me, &endpoints.broker, endpoints.mqtt_version).await?;
            println!("agent {id} connected to {}; serving", endpoints.broker);
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
        Command::Send {
            endpoints,
            user,
            to,
            message,
            timeout_secs,
        } => {
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
                Client::connect(api, me, &endpoints.broker, endpoints.mqtt_version).await?;
            let reply = client
                .request(to, &payload, Duration::from_secs(timeout_secs))
                .await?;
            let mut out = std::io::stdout().lock();
            out.write_all(&reply)?;
            out.write_all(b"\n")?;
        }
    }
    Ok(())
}
