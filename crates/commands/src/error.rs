//! How a command can end other than in success. Domain rejections, conflicts and infrastructure
//! failures stay separate variants so that callers (the HTTP API, the workflow service) choose a
//! status or a retry by matching on the category, never on message text.

use domain::lead::LeadError;
use domain::opportunity::OpportunityError;
use domain::pipeline::PipelineError;
use eventstore::StoreError;

type Source = Box<dyn std::error::Error + Send + Sync>;

#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// The domain refused the command, or it names something that does not exist.
    #[error(transparent)]
    Rejected(#[from] Rejection),
    /// The stream is not at the version the command was decided on (or the client expected).
    /// `expected` is `None` only for an append that accepted any version, which never conflicts.
    #[error("{stream_id} is at version {actual}, expected {}", expected.map_or("any".to_owned(), |v| v.to_string()))]
    Conflict {
        stream_id: String,
        expected: Option<i64>,
        actual: i64,
    },
    #[error("this command id was already used for a different command")]
    IdempotencyKeyReused,
    /// The store could not be reached; the command may be retried as it is.
    #[error("event store unavailable")]
    Unavailable(#[source] Source),
    /// A stored event cannot be read back: a bug or a manual edit, never the client's fault.
    #[error("stored events are unreadable: {0}")]
    Corrupt(String),
    #[error("unexpected failure")]
    Unexpected(#[source] Source),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RejectionKind {
    NotFound,
    BrokenRule,
}

/// A refusal with the name of the rule it broke (kebab-case, stable for clients) and a message for
/// people.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{detail}")]
pub struct Rejection {
    pub kind: RejectionKind,
    pub rule: &'static str,
    pub detail: String,
}

impl Rejection {
    pub fn not_found(detail: impl Into<String>) -> Self {
        Self {
            kind: RejectionKind::NotFound,
            rule: "not-found",
            detail: detail.into(),
        }
    }

    pub fn rule(rule: &'static str, detail: impl Into<String>) -> Self {
        Self {
            kind: RejectionKind::BrokenRule,
            rule,
            detail: detail.into(),
        }
    }
}

impl From<StoreError> for CommandError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::Unavailable(_) => CommandError::Unavailable(Box::new(error)),
            _ => CommandError::Unexpected(Box::new(error)),
        }
    }
}

impl From<LeadError> for CommandError {
    fn from(error: LeadError) -> Self {
        let detail = error.to_string();
        Rejection::from_rule(
            match error {
                LeadError::LeadNotFound => return Rejection::not_found(detail).into(),
                LeadError::LeadAlreadyCaptured => "lead-already-captured",
                LeadError::LeadAlreadyDisqualified => "lead-already-disqualified",
                LeadError::LeadAlreadyConverted => "lead-already-converted",
                LeadError::QualificationCriteriaNotMet(_) => "qualification-criteria-not-met",
            },
            detail,
        )
    }
}

impl From<OpportunityError> for CommandError {
    fn from(error: OpportunityError) -> Self {
        use OpportunityError as E;
        let detail = error.to_string();
        Rejection::from_rule(
            match error {
                E::OpportunityNotFound | E::FollowUpNotFound(_) => {
                    return Rejection::not_found(detail).into();
                }
                E::OpportunityAlreadyExists => "opportunity-already-exists",
                E::StageNotInPipeline { .. } => "stage-not-in-pipeline",
                E::OpportunityClosed => "opportunity-closed",
                E::OpportunityAlreadyClosed => "opportunity-already-closed",
                E::OpportunityNotClosed => "opportunity-not-closed",
                E::LostReasonRequired => "lost-reason-required",
                E::EmptyOverride => "empty-override",
                E::ClosedCategoryOnOpenDeal(_) => "closed-category-on-open-deal",
                E::PipelineHasNoStages(_) => "pipeline-has-no-stages",
                E::FollowUpAlreadyExists(_) => "follow-up-already-exists",
                E::FollowUpCancelled(_) => "follow-up-cancelled",
                E::FollowUpCompleted(_) => "follow-up-completed",
            },
            detail,
        )
    }
}

impl From<PipelineError> for CommandError {
    fn from(error: PipelineError) -> Self {
        match error {}
    }
}

impl Rejection {
    fn from_rule(rule: &'static str, detail: String) -> CommandError {
        CommandError::Rejected(Rejection::rule(rule, detail))
    }
}
