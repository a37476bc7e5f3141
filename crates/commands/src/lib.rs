//! The command handler: the shell around the domain's deciders.
//!
//! For every command it loads the streams involved, folds them, asks the decider, and appends the
//! resulting events at the version it decided on, across several streams in one transaction where a
//! command touches several (qualification). A lost race against a concurrent writer comes back from
//! the store as a conflict; without a client-supplied expected version the decision is retried on
//! fresh state a bounded number of times.
//!
//! This crate knows nothing of HTTP or NATS: the API and the workflow service both send their
//! commands through [`CommandHandler`], so every effect lands in a deal's history the same way.
//! Read `error` next for how outcomes are classified.

mod error;

use std::any::Any;
use std::sync::Arc;

use chrono::{DateTime, SubsecRound, Utc};
use domain::Decider;
use domain::codec::{self, CURRENT_SCHEMA_VERSION};
use domain::lead::{Criteria, Lead, LeadCommand, LeadDecider, LeadProfile, QualificationRule};
use domain::opportunity::{NewOpportunity, Opportunity, OpportunityCommand, OpportunityDecider};
use domain::pipeline::{Pipeline, PipelineCommand, PipelineDefinition, PipelineEvent};
use domain::values::{LeadId, OpportunityId, Owner, PipelineSlug, StageName};
use eventstore::{
    AppendError, AppendOutcome, AppendRequest, EventStore, ExpectedVersion, NewEvent, StreamAppend,
};
use lru::LruCache;
use serde::{Serialize, de::DeserializeOwned};
use serde_json::json;
use uuid::Uuid;

pub use error::{CommandError, Rejection, RejectionKind};

/// How many times a decision is retried on fresh state after losing a race to another writer.
/// Every lost race means another command on the stream committed, so a command racing N - 1 others
/// needs at most N attempts; group commit makes that worst case the usual one, since the commands
/// of one batch were all decided on the same version and only one of them can win. The bound
/// therefore covers a burst of a few dozen concurrent commands on one deal (a bulk import, a
/// workflow reacting alongside users), while a pathological hot stream still ends in a conflict
/// instead of spinning.
const MAX_ATTEMPTS: usize = 32;

/// The current time, injected so that tests and the workflow service can control it.
pub trait Clock: Send + Sync {
    fn now(&self) -> DateTime<Utc>;

    /// Waits until this clock reads `deadline` or later. The default sleeps for the difference
    /// on Tokio's timer, which suits a clock that follows real time; a clock that tests move by
    /// hand overrides it so that moving the clock wakes whoever waits (the workflow's timers).
    fn sleep_until(
        &self,
        deadline: DateTime<Utc>,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + '_>> {
        let wait = (deadline - self.now()).to_std().unwrap_or_default();
        Box::pin(tokio::time::sleep(wait))
    }
}

pub struct SystemClock;

impl Clock for SystemClock {
    /// Truncated to microseconds, the precision PostgreSQL keeps, so that a time read back from a
    /// read model equals the one in the event.
    fn now(&self) -> DateTime<Utc> {
        Utc::now().trunc_subsecs(6)
    }
}

/// Who sent a command and why: becomes every event's metadata.
#[derive(Debug, Clone)]
pub struct CommandContext {
    /// `api:<name>` or `workflow:<rule>`.
    pub actor: String,
    pub command_id: Uuid,
    pub correlation_id: Uuid,
    pub causation_id: Uuid,
    /// True when this command id may have been handled before (a client's `Idempotency-Key`, or a
    /// workflow reaction derived from its triggering event): the earlier answer is looked up first.
    pub repeatable: bool,
    /// Tells a repeat of the same command apart from a different command reusing its id.
    pub fingerprint: Option<Vec<u8>>,
    /// The stream version the client expects (`If-Match`). Checked before anything else; a
    /// mismatch is a conflict and is never retried.
    pub expected_version: Option<i64>,
    /// When the command happened in the world, for imported history; `None` for a live
    /// command, which happens when it is recorded.
    pub occurred_at: Option<DateTime<Utc>>,
    /// The API token the command was sent with, so that the audit trail names the credential
    /// as well as the actor (a revoked token's events can be found).
    pub token_id: Option<Uuid>,
}

