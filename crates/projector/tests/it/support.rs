//! Shared test harness: schema, stream, publisher, projector and comparisons.

use std::sync::Arc;
use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::{self, stream};
use commands::{CommandHandler, SystemClock};
use eventstore::{
    AppendRequest, EventStore, ExpectedVersion, NewEvent, RecordedEvent, StreamAppend,
};
use platform::CancellationToken;
use projector::rules::{ReadModel, fold_until};
use projector::{FaultHook, Projection, ProjectorConfig, ProjectorError};
use serde_json::Value;
use testkit::TestDb;
use tokio::task::JoinHandle;

pub const NATS_URL_DEFAULT: &str = "nats://127.0.0.1:4222";

pub fn nats_url() -> String {
    std::env::var("NATS_URL").unwrap_or_else(|_| NATS_URL_DEFAULT.to_owned())
}

pub struct Harness {
    pub db: TestDb,
    pub store: EventStore,
    pub handler: CommandHandler,
    pub jetstream: jetstream::Context,
    pub stream_name: String,
    pub prefix: String,
}

impl Harness {
    pub async fn new() -> Harness {
        let db = TestDb::new().await;
        projector::migrate(&db.pool)
            .await
            .expect("projector migrations");
        let store = db.store();
        let handler = CommandHandler::new(store.clone(), Arc::new(SystemClock));
        handler
            .ensure_default_pipeline()
            .await
            .expect("default pipeline");
        let client = async_nats::connect(nats_url())
            .await
            .unwrap_or_else(|error| {
                panic!(
                    "cannot reach NATS at NATS_URL={} (set NATS_URL): {error}",
                    nats_url()
                )
            });
        let jetstream = jetstream::new(client);
        let token = uuid::Uuid::now_v7().simple().to_string();
        let stream_name = format!("TEST_PROJECTOR_{token}");
        let prefix = format!("tp{token}");
        jetstream
            .create_stream(stream::Config {
                name: stream_name.clone(),
                subjects: vec![format!("{prefix}.events.>")],
                duplicate_window: Duration::from_secs(120),
                ..Default::default()
            })
            .await
            .expect("create test stream");
        Harness {
            db,
            store,
            handler,
            jetstream,
            stream_name,
            prefix,
        }
    }

    pub fn config(&self) -> ProjectorConfig {
        let mut config = ProjectorConfig::new(nats_url(), &self.stream_name, &self.prefix);
        config.ack_wait = Duration::from_secs(2);
        config.retry_interval = Duration::from_millis(200);
        config.retry_interval_max = Duration::from_secs(1);
        config
    }

    /// Starts a publisher that follows the store, like the relay.
    pub fn publisher(&self) -> Publisher {
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(publish_loop(
            self.store.clone(),
            self.jetstream.clone(),
            self.prefix.clone(),
            shutdown.clone(),
        ));
        Publisher { shutdown, task }
    }

    pub fn projector(&self, faults: Option<FaultHook>) -> Running {
        let mut config = self.config();
        config.faults = faults;
        self.projector_with(config)
    }

    pub fn projector_with(&self, config: ProjectorConfig) -> Running {
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(projector::run(
            config,
            self.store.clone(),
            &Projection::ALL,
            shutdown.clone(),
        ));
        Running { shutdown, task }
    }

    /// Appends one hand-written event, bypassing the domain, the way old data or a newer build's
    /// events reach the store. Returns its position.
    pub async fn append_raw(
        &self,
        stream_id: &str,
        event_type: &str,
        schema_version: i32,
        data: Value,
    ) -> i64 {
        let request = AppendRequest {
            command_id: uuid::Uuid::now_v7(),
            fingerprint: None,
            occurred_at: None,
            streams: vec![StreamAppend {
                stream_id: stream_id.to_owned(),
                expected: ExpectedVersion::Any,
                events: vec![NewEvent {
                    event_id: uuid::Uuid::now_v7(),
                    event_type: event_type.to_owned(),
                    schema_version,
                    data,
                    metadata: serde_json::json!({}),
                }],
            }],
        };
        self.store.append(request).await.unwrap().position
    }

    pub async fn head(&self) -> i64 {
        self.store.head_position().await.unwrap()
    }

    /// Waits until every projection has applied `position`.
    pub async fn caught_up(&self, position: i64) {
        for projection in Projection::ALL {
            let reached = projector::read::wait_for(
                &self.db.pool,
                projection,
                position,
                Duration::from_secs(60),
            )
            .await
            .unwrap();
            assert!(reached, "{projection} did not reach position {position}");
        }
    }

