//! Command-line front end, one file per verb family: `serve`, `user`, `instance`, `admin`,
//! and `messaging` (agent, send); this file holds the arguments they share. Secrets (passwords, tokens) are read from an environment
//! variable, a file or a prompt — never from argv, where `ps` and shell history see them.

mod activity;
mod admin;
mod instance;
mod messaging;
mod serve;
mod user;

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use zeroize::Zeroizing;

use admin::AdminCommand;
use instance::InstanceCommand;
use sealrelay_client::crypto::Token;
use sealrelay_client::{Api, Broker, Identity, MqttVersion};
use sealrelay_wire::PrincipalId;
use sha2::{Digest, Sha256};
use user::UserCommand;

#[derive(Parser)]
#[command(
    name = "sealrelay",
    version = sealrelay_broker::VERSION_LINE,
    about = "A blind relay broker for sealed console ↔ instance messages"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the broker (MQTT + HTTP API) on broker.toml's defaults or a given file.
    #[command(
        after_help = "Every key of broker.toml can be overridden by a SEALRELAY_<SECTION>_<KEY> variable \
(e.g. SEALRELAY_MQTT_LISTEN=0.0.0.0:1883); a variable naming no key stops start-up. \
`sealrelay default-config` prints every key with its default, `sealrelay check-config` checks a config \
without starting. SIGHUP reloads the TLS files and log.level; SIGTERM or SIGINT stops gracefully."
    )]
    Serve {
        /// Config file layered over the built-in defaults (see broker.toml).
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Check a broker config (defaults, the file, SEALRELAY_* variables, the TLS key pair and
    /// client CA it names, listeners sharing an address) without starting anything: it refuses
    /// what serve would, one line per problem, all at once; exit status 1 if any.
    CheckConfig {
        /// Config file layered over the built-in defaults (see broker.toml).
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Print the documented default config (the broker.toml compiled into this binary).
    DefaultConfig,
    /// Ask a broker on this machine whether it is alive (GET /healthz on the config's
    /// http.listen) or, with --ready, ready for clients (GET /readyz: its directory and, in a
    /// cluster, NATS reachable). Exit status 0 if so, 1 with the reason if not: for container
    /// health checks and scripts.
    Health {
        /// The broker's config file (for http.listen).
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Ask for readiness (/readyz) rather than liveness (/healthz).
        #[arg(long)]
        ready: bool,
    },
    /// Manage a user account.
    #[command(subcommand)]
    User(UserCommand),
    /// Manage your instances: add, list, rotate a token, re-enrol, pin, remove.
    #[command(subcommand)]
    Instance(InstanceCommand),
    /// Operator commands, run on the broker's machine with its config.
    #[command(subcommand)]
    Admin(AdminCommand),
    /// Run as an instance: answer each sender-authenticated (kind 2) envelope with a sealed
    /// echo; anonymous (kind 1) envelopes are skipped, since their sender is not proven.
    Agent {
        #[command(flatten)]
        endpoints: Endpoints,
        /// Read the instance token from this file instead of SEALRELAY_TOKEN or a prompt.
        #[arg(long)]
        token_file: Option<PathBuf>,
    },
    /// Everything the server holds about you and your instances: stored values (by size and
    /// hash), sessions live and past, hourly counts, failed logins against your name.
    Activity {
        #[command(flatten)]
        endpoints: Server,
        #[command(flatten)]
        user: UserArg,
        /// Only records from within this long: e.g. 90m, 24h, 7d (default: all kept).
        #[arg(long, value_name = "AGE")]
        since: Option<String>,
        /// Print the API's JSON answer instead of tables.
        #[arg(long)]
        json: bool,
    },
    /// Act as a console: seal a message to an instance, wait for and print its reply.
    Send {
        #[command(flatten)]
        endpoints: Endpoints,
        #[command(flatten)]
        user: UserArg,
        /// The instance id (from `sealrelay instance add` or `instance list`).
        #[arg(long, value_name = "ID")]
        to: PrincipalId,
        /// The message; read from standard input when absent.
        message: Option<String>,
        /// Seconds to wait for the reply.
        #[arg(long, default_value_t = 10)]
        timeout_secs: u64,
    },
}

/// The broker's HTTP API, for every verb.
#[derive(Args)]
struct Server {
    /// Base URL of the broker's HTTP API: http://host:port or https://host:port.
    #[arg(
        long,
        value_name = "URL",
        env = "SEALRELAY_SERVER",
        default_value = "http://127.0.0.1:8080"
    )]
    server: String,
    /// PEM file of the CA to trust for mqtts, wss and https (a private CA, or the broker's
    /// development CA data/tls-dev-ca.pem); the system's roots otherwise.
    #[arg(long, value_name = "PEM", env = "SEALRELAY_CA_FILE")]
    ca_file: Option<PathBuf>,
    /// Where to remember the newest keyring version seen per server, user and key, so an
    /// older keyring served later is refused. Default: $XDG_STATE_HOME/sealrelay or
    /// ~/.local/state/sealrelay.
    #[arg(long, value_name = "DIR", env = "SEALRELAY_STATE_DIR")]
    state_dir: Option<PathBuf>,
}

