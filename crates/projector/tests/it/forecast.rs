//! Forecast and board arithmetic against hand-computed figures: weighted amounts rounded per deal
//! (halves away from zero), categories, the move of a closed deal to its close period, and
//! currency separation. First on the pure rules, then the same scenario through SQL.

use chrono::{DateTime, NaiveDate, TimeZone, Utc};
use commands::{CommandContext, OpportunityRequest};
use domain::codec;
use domain::opportunity::{OpportunityCommand, OpportunityCreated, OpportunityEvent};
use domain::values::{
    Amount, Currency, ForecastCategory, OpportunityId, Outcome, PipelineSlug, Probability,
    StageName,
};
use eventstore::RecordedEvent;
use projector::Projection;
use projector::rules::{Granularity, ReadModel};
use uuid::Uuid;

use crate::support::{Harness, history::text};

type Row = (String, String, [i128; 7]);

/// (period, currency, [open_count, pipeline_amount, weighted_amount, best_case, commit,
/// closed_won, closed_lost]) for owner alice, pipeline default.
fn rows(model: &ReadModel, granularity: Granularity) -> Vec<Row> {
    model
        .forecast_by(granularity)
        .into_iter()
        .map(|((period, _, _, currency), f)| {
            (
                period,
                currency,
                [
                    f.open_count,
                    f.pipeline_amount,
                    f.weighted_amount,
                    f.best_case,
                    f.commit,
                    f.closed_won,
                    f.closed_lost,
                ],
            )
        })
        .collect()
}

fn row(period: &str, currency: &str, figures: [i128; 7]) -> Row {
    (period.to_owned(), currency.to_owned(), figures)
}

struct Builder {
    events: Vec<RecordedEvent>,
    versions: std::collections::HashMap<Uuid, i64>,
}

impl Builder {
    fn push(&mut self, id: Uuid, event: OpportunityEvent) {
        let version = self.versions.entry(id).or_default();
        *version += 1;
        let (event_type, data) = codec::encode(&event);
        let position = self.events.len() as i64 + 1;
        self.events.push(RecordedEvent {
            event_id: Uuid::now_v7(),
            stream_id: format!("opportunity-{id}"),
            stream_version: *version,
            position,
            event_type,
            schema_version: 1,
            recorded_at: Utc.with_ymd_and_hms(2026, 6, 1, 0, 0, 0).unwrap()
                + chrono::Duration::minutes(position),
            occurred_at: Utc.with_ymd_and_hms(2026, 6, 1, 0, 0, 0).unwrap()
                + chrono::Duration::minutes(position),
            data,
            metadata: serde_json::json!({}),
        });
    }
}

fn created(
    stage: &str,
    percent: i128,
    category: ForecastCategory,
    amount: i128,
    currency: &str,
    close: (i32, u32, u32),
) -> OpportunityEvent {
    OpportunityEvent::OpportunityCreated(OpportunityCreated {
        name: text("deal"),
        lead_id: None,
        pipeline: PipelineSlug::default_pipeline(),
        stage: StageName::parse(stage).unwrap(),
        probability: Probability::parse(percent).unwrap(),
        forecast_category: category,
        amount: Amount::parse(amount).unwrap(),
        currency: Currency::parse(currency).unwrap(),
        expected_close_date: NaiveDate::from_ymd_opt(close.0, close.1, close.2).unwrap(),
        owner: text("alice"),
    })
}

fn at(year: i32, month: u32, day: u32, hour: u32, minute: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(year, month, day, hour, minute, 0)
        .unwrap()
}

