//! Decoder fuzzing: the rules-file parser and the duration parser refuse bad input with an error
//! and never panic, whatever the text: arbitrary strings, and the built-in file mutated.

use proptest::prelude::*;
use workflow::config::{DEFAULT_RULES, parse, parse_duration};

/// One edit of a text, at a position given as a fraction of its length.
#[derive(Debug, Clone)]
enum Edit {
    Delete {
        at: prop::sample::Index,
        len: usize,
    },
    Insert {
        at: prop::sample::Index,
        text: String,
    },
    Duplicate {
        at: prop::sample::Index,
        len: usize,
    },
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        (any::<prop::sample::Index>(), 1usize..40).prop_map(|(at, len)| Edit::Delete { at, len }),
        (
            any::<prop::sample::Index>(),
            prop_oneof![
                any::<String>(),
                "[\\[\\]{}=\",.# \n0-9a-z_-]{1,12}",
                Just("\"-1d\"".to_owned()),
                Just("\"99999999999999999999d\"".to_owned()),
                Just("[[workflow.rules]]\n".to_owned()),
                Just("\u{e9}\u{1F600}".to_owned()),
            ]
        )
            .prop_map(|(at, text)| Edit::Insert { at, text }),
        (any::<prop::sample::Index>(), 1usize..200)
            .prop_map(|(at, len)| Edit::Duplicate { at, len }),
    ]
}

fn apply(text: &str, edits: &[Edit]) -> String {
    // Edited as characters, so every result is valid UTF-8 like any file read as text.
    let mut chars: Vec<char> = text.chars().collect();
    for edit in edits {
        match edit {
            Edit::Delete { at, len } => {
                let start = at.index(chars.len() + 1);
                let end = (start + len).min(chars.len());
                chars.drain(start..end);
            }
            Edit::Insert { at, text } => {
                let start = at.index(chars.len() + 1);
                chars.splice(start..start, text.chars());
            }
            Edit::Duplicate { at, len } => {
                let start = at.index(chars.len() + 1);
                let end = (start + len).min(chars.len());
                let copy: Vec<char> = chars[start..end].to_vec();
                chars.splice(end..end, copy);
            }
        }
    }
    chars.into_iter().collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn any_text_is_a_config_or_an_error(text in any::<String>()) {
        if let Err(error) = parse(&text, None) {
            // The message renders, with a position inside the text when it has one.
            let _ = error.to_string();
            prop_assert!(error.line.is_none_or(|line| line <= text.lines().count() + 1));
        }
    }

    #[test]
    fn a_mutated_rules_file_is_a_config_or_an_error(edits in prop::collection::vec(edit(), 1..6)) {
        let text = apply(DEFAULT_RULES, &edits);
        if let Err(error) = parse(&text, None) {
            let _ = error.to_string();
            prop_assert!(error.line.is_none_or(|line| line <= text.lines().count() + 1));
        }
    }

    #[test]
    fn any_text_is_a_duration_or_an_error(text in any::<String>()) {
        let _ = parse_duration(&text);
    }

    #[test]
    fn durations_near_the_limits_never_overflow(number in any::<u64>(), unit in "[smhdw]?") {
        let text = format!("{number}{unit}");
        if let Ok(duration) = parse_duration(&text) {
            prop_assert!(duration >= chrono::TimeDelta::zero());
            prop_assert!(duration <= chrono::TimeDelta::days(36_500));
        }
    }
}
