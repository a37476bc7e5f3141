//! The durable JetStream consumer: reacts to each published event and acknowledges it only once
//! the reaction is done, so a crash means redelivery, never a lost reaction.
//!
//! Several messages are handled at once and several instances share the durable consumer, so one
//! deal's events arrive in any order. They are handled in stream order all the same: under a
//! per-deal row lock, every event of the deal up to the delivered one that is not handled yet is
//! handled from the store (the store is the authority, see `step`), each decided on the deal as
//! of that event; then the deal's timers are re-planned. For `FollowUpDue` the reminder is also
//! announced on `<prefix>.notifications.follow_up_due`. For `LeadCaptured` it routes the lead.
//! Every command id derives from the event, so handling a message twice has no second effect.
//! Imported history older than the configured horizon is marked handled and triggers nothing.

use platform::error_chain;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, AckKind};
use commands::{CommandContext, CommandError, OpportunityRequest};
use domain::codec::{self, DecodeError};
use domain::lead::LeadEvent;
use domain::opportunity::{Opportunity, OpportunityCommand, OpportunityEvent};
use domain::values::{LeadId, OpportunityId, Text};
use eventstore::{RecordedEvent, StoreError};
use futures::StreamExt;
use platform::CancellationToken;
use uuid::Uuid;

use crate::db;
use crate::step::{self, DealAction, DealView, RouteAssignment, StreamEvent};
use crate::{Shared, metrics_names};

/// How long JetStream waits for an ack before redelivering; long enough for a slow reaction,
/// short enough that a crashed instance's messages come back soon.
pub(crate) const ACK_WAIT: Duration = Duration::from_secs(30);
/// How long a message that failed for a passing reason waits before it is redelivered.
const RETRY_DELAY: Duration = Duration::from_secs(1);
/// How long a message this build cannot read yet waits before it is redelivered: an upgrade
/// takes minutes, and meanwhile the message should not keep an instance busy.
const UPGRADE_DELAY: Duration = Duration::from_secs(30);

/// Why handling one message failed.
#[derive(Debug, thiserror::Error)]
enum Failure {
    /// Worth redelivering: the store, the database or NATS was unavailable, or a race was lost.
    #[error("transient: {0}")]
    Transient(String),
    /// The event, or one before it in the deal's stream, has a schema version newer than this
    /// build knows (a rolling upgrade): redelivered until an upgraded instance handles it.
    #[error("awaiting an upgrade: {0}")]
    AwaitingUpgrade(String),
    /// Redelivering cannot help (an unreadable event); logged and acknowledged.
    #[error("permanent: {0}")]
    Permanent(String),
}

impl From<StoreError> for Failure {
    fn from(error: StoreError) -> Failure {
        Failure::Transient(error_chain(&error))
    }
}

impl From<CommandError> for Failure {
    fn from(error: CommandError) -> Failure {
        match error {
            // The handler cannot tell a newer schema version from a damaged event; only the
            // first can be fixed, by an upgrade, and waiting costs little in the second case.
            CommandError::Corrupt(_) => Failure::AwaitingUpgrade(error_chain(&error)),
            CommandError::IdempotencyKeyReused => Failure::Permanent(error_chain(&error)),
            _ => Failure::Transient(error_chain(&error)),
        }
    }
}

impl From<DecodeError> for Failure {
    fn from(error: DecodeError) -> Failure {
        match error {
            DecodeError::UnknownSchemaVersion { .. } => Failure::AwaitingUpgrade(error.to_string()),
            DecodeError::Malformed { .. } => Failure::Permanent(error.to_string()),
        }
    }
}