impl CommandContext {
    /// A one-off command with fresh ids.
    pub fn new(actor: impl Into<String>) -> Self {
        let command_id = Uuid::now_v7();
        Self {
            actor: actor.into(),
            command_id,
            correlation_id: command_id,
            causation_id: command_id,
            repeatable: false,
            fingerprint: None,
            expected_version: None,
            occurred_at: None,
            token_id: None,
        }
    }

    fn metadata(&self) -> serde_json::Value {
        let mut metadata = json!({
            "actor": self.actor,
            "command_id": self.command_id,
            "correlation_id": self.correlation_id,
            "causation_id": self.causation_id,
        });
        if let Some(token_id) = self.token_id {
            metadata["token_id"] = json!(token_id);
        }
        metadata
    }
}

/// The answer to a command: the entity, its stream version after the command, and the position
/// of the command's last event (or the log's head when it appended nothing) for read-your-writes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CommandResult {
    /// The entity's id: a UUID, or a pipeline's slug.
    pub id: String,
    pub version: i64,
    pub position: i64,
    /// Set by qualification: the opportunity the lead became.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub opportunity_id: Option<String>,
}

/// An opportunity command as a client asks for it. Stage moves and reopening need the pipeline's
/// current definition, which the handler loads after it knows the deal's pipeline.
#[derive(Debug, Clone)]
pub enum OpportunityRequest {
    ChangeStage {
        stage: StageName,
        reason: Option<domain::values::Text>,
    },
    Reopen {
        stage: Option<StageName>,
    },
    Other(OpportunityCommand),
}

/// A stream folded to its current state.
#[derive(Debug, Clone)]
pub struct Loaded<S> {
    pub state: S,
    /// 0 when the stream has no events.
    pub version: i64,
}

#[derive(Clone)]
pub struct CommandHandler {
    store: EventStore,
    clock: Arc<dyn Clock>,
    qualification_rule: QualificationRule,
    states: Arc<StateCache>,
}

/// How much memory the folded states of one handler may take. A stream evicted from it costs one
/// full read of the stream the next time a command touches it.
const CACHE_BUDGET_BYTES: usize = 64 * 1024 * 1024;

/// Folded states by stream id, with the version each was folded to, least recently used first
/// out once the budget is spent. Streams are append-only, so a cached state is never wrong, only
/// possibly behind: loading reads the events after its version and folds them in. That keeps a
/// busy deal's command from reading and decoding its whole history every time, which is where
/// most of a command's time went (docs/performance.md). The one exception is a store that went
/// back in time (restored from a backup, failed over to a replica that lagged): the append's
/// conflict then reports a version below the cached one, and the entry is dropped.
struct StateCache {
    entries: std::sync::Mutex<CacheEntries>,
}

struct CacheEntries {
    states: LruCache<String, CachedState>,
    /// The sum of the entries' footprints; kept at or under [`CACHE_BUDGET_BYTES`].
    bytes: usize,
}

struct CachedState {
    state: Box<dyn Any + Send + Sync>,
    version: i64,
    footprint: usize,
}

impl Default for StateCache {
    fn default() -> Self {
        StateCache {
            entries: std::sync::Mutex::new(CacheEntries {
                states: LruCache::unbounded(),
                bytes: 0,
            }),
        }
    }
}

