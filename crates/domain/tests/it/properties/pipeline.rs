use domain::pipeline::{
    Pipeline, PipelineCommand, PipelineDefinition, PipelineEvent, StageDefinition,
};
use domain::values::{ForecastCategory, Probability, StageName, Text};
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;

use super::{Step, assert_idempotent, run};
use crate::support::{default_pipeline, revised_pipeline};

fn generated() -> impl Strategy<Value = PipelineDefinition> {
    let names = vec!["new", "contacted", "quoted", "negotiation", "demo", "trial"];
    (
        prop::sample::select(vec!["Default", "Enterprise"]),
        prop::sample::subsequence(names, 1..=6).prop_shuffle(),
        prop::collection::vec(
            (
                0i128..=100,
                prop::sample::select(vec![
                    ForecastCategory::Pipeline,
                    ForecastCategory::BestCase,
                    ForecastCategory::Commit,
                ]),
            ),
            6,
        ),
    )
        .prop_map(|(name, stage_names, figures)| {
            let stages = stage_names
                .into_iter()
                .zip(figures)
                .map(|(stage, (percent, forecast_category))| StageDefinition {
                    name: StageName::parse(stage).unwrap(),
                    probability: Probability::parse(percent).unwrap(),
                    forecast_category,
                })
                .collect();
            PipelineDefinition::new(Text::parse("name", name, Text::SHORT).unwrap(), stages)
                .expect("generated definitions are valid")
        })
}

fn commands() -> impl Strategy<Value = Vec<PipelineCommand>> {
    let definition = prop_oneof![
        Just(default_pipeline()),
        Just(revised_pipeline()),
        generated(),
    ];
    prop::collection::vec(definition.prop_map(PipelineCommand::Define), 0..12)
}

fn check(step: &Step<'_, Pipeline>) -> Result<(), TestCaseError> {
    let PipelineCommand::Define(definition) = step.command;
    prop_assert!(
        step.decided.is_ok(),
        "a valid definition is always accepted"
    );
    prop_assert_eq!(
        step.after.as_ref(),
        Some(definition),
        "the last definition is current"
    );
    let expected = match step.before {
        None => vec![PipelineEvent::PipelineDefined(definition.clone())],
        Some(current) if current == definition => vec![],
        Some(_) => vec![PipelineEvent::PipelineRevised(definition.clone())],
    };
    prop_assert_eq!(step.emitted(), expected.as_slice());
    prop_assert!(matches!(step.history[0], PipelineEvent::PipelineDefined(_)));
    prop_assert!(
        step.history[1..]
            .iter()
            .all(|event| matches!(event, PipelineEvent::PipelineRevised(_))),
        "defined once, then revised"
    );
    let definitions: Vec<&PipelineDefinition> = step
        .history
        .iter()
        .map(|(PipelineEvent::PipelineDefined(d) | PipelineEvent::PipelineRevised(d))| d)
        .collect();
    prop_assert!(
        definitions.windows(2).all(|pair| pair[0] != pair[1]),
        "every revision changes the definition"
    );
    assert_idempotent(step)
}

proptest! {
    #[test]
    fn pipeline_invariants_hold_for_any_definition_sequence(commands in commands()) {
        run::<Pipeline>(&commands, check)?;
    }
}
