//! Forecasting from history: win rates, `probability=historical` and forecast accuracy, each
//! checked against a small dated history whose figures are worked out by hand below, the same
//! answers before and after later events are appended, and bad input refused naming the
//! parameter.
//!
//! The history, all in the default pipeline (new 10 %, contacted 20 %, quoted 50 %,
//! negotiation 75 %), EUR, owner alice; "n c q g" are the stages a deal went through:
//!
//! | deal | stages  | outcome | closed_at  |
//! |------|---------|---------|------------|
//! | D1   | n c q g | won     | 2025-06-01 |
//! | D2   | n c q g | won     | 2025-07-01 |
//! | D3   | n c q   | won     | 2025-08-01 |
//! | D4   | n c q g | lost    | 2025-09-01 |
//! | D5   | n c     | lost    | 2025-05-01 |
//! | D6   | n       | lost    | 2025-04-01 |
//! | D7   | n c q   | lost    | 2025-10-01 |
//! | D8   | n c q g | won     | 2024-11-01 (before every window below) |
//! | D9   | n c, lost 2025-03-01, reopened in c, q | won | 2025-11-01 |
//!
//! and three deals open on 2026-01-01: D10 (20,000, closing 2026-01-20; contacted on
//! 2025-11-15, negotiation on 2025-12-20, won on 2026-02-01), D11 (10,000, closing 2026-02-15;
//! created 2025-12-05, quoted 2025-12-15) and D12 (5,000, closing 2026-01-31; contacted on
//! 2025-10-10, its probability overridden to 90 on 2025-12-20).

use chrono::{DateTime, Duration, NaiveDate, SecondsFormat, Utc};
use commands::{CommandContext, OpportunityRequest};
use domain::opportunity::{NewOpportunity, OpportunityCommand};
use domain::values::{
    Amount, Currency, FollowUpId, FollowUpKind, OpportunityId, Outcome, PipelineSlug, Probability,
    StageName, Text, parse_owner,
};
use serde_json::Value;
use uuid::Uuid;

use crate::helpers::TestApp;

fn at(text: &str) -> DateTime<Utc> {
    format!("{text}T00:00:00Z").parse().unwrap()
}

fn dated(instant: DateTime<Utc>) -> CommandContext {
    let mut context = CommandContext::new("import:test");
    context.occurred_at = Some(instant);
    context
}

struct Writer<'a> {
    app: &'a TestApp,
}

impl Writer<'_> {
    async fn create(&self, created: &str, amount: i128, close: &str) -> OpportunityId {
        let id = OpportunityId(Uuid::now_v7());
        let deal = NewOpportunity {
            name: Text::parse("name", "deal", 100).unwrap(),
            lead_id: None,
            pipeline: PipelineSlug::default_pipeline(),
            stage: None,
            amount: Amount::parse(amount).unwrap(),
            currency: Currency::parse("EUR").unwrap(),
            expected_close_date: NaiveDate::parse_from_str(close, "%Y-%m-%d").unwrap(),
            owner: parse_owner("alice").unwrap(),
        };
        self.app
            .handler
            .create_opportunity(&dated(at(created)), id, deal)
            .await
            .unwrap();
        id
    }

    async fn send(&self, id: OpportunityId, instant: DateTime<Utc>, request: OpportunityRequest) {
        self.app
            .handler
            .handle_opportunity(&dated(instant), id, request)
            .await
            .unwrap();
    }

    async fn stage(&self, id: OpportunityId, instant: DateTime<Utc>, stage: &str) {
        let stage = StageName::parse(stage).unwrap();
        self.send(
            id,
            instant,
            OpportunityRequest::ChangeStage {
                stage,
                reason: None,
            },
        )
        .await;
    }

    async fn close(&self, id: OpportunityId, closed_at: DateTime<Utc>, outcome: Outcome) {
        let reason =
            (outcome == Outcome::Lost).then(|| Text::parse("reason", "lost", 100).unwrap());
        let close = OpportunityCommand::Close {
            outcome,
            reason,
            closed_at,
        };
        self.send(id, closed_at, OpportunityRequest::Other(close))
            .await;
    }

    /// A deal created 30 days before it closes, one day in each later stage of `path`.
    async fn closed(&self, path: &[&str], outcome: Outcome, closed: &str) {
        let closed_at = at(closed);
        let created = closed_at - Duration::days(30);
        let id = self
            .create(&created.date_naive().to_string(), 1_000, closed)
            .await;
        for (day, stage) in path.iter().enumerate().skip(1) {
            self.stage(id, created + Duration::days(day as i64), stage)
                .await;
        }
        self.close(id, closed_at, outcome).await;
    }
}