impl StateCache {
    fn lock(&self) -> std::sync::MutexGuard<'_, CacheEntries> {
        // The entries stay consistent whatever a panicking holder did: every update below
        // completes before anything that could panic.
        self.entries
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn get<S: Clone + 'static>(&self, stream_id: &str) -> Option<(S, i64)> {
        let mut entries = self.lock();
        let cached = entries.states.get(stream_id)?;
        cached
            .state
            .downcast_ref::<S>()
            .map(|state| (state.clone(), cached.version))
    }

    fn put<S: Footprint + Send + Sync + 'static>(&self, stream_id: &str, state: S, version: i64) {
        let footprint = stream_id.len() + std::mem::size_of::<CachedState>() + state.footprint();
        let mut entries = self.lock();
        if entries
            .states
            .peek(stream_id)
            .is_some_and(|cached| cached.version >= version)
        {
            return;
        }
        let replaced = entries.states.push(
            stream_id.to_owned(),
            CachedState {
                state: Box::new(state),
                version,
                footprint,
            },
        );
        entries.bytes += footprint;
        if let Some((_, replaced)) = replaced {
            entries.bytes -= replaced.footprint;
        }
        while entries.bytes > CACHE_BUDGET_BYTES {
            let Some((_, evicted)) = entries.states.pop_lru() else {
                break;
            };
            entries.bytes -= evicted.footprint;
        }
    }

    /// Drops the stream's entry if it is ahead of the store's `version`.
    fn forget_if_ahead(&self, stream_id: &str, version: i64) {
        let mut entries = self.lock();
        if entries
            .states
            .peek(stream_id)
            .is_some_and(|cached| cached.version > version)
        {
            if let Some(dropped) = entries.states.pop(stream_id) {
                entries.bytes -= dropped.footprint;
            }
            tracing::warn!(
                stream_id,
                store_version = version,
                "the store is behind this process's cached state (restored or failed over?): \
                 dropped the cached state"
            );
        }
    }

    #[cfg(test)]
    fn bytes(&self) -> usize {
        self.lock().bytes
    }
}

/// Roughly how many bytes a folded state holds, so that the cache is bounded in memory rather
/// than in entries: a deal with hundreds of follow-ups weighs more than a fresh lead.
pub trait Footprint {
    fn footprint(&self) -> usize;
}

impl Footprint for Option<Lead> {
    fn footprint(&self) -> usize {
        let Some(lead) = self else { return 0 };
        let profile = &lead.profile;
        std::mem::size_of::<Lead>()
            + profile.name.as_str().len()
            + profile
                .company
                .as_ref()
                .map_or(0, |text| text.as_str().len())
            + profile
                .email
                .as_ref()
                .map_or(0, |email| email.as_str().len())
            + profile
                .source
                .as_ref()
                .map_or(0, |text| text.as_str().len())
            + lead
                .disqualification_reason
                .as_ref()
                .map_or(0, |text| text.as_str().len())
    }
}

impl Footprint for Option<Opportunity> {
    fn footprint(&self) -> usize {
        let Some(deal) = self else { return 0 };
        std::mem::size_of::<Opportunity>()
            + deal.name.as_str().len()
            + deal.close_reason.as_ref().map_or(0, |text| text.as_str().len())
            + deal
                .follow_ups
                .values()
                .map(|follow_up| {
                    std::mem::size_of::<(domain::values::FollowUpId, domain::opportunity::FollowUp)>()
                        + follow_up.kind.as_str().len()
                })
                .sum::<usize>()
    }
}

impl Footprint for Option<PipelineDefinition> {
    fn footprint(&self) -> usize {
        let Some(definition) = self else { return 0 };
        std::mem::size_of::<PipelineDefinition>()
            + definition.name.as_str().len()
            + definition
                .stages
                .iter()
                .map(|stage| std::mem::size_of_val(stage) + stage.name.as_str().len())
                .sum::<usize>()
    }
}

impl CommandHandler {
    pub fn new(store: EventStore, clock: Arc<dyn Clock>) -> Self {
        Self {
            store,
            clock,
            qualification_rule: QualificationRule::default(),
            states: Arc::default(),
        }
    }

    pub fn store(&self) -> &EventStore {
        &self.store
    }

    pub fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    /// Defines the built-in `default` pipeline unless a pipeline of that name exists.
    pub async fn ensure_default_pipeline(&self) -> Result<(), CommandError> {
        let slug = PipelineSlug::default_pipeline();
        let context = CommandContext::new("system:bootstrap");
        let events = vec![PipelineEvent::PipelineDefined(
            PipelineDefinition::built_in_default(),
        )];
        let append = stream_append(
            &slug.stream_id(),
            ExpectedVersion::NoStream,
            &events,
            &context,
        );
        match self.append(&context, vec![append]).await {
            Ok(_) | Err(CommandError::Conflict { .. }) => Ok(()),
            Err(error) => Err(error),
        }
    }

