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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cached_state_ahead_of_a_restored_store_is_dropped_not_retried_forever() {
    let db = TestDb::new().await;
    let handler = handler(&db);
    handler.ensure_default_pipeline().await.unwrap();
    let id = OpportunityId(Uuid::now_v7());
    let context = || CommandContext::new("test:cache");
    handler
        .create_opportunity(&context(), id, deal())
        .await
        .unwrap();
    for amount in [2_000, 3_000] {
        let change = OpportunityCommand::ChangeAmount {
            amount: Amount::parse(amount).unwrap(),
            currency: Currency::parse("EUR").unwrap(),
        };
        handler
            .handle_opportunity(&context(), id, OpportunityRequest::Other(change))
            .await
            .unwrap();
    }

    // A restore from a backup taken at version 1: the only way to shorten a stream is to go
    // around the append-only guards, as a restore does.
    let client = db.connect().await;
    client
        .batch_execute(&format!(
            "alter table events disable trigger events_refuse_update_delete; \
             delete from events where stream_id = '{}' and stream_version > 1; \
             alter table events enable trigger events_refuse_update_delete",
            id.stream_id()
        ))
        .await
        .unwrap();

    let change = OpportunityCommand::ChangeAmount {
        amount: Amount::parse(4_000).unwrap(),
        currency: Currency::parse("EUR").unwrap(),
    };
    let changed = handler
        .handle_opportunity(&context(), id, OpportunityRequest::Other(change))
        .await
        .expect("the handler must fall back to the store's version");
    assert_eq!(changed.version, 2);
    let deal = handler.load_opportunity(id).await.unwrap().state.unwrap();
    assert_eq!(deal.amount.minor_units(), 4_000);
}

/// Two processes (two handlers with their own appenders and caches) get the same qualification
/// at nearly the same time, as a client retrying against another API instance does. Whichever
/// way their steps interleave, both must answer with the first outcome, never with a refusal
/// decided on the state the other one produced.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_repeat_landing_while_the_first_commits_elsewhere_gets_the_first_answer() {
    let db = TestDb::new().await;
    let (first, second) = (handler(&db), handler(&db));
    first.ensure_default_pipeline().await.unwrap();
    let mut trials = Vec::new();
    for trial in 0..150_u64 {
        let lead = domain::values::LeadId(Uuid::now_v7());
        let capture = CommandContext::new("test:idempotency");
        first
            .capture_lead(
                &capture,
                lead,
                domain::lead::LeadProfile {
                    name: Text::parse("name", "Repeat", Text::SHORT).unwrap(),
                    company: None,
                    email: None,
                    country: None,
                    source: None,
                },
            )
            .await
            .unwrap();
        let mut context = CommandContext::new("test:idempotency");
        context.repeatable = true;
        context.fingerprint = Some(vec![1, 2, 3]);
        let opportunity = OpportunityId(Uuid::now_v7());
        // Staggering the repeat by up to a few milliseconds walks it across the first one's
        // commit.
        let stagger = (trial * 37) % 4_000;
        let (one, two) = (first.clone(), second.clone());
        trials.push(tokio::spawn(async move {
            tokio::join!(
                qualify(one, context.clone(), lead, opportunity, 0),
                qualify(two, context, lead, opportunity, stagger)
            )
        }));
        if trials.len() == 8 {
            for trial in trials.drain(..) {
                let (one, two) = trial.await.unwrap();
                let one = one.expect("the first attempt succeeds");
                let two = two.expect("the repeat gets the first answer, not a refusal");
                assert_eq!(one, two);
            }
        }
    }
    for trial in trials {
        let (one, two) = trial.await.unwrap();
        assert_eq!(one.unwrap(), two.unwrap());
    }
}

async fn qualify(
    handler: CommandHandler,
    context: CommandContext,
    lead: domain::values::LeadId,
    opportunity: OpportunityId,
    delay_micros: u64,
) -> Result<commands::CommandResult, commands::CommandError> {
    tokio::time::sleep(std::time::Duration::from_micros(delay_micros)).await;
    handler
        .qualify_lead(
            &context,
            lead,
            domain::lead::Criteria {
                budget: true,
                authority: true,
                need: true,
                timeline: true,
            },
            opportunity,
            commands::QualifiedOpportunity {
                name: Text::parse("name", "Repeat deal", Text::SHORT).unwrap(),
                pipeline: PipelineSlug::default_pipeline(),
                amount: Amount::parse(1_000).unwrap(),
                currency: Currency::parse("EUR").unwrap(),
                expected_close_date: chrono::NaiveDate::from_ymd_opt(2027, 1, 31).unwrap(),
                owner: None,
            },
            parse_owner("anna").unwrap(),
        )
        .await
}
