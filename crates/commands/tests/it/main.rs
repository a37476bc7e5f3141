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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_decision_on_a_stale_cached_state_is_made_again_on_the_current_one() {
    let db = TestDb::new().await;
    let (first, second) = (handler(&db), handler(&db));
    first.ensure_default_pipeline().await.unwrap();
    let id = OpportunityId(Uuid::now_v7());
    let context = || CommandContext::new("test:cache");
    first
        .create_opportunity(&context(), id, deal())
        .await
        .unwrap();

    let close = OpportunityCommand::Close {
        outcome: domain::values::Outcome::Won,
        reason: None,
        closed_at: chrono::Utc::now(),
    };
    second
        .handle_opportunity(&context(), id, OpportunityRequest::Other(close))
        .await
        .unwrap();

    // The first handler still holds the open deal at version 1; the closed deal must win.
    let change = OpportunityCommand::ChangeAmount {
        amount: Amount::parse(9_000).unwrap(),
        currency: Currency::parse("EUR").unwrap(),
    };
    let refused = first
        .handle_opportunity(&context(), id, OpportunityRequest::Other(change))
        .await
        .expect_err("a closed deal refuses amount changes");
    assert!(
        matches!(&refused, commands::CommandError::Rejected(rejection) if rejection.rule == "opportunity-closed"),
        "unexpected answer: {refused:?}"
    );

    // If-Match is judged against the stream, not against the cached version.
    let mut expecting_two = context();
    expecting_two.expected_version = Some(2);
    let reopened = first
        .handle_opportunity(
            &expecting_two,
            id,
            OpportunityRequest::Reopen { stage: None },
        )
        .await
        .expect("version 2 is current");
    assert_eq!(reopened.version, 3);
    assert_eq!(handler(&db).load_opportunity(id).await.unwrap().version, 3);
}