const FULL: [&str; 4] = ["new", "contacted", "quoted", "negotiation"];

/// Writes the history of the table above; answers D10, D11 and D12.
async fn write_history(app: &TestApp) -> (OpportunityId, OpportunityId, OpportunityId) {
    let writer = Writer { app };
    writer.closed(&FULL, Outcome::Won, "2025-06-01").await;
    writer.closed(&FULL, Outcome::Won, "2025-07-01").await;
    writer.closed(&FULL[..3], Outcome::Won, "2025-08-01").await;
    writer.closed(&FULL, Outcome::Lost, "2025-09-01").await;
    writer.closed(&FULL[..2], Outcome::Lost, "2025-05-01").await;
    writer.closed(&FULL[..1], Outcome::Lost, "2025-04-01").await;
    writer.closed(&FULL[..3], Outcome::Lost, "2025-10-01").await;
    writer.closed(&FULL, Outcome::Won, "2024-11-01").await;

    let d9 = writer.create("2025-02-01", 1_000, "2025-11-30").await;
    writer.stage(d9, at("2025-02-10"), "contacted").await;
    writer.close(d9, at("2025-03-01"), Outcome::Lost).await;
    let reopen = OpportunityRequest::Reopen {
        stage: Some(StageName::parse("contacted").unwrap()),
    };
    writer.send(d9, at("2025-03-10"), reopen).await;
    writer.stage(d9, at("2025-04-01"), "quoted").await;
    writer.close(d9, at("2025-11-01"), Outcome::Won).await;

    let d10 = writer.create("2025-11-01", 20_000, "2026-01-20").await;
    writer.stage(d10, at("2025-11-15"), "contacted").await;
    writer.stage(d10, at("2025-12-10"), "quoted").await;
    writer.stage(d10, at("2025-12-20"), "negotiation").await;
    let d11 = writer.create("2025-12-05", 10_000, "2026-02-15").await;
    writer.stage(d11, at("2025-12-15"), "quoted").await;
    let d12 = writer.create("2025-10-01", 5_000, "2026-01-31").await;
    writer.stage(d12, at("2025-10-10"), "contacted").await;
    let override_probability = OpportunityCommand::OverrideProbability {
        probability: Some(Probability::parse(90).unwrap()),
        forecast_category: None,
    };
    writer
        .send(
            d12,
            at("2025-12-20"),
            OpportunityRequest::Other(override_probability),
        )
        .await;
    // Written after everything else, so that D10 is open on 2026-01-01 only on the business
    // axis; the log order does not matter there.
    writer.close(d10, at("2026-02-01"), Outcome::Won).await;
    (d10, d11, d12)
}

/// `stage: (won, lost, historical_probability)` of a win-rates answer.
fn rates(answer: &Value) -> Vec<(String, u64, u64, u64)> {
    answer["stages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|stage| {
            (
                stage["stage"].as_str().unwrap().to_owned(),
                stage["won"].as_u64().unwrap(),
                stage["lost"].as_u64().unwrap(),
                stage["historical_probability"].as_u64().unwrap(),
            )
        })
        .collect()
}

