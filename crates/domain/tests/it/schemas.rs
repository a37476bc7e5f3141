//! The JSON Schemas of every event type's `data` under docs/schemas, checked
//! against the code, the samples and docs/events.md.
//!
//! The files are generated from the `JsonSchema` derives of the event enums, so they cannot drift
//! from the types: `schema_files_are_up_to_date` regenerates them and fails on any difference;
//! `UPDATE_SCHEMAS=1 cargo test -p domain schemas` rewrites them. They describe what the codec
//! writes (schemars' serialize contract): every field is present, an optional one as `null`.
//!
//! Checking samples needs a validator. A full one (the `jsonschema` crate) took about two minutes
//! to build here, so this module has a small one instead. It knows exactly the keywords the
//! generated schemas use and refuses any other, so that a new kind of constraint fails loudly
//! instead of passing unchecked. The property tests run every event they emit through it too.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::OnceLock;

use chrono::{DateTime, NaiveDate};
use domain::codec::{CURRENT_SCHEMA_VERSION, encode};
use domain::lead::{Criteria, Email, LeadEvent, LeadProfile};
use domain::opportunity::{OpportunityCreated, OpportunityEvent as E};
use domain::pipeline::PipelineEvent;
use domain::values::{
    ActivityId, ActivityKind, Country, Currency, FollowUpId, ForecastCategory, LeadId,
    OpportunityId, Outcome, PipelineSlug, StageName,
};
use regex::Regex;
use schemars::JsonSchema;
use schemars::generate::SchemaSettings;
use serde::Serialize;
use serde_json::{Map, Value, json};
use uuid::Uuid;

use crate::support::{
    at, cents, currency, date, default_pipeline, kind, percent, revised_pipeline, stage, text,
};

const DRAFT_2020_12: &str = "https://json-schema.org/draft/2020-12/schema";
const REFRESH: &str = "UPDATE_SCHEMAS=1 cargo test -p domain schemas";

/// The `data` schema of one event type, as written to `<event_type>.v<version>.json`.
pub struct EventSchema {
    pub event_type: String,
    pub schema: Value,
}

impl EventSchema {
    fn file_name(&self) -> String {
        format!("{}.v{CURRENT_SCHEMA_VERSION}.json", self.event_type)
    }

    /// The `required` field names in declaration order.
    fn required(&self) -> Vec<&str> {
        self.schema["required"]
            .as_array()
            .map(|names| names.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default()
    }
}

/// Every event type's schema, generated once per test binary.
pub fn event_schemas() -> &'static [EventSchema] {
    static SCHEMAS: OnceLock<Vec<EventSchema>> = OnceLock::new();
    SCHEMAS.get_or_init(|| {
        let examples = samples();
        let mut schemas = Vec::new();
        schemas.extend(variant_schemas::<LeadEvent>(LeadId::CATEGORY, &examples));
        schemas.extend(variant_schemas::<E>(OpportunityId::CATEGORY, &examples));
        schemas.extend(variant_schemas::<PipelineEvent>("pipeline", &examples));
        schemas
    })
}

fn schema_of(event_type: &str) -> Option<&'static EventSchema> {
    event_schemas()
        .iter()
        .find(|schema| schema.event_type == event_type)
}

/// Splits the schema of an adjacently tagged event enum (a `oneOf` of `{event_type, data}`
/// objects) into one standalone schema per variant's `data`.
fn variant_schemas<T: JsonSchema>(
    category: &str,
    examples: &BTreeMap<String, Value>,
) -> Vec<EventSchema> {
    let generator = SchemaSettings::draft2020_12()
        .for_serialize()
        .into_generator();
    let root = generator.into_root_schema_for::<T>().to_value();
    let definitions = root
        .get("$defs")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    let variants = root["oneOf"]
        .as_array()
        .expect("an adjacently tagged enum's schema is a oneOf of its variants");
    variants
        .iter()
        .map(|variant| {
            let event_type = variant["properties"]["event_type"]["const"]
                .as_str()
                .expect("each variant names its event_type as a const")
                .to_owned();
            let mut data = variant["properties"]["data"].clone();
            // A newtype variant's data is a reference to its struct; the file is that struct.
            if let Some(reference) = data.get("$ref").and_then(Value::as_str) {
                data = definitions[definition_name(reference)].clone();
            }
            let Value::Object(mut data) = data else {
                panic!("{event_type}: data schema is not an object")
            };
            let description = variant
                .get("description")
                .or_else(|| data.get("description"))
                .and_then(Value::as_str)
                .unwrap_or_else(|| {
                    panic!("{event_type}: document the variant, it is the schema's description")
                })
                .to_owned();
            data.remove("description");
            data.remove("title");

            let mut used = BTreeMap::new();
            collect_definitions(&Value::Object(data.clone()), &definitions, &mut used);

            let mut schema = Map::new();
            schema.insert("$schema".into(), json!(DRAFT_2020_12));
            schema.insert("title".into(), json!(event_type));
            schema.insert("description".into(), json!(description));
            schema.insert("x-event-type".into(), json!(event_type));
            schema.insert("x-schema-version".into(), json!(CURRENT_SCHEMA_VERSION));
            schema.insert("x-stream-category".into(), json!(category));
            schema.extend(data);
            if let Some(example) = examples.get(&event_type) {
                schema.insert("examples".into(), json!([example]));
            }
            if !used.is_empty() {
                schema.insert("$defs".into(), Value::Object(used.into_iter().collect()));
            }
            let mut schema = Value::Object(schema);
            tidy_descriptions(&mut schema);
            EventSchema { event_type, schema }
        })
        .collect()
}