    pub async fn load_lead(&self, id: LeadId) -> Result<Loaded<Option<Lead>>, CommandError> {
        self.load::<LeadDecider>(&id.stream_id()).await
    }

    pub async fn load_opportunity(
        &self,
        id: OpportunityId,
    ) -> Result<Loaded<Option<Opportunity>>, CommandError> {
        self.load::<OpportunityDecider>(&id.stream_id()).await
    }

    pub async fn load_pipeline(
        &self,
        slug: &PipelineSlug,
    ) -> Result<Loaded<Option<PipelineDefinition>>, CommandError> {
        self.load::<Pipeline>(&slug.stream_id()).await
    }

    pub async fn capture_lead(
        &self,
        context: &CommandContext,
        id: LeadId,
        profile: LeadProfile,
    ) -> Result<CommandResult, CommandError> {
        let command = LeadCommand::Capture(profile);
        self.execute::<LeadDecider>(context, &id.stream_id(), &command)
            .await
    }

    pub async fn route_lead(
        &self,
        context: &CommandContext,
        id: LeadId,
        owner: Owner,
        rule: domain::values::Text,
    ) -> Result<CommandResult, CommandError> {
        let command = LeadCommand::Route { owner, rule };
        self.execute::<LeadDecider>(context, &id.stream_id(), &command)
            .await
    }

    pub async fn disqualify_lead(
        &self,
        context: &CommandContext,
        id: LeadId,
        reason: domain::values::Text,
    ) -> Result<CommandResult, CommandError> {
        let command = LeadCommand::Disqualify { reason };
        self.execute::<LeadDecider>(context, &id.stream_id(), &command)
            .await
    }

    /// Qualifies a lead and converts it: `LeadQualified` and `LeadConverted` on the lead's stream
    /// and `OpportunityCreated` on the new deal's stream, in one transaction. Without an owner in
    /// the draft, the deal goes to the lead's owner, or to `fallback_owner` if it was never routed.
    pub async fn qualify_lead(
        &self,
        context: &CommandContext,
        id: LeadId,
        criteria: Criteria,
        opportunity_id: OpportunityId,
        draft: QualifiedOpportunity,
        fallback_owner: Owner,
    ) -> Result<CommandResult, CommandError> {
        let lead_stream = id.stream_id();
        let opportunity_stream = opportunity_id.stream_id();
        let definition = self.pipeline_definition(&draft.pipeline).await?;
        for attempt in 1..=MAX_ATTEMPTS {
            // Looked up after loading, never before: a first attempt of this command that
            // commits in between would otherwise be in the loaded state but not in the lookup,
            // and deciding again on that state refuses the repeat instead of answering it.
            let lead = self.load::<LeadDecider>(&lead_stream).await?;
            if let Some(result) = self.earlier_answer(context).await? {
                return Ok(result);
            }
            check_if_match(context, &lead_stream, lead.version)?;
            let lead_events = LeadDecider::decide(
                &LeadCommand::Qualify {
                    criteria,
                    rule: self.qualification_rule,
                    opportunity_id,
                },
                &lead.state,
            )?;
            let owner = draft
                .owner
                .clone()
                .or_else(|| lead.state.as_ref().and_then(|lead| lead.owner.clone()))
                .unwrap_or_else(|| fallback_owner.clone());
            let opportunity = NewOpportunity {
                name: draft.name.clone(),
                lead_id: Some(id),
                pipeline: draft.pipeline.clone(),
                stage: None,
                amount: draft.amount,
                currency: draft.currency.clone(),
                expected_close_date: draft.expected_close_date,
                owner,
            };
            let opportunity_events = OpportunityDecider::decide(
                &OpportunityCommand::Create {
                    opportunity,
                    definition: definition.clone(),
                },
                &None,
            )?;
            let appends = vec![
                stream_append(&lead_stream, expected(lead.version), &lead_events, context),
                stream_append(
                    &opportunity_stream,
                    ExpectedVersion::NoStream,
                    &opportunity_events,
                    context,
                ),
            ];
            match self.append(context, appends).await {
                Err(CommandError::Conflict { .. })
                    if context.expected_version.is_none() && attempt < MAX_ATTEMPTS => {}
                result => {
                    return result.map(|outcome| answer(&outcome));
                }
            }
        }
        unreachable!("the last attempt always returns")
    }