fn row(stage: &str, won: u64, lost: u64, probability: u64) -> (String, u64, u64, u64) {
    (stage.to_owned(), won, lost, probability)
}

const T: &str = "2026-01-01T00:00:00Z";

#[tokio::test]
async fn win_rates_count_the_closes_in_the_window_with_the_prior() {
    let app = TestApp::spawn().await;
    write_history(&app).await;
    let answer = app
        .get(&format!(
            "/v1/analytics/win-rates?pipeline=default&as_of={T}&time=occurred"
        ))
        .await
        .assert_status(200)
        .json();
    assert_eq!(answer["pipeline"], "default");
    assert_eq!(answer["lookback"], "365d");
    assert_eq!(answer["prior_weight"], 5);
    // Window (2025-01-01, 2026-01-01]: D1-D7 and D9; D8 closed before it, D10 after it.
    // (100 × won + k × d) / (won + lost + k), k = 5, rounded half away from zero:
    // new:         won D1 D2 D3 D9, lost D4 D5 D6 D7: (400 + 50) / 13 = 34.6 -> 35
    // contacted:   won D1 D2 D3 D9, lost D4 D5 D7:    (400 + 100) / 12 = 41.7 -> 42
    // quoted:      won D1 D2 D3 D9, lost D4 D7:       (400 + 250) / 11 = 59.1 -> 59
    // negotiation: won D1 D2, lost D4:                (200 + 375) / 8 = 71.9 -> 72
    assert_eq!(
        rates(&answer),
        vec![
            row("new", 4, 4, 35),
            row("contacted", 4, 3, 42),
            row("quoted", 4, 2, 59),
            row("negotiation", 2, 1, 72),
        ]
    );
    assert_eq!(answer["stages"][3]["default_probability"], 75);

    // 200 days: (2025-06-15, 2026-01-01] keeps D2 D3 D9 won, D4 D7 lost.
    // new: (300 + 50) / 10 = 35; negotiation: won D2, lost D4: (100 + 375) / 7 = 67.9 -> 68.
    let shorter = app
        .get(&format!(
            "/v1/analytics/win-rates?pipeline=default&as_of={T}&time=occurred&lookback=200d"
        ))
        .await
        .assert_status(200)
        .json();
    let shorter = rates(&shorter);
    assert_eq!(shorter[0], row("new", 3, 2, 35));
    assert_eq!(shorter[3], row("negotiation", 1, 1, 68));
}

#[tokio::test]
async fn answers_at_an_instant_stay_the_same_when_later_events_are_appended() {
    let app = TestApp::spawn().await;
    let (_, d11, _) = write_history(&app).await;
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    let known = app
        .handler
        .now()
        .to_rfc3339_opts(SecondsFormat::Micros, true);
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    let queries = [
        format!("/v1/analytics/win-rates?pipeline=default&as_of={T}&time=occurred"),
        format!("/v1/analytics/win-rates?pipeline=default&as_of={known}"),
        format!("/v1/forecast?valid_at={T}&probability=historical"),
        format!("/v1/forecast?as_of={known}&probability=historical"),
        format!("/v1/pipelines/default/board?as_of={known}&probability=historical"),
        "/v1/analytics/forecast-accuracy?period=2025-Q4&currency=EUR&time=occurred".to_owned(),
    ];
    let mut before = Vec::new();
    for query in &queries {
        before.push(app.get(query).await.assert_status(200).json());
    }
    // Later: D11 won in March 2026, a deal closed after T on the business axis.
    let writer = Writer { app: &app };
    writer.close(d11, at("2026-03-01"), Outcome::Won).await;
    writer.closed(&FULL, Outcome::Lost, "2026-04-01").await;
    for (query, before) in queries.iter().zip(before) {
        let after = app.get(query).await.assert_status(200).json();
        assert_eq!(after, before, "{query}");
    }
}

