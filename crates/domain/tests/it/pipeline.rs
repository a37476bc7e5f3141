use domain::pipeline::{
    MAX_STAGES, Pipeline, PipelineCommand, PipelineDefinition, PipelineEvent, StageDefinition,
};
use domain::values::{ForecastCategory, Text};

use crate::support::{Spec, default_pipeline, revised_pipeline, stage, stage_def};

fn name() -> Text {
    Text::parse("name", "Default", Text::SHORT).unwrap()
}

#[test]
fn the_built_in_default_pipeline_matches_the_spec() {
    let expected = vec![
        stage_def("new", 10, ForecastCategory::Pipeline),
        stage_def("contacted", 20, ForecastCategory::Pipeline),
        stage_def("quoted", 50, ForecastCategory::BestCase),
        stage_def("negotiation", 75, ForecastCategory::Commit),
    ];
    let default = default_pipeline();
    assert_eq!(default.stages, expected);
    assert_eq!(default.first_stage().unwrap().name, stage("new"));
    assert_eq!(
        PipelineDefinition::new(default.name.clone(), expected),
        Ok(default)
    );
}

#[test]
fn defining_a_new_pipeline() {
    let state = Pipeline::given([])
        .when(PipelineCommand::Define(default_pipeline()))
        .then([PipelineEvent::PipelineDefined(default_pipeline())]);
    assert_eq!(state, Some(default_pipeline()));
}

#[test]
fn defining_the_current_definition_is_a_no_op() {
    Pipeline::given([PipelineEvent::PipelineDefined(default_pipeline())])
        .when(PipelineCommand::Define(default_pipeline()))
        .then_nothing();
    Pipeline::given([
        PipelineEvent::PipelineDefined(default_pipeline()),
        PipelineEvent::PipelineRevised(revised_pipeline()),
    ])
    .when(PipelineCommand::Define(revised_pipeline()))
    .then_nothing();
}

#[test]
fn defining_another_definition_revises() {
    let state = Pipeline::given([PipelineEvent::PipelineDefined(default_pipeline())])
        .when(PipelineCommand::Define(revised_pipeline()))
        .then([PipelineEvent::PipelineRevised(revised_pipeline())]);
    assert_eq!(state, Some(revised_pipeline()));
    // Going back to an earlier definition is a revision too.
    Pipeline::given([
        PipelineEvent::PipelineDefined(default_pipeline()),
        PipelineEvent::PipelineRevised(revised_pipeline()),
    ])
    .when(PipelineCommand::Define(default_pipeline()))
    .then([PipelineEvent::PipelineRevised(default_pipeline())]);
}

#[test]
fn a_renamed_pipeline_is_a_revision() {
    let mut renamed = default_pipeline();
    renamed.name = Text::parse("name", "Enterprise", Text::SHORT).unwrap();
    Pipeline::given([PipelineEvent::PipelineDefined(default_pipeline())])
        .when(PipelineCommand::Define(renamed.clone()))
        .then([PipelineEvent::PipelineRevised(renamed)]);
}

#[test]
fn stage_order_matters() {
    let mut reordered = default_pipeline();
    reordered.stages.swap(0, 1);
    let reordered = PipelineDefinition::new(reordered.name, reordered.stages).unwrap();
    assert_eq!(reordered.first_stage().unwrap().name, stage("contacted"));
    Pipeline::given([PipelineEvent::PipelineDefined(default_pipeline())])
        .when(PipelineCommand::Define(reordered.clone()))
        .then([PipelineEvent::PipelineRevised(reordered)]);
}

#[test]
fn a_definition_needs_a_stage() {
    let error = PipelineDefinition::new(name(), vec![]).unwrap_err();
    assert_eq!(error.field, "stages");
}

#[test]
fn a_definition_has_at_most_max_stages() {
    let stages = |count: usize| -> Vec<StageDefinition> {
        (0..count)
            .map(|n| stage_def(&format!("s{n}"), 10, ForecastCategory::Pipeline))
            .collect()
    };
    assert!(PipelineDefinition::new(name(), stages(MAX_STAGES)).is_ok());
    let error = PipelineDefinition::new(name(), stages(MAX_STAGES + 1)).unwrap_err();
    assert_eq!(error.field, "stages");
}

#[test]
fn stage_names_are_unique() {
    let error = PipelineDefinition::new(
        name(),
        vec![
            stage_def("new", 10, ForecastCategory::Pipeline),
            stage_def("demo", 30, ForecastCategory::BestCase),
            stage_def("new", 40, ForecastCategory::Commit),
        ],
    )
    .unwrap_err();
    assert!(error.problem.contains("new"), "{error}");
}

#[test]
fn stages_carry_open_categories_only() {
    for closed in [ForecastCategory::Closed, ForecastCategory::Omitted] {
        let error =
            PipelineDefinition::new(name(), vec![stage_def("won", 100, closed)]).unwrap_err();
        assert_eq!(error.field, "stages");
    }
    for open in [
        ForecastCategory::Pipeline,
        ForecastCategory::BestCase,
        ForecastCategory::Commit,
    ] {
        assert!(PipelineDefinition::new(name(), vec![stage_def("only", 0, open)]).is_ok());
    }
}

#[test]
fn stage_lookup_is_exact() {
    let default = default_pipeline();
    assert_eq!(
        default
            .stage(&stage("quoted"))
            .map(|s| s.probability.percent()),
        Some(50)
    );
    assert!(default.stage(&stage("quote")).is_none());
    assert!(default.stage(&stage("quoted-")).is_none());
}