fn definition_name(reference: &str) -> &str {
    reference
        .strip_prefix("#/$defs/")
        .unwrap_or_else(|| panic!("unexpected reference {reference}"))
}

/// Copies every definition `schema` refers to, directly or through another definition.
fn collect_definitions(
    schema: &Value,
    definitions: &Map<String, Value>,
    used: &mut BTreeMap<String, Value>,
) {
    match schema {
        Value::Object(members) => {
            if let Some(reference) = members.get("$ref").and_then(Value::as_str) {
                let name = definition_name(reference);
                if !used.contains_key(name) {
                    let definition = definitions[name].clone();
                    used.insert(name.to_owned(), definition.clone());
                    collect_definitions(&definition, definitions, used);
                }
            }
            for member in members.values() {
                collect_definitions(member, definitions, used);
            }
        }
        Value::Array(items) => {
            for item in items {
                collect_definitions(item, definitions, used);
            }
        }
        _ => {}
    }
}

/// Doc comments wrap at 100 columns; a description reads better unwrapped. A blank line (a new
/// paragraph) stays.
fn tidy_descriptions(schema: &mut Value) {
    match schema {
        Value::Object(members) => {
            for (key, member) in members.iter_mut() {
                match member {
                    Value::String(text) if key == "description" => {
                        *text = text
                            .split("\n\n")
                            .map(|paragraph| paragraph.split('\n').collect::<Vec<_>>().join(" "))
                            .collect::<Vec<_>>()
                            .join("\n\n");
                    }
                    // Examples are data, not schema.
                    _ if key == "examples" => {}
                    _ => tidy_descriptions(member),
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(tidy_descriptions),
        _ => {}
    }
}

// ---------------------------------------------------------------------------------------------
// Rendering: a fixed member order, whatever order serde_json's map keeps (it depends on whether
// some crate in the build enables `preserve_order`).

/// Keywords in reading order; any other member comes after these, alphabetically.
const KEYWORD_ORDER: &[&str] = &[
    "$schema",
    "title",
    "description",
    "x-event-type",
    "x-schema-version",
    "x-stream-category",
    "$ref",
    "type",
    "format",
    "const",
    "enum",
    "minimum",
    "maximum",
    "minLength",
    "maxLength",
    "pattern",
    "minItems",
    "maxItems",
    "items",
    "anyOf",
    "oneOf",
    "properties",
    "required",
    "additionalProperties",
    "examples",
    "$defs",
];

fn keyword_rank(key: &str) -> (usize, &str) {
    let rank = KEYWORD_ORDER
        .iter()
        .position(|keyword| *keyword == key)
        .unwrap_or(KEYWORD_ORDER.len());
    (rank, key)
}

/// The keys of `object` ordered by `required` (declaration order), then alphabetically.
fn declaration_order<'a>(object: &'a Map<String, Value>, required: &[&str]) -> Vec<&'a String> {
    let rank = |key: &str| {
        required
            .iter()
            .position(|name| *name == key)
            .unwrap_or(usize::MAX)
    };
    let mut keys: Vec<&String> = object.keys().collect();
    keys.sort_by(|a, b| (rank(a), a).cmp(&(rank(b), b)));
    keys
}

/// What decides the order of an object's members.
#[derive(Clone, Copy)]
enum Layout<'a> {
    /// A schema object: keywords in reading order.
    Schema,
    /// `properties`: in the order of the sibling `required`.
    Properties(&'a [&'a str]),
    /// `$defs`: alphabetical.
    Definitions,
    /// `examples`: a list of instances of the root schema.
    Examples,
    /// An instance of `schema`: its fields in declaration order, recursively.
    Instance(&'a Value),
}

