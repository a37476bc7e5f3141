use domain::lead::{
    Criteria, Email, LeadCommand, LeadDecider as Lead, LeadError, LeadEvent, LeadProfile,
    LeadStatus, QualificationRule,
};
use domain::values::{Country, OpportunityId};

use crate::support::{Spec, text, uuid};

fn profile() -> LeadProfile {
    LeadProfile {
        name: text("Ada Lovelace"),
        company: Some(text("Analytical Engines Ltd")),
        email: Some(Email::parse("ada@example.com").unwrap()),
        country: Some(Country::parse("GB").unwrap()),
        source: Some(text("webinar")),
    }
}

fn captured() -> LeadEvent {
    LeadEvent::LeadCaptured(profile())
}

fn routed(owner: &str) -> LeadEvent {
    LeadEvent::LeadRouted {
        owner: text(owner),
        rule: text("round-robin"),
    }
}

fn route(owner: &str) -> LeadCommand {
    LeadCommand::Route {
        owner: text(owner),
        rule: text("round-robin"),
    }
}

fn criteria(budget: bool, authority: bool, need: bool, timeline: bool) -> Criteria {
    Criteria {
        budget,
        authority,
        need,
        timeline,
    }
}

const ALL: Criteria = Criteria {
    budget: true,
    authority: true,
    need: true,
    timeline: true,
};

fn opportunity() -> OpportunityId {
    OpportunityId(uuid(42))
}

fn qualify(criteria: Criteria) -> LeadCommand {
    LeadCommand::Qualify {
        criteria,
        rule: QualificationRule::default(),
        opportunity_id: opportunity(),
    }
}

fn qualified(criteria: Criteria) -> [LeadEvent; 2] {
    [
        LeadEvent::LeadQualified { criteria },
        LeadEvent::LeadConverted {
            opportunity_id: opportunity(),
        },
    ]
}

/// A lead captured, qualified and converted.
fn converted() -> Vec<LeadEvent> {
    let mut history = vec![captured()];
    history.extend(qualified(ALL));
    history
}

fn disqualify() -> LeadCommand {
    LeadCommand::Disqualify {
        reason: text("no budget this year"),
    }
}

fn disqualified() -> LeadEvent {
    LeadEvent::LeadDisqualified {
        reason: text("no budget this year"),
    }
}

fn not_met() -> LeadError {
    LeadError::QualificationCriteriaNotMet(QualificationRule::default().describe())
}

#[test]
fn capture_starts_a_lead() {
    let state = Lead::given([])
        .when(LeadCommand::Capture(profile()))
        .then([captured()]);
    let lead = state.expect("captured");
    assert_eq!(lead.status, LeadStatus::Open);
    assert_eq!(lead.profile, profile());
    assert_eq!(lead.owner, None);
}

#[test]
fn capture_twice_is_refused() {
    Lead::given([captured()])
        .when(LeadCommand::Capture(profile()))
        .then_error(LeadError::LeadAlreadyCaptured);
}

#[test]
fn commands_on_a_missing_lead_are_refused() {
    for command in [route("alice"), qualify(ALL), disqualify()] {
        Lead::given([])
            .when(command)
            .then_error(LeadError::LeadNotFound);
    }
}

#[test]
fn routing_assigns_an_owner() {
    let lead = Lead::given([captured()])
        .when(route("alice"))
        .then([routed("alice")])
        .unwrap();
    assert_eq!(lead.owner, Some(text("alice")));
}

#[test]
fn routing_to_the_current_owner_is_a_no_op() {
    Lead::given([captured(), routed("alice")])
        .when(route("alice"))
        .then_nothing();
}

#[test]
fn routing_to_another_owner_reassigns() {
    Lead::given([captured(), routed("alice")])
        .when(route("bob"))
        .then([routed("bob")]);
}

#[test]
fn closed_leads_cannot_be_routed() {
    Lead::given([captured(), disqualified()])
        .when(route("alice"))
        .then_error(LeadError::LeadAlreadyDisqualified);
    Lead::given(converted())
        .when(route("alice"))
        .then_error(LeadError::LeadAlreadyConverted);
}