    pub async fn all_events(&self) -> Vec<RecordedEvent> {
        let mut events = Vec::new();
        let mut after = 0;
        loop {
            let batch = self.store.read_all(after, 5000, None).await.unwrap();
            let Some(last) = batch.last() else { break };
            after = last.position;
            events.extend(batch);
        }
        events
    }

    /// The in-memory fold of the whole store through the same rules.
    pub async fn folded(&self) -> ReadModel {
        let events = self.all_events().await;
        fold_until(&events, chrono::Utc::now() + chrono::Duration::days(1))
    }

    /// Every row of every read-model table, in a stable order.
    pub async fn snapshot(&self) -> Vec<(String, Vec<Value>)> {
        let client = self.db.pool.get().await.unwrap();
        let mut tables = Vec::new();
        for projection in Projection::ALL {
            for table in projection.tables() {
                let rows = client
                    .query(
                        &format!("select to_jsonb(t) from {table} t order by to_jsonb(t)::text"),
                        &[],
                    )
                    .await
                    .unwrap();
                tables.push((
                    table.to_string(),
                    rows.iter().map(|row| row.get::<_, Value>(0)).collect(),
                ));
            }
        }
        tables
    }

    /// Checks the SQL read models against the in-memory fold of the store.
    pub async fn assert_matches_fold(&self) {
        let model = self.folded().await;
        let pool = &self.db.pool;
        let client = pool.get().await.unwrap();
        let count: i64 = client
            .query_one("select count(*) from deals", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(count as usize, model.deals.len(), "deal rows");
        for deal in model.deals.values() {
            let stored = projector::read::deal(pool, deal.id).await.unwrap();
            assert_eq!(stored.as_ref(), Some(deal), "deal {}", deal.id);
        }
        let mut board = std::collections::BTreeMap::new();
        for pipeline in ["default"] {
            for cell in projector::read::board(pool, pipeline).await.unwrap() {
                board.insert(
                    (pipeline.to_owned(), cell.stage, cell.currency),
                    (cell.count as i128, cell.amount, cell.weighted_amount),
                );
            }
        }
        let expected: std::collections::BTreeMap<_, _> = model
            .board()
            .into_iter()
            .map(|(key, figures)| {
                (
                    (key.pipeline, key.stage, key.currency),
                    (figures.count, figures.amount, figures.weighted_amount),
                )
            })
            .collect();
        assert_eq!(board, expected, "board");
        for granularity in [
            projector::rules::Granularity::Month,
            projector::rules::Granularity::Quarter,
        ] {
            let rows = projector::read::forecast(pool, granularity, &Default::default())
                .await
                .unwrap();
            let actual: Vec<_> = rows
                .into_iter()
                .map(|row| {
                    (
                        (row.period, row.owner, row.pipeline, row.currency),
                        (
                            row.open_count as i128,
                            row.pipeline_amount,
                            row.weighted_amount,
                            row.best_case,
                            row.commit,
                            row.closed_won,
                            row.closed_lost,
                        ),
                    )
                })
                .collect();
            let expected: Vec<_> = model
                .forecast_by(granularity)
                .into_iter()
                .map(|(key, figures)| {
                    (
                        key,
                        (
                            figures.open_count,
                            figures.pipeline_amount,
                            figures.weighted_amount,
                            figures.best_case,
                            figures.commit,
                            figures.closed_won,
                            figures.closed_lost,
                        ),
                    )
                })
                .collect();
            assert_eq!(actual, expected, "forecast by {granularity:?}");
        }
    }

    pub async fn rebuild_all(&self) {
        for projection in Projection::ALL {
            projector::rebuild(
                projection,
                &self.store,
                &Default::default(),
                &CancellationToken::new(),
                &mut |_| {},
            )
            .await
            .unwrap();
        }
    }

    /// Deletes the test's stream.
    pub async fn finish(self) {
        let _ = self.jetstream.delete_stream(&self.stream_name).await;
    }
}

pub struct Publisher {
    shutdown: CancellationToken,
    task: JoinHandle<()>,
}

impl Publisher {
    pub async fn stop(self) {
        self.shutdown.cancel();
        let _ = self.task.await;
    }
}

async fn publish_loop(
    store: EventStore,
    jetstream: jetstream::Context,
    prefix: String,
    shutdown: CancellationToken,
) {
    let mut after = 0;
    while !shutdown.is_cancelled() {
        let events = store.read_all(after, 1000, None).await.unwrap();
        if events.is_empty() {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        }
        for event in &events {
            publish(&jetstream, &prefix, event).await;
            after = event.position;
        }
    }
}

/// Publishes one envelope with the relay's subject and headers.
pub async fn publish(jetstream: &jetstream::Context, prefix: &str, event: &RecordedEvent) {
    let entity = event
        .stream_id
        .split_once('-')
        .map_or(event.stream_id.as_str(), |(_, id)| id);
    let subject = format!(
        "{prefix}.events.{}.{entity}.{}",
        event.category(),
        event.event_type
    );
    let mut headers = HeaderMap::new();
    headers.insert("Nats-Msg-Id", event.event_id.to_string().as_str());
    headers.insert("Dealstream-Position", event.position.to_string().as_str());
    let payload = serde_json::to_vec(event).unwrap();
    jetstream
        .publish_with_headers(subject, headers, payload.into())
        .await
        .unwrap()
        .await
        .unwrap();
}

pub struct Running {
    pub shutdown: CancellationToken,
    pub task: JoinHandle<Result<(), ProjectorError>>,
}

impl Running {
    pub async fn stop(self) -> Result<(), ProjectorError> {
        self.shutdown.cancel();
        self.task.await.unwrap()
    }
}

/// A small deterministic generator (xorshift), so that a failing history can be replayed.
pub struct Random(u64);

impl Random {
    pub fn new(seed: u64) -> Random {
        Random(seed.max(1))
    }

    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    pub fn below(&mut self, bound: u64) -> u64 {
        self.next() % bound
    }
}

pub mod history {
    //! Random histories through the command handler.