    pub async fn create_opportunity(
        &self,
        context: &CommandContext,
        id: OpportunityId,
        opportunity: NewOpportunity,
    ) -> Result<CommandResult, CommandError> {
        let definition = self.pipeline_definition(&opportunity.pipeline).await?;
        let command = OpportunityCommand::Create {
            opportunity,
            definition,
        };
        self.execute::<OpportunityDecider>(context, &id.stream_id(), &command)
            .await
    }

    pub async fn handle_opportunity(
        &self,
        context: &CommandContext,
        id: OpportunityId,
        request: OpportunityRequest,
    ) -> Result<CommandResult, CommandError> {
        let command = match request {
            OpportunityRequest::Other(command) => command,
            OpportunityRequest::ChangeStage { stage, reason } => OpportunityCommand::ChangeStage {
                stage,
                reason,
                definition: self.definition_of_deal(id).await?,
            },
            OpportunityRequest::Reopen { stage } => OpportunityCommand::Reopen {
                stage,
                definition: self.definition_of_deal(id).await?,
            },
        };
        self.execute::<OpportunityDecider>(context, &id.stream_id(), &command)
            .await
    }

    pub async fn define_pipeline(
        &self,
        context: &CommandContext,
        slug: &PipelineSlug,
        definition: PipelineDefinition,
    ) -> Result<CommandResult, CommandError> {
        let command = PipelineCommand::Define(definition);
        self.execute::<Pipeline>(context, &slug.stream_id(), &command)
            .await
    }

    /// The current definition of the pipeline a deal belongs to. A deal's pipeline never changes,
    /// so reading it outside the decision's retry loop is safe.
    async fn definition_of_deal(
        &self,
        id: OpportunityId,
    ) -> Result<PipelineDefinition, CommandError> {
        let Some(deal) = self.load_opportunity(id).await?.state else {
            return Err(Rejection::not_found("opportunity not found").into());
        };
        self.pipeline_definition(&deal.pipeline).await
    }

    async fn pipeline_definition(
        &self,
        slug: &PipelineSlug,
    ) -> Result<PipelineDefinition, CommandError> {
        self.load_pipeline(slug).await?.state.ok_or_else(|| {
            Rejection::rule(
                "pipeline-not-found",
                format!("pipeline {slug} is not defined"),
            )
            .into()
        })
    }

    /// The load–decide–append loop for a command on one stream.
    ///
    /// It first decides on the state this handler cached for the stream, without reading the
    /// store at all: the append's expected version proves whether that state was current, since
    /// a stream at version v has exactly the events the cache folded. Only when that fails
    /// (a conflict, or an answer a stale state could have caused: a refusal or an If-Match
    /// mismatch) does it read the store and decide again, and only those reads count as attempts.
    async fn execute<D>(
        &self,
        context: &CommandContext,
        stream_id: &str,
        command: &D::Command,
    ) -> Result<CommandResult, CommandError>
    where
        D: Decider,
        D::State: Footprint + Send + Sync + 'static,
        D::Event: Serialize + DeserializeOwned,
        CommandError: From<D::Error>,
    {
        let mut attempts = 0;
        let mut trust_cache = true;
        loop {
            let cached = trust_cache
                .then(|| self.states.get::<D::State>(stream_id))
                .flatten();
            let from_cache = cached.is_some();
            let loaded = match cached {
                Some((state, version)) => Loaded { state, version },
                None => {
                    attempts += 1;
                    self.load::<D>(stream_id).await?
                }
            };
            // After loading, never before: see `qualify_lead`.
            if let Some(result) = self.earlier_answer(context).await? {
                return Ok(result);
            }
            let decided = check_if_match(context, stream_id, loaded.version)
                .and_then(|()| D::decide(command, &loaded.state).map_err(CommandError::from));
            let events = match decided {
                Ok(events) => events,
                Err(_) if from_cache => {
                    trust_cache = false;
                    continue;
                }
                Err(error) => return Err(error),
            };
            let append = stream_append(stream_id, expected(loaded.version), &events, context);
            match self.append(context, vec![append]).await {
                Ok(outcome) => {
                    if let (false, Some(stream)) = (outcome.replayed, outcome.streams.first()) {
                        let state = events.iter().fold(loaded.state, D::evolve);
                        self.states.put(stream_id, state, stream.version);
                    }
                    return Ok(answer(&outcome));
                }
                Err(CommandError::Conflict { .. }) if from_cache => trust_cache = false,
                Err(CommandError::Conflict { .. })
                    if context.expected_version.is_none() && attempts < MAX_ATTEMPTS =>
                {
                    trust_cache = false;
                }
                Err(error) => return Err(error),
            }
        }
    }

