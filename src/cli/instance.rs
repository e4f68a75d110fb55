//! `sealrelay instance …`: add, list, rotate, re-enrol, pin and remove your instances.

use anyhow::Result;
use clap::Subcommand;
use sealrelay_client::ClientError;
use sealrelay_wire::envelope::Witness;

use super::{log_in, print_token, InstanceTarget, Server, UserArg};

#[derive(Subcommand)]
pub(super) enum InstanceCommand {
    /// Create an instance and print its id and one-time token (shown once, never stored).
    Add {
        #[command(flatten)]
        endpoints: Server,
        #[command(flatten)]
        user: UserArg,
        /// A name for it, kept in your sealed keyring: the server never learns it (up to 100
        /// bytes of UTF-8).
        #[arg(long, default_value = "")]
        name: String,
    },
    /// Name one of your instances (an empty name clears it), in your sealed keyring: the
    /// server never learns it; every console of yours shows it.
    Rename {
        #[command(flatten)]
        target: InstanceTarget,
        /// The new name (up to 100 bytes of UTF-8).
        #[arg(long)]
        name: String,
    },
    /// List your instances: key witness, pin status, whether a re-enrolment is needed, when
    /// each was last seen (or that it is online now) and when it was added.
    List {
        #[command(flatten)]
        endpoints: Server,
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

pub(super) async fn run(command: InstanceCommand) -> Result<()> {
    match command {
        InstanceCommand::Add {
            endpoints,
            user,
            name,
        } => {
            let (api, mut me) = log_in(&endpoints, &user).await?;
            let (id, token) = me.add_named_instance(&api, &name).await?;
            endpoints.remember_keyring(&me)?;
            print_token(
                id,
                &token,
                "The token is shown once: give it to the instance (SEALRELAY_TOKEN) and keep no other copy.",
            );
        }
        InstanceCommand::List { endpoints, user } => {
            let (api, me) = log_in(&endpoints, &user).await?;
            println!(
                "{:<32}  {:<32}  {:<8}  {:<9}  {:<40}  {:<28}  name",
                "instance", "witness", "key", "re-enrol", "seen", "created"
            );
            let mut untrusted = 0;
            for i in me.instances(&api).await? {
                let key = match me.check_served_key(i.id, &i.public_key) {
                    Ok(_) => "pinned",
                    Err(ClientError::NotPinned(_)) => "unpinned",
                    Err(_) => "MISMATCH",
                };
                untrusted += usize::from(key != "pinned");
                let seen = match (i.online, i.last_seen) {
                    (true, _) => "online now".to_owned(),
                    (false, Some(at)) => super::when(at),
                    (false, None) => "never connected".to_owned(),
                };
                println!(
                    "{}  {}  {:<8}  {:<9}  {:<40}  {:<28}  {}",
                    i.id,
                    i.witness,
                    key,
                    if i.stale_owner_key { "needed" } else { "-" },
                    seen,
                    super::when(i.created_at),
                    me.instance_name(i.id).unwrap_or("-")
                );
            }
            if untrusted > 0 {
                eprintln!("{untrusted} instance key(s) are not pinned or differ from the pin: messages to them are refused until you re-enrol them or pin them after checking their witness (sealrelay instance pin).");
            }
        }
        InstanceCommand::RotateToken(InstanceTarget {
            endpoints,
            user,
            instance,
        }) => {
            let (api, me) = log_in(&endpoints, &user).await?;
            let token = me.rotate_token(&api, instance).await?;
            print_token(
                instance,
                &token,
                "The new token is shown once; the old one no longer works.",
            );
        }
        InstanceCommand::Reenrol(InstanceTarget {
            endpoints,
            user,
            instance,
        }) => {
            let (api, mut me) = log_in(&endpoints, &user).await?;
            let token = me.reenrol_instance(&api, instance).await?;
            endpoints.remember_keyring(&me)?;
            print_token(
                instance,
                &token,
                "The instance has a new key and this new token (shown once); start its agent with it.",
            );
        }
        InstanceCommand::Pin {
            target:
                InstanceTarget {
                    endpoints,
                    user,
                    instance,
                },
            witness,
        } => {
            let (api, mut me) = log_in(&endpoints, &user).await?;
            me.pin_instance(&api, instance, witness).await?;
            endpoints.remember_keyring(&me)?;
            println!("pinned instance {instance} (key witness {witness})");
        }
        InstanceCommand::Rename {
            target:
                InstanceTarget {
                    endpoints,
                    user,
                    instance,
                },
            name,
        } => {
            let (api, mut me) = log_in(&endpoints, &user).await?;
            me.rename_instance(&api, instance, &name).await?;
            endpoints.remember_keyring(&me)?;
            match me.instance_name(instance) {
                Some(named) => println!("instance {instance} is named {named}"),
                None => println!("instance {instance} has no name"),
            }
        }
        InstanceCommand::Remove(InstanceTarget {
            endpoints,
            user,
            instance,
        }) => {
            let (api, mut me) = log_in(&endpoints, &user).await?;
            me.remove_instance(&api, instance).await?;
            endpoints.remember_keyring(&me)?;
            println!("removed instance {instance}");
        }
    }
    Ok(())
}