    use chrono::{Duration, NaiveDate, Utc};
    use commands::{CommandContext, CommandError, CommandHandler, OpportunityRequest};
    use domain::opportunity::{NewOpportunity, OpportunityCommand};
    use domain::values::{
        ActivityId, ActivityKind, Amount, Currency, FollowUpId, FollowUpKind, ForecastCategory,
        OpportunityId, Outcome, PipelineSlug, Probability, StageName, Text,
    };
    use uuid::Uuid;

    use super::Random;

    const STAGES: [&str; 4] = ["new", "contacted", "quoted", "negotiation"];
    const OWNERS: [&str; 3] = ["alice", "bob", "carol"];
    const CURRENCIES: [&str; 3] = ["EUR", "USD", "JPY"];

    pub fn text(value: &str) -> Text {
        Text::parse("text", value, Text::SHORT).unwrap()
    }

    pub fn new_deal(random: &mut Random) -> NewOpportunity {
        NewOpportunity {
            name: text("deal"),
            lead_id: None,
            pipeline: PipelineSlug::default_pipeline(),
            stage: None,
            amount: Amount::parse(i128::from(random.below(1_000_000))).unwrap(),
            currency: Currency::parse(CURRENCIES[random.below(3) as usize]).unwrap(),
            expected_close_date: NaiveDate::from_ymd_opt(2026, 1, 1).unwrap()
                + Duration::days(random.below(700) as i64),
            owner: text(OWNERS[random.below(3) as usize]),
        }
    }

