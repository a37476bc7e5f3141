//! Answers as of an earlier instant or position equal, field for field, what the live queries
//! answered when their read models had applied exactly the events known then: from snapshots,
//! after a rebuild, and with every snapshot dropped. So do answers valid at that instant, since
//! nothing in this history is imported.

use std::time::Duration;

use chrono::{DateTime, SubsecRound, Utc};
use commands::{CommandContext, OpportunityRequest};
use domain::opportunity::OpportunityCommand;
use domain::values::{FollowUpId, FollowUpKind, OpportunityId, Text};
use platform::CancellationToken;
use projector::{Projection, RebuildOptions};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::read_your_writes::{api_client, spawn_api};
use crate::support::Harness;

/// Small, so that a short history has many snapshots and most answers start from one.
const SNAPSHOT_EVERY: i64 = 7;

struct Client {
    http: reqwest::Client,
    base: String,
}

impl Client {
    async fn get(&self, path: &str) -> Value {
        let response = self
            .http
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .unwrap();
        let status = response.status();
        let body: Value = response.json().await.unwrap();
        assert_eq!(status, 200, "GET {path}: {body}");
        body
    }

    async fn post(&self, path: &str, body: Value) -> Value {
        let response = self
            .http
            .post(format!("{}{path}", self.base))
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = response.status();
        let body: Value = response.json().await.unwrap();
        assert!(status.is_success(), "POST {path}: {status} {body}");
        body
    }
}

/// The live queries one capture asks, each as a path without query string parameters of time.
fn queries(deals: &[String]) -> Vec<String> {
    let mut paths = vec![
        "/v1/pipelines/default/board?".to_owned(),
        "/v1/forecast?period=quarter&".to_owned(),
        "/v1/forecast?period=month&currency=EUR&".to_owned(),
        "/v1/opportunities?limit=500&".to_owned(),
        "/v1/opportunities?status=open&limit=2&".to_owned(),
        "/v1/follow-ups?".to_owned(),
    ];
    paths.extend(deals.iter().map(|id| format!("/v1/opportunities/{id}?")));
    paths
}

struct Capture {
    position: i64,
    instant: DateTime<Utc>,
    answers: Vec<(String, Value)>,
}

/// Takes every `time_in_stage` out of `value` (they depend on the instant of the answer), in
/// document order.
fn take_times(value: &mut Value, times: &mut Vec<Value>) {
    match value {
        Value::Object(object) => {
            if let Some(time) = object.remove("time_in_stage") {
                times.push(time);
            }
            object
                .values_mut()
                .for_each(|value| take_times(value, times));
        }
        Value::Array(items) => items.iter_mut().for_each(|value| take_times(value, times)),
        _ => {}
    }
}

/// Compares an answer from history with the live one it must equal; `instant_field` is the
/// field that names the instant it was asked for (`as_of` or `valid_at`).
fn assert_same(
    path: &str,
    live: &Value,
    mut historical: Value,
    capture: &Capture,
    instant_field: &str,
) {
    let object = historical.as_object_mut().unwrap();
    let covered = if path.starts_with("/v1/opportunities/") {
        object.remove("as_of_position")
    } else {
        object.remove("position")
    };
    assert_eq!(
        covered,
        Some(json!(capture.position)),
        "{path} covers {}",
        capture.position
    );
    assert!(
        object.remove(instant_field).is_some(),
        "{path} says {instant_field}"
    );
    let mut live = live.clone();
    let (mut live_times, mut historical_times) = (Vec::new(), Vec::new());
    take_times(&mut live, &mut live_times);
    take_times(&mut historical, &mut historical_times);
    assert_eq!(
        historical, live,
        "{path} as of position {}",
        capture.position
    );
    // Whole seconds at the live answer's instant and at the one asked for, which lie within
    // a second or so of each other here.
    assert_eq!(live_times.len(), historical_times.len());
    for (live, historical) in live_times.iter().zip(&historical_times) {
        let live = live.as_object().unwrap();
        let historical = historical.as_object().unwrap();
        assert_eq!(
            live.keys().collect::<Vec<_>>(),
            historical.keys().collect::<Vec<_>>()
        );
        for (stage, seconds) in live {
            let difference = seconds.as_i64().unwrap() - historical[stage].as_i64().unwrap();
            assert!(
                difference.abs() <= 2,
                "{path}: time in {stage} {live:?} {historical:?}"
            );
        }
    }
}