/// The sample `data` of a schema, fields in declaration order, as docs/events.md shows it.
fn render_example(schema: &EventSchema) -> String {
    let mut out = String::new();
    let example = &schema.schema["examples"][0];
    render(
        example,
        Layout::Instance(&schema.schema),
        &schema.schema,
        0,
        &mut out,
    );
    out
}

pub fn render_schema(schema: &EventSchema) -> String {
    let mut out = String::new();
    render(&schema.schema, Layout::Schema, &schema.schema, 0, &mut out);
    out.push('\n');
    out
}

fn render(value: &Value, layout: Layout<'_>, root: &Value, indent: usize, out: &mut String) {
    let pad = |level: usize| "  ".repeat(level);
    match value {
        Value::Object(object) if !object.is_empty() => {
            let required_here: Vec<&str> = object
                .get("required")
                .and_then(Value::as_array)
                .map(|names| names.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            let keys: Vec<&String> = match layout {
                Layout::Schema => {
                    let mut keys: Vec<&String> = object.keys().collect();
                    keys.sort_by(|a, b| keyword_rank(a).cmp(&keyword_rank(b)));
                    keys
                }
                Layout::Properties(required) => declaration_order(object, required),
                Layout::Definitions | Layout::Examples => {
                    object.keys().collect::<BTreeSet<_>>().into_iter().collect()
                }
                Layout::Instance(schema) => {
                    let schema = resolve(schema, root);
                    let required: Vec<&str> = schema["required"]
                        .as_array()
                        .map(|names| names.iter().filter_map(Value::as_str).collect())
                        .unwrap_or_default();
                    declaration_order(object, &required)
                }
            };
            out.push_str("{\n");
            for (index, key) in keys.iter().enumerate() {
                let member = &object[key.as_str()];
                let inner = match layout {
                    Layout::Schema => match key.as_str() {
                        "properties" => Layout::Properties(&required_here),
                        "$defs" => Layout::Definitions,
                        "examples" => Layout::Examples,
                        _ => Layout::Schema,
                    },
                    Layout::Properties(_) | Layout::Definitions | Layout::Examples => {
                        Layout::Schema
                    }
                    Layout::Instance(schema) => {
                        Layout::Instance(property_schema(resolve(schema, root), key, root))
                    }
                };
                let _ = write!(
                    out,
                    "{}{}: ",
                    pad(indent + 1),
                    Value::String((*key).clone())
                );
                render(member, inner, root, indent + 1, out);
                out.push_str(if index + 1 < keys.len() { ",\n" } else { "\n" });
            }
            let _ = write!(out, "{}}}", pad(indent));
        }
        Value::Array(items) if !items.is_empty() => {
            out.push_str("[\n");
            for (index, item) in items.iter().enumerate() {
                let inner = match layout {
                    Layout::Examples => Layout::Instance(root),
                    Layout::Instance(schema) => {
                        Layout::Instance(items_schema(resolve(schema, root), root))
                    }
                    other => other,
                };
                out.push_str(&pad(indent + 1));
                render(item, inner, root, indent + 1, out);
                out.push_str(if index + 1 < items.len() { ",\n" } else { "\n" });
            }
            let _ = write!(out, "{}]", pad(indent));
        }
        scalar => out.push_str(&scalar.to_string()),
    }
}

/// Follows a `$ref`, and for a nullable `anyOf` the non-null branch, so that an instance's
/// nested objects are laid out by their own schema.
fn resolve<'a>(schema: &'a Value, root: &'a Value) -> &'a Value {
    if let Some(reference) = schema.get("$ref").and_then(Value::as_str) {
        return resolve(&root["$defs"][definition_name(reference)], root);
    }
    if let Some(branches) = schema.get("anyOf").and_then(Value::as_array) {
        if let Some(branch) = branches.iter().find(|branch| branch["type"] != "null") {
            return resolve(branch, root);
        }
    }
    schema
}

static NO_SCHEMA: Value = Value::Null;

fn property_schema<'a>(schema: &'a Value, key: &str, root: &'a Value) -> &'a Value {
    schema
        .get("properties")
        .and_then(|properties| properties.get(key))
        .map_or(&NO_SCHEMA, |property| resolve(property, root))
}

fn items_schema<'a>(schema: &'a Value, root: &'a Value) -> &'a Value {
    schema
        .get("items")
        .map_or(&NO_SCHEMA, |items| resolve(items, root))
}

// ---------------------------------------------------------------------------------------------
// Samples: one realistic event of every type. They are the schemas' `examples` and the examples
// of docs/events.md.

fn id(text: &str) -> Uuid {
    Uuid::parse_str(text).expect("sample ids are UUIDs")
}

fn lead_id() -> LeadId {
    LeadId(id("0193a4b2-1f00-7a3c-8d21-3b6e5f2a9c01"))
}

fn opportunity_id() -> OpportunityId {
    OpportunityId(id("0193a4b2-2c40-7e11-9f0a-6d4c2b1e8a73"))
}

fn follow_up_id() -> FollowUpId {
    FollowUpId(id("0193a4b3-5a10-7b2d-a4e8-1c9f7d3b2e55"))
}

fn encoded<T: Serialize>(event: T) -> (String, Value) {
    encode(&event)
}

/// Every event type with the `data` of one sample, encoded by the codec.
pub fn samples() -> BTreeMap<String, Value> {
    let closed_at = DateTime::parse_from_rfc3339("2026-12-15T09:12:44.518302Z")
        .expect("valid time")
        .to_utc();
    [
        encoded(LeadEvent::LeadCaptured(LeadProfile {
            name: text("Ada Lovelace"),
            company: Some(text("Analytical Engines Ltd")),
            email: Some(Email::parse("ada@analytical-engines.example").expect("valid e-mail")),
            country: Some(Country::parse("GB").expect("valid country")),
            source: None,
        })),
        encoded(LeadEvent::LeadRouted {
            owner: text("anna"),
            rule: text("emea"),
        }),
        encoded(LeadEvent::LeadQualified {
            criteria: Criteria {
                budget: true,
                authority: true,
                need: true,
                timeline: false,
            },
        }),
        encoded(LeadEvent::LeadDisqualified {
            reason: text("No budget before 2028"),
        }),
        encoded(LeadEvent::LeadConverted {
            opportunity_id: opportunity_id(),
        }),
        encoded(E::OpportunityCreated(OpportunityCreated {
            name: text("Analytical Engines: 40 seats"),
            lead_id: Some(lead_id()),
            pipeline: PipelineSlug::default_pipeline(),
            stage: stage("new"),
            probability: percent(10),
            forecast_category: ForecastCategory::Pipeline,
            amount: cents(4_800_000),
            currency: currency("EUR"),
            expected_close_date: date(2026, 12, 31),
            owner: text("anna"),
        })),
        encoded(E::StageChanged {
            from: stage("contacted"),
            to: stage("quoted"),
            probability: percent(50),
            forecast_category: ForecastCategory::BestCase,
            reason: Some(text("Asked for a quote on the call")),
        }),
        encoded(E::ProbabilityOverridden {
            probability: Some(percent(65)),
            forecast_category: None,
        }),
        encoded(E::AmountChanged {
            amount: cents(5_400_000),
            currency: currency("EUR"),
        }),
        encoded(E::CloseDateChanged {
            expected_close_date: date(2027, 1, 31),
            previous: date(2026, 12, 31),
        }),
        encoded(E::OwnerChanged {
            owner: text("bruno"),
            previous: text("anna"),
        }),
        encoded(E::ActivityLogged {
            activity_id: ActivityId(id("0193a4b3-0e90-7c6a-b1d3-8e2f4a6c9d17")),
            kind: ActivityKind::QuoteSent,
            summary: text("Sent quote Q-1042 for 45 seats"),
            occurred_at: at(2026, 11, 20, 14),
        }),
        encoded(E::FollowUpScheduled {
            follow_up_id: follow_up_id(),
            kind: kind("quote-follow-up"),
            due_at: at(2026, 11, 23, 14),
            rule: text("quote-follow-up"),
        }),
        encoded(E::FollowUpCompleted {
            follow_up_id: follow_up_id(),
        }),
        encoded(E::FollowUpCancelled {
            follow_up_id: follow_up_id(),
            reason: text("opportunity closed"),
        }),
        encoded(E::FollowUpDue {
            follow_up_id: follow_up_id(),
            kind: kind("quote-follow-up"),
            due_at: at(2026, 11, 23, 14),
        }),
        encoded(E::OpportunityClosed {
            outcome: Outcome::Lost,
            reason: Some(text("Chose a competitor on price")),
            closed_at,
        }),
        encoded(E::OpportunityReopened {
            stage: stage("negotiation"),
            probability: percent(75),
            forecast_category: ForecastCategory::Commit,
        }),
        encoded(PipelineEvent::PipelineDefined(default_pipeline())),
        encoded(PipelineEvent::PipelineRevised(revised_pipeline())),
    ]
    .into_iter()
    .collect()
}

// ---------------------------------------------------------------------------------------------
// A small validator for the keywords the generated schemas use.

/// Checks `data` against the schema of `event_type`, and that it carries exactly the schema's
/// required fields (every field the codec writes is required, so a field missing from the schema
/// is drift). Returns every problem found.
pub fn check_data(event_type: &str, data: &Value) -> Result<(), String> {
    let schema = schema_of(event_type).ok_or_else(|| format!("{event_type} has no schema"))?;
    let mut problems = Vec::new();
    validate(data, &schema.schema, &schema.schema, "data", &mut problems);
    if let Some(fields) = data.as_object() {
        let written: BTreeSet<&str> = fields.keys().map(String::as_str).collect();
        let required: BTreeSet<&str> = schema.required().into_iter().collect();
        if written != required {
            problems.push(format!(
                "fields written {written:?} differ from the schema's required {required:?}"
            ));
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(format!("{event_type}: {}", problems.join("; ")))
    }
}

fn validate(
    instance: &Value,
    schema: &Value,
    root: &Value,
    path: &str,
    problems: &mut Vec<String>,
) {
    let Some(keywords) = schema.as_object() else {
        problems.push(format!("{path}: schema is not an object"));
        return;
    };
    let mut fail = |problem: String| problems.push(format!("{path}: {problem}"));
    let mut nested = Vec::new();
    for (keyword, argument) in keywords {
        match keyword.as_str() {
            "$schema" | "title" | "description" | "examples" | "$defs" => {}
            annotation if annotation.starts_with("x-") => {}
            "$ref" => {
                let reference = argument.as_str().unwrap_or_default();
                let target = &root["$defs"][definition_name(reference)];
                validate(instance, target, root, path, &mut nested);
            }
            "type" => {
                let allowed: Vec<&str> = match argument {
                    Value::String(name) => vec![name.as_str()],
                    Value::Array(names) => names.iter().filter_map(Value::as_str).collect(),
                    _ => vec![],
                };
                if !allowed.iter().any(|name| has_type(instance, name)) {
                    fail(format!("{instance} is not of type {argument}"));
                }
            }
            "format" => {
                if let Some(problem) = check_format(instance, argument.as_str().unwrap_or_default())
                {
                    fail(problem);
                }
            }
            "const" => {
                if instance != argument {
                    fail(format!("{instance} is not {argument}"));
                }
            }
            "enum" => {
                if !argument
                    .as_array()
                    .is_some_and(|values| values.contains(instance))
                {
                    fail(format!("{instance} is not one of {argument}"));
                }
            }
            "minimum" | "maximum" => {
                if let (Some(value), Some(bound)) = (instance.as_f64(), argument.as_f64()) {
                    let outside = if keyword == "minimum" {
                        value < bound
                    } else {
                        value > bound
                    };
                    if outside {
                        fail(format!("{instance} breaks {keyword} {argument}"));
                    }
                }
            }
            "minLength" | "maxLength" => {
                if let (Some(text), Some(bound)) = (instance.as_str(), argument.as_u64()) {
                    let length = text.chars().count() as u64;
                    let outside = if keyword == "minLength" {
                        length < bound
                    } else {
                        length > bound
                    };
                    if outside {
                        fail(format!("length {length} breaks {keyword} {bound}"));
                    }
                }
            }
            "pattern" => {
                if let Some(text) = instance.as_str() {
                    let pattern = argument.as_str().unwrap_or_default();
                    let regex = Regex::new(pattern)
                        .unwrap_or_else(|error| panic!("pattern {pattern}: {error}"));
                    if !regex.is_match(text) {
                        fail(format!("{instance} does not match {pattern}"));
                    }
                }
            }
            "minItems" | "maxItems" => {
                if let (Some(items), Some(bound)) = (instance.as_array(), argument.as_u64()) {
                    let count = items.len() as u64;
                    let outside = if keyword == "minItems" {
                        count < bound
                    } else {
                        count > bound
                    };
                    if outside {
                        fail(format!("{count} items break {keyword} {bound}"));
                    }
                }
            }
            "items" => {
                for (index, item) in instance.as_array().into_iter().flatten().enumerate() {
                    validate(
                        item,
                        argument,
                        root,
                        &format!("{path}[{index}]"),
                        &mut nested,
                    );
                }
            }
            "anyOf" | "oneOf" => {
                let branches = argument.as_array().map(Vec::as_slice).unwrap_or_default();
                let passing = branches
                    .iter()
                    .filter(|branch| {
                        let mut scratch = Vec::new();
                        validate(instance, branch, root, path, &mut scratch);
                        scratch.is_empty()
                    })
                    .count();
                let good = if keyword == "anyOf" {
                    passing >= 1
                } else {
                    passing == 1
                };
                if !good {
                    fail(format!(
                        "{instance} matches {passing} branches of {keyword}"
                    ));
                }
            }
            "properties" => {
                if let (Some(fields), Some(properties)) =
                    (instance.as_object(), argument.as_object())
                {
                    for (name, property) in properties {
                        if let Some(field) = fields.get(name) {
                            validate(
                                field,
                                property,
                                root,
                                &format!("{path}.{name}"),
                                &mut nested,
                            );
                        }
                    }
                }
            }
            "required" => {
                if let Some(fields) = instance.as_object() {
                    for name in argument
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(Value::as_str)
                    {
                        if !fields.contains_key(name) {
                            fail(format!("lacks required field {name}"));
                        }
                    }
                }
            }
            other => fail(format!(
                "the test's validator does not know keyword {other}; teach it before using it"
            )),
        }
    }
    problems.extend(nested);
}

fn has_type(instance: &Value, name: &str) -> bool {
    match name {
        "null" => instance.is_null(),
        "boolean" => instance.is_boolean(),
        "object" => instance.is_object(),
        "array" => instance.is_array(),
        "string" => instance.is_string(),
        "integer" => instance.is_i64() || instance.is_u64(),
        "number" => instance.is_number(),
        other => panic!("unknown JSON type {other}"),
    }
}

/// `None` when `instance` has the format (or is not a string or number it applies to).
fn check_format(instance: &Value, format: &str) -> Option<String> {
    let valid = match (format, instance) {
        ("date", Value::String(text)) => {
            text.len() == 10 && NaiveDate::parse_from_str(text, "%Y-%m-%d").is_ok()
        }
        ("date-time", Value::String(text)) => DateTime::parse_from_rfc3339(text).is_ok(),
        ("uuid", Value::String(text)) => Uuid::parse_str(text).is_ok(),
        ("int64", Value::Number(number)) => number.is_i64(),
        ("uint8", Value::Number(number)) => number.as_u64().is_some_and(|value| value <= 255),
        ("date" | "date-time" | "uuid" | "int64" | "uint8", _) => true,
        (other, _) => return Some(format!("the test's validator does not know format {other}")),
    };
    (!valid).then(|| format!("{instance} is not a valid {format}"))
}

// ---------------------------------------------------------------------------------------------
// The tests.

fn schema_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs/schemas")
}

/// The schema with its annotations removed: what a reader's validation depends on.
fn shape(schema: &Value) -> Value {
    match schema {
        Value::Object(members) => Value::Object(
            members
                .iter()
                .filter(|(key, _)| !matches!(key.as_str(), "title" | "description" | "examples"))
                .map(|(key, member)| (key.clone(), shape(member)))
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(shape).collect()),
        other => other.clone(),
    }
}

/// Splits `Name.vN.json` into its event type and version.
fn parse_file_name(name: &str) -> Option<(&str, i32)> {
    let stem = name.strip_suffix(".json")?;
    let (event_type, version) = stem.rsplit_once(".v")?;
    Some((event_type, version.parse().ok()?))
}

#[test]
fn schema_files_are_up_to_date() {
    let directory = schema_dir();
    let expected: BTreeMap<String, (&EventSchema, String)> = event_schemas()
        .iter()
        .map(|schema| (schema.file_name(), (schema, render_schema(schema))))
        .collect();
    let present: BTreeSet<String> = std::fs::read_dir(&directory)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter_map(|entry| entry.file_name().into_string().ok())
                .collect()
        })
        .unwrap_or_default();

    let mut problems = Vec::new();
    for (name, (schema, text)) in &expected {
        match std::fs::read_to_string(directory.join(name)) {
            Ok(actual) if actual == *text => {}
            Ok(actual) => {
                let same_shape = serde_json::from_str::<Value>(&actual)
                    .is_ok_and(|actual| shape(&actual) == shape(&schema.schema));
                problems.push(if same_shape {
                    format!("{name}: descriptions or examples changed")
                } else {
                    format!(
                        "{name}: its shape differs from the {} type's; stored events keep \
                         version {CURRENT_SCHEMA_VERSION}, so a changed type needs a new schema \
                         version and an upcast (docs/events.md, Versioning)",
                        schema.event_type
                    )
                });
            }
            Err(_) => problems.push(format!("{name} is missing")),
        }
    }
    let mut stale = Vec::new();
    for name in &present {
        match parse_file_name(name) {
            Some((_, version)) if version == CURRENT_SCHEMA_VERSION => {
                if !expected.contains_key(name) {
                    problems.push(format!("{name} names no current event type"));
                    stale.push(name.clone());
                }
            }
            // Older versions are history: frozen, never regenerated.
            Some((_, version)) if (1..CURRENT_SCHEMA_VERSION).contains(&version) => {}
            _ => problems.push(format!(
                "{name} is not <EventType>.v<1..={CURRENT_SCHEMA_VERSION}>.json"
            )),
        }
    }

    if std::env::var_os("UPDATE_SCHEMAS").is_some_and(|value| !value.is_empty() && value != "0") {
        std::fs::create_dir_all(&directory).expect("create docs/schemas");
        for (name, (_, text)) in &expected {
            std::fs::write(directory.join(name), text).expect("write a schema file");
        }
        for name in stale {
            std::fs::remove_file(directory.join(name)).expect("remove a stale schema file");
        }
        eprintln!("docs/schemas regenerated: {} files", expected.len());
        return;
    }
    assert!(
        problems.is_empty(),
        "docs/schemas differs from the event types:\n  {}\nRefresh it with `{REFRESH}` and review \
         the diff.",
        problems.join("\n  ")
    );
}

