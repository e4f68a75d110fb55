//! `sealrelay admin …`: operator verbs, run beside the broker with its config; they talk to
//! the operator API (`[admin]`, loopback) with the token the broker created. Each prints a
//! table for people, or the API's JSON with `--json` for scripts.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use sealrelay_broker::config::Config;
use sealrelay_broker::{admin, datadir};
use sealrelay_client::Api;
use sealrelay_wire::api::{
    Activity, AdminInvite, AdminKicked, AdminReset, AdminSessionLog, AdminSessions, AdminUnlocked,
    AdminUsers,
};
use sealrelay_wire::PrincipalId;
use serde::de::DeserializeOwned;

use super::{activity, when};

#[derive(Subcommand)]
pub(super) enum AdminCommand {
    /// Issue a one-time reset code for a user who forgot their password. Their old password
    /// stops working at once and their sessions are closed; hand them the code over a
    /// channel you trust.
    ResetUser {
        /// The user's name.
        #[arg(long)]
        name: String,
        #[command(flatten)]
        operator: Operator,
    },
    /// Make a one-time invite code, for a server with auth.registration = "invite": the new
    /// user registers with it in SEALRELAY_INVITE. Shown once; only its verifier is kept.
    Invite {
        #[command(flatten)]
        operator: Operator,
    },
    /// List the user accounts: when each was created and last seen, how many instances it
    /// owns, whether it is online.
    Users {
        #[command(flatten)]
        operator: Operator,
    },
    /// List the live MQTT sessions: principal, client id, transport, address, since when,
    /// envelopes and bytes each way.
    Sessions {
        #[command(flatten)]
        operator: Operator,
    },
    /// Close every live session of a principal (MQTT 5: DISCONNECT 0x98
    /// kicked_by_operator). Its credentials still work: to keep it out, reset its password
    /// or remove the instance.
    Kick {
        /// The principal: a user's name, or a user's or instance's id.
        #[arg(long, value_name = "NAME or ID")]
        principal: Who,
        #[command(flatten)]
        operator: Operator,
    },
    /// Clear a login's failed-login lockout (the window broker.toml sets under auth), so it
    /// may try again now.
    Unlock {
        /// The login: a user name or an instance id.
        #[arg(long, value_name = "NAME")]
        login: String,
        #[command(flatten)]
        operator: Operator,
    },
    /// Copy the SQLite directory while the broker runs (a consistent snapshot: the SQLite
    /// backup a `VACUUM INTO` makes), into a new file readable only by you. Keep it with the
    /// prelogin key and the operator token files; a PostgreSQL directory is backed up with
    /// PostgreSQL's tools instead.
    Backup {
        /// The file to write; it must not exist yet. `-` writes to standard output (through
        /// `kubectl exec` or `docker exec`, from an image without a shell).
        #[arg(long, value_name = "FILE")]
        to: PathBuf,
        #[command(flatten)]
        operator: Operator,
    },
    /// Export everything the server holds about a principal (user or instance): the same
    /// report its owner reads with `sealrelay activity`.
    Activity(Records),
    /// A principal's sessions, live and closed, newest first: address, transport, client
    /// id, times, counts, close reason.
    SessionLog(Records),
}

/// Which principal's records, from when.
#[derive(Args)]
pub(super) struct Records {
    /// The principal: a user's name, or a user's or instance's id.
    #[arg(long, value_name = "NAME or ID")]
    principal: Who,
    /// Only records from within this long: e.g. 90m, 24h, 7d (default: all kept,
    /// accounting.retention_days).
    #[arg(long, value_name = "AGE")]
    since: Option<String>,
    #[command(flatten)]
    operator: Operator,
}

impl Records {
    /// The operator API's path for `what` of this principal, with `?since=` if given.
    async fn path(&self, what: &str) -> Result<String> {
        let query = match self.since.as_deref().map(activity::since).transpose()? {
            Some(from) => format!("?since={from}"),
            None => String::new(),
        };
        Ok(format!(
            "/v1/admin/principals/{}/{what}{query}",
            self.operator.resolve(&self.principal).await?
        ))
    }
}

