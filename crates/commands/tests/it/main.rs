//! The command handler against a real store: what other writers append is never hidden by the
//! folded states a handler keeps between commands.

use std::sync::Arc;

use commands::{CommandContext, CommandHandler, OpportunityRequest, SystemClock};
use domain::opportunity::{NewOpportunity, OpportunityCommand};
use domain::values::{Amount, Currency, OpportunityId, PipelineSlug, StageName, Text, parse_owner};
use eventstore::EventStore;
use testkit::TestDb;
use uuid::Uuid;

fn handler(db: &TestDb) -> CommandHandler {
    let pool = db.pool.clone();
    CommandHandler::new(EventStore::new(pool), Arc::new(SystemClock))
}

fn deal() -> NewOpportunity {
    NewOpportunity {
        name: Text::parse("name", "Cache test", Text::SHORT).unwrap(),
        lead_id: None,
        pipeline: PipelineSlug::default_pipeline(),
        stage: None,
        amount: Amount::parse(1_000).unwrap(),
        currency: Currency::parse("EUR").unwrap(),
        expected_close_date: chrono::NaiveDate::from_ymd_opt(2027, 1, 31).unwrap(),
        owner: parse_owner("anna").unwrap(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_sees_what_another_writer_appended_after_it_cached_a_stream() {
    let db = TestDb::new().await;
    let (first, second) = (handler(&db), handler(&db));
    first.ensure_default_pipeline().await.unwrap();
    let id = OpportunityId(Uuid::now_v7());
    let context = || CommandContext::new("test:cache");
    first
        .create_opportunity(&context(), id, deal())
        .await
        .unwrap();
    assert_eq!(first.load_opportunity(id).await.unwrap().version, 1);

    let change = OpportunityCommand::ChangeAmount {
        amount: Amount::parse(5_000).unwrap(),
        currency: Currency::parse("USD").unwrap(),
    };
    let changed = second
        .handle_opportunity(&context(), id, OpportunityRequest::Other(change))
        .await
        .unwrap();
    assert_eq!(changed.version, 2);

    let moved = first
        .handle_opportunity(
            &context(),
            id,
            OpportunityRequest::ChangeStage {
                stage: StageName::parse("quoted").unwrap(),
                reason: None,
            },
        )
        .await
        .unwrap();
    assert_eq!(
        moved.version, 3,
        "the stale cached state must not cause a conflict"
    );
    let seen = first.load_opportunity(id).await.unwrap();
    let fresh = handler(&db).load_opportunity(id).await.unwrap();
    assert_eq!(seen.version, 3);
    assert_eq!(seen.state, fresh.state, "cached and fresh folds differ");
    let deal = seen.state.unwrap();
    assert_eq!(deal.amount.minor_units(), 5_000);
    assert_eq!(deal.currency.as_str(), "USD");
    assert_eq!(deal.stage.as_str(), "quoted");
}