/// Pulls from `consumer` until `shutdown`, handling up to `concurrency` messages at a time.
pub(crate) async fn run(
    shared: Arc<Shared>,
    consumer: jetstream::consumer::PullConsumer,
    shutdown: CancellationToken,
) {
    while !shutdown.is_cancelled() {
        let messages = match consumer.messages().await {
            Ok(messages) => messages,
            Err(error) => {
                tracing::warn!(error = %error_chain(&error), "cannot pull from JetStream, retrying");
                wait(&shutdown, RETRY_DELAY).await;
                continue;
            }
        };
        let concurrency = shared.options.concurrency.max(1);
        messages
            .take_until(shutdown.cancelled())
            .for_each_concurrent(concurrency, |message| {
                let shared = shared.clone();
                async move {
                    match message {
                        Ok(message) => handle_message(&shared, message).await,
                        Err(error) => {
                            tracing::warn!(error = %error_chain(&error), "JetStream pull failed");
                        }
                    }
                }
            })
            .await;
        if !shutdown.is_cancelled() {
            // The message stream ended (the connection dropped); pull again after a pause.
            wait(&shutdown, RETRY_DELAY).await;
        }
    }
}

async fn wait(shutdown: &CancellationToken, delay: Duration) {
    tokio::select! {
        () = shutdown.cancelled() => {}
        () = tokio::time::sleep(delay) => {}
    }
}

async fn handle_message(shared: &Shared, message: jetstream::Message) {
    if let Ok(info) = message.info() {
        metrics::gauge!(metrics_names::CONSUMER_LAG).set(info.pending as f64);
    }
    let outcome = match serde_json::from_slice::<RecordedEvent>(&message.payload) {
        Ok(event) => handle_event(shared, &event).await,
        Err(error) => Err(Failure::Permanent(format!(
            "message on {} is not an event envelope: {error}",
            message.subject
        ))),
    };
    let ack = match outcome {
        Ok(()) => AckKind::Ack,
        Err(Failure::Transient(reason)) => {
            tracing::warn!(subject = %message.subject, %reason, "reaction failed, will be redelivered");
            AckKind::Nak(Some(RETRY_DELAY))
        }
        Err(Failure::AwaitingUpgrade(reason)) => {
            tracing::error!(subject = %message.subject, %reason, "event unreadable by this build, waiting for an upgrade");
            AckKind::Nak(Some(UPGRADE_DELAY))
        }
        Err(Failure::Permanent(reason)) => {
            tracing::error!(subject = %message.subject, %reason, "reaction impossible, skipping the event");
            metrics::counter!(metrics_names::SKIPPED_EVENTS).increment(1);
            AckKind::Term
        }
    };
    if let Err(error) = message.ack_with(ack).await {
        // The message comes back after the ack wait; handling it again is harmless.
        tracing::warn!(error = %error_chain(&*error), "cannot acknowledge message");
    }
}

#[tracing::instrument(
    name = "workflow.event",
    skip_all,
    fields(
        stream_id = %event.stream_id,
        event_type = %event.event_type,
        position = event.position,
        correlation_id = tracing::field::Empty,
    )
)]
async fn handle_event(shared: &Shared, event: &RecordedEvent) -> Result<(), Failure> {
    let correlation_id = metadata_uuid(event, "correlation_id").unwrap_or(event.event_id);
    tracing::Span::current().record("correlation_id", tracing::field::display(correlation_id));
    match event.category() {
        OpportunityId::CATEGORY => {
            let Some(deal_id) = entity_id(event).map(OpportunityId) else {
                return Err(Failure::Permanent(format!(
                    "bad stream id {}",
                    event.stream_id
                )));
            };
            handle_deal_event(shared, deal_id, event, correlation_id).await
        }
        LeadId::CATEGORY if event.event_type == "LeadCaptured" => {
            let Some(lead_id) = entity_id(event).map(LeadId) else {
                return Err(Failure::Permanent(format!(
                    "bad stream id {}",
                    event.stream_id
                )));
            };
            route_lead(shared, lead_id, event, correlation_id).await
        }
        _ => Ok(()),
    }
}

fn entity_id(event: &RecordedEvent) -> Option<Uuid> {
    Uuid::parse_str(event.entity_id()).ok()
}

fn metadata_uuid(event: &RecordedEvent, field: &str) -> Option<Uuid> {
    event
        .metadata
        .get(field)
        .and_then(|value| value.as_str())
        .and_then(|text| Uuid::parse_str(text).ok())
}