#[test]
fn every_event_type_has_a_schema_and_a_sample_that_matches_it() {
    let samples = samples();
    let with_schema: BTreeSet<&str> = event_schemas()
        .iter()
        .map(|schema| schema.event_type.as_str())
        .collect();
    let sampled: BTreeSet<&str> = samples.keys().map(String::as_str).collect();
    assert_eq!(with_schema, sampled, "one sample per event type");
    assert_eq!(
        with_schema.len(),
        20,
        "the event catalog of docs/events.md has 20 event types"
    );

    for (event_type, data) in &samples {
        check_data(event_type, data).unwrap_or_else(|problem| panic!("{problem}"));
        // The documented field names are all required, in the schema as in the data.
        let required = schema_of(event_type).expect("checked above").required();
        for field in crate::support::spec_fields(event_type) {
            assert!(
                required.contains(field),
                "{event_type}: {field} is not required"
            );
        }
    }
}

#[test]
fn schemas_carry_the_value_constraints() {
    // Each sample with one field set to a value the domain never writes (`None`: left out).
    let refused: [(&str, &str, Option<Value>); 17] = [
        ("AmountChanged", "amount", Some(json!(-1))),
        ("AmountChanged", "amount", Some(json!(1.5))),
        ("AmountChanged", "currency", Some(json!("eur"))),
        ("AmountChanged", "currency", None),
        ("StageChanged", "probability", Some(json!(101))),
        ("StageChanged", "to", Some(json!("Quoted"))),
        ("StageChanged", "forecast_category", Some(json!("maybe"))),
        ("StageChanged", "reason", Some(json!(""))),
        ("LeadCaptured", "country", Some(json!("gb"))),
        ("LeadCaptured", "email", Some(json!("ada"))),
        ("LeadCaptured", "source", None),
        (
            "CloseDateChanged",
            "expected_close_date",
            Some(json!("2026-13-01")),
        ),
        (
            "CloseDateChanged",
            "previous",
            Some(json!("2026-12-31T00:00:00Z")),
        ),
        ("ActivityLogged", "kind", Some(json!("fax"))),
        ("ActivityLogged", "occurred_at", Some(json!("yesterday"))),
        (
            "FollowUpCompleted",
            "follow_up_id",
            Some(json!("not-a-uuid")),
        ),
        ("PipelineDefined", "stages", Some(json!([]))),
    ];
    let samples = samples();
    for (event_type, field, value) in refused {
        let mut data = samples[event_type].clone();
        let fields = data.as_object_mut().expect("sample data is an object");
        match value {
            Some(value) => fields.insert(field.to_owned(), value),
            None => fields.remove(field),
        };
        assert!(
            check_data(event_type, &data).is_err(),
            "the {event_type} schema accepts {data}"
        );
    }
}