    /// The stored answer when a repeatable command was already handled.
    async fn earlier_answer(
        &self,
        context: &CommandContext,
    ) -> Result<Option<CommandResult>, CommandError> {
        if !context.repeatable {
            return Ok(None);
        }
        let Some(earlier) = self.store.find_command(context.command_id).await? else {
            return Ok(None);
        };
        if earlier.fingerprint != context.fingerprint {
            return Err(CommandError::IdempotencyKeyReused);
        }
        Ok(Some(answer(&earlier.outcome)))
    }

    async fn append(
        &self,
        context: &CommandContext,
        streams: Vec<StreamAppend>,
    ) -> Result<AppendOutcome, CommandError> {
        let request = AppendRequest {
            command_id: context.command_id,
            fingerprint: context.fingerprint.clone(),
            occurred_at: context.occurred_at,
            streams,
        };
        self.store
            .append(request)
            .await
            .map_err(|error| match error {
                AppendError::Conflict {
                    stream_id,
                    expected,
                    actual,
                } => {
                    self.states.forget_if_ahead(&stream_id, actual);
                    CommandError::Conflict {
                        stream_id,
                        expected: expected_number(&expected),
                        actual,
                    }
                }
                AppendError::FingerprintMismatch { .. } => CommandError::IdempotencyKeyReused,
                refused @ AppendError::OccurredInTheFuture { .. } => {
                    Rejection::rule("occurred-at-in-the-future", refused.to_string()).into()
                }
                refused @ AppendError::OccurredBeforeStreamHead { .. } => {
                    Rejection::rule("occurred-at-before-last-event", refused.to_string()).into()
                }
                unavailable @ AppendError::Unavailable(_) => {
                    CommandError::Unavailable(Box::new(unavailable))
                }
                other => CommandError::Unexpected(Box::new(other)),
            })
    }

    async fn load<D>(&self, stream_id: &str) -> Result<Loaded<D::State>, CommandError>
    where
        D: Decider,
        D::State: Footprint + Send + Sync + 'static,
        D::Event: DeserializeOwned,
    {
        let (mut state, mut version) = self
            .states
            .get::<D::State>(stream_id)
            .unwrap_or_else(|| (D::State::default(), 0));
        let recorded = self.store.read_stream_after(stream_id, version).await?;
        let caught_up = !recorded.is_empty();
        for event in recorded {
            let decoded: D::Event =
                codec::decode(&event.event_type, event.schema_version, event.data).map_err(
                    |error| {
                        CommandError::Corrupt(format!(
                            "{stream_id} version {}: {error}",
                            event.stream_version
                        ))
                    },
                )?;
            state = D::evolve(state, &decoded);
            version = event.stream_version;
        }
        if caught_up {
            self.states.put(stream_id, state.clone(), version);
        }
        Ok(Loaded { state, version })
    }
}

