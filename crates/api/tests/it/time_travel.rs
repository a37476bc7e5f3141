//! The time-travel parameters refuse what they cannot answer, each with a problem that names the
//! parameter, and `valid_at` answers equal hand-computed folds of a small dated history. (That
//! answers as of an instant equal the live ones is checked in the projector's tests, where the
//! projections run.)

use chrono::{DateTime, Duration, NaiveDate, Utc};
use commands::{CommandContext, OpportunityRequest};
use domain::opportunity::{NewOpportunity, OpportunityCommand};
use domain::values::{
    Amount, Currency, OpportunityId, Outcome, PipelineSlug, StageName, Text, parse_owner,
};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::helpers::TestApp;

/// Every read endpoint that takes `as_of`, with the separator before further parameters.
fn endpoints(deal: &str) -> Vec<String> {
    vec![
        "/v1/pipelines/default/board?".to_owned(),
        "/v1/forecast?".to_owned(),
        "/v1/opportunities?".to_owned(),
        format!("/v1/opportunities/{deal}?"),
        "/v1/follow-ups?".to_owned(),
    ]
}

#[tokio::test]
async fn an_instant_in_the_future_is_refused() {
    let app = TestApp::spawn().await;
    let deal = app.create_deal().await;
    let future = (Utc::now() + Duration::hours(1)).format("%Y-%m-%dT%H:%M:%SZ");
    for path in endpoints(&deal) {
        app.get(&format!("{path}as_of={future}"))
            .await
            .assert_problem(422, &["as_of", "in the future"]);
    }
    let head = app.store.head_position().await.unwrap();
    for path in endpoints(&deal) {
        app.get(&format!("{path}as_of_position={}", head + 1))
            .await
            .assert_problem(
                422,
                &["as_of_position", "beyond the last committed position"],
            );
        app.get(&format!("{path}as_of_position=-1"))
            .await
            .assert_problem(422, &["as_of_position", "negative"]);
    }
}

#[tokio::test]
async fn unparsable_instants_and_positions_are_bad_requests_naming_the_parameter() {
    let app = TestApp::spawn().await;
    let deal = app.create_deal().await;
    for path in endpoints(&deal) {
        for instant in [
            "yesterday",
            "2026-13-01T00:00:00Z",
            "2026-11-26",
            "2026-11-26T10:00:00",
        ] {
            app.get(&format!("{path}as_of={instant}"))
                .await
                .assert_problem(400, &["as_of", "RFC 3339"]);
        }
        app.get(&format!("{path}as_of="))
            .await
            .assert_problem(400, &["as_of", "RFC 3339"]);
        app.get(&format!("{path}as_of_position=ten"))
            .await
            .assert_problem(400, &["as_of_position", "whole number"]);
    }
}

#[tokio::test]
async fn as_of_and_as_of_position_together_are_refused() {
    let app = TestApp::spawn().await;
    let deal = app.create_deal().await;
    for path in endpoints(&deal) {
        app.get(&format!(
            "{path}as_of=2026-01-01T00:00:00Z&as_of_position=1"
        ))
        .await
        .assert_problem(422, &["as_of", "as_of_position", "not both"]);
    }
}

#[tokio::test]
async fn answers_from_history_say_what_they_cover() {
    let app = TestApp::spawn().await;
    let deal = app.create_deal().await;
    let head = app.store.head_position().await.unwrap();
    let now = Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    let forecast = app
        .get(&format!("/v1/forecast?as_of={}", now.replace('+', "%2B")))
        .await
        .assert_status(200)
        .json();
    assert_eq!(forecast["position"], head);
    let as_of = chrono::DateTime::parse_from_rfc3339(forecast["as_of"].as_str().unwrap()).unwrap();
    assert_eq!(as_of, chrono::DateTime::parse_from_rfc3339(&now).unwrap());
    assert_eq!(forecast["rows"].as_array().unwrap().len(), 1, "{forecast}");
    let one = app
        .get(&format!("/v1/opportunities/{deal}?as_of_position={head}"))
        .await
        .assert_status(200)
        .json();
    assert_eq!(one["as_of_position"], head);
    assert_eq!(one["id"], deal);
    let before = app
        .get("/v1/opportunities?as_of=2001-01-01T00:00:00Z")
        .await
        .assert_status(200)
        .json();
    assert_eq!(before["opportunities"], serde_json::json!([]));
    assert_eq!(before["position"], 0);
}

