//! The rules file: the documented example is accepted, malformed files are refused with the
//! line and the problem.

use std::path::Path;

use workflow::{WorkflowConfig, load_config};

fn refuse(text: &str) -> String {
    let path = std::env::temp_dir().join(format!("workflow-{}.toml", uuid::Uuid::now_v7()));
    std::fs::write(&path, text).expect("the temporary file is written");
    let result = load_config(Some(&path));
    let _ = std::fs::remove_file(&path);
    match result {
        Ok(config) => panic!("accepted a malformed file: {config:?}"),
        Err(error) => error.to_string(),
    }
}

#[test]
fn the_deployed_example_is_the_default() {
    let deployed = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/dealstream.toml");
    let config = load_config(Some(&deployed)).expect("deploy/dealstream.toml is accepted");
    assert_eq!(config, WorkflowConfig::default());
    assert_eq!(load_config(None).expect("defaults"), config);
}

#[test]
fn an_unknown_key_is_refused_with_its_line() {
    let message = refuse(
        r#"[[workflow.rules]]
name = "first-contact"
on = "OpportunityCreated"
schedule_follow_up = { kind = "first-contact", after = "1d" }
send_email = true
"#,
    );
    assert!(message.contains(":5:"), "{message}");
    assert!(message.contains("unknown field `send_email`"), "{message}");
}

#[test]
fn a_bad_duration_is_refused_with_its_line() {
    let message = refuse(
        r#"
[[workflow.rules]]
name = "first-contact"
on = "OpportunityCreated"
schedule_follow_up = { kind = "first-contact", after = "1 day" }
"#,
    );
    assert!(message.contains(":5:"), "{message}");
    assert!(message.contains("\"1 day\" is not a duration"), "{message}");
}

#[test]
fn an_unknown_event_is_refused_with_its_line() {
    let message = refuse(
        r#"
[[workflow.rules]]
name = "typo"
on = "OpportunityCreatd"
move_to_stage = "contacted"
"#,
    );
    assert!(message.contains(":4:"), "{message}");
    assert!(
        message.contains("unknown event \"OpportunityCreatd\""),
        "{message}"
    );
}

#[test]
fn a_rule_without_an_action_is_refused() {
    let message = refuse(
        r#"
[[workflow.rules]]
name = "idle"
on = "OpportunityCreated"
"#,
    );
    assert!(message.contains("rule idle has no action"), "{message}");
}

#[test]
fn a_misplaced_condition_and_bad_values_are_refused() {
    let message = refuse(
        r#"
[[workflow.rules]]
name = "odd"
on = "OpportunityCreated"
when = { activity_kind = ["call"] }
move_to_stage = "contacted"
"#,
    );
    assert!(message.contains(":5:"), "{message}");
    assert!(message.contains("applies only to"), "{message}");

    let message = refuse("[workflow.reminders]\nstale_after = \"2w\"\n");
    assert!(
        message.contains(":2:") && message.contains("stale_after"),
        "{message}"
    );

    let message = refuse(
        "[[routing.rules]]\nname = \"x\"\nwhen = { country = [\"Germany\"] }\nowner = \"a\"\n",
    );
    assert!(message.contains(":3:"), "{message}");

    let message = refuse("[[routing.rules]]\nname = \"x\"\nround_robin = [\"a\"]\nowner = \"b\"\n");
    assert!(
        message.contains("exactly one of round_robin or owner"),
        "{message}"
    );

    let message = refuse("[workflow\n");
    assert!(message.contains(":1:"), "{message}");
}