/// `(period, weighted_amount)` of each forecast row.
fn weighted(forecast: &Value) -> Vec<(String, i64)> {
    forecast["rows"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|row| row["open_count"].as_i64().unwrap() > 0)
        .map(|row| {
            (
                row["period"].as_str().unwrap().to_owned(),
                row["weighted_amount"].as_i64().unwrap(),
            )
        })
        .collect()
}

#[tokio::test]
async fn the_historical_model_weighs_open_deals_with_their_stages_rates() {
    let app = TestApp::spawn().await;
    let (_, d11, _) = write_history(&app).await;
    // Open on 2026-01-01: D10 in negotiation (20,000), D11 quoted (10,000, February), D12
    // contacted (5,000) with its override of 90 %, which wins in both models.
    // Stage defaults: January 20,000 × 75 % + 5,000 × 90 % = 19,500; February 10,000 × 50 %.
    // Historical:     January 20,000 × 72 % + 4,500 = 18,900;        February 10,000 × 59 %.
    let stage = app
        .get(&format!("/v1/forecast?valid_at={T}"))
        .await
        .assert_status(200)
        .json();
    assert_eq!(
        weighted(&stage),
        vec![
            ("2026-01".to_owned(), 19_500),
            ("2026-02".to_owned(), 5_000)
        ]
    );
    let historical = app
        .get(&format!("/v1/forecast?valid_at={T}&probability=historical"))
        .await
        .assert_status(200)
        .json();
    assert_eq!(
        weighted(&historical),
        vec![
            ("2026-01".to_owned(), 18_900),
            ("2026-02".to_owned(), 5_900)
        ]
    );
    assert_eq!(historical["position"], stage["position"]);

    let board = app
        .get(&format!(
            "/v1/pipelines/default/board?valid_at={T}&probability=historical"
        ))
        .await
        .assert_status(200)
        .json();
    let column = |name: &str| {
        board["columns"]
            .as_array()
            .unwrap()
            .iter()
            .find(|column| column["stage"] == name)
            .unwrap()["totals"][0]["weighted_amount"]
            .as_i64()
            .unwrap()
    };
    assert_eq!(
        [column("contacted"), column("quoted"), column("negotiation")],
        [4_500, 5_900, 14_400]
    );

    let deal = app
        .get(&format!(
            "/v1/opportunities/{}?valid_at={T}&probability=historical",
            d11.0
        ))
        .await
        .assert_status(200)
        .json();
    assert_eq!(deal["probability"], 59);

    // One trend point on 2026-01-01, the first quarter: 18,900 + 5,900.
    let trend = app
        .get(
            "/v1/forecast/trend?period=2026-Q1&currency=EUR&from=2026-01-01&to=2026-01-01\
             &time=occurred&probability=historical",
        )
        .await
        .assert_status(200)
        .json();
    assert_eq!(trend["points"][0]["weighted_amount"], 24_800);

    // Live, the answer is the one as of now: the same rows as with `as_of` just before.
    let known = app
        .handler
        .now()
        .to_rfc3339_opts(SecondsFormat::Micros, true);
    let live = app
        .get("/v1/forecast?probability=historical")
        .await
        .assert_status(200)
        .json();
    let then = app
        .get(&format!(
            "/v1/forecast?probability=historical&as_of={known}"
        ))
        .await
        .assert_status(200)
        .json();
    assert_eq!(live["rows"], then["rows"]);
}

