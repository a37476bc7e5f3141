//! The pipeline aggregate: an ordered list of open stages, each with a default probability and a
//! forecast category. Revisions append a new definition; deals already in a stage that a revision
//! removed stay there until they move.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::decider::Decider;
use crate::values::{ForecastCategory, InvalidValue, Probability, StageName, Text};

/// At most this many stages, so that a board stays readable and a definition stays small.
pub const MAX_STAGES: usize = 50;

/// One open stage of a pipeline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct StageDefinition {
    /// The stage's name, unique within its pipeline.
    pub name: StageName,
    /// The probability a deal takes when it enters this stage.
    pub probability: Probability,
    /// The forecast category a deal takes when it enters this stage: `pipeline`, `best_case` or
    /// `commit` (never `closed` or `omitted`).
    pub forecast_category: ForecastCategory,
}

/// A validated definition: at least one stage, unique stage names, open categories only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct PipelineDefinition {
    /// The pipeline's display name; its slug is in the stream id, `pipeline-<slug>`.
    pub name: Text,
    /// The open stages in order, first to last; at most 50, names unique.
    #[schemars(length(min = 1, max = MAX_STAGES))]
    pub stages: Vec<StageDefinition>,
}

impl PipelineDefinition {
    pub fn new(name: Text, stages: Vec<StageDefinition>) -> Result<Self, InvalidValue> {
        if stages.is_empty() {
            return Err(InvalidValue::new(
                "stages",
                "a pipeline needs at least one stage",
            ));
        }
        if stages.len() > MAX_STAGES {
            return Err(InvalidValue::new(
                "stages",
                format!("a pipeline has at most {MAX_STAGES} stages"),
            ));
        }
        for (index, stage) in stages.iter().enumerate() {
            if stages[..index]
                .iter()
                .any(|earlier| earlier.name == stage.name)
            {
                return Err(InvalidValue::new(
                    "stages",
                    format!("stage {} is listed twice", stage.name),
                ));
            }
            if matches!(
                stage.forecast_category,
                ForecastCategory::Closed | ForecastCategory::Omitted
            ) {
                return Err(InvalidValue::new(
                    "stages",
                    format!(
                        "stage {} has category {}, which only closed deals carry",
                        stage.name,
                        stage.forecast_category.as_str()
                    ),
                ));
            }
        }
        Ok(Self { name, stages })
    }

    /// The built-in pipeline every store starts with: new, contacted, quoted, negotiation.
    pub fn built_in_default() -> Self {
        let stage = |name: &str, percent: i128, forecast_category| StageDefinition {
            name: StageName::parse(name).expect("built-in stage names are slugs"),
            probability: Probability::parse(percent).expect("built-in probabilities are in range"),
            forecast_category,
        };
        Self {
            name: Text::parse("name", "Default", Text::SHORT).expect("built-in name is valid"),
            stages: vec![
                stage("new", 10, ForecastCategory::Pipeline),
                stage("contacted", 20, ForecastCategory::Pipeline),
                stage("quoted", 50, ForecastCategory::BestCase),
                stage("negotiation", 75, ForecastCategory::Commit),
            ],
        }
    }

    pub fn stage(&self, name: &StageName) -> Option<&StageDefinition> {
        self.stages.iter().find(|stage| &stage.name == name)
    }

    /// `None` only for a definition that bypassed [`PipelineDefinition::new`].
    pub fn first_stage(&self) -> Option<&StageDefinition> {
        self.stages.first()
    }
}

/// The events of a `pipeline-<slug>` stream. The doc comments of the variants are the
/// descriptions in the published JSON Schemas (docs/schemas).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "event_type", content = "data")]
pub enum PipelineEvent {
    /// The pipeline was defined: the first event of every pipeline stream.
    PipelineDefined(PipelineDefinition),
    /// The pipeline's definition was replaced as a whole. Deals keep the stage, probability and
    /// category they have until their next stage change.
    PipelineRevised(PipelineDefinition),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PipelineCommand {
    /// Defines the pipeline, or revises it when it exists. Defining what is already current is a
    /// no-op, so `PUT` stays idempotent.
    Define(PipelineDefinition),
}

/// The current definition; `None` until defined.
pub type PipelineState = Option<PipelineDefinition>;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PipelineError {}

pub struct Pipeline;

impl Decider for Pipeline {
    type State = PipelineState;
    type Command = PipelineCommand;
    type Event = PipelineEvent;
    type Error = PipelineError;

    fn decide(
        command: &PipelineCommand,
        state: &PipelineState,
    ) -> Result<Vec<PipelineEvent>, PipelineError> {
        let PipelineCommand::Define(definition) = command;
        Ok(match state {
            None => vec![PipelineEvent::PipelineDefined(definition.clone())],
            Some(current) if current == definition => vec![],
            Some(_) => vec![PipelineEvent::PipelineRevised(definition.clone())],
        })
    }

    fn evolve(_: PipelineState, event: &PipelineEvent) -> PipelineState {
        let (PipelineEvent::PipelineDefined(definition)
        | PipelineEvent::PipelineRevised(definition)) = event;
        Some(definition.clone())
    }
}