/// The schema of a named value type, from whichever event schema uses it.
fn definition(name: &str) -> (&'static Value, &'static Value) {
    event_schemas()
        .iter()
        .find_map(|schema| {
            schema.schema["$defs"]
                .get(name)
                .map(|definition| (definition, &schema.schema))
        })
        .unwrap_or_else(|| panic!("no event schema defines {name}"))
}

fn accepts(type_name: &str, value: &str) -> bool {
    let (schema, root) = definition(type_name);
    let mut problems = Vec::new();
    validate(&json!(value), schema, root, type_name, &mut problems);
    problems.is_empty()
}

#[test]
fn value_patterns_agree_with_the_parsing_constructors() {
    // A slug's schema is exactly its parser.
    let long = "x".repeat(64);
    let too_long = "x".repeat(65);
    for value in [
        "new",
        "a",
        "0",
        "quote-follow-up",
        "close_date",
        "9lives",
        "-new",
        "_new",
        "New",
        "new stage",
        "",
        "ü",
        "new.",
        long.as_str(),
        too_long.as_str(),
    ] {
        let parsed = StageName::parse(value).is_ok();
        for type_name in ["StageName", "PipelineSlug", "FollowUpKind"] {
            assert_eq!(accepts(type_name, value), parsed, "{type_name} {value:?}");
        }
    }
    // Codes: the schema takes the shape; the parser also asks for an active or assigned code.
    for value in ["EUR", "JPY", "QQQ", "eur", "EU", "EURO", "E1R", ""] {
        if Currency::parse(value).is_ok() {
            assert!(accepts("Currency", value), "Currency {value:?}");
        }
        let well_formed = value.len() == 3 && value.bytes().all(|byte| byte.is_ascii_uppercase());
        assert_eq!(
            accepts("Currency", value),
            well_formed,
            "Currency {value:?}"
        );
    }
    for value in ["DE", "GB", "ZZ", "de", "DEU", "D", ""] {
        if Country::parse(value).is_ok() {
            assert!(accepts("Country", value), "Country {value:?}");
        }
        let well_formed = value.len() == 2 && value.bytes().all(|byte| byte.is_ascii_uppercase());
        assert_eq!(accepts("Country", value), well_formed, "Country {value:?}");
    }
    for value in [
        "ada@example.com",
        "a@b",
        "ada",
        "@example.com",
        "ada@",
        "a@b@c",
        "a b@c.d",
    ] {
        assert_eq!(
            accepts("Email", value),
            Email::parse(value).is_ok(),
            "Email {value:?}"
        );
    }
}