#[test]
fn forecast_figures_by_hand() {
    let (a, b, c, d) = (
        Uuid::now_v7(),
        Uuid::now_v7(),
        Uuid::now_v7(),
        Uuid::now_v7(),
    );
    let mut history = Builder {
        events: Vec::new(),
        versions: Default::default(),
    };
    // 101 × 50 % = 50.5, rounded half away from zero to 51.
    history.push(
        a,
        created(
            "quoted",
            50,
            ForecastCategory::BestCase,
            101,
            "EUR",
            (2026, 12, 15),
        ),
    );
    // 1000 × 75 % = 750, category commit.
    history.push(
        b,
        created(
            "negotiation",
            75,
            ForecastCategory::Commit,
            1000,
            "EUR",
            (2026, 11, 3),
        ),
    );
    // 333 × 10 % = 33.3 → 33, in USD: never summed with euros.
    history.push(
        c,
        created(
            "new",
            10,
            ForecastCategory::Pipeline,
            333,
            "USD",
            (2026, 12, 31),
        ),
    );
    // 3 × 50 % = 1.5 → 2.
    history.push(
        d,
        created(
            "quoted",
            50,
            ForecastCategory::BestCase,
            3,
            "EUR",
            (2026, 10, 1),
        ),
    );

    let model = projector::rules::fold_until(&history.events, Utc::now());
    assert_eq!(
        rows(&model, Granularity::Month),
        vec![
            row("2026-10", "EUR", [1, 3, 2, 3, 0, 0, 0]),
            row("2026-11", "EUR", [1, 1000, 750, 1000, 1000, 0, 0]),
            row("2026-12", "EUR", [1, 101, 51, 101, 0, 0, 0]),
            row("2026-12", "USD", [1, 333, 33, 0, 0, 0, 0]),
        ]
    );
    assert_eq!(
        rows(&model, Granularity::Quarter),
        vec![
            row("2026-Q4", "EUR", [3, 1104, 803, 1104, 1000, 0, 0]),
            row("2026-Q4", "USD", [1, 333, 33, 0, 0, 0, 0]),
        ]
    );

    // b is won late on 10 January 2027 (UTC): it leaves November for January 2027 and counts as
    // closed-won, and so in commit and best case, with no weighted or pipeline amount.
    history.push(
        b,
        OpportunityEvent::OpportunityClosed {
            outcome: Outcome::Won,
            reason: None,
            closed_at: at(2027, 1, 10, 23, 30),
        },
    );
    // c is lost on 1 October 2026.
    history.push(
        c,
        OpportunityEvent::OpportunityClosed {
            outcome: Outcome::Lost,
            reason: Some(text("price")),
            closed_at: at(2026, 10, 1, 0, 0),
        },
    );
    // a: own probability 25 % (101 × 25 % = 25.25 → 25) and category commit.
    history.push(
        a,
        OpportunityEvent::ProbabilityOverridden {
            probability: Some(Probability::parse(25).unwrap()),
            forecast_category: Some(ForecastCategory::Commit),
        },
    );
    let model = projector::rules::fold_until(&history.events, Utc::now());
    assert_eq!(
        rows(&model, Granularity::Month),
        vec![
            row("2026-10", "EUR", [1, 3, 2, 3, 0, 0, 0]),
            row("2026-10", "USD", [0, 0, 0, 0, 0, 0, 333]),
            row("2026-12", "EUR", [1, 101, 25, 101, 101, 0, 0]),
            row("2027-01", "EUR", [0, 0, 0, 1000, 1000, 1000, 0]),
        ]
    );
    // The board counts open deals only.
    let board: Vec<_> = model
        .board()
        .into_iter()
        .map(|(key, f)| {
            (
                key.stage,
                key.currency,
                [f.count, f.amount, f.weighted_amount],
            )
        })
        .collect();
    assert_eq!(
        board,
        vec![("quoted".to_owned(), "EUR".to_owned(), [2, 104, 27])]
    );

    // As of an instant before the closes, the forecast is the first one again.
    let before_closes = history.events[3].recorded_at;
    let earlier = projector::rules::fold_until(&history.events, before_closes);
    assert_eq!(
        rows(&earlier, Granularity::Quarter),
        vec![
            row("2026-Q4", "EUR", [3, 1104, 803, 1104, 1000, 0, 0]),
            row("2026-Q4", "USD", [1, 333, 33, 0, 0, 0, 0]),
        ]
    );
}

