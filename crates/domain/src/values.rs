//! Validated value types shared by the aggregates.
//!
//! Each type has a parsing constructor that enforces the contract of docs/events.md and is used at
//! the command boundary. Deserialising a value (from a stored event) does not validate again: an
//! event is a fact, and a rule that changes later (a currency withdrawn from ISO 4217, say) must not
//! make history unreadable.

use std::fmt;

use chrono::{Datelike, SubsecRound};

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// A value that failed its parsing constructor. The message names the field and what was wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {problem}")]
pub struct InvalidValue {
    pub field: &'static str,
    pub problem: String,
}

impl InvalidValue {
    pub fn new(field: &'static str, problem: impl Into<String>) -> Self {
        Self {
            field,
            problem: problem.into(),
        }
    }
}

macro_rules! uuid_id {
    ($name:ident, $category:literal, $doc:literal) => {
        #[doc = $doc]
        #[derive(
            Debug,
            Clone,
            Copy,
            PartialEq,
            Eq,
            PartialOrd,
            Ord,
            Hash,
            Serialize,
            Deserialize,
            JsonSchema,
        )]
        #[serde(transparent)]
        pub struct $name(pub Uuid);

        impl $name {
            pub const CATEGORY: &'static str = $category;

            pub fn stream_id(&self) -> String {
                format!("{}-{}", $category, self.0)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(formatter)
            }
        }
    };
}

uuid_id!(
    LeadId,
    "lead",
    "The id of a lead, a UUID (v7 for new leads); its stream is `lead-<id>`."
);
uuid_id!(
    OpportunityId,
    "opportunity",
    "The id of an opportunity (a deal), a UUID (v7 for new deals); its stream is `opportunity-<id>`."
);

/// Identifies one follow-up within its opportunity.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
#[serde(transparent)]
pub struct FollowUpId(pub Uuid);

impl fmt::Display for FollowUpId {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(formatter)
    }
}

/// Identifies one logged activity.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
#[serde(transparent)]
pub struct ActivityId(pub Uuid);

