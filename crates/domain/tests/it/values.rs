use domain::values::{
    ActivityKind, Amount, Country, Currency, FollowUpKind, ForecastCategory, LeadId, OpportunityId,
    Outcome, PipelineSlug, Probability, StageName, Text, parse_date, parse_owner, weighted_amount,
};

use crate::support::{cents, date, percent, uuid};

#[test]
fn currencies_are_active_iso_4217_codes() {
    for good in ["EUR", "USD", "JPY", "GBP", "CHF", "BHD", "CLF"] {
        assert_eq!(
            Currency::parse(good).map(|c| c.to_string()),
            Ok(good.to_owned())
        );
    }
    // Unknown, special (no currency, testing), withdrawn, and malformed codes.
    for bad in [
        "QQQ", "XXX", "XTS", "HRK", "DEM", "eur", "Eur", "EU", "EURO", "", " EUR", "EUR ", "E1R",
        "ÉUR",
    ] {
        let error = Currency::parse(bad).unwrap_err();
        assert_eq!(error.field, "currency", "{bad}");
    }
}

#[test]
fn countries_are_upper_case_alpha_2_codes() {
    for good in ["DE", "US", "GB", "JP", "BR"] {
        assert_eq!(Country::parse(good).unwrap().as_str(), good);
    }
    for bad in ["de", "De", "ZZ", "UK", "DEU", "D", "", " DE", "276"] {
        let error = Country::parse(bad).unwrap_err();
        assert_eq!(error.field, "country", "{bad}");
    }
}

#[test]
fn amounts_are_non_negative_i64_minor_units() {
    assert_eq!(Amount::parse(0), Ok(Amount::ZERO));
    assert_eq!(Amount::parse(1).unwrap().minor_units(), 1);
    assert_eq!(
        Amount::parse(i128::from(i64::MAX)).unwrap().minor_units(),
        i64::MAX
    );
    for bad in [
        -1,
        i128::from(i64::MIN),
        i128::from(i64::MAX) + 1,
        i128::MAX,
        i128::MIN,
    ] {
        assert_eq!(Amount::parse(bad).unwrap_err().field, "amount", "{bad}");
    }
}

#[test]
fn probabilities_are_percentages() {
    for good in [0, 1, 50, 99, 100] {
        assert_eq!(
            i128::from(Probability::parse(good).unwrap().percent()),
            good
        );
    }
    assert_eq!(Probability::parse(0), Ok(Probability::NONE));
    assert_eq!(Probability::parse(100), Ok(Probability::CERTAIN));
    for bad in [-1, 101, 255, 256, -256, i128::MAX, i128::MIN] {
        assert_eq!(
            Probability::parse(bad).unwrap_err().field,
            "probability",
            "{bad}"
        );
    }
}

#[test]
fn dates_are_year_month_day() {
    assert_eq!(parse_date("d", "2026-12-31"), Ok(date(2026, 12, 31)));
    assert_eq!(parse_date("d", "2024-02-29"), Ok(date(2024, 2, 29)));
    assert_eq!(parse_date("d", "0001-01-01"), Ok(date(1, 1, 1)));
    assert_eq!(parse_date("d", "9999-12-31"), Ok(date(9999, 12, 31)));
    for bad in [
        "",
        "2026-02-30",
        "2025-02-29",
        "2026-13-01",
        "2026-00-10",
        "2026-01-00",
        "2026-2-3",
        "2026-1-031",
        "2026-01-1 ",
        " 2026-1-01",
        "2026-01- 1",
        "20260-1-01",
        "+2026-1-01",
        "-2026-1-01",
        "26-01-2026",
        "2026/01/01",
        "2026-01-01T00:00:00Z",
        "２０２６-01-01",
    ] {
        let error = parse_date("expected_close_date", bad).unwrap_err();
        assert_eq!(error.field, "expected_close_date", "{bad:?}");
    }
}

#[test]
fn slugs_are_lower_case_and_bounded() {
    let longest = "a".repeat(64);
    for good in [
        "a",
        "0",
        "new",
        "closed-won",
        "stage_2",
        "9lives",
        longest.as_str(),
    ] {
        assert_eq!(StageName::parse(good).unwrap().as_str(), good);
        assert_eq!(PipelineSlug::parse(good).unwrap().as_str(), good);
        assert_eq!(FollowUpKind::parse(good).unwrap().as_str(), good);
    }
    let too_long = "a".repeat(65);
    for bad in [
        "",
        "-new",
        "_new",
        "New",
        "NEW",
        "new stage",
        "new.stage",
        "ne/w",
        "nëw",
        " new",
        "new\n",
        too_long.as_str(),
    ] {
        assert_eq!(StageName::parse(bad).unwrap_err().field, "stage", "{bad:?}");
        assert_eq!(
            PipelineSlug::parse(bad).unwrap_err().field,
            "pipeline",
            "{bad:?}"
        );
        assert_eq!(
            FollowUpKind::parse(bad).unwrap_err().field,
            "kind",
            "{bad:?}"
        );
    }
}