#[tokio::test]
async fn trend_refuses_bad_input() {
    let app = TestApp::spawn().await;
    let base = "/v1/forecast/trend?period=2026-Q4&currency=EUR";
    app.get(&format!("{base}&from=2020-01-01&to=2026-12-31"))
        .await
        .assert_problem(422, &["more than 1000"]);
    app.get(&format!("{base}&from=2026-10-01&to=2026-09-01"))
        .await
        .assert_problem(422, &["to", "before"]);
    app.get(&format!("{base}&from=2026-10-01&to=2026-12-31&step=hour"))
        .await
        .assert_problem(422, &["step"]);
    app.get("/v1/forecast/trend?period=2026-Q5&currency=EUR&from=2026-10-01&to=2026-10-02")
        .await
        .assert_problem(422, &["period"]);
    app.get("/v1/forecast/trend?period=2026-Q4&from=2026-10-01&to=2026-10-02")
        .await
        .assert_problem(400, &["currency", "required"]);
    app.get(&format!("{base}&from=2026-10-01&to=someday"))
        .await
        .assert_problem(422, &["to"]);
}

#[tokio::test]
async fn trend_has_one_point_per_step_up_to_now() {
    let app = TestApp::spawn().await;
    app.create_deal().await;
    let today = Utc::now().date_naive();
    let from = today - Duration::days(14);
    let trend = app
        .get(&format!(
            "/v1/forecast/trend?period={}&currency=EUR&from={from}&to={}&step=week",
            today.format("%Y-%m"),
            today + Duration::days(30)
        ))
        .await
        .assert_status(200)
        .json();
    let points = trend["points"].as_array().unwrap();
    assert_eq!(points.len(), 3, "{trend}");
    assert_eq!(points[0]["at"], format!("{from}T00:00:00Z"));
    assert_eq!(trend["step"], "week");
    assert_eq!(trend["time"], "recorded");
}

/// A small history written with business dates through the command handler, as an import
/// writes it: deal A's events first, then deal B's, so B's early events sit after A's late ones
/// in the log. The positions of A's creation, stage move, amount change and close, then of B's
/// creation and stage move, and the instant between the two deals' writes.
struct Dated {
    a: OpportunityId,
    b: OpportunityId,
    positions: [i64; 6],
    between: DateTime<Utc>,
}

fn at(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text)
        .unwrap()
        .with_timezone(&Utc)
}

fn dated(occurred_at: &str) -> CommandContext {
    let mut context = CommandContext::new("import:test");
    context.occurred_at = Some(at(occurred_at));
    context
}

fn new_deal(amount: i128, close: &str, owner: &str) -> NewOpportunity {
    NewOpportunity {
        name: Text::parse("name", "deal", 100).unwrap(),
        lead_id: None,
        pipeline: PipelineSlug::default_pipeline(),
        stage: None,
        amount: Amount::parse(amount).unwrap(),
        currency: Currency::parse("EUR").unwrap(),
        expected_close_date: NaiveDate::parse_from_str(close, "%Y-%m-%d").unwrap(),
        owner: parse_owner(owner).unwrap(),
    }
}

