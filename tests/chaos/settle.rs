//! What the chaos suite and the several-machines suite share besides the cluster: the run's
//! seed and generator, a manager's token, its rules file with durations in seconds, waiting until the system is quiet, and
//! comparing the read models with a replay.

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use tokio::sync::Mutex;

use crate::cluster::{NATS_STREAM, Services};
use crate::invariants;

/// The run's seed: `DEALSTREAM_CHAOS_SEED` to repeat a run, else the clock.
pub fn seed() -> u64 {
    std::env::var("DEALSTREAM_CHAOS_SEED")
        .ok()
        .map(|seed| {
            seed.parse()
                .expect("DEALSTREAM_CHAOS_SEED is a whole number")
        })
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default()
                .as_nanos() as u64
        })
}

/// A manager's token from the CLI, as an operator makes one.
pub async fn create_token(services: &Services) -> String {
    let created = services
        .one_off(&[
            "tokens",
            "create",
            "--actor",
            crate::load::ACTOR,
            "--role",
            "manager",
        ])
        .output()
        .await
        .expect("run dealstream tokens create");
    assert!(
        created.status.success(),
        "dealstream tokens create failed: {}",
        String::from_utf8_lossy(&created.stderr)
    );
    String::from_utf8_lossy(&created.stdout)
        .lines()
        .last()
        .expect("a token on the last line")
        .to_owned()
}

/// A small deterministic generator (SplitMix64): the run's seed decides its faults and commands.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut value = self.0;
        value = (value ^ (value >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        value = (value ^ (value >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        value ^ (value >> 31)
    }

    /// A number in `low..high`.
    pub fn between(&mut self, low: u64, high: u64) -> u64 {
        low + self.next_u64() % (high - low)
    }

    pub fn below(&mut self, bound: usize) -> usize {
        self.between(0, bound as u64) as usize
    }

    /// True `percent` times in a hundred.
    pub fn chance(&mut self, percent: u64) -> bool {
        self.next_u64() % 100 < percent
    }

    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for index in (1..items.len()).rev() {
            items.swap(index, self.below(index + 1));
        }
    }
}

/// The rules file of the run: the built-in rules (deploy/dealstream.toml is a copy of them) with
/// durations in seconds, so that follow-ups and reminders come due while the faults go on.
pub fn quick_rules() -> String {
    const DEFAULTS: &str = include_str!("../../deploy/dealstream.toml");
    let mut rules = DEFAULTS.to_owned();
    for (default, quick) in [
        (
            r#"kind = "first-contact", after = "1d""#,
            r#"kind = "first-contact", after = "3s""#,
        ),
        (
            r#"kind = "quote-follow-up", after = "3d""#,
            r#"kind = "quote-follow-up", after = "4s""#,
        ),
        (r#"stale_after = "14d""#, r#"stale_after = "8s""#),
    ] {
        assert!(
            rules.contains(default),
            "deploy/dealstream.toml no longer says {default}: update the chaos suite's rules"
        );
        rules = rules.replace(default, quick);
    }
    rules
}

/// How long the services get, once the load has stopped, to publish, project and fire every
/// due timer; the longest rule above (stale, 8s) comes due within it.
pub const SETTLE: Duration = Duration::from_secs(10);
/// How long the system may take to become quiet after that.
pub const QUIET_TIMEOUT: Duration = Duration::from_secs(120);

/// Waits until the store has stopped growing, the relay has published all of it, both
/// projections have applied all of it and no timer is past due; answers the database's clock
/// at that moment. Fails the run when that takes longer than [`QUIET_TIMEOUT`].
pub async fn wait_quiet(database_url: &str, nats_url: &str) -> DateTime<Utc> {
    let deadline = Instant::now() + QUIET_TIMEOUT;
    let mut last = None;
    let mut stable_polls = 0;
    loop {
        let state = quiet_state(database_url, nats_url).await;
        match &state {
            Ok((_, figures)) if figures.is_quiet() && last.as_ref() == Some(figures) => {
                stable_polls += 1;
            }
            _ => stable_polls = 0,
        }
        if stable_polls >= 3
            && let Ok((now, _)) = state
        {
            return now;
        }
        assert!(
            Instant::now() < deadline,
            "the system did not become quiet within {QUIET_TIMEOUT:?}: {state:?}"
        );
        last = state.ok().map(|(_, figures)| figures);
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

#[derive(Debug, PartialEq, Eq)]
pub struct Progress {
    pub head: i64,
    pub published: u64,
    pub checkpoints: Vec<(String, i64)>,
    pub timers_past_due: i64,
}

impl Progress {
    fn is_quiet(&self) -> bool {
        let has = |name: &str| {
            self.checkpoints
                .iter()
                .any(|(projection, _)| projection == name)
        };
        self.published == self.head as u64
            && has("pipeline")
            && has("forecast")
            && self
                .checkpoints
                .iter()
                .all(|(_, position)| *position == self.head)
            && self.timers_past_due == 0
    }
}

async fn quiet_state(
    database_url: &str,
    nats_url: &str,
) -> Result<(DateTime<Utc>, Progress), String> {
    let (client, connection) = tokio_postgres::connect(database_url, tokio_postgres::NoTls)
        .await
        .map_err(|error| error.to_string())?;
    tokio::spawn(connection);
    let row = client
        .query_one(
            "select coalesce((select max(position) from events), 0), now(), \
             (select count(*) from workflow_timers where fired_at is null and due_at <= now())",
            &[],
        )
        .await
        .map_err(|error| error.to_string())?;
    let checkpoints = client
        .query(
            "select projection, position from projection_checkpoints order by projection",
            &[],
        )
        .await
        .map_err(|error| error.to_string())?
        .into_iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect();
    let nats = async_nats::connect(nats_url)
        .await
        .map_err(|error| error.to_string())?;
    let mut stream = async_nats::jetstream::new(nats)
        .get_stream(NATS_STREAM)
        .await
        .map_err(|error| error.to_string())?;
    let published = stream
        .info()
        .await
        .map_err(|error| error.to_string())?
        .state
        .last_sequence;
    Ok((
        row.get(1),
        Progress {
            head: row.get(0),
            published,
            checkpoints,
            timers_past_due: row.get(2),
        },
    ))
}

/// Both read models equal a fresh replay: the live tables, as the projector left them, against
/// the tables `dealstream projections rebuild` builds from the store (the services are stopped,
/// so nothing moves in between).
pub async fn read_models_match_replay(
    client: &tokio_postgres::Client,
    services: &Mutex<Services>,
    head: i64,
) -> (Vec<String>, usize) {
    let mut violations = Vec::new();
    for row in client
        .query(
            "select projection, position from projection_checkpoints",
            &[],
        )
        .await
        .expect("read the checkpoints")
    {
        let (projection, position): (String, i64) = (row.get(0), row.get(1));
        if position != head {
            violations.push(format!(
                "{projection} stands at position {position} of {head}"
            ));
        }
    }
    let live = invariants::snapshot_read_models(client).await;
    for projection in ["pipeline", "forecast"] {
        let output = services
            .lock()
            .await
            .one_off(&["projections", "rebuild", projection])
            .output()
            .await
            .expect("run dealstream projections rebuild");
        assert!(
            output.status.success(),
            "dealstream projections rebuild {projection} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let replayed = invariants::snapshot_read_models(client).await;
    violations.extend(invariants::compare_read_models(&live, &replayed));
    (violations, live.values().map(Vec::len).sum())
}
