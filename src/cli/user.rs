//! `sealrelay user …`: register, change, roll back or reset a password, delete an account.

use anyhow::{bail, Result};
use clap::Subcommand;

use super::{log_in, new_password, password, secret, when, Server, UserArg};
use sealrelay_client::password::check_new_password;
use sealrelay_client::{ClientError, Identity};
use sealrelay_wire::{ResetCode, CLIENT_FLOOR};
use zeroize::Zeroizing;

#[derive(Subcommand)]
pub(super) enum UserCommand {
    /// Create an account: the key pair is made here and only its wrapped form is uploaded.
    /// On a server that creates accounts by invite, the code comes from SEALRELAY_INVITE.
    Register {
        #[command(flatten)]
        endpoints: Server,
        #[command(flatten)]
        user: UserArg,
        #[command(flatten)]
        strength: Strength,
    },
    /// Delete your account and every instance you own, with their keys. Irreversible: what
    /// was sealed to your key can never be opened again. Needs --yes.
    Delete {
        #[command(flatten)]
        endpoints: Server,
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
        endpoints: Server,
        #[command(flatten)]
        user: UserArg,
        #[command(flatten)]
        strength: Strength,
    },
    /// Undo the last change of your password, if it was made within the server's grace
    /// period (`auth.previous_key_days`, 7 days by default): for when someone else changed
    /// it. Give the password from before the change (SEALRELAY_PASSWORD or a prompt); every
    /// session of the account is disconnected. Then change it: whoever changed it held your
    /// login secret.
    Rollback {
        #[command(flatten)]
        endpoints: Server,
        #[command(flatten)]
        user: UserArg,
    },
    /// Complete a password reset with the code your operator gave you (SEALRELAY_RESET_CODE
    /// or a prompt): a new key pair replaces the old one, so what was sealed to the old key
    /// can no longer be opened, and your instances must be re-enrolled. The new password
    /// comes from SEALRELAY_NEW_PASSWORD or a prompt.
    Reset {
        #[command(flatten)]
        endpoints: Server,
        #[command(flatten)]
        user: UserArg,
        #[command(flatten)]
        strength: Strength,
    },
}

/// The floor a new password must clear (sealrelay_client::password).
#[derive(clap::Args)]
pub(super) struct Strength {
    /// Accept a new password below the floor (under 10 characters, one of the commonest,
    /// containing the account name): the password is all that protects the key if the
    /// server's database is stolen.
    #[arg(long)]
    allow_weak_password: bool,
}

impl Strength {
    /// `password` as the new password of `login`, or why not.
    fn check(&self, password: &str, login: &str) -> Result<()> {
        match check_new_password(password, login) {
            Err(weak) if !self.allow_weak_password => {
                bail!("{weak}; --allow-weak-password takes it anyway")
            }
            _ => Ok(()),
        }
    }
}

pub(super) async fn run(command: UserCommand) -> Result<()> {
    match command {
        UserCommand::Register {
            endpoints,
            user,
            strength,
        } => {
            let api = endpoints.api()?;
            let password = password(true)?;
            strength.check(&password, &user.user)?;
            // Unknown names get the server's default parameters from prelogin; never
            // accept weaker ones than our own floor.
            let advertised = api.prelogin(&user.user).await?.params;
            let params = advertised.strongest(CLIENT_FLOOR);
            let invite = std::env::var("SEALRELAY_INVITE").ok().map(Zeroizing::new);
            let me = Identity::register_invited(
                &api,
                &user.user,
                &password,
                params,
                invite.as_deref().map(String::as_str),
            )
            .await
            .map_err(|e| match e {
                ClientError::Api {
                    status: 403,
                    message,
                    ..
                } if invite.is_none() => {
                    anyhow::anyhow!("{message}; set SEALRELAY_INVITE to it")
                }
                other => other.into(),
            })?;
            println!(
                "registered user {} (id {}, key witness {})",
                me.login,
                me.id,
                me.witness()
            );
        }
        UserCommand::Passwd {
            endpoints,
            user,
            strength,
        } => {
            let (api, mut me) = log_in(&endpoints, &user).await?;
            let new = new_password()?;
            strength.check(&new, &user.user)?;
            let current = api.prelogin(&user.user).await?.params;
            let recommended = me.recommended_kdf(&api).await?.unwrap_or(current);
            let params = current.strongest(recommended);
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
        UserCommand::Rollback { endpoints, user } => {
            let api = endpoints.api()?;
            let (me, changed_at) =
                Identity::roll_back_password(&api, &user.user, &password(false)?).await?;
            endpoints.check_keyring(&me)?;
            println!(
                "the change of {}'s password made {} is undone: the previous password logs in again (key witness {})",
                me.login,
                when(changed_at),
                me.witness()
            );
            eprintln!("Whoever changed it held your login secret: change your password now (`sealrelay user passwd`).");
        }
        UserCommand::Delete {
            endpoints,
            user,
            yes,
        } => {
            if !yes {
                bail!("deleting an account cannot be undone; add --yes to confirm");
            }
            let (api, me) = log_in(&endpoints, &user).await?;
            let name = me.login.clone();
            me.delete_account(&api).await?;
            println!("deleted user {name} and its instances");
        }
        UserCommand::Reset {
            endpoints,
            user,
            strength,
        } => {
            let api = endpoints.api()?;
            let code: ResetCode = secret("SEALRELAY_RESET_CODE", "Reset code: ", false)?.parse()?;
            let new = new_password()?;
            strength.check(&new, &user.user)?;
            let advertised = api.prelogin(&user.user).await?.params;
            let params = advertised.strongest(CLIENT_FLOOR);
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
    }
    Ok(())
}