async fn write_dated_history(app: &TestApp) -> Dated {
    let handler = &app.handler;
    let (a, b) = (OpportunityId(Uuid::now_v7()), OpportunityId(Uuid::now_v7()));
    let stage = |name: &str| OpportunityRequest::ChangeStage {
        stage: StageName::parse(name).unwrap(),
        reason: None,
    };
    let mut positions = Vec::new();
    let created = handler
        .create_opportunity(
            &dated("2025-01-10T09:00:00Z"),
            a,
            new_deal(10_000, "2025-03-31", "alice"),
        )
        .await
        .unwrap();
    positions.push(created.position);
    for (occurred_at, request) in [
        ("2025-02-01T09:00:00Z", stage("quoted")),
        (
            "2025-03-01T09:00:00Z",
            OpportunityRequest::Other(OpportunityCommand::ChangeAmount {
                amount: Amount::parse(12_345).unwrap(),
                currency: Currency::parse("EUR").unwrap(),
            }),
        ),
        (
            "2025-03-20T09:00:00Z",
            OpportunityRequest::Other(OpportunityCommand::Close {
                outcome: Outcome::Won,
                reason: None,
                closed_at: at("2025-03-20T09:00:00Z"),
            }),
        ),
    ] {
        let result = handler
            .handle_opportunity(&dated(occurred_at), a, request)
            .await
            .unwrap();
        positions.push(result.position);
    }
    // recorded_at has microseconds; a pause makes the instant fall strictly between the deals.
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    let between = handler.now();
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    let created = handler
        .create_opportunity(
            &dated("2025-02-15T09:00:00Z"),
            b,
            new_deal(20_000, "2025-03-15", "bob"),
        )
        .await
        .unwrap();
    positions.push(created.position);
    let moved = handler
        .handle_opportunity(&dated("2025-03-10T09:00:00Z"), b, stage("negotiation"))
        .await
        .unwrap();
    positions.push(moved.position);
    Dated {
        a,
        b,
        positions: positions.try_into().unwrap(),
        between,
    }
}

/// One forecast row as the answer gives it: owner, then open_count, pipeline_amount,
/// weighted_amount, best_case, commit, closed_won, closed_lost.
fn rows(forecast: &Value) -> Vec<(String, [i64; 7])> {
    forecast["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|row| {
            let figure = |name: &str| row[name].as_i64().unwrap();
            (
                row["owner"].as_str().unwrap().to_owned(),
                [
                    figure("open_count"),
                    figure("pipeline_amount"),
                    figure("weighted_amount"),
                    figure("best_case"),
                    figure("commit"),
                    figure("closed_won"),
                    figure("closed_lost"),
                ],
            )
        })
        .collect()
}