#[test]
fn sums_wider_than_i64_do_not_overflow() {
    let mut history = Builder {
        events: Vec::new(),
        versions: Default::default(),
    };
    for _ in 0..3 {
        history.push(
            Uuid::now_v7(),
            created(
                "negotiation",
                75,
                ForecastCategory::Commit,
                i64::MAX.into(),
                "EUR",
                (2026, 12, 1),
            ),
        );
    }
    let model = projector::rules::fold_until(&history.events, Utc::now());
    let figures = model.forecast_by(Granularity::Month);
    let (_, figures) = figures.into_iter().next().unwrap();
    assert_eq!(figures.pipeline_amount, 3 * i128::from(i64::MAX));
}

#[tokio::test]
async fn forecast_through_sql_and_the_api_shape() {
    let harness = Harness::new().await;
    let handler = &harness.handler;
    let create = |amount: i128, currency: &str, close: (i32, u32, u32), stage: &str| {
        domain::opportunity::NewOpportunity {
            name: text("deal"),
            lead_id: None,
            pipeline: PipelineSlug::default_pipeline(),
            stage: Some(StageName::parse(stage).unwrap()),
            amount: Amount::parse(amount).unwrap(),
            currency: Currency::parse(currency).unwrap(),
            expected_close_date: NaiveDate::from_ymd_opt(close.0, close.1, close.2).unwrap(),
            owner: text("alice"),
        }
    };
    let context = || CommandContext::new("test:forecast");
    let (a, b, c) = (
        OpportunityId(Uuid::now_v7()),
        OpportunityId(Uuid::now_v7()),
        OpportunityId(Uuid::now_v7()),
    );
    handler
        .create_opportunity(&context(), a, create(101, "EUR", (2026, 12, 15), "quoted"))
        .await
        .unwrap();
    handler
        .create_opportunity(
            &context(),
            b,
            create(1000, "EUR", (2026, 11, 3), "negotiation"),
        )
        .await
        .unwrap();
    handler
        .create_opportunity(&context(), c, create(333, "USD", (2026, 12, 31), "new"))
        .await
        .unwrap();
    handler
        .handle_opportunity(
            &context(),
            b,
            OpportunityRequest::Other(OpportunityCommand::Close {
                outcome: Outcome::Won,
                reason: None,
                closed_at: at(2027, 1, 10, 23, 30),
            }),
        )
        .await
        .unwrap();
    // 3 large deals: the sum exceeds i64 and must come back exactly.
    for _ in 0..3 {
        handler
            .create_opportunity(
                &context(),
                OpportunityId(Uuid::now_v7()),
                create(i64::MAX.into(), "CHF", (2026, 12, 1), "new"),
            )
            .await
            .unwrap();
    }

    let events = harness.all_events().await;
    for projection in Projection::ALL {
        projector::apply_batch(&harness.store, projection, &events)
            .await
            .unwrap();
    }
    let rows =
        projector::read::forecast(&harness.db.pool, Granularity::Quarter, &Default::default())
            .await
            .unwrap();
    let figures: Vec<_> = rows
        .iter()
        .map(|row| {
            (
                row.period.as_str(),
                row.currency.as_str(),
                [
                    row.open_count as i128,
                    row.pipeline_amount,
                    row.weighted_amount,
                    row.best_case,
                    row.commit,
                    row.closed_won,
                    row.closed_lost,
                ],
            )
        })
        .collect();
    let big = 3 * i128::from(i64::MAX);
    // 10 % of i64::MAX = 922337203685477580.7 → …581 per deal.
    let big_weighted = 3 * 922_337_203_685_477_581_i128;
    assert_eq!(
        figures,
        vec![
            ("2026-Q4", "CHF", [3, big, big_weighted, 0, 0, 0, 0]),
            ("2026-Q4", "EUR", [1, 101, 51, 101, 0, 0, 0]),
            ("2026-Q4", "USD", [1, 333, 33, 0, 0, 0, 0]),
            ("2027-Q1", "EUR", [0, 0, 0, 1000, 1000, 1000, 0]),
        ]
    );
    harness.assert_matches_fold().await;
    harness.finish().await;
}