/// A money amount in the currency's minor unit (cents for EUR), a 64-bit integer. Never negative.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
#[serde(transparent)]
pub struct Amount(#[schemars(range(min = 0))] i64);

impl Amount {
    pub const ZERO: Amount = Amount(0);

    /// Accepts any integer width so that the caller can report "too large" instead of failing to
    /// represent the number at all.
    pub fn parse(value: i128) -> Result<Self, InvalidValue> {
        if value < 0 {
            return Err(InvalidValue::new("amount", "must not be negative"));
        }
        i64::try_from(value).map(Amount).map_err(|_| {
            InvalidValue::new(
                "amount",
                format!("must be at most {} minor units", i64::MAX),
            )
        })
    }

    pub fn minor_units(self) -> i64 {
        self.0
    }
}

/// An active ISO 4217 currency code, three upper-case letters.
#[derive(
    Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
#[serde(transparent)]
pub struct Currency(#[schemars(regex(pattern = r"^[A-Z]{3}$"))] String);

impl Currency {
    pub fn parse(code: &str) -> Result<Self, InvalidValue> {
        let well_formed = code.len() == 3 && code.bytes().all(|byte| byte.is_ascii_uppercase());
        if !well_formed {
            return Err(InvalidValue::new(
                "currency",
                format!("{code:?} is not three upper-case letters"),
            ));
        }
        match iso_currency::Currency::from_code(code) {
            Some(currency) if !currency.is_special() && currency.is_superseded().is_none() => {
                Ok(Currency(code.to_owned()))
            }
            _ => Err(InvalidValue::new(
                "currency",
                format!("{code} is not an active ISO 4217 currency"),
            )),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(&self.0)
    }
}

/// An ISO 3166-1 alpha-2 country code in upper case.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(transparent)]
pub struct Country(#[schemars(regex(pattern = r"^[A-Z]{2}$"))] String);

impl Country {
    pub fn parse(code: &str) -> Result<Self, InvalidValue> {
        let upper_case = code.len() == 2 && code.bytes().all(|byte| byte.is_ascii_uppercase());
        if upper_case && isocountry::CountryCode::for_alpha2(code).is_ok() {
            Ok(Country(code.to_owned()))
        } else {
            Err(InvalidValue::new(
                "country",
                format!("{code:?} is not an upper-case ISO 3166-1 alpha-2 code"),
            ))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// An integer percentage from 0 to 100.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
#[serde(transparent)]
pub struct Probability(#[schemars(range(min = 0, max = 100))] u8);

impl Probability {
    pub const CERTAIN: Probability = Probability(100);
    pub const NONE: Probability = Probability(0);

    pub fn parse(value: i128) -> Result<Self, InvalidValue> {
        u8::try_from(value)
            .ok()
            .filter(|percent| *percent <= 100)
            .map(Probability)
            .ok_or_else(|| InvalidValue::new("probability", "must be an integer from 0 to 100"))
    }

    pub fn percent(self) -> u8 {
        self.0
    }
}

/// Weighted amount of one deal: amount × probability / 100, rounded to the nearest minor unit with
/// halves away from zero. Amounts are never negative, so "away from zero" is "up".
pub fn weighted_amount(amount: Amount, probability: Probability) -> i64 {
    let product = i128::from(amount.minor_units()) * i128::from(probability.percent());
    let rounded = (product + 50) / 100;
    // amount ≤ i64::MAX and probability ≤ 100, so the rounded quotient is ≤ amount and fits.
    i64::try_from(rounded).expect("weighted amount never exceeds the amount")
}

/// Where a deal counts in the forecast. `closed` and `omitted` belong to closed deals only.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum ForecastCategory {
    Pipeline,
    BestCase,
    Commit,
    Closed,
    Omitted,
}

impl ForecastCategory {
    pub fn as_str(self) -> &'static str {
        match self {
            ForecastCategory::Pipeline => "pipeline",
            ForecastCategory::BestCase => "best_case",
            ForecastCategory::Commit => "commit",
            ForecastCategory::Closed => "closed",
            ForecastCategory::Omitted => "omitted",
        }
    }

    /// Parses a category an open deal or a stage may carry.
    pub fn parse_open(value: &str) -> Result<Self, InvalidValue> {
        match value {
            "pipeline" => Ok(ForecastCategory::Pipeline),
            "best_case" => Ok(ForecastCategory::BestCase),
            "commit" => Ok(ForecastCategory::Commit),
            _ => Err(InvalidValue::new(
                "forecast_category",
                format!("{value:?} is not one of pipeline, best_case, commit"),
            )),
        }
    }
}

fn is_slug(value: &str) -> bool {
    let mut bytes = value.bytes();
    matches!(bytes.next(), Some(b'a'..=b'z' | b'0'..=b'9'))
        && value.len() <= 64
        && bytes.all(|byte| matches!(byte, b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_'))
}

macro_rules! slug {
    ($name:ident, $field:literal) => {
        /// A lower-case slug: `a-z`, `0-9`, `-` and `_`, starting with a letter or digit, at most
        /// 64 bytes. Compared exactly.
        #[derive(
            Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
        )]
        #[serde(transparent)]
        pub struct $name(
            // The pattern and length are `is_slug` in JSON Schema terms; the schema test checks
            // them against values `parse` accepts.
            #[schemars(regex(pattern = r"^[a-z0-9][a-z0-9_-]*$"), length(max = 64))] String,
        );

        impl $name {
            pub fn parse(value: &str) -> Result<Self, InvalidValue> {
                if is_slug(value) {
                    Ok($name(value.to_owned()))
                } else {
                    Err(InvalidValue::new(
                        $field,
                        format!(
                            "{value:?} is not a lower-case slug (a-z, 0-9, '-', '_', at most 64)"
                        ),
                    ))
                }
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
                formatter.write_str(&self.0)
            }
        }
    };
}

slug!(StageName, "stage");
slug!(PipelineSlug, "pipeline");
slug!(FollowUpKind, "kind");

impl PipelineSlug {
    pub fn default_pipeline() -> Self {
        PipelineSlug("default".to_owned())
    }

    pub fn stream_id(&self) -> String {
        format!("pipeline-{}", self.0)
    }
}

/// Free text with bounds on its length in characters. Leading and trailing white space is trimmed
/// so that "  " counts as empty.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(transparent)]
pub struct Text(#[schemars(length(min = 1, max = Text::LONG))] String);

impl Text {
    pub const SHORT: usize = 200;
    pub const LONG: usize = 10_000;

    pub fn parse(field: &'static str, value: &str, max_chars: usize) -> Result<Self, InvalidValue> {
        let trimmed = value.trim();
        if trimmed.is_empty() {
            return Err(InvalidValue::new(field, "must not be empty"));
        }
        // PostgreSQL cannot store NUL in text or jsonb; other control characters have no place
        // in names and summaries either (new lines and tabs do).
        if trimmed
            .chars()
            .any(|character| character.is_control() && !matches!(character, '\n' | '\r' | '\t'))
        {
            return Err(InvalidValue::new(
                field,
                "must not contain control characters",
            ));
        }
        if trimmed.chars().count() > max_chars {
            return Err(InvalidValue::new(
                field,
                format!("must be at most {max_chars} characters"),
            ));
        }
        Ok(Text(trimmed.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Text {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(&self.0)
    }
}

/// Who owns a lead or a deal: a user name or handle, at most 200 characters.
pub type Owner = Text;

pub fn parse_owner(value: &str) -> Result<Owner, InvalidValue> {
    Text::parse("owner", value, Text::SHORT)
}

/// What kind of touch an activity was.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ActivityKind {
    Call,
    Email,
    Meeting,
    Note,
    QuoteSent,
}

impl ActivityKind {
    pub const ALL: [ActivityKind; 5] = [
        ActivityKind::Call,
        ActivityKind::Email,
        ActivityKind::Meeting,
        ActivityKind::Note,
        ActivityKind::QuoteSent,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ActivityKind::Call => "call",
            ActivityKind::Email => "email",
            ActivityKind::Meeting => "meeting",
            ActivityKind::Note => "note",
            ActivityKind::QuoteSent => "quote_sent",
        }
    }

    pub fn parse(value: &str) -> Result<Self, InvalidValue> {
        Self::ALL
            .into_iter()
            .find(|kind| kind.as_str() == value)
            .ok_or_else(|| {
                InvalidValue::new(
                    "kind",
                    format!("{value:?} is not one of call, email, meeting, note, quote_sent"),
                )
            })
    }
}

/// How a deal ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Won,
    Lost,
}

impl Outcome {
    pub fn parse(value: &str) -> Result<Self, InvalidValue> {
        match value {
            "won" => Ok(Outcome::Won),
            "lost" => Ok(Outcome::Lost),
            _ => Err(InvalidValue::new(
                "outcome",
                format!("{value:?} is not one of won, lost"),
            )),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Won => "won",
            Outcome::Lost => "lost",
        }
    }

    /// The probability and category a deal carries once closed this way.
    pub fn standing(self) -> (Probability, ForecastCategory) {
        match self {
            Outcome::Won => (Probability::CERTAIN, ForecastCategory::Closed),
            Outcome::Lost => (Probability::NONE, ForecastCategory::Omitted),
        }
    }
}

/// Parses `YYYY-MM-DD`: exactly four, two and two digits. chrono's `%Y-%m-%d` alone also takes a
/// sign, white space and one-digit fields (`" 2026-1-01"`, `"-2026-1-01"`).
pub fn parse_date(field: &'static str, value: &str) -> Result<chrono::NaiveDate, InvalidValue> {
    let shaped = value.len() == 10
        && value.bytes().enumerate().all(|(index, byte)| match index {
            4 | 7 => byte == b'-',
            _ => byte.is_ascii_digit(),
        });
    Some(value)
        .filter(|_| shaped)
        .and_then(|value| chrono::NaiveDate::parse_from_str(value, "%Y-%m-%d").ok())
        .filter(|date| SUPPORTED_YEARS.contains(&date.year()))
        .ok_or_else(|| {
            InvalidValue::new(
                field,
                format!("{value:?} is not a date as YYYY-MM-DD in the years 0001 to 9999"),
            )
        })
}

/// Years a date or an instant may have. Year 0 parses in chrono but not in PostgreSQL, and a
/// value the read models cannot store must be refused before it becomes an event.
const SUPPORTED_YEARS: std::ops::RangeInclusive<i32> = 1..=9999;

/// Parses an RFC 3339 instant, in the supported years, as UTC with the microsecond precision
/// PostgreSQL keeps.
pub fn parse_instant(
    field: &'static str,
    value: &str,
) -> Result<chrono::DateTime<chrono::Utc>, InvalidValue> {
    chrono::DateTime::parse_from_rfc3339(value)
        .ok()
        .map(|instant| instant.with_timezone(&chrono::Utc).trunc_subsecs(6))
        .filter(|instant| SUPPORTED_YEARS.contains(&instant.year()))
        .ok_or_else(|| {
            InvalidValue::new(
                field,
                format!("{value:?} is not an RFC 3339 time in the years 0001 to 9999"),
            )
        })
}

/// The longest duration [`parse_duration`] accepts, so that an instant plus or minus one can
/// never overflow a timestamp.
const MAX_DURATION_DAYS: i64 = 36_500;

/// Parses `90s`, `15m`, `36h` or `3d`: a whole number and one unit.
pub fn parse_duration(text: &str) -> Result<chrono::TimeDelta, String> {
    let problem = || {
        format!(
            "{text:?} is not a duration; write a whole number and a unit, like 90s, 15m, 36h or 3d"
        )
    };
    let unit_at = text
        .find(|character: char| !character.is_ascii_digit())
        .ok_or_else(problem)?;
    let (number, unit) = text.split_at(unit_at);
    let number: i64 = number.parse().map_err(|_| problem())?;
    let seconds_per_unit = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3_600,
        "d" => 86_400,
        _ => return Err(problem()),
    };
    let seconds = number
        .checked_mul(seconds_per_unit)
        .filter(|seconds| *seconds <= MAX_DURATION_DAYS * 86_400)
        .ok_or_else(|| format!("{text:?} is longer than {MAX_DURATION_DAYS} days"))?;
    Ok(chrono::TimeDelta::seconds(seconds))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weighted_amount_rounds_halves_away_from_zero() {
        let probability = Probability::parse(50).unwrap();
        assert_eq!(weighted_amount(Amount::parse(1).unwrap(), probability), 1);
        assert_eq!(weighted_amount(Amount::parse(3).unwrap(), probability), 2);
        let quarter = Probability::parse(25).unwrap();
        assert_eq!(weighted_amount(Amount::parse(2).unwrap(), quarter), 1);
        assert_eq!(weighted_amount(Amount::parse(1).unwrap(), quarter), 0);
        let max = Amount::parse(i64::MAX.into()).unwrap();
        assert_eq!(weighted_amount(max, Probability::CERTAIN), i64::MAX);
    }

    #[test]
    fn currency_must_be_active() {
        assert!(Currency::parse("EUR").is_ok());
        assert!(Currency::parse("QQQ").is_err());
        assert!(Currency::parse("HRK").is_err());
        assert!(Currency::parse("XXX").is_err());
        assert!(Currency::parse("eur").is_err());
    }

    #[test]
    fn amount_bounds() {
        assert!(Amount::parse(-1).is_err());
        assert!(Amount::parse(i128::from(i64::MAX) + 1).is_err());
        assert_eq!(Amount::parse(0).unwrap(), Amount::ZERO);
    }

    #[test]
    fn slugs_and_dates() {
        assert!(StageName::parse("negotiation").is_ok());
        assert!(StageName::parse("Negotiation").is_err());
        assert!(StageName::parse("").is_err());
        assert!(parse_date("expected_close_date", "2026-02-30").is_err());
        assert!(parse_date("expected_close_date", "2026-2-3").is_err());
        assert!(parse_date("expected_close_date", "2026-12-31").is_ok());
        assert!(parse_date("expected_close_date", "0000-01-01").is_err());
        assert!(parse_instant("occurred_at", "0000-01-01T00:00:00Z").is_err());
        assert!(parse_instant("occurred_at", "2026-11-27T10:00:00.1234567+01:00").is_ok());
        assert!(Country::parse("DE").is_ok());
        assert!(Country::parse("de").is_err());
        assert!(Country::parse("ZZ").is_err());
    }
}