#[tokio::test]
async fn forecast_accuracy_compares_each_lead_time_with_what_was_won() {
    let app = TestApp::spawn().await;
    write_history(&app).await;
    // 2026-Q1, won as known now: D10, 20,000.
    // Lead 0 (2026-01-01): stage 15,000 + 4,500 + 5,000 = 24,500, error 4,500, 22.5 %; commit
    // D10 20,000; best case + D11 quoted = 30,000. Historical 14,400 + 4,500 + 5,900 = 24,800,
    // error 4,800, 24 %.
    // Lead 30 (2025-12-02): D10 and D12 contacted, no override yet, D11 not created: stage
    // 4,000 + 1,000 = 5,000, error -15,000, 75 %. Historical: contacted's rate then is the
    // same 42 % (no close between 2025-11-01 and 2025-12-02): 8,400 + 2,100 = 10,500, error
    // -9,500, 47.5 %.
    let query = |probability: &str| {
        format!(
            "/v1/analytics/forecast-accuracy?period=2026-Q1&currency=EUR&lead_days=0,30\
             &time=occurred&probability={probability}"
        )
    };
    let stage = app.get(&query("stage")).await.assert_status(200).json();
    assert_eq!(stage["period"], "2026-Q1");
    assert_eq!(stage["probability"], "stage");
    let figures = |answer: &Value| -> Vec<(i64, i64, i64, i64, i64, f64)> {
        answer["rows"]
            .as_array()
            .unwrap()
            .iter()
            .map(|row| {
                (
                    row["lead_days"].as_i64().unwrap(),
                    row["weighted_amount"].as_i64().unwrap(),
                    row["commit"].as_i64().unwrap(),
                    row["best_case"].as_i64().unwrap(),
                    row["error"].as_i64().unwrap(),
                    row["abs_pct_error"].as_f64().unwrap(),
                )
            })
            .collect()
    };
    assert_eq!(
        figures(&stage),
        vec![
            (0, 24_500, 20_000, 30_000, 4_500, 22.5),
            (30, 5_000, 0, 0, -15_000, 75.0)
        ]
    );
    assert_eq!(stage["rows"][0]["actual_closed_won"], 20_000);
    assert_eq!(stage["rows"][1]["as_of"], "2025-12-02T00:00:00Z");
    let historical = app
        .get(&query("historical"))
        .await
        .assert_status(200)
        .json();
    assert_eq!(
        figures(&historical),
        vec![
            (0, 24_800, 20_000, 30_000, 4_800, 24.0),
            (30, 10_500, 0, 0, -9_500, 47.5)
        ]
    );
    // Nothing won in a period: no percentage.
    let empty = app
        .get("/v1/analytics/forecast-accuracy?period=2024-01&currency=EUR&lead_days=0")
        .await
        .assert_status(200)
        .json();
    assert_eq!(empty["rows"][0]["abs_pct_error"], Value::Null);
}

#[tokio::test]
async fn bad_analytics_input_is_refused_naming_the_parameter() {
    let app = TestApp::spawn().await;
    app.get("/v1/analytics/win-rates?pipeline=nowhere")
        .await
        .assert_problem(404, &["nowhere"]);
    app.get("/v1/analytics/win-rates?pipeline=default&lookback=a%20year")
        .await
        .assert_problem(400, &["lookback"]);
    app.get("/v1/analytics/win-rates?pipeline=default&as_of=yesterday")
        .await
        .assert_problem(400, &["as_of"]);
    app.get("/v1/analytics/win-rates")
        .await
        .assert_problem(400, &["pipeline"]);
    let accuracy = "/v1/analytics/forecast-accuracy?currency=EUR";
    app.get(&format!("{accuracy}&period=2026-Q3&lead_days=0,thirty"))
        .await
        .assert_problem(400, &["lead_days"]);
    app.get(&format!("{accuracy}&period=2026-Q3&lead_days=-5"))
        .await
        .assert_problem(400, &["lead_days"]);
    for period in ["2026-Q5", "2026-7", "Q3-2026", "2026"] {
        app.get(&format!("{accuracy}&period={period}"))
            .await
            .assert_problem(422, &["period"]);
    }
    app.get(&format!("{accuracy}&period=2026-Q3&probability=gut"))
        .await
        .assert_problem(422, &["probability"]);
    app.get("/v1/forecast?probability=gut")
        .await
        .assert_problem(422, &["probability"]);
}