async fn check_all(client: &Client, captures: &[Capture], deals: &[String]) {
    for capture in captures {
        for (path, live) in &capture.answers {
            let instant = capture
                .instant
                .to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
            let by_instant = client
                .get(&format!("{path}as_of={}", urlencode(&instant)))
                .await;
            assert_same(path, live, by_instant, capture, "as_of");
            let by_position = client
                .get(&format!("{path}as_of_position={}", capture.position))
                .await;
            assert_same(path, live, by_position, capture, "as_of");
            // Nothing here is imported, so every event occurred when it was recorded: the world
            // valid at an instant, by all that is known now, is what was known then.
            let valid = client
                .get(&format!("{path}valid_at={}", urlencode(&instant)))
                .await;
            assert_same(path, live, valid, capture, "valid_at");
        }
    }
    // Before the first event: nothing at all.
    let empty = client.get("/v1/forecast?as_of=2001-01-01T00:00:00Z").await;
    assert_eq!(empty["rows"], json!([]));
    assert_eq!(empty["position"], 0);
    let board = client
        .get("/v1/pipelines/default/board?as_of_position=0")
        .await;
    assert_eq!(board["columns"], json!([]));
    let list = client.get("/v1/opportunities?as_of_position=0").await;
    assert_eq!(list["opportunities"], json!([]));
    let response = client
        .http
        .get(format!(
            "{}/v1/opportunities/{}?as_of_position=0",
            client.base, deals[0]
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
}

fn urlencode(text: &str) -> String {
    text.replace('+', "%2B").replace(':', "%3A")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn answers_as_of_any_instant_equal_the_live_answers_of_then() {
    let harness = Harness::new().await;
    let publisher = harness.publisher();
    let mut config = harness.config();
    config.snapshot_every = SNAPSHOT_EVERY;
    let projector = harness.projector_with(config);
    let (address, api_shutdown) = spawn_api(&harness).await;
    let client = Client {
        http: api_client(&harness).await,
        base: format!("http://{address}"),
    };

    let mut deals: Vec<String> = Vec::new();
    let mut closed: Vec<String> = Vec::new();
    // The k-th deal still open, counting round.
    let open = |deals: &Vec<String>, closed: &Vec<String>, k: usize| {
        let open: Vec<&String> = deals.iter().filter(|deal| !closed.contains(deal)).collect();
        open[k % open.len()].clone()
    };
    let mut captures: Vec<Capture> = Vec::new();
    let owners = ["alice", "bob", "Carol"];
    let currencies = ["EUR", "USD"];
    for step in 0..40usize {
        let answer = match step % 10 {
            0 | 5 => {
                let answer = client
                    .post(
                        "/v1/opportunities",
                        json!({
                            "name": format!("deal {step}"),
                            "amount": 1000 + 37 * step as i64,
                            "currency": currencies[step % 2],
                            "expected_close_date": format!("2026-{:02}-15", 1 + step % 12),
                            "owner": owners[step % 3],
                        }),
                    )
                    .await;
                deals.push(answer["id"].as_str().unwrap().to_owned());
                answer
            }
            1 => {
                let deal = open(&deals, &closed, step);
                client
                    .post(
                        &format!("/v1/opportunities/{deal}/stage"),
                        json!({"stage": "quoted"}),
                    )
                    .await
            }
            2 => {
                let deal = open(&deals, &closed, step + 1);
                client
                    .post(
                        &format!("/v1/opportunities/{deal}/amount"),
                        json!({"amount": 5000 + step, "currency": "EUR"}),
                    )
                    .await
            }
            3 => {
                let deal = open(&deals, &closed, step);
                client
                    .post(
                        &format!("/v1/opportunities/{deal}/probability"),
                        json!({"probability": 33, "forecast_category": "commit"}),
                    )
                    .await
            }
            4 => {
                let deal = open(&deals, &closed, step);
                let result = harness
                    .handler
                    .handle_opportunity(
                        &CommandContext::new("workflow:first-contact"),
                        OpportunityId(Uuid::parse_str(&deal).unwrap()),
                        OpportunityRequest::Other(OpportunityCommand::ScheduleFollowUp {
                            follow_up_id: FollowUpId(Uuid::now_v7()),
                            kind: FollowUpKind::parse("first-contact").unwrap(),
                            // Microseconds, as the workflow's clock gives them.
                            due_at: Utc::now().trunc_subsecs(6)
                                + chrono::Duration::days(step as i64),
                            rule: Text::parse("rule", "first-contact", Text::SHORT).unwrap(),
                        }),
                    )
                    .await
                    .unwrap();
                json!({"position": result.position})
            }
            6 => {
                let deal = open(&deals, &closed, step);
                closed.push(deal.clone());
                let outcome = if step % 20 == 6 { "won" } else { "lost" };
                client
                    .post(
                        &format!("/v1/opportunities/{deal}/close"),
                        json!({"outcome": outcome, "reason": "price"}),
                    )
                    .await
            }
            7 => {
                let deal = open(&deals, &closed, step + 2);
                client
                    .post(
                        &format!("/v1/opportunities/{deal}/owner"),
                        json!({"owner": owners[(step + 1) % 3]}),
                    )
                    .await
            }
            8 => {
                let deal = open(&deals, &closed, step + 3);
                client
                    .post(
                        &format!("/v1/opportunities/{deal}/activities"),
                        json!({"kind": "call", "summary": "called"}),
                    )
                    .await
            }
            _ if step == 29 => {
                let deal = closed.remove(0);
                client
                    .post(
                        &format!("/v1/opportunities/{deal}/reopen"),
                        json!({"stage": "contacted"}),
                    )
                    .await
            }
            _ => {
                let deal = open(&deals, &closed, step);
                client
                    .post(
                        &format!("/v1/opportunities/{deal}/close-date"),
                        json!({"expected_close_date": "2027-03-31"}),
                    )
                    .await
            }
        };
        let position = answer["position"].as_i64().unwrap();
        assert_eq!(position, harness.head().await, "nothing else writes");
        let mut answers = Vec::new();
        for path in queries(&deals) {
            let live = client.get(&format!("{path}min_position={position}")).await;
            answers.push((path, live));
        }
        captures.push(Capture {
            position,
            instant: Utc::now(),
            answers,
        });
        // Instants between captures fall between commits.
        tokio::time::sleep(Duration::from_millis(2)).await;
    }

    let client_db = harness.db.pool.get().await.unwrap();
    let snapshots: i64 = client_db
        .query_one("select count(*) from forecast_snapshots", &[])
        .await
        .unwrap()
        .get(0);
    assert!(snapshots >= 3, "{snapshots} snapshots");
    check_all(&client, &captures, &deals).await;

    projector.stop().await.unwrap();
    for projection in Projection::ALL {
        projector::rebuild(
            projection,
            &harness.store,
            &RebuildOptions {
                batch_size: 10,
                snapshot_every: SNAPSHOT_EVERY,
                ..Default::default()
            },
            &CancellationToken::new(),
            &mut |_| {},
        )
        .await
        .unwrap();
    }
    let rebuilt: i64 = client_db
        .query_one("select count(*) from forecast_snapshots", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(rebuilt, snapshots, "a rebuild writes the snapshots again");
    check_all(&client, &captures, &deals).await;

    projector::snapshot::drop_all(&harness.db.pool)
        .await
        .unwrap();
    check_all(&client, &captures, &deals).await;

    api_shutdown.cancel();
    publisher.stop().await;
    harness.finish().await;
}