/// The HTTP API and the MQTT listener, for the verbs that exchange messages.
#[derive(Args)]
struct Endpoints {
    #[command(flatten)]
    server: Server,
    /// The broker's MQTT listener: mqtt://, mqtts://, ws:// or wss:// URL (ws paths default
    /// to /mqtt); a bare host:port means mqtt://.
    #[arg(
        long,
        value_name = "URL",
        env = "SEALRELAY_BROKER",
        default_value = "mqtt://127.0.0.1:1883"
    )]
    broker: String,
    /// MQTT protocol version.
    #[arg(long, value_name = "5|3.1.1", default_value = "5")]
    mqtt_version: MqttVersion,
}

impl Endpoints {
    /// The MQTT address for `--broker`, trusting `--ca-file` if given.
    fn broker(&self) -> Result<Broker> {
        Ok(Broker::parse(&self.broker, self.server.ca_file.as_deref())?)
    }
}

impl Server {
    /// The HTTP API client for `--server`, trusting `--ca-file` if given.
    fn api(&self) -> Result<Api> {
        Ok(Api::with_ca(&self.server, self.ca_file.as_deref())?)
    }

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
    endpoints: Server,
    #[command(flatten)]
    user: UserArg,
    /// The instance id.
    #[arg(long, value_name = "ID")]
    instance: PrincipalId,
}

#[derive(Args)]
struct UserArg {
    /// Your user name. The password comes from SEALRELAY_PASSWORD or a prompt.
    #[arg(long, value_name = "NAME", env = "SEALRELAY_USER")]
    user: String,
}

/// This machine's UTC offset, read once at start while the process has one thread (the only
/// time it can be read soundly); UTC if it cannot be.
static LOCAL_OFFSET: std::sync::OnceLock<time::UtcOffset> = std::sync::OnceLock::new();

/// A Unix time as people read it: local ISO 8601 and how long ago (or from now).
fn when(unix: i64) -> String {
    let offset = *LOCAL_OFFSET.get_or_init(|| time::UtcOffset::UTC);
    let Ok(at) = time::OffsetDateTime::from_unix_timestamp(unix) else {
        return format!("{unix} (unix time)");
    };
    let at = at.to_offset(offset).replace_nanosecond(0).unwrap_or(at);
    let stamp = at
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| unix.to_string());
    let delta = unix - time::OffsetDateTime::now_utc().unix_timestamp();
    let span = match delta.unsigned_abs() {
        0..=59 => return format!("{stamp} (just now)"),
        s @ 60..=3599 => format!("{} min", s / 60),
        s @ 3600..=172_799 => format!("{} h", s / 3600),
        s => format!("{} days", s / 86_400),
    };
    if delta < 0 {
        format!("{stamp} ({span} ago)")
    } else {
        format!("{stamp} (in {span})")
    }
}

pub fn run() -> Result<()> {
    let _ =
        LOCAL_OFFSET.set(time::UtcOffset::current_local_offset().unwrap_or(time::UtcOffset::UTC));
    let cli = Cli::parse();
    match cli.command {
        Command::Serve { config } => return serve::serve(config),
        Command::CheckConfig { config } => return serve::check(config),
        Command::DefaultConfig => {
            serve::print_default();
            return Ok(());
        }
        _ => {}
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

/// The API at `endpoints` and `user` logged in with the password (env or prompt), its
/// keyring checked against the newest version this machine saw.
async fn log_in(endpoints: &Server, user: &UserArg) -> Result<(Api, Identity)> {
    let api = endpoints.api()?;
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
        Command::Serve { .. } | Command::CheckConfig { .. } | Command::DefaultConfig => {
            unreachable!("handled before the client runtime starts")
        }
        Command::Health { config, ready } => serve::health(config, ready).await,
        Command::User(command) => user::run(command).await,
        Command::Instance(command) => instance::run(command).await,
        Command::Admin(command) => admin::run(command).await,
        Command::Agent {
            endpoints,
            token_file,
        } => messaging::agent(endpoints, token_file).await,
        Command::Send {
            endpoints,
            user,
            to,
            message,
            timeout_secs,
        } => messaging::send(endpoints, user, to, message, timeout_secs).await,
        Command::Activity {
            endpoints,
            user,
            since,
            json,
        } => {
            let since = since.as_deref().map(activity::since).transpose()?;
            let (api, me) = log_in(&endpoints, &user).await?;
            let report = me.activity(&api, since).await?;
            match json {
                true => println!("{}", serde_json::to_string_pretty(&report)?),
                false => activity::print_report(&report),
            }
            Ok(())
        }
    }
}