/// Where the operator API is and how to prove the caller is the operator.
#[derive(Args)]
pub(super) struct Operator {
    /// The broker's config file (for admin.listen and admin.token_file).
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// The operator API's URL, when it is not at admin.listen.
    #[arg(long, value_name = "URL")]
    admin_url: Option<String>,
    /// Print the API's JSON answer instead of a table.
    #[arg(long)]
    json: bool,
}

impl Operator {
    /// Calls the operator API; prints the JSON itself with `--json` and returns `None`, else
    /// returns the answer for a table.
    async fn call<T: DeserializeOwned + serde::Serialize + Send + 'static>(
        &self,
        method: &'static str,
        path: &str,
    ) -> Result<Option<T>> {
        let answer: T = self.fetch(method, path).await?;
        if self.json {
            println!("{}", serde_json::to_string_pretty(&answer)?);
            return Ok(None);
        }
        Ok(Some(answer))
    }

    /// The principal `who` names: its id as given, or the id of the user of that name.
    async fn resolve(&self, who: &Who) -> Result<PrincipalId> {
        match who {
            Who::Id(id) => Ok(*id),
            Who::Name(name) => (self.fetch::<AdminUsers>("GET", "/v1/admin/users").await?)
                .users
                .into_iter()
                .find(|u| &u.name == name)
                .map(|u| u.id)
                .with_context(|| {
                    format!("no user is named {name}: `sealrelay admin users` lists them (an instance goes by its id)")
                }),
        }
    }

    /// Calls the operator API and returns its answer.
    async fn fetch<T: DeserializeOwned + Send + 'static>(
        &self,
        method: &'static str,
        path: &str,
    ) -> Result<T> {
        let (api, token) = self.api()?;
        Ok(api.admin(&token, method, path).await?)
    }

    /// The operator API and the operator's bearer token, from the broker's config.
    fn api(&self) -> Result<(Api, zeroize::Zeroizing<String>)> {
        let config = Config::load(self.config.as_deref())?;
        let token = datadir::read_key_file(&config.admin.token_file, "admin token").context(
            "run this on the broker's machine, with the config it runs on (--config: paths written in it are relative to it)",
        )?;
        let url = self
            .admin_url
            .clone()
            .unwrap_or_else(|| format!("http://{}", config.admin.listen));
        Ok((Api::new(&url), admin::operator_token_text(&token)))
    }

    /// Writes the broker's online backup into the new file `to` (mode 0600), or to standard
    /// output for `-`; its bytes.
    async fn backup(&self, to: &std::path::Path) -> Result<u64> {
        use std::os::unix::fs::OpenOptionsExt;
        let (api, token) = self.api()?;
        if to == std::path::Path::new("-") {
            return Ok(api.admin_backup(&token, std::io::stdout()).await?);
        }
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(to)
            .with_context(|| format!("cannot create {} (it must not exist yet)", to.display()))?;
        let on_disk = file.try_clone()?;
        let written = api
            .admin_backup(&token, std::io::BufWriter::new(file))
            .await
            .map_err(anyhow::Error::from)
            .and_then(|bytes| Ok(on_disk.sync_all().map(|()| bytes)?));
        if written.is_err() {
            // Half a copy is no backup: leave nothing that looks like one.
            let _ = std::fs::remove_file(to);
        }
        written
    }
}

/// A principal named on the command line: its id (32 hex digits), or a user's name.
#[derive(Clone)]
pub(super) enum Who {
    Id(PrincipalId),
    Name(String),
}

impl std::str::FromStr for Who {
    type Err = std::convert::Infallible;

    fn from_str(text: &str) -> Result<Who, Self::Err> {
        Ok(text
            .parse()
            .map_or_else(|_| Who::Name(text.to_owned()), Who::Id))
    }
}