#[tokio::test]
async fn slippage_lists_the_deals_moved_out_of_the_period() {
    let app = TestApp::spawn().await;
    let (_, d11, _) = write_history(&app).await;
    // D11 was expected on 2026-02-15 when 2026-Q1 began; on 2026-02-10 it moves to April.
    // D10 (won in February) and D12 (still expected 2026-01-31) stay in the quarter.
    let writer = Writer { app: &app };
    let change = OpportunityCommand::ChangeCloseDate {
        expected_close_date: NaiveDate::from_ymd_opt(2026, 4, 15).unwrap(),
    };
    writer
        .send(d11, at("2026-02-10"), OpportunityRequest::Other(change))
        .await;
    let slippage = |as_of: &str| {
        format!("/v1/analytics/slippage?period=2026-Q1&time=occurred&as_of={as_of}T00:00:00Z")
    };
    let answer = app
        .get(&slippage("2026-03-15"))
        .await
        .assert_status(200)
        .json();
    let deals = answer["deals"].as_array().unwrap();
    assert_eq!(deals.len(), 1, "{answer}");
    assert_eq!(deals[0]["opportunity_id"], d11.0.to_string());
    assert_eq!(deals[0]["expected_close_date_at_start"], "2026-02-15");
    assert_eq!(deals[0]["expected_close_date"], "2026-04-15");
    assert_eq!(deals[0]["amount"], 10_000);
    assert_eq!(deals[0]["owner"], "alice");
    // Before the move, and before the quarter began: nothing had slipped.
    for as_of in ["2026-02-01", "2025-12-01"] {
        let answer = app.get(&slippage(as_of)).await.assert_status(200).json();
        assert_eq!(answer["deals"], serde_json::json!([]), "{as_of}");
    }
    app.get("/v1/analytics/slippage?period=2026-13")
        .await
        .assert_problem(422, &["period"]);
}