/// The deal a qualified lead becomes, as the client describes it; the owner defaults to the
/// lead's.
#[derive(Debug, Clone)]
pub struct QualifiedOpportunity {
    pub name: domain::values::Text,
    pub pipeline: PipelineSlug,
    pub amount: domain::values::Amount,
    pub currency: domain::values::Currency,
    pub expected_close_date: chrono::NaiveDate,
    pub owner: Option<Owner>,
}

fn check_if_match(
    context: &CommandContext,
    stream_id: &str,
    actual: i64,
) -> Result<(), CommandError> {
    match context.expected_version {
        Some(expected) if expected != actual => Err(CommandError::Conflict {
            stream_id: stream_id.to_owned(),
            expected: Some(expected),
            actual,
        }),
        _ => Ok(()),
    }
}

fn expected(version: i64) -> ExpectedVersion {
    if version == 0 {
        ExpectedVersion::NoStream
    } else {
        ExpectedVersion::Exact(version)
    }
}

fn expected_number(expected: &ExpectedVersion) -> Option<i64> {
    match expected {
        ExpectedVersion::Any => None,
        ExpectedVersion::NoStream => Some(0),
        ExpectedVersion::Exact(version) => Some(*version),
    }
}

fn stream_append<E: Serialize>(
    stream_id: &str,
    expected: ExpectedVersion,
    events: &[E],
    context: &CommandContext,
) -> StreamAppend {
    let metadata = context.metadata();
    StreamAppend {
        stream_id: stream_id.to_owned(),
        expected,
        events: events
            .iter()
            .map(|event| {
                let (event_type, data) = codec::encode(event);
                NewEvent {
                    event_id: Uuid::now_v7(),
                    event_type,
                    schema_version: CURRENT_SCHEMA_VERSION,
                    data,
                    metadata: metadata.clone(),
                }
            })
            .collect(),
    }
}

/// Builds the answer from an append's outcome alone, so that a repeated command gets the same
/// answer from the stored outcome: the entity is the first stream's, and a qualification's
/// opportunity is its second stream.
fn answer(outcome: &AppendOutcome) -> CommandResult {
    let entity = |index: usize| {
        outcome
            .streams
            .get(index)
            .map(|stream| eventstore::entity_of(&stream.stream_id).to_owned())
    };
    CommandResult {
        id: entity(0).unwrap_or_default(),
        version: outcome.streams.first().map_or(0, |stream| stream.version),
        position: outcome.position,
        opportunity_id: entity(1),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Clone)]
    struct Blob(usize);

    impl Footprint for Blob {
        fn footprint(&self) -> usize {
            self.0
        }
    }

    #[test]
    fn the_state_cache_stays_within_its_byte_budget_evicting_the_least_recently_used() {
        let cache = StateCache::default();
        let quarter = CACHE_BUDGET_BYTES / 4;
        for stream in ["a", "b", "c"] {
            cache.put(stream, Blob(quarter), 1);
        }
        assert!(
            cache.get::<Blob>("a").is_some(),
            "touching a makes b the oldest"
        );
        cache.put("d", Blob(quarter), 1);
        assert!(cache.bytes() <= CACHE_BUDGET_BYTES);
        assert!(
            cache.get::<Blob>("b").is_none(),
            "b was least recently used"
        );
        for stream in ["a", "c", "d"] {
            assert!(cache.get::<Blob>(stream).is_some(), "{stream} was evicted");
        }

        cache.put("a", Blob(quarter * 3), 2);
        assert!(cache.bytes() <= CACHE_BUDGET_BYTES);
        assert_eq!(cache.get::<Blob>("a").map(|(_, version)| version), Some(2));
    }

    #[test]
    fn a_cached_state_ahead_of_the_store_is_forgotten_one_at_or_behind_it_kept() {
        let cache = StateCache::default();
        cache.put("deal", Blob(10), 5);
        cache.forget_if_ahead("deal", 5);
        assert!(cache.get::<Blob>("deal").is_some());
        cache.forget_if_ahead("deal", 3);
        assert!(cache.get::<Blob>("deal").is_none());
        assert_eq!(cache.bytes(), 0);
    }
}
