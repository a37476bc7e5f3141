//! `dealstream tokens create|list|revoke`: the API's bearer tokens. A new token is printed once,
//! alone on the last line of standard output, so that a script can take it with `tail -n 1`;
//! the store keeps only its hash, so it cannot be shown again.

use std::time::Duration;

use anyhow::Context;
use api::auth::{self, Role};
use eventstore::EventStore;
use uuid::Uuid;

#[derive(clap::Subcommand)]
pub enum TokensCommand {
    /// Creates a token and prints it once, on the last line.
    Create {
        /// The name recorded as `api:<actor>` in the events sent with the token; for a rep, the
        /// owner whose leads and deals it may act on.
        #[arg(long)]
        actor: String,
        /// viewer, rep, manager or admin.
        #[arg(long, value_parser = parse_role)]
        role: Role,
        /// How long the token is valid, e.g. 90d or 12h; without it, until revoked.
        #[arg(long, value_parser = parse_expiry)]
        expires_in: Option<Duration>,
    },
    /// Prints every token, its id first: actor, role, created, expires, revoked.
    List,
    /// Revokes a token: every API instance refuses it within seconds.
    Revoke {
        /// The id `tokens list` shows.
        id: Uuid,
    },
}

fn parse_role(text: &str) -> Result<Role, String> {
    text.parse()
}

fn parse_expiry(text: &str) -> Result<Duration, String> {
    let delta = domain::values::parse_duration(text)?;
    delta
        .to_std()
        .ok()
        .filter(|duration| !duration.is_zero())
        .ok_or_else(|| format!("{text:?}: a token must be valid for some time"))
}

pub async fn run(store: &EventStore, command: &TokensCommand) -> anyhow::Result<()> {
    let pool = store.pool();
    match command {
        TokensCommand::Create {
            actor,
            role,
            expires_in,
        } => {
            let created = create(store, actor, *role, *expires_in).await?;
            println!("id {} actor {actor} role {role}", created.id);
            println!("{}", created.token);
        }
        TokensCommand::List => {
            for token in auth::list_tokens(pool).await? {
                let when = |instant: Option<chrono::DateTime<chrono::Utc>>| {
                    instant.map_or_else(|| "-".to_owned(), |instant| instant.to_rfc3339())
                };
                println!(
                    "{} actor={} role={} created={} expires={} revoked={}",
                    token.id,
                    token.actor,
                    token.role,
                    token.created_at.to_rfc3339(),
                    when(token.expires_at),
                    when(token.revoked_at),
                );
            }
        }
        TokensCommand::Revoke { id } => {
            if !auth::revoke_token(pool, *id).await? {
                anyhow::bail!("no token has the id {id}; `dealstream tokens list` shows them");
            }
            println!("revoked {id}");
        }
    }
    Ok(())
}

/// Creates a token; `demo` uses it too.
pub async fn create(
    store: &EventStore,
    actor: &str,
    role: Role,
    expires_in: Option<Duration>,
) -> anyhow::Result<auth::NewToken> {
    auth::create_token(store.pool(), actor, role, expires_in)
        .await
        .with_context(|| format!("could not create a token for {actor:?}"))
}