/// Each event type in docs/events.md has a `### \`EventType\`` section with a table row for every
/// field and, as its first JSON block, the sample above: the catalog cannot drift either.
#[test]
fn the_event_catalog_documents_every_field_and_example() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs/events.md");
    let catalog = std::fs::read_to_string(&path).expect("docs/events.md exists");
    let samples = samples();
    let mut problems = Vec::new();
    for schema in event_schemas() {
        let heading = format!("\n### `{}`\n", schema.event_type);
        let Some(start) = catalog.find(&heading) else {
            problems.push(format!("no section {}", heading.trim()));
            continue;
        };
        let body = &catalog[start + heading.len()..];
        let section = &body[..body.find("\n#").unwrap_or(body.len())];
        for field in schema.required() {
            if !section.contains(&format!("| `{field}` |")) {
                problems.push(format!("{}: no table row for `{field}`", schema.event_type));
            }
        }
        let example = section
            .split_once("```json\n")
            .and_then(|(_, rest)| rest.split_once("```"))
            .map(|(block, _)| block);
        match example.map(serde_json::from_str::<Value>) {
            Some(Ok(example)) if Some(&example) == samples.get(&schema.event_type) => {}
            Some(Ok(_)) => problems.push(format!(
                "{}: the example differs from docs/schemas/{}; it should read\n```json\n{}\n```",
                schema.event_type,
                schema.file_name(),
                render_example(schema)
            )),
            Some(Err(error)) => problems.push(format!("{}: example: {error}", schema.event_type)),
            None => problems.push(format!("{}: no ```json example", schema.event_type)),
        }
    }
    assert!(
        problems.is_empty(),
        "docs/events.md:\n  {}",
        problems.join("\n  ")
    );
}

#[test]
fn the_opportunity_event_type_list_names_every_opportunity_event() {
    let opportunity: BTreeSet<&str> = event_schemas()
        .iter()
        .filter(|schema| schema.schema["x-stream-category"] == "opportunity")
        .map(|schema| schema.event_type.as_str())
        .collect();
    let listed: BTreeSet<&str> = domain::opportunity::EVENT_TYPES.into_iter().collect();
    assert_eq!(listed, opportunity);
}
