//! Command-line front end. Secrets (passwords, tokens) are read from an environment
//! variable, a file or a prompt — never from argv, where `ps` and shell history see them.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use zeroize::Zeroizing;

use sealrelay::admin;
use sealrelay::client::{Api, Client, ClientError, Identity, MqttVersion};
use sealrelay::config::Config;
use sealrelay::crypto::Token;
use sealrelay::envelope::Witness;
use sealrelay::protocol::ResetCode;
use sealrelay::protocol::{KdfParams, PrincipalId};
use sealrelay::server;
use sha2::{Digest, Sha256};

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
    /// Operator commands, run on the broker's machine with its config.
    #[command(subcommand)]
    Admin(AdminCommand),
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
    /// Complete a password reset with the code your operator gave you (SEALRELAY_RESET_CODE
    /// or a prompt): a new key pair replaces the old one, so what was sealed to the old key
    /// can no longer be opened, and your instances must be re-enrolled. The new password
    /// comes from SEALRELAY_NEW_PASSWORD or a prompt.
    Reset {
        #[command(flatten)]
        endpoints: Endpoints,
        #[command(flatten)]
        user: UserArg,
    },
}

#[derive(Subcommand)]
enum AdminCommand {
    /// Issue a one-time reset code for a user who forgot their password. Their old password
    /// stops working at once and their sessions are closed; hand them the code over a
    /// channel you trust.
    ResetUser {
        /// The user's name.
        #[arg(long)]
        name: String,
        /// The broker's config file (for admin.listen and admin.token_file).
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// The operator API's URL, when it is not at admin.listen.
        #[arg(long)]
        admin_url: Option<String>,
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
    /// Give one of your instances a new key pair and token (printed once): after a password
    /// reset, or when its host is no longer trusted. It is disconnected until it logs in
    /// with the new token.
    Reenrol(InstanceTarget),
    /// Trust the server's key for one of your instances after checking its witness out of
    /// band (the agent prints it): for instances added before keyrings existed.
    Pin {
        #[command(flatten)]
        target: InstanceTarget,
        /// The witness the instance shows (32 hex characters).
        #[arg(long)]
        witness: Witness,
    },
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
    /// Where to remember the newest keyring version seen per server, user and key, so an
    /// older keyring served later is refused. Default: $XDG_STATE_HOME/sealrelay or
    /// ~/.local/state/sealrelay.
    #[arg(long, env = "SEALRELAY_STATE_DIR")]
    state_dir: Option<PathBuf>,
}

impl Endpoints {
    /// The file remembering the keyring version for this server, login and key.
    fn keyring_floor(&self, me: &Identity) -> Option<PathBuf> {
        let dir = self.state_dir.clone().or_else(|| {
            std::env::var_os("XDG_STATE_HOME")
                .map(PathBuf::from)
                .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/state")))
                .map(|d| d.join("sealrelay"))
        })?;
        let digest = Sha256::new()
            .chain_update(self.server.as_bytes())
            .chain_update([0])
            .chain_update(me.login.as_bytes())
            .chain_update([0])
            .chain_update(me.witness().0)
            .finalize();
        Some(dir.join(format!("keyring-{}", hex::encode(&digest[..16]))))
    }

    /// Refuses a keyring older than the newest this machine saw, then remembers this one.
    fn check_keyring(&self, me: &Identity) -> Result<()> {
        let Some(path) = self.keyring_floor(me) else {
            return Ok(());
        };
        if let Ok(text) = std::fs::read_to_string(&path) {
            let seen: u64 = text.trim().parse().with_context(|| {
                format!("{} should hold a keyring version number", path.display())
            })?;
            me.require_keyring_version(seen)?;
            if seen == me.keyring_version() {
                return Ok(());
            }
        }
        self.remember_keyring(me)
    }

