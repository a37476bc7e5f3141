//! The given/when/then harness every decider test uses, and small constructors for the values
//! the tests are written in.

use std::fmt::Debug;

use chrono::{DateTime, NaiveDate, TimeZone, Utc};
use domain::Decider;
use domain::pipeline::{PipelineDefinition, StageDefinition};
use domain::values::{
    Amount, Currency, FollowUpId, FollowUpKind, ForecastCategory, Probability, StageName, Text,
};
use uuid::Uuid;

/// Starts a test of decider `D`: `Lead::given(history).when(command).then(expected)`.
pub trait Spec: Decider + Sized {
    fn given(events: impl IntoIterator<Item = Self::Event>) -> Given<Self> {
        Given {
            events: events.into_iter().collect(),
        }
    }
}

impl<D: Decider> Spec for D {}

pub struct Given<D: Decider> {
    events: Vec<D::Event>,
}

impl<D: Decider> Given<D> {
    pub fn when(self, command: D::Command) -> When<D> {
        When {
            events: self.events,
            command,
        }
    }
}

/// What `decide` answered.
pub type Decided<D> = Result<Vec<<D as Decider>::Event>, <D as Decider>::Error>;

pub struct When<D: Decider> {
    events: Vec<D::Event>,
    command: D::Command,
}

impl<D> When<D>
where
    D: Decider,
    D::Event: PartialEq + Debug,
    D::Error: Debug,
    D::Command: Debug,
{
    fn decide(&self) -> (D::State, Decided<D>) {
        let state = D::fold(&self.events);
        let decided = D::decide(&self.command, &state);
        (state, decided)
    }

    /// Asserts the events the command causes and returns the state after evolving them, for the
    /// tests that also check what the events mean.
    #[track_caller]
    pub fn then(self, expected: impl IntoIterator<Item = D::Event>) -> D::State {
        let expected: Vec<D::Event> = expected.into_iter().collect();
        let (state, decided) = self.decide();
        match decided {
            Ok(events) => {
                assert_eq!(events, expected, "events of {:?}", self.command);
                events.iter().fold(state, D::evolve)
            }
            Err(error) => panic!(
                "{:?} was refused with {error:?}, expected {expected:?}",
                self.command
            ),
        }
    }

    /// Asserts that the command is an accepted no-op.
    #[track_caller]
    pub fn then_nothing(self) -> D::State {
        self.then([])
    }
}

impl<D> When<D>
where
    D: Decider,
    D::Event: PartialEq + Debug,
    D::Error: PartialEq + Debug,
    D::Command: Debug,
{
    #[track_caller]
    pub fn then_error(self, expected: D::Error) {
        let (_, decided) = self.decide();
        match decided {
            Ok(events) => panic!(
                "{:?} was accepted with {events:?}, expected {expected:?}",
                self.command
            ),
            Err(error) => assert_eq!(error, expected, "error of {:?}", self.command),
        }
    }
}

pub fn uuid(n: u128) -> Uuid {
    Uuid::from_u128(n)
}

pub fn text(value: &str) -> Text {
    Text::parse("text", value, Text::LONG).expect("test text is valid")
}

pub fn stage(name: &str) -> StageName {
    StageName::parse(name).expect("test stage names are slugs")
}

pub fn kind(name: &str) -> FollowUpKind {
    FollowUpKind::parse(name).expect("test follow-up kinds are slugs")
}

pub fn follow_up(n: u128) -> FollowUpId {
    FollowUpId(uuid(n))
}

pub fn percent(value: i128) -> Probability {
    Probability::parse(value).expect("test probabilities are in range")
}

pub fn cents(value: i128) -> Amount {
    Amount::parse(value).expect("test amounts are valid")
}

pub fn currency(code: &str) -> Currency {
    Currency::parse(code).expect("test currencies are active")
}

pub fn date(year: i32, month: u32, day: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(year, month, day).expect("test dates exist")
}

pub fn at(year: i32, month: u32, day: u32, hour: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(year, month, day, hour, 0, 0)
        .single()
        .expect("test times exist")
}

pub fn stage_def(name: &str, probability: i128, category: ForecastCategory) -> StageDefinition {
    StageDefinition {
        name: stage(name),
        probability: percent(probability),
        forecast_category: category,
    }
}

pub fn default_pipeline() -> PipelineDefinition {
    PipelineDefinition::built_in_default()
}

/// A revision of the default pipeline: `contacted` and `quoted` removed, `demo` added, and `new`
/// and `negotiation` given other figures.
pub fn revised_pipeline() -> PipelineDefinition {
    PipelineDefinition::new(
        Text::parse("name", "Default", Text::SHORT).expect("valid name"),
        vec![
            stage_def("new", 5, ForecastCategory::Pipeline),
            stage_def("demo", 30, ForecastCategory::BestCase),
            stage_def("negotiation", 80, ForecastCategory::Commit),
        ],
    )
    .expect("the revised pipeline is valid")
}

/// The fields of each event's `data` that docs/events.md names (more may be added, none renamed).
pub fn spec_fields(event_type: &str) -> &'static [&'static str] {
    match event_type {
        "LeadCaptured" => &["name", "company", "email", "country", "source"],
        "LeadRouted" => &["owner", "rule"],
        "LeadQualified" => &["criteria"],
        "LeadDisqualified" => &["reason"],
        "LeadConverted" => &["opportunity_id"],
        "OpportunityCreated" => &[
            "name",
            "lead_id",
            "pipeline",
            "stage",
            "probability",
            "forecast_category",
            "amount",
            "currency",
            "expected_close_date",
            "owner",
        ],
        "StageChanged" => &["from", "to", "probability", "forecast_category", "reason"],
        "ProbabilityOverridden" => &["probability", "forecast_category"],
        "AmountChanged" => &["amount", "currency"],
        "CloseDateChanged" => &["expected_close_date", "previous"],
        "OwnerChanged" => &["owner", "previous"],
        "ActivityLogged" => &["activity_id", "kind", "summary", "occurred_at"],
        "FollowUpScheduled" => &["follow_up_id", "kind", "due_at", "rule"],
        "FollowUpCompleted" => &["follow_up_id"],
        "FollowUpCancelled" => &["follow_up_id", "reason"],
        "FollowUpDue" => &["follow_up_id", "kind", "due_at"],
        "OpportunityClosed" => &["outcome", "reason", "closed_at"],
        "OpportunityReopened" => &["stage", "probability", "forecast_category"],
        "PipelineDefined" | "PipelineRevised" => &["name", "stages"],
        other => panic!("{other} is not in the event catalog of docs/events.md"),
    }
}