fn workflow_context(
    rule: &str,
    command_id: Uuid,
    correlation_id: Uuid,
    causation_id: Uuid,
) -> CommandContext {
    CommandContext {
        actor: format!("workflow:{rule}"),
        command_id,
        correlation_id,
        causation_id,
        repeatable: true,
        fingerprint: None,
        expected_version: None,
        occurred_at: None,
        token_id: None,
    }
}

/// A deal's stream as the store holds it, each event decoded.
struct DealStream {
    recorded: Vec<RecordedEvent>,
    decoded: Vec<OpportunityEvent>,
}

impl DealStream {
    async fn read(shared: &Shared, deal_id: OpportunityId) -> Result<DealStream, Failure> {
        let recorded = shared
            .handler
            .store()
            .read_stream(&deal_id.stream_id())
            .await?;
        let decoded = recorded
            .iter()
            .map(|stored| {
                codec::decode(
                    &stored.event_type,
                    stored.schema_version,
                    stored.data.clone(),
                )
                .map_err(|error| {
                    let place = format!("{} version {}", stored.stream_id, stored.stream_version);
                    match Failure::from(error) {
                        Failure::AwaitingUpgrade(reason) => {
                            Failure::AwaitingUpgrade(format!("{place}: {reason}"))
                        }
                        other => Failure::Permanent(format!("{place}: {other}")),
                    }
                })
            })
            .collect::<Result<_, _>>()?;
        Ok(DealStream { recorded, decoded })
    }

    fn version(&self) -> i64 {
        self.recorded.last().map_or(0, |event| event.stream_version)
    }

    fn at(&self, version: i64) -> Option<(&RecordedEvent, &OpportunityEvent)> {
        let index = self
            .recorded
            .iter()
            .position(|event| event.stream_version == version)?;
        Some((&self.recorded[index], &self.decoded[index]))
    }

    /// The deal now; `None` if it has no `OpportunityCreated`.
    fn current(&self) -> Option<DealView> {
        DealView::fold(
            self.recorded
                .iter()
                .zip(&self.decoded)
                .map(|(stored, event)| (stored.occurred_at, event)),
        )
    }

    /// The deal as the rules see it when reacting to the event at `version`.
    fn as_of(&self, version: i64) -> Option<Opportunity> {
        let events: Vec<StreamEvent<'_>> = self
            .recorded
            .iter()
            .zip(&self.decoded)
            .map(|(stored, event)| StreamEvent {
                event_id: stored.event_id,
                version: stored.stream_version,
                reaction_to: reaction_to(stored),
                event,
            })
            .collect();
        step::deal_as_of(&events, version)
    }
}

/// The event a rule appended `event` in reaction to, from its metadata.
fn reaction_to(event: &RecordedEvent) -> Option<Uuid> {
    let by_workflow = event
        .metadata
        .get("actor")
        .and_then(|actor| actor.as_str())
        .is_some_and(|actor| actor.starts_with("workflow:"));
    // A timer's FollowUpDue is the workflow's too, but it answers the clock, not an event.
    if by_workflow && event.event_type != "FollowUpDue" {
        metadata_uuid(event, "causation_id")
    } else {
        None
    }
}