    /// One random command on `id` (creating it first when `created` is false). Returns the
    /// position of the answer, or `None` for a rejection (a closed deal refusing a change, say).
    pub async fn step(
        handler: &CommandHandler,
        random: &mut Random,
        id: OpportunityId,
        created: &mut bool,
        follow_ups: &mut Vec<FollowUpId>,
    ) -> Option<i64> {
        let context = CommandContext::new("test:history");
        let result = if !*created {
            *created = true;
            handler
                .create_opportunity(&context, id, new_deal(random))
                .await
        } else {
            let request = match random.below(13) {
                0..=2 => OpportunityRequest::ChangeStage {
                    stage: StageName::parse(STAGES[random.below(4) as usize]).unwrap(),
                    reason: None,
                },
                3 => OpportunityRequest::Other(OpportunityCommand::OverrideProbability {
                    probability: Some(Probability::parse(i128::from(random.below(101))).unwrap()),
                    forecast_category: [
                        None,
                        Some(ForecastCategory::Commit),
                        Some(ForecastCategory::BestCase),
                        Some(ForecastCategory::Pipeline),
                    ][random.below(4) as usize],
                }),
                4 => OpportunityRequest::Other(OpportunityCommand::ChangeAmount {
                    amount: Amount::parse(i128::from(random.below(1_000_000))).unwrap(),
                    currency: Currency::parse(CURRENCIES[random.below(3) as usize]).unwrap(),
                }),
                5 => OpportunityRequest::Other(OpportunityCommand::ChangeCloseDate {
                    expected_close_date: NaiveDate::from_ymd_opt(2026, 1, 1).unwrap()
                        + Duration::days(random.below(700) as i64),
                }),
                6 => OpportunityRequest::Other(OpportunityCommand::ChangeOwner {
                    owner: text(OWNERS[random.below(3) as usize]),
                }),
                7 => OpportunityRequest::Other(OpportunityCommand::LogActivity {
                    activity_id: ActivityId(Uuid::now_v7()),
                    kind: ActivityKind::ALL[random.below(5) as usize],
                    summary: text("touch"),
                    occurred_at: Utc::now(),
                }),
                8 => {
                    let follow_up_id = FollowUpId(Uuid::now_v7());
                    follow_ups.push(follow_up_id);
                    OpportunityRequest::Other(OpportunityCommand::ScheduleFollowUp {
                        follow_up_id,
                        kind: FollowUpKind::parse("call-back").unwrap(),
                        due_at: Utc::now() + Duration::days(random.below(10) as i64),
                        rule: text("test"),
                    })
                }
                9 if !follow_ups.is_empty() => {
                    let follow_up_id = follow_ups[random.below(follow_ups.len() as u64) as usize];
                    if random.below(2) == 0 {
                        OpportunityRequest::Other(OpportunityCommand::CompleteFollowUp {
                            follow_up_id,
                        })
                    } else {
                        OpportunityRequest::Other(OpportunityCommand::FireFollowUp {
                            follow_up_id,
                            kind: FollowUpKind::parse("call-back").unwrap(),
                            due_at: Utc::now(),
                        })
                    }
                }
                9 | 10 => OpportunityRequest::Other(OpportunityCommand::Close {
                    outcome: if random.below(2) == 0 {
                        Outcome::Won
                    } else {
                        Outcome::Lost
                    },
                    reason: Some(text("because")),
                    closed_at: Utc::now() - Duration::days(random.below(400) as i64),
                }),
                11 => OpportunityRequest::Reopen { stage: None },
                _ => OpportunityRequest::Other(OpportunityCommand::FireFollowUp {
                    follow_up_id: FollowUpId(Uuid::now_v7()),
                    kind: FollowUpKind::parse("stale-deal").unwrap(),
                    due_at: Utc::now(),
                }),
            };
            handler.handle_opportunity(&context, id, request).await
        };
        match result {
            Ok(answer) => Some(answer.position),
            Err(CommandError::Rejected(_)) => None,
            Err(error) => panic!("command failed: {error}"),
        }
    }

    /// `commands` random commands over `deals` deals, from `workers` concurrent tasks that each
    /// own a share of the deals. Returns the store's head afterwards.
    pub async fn run(
        handler: &CommandHandler,
        deals: usize,
        commands: usize,
        workers: usize,
        seed: u64,
    ) {
        let mut tasks = tokio::task::JoinSet::new();
        for worker in 0..workers {
            let handler = handler.clone();
            let ids: Vec<OpportunityId> = (0..deals)
                .filter(|index| index % workers == worker)
                .map(|_| OpportunityId(Uuid::now_v7()))
                .collect();
            let share = commands / workers + usize::from(worker < commands % workers);
            tasks.spawn(async move {
                let mut random = Random::new(seed.wrapping_mul(31).wrapping_add(worker as u64 + 1));
                let mut created = vec![false; ids.len()];
                let mut follow_ups = vec![Vec::new(); ids.len()];
                for step_index in 0..share {
                    // Every deal is created first, then commands land on random deals.
                    let index = if step_index < ids.len() {
                        step_index
                    } else {
                        random.below(ids.len() as u64) as usize
                    };
                    step(
                        &handler,
                        &mut random,
                        ids[index],
                        &mut created[index],
                        &mut follow_ups[index],
                    )
                    .await;
                }
            });
        }
        while let Some(joined) = tasks.join_next().await {
            joined.unwrap();
        }
    }
}