    fn remember_keyring(&self, me: &Identity) -> Result<()> {
        let Some(path) = self.keyring_floor(me) else {
            return Ok(());
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create state directory {}", dir.display()))?;
        }
        std::fs::write(&path, me.keyring_version().to_string())
            .with_context(|| format!("cannot write {}", path.display()))
    }
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

/// The API at `endpoints` and `user` logged in with the password (env or prompt), its
/// keyring checked against the newest version this machine saw.
async fn log_in(endpoints: &Endpoints, user: &UserArg) -> Result<(Api, Identity)> {
    let api = Api::new(&endpoints.server);
    let me = Identity::login_user(&api, &user.user, &password(false)?).await?;
    endpoints.check_keyring(&me)?;
    Ok((api, me))
}

fn new_password() -> Result<Zeroizing<String>> {
    let new = secret("SEALRELAY_NEW_PASSWORD", "New password: ", true)?;
    if new.is_empty() {
        bail!("the new password is empty");
    }
    Ok(new)
}

fn print_token(instance: PrincipalId, token: &Token, note: &str) {
    println!("instance {instance}");
    println!("token {}", &*token.reveal());
    eprintln!("{note}");
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
            let new = new_password()?;
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
            let (api, mut me) = log_in(&endpoints, &user).await?;
            let (id, token) = me.add_instance(&api).await?;
            endpoints.remember_keyring(&me)?;
            print_token(
                id,
                &token,
                "The token is shown once: give it to the instance (SEALRELAY_TOKEN) and keep no other copy.",
            );
        }
        Command::Instance(InstanceCommand::List { endpoints, user }) => {
            let (api, me) = log_in(&endpoints, &user).await?;
            println!(
                "{:<32}  {:<32}  {:<8}  {:<7}  {:<9}  created",
                "instance", "witness", "key", "online", "re-enrol"
            );
            let mut untrusted = 0;
            for i in me.instances(&api).await? {
                let key = match me.check_served_key(i.id, &i.public_key) {
                    Ok(_) => "pinned",
                    Err(ClientError::NotPinned(_)) => "unpinned",
                    Err(_) => "MISMATCH",
                };
                untrusted += usize::from(key != "pinned");
                println!(
                    "{}  {}  {:<8}  {:<7}  {:<9}  {}",
                    i.id,
                    i.witness,
                    key,
                    if i.online { "yes" } else { "no" },
                    if i.stale_owner_key { "needed" } else { "-" },
                    i.created_at
                );
            }
            if untrusted > 0 {
                eprintln!("{untrusted} instance key(s) are not pinned or differ from the pin: messages to them are refused until you re-enrol them or pin them after checking their witness (sealrelay instance pin).");
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
            print_token(
                instance,
                &token,
                "The new token is shown once; the old one no longer works.",
            );
        }
        Command::Instance(InstanceCommand::Reenrol(InstanceTarget {
            endpoints,
            user,
            instance,
        })) => {
            let (api, mut me) = log_in(&endpoints, &user).await?;
            let token = me.reenrol_instance(&api, instance).await?;
            endpoints.remember_keyring(&me)?;
            print_token(
                instance,
                &token,
                "The instance has a new key and this new token (shown once); start its agent with it.",
            );
        }
        Command::Instance(InstanceCommand::Pin {
            target:
                InstanceTarget {
                    endpoints,
                    user,
                    instance,
                },
            witness,
        }) => {
            let (api, mut me) = log_in(&endpoints, &user).await?;
            me.pin_instance(&api, instance, witness).await?;
            endpoints.remember_keyring(&me)?;
            println!("pinned instance {instance} (key witness {witness})");
        }
        Command::User(UserCommand::Reset { endpoints, user }) => {
            let api = Api::new(&endpoints.server);
            let code: ResetCode = secret("SEALRELAY_RESET_CODE", "Reset code: ", false)?.parse()?;
            let new = new_password()?;
            let advertised = api.prelogin(&user.user).await?.params;
            let params = strongest(&[advertised, CLIENT_MIN_KDF]);
            let (me, stale) =
                Identity::complete_reset(&api, &user.user, &code, &new, params).await?;
            endpoints.remember_keyring(&me)?;
            println!(
                "password reset for {}: new key witness {}; what was sealed to the old key can no longer be opened",
                me.login,
                me.witness()
            );
            for id in &stale {
                println!("re-enrol {id}");
            }
            if !stale.is_empty() {
                eprintln!("{} instance(s) still pin your old key: run `sealrelay instance reenrol --instance <id>` for each and restart its agent with the new token.", stale.len());
            }
        }
        Command::Admin(AdminCommand::ResetUser {
            name,
            config,
            admin_url,
        }) => {
            let config = Config::load(config.as_deref())?;
            let token = server::read_key_file(&config.admin.token_file, "admin token").context(
                "run this on the broker's machine, in its working directory, with its config",
            )?;
            let url = admin_url.unwrap_or_else(|| format!("http://{}", config.admin.listen));
            let reset = Api::new(&url)
                .admin_reset_user(&admin::operator_token_text(&token), &name)
                .await?;
            println!("user {name} ({})", reset.user_id);
            println!("reset-code {}", reset.reset_code);
            eprintln!("The old password no longer works. Give the code to {name} over a channel you trust; it is valid until {} (unix time) and works once: `sealrelay user reset --user {name}`.", reset.expires_at);
        }
        Command::Instance(InstanceCommand::Remove(InstanceTarget {
            endpoints,
            user,
            instance,
        })) => {
            let (api, mut me) = log_in(&endpoints, &user).await?;
            me.remove_instance(&api, instance).await?;
            endpoints.remember_keyring(&me)?;
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
            let (id, witness) = (me.id, me.witness());
            let mut client =
                Client::connect(api, me, &endpoints.broker, endpoints.mqtt_version).await?;
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