/// Handles the deal's events up to the delivered one, in stream order, under the deal's lock in
/// the workflow's tables: the events before it that nobody has handled yet first (read from the
/// store), then this one; then re-plans the deal's timers. Lock, plan and progress commit
/// together, so a crash in between leaves everything to the redelivery, whose commands have the
/// same ids and are no-ops where they already took effect.
async fn handle_deal_event(
    shared: &Shared,
    deal_id: OpportunityId,
    event: &RecordedEvent,
    correlation_id: Uuid,
) -> Result<(), Failure> {
    let mut client = shared.pool.get().await.map_err(StoreError::from)?;
    let transaction = client.transaction().await.map_err(StoreError::from)?;
    let handled = db::lock_deal(&transaction, deal_id.0).await?;
    if handled >= event.stream_version {
        return Ok(());
    }
    let mut stream = DealStream::read(shared, deal_id).await?;
    for version in handled + 1..=event.stream_version {
        let Some((trigger, decoded)) = stream.at(version) else {
            return Err(Failure::Transient(format!(
                "{} has no version {version} yet",
                event.stream_id
            )));
        };
        let (trigger, decoded) = (trigger.clone(), decoded.clone());
        if trigger.event_type == "FollowUpDue" {
            shared.announce_follow_up_due(&trigger).await?;
        }
        if shared.beyond_horizon(&trigger) {
            continue;
        }
        if react(shared, deal_id, &stream, &trigger, &decoded).await? {
            // The next event is decided with this one's reactions, as if they came first.
            stream = DealStream::read(shared, deal_id).await?;
        }
    }

    let mut planned = false;
    // A deal whose latest handled event is old imported history gets no timers: its open
    // follow-ups and reminders are last year's. Its first event inside the horizon plans them.
    if let Some(view) = stream.current().filter(|_| !shared.beyond_horizon(event)) {
        let plan = step::plan_timers(&shared.config, deal_id, &view);
        let cause = db::Cause {
            correlation_id,
            causation_id: event.event_id,
        };
        planned = db::store_plan(&transaction, deal_id.0, stream.version(), &plan, &cause).await?;
    }
    db::mark_handled(&transaction, deal_id.0, event.stream_version).await?;
    transaction.commit().await.map_err(StoreError::from)?;
    if planned {
        // Wake this instance's timer loop: the plan may hold a timer sooner than it sleeps for.
        shared.timers_changed.notify_one();
    }
    Ok(())
}

/// Sends the rules' commands in reaction to `trigger`, decided on the deal as of `trigger`.
/// Returns whether any was accepted (the stream may have grown).
async fn react(
    shared: &Shared,
    deal_id: OpportunityId,
    stream: &DealStream,
    trigger: &RecordedEvent,
    decoded: &OpportunityEvent,
) -> Result<bool, Failure> {
    let Some(deal) = stream.as_of(trigger.stream_version) else {
        // A stream whose first event is not OpportunityCreated has nothing to react to.
        return Ok(false);
    };
    let correlation_id = metadata_uuid(trigger, "correlation_id").unwrap_or(trigger.event_id);
    let reactions = step::react(
        &shared.config,
        trigger.event_id,
        &trigger.event_type,
        decoded,
        &deal,
        trigger.occurred_at,
    );
    let mut appended = false;
    for reaction in &reactions {
        let mut context = workflow_context(
            &reaction.rule,
            reaction.command_id,
            correlation_id,
            trigger.event_id,
        );
        let request = match &reaction.action {
            DealAction::ScheduleFollowUp {
                follow_up_id,
                kind,
                due_at,
            } => OpportunityRequest::Other(OpportunityCommand::ScheduleFollowUp {
                follow_up_id: *follow_up_id,
                kind: kind.clone(),
                due_at: *due_at,
                rule: rule_text(&reaction.rule),
            }),
            DealAction::MoveToStage {
                from,
                stage,
                reason,
            } => {
                // The move was decided in `from`; made only at the version that shows the deal
                // still there, so that nobody's later move is undone.
                let loaded = shared.handler.load_opportunity(deal_id).await?;
                if !loaded
                    .state
                    .as_ref()
                    .is_some_and(|now| now.is_open() && &now.stage == from)
                {
                    tracing::info!(rule = %reaction.rule, "the deal has moved on; stage left as it is");
                    continue;
                }
                context.expected_version = Some(loaded.version);
                OpportunityRequest::ChangeStage {
                    stage: stage.clone(),
                    reason: Some(reason.clone()),
                }
            }
            DealAction::CompleteFollowUp { follow_up_id } => {
                OpportunityRequest::Other(OpportunityCommand::CompleteFollowUp {
                    follow_up_id: *follow_up_id,
                })
            }
            DealAction::CancelFollowUp {
                follow_up_id,
                reason,
            } => OpportunityRequest::Other(OpportunityCommand::CancelFollowUp {
                follow_up_id: *follow_up_id,
                reason: reason.clone(),
            }),
        };
        match shared
            .handler
            .handle_opportunity(&context, deal_id, request)
            .await
        {
            Ok(_) => {
                appended = true;
                metrics::counter!(metrics_names::REACTIONS, "rule" => reaction.rule.clone())
                    .increment(1);
            }
            // What the deal no longer accepts (closed since, a follow-up completed elsewhere, a
            // stage no longer in the pipeline): the rule simply no longer applies.
            Err(CommandError::Rejected(rejection)) => {
                tracing::info!(rule = %reaction.rule, refused = rejection.rule, detail = %rejection.detail, "workflow command refused");
            }
            Err(error) => return Err(error.into()),
        }
    }
    Ok(appended)
}