/// The default rule: `need` and at least two of budget, authority and timeline, over all 16
/// combinations.
#[test]
fn default_qualification_rule_table() {
    #[rustfmt::skip]
    let table = [
        // budget, authority, need,  timeline, qualifies
        (false, false, false, false, false),
        (false, false, false, true,  false),
        (false, false, true,  false, false),
        (false, false, true,  true,  false),
        (false, true,  false, false, false),
        (false, true,  false, true,  false),
        (false, true,  true,  false, false),
        (false, true,  true,  true,  true),
        (true,  false, false, false, false),
        (true,  false, false, true,  false),
        (true,  false, true,  false, false),
        (true,  false, true,  true,  true),
        (true,  true,  false, false, false),
        (true,  true,  false, true,  false),
        (true,  true,  true,  false, true),
        (true,  true,  true,  true,  true),
    ];
    for (budget, authority, need, timeline, qualifies) in table {
        let answers = criteria(budget, authority, need, timeline);
        assert_eq!(
            QualificationRule::default().accepts(&answers),
            qualifies,
            "{answers:?}"
        );
        let when = Lead::given([captured(), routed("alice")]).when(qualify(answers));
        if qualifies {
            let lead = when.then(qualified(answers)).unwrap();
            assert_eq!(lead.status, LeadStatus::Qualified);
            assert_eq!(lead.criteria, Some(answers));
            assert_eq!(lead.opportunity_id, Some(opportunity()));
        } else {
            when.then_error(not_met());
        }
    }
}

#[test]
fn refusal_names_the_rule() {
    assert_eq!(
        not_met().to_string(),
        "lead does not meet the qualification criteria: qualification requires need and at \
         least 2 of budget, authority and timeline"
    );
}

#[test]
fn a_configured_rule_replaces_the_default() {
    let lenient = QualificationRule {
        require_need: false,
        min_of_budget_authority_timeline: 1,
    };
    let answers = criteria(true, false, false, false);
    Lead::given([captured()])
        .when(LeadCommand::Qualify {
            criteria: answers,
            rule: lenient,
            opportunity_id: opportunity(),
        })
        .then(qualified(answers));

    let strict = QualificationRule {
        require_need: true,
        min_of_budget_authority_timeline: 3,
    };
    Lead::given([captured()])
        .when(LeadCommand::Qualify {
            criteria: criteria(true, true, true, false),
            rule: strict,
            opportunity_id: opportunity(),
        })
        .then_error(LeadError::QualificationCriteriaNotMet(strict.describe()));
    assert_eq!(
        lenient.describe(),
        "qualification requires at least 1 of budget, authority and timeline"
    );
}

#[test]
fn a_converted_lead_cannot_be_qualified_again() {
    Lead::given(converted())
        .when(qualify(ALL))
        .then_error(LeadError::LeadAlreadyConverted);
}

#[test]
fn a_disqualified_lead_cannot_be_qualified() {
    Lead::given([captured(), disqualified()])
        .when(qualify(ALL))
        .then_error(LeadError::LeadAlreadyDisqualified);
}

#[test]
fn disqualifying_records_the_reason() {
    let lead = Lead::given([captured(), routed("alice")])
        .when(disqualify())
        .then([disqualified()])
        .unwrap();
    assert_eq!(lead.status, LeadStatus::Disqualified);
    assert_eq!(
        lead.disqualification_reason,
        Some(text("no budget this year"))
    );
    assert_eq!(lead.opportunity_id, None);
}

#[test]
fn a_closed_lead_cannot_be_disqualified() {
    Lead::given([captured(), disqualified()])
        .when(disqualify())
        .then_error(LeadError::LeadAlreadyDisqualified);
    Lead::given(converted())
        .when(disqualify())
        .then_error(LeadError::LeadAlreadyConverted);
}

#[test]
fn events_before_capture_leave_no_lead() {
    Lead::given([routed("alice"), disqualified()])
        .when(route("alice"))
        .then_error(LeadError::LeadNotFound);
}

#[test]
fn email_shapes() {
    for good in ["a@b", "ada@example.com", "first.last+tag@sub.example.org"] {
        assert!(Email::parse(good).is_ok(), "{good}");
    }
    let too_long = format!("{}@example.com", "a".repeat(243));
    for bad in [
        "",
        "@",
        "a@",
        "@b",
        "a@b@c",
        "a b@c",
        "ada",
        too_long.as_str(),
    ] {
        assert!(Email::parse(bad).is_err(), "{bad}");
    }
    let longest = format!("{}@example.com", "a".repeat(242));
    assert_eq!(longest.len(), 254);
    assert!(Email::parse(&longest).is_ok());
}