#[tokio::test]
async fn valid_at_folds_what_occurred_by_then_whatever_its_place_in_the_log() {
    let app = TestApp::spawn().await;
    let history = write_dated_history(&app).await;
    let [_, _, _, _, b_created, b_moved] = history.positions;

    // 2025-02-20: A was created (10 000, new) and moved to quoted (50 %, best_case); B was
    // created (20 000, new: 10 %, pipeline). A's amount change and close, and B's move, came
    // later. Both expect to close in March 2025.
    // A: open 1, pipeline 10 000, weighted 10 000 × 50 % = 5 000, best_case 10 000.
    // B: open 1, pipeline 20 000, weighted 20 000 × 10 % = 2 000, nothing in best_case or commit.
    let forecast = app
        .get("/v1/forecast?valid_at=2025-02-20T00:00:00Z")
        .await
        .assert_status(200)
        .json();
    assert_eq!(
        rows(&forecast),
        vec![
            ("alice".to_owned(), [1, 10_000, 5_000, 10_000, 0, 0, 0]),
            ("bob".to_owned(), [1, 20_000, 2_000, 0, 0, 0, 0]),
        ],
        "{forecast}"
    );
    assert_eq!(forecast["rows"][0]["period"], "2025-03");
    assert_eq!(forecast["valid_at"], "2025-02-20T00:00:00Z");
    assert!(forecast.get("as_of").is_none(), "{forecast}");
    // B's creation is the last event that occurred by then, though A's later ones precede it.
    assert_eq!(forecast["position"], b_created);

    // 2025-03-15: A's amount is 12 345 (still quoted), B is in negotiation (75 %, commit).
    // A: weighted 12 345 × 50 % = 6 172.5, rounded half away from zero to 6 173.
    // B: weighted 20 000 × 75 % = 15 000; commit 20 000, so best_case 20 000 too.
    let forecast = app
        .get("/v1/forecast?valid_at=2025-03-15T00:00:00Z")
        .await
        .assert_status(200)
        .json();
    assert_eq!(
        rows(&forecast),
        vec![
            ("alice".to_owned(), [1, 12_345, 6_173, 12_345, 0, 0, 0]),
            ("bob".to_owned(), [1, 20_000, 15_000, 20_000, 20_000, 0, 0]),
        ],
        "{forecast}"
    );
    assert_eq!(forecast["position"], b_moved);

    // 2025-04-01: A was won on 2025-03-20 (closed_won 12 345, which counts in commit and
    // best_case, in March by its close date); B unchanged.
    let forecast = app
        .get("/v1/forecast?valid_at=2025-04-01T00:00:00Z&period=quarter")
        .await
        .assert_status(200)
        .json();
    assert_eq!(
        rows(&forecast),
        vec![
            ("alice".to_owned(), [0, 0, 0, 12_345, 12_345, 12_345, 0]),
            ("bob".to_owned(), [1, 20_000, 15_000, 20_000, 20_000, 0, 0]),
        ],
        "{forecast}"
    );
    assert_eq!(forecast["rows"][0]["period"], "2025-Q1");
    assert_eq!(forecast["position"], b_moved);

    // The board on 2025-02-20: B in new, A in quoted.
    let board = app
        .get("/v1/pipelines/default/board?valid_at=2025-02-20T00:00:00Z")
        .await
        .assert_status(200)
        .json();
    let column = |stage: &str| {
        board["columns"]
            .as_array()
            .unwrap()
            .iter()
            .find(|column| column["stage"] == stage)
            .unwrap()["totals"]
            .clone()
    };
    assert_eq!(
        column("new"),
        json!([{"currency": "EUR", "count": 1, "amount": 20_000, "weighted_amount": 2_000}])
    );
    assert_eq!(
        column("quoted"),
        json!([{"currency": "EUR", "count": 1, "amount": 10_000, "weighted_amount": 5_000}])
    );

    // Deal A on 2025-02-20, with its business times: created 2025-01-10T09:00, in quoted since
    // 2025-02-01T09:00. Time in new: 22 days = 1 900 800 s; in quoted up to 2025-02-20T00:00:
    // 18 days 15 hours = 1 609 200 s.
    let deal = app
        .get(&format!(
            "/v1/opportunities/{}?valid_at=2025-02-20T00:00:00Z",
            history.a
        ))
        .await
        .assert_status(200)
        .json();
    assert_eq!(deal["stage"], "quoted");
    assert_eq!(deal["amount"], 10_000);
    assert_eq!(deal["entered_stage_at"], "2025-02-01T09:00:00Z");
    assert_eq!(
        deal["time_in_stage"],
        json!({"new": 1_900_800, "quoted": 1_609_200})
    );
    assert_eq!(deal["as_of_position"], b_created);
    // B did not exist yet on 2025-02-01.
    app.get(&format!(
        "/v1/opportunities/{}?valid_at=2025-02-01T00:00:00Z",
        history.b
    ))
    .await
    .assert_status(404);
    let list = app
        .get("/v1/opportunities?valid_at=2025-02-01T00:00:00Z")
        .await
        .assert_status(200)
        .json();
    assert_eq!(list["opportunities"].as_array().unwrap().len(), 1);
    assert_eq!(list["opportunities"][0]["id"], history.a.to_string());

    // Before anything occurred: empty, position 0.
    let empty = app
        .get("/v1/forecast?valid_at=2024-01-01T00:00:00Z")
        .await
        .assert_status(200)
        .json();
    assert_eq!(empty["rows"], json!([]));
    assert_eq!(empty["position"], 0);
}