fn rule_text(rule: &str) -> Text {
    // Rule names are validated slugs (at most 64 bytes), always valid text.
    Text::parse("rule", rule, Text::SHORT).unwrap_or_else(|_| unreachable!())
}

async fn route_lead(
    shared: &Shared,
    lead_id: LeadId,
    event: &RecordedEvent,
    correlation_id: Uuid,
) -> Result<(), Failure> {
    if shared.beyond_horizon(event) {
        return Ok(());
    }
    let LeadEvent::LeadCaptured(profile) =
        codec::decode(&event.event_type, event.schema_version, event.data.clone())?
    else {
        return Ok(());
    };
    let route = step::choose_route(&shared.config.routing, &profile);
    let owner = match route.assignment {
        RouteAssignment::Owner(owner) => owner.clone(),
        RouteAssignment::Team(team) => {
            let names: Vec<String> = team.iter().map(|owner| owner.as_str().to_owned()).collect();
            let chosen = db::round_robin_owner(&shared.pool, lead_id.0, route.rule, &names).await?;
            Text::parse("owner", &chosen, Text::SHORT)
                .map_err(|error| Failure::Permanent(format!("stored owner: {error}")))?
        }
    };
    let context = workflow_context(
        route.rule,
        crate::ids::route_command(event.event_id, route.rule),
        correlation_id,
        event.event_id,
    );
    match shared
        .handler
        .route_lead(&context, lead_id, owner, rule_text(route.rule))
        .await
    {
        Ok(_) => Ok(()),
        Err(CommandError::Rejected(rejection)) => {
            // Disqualified or converted before routing: nothing left to route.
            tracing::info!(refused = rejection.rule, "lead routing refused");
            Ok(())
        }
        Err(error) => Err(error.into()),
    }
}

impl Shared {
    /// Whether `event` is imported history older than the rules' horizon, which the workflow
    /// does not react to (`step::beyond_horizon`).
    fn beyond_horizon(&self, event: &RecordedEvent) -> bool {
        step::beyond_horizon(
            self.config.horizon,
            event.occurred_at,
            event.recorded_at,
            self.clock.now(),
        )
    }

    /// Publishes the reminder for integrations. The message id is the event id and the
    /// notification stream de-duplicates on it, so a redelivered `FollowUpDue` (handled again
    /// because the ack was lost) is not announced twice.
    async fn announce_follow_up_due(&self, event: &RecordedEvent) -> Result<(), Failure> {
        let subject = format!(
            "{}.notifications.follow_up_due",
            self.options.subject_prefix
        );
        let payload = serde_json::to_vec(event)
            .map_err(|error| Failure::Permanent(format!("envelope: {error}")))?;
        let publish = jetstream::message::PublishMessage::build()
            .payload(payload.into())
            .message_id(event.event_id.to_string())
            .header(
                eventstore::POSITION_HEADER,
                event.position.to_string().as_str(),
            );
        let acknowledgement = self
            .jetstream
            .send_publish(subject, publish)
            .await
            .map_err(|error| Failure::Transient(format!("publishing notification: {error}")))?;
        acknowledgement
            .await
            .map_err(|error| Failure::Transient(format!("notification not stored: {error}")))?;
        metrics::counter!(metrics_names::NOTIFICATIONS).increment(1);
        Ok(())
    }
}