pub(super) async fn run(command: AdminCommand) -> Result<()> {
    match command {
        AdminCommand::ResetUser { name, operator } => {
            let path = format!("/v1/admin/users/{name}/reset");
            let Some(reset) = operator.call::<AdminReset>("POST", &path).await? else {
                return Ok(());
            };
            println!("user {name} ({})", reset.user_id);
            println!("reset-code {}", reset.reset_code.expose());
            eprintln!("The old password no longer works. Give the code to {name} over a channel you trust; it is valid until {} and works once: `sealrelay user reset --user {name}`.", when(reset.expires_at));
        }
        AdminCommand::Backup { to, operator } => {
            let bytes = operator.backup(&to).await?;
            // On stderr when the copy itself goes to stdout.
            let said = format!("backup {} ({bytes} bytes)", to.display());
            if to == std::path::Path::new("-") {
                eprintln!("{said}");
            } else {
                println!("{said}");
            }
            eprintln!("Keep it with the prelogin key and operator token files (directory.prelogin_key_file, admin.token_file): deploy/README.md, Backups.");
        }
        AdminCommand::Invite { operator } => {
            let Some(invite) = operator
                .call::<AdminInvite>("POST", "/v1/admin/invites")
                .await?
            else {
                return Ok(());
            };
            println!("invite {}", invite.invite.expose());
            eprintln!("Give the code to the new user over a channel you trust; it is valid until {} and works once: `SEALRELAY_INVITE=<code> sealrelay user register --user <name>`.", when(invite.expires_at));
        }
        AdminCommand::Users { operator } => {
            let Some(list) = operator
                .call::<AdminUsers>("GET", "/v1/admin/users")
                .await?
            else {
                return Ok(());
            };
            println!(
                "{:<24}  {:<32}  {:>9}  {:<40}  created",
                "user", "id", "instances", "seen"
            );
            for u in list.users {
                let seen = match (u.online, u.last_seen) {
                    (true, _) => "online now".to_owned(),
                    (false, Some(at)) => when(at),
                    (false, None) => "never connected".to_owned(),
                };
                println!(
                    "{:<24}  {}  {:>9}  {:<40}  {}",
                    u.name,
                    u.id,
                    u.instances,
                    seen,
                    when(u.created_at)
                );
            }
        }
        AdminCommand::Sessions { operator } => {
            let Some(list) = operator
                .call::<AdminSessions>("GET", "/v1/admin/sessions")
                .await?
            else {
                return Ok(());
            };
            println!(
                "{:<32}  {:<8}  {:<32}  {:<24}  {:<4}  {:<39}  {:>8}  {:>8}  {:>10}  {:>10}  since",
                "principal",
                "kind",
                "login",
                "client id",
                "via",
                "address",
                "msgs in",
                "msgs out",
                "bytes in",
                "bytes out"
            );
            for s in list.sessions {
                println!(
                    "{}  {:<8}  {:<32}  {:<24}  {:<4}  {:<39}  {:>8}  {:>8}  {:>10}  {:>10}  {}",
                    s.principal,
                    s.kind.as_str(),
                    s.login,
                    s.client_id,
                    s.transport,
                    s.ip,
                    s.messages_in,
                    s.messages_out,
                    s.bytes_in,
                    s.bytes_out,
                    when(s.since)
                );
            }
        }
        AdminCommand::Kick {
            principal,
            operator,
        } => {
            let principal = operator.resolve(&principal).await?;
            let path = format!("/v1/admin/principals/{principal}/kick");
            if let Some(kicked) = operator.call::<AdminKicked>("POST", &path).await? {
                println!(
                    "closed {} session(s) of {}",
                    kicked.closed, kicked.principal
                );
            }
        }
        AdminCommand::Unlock { login, operator } => {
            let path = format!("/v1/admin/logins/{login}/unlock");
            if let Some(unlocked) = operator.call::<AdminUnlocked>("POST", &path).await? {
                if unlocked.was_locked {
                    println!(
                        "{}: lockout cleared; it may log in again now",
                        unlocked.login
                    );
                } else {
                    println!(
                        "{}: was not locked out; failure count cleared",
                        unlocked.login
                    );
                }
            }
        }
        AdminCommand::Activity(records) => {
            let path = records.path("activity").await?;
            if let Some(report) = records.operator.call::<Activity>("GET", &path).await? {
                activity::print_report(&report);
            }
        }
        AdminCommand::SessionLog(records) => {
            let path = records.path("session-log").await?;
            if let Some(log) = records
                .operator
                .call::<AdminSessionLog>("GET", &path)
                .await?
            {
                activity::print_sessions(&log.sessions);
            }
        }
    }
    Ok(())
}