#[tokio::test]
async fn valid_at_with_as_of_folds_what_was_known_then() {
    let app = TestApp::spawn().await;
    let history = write_dated_history(&app).await;
    let [_, _, a_amount, _, _, _] = history.positions;
    let between = history
        .between
        .to_rfc3339_opts(chrono::SecondsFormat::Micros, true);

    // Known at `between`: A's four events only. Valid at 2025-03-15: A created, quoted, amount
    // 12 345, not yet won. B, written later, is not known.
    // A: open 1, pipeline 12 345, weighted 6 173 (6 172.5 rounded away from zero), best_case
    // 12 345.
    let forecast = app
        .get(&format!(
            "/v1/forecast?valid_at=2025-03-15T00:00:00Z&as_of={between}"
        ))
        .await
        .assert_status(200)
        .json();
    assert_eq!(
        rows(&forecast),
        vec![("alice".to_owned(), [1, 12_345, 6_173, 12_345, 0, 0, 0])],
        "{forecast}"
    );
    assert_eq!(forecast["position"], a_amount);
    assert_eq!(forecast["valid_at"], "2025-03-15T00:00:00Z");
    let as_of = DateTime::parse_from_rfc3339(forecast["as_of"].as_str().unwrap()).unwrap();
    assert_eq!(as_of, history.between);

    // The same with the position A's close was written at: B is not known either.
    let [_, _, _, a_closed, _, _] = history.positions;
    let by_position = app
        .get(&format!(
            "/v1/forecast?valid_at=2025-03-15T00:00:00Z&as_of_position={a_closed}"
        ))
        .await
        .assert_status(200)
        .json();
    assert_eq!(rows(&by_position), rows(&forecast));

    // B is unknown at `between`, whatever the business time.
    app.get(&format!(
        "/v1/opportunities/{}?valid_at=2025-03-15T00:00:00Z&as_of={between}",
        history.b
    ))
    .await
    .assert_status(404);
}

#[tokio::test]
async fn valid_at_in_the_future_or_unparsable_is_refused_naming_it() {
    let app = TestApp::spawn().await;
    let deal = app.create_deal().await;
    let future = (Utc::now() + Duration::hours(1)).format("%Y-%m-%dT%H:%M:%SZ");
    for path in endpoints(&deal) {
        app.get(&format!("{path}valid_at={future}"))
            .await
            .assert_problem(422, &["valid_at", "in the future"]);
        for instant in ["yesterday", "2026-11-26", ""] {
            app.get(&format!("{path}valid_at={instant}"))
                .await
                .assert_problem(400, &["valid_at", "RFC 3339"]);
        }
    }
}

#[tokio::test]
async fn trend_by_occurred_at_equals_valid_at_forecasts() {
    let app = TestApp::spawn().await;
    write_dated_history(&app).await;
    let trend = app
        .get(
            "/v1/forecast/trend?period=2025-Q1&currency=EUR&from=2025-01-06&to=2025-04-07\
             &step=week&time=occurred",
        )
        .await
        .assert_status(200)
        .json();
    assert_eq!(trend["time"], "occurred");
    let points = trend["points"].as_array().unwrap();
    assert_eq!(points.len(), 14, "{trend}");
    let figures = [
        "open_count",
        "pipeline_amount",
        "weighted_amount",
        "best_case",
        "commit",
        "closed_won",
        "closed_lost",
    ];
    for point in points {
        let at = point["at"].as_str().unwrap();
        let forecast = app
            .get(&format!(
                "/v1/forecast?period=quarter&currency=EUR&valid_at={at}"
            ))
            .await
            .assert_status(200)
            .json();
        for figure in figures {
            let sum: i64 = forecast["rows"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|row| row["period"] == "2025-Q1")
                .map(|row| row[figure].as_i64().unwrap())
                .sum();
            assert_eq!(point[figure], sum, "{figure} at {at}: {point} {forecast}");
        }
        assert_eq!(point["position"], forecast["position"], "at {at}");
    }
    // The first point precedes every event; the last one follows them all: A won (12 345),
    // B in negotiation (20 000 committed, 15 000 weighted).
    assert_eq!(points[0]["position"], 0);
    let last = &points[13];
    assert_eq!(last["closed_won"], 12_345);
    assert_eq!(last["commit"], 32_345);
    assert_eq!(last["weighted_amount"], 15_000);
}