#[tokio::test]
async fn the_work_queue_puts_the_largest_amount_at_stake_first() {
    let app = TestApp::spawn().await;
    let (_, d11, d12) = write_history(&app).await;
    // Open now: D11 (10,000 quoted: 5,000 at stake) and D12 (5,000 at its override of 90 %:
    // 4,500), both expected to close in early 2026, which has passed. D12 also has a
    // follow-up whose time has come; D11 one still to come, which is not listed.
    let writer = Writer { app: &app };
    let due = at("2026-03-01");
    for (deal, due_at) in [(d12, due), (d11, app.handler.now() + Duration::days(3))] {
        let schedule = OpportunityCommand::ScheduleFollowUp {
            follow_up_id: FollowUpId(Uuid::now_v7()),
            kind: FollowUpKind::parse("call-back").unwrap(),
            due_at,
            rule: Text::parse("rule", "call-back", Text::SHORT).unwrap(),
        };
        writer
            .send(deal, at("2026-02-20"), OpportunityRequest::Other(schedule))
            .await;
    }
    let queue = app.get("/v1/work-queue").await.assert_status(200).json();
    let items: Vec<(String, &str, i64)> = queue["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|item| {
            (
                item["opportunity_id"].as_str().unwrap().to_owned(),
                item["reason"].as_str().unwrap(),
                item["weighted_amount"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        items,
        vec![
            (d11.0.to_string(), "close-date-passed", 5_000),
            (d12.0.to_string(), "close-date-passed", 4_500),
            (d12.0.to_string(), "follow-up-due", 4_500),
        ]
    );
    assert_eq!(queue["items"][2]["due_at"], "2026-03-01T00:00:00Z");
    assert!(queue["items"][0].get("due_at").is_none());
    let bob = app
        .get("/v1/work-queue?owner=bob")
        .await
        .assert_status(200)
        .json();
    assert_eq!(bob["items"], serde_json::json!([]));
}

#[tokio::test]
async fn the_funnel_of_2025_follows_each_stint() {
    let app = TestApp::spawn().await;
    write_history(&app).await;
    let answer = app
        .get("/v1/analytics/funnel?pipeline=default&from=2025-01-01&to=2025-12-31&currency=EUR")
        .await
        .assert_status(200)
        .json();
    // Each deal's latest stint in a stage begun in 2025, and how it had ended by 2026-01-01
    // (D8 is all 2024; D10's win is 2026):
    // new:         D1-D7, D9-D12 entered (11); D6 lost from it, the rest moved on. Won by the
    //              end: D1 D2 D3 D9, 4 / 11 = 36.4 %. Stints: 1 day for D1-D5 and D7, D9 9,
    //              D10 14, D11 10, D12 9, D6 30: median 1.
    // contacted:   D1-D5, D7, D9 (reopened into it), D10, D12 (9); D5 lost, D12 still there,
    //              7 moved on; won 4 / 9 = 44.4 %. Stints: 1 × 5, D9 19 and 22, D10 25, D5 29:
    //              median 1.
    // quoted:      D1 D2 D3 D4 D7 D9 D10 D11 (8); D3 and D9 won from it, D7 lost, D11 still
    //              there, 4 moved on; won 4 / 8 = 50 %. Stints: 1, 1, 1, D10 10, D3 28, D7 28,
    //              D9 214: median 10.
    // negotiation: D1 D2 D4 D10 (4); D1 D2 won, D4 lost, D10 open; 50 %; 27 days each.
    let stages: Vec<(String, [u64; 5], f64, f64)> = answer["stages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|stage| {
            let count = |field: &str| stage[field].as_u64().unwrap();
            (
                stage["stage"].as_str().unwrap().to_owned(),
                [
                    count("entered"),
                    count("advanced"),
                    count("won"),
                    count("lost"),
                    count("open"),
                ],
                stage["conversion_to_won_pct"].as_f64().unwrap(),
                stage["median_days_in_stage"].as_f64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        stages,
        vec![
            ("new".to_owned(), [11, 10, 0, 1, 0], 36.4, 1.0),
            ("contacted".to_owned(), [9, 7, 0, 1, 1], 44.4, 1.0),
            ("quoted".to_owned(), [8, 4, 2, 1, 1], 50.0, 10.0),
            ("negotiation".to_owned(), [4, 0, 2, 1, 1], 50.0, 27.0),
        ]
    );
    // Closed in 2025: D1 D2 D3 D9 won (D9's latest close), D4-D7 lost: 50 %. Cycles of the
    // won: 30, 30, 30 and D9's 273 days: median 30. Velocity: 3 deals open at the end (D10 D11
    // D12) × 1,000 average won × 0.5 ÷ 90.75 average cycle days = 16.5 -> 17 a day.
    assert_eq!(answer["win_rate_pct"], 50.0);
    assert_eq!(answer["median_cycle_days"], 30.0);
    assert_eq!(
        answer["velocity"],
        serde_json::json!([{"currency": "EUR", "per_day": 17.0}])
    );
    assert_eq!(
        answer["leads"],
        serde_json::json!({"captured": 0, "qualified": 0, "disqualified": 0, "converted": 0})
    );

    let nobody = app
        .get("/v1/analytics/funnel?pipeline=default&from=2025-01-01&to=2025-12-31&owner=bob")
        .await
        .assert_status(200)
        .json();
    assert_eq!(nobody["stages"][0]["entered"], 0);
    assert_eq!(nobody["stages"][0]["conversion_to_won_pct"], Value::Null);
    app.get("/v1/analytics/funnel?pipeline=nowhere&from=2025-01-01&to=2025-12-31")
        .await
        .assert_problem(404, &["nowhere"]);
    app.get("/v1/analytics/funnel?pipeline=default&from=January&to=2025-12-31")
        .await
        .assert_problem(422, &["from"]);
}
