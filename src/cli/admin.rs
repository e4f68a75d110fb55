//! `sealrelay admin …`: operator verbs, run beside the broker with its config; they talk to
//! the operator API with the token the broker created.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Subcommand;
use sealrelay_broker::config::Config;
use sealrelay_broker::{admin, datadir};
use sealrelay_client::Api;

#[derive(Subcommand)]
pub(super) enum AdminCommand {
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

pub(super) async fn run(command: AdminCommand) -> Result<()> {
    match command {
        AdminCommand::ResetUser {
            name,
            config,
            admin_url,
        } => {
            let config = Config::load(config.as_deref())?;
            let token = datadir::read_key_file(&config.admin.token_file, "admin token").context(
                "run this on the broker's machine, in its working directory, with its config",
            )?;
            let url = admin_url.unwrap_or_else(|| format!("http://{}", config.admin.listen));
            let reset = Api::new(&url)
                .admin_reset_user(&admin::operator_token_text(&token), &name)
                .await?;
            println!("user {name} ({})", reset.user_id);
            println!("reset-code {}", reset.reset_code.expose());
            eprintln!("The old password no longer works. Give the code to {name} over a channel you trust; it is valid until {} and works once: `sealrelay user reset --user {name}`.", super::when(reset.expires_at));
        }
    }
    Ok(())
}