#[test]
fn stage_names_compare_exactly() {
    assert_ne!(
        StageName::parse("quoted").unwrap(),
        StageName::parse("quoted-").unwrap()
    );
}

#[test]
fn text_is_trimmed_and_bounded_in_characters() {
    assert_eq!(Text::parse("name", "  Ada \n", 10).unwrap().as_str(), "Ada");
    assert_eq!(Text::parse("name", "", 10).unwrap_err().field, "name");
    assert_eq!(Text::parse("name", " \t\n ", 10).unwrap_err().field, "name");
    // Characters, not bytes.
    assert!(Text::parse("name", &"ü".repeat(10), 10).is_ok());
    assert!(Text::parse("name", &"ü".repeat(11), 10).is_err());
    assert!(parse_owner(&"x".repeat(Text::SHORT)).is_ok());
    assert_eq!(
        parse_owner(&"x".repeat(Text::SHORT + 1)).unwrap_err().field,
        "owner"
    );
}

#[test]
fn weighted_amount_rounds_halves_away_from_zero() {
    #[rustfmt::skip]
    let table: [(i128, i128, i64); 14] = [
        // amount, percent, weighted
        (0, 50, 0),
        (1, 50, 1),        // 0.5 -> 1
        (3, 50, 2),        // 1.5 -> 2
        (5, 10, 1),        // 0.5 -> 1
        (4, 10, 0),        // 0.4 -> 0
        (149, 1, 1),       // 1.49 -> 1
        (150, 1, 2),       // 1.5 -> 2
        (151, 1, 2),
        (1, 49, 0),        // 0.49 -> 0
        (1, 51, 1),        // 0.51 -> 1
        (1_000_000, 75, 750_000),
        (12_345, 33, 4_074), // 4073.85 -> 4074
        (i64::MAX as i128, 100, i64::MAX),
        (i64::MAX as i128, 0, 0),
    ];
    for (amount, probability, expected) in table {
        assert_eq!(
            weighted_amount(cents(amount), percent(probability)),
            expected,
            "{amount} × {probability}%"
        );
    }
    // i64::MAX × 50% = 4611686018427387903.5, rounded up.
    assert_eq!(
        weighted_amount(cents(i64::MAX.into()), percent(50)),
        4_611_686_018_427_387_904
    );
    assert_eq!(
        weighted_amount(cents(i64::MAX.into()), percent(99)),
        i64::try_from((i128::from(i64::MAX) * 99 + 50) / 100).unwrap()
    );
}

#[test]
fn forecast_categories_for_open_deals() {
    for (text, category) in [
        ("pipeline", ForecastCategory::Pipeline),
        ("best_case", ForecastCategory::BestCase),
        ("commit", ForecastCategory::Commit),
    ] {
        assert_eq!(ForecastCategory::parse_open(text), Ok(category));
        assert_eq!(category.as_str(), text);
    }
    for bad in ["closed", "omitted", "Pipeline", "best-case", ""] {
        assert!(ForecastCategory::parse_open(bad).is_err(), "{bad}");
    }
    assert_eq!(ForecastCategory::Closed.as_str(), "closed");
    assert_eq!(ForecastCategory::Omitted.as_str(), "omitted");
}

#[test]
fn outcomes_and_their_standing() {
    assert_eq!(Outcome::parse("won"), Ok(Outcome::Won));
    assert_eq!(Outcome::parse("lost"), Ok(Outcome::Lost));
    assert!(Outcome::parse("Won").is_err());
    assert!(Outcome::parse("").is_err());
    assert_eq!(
        Outcome::Won.standing(),
        (Probability::CERTAIN, ForecastCategory::Closed)
    );
    assert_eq!(
        Outcome::Lost.standing(),
        (Probability::NONE, ForecastCategory::Omitted)
    );
}

#[test]
fn activity_kinds() {
    for (text, kind) in [
        ("call", ActivityKind::Call),
        ("email", ActivityKind::Email),
        ("meeting", ActivityKind::Meeting),
        ("note", ActivityKind::Note),
        ("quote_sent", ActivityKind::QuoteSent),
    ] {
        assert_eq!(ActivityKind::parse(text), Ok(kind));
        assert_eq!(kind.as_str(), text);
    }
    for bad in ["Call", "quote-sent", "sms", ""] {
        assert_eq!(ActivityKind::parse(bad).unwrap_err().field, "kind", "{bad}");
    }
}

#[test]
fn stream_ids_follow_category_id() {
    let id = uuid(0x0193_0000_0000_7000_8000_0000_0000_0001);
    assert_eq!(LeadId(id).stream_id(), format!("lead-{id}"));
    assert_eq!(OpportunityId(id).stream_id(), format!("opportunity-{id}"));
    assert_eq!(
        PipelineSlug::default_pipeline().stream_id(),
        "pipeline-default"
    );
    assert_eq!(LeadId::CATEGORY, "lead");
    assert_eq!(OpportunityId::CATEGORY, "opportunity");
}
