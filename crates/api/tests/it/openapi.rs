//! `openapi.json` held to the code. The document is written by hand, so every claim it makes that
//! could drift is checked here against the running server:
//!
//! - it is served as JSON and declares OpenAPI 3.1;
//! - its operations are exactly [`api::routes`], the table the router is built from, and the
//!   router serves each of them and no other method on those paths;
//! - every `$ref` resolves and every component is used;
//! - each command body schema names exactly the fields the Rust body struct accepts, with the
//!   same required ones. The server itself tells: serde's "unknown field" rejection lists every
//!   field a struct accepts, and its "missing field" rejection names the required ones;
//! - every answer a scenario provokes (each route's success answer and each error status) has a
//!   status, content type, headers and body the document promises for that operation.

use std::collections::BTreeSet;
use std::time::Duration;

use projector::Projection;
use reqwest::Method;
use serde_json::{Map, Value, json};
use uuid::Uuid;

use crate::helpers::{Reply, TestApp, deal_body, qualify_body, unknown_id};

const DOCUMENT: &str = include_str!("../../openapi.json");

/// The operation keys of an OpenAPI path item.
const METHODS: [&str; 8] = [
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

fn document() -> Value {
    serde_json::from_str(DOCUMENT).expect("openapi.json is JSON")
}

/// Follows `$ref`s (local ones only) until a schema, parameter or response that is not one.
fn resolve<'a>(doc: &'a Value, mut value: &'a Value) -> &'a Value {
    while let Some(reference) = value.get("$ref").and_then(Value::as_str) {
        let pointer = reference
            .strip_prefix('#')
            .unwrap_or_else(|| panic!("{reference} is not a reference into the document"));
        value = doc
            .pointer(pointer)
            .unwrap_or_else(|| panic!("{reference} does not resolve"));
    }
    value
}

fn operation<'a>(doc: &'a Value, method: &str, path: &str) -> &'a Value {
    let operation = &doc["paths"][path][method];
    assert!(operation.is_object(), "{method} {path} is not documented");
    operation
}

fn documented_operations(doc: &Value) -> BTreeSet<(String, String)> {
    let paths = doc["paths"].as_object().expect("paths is an object");
    paths
        .iter()
        .flat_map(|(path, item)| {
            let item = item.as_object().expect("a path item is an object");
            item.keys()
                .filter(|key| METHODS.contains(&key.as_str()))
                .map(|method| (method.clone(), path.clone()))
                .collect::<Vec<_>>()
        })
        .collect()
}

fn routed_operations() -> BTreeSet<(String, String)> {
    api::routes()
        .iter()
        .map(|(method, path)| (method.to_string(), path.to_string()))
        .collect()
}

/// The `{name}` segments of a path template.
fn path_parameters(path: &str) -> BTreeSet<String> {
    path.split('/')
        .filter_map(|segment| segment.strip_prefix('{')?.strip_suffix('}'))
        .map(str::to_owned)
        .collect()
}

/// A path template with every parameter filled in with a value that names nothing.
fn unknown_target(path: &str) -> String {
    path.split('/')
        .map(|segment| match segment {
            "{id}" | "{follow_up_id}" => unknown_id(),
            "{slug}" => "no-such-pipeline".to_owned(),
            other => other.to_owned(),
        })
        .collect::<Vec<_>>()
        .join("/")
}

#[tokio::test]
async fn the_document_is_served_as_json_and_declares_openapi_3_1() {
    let app = TestApp::spawn().await;
    let reply = app.get("/openapi.json").await;
    reply.assert_status(200);
    assert_eq!(reply.content_type(), "application/json");
    let served = reply.json();
    assert_eq!(served, document(), "the served document is openapi.json");
    let version = served["openapi"].as_str().expect("openapi is a string");
    assert!(version.starts_with("3.1."), "declares OpenAPI {version}");
    assert!(served["info"]["title"].is_string() && served["info"]["version"].is_string());
}

#[test]
fn operations_are_exactly_the_routes_of_the_router() {
    let doc = document();
    let routed = routed_operations();
    assert_eq!(routed.len(), api::routes().len(), "a route is listed twice");
    let documented = documented_operations(&doc);
    let undocumented: Vec<_> = routed.difference(&documented).collect();
    let unrouted: Vec<_> = documented.difference(&routed).collect();
    assert!(
        undocumented.is_empty() && unrouted.is_empty(),
        "routes missing from openapi.json: {undocumented:?}; documented but not routed: {unrouted:?}"
    );

    let mut operation_ids = BTreeSet::new();
    for (method, path) in &documented {
        let operation = operation(&doc, method, path);
        let id = operation["operationId"].as_str().expect("an operationId");
        assert!(operation_ids.insert(id), "operationId {id} is used twice");
        let declared: BTreeSet<String> = operation["parameters"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default()
            .iter()
            .map(|parameter| resolve(&doc, parameter))
            .filter(|parameter| parameter["in"] == "path")
            .map(|parameter| {
                assert_eq!(parameter["required"], true, "path parameters are required");
                parameter["name"].as_str().expect("a name").to_owned()
            })
            .collect();
        assert_eq!(
            declared,
            path_parameters(path),
            "path parameters of {method} {path}"
        );
    }
}

#[tokio::test]
async fn the_router_serves_every_listed_route_and_no_other_method() {
    let app = TestApp::spawn().await;
    let routed = routed_operations();
    let paths: BTreeSet<&String> = routed.iter().map(|(_, path)| path).collect();
    for path in paths {
        let target = unknown_target(path);
        for method in ["get", "post", "put", "delete", "patch"] {
            let listed = routed.contains(&(method.to_owned(), path.clone()));
            let reply = app
                .call(method.to_uppercase().parse().unwrap(), &target)
                .json(&json!({}))
                .send()
                .await;
            if listed {
                assert_ne!(reply.status, 405, "{method} {path} is not routed");
                assert!(
                    !reply.text.contains("no resource at"),
                    "{method} {path} fell through to the fallback: {}",
                    reply.text
                );
            } else {
                reply.assert_problem(405, &[&method.to_uppercase()]);
            }
        }
    }
}

#[test]
fn every_reference_resolves_and_every_component_is_used() {
    fn references<'a>(value: &'a Value, found: &mut Vec<&'a str>) {
        match value {
            Value::Object(members) => {
                for (key, member) in members {
                    match (key.as_str(), member) {
                        ("$ref", Value::String(reference)) => found.push(reference),
                        _ => references(member, found),
                    }
                }
            }
            Value::Array(items) => items.iter().for_each(|item| references(item, found)),
            _ => {}
        }
    }
    let doc = document();
    let mut found = Vec::new();
    references(&doc, &mut found);
    assert!(!found.is_empty());
    for reference in &found {
        let pointer = reference
            .strip_prefix('#')
            .unwrap_or_else(|| panic!("{reference} points outside the document"));
        assert!(
            doc.pointer(pointer).is_some(),
            "{reference} does not resolve"
        );
    }
    let mut used: BTreeSet<String> = found
        .iter()
        .map(|reference| reference.to_string())
        .collect();
    // Security schemes are named by the requirements, not referenced.
    let requirements = std::iter::once(&doc["security"]).chain(
        doc["paths"]
            .as_object()
            .expect("paths")
            .values()
            .flat_map(|item| item.as_object().expect("a path item").values())
            .map(|operation| &operation["security"]),
    );
    for requirement in requirements.filter_map(Value::as_array).flatten() {
        for name in requirement.as_object().expect("a requirement").keys() {
            used.insert(format!("#/components/securitySchemes/{name}"));
        }
    }
    for (kind, components) in doc["components"].as_object().expect("components") {
        for name in components.as_object().expect("a component map").keys() {
            let reference = format!("#/components/{kind}/{name}");
            assert!(used.contains(&reference), "{reference} is never used");
        }
    }
}

// Command bodies.

/// One step into a JSON body: a member of an object or the first item of an array.
#[derive(Debug, Clone)]
enum Step {
    Member(String),
    FirstItem,
}

fn schema_type(schema: &Value) -> Option<&str> {
    match &schema["type"] {
        Value::String(name) => Some(name),
        Value::Array(names) => names
            .iter()
            .filter_map(Value::as_str)
            .find(|&n| n != "null"),
        _ => None,
    }
}

/// A body built from the schema: the first example of every leaf, and of every object either
/// all its properties or only the required ones.
fn sample(doc: &Value, schema: &Value, every_property: bool) -> Value {
    let schema = resolve(doc, schema);
    if let Some(example) = schema["examples"].get(0) {
        return example.clone();
    }
    match schema_type(schema) {
        Some("object") => {
            let required = required_properties(schema);
            let properties = schema["properties"].as_object().expect("properties");
            Value::Object(
                properties
                    .iter()
                    .filter(|(name, _)| every_property || required.contains(*name))
                    .map(|(name, property)| (name.clone(), sample(doc, property, every_property)))
                    .collect(),
            )
        }
        Some("array") => json!([sample(doc, &schema["items"], every_property)]),
        _ => panic!("a request body schema without examples: {schema}"),
    }
}

fn required_properties(schema: &Value) -> BTreeSet<String> {
    schema["required"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .map(|name| name.as_str().expect("a property name").to_owned())
        .collect()
}

/// Every object schema inside a body schema, with where it sits in the body.
fn object_schemas<'a>(
    doc: &'a Value,
    schema: &'a Value,
    at: Vec<Step>,
    found: &mut Vec<(Vec<Step>, &'a Value)>,
) {
    let schema = resolve(doc, schema);
    match schema_type(schema) {
        Some("object") => {
            for (name, property) in schema["properties"].as_object().expect("properties") {
                let mut inner = at.clone();
                inner.push(Step::Member(name.clone()));
                object_schemas(doc, property, inner, found);
            }
            found.push((at, schema));
        }
        Some("array") => {
            let mut inner = at;
            inner.push(Step::FirstItem);
            object_schemas(doc, &schema["items"], inner, found);
        }
        _ => {}
    }
}

fn object_at<'a>(body: &'a mut Value, at: &[Step]) -> &'a mut Map<String, Value> {
    let mut value = body;
    for step in at {
        value = match step {
            Step::Member(name) => &mut value[name.as_str()],
            Step::FirstItem => &mut value[0],
        };
    }
    value.as_object_mut().expect("an object in the sample")
}

/// The field names a 400 for an unknown field says the struct accepts. serde words it as
/// "unknown field `x`, expected `a`", "... expected `a` or `b`", "... expected one of `a`, `b`, `c`"
/// or "... there are no fields".
fn accepted_fields(detail: &str) -> BTreeSet<String> {
    if detail.ends_with("there are no fields") {
        return BTreeSet::new();
    }
    let (_, expected) = detail
        .split_once(", expected ")
        .unwrap_or_else(|| panic!("not an unknown-field rejection: {detail:?}"));
    let names: BTreeSet<String> = expected
        .split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_owned)
        .collect();
    assert!(!names.is_empty(), "no field names in {detail:?}");
    names
}

fn describe(at: &[Step]) -> String {
    let steps: Vec<String> = at
        .iter()
        .map(|step| match step {
            Step::Member(name) => name.clone(),
            Step::FirstItem => "[0]".to_owned(),
        })
        .collect();
    if steps.is_empty() {
        "the body".to_owned()
    } else {
        steps.join(".")
    }
}

/// A concrete path for a command route, with the entities it needs to succeed: a fresh lead, a
/// fresh deal (closed for reopening, with a follow-up for completing one), a new pipeline.
async fn command_target(app: &TestApp, path: &str) -> String {
    if path.starts_with("/v1/leads/{id}") {
        let lead = app.capture_lead().await;
        return path.replace("{id}", &lead);
    }
    if path.starts_with("/v1/opportunities/{id}") {
        let deal = app.create_deal().await;
        let follow_up = app.schedule_follow_up(&deal).await;
        if path.ends_with("/reopen") {
            app.post(
                &format!("/v1/opportunities/{deal}/close"),
                &json!({"outcome": "won"}),
            )
            .await
            .assert_status(200);
        }
        return path
            .replace("{id}", &deal)
            .replace("{follow_up_id}", &follow_up.to_string());
    }
    path.replace("{slug}", &format!("sample-{}", Uuid::now_v7().simple()))
}

#[tokio::test]
async fn command_bodies_name_exactly_the_fields_the_server_accepts() {
    let app = TestApp::spawn().await;
    let doc = document();
    for (method, path) in api::routes() {
        let operation = operation(&doc, method, path);
        let Some(request_body) = operation.get("requestBody") else {
            assert!(
                *method == "get",
                "{method} {path} documents no request body"
            );
            continue;
        };
        let schema = &request_body["content"]["application/json"]["schema"];
        let method: Method = method.to_uppercase().parse().unwrap();
        let success = operation["responses"]
            .as_object()
            .unwrap()
            .keys()
            .find(|status| status.starts_with('2'))
            .expect("a success answer")
            .parse::<u16>()
            .unwrap();

        // Every documented property, with its example: accepted and carried out.
        let full = sample(&doc, schema, true);
        let target = command_target(&app, path).await;
        let reply = app.call(method.clone(), &target).json(&full).send().await;
        assert_eq!(
            reply.status.as_u16(),
            success,
            "{method} {path} with {full}: {}",
            reply.text
        );

        // Only the required ones: the shape is accepted (a rule may still refuse it, as an
        // override that names nothing is refused).
        let minimal = sample(&doc, schema, false);
        let target = command_target(&app, path).await;
        let reply = app
            .call(method.clone(), &target)
            .json(&minimal)
            .send()
            .await;
        assert_ne!(
            reply.status, 400,
            "{method} {path} with only the required properties {minimal}: {}",
            reply.text
        );

        let mut objects = Vec::new();
        object_schemas(&doc, schema, Vec::new(), &mut objects);
        for (at, object) in objects {
            let documented: BTreeSet<String> = object["properties"]
                .as_object()
                .expect("properties")
                .keys()
                .cloned()
                .collect();
            assert_eq!(
                object["additionalProperties"],
                false,
                "{method} {path}: {} must declare additionalProperties: false",
                describe(&at)
            );

            let mut probe = full.clone();
            object_at(&mut probe, &at).insert("__probe__".to_owned(), json!(true));
            let reply = app.call(method.clone(), &target).json(&probe).send().await;
            let detail = reply.assert_problem(400, &["unknown field `__probe__`"]);
            assert_eq!(
                accepted_fields(&detail),
                documented,
                "{method} {path}: the fields of {} (accepted by the server, then documented)",
                describe(&at)
            );

            for name in required_properties(object) {
                let mut without = full.clone();
                object_at(&mut without, &at).remove(&name);
                let reply = app
                    .call(method.clone(), &target)
                    .json(&without)
                    .send()
                    .await;
                reply.assert_problem(400, &[&format!("missing field `{name}`")]);
            }
        }
    }
}

// Answers.

/// Checks `value` against `schema`, in the subset of JSON Schema 2020-12 this document uses, and
/// collects what does not conform. Objects are strict: a property the schema does not declare is
/// an error unless `additionalProperties` admits it, so that a field the server starts sending
/// must be documented. A keyword outside the subset fails the test rather than pass unchecked;
/// `pattern` is the one that is accepted without being checked (this crate has no regex engine).
fn conform(doc: &Value, schema: &Value, value: &Value, at: &str, errors: &mut Vec<String>) {
    conform_inner(doc, schema, value, at, errors, true);
}

fn conform_inner(
    doc: &Value,
    schema: &Value,
    value: &Value,
    at: &str,
    errors: &mut Vec<String>,
    strict: bool,
) {
    const ANNOTATIONS: [&str; 6] = [
        "description",
        "examples",
        "default",
        "title",
        "pattern",
        "$ref",
    ];
    let schema = resolve(doc, schema);
    let members = schema.as_object().expect("a schema is an object");
    let mut fail = |problem: String| errors.push(format!("{at}: {problem}"));
    let mut nested = Vec::new();
    // Properties declared by this schema and the schemas it includes with allOf.
    let mut declared: BTreeSet<&str> = BTreeSet::new();
    for part in schema["allOf"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
    {
        let part = resolve(doc, part);
        if let Some(properties) = part["properties"].as_object() {
            declared.extend(properties.keys().map(String::as_str));
        }
    }
    for (keyword, expected) in members {
        match keyword.as_str() {
            "type" => {
                let names: Vec<&str> = match expected {
                    Value::String(name) => vec![name.as_str()],
                    Value::Array(names) => names.iter().filter_map(Value::as_str).collect(),
                    _ => panic!("type {expected}"),
                };
                let matches = |name: &str| match name {
                    "object" => value.is_object(),
                    "array" => value.is_array(),
                    "string" => value.is_string(),
                    "integer" => value.is_i64() || value.is_u64(),
                    "number" => value.is_number(),
                    "boolean" => value.is_boolean(),
                    "null" => value.is_null(),
                    other => panic!("type {other}"),
                };
                if !names.iter().any(|name| matches(name)) {
                    fail(format!("{value} is not of type {expected}"));
                }
            }
            "const" if value != expected => fail(format!("{value} is not {expected}")),
            "enum" if !expected.as_array().unwrap().contains(value) => {
                fail(format!("{value} is not one of {expected}"))
            }
            "const" | "enum" => {}
            "minimum" | "maximum" => {
                if let (Some(number), Some(bound)) = (value.as_f64(), expected.as_f64()) {
                    let outside = if keyword == "minimum" {
                        number < bound
                    } else {
                        number > bound
                    };
                    if outside {
                        fail(format!("{value} is beyond the {keyword} {expected}"));
                    }
                }
            }
            "minLength" | "maxLength" => {
                if let (Some(text), Some(bound)) = (value.as_str(), expected.as_u64()) {
                    let length = text.chars().count() as u64;
                    if (keyword == "minLength" && length < bound)
                        || (keyword == "maxLength" && length > bound)
                    {
                        fail(format!("{value} is beyond the {keyword} {bound}"));
                    }
                }
            }
            "minItems" | "maxItems" => {
                if let (Some(items), Some(bound)) = (value.as_array(), expected.as_u64()) {
                    let length = items.len() as u64;
                    if (keyword == "minItems" && length < bound)
                        || (keyword == "maxItems" && length > bound)
                    {
                        fail(format!("{} items is beyond the {keyword} {bound}", length));
                    }
                }
            }
            "format" => {
                if let Some(text) = value.as_str() {
                    let valid = match expected.as_str().unwrap() {
                        "uuid" => Uuid::parse_str(text).is_ok(),
                        "date" => chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d").is_ok(),
                        "date-time" => chrono::DateTime::parse_from_rfc3339(text).is_ok(),
                        "uri" => text.starts_with("https://") || text.starts_with("http://"),
                        other => panic!("format {other}"),
                    };
                    if !valid {
                        fail(format!("{value} is not a {expected}"));
                    }
                }
            }
            "required" => {
                if let Some(object) = value.as_object() {
                    for name in expected.as_array().unwrap() {
                        if !object.contains_key(name.as_str().unwrap()) {
                            fail(format!("the required property {name} is missing"));
                        }
                    }
                }
            }
            "properties" => {
                let properties = expected.as_object().unwrap();
                declared.extend(properties.keys().map(String::as_str));
                if let Some(object) = value.as_object() {
                    for (name, property) in properties {
                        if let Some(member) = object.get(name) {
                            nested.push((format!("{at}.{name}"), property, member));
                        }
                    }
                }
            }
            "additionalProperties" | "items" | "allOf" | "anyOf" => {}
            annotation if ANNOTATIONS.contains(&annotation) => {}
            other => panic!("the schema keyword {other} is not checked by this test"),
        }
    }
    // Only a schema that describes an object's members is strict; a wrapper such as a nullable
    // `anyOf` leaves them to its choices.
    let describes_members = ["properties", "additionalProperties", "allOf"]
        .iter()
        .any(|keyword| members.contains_key(*keyword));
    if let Some(object) = value.as_object().filter(|_| describes_members) {
        let additional = &schema["additionalProperties"];
        for (name, member) in object {
            if declared.contains(name.as_str()) {
                continue;
            }
            match additional {
                Value::Bool(true) => {}
                Value::Object(_) => nested.push((format!("{at}.{name}"), additional, member)),
                Value::Null if !strict => {}
                _ => fail(format!("the property {name:?} is not documented")),
            }
        }
    }
    if let (Some(items), Some(item_schema)) = (value.as_array(), schema.get("items")) {
        for (index, item) in items.iter().enumerate() {
            nested.push((format!("{at}[{index}]"), item_schema, item));
        }
    }
    for (place, inner, member) in nested {
        conform_inner(doc, inner, member, &place, errors, true);
    }
    for part in schema["allOf"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
    {
        conform_inner(doc, part, value, at, errors, false);
    }
    if let Some(choices) = schema["anyOf"].as_array() {
        let any = choices.iter().any(|choice| {
            let mut attempt = Vec::new();
            conform_inner(doc, choice, value, at, &mut attempt, strict);
            attempt.is_empty()
        });
        if !any {
            errors.push(format!("{at}: {value} matches none of {}", json!(choices)));
        }
    }
}

/// Checks answers against the document and remembers which (method, path, status) were seen.
struct Answers {
    doc: Value,
    seen: BTreeSet<(String, String, u16)>,
}

impl Answers {
    /// Checks one answer to `method path` (the path as documented) and returns its JSON body.
    #[track_caller]
    fn check(&mut self, method: &str, path: &str, reply: &Reply) -> Value {
        let status = reply.status.as_u16();
        let operation = operation(&self.doc, method, path);
        let response = &operation["responses"][status.to_string()];
        assert!(
            response.is_object(),
            "{method} {path} answered {status}, which the document does not list: {}",
            reply.text
        );
        let response = resolve(&self.doc, response);
        let content_type = reply.content_type().split(';').next().unwrap().trim();
        let media = &response["content"][content_type];
        assert!(
            media.is_object(),
            "{method} {path} {status}: content type {content_type:?} is not documented"
        );
        for header in response["headers"]
            .as_object()
            .into_iter()
            .flat_map(|h| h.keys())
        {
            assert!(
                reply.headers.contains_key(header.as_str()),
                "{method} {path} {status}: header {header} is missing"
            );
        }
        let body = if content_type.ends_with("json") {
            reply.json()
        } else {
            Value::String(reply.text.clone())
        };
        let mut errors = Vec::new();
        conform(&self.doc, &media["schema"], &body, "body", &mut errors);
        assert!(
            errors.is_empty(),
            "{method} {path} {status} does not match the document:\n{}\nbody: {body}",
            errors.join("\n")
        );
        self.seen
            .insert((method.to_owned(), path.to_owned(), status));
        body
    }
}

#[tokio::test]
async fn every_answer_matches_the_document() {
    let app =
        TestApp::spawn_with(|state| state.with_read_your_writes_wait(Duration::from_millis(200)))
            .await;
    let mut answers = Answers {
        doc: document(),
        seen: BTreeSet::new(),
    };

    for path in ["/healthz", "/readyz", "/metrics", "/openapi.json"] {
        answers.check("get", path, &app.get(path).await);
    }

    // Leads: captured, read, qualified, disqualified.
    let reply = app
        .post(
            "/v1/leads",
            &json!({"name": "Ada", "company": "Analytical", "email": "ada@example.com",
                    "country": "GB", "source": "webinar"}),
        )
        .await;
    let lead = answers.check("post", "/v1/leads", &reply)["id"]
        .as_str()
        .unwrap()
        .to_owned();
    answers.check(
        "get",
        "/v1/leads/{id}",
        &app.get(&format!("/v1/leads/{lead}")).await,
    );
    let reply = app
        .post(
            &format!("/v1/leads/{lead}/qualify"),
            &qualify_body(true, true, true, true),
        )
        .await;
    let converted = answers.check("post", "/v1/leads/{id}/qualify", &reply)["opportunity_id"]
        .as_str()
        .unwrap()
        .to_owned();
    answers.check(
        "get",
        "/v1/leads/{id}",
        &app.get(&format!("/v1/leads/{lead}")).await,
    );
    let other = app.capture_lead().await;
    let reply = app
        .post(
            &format!("/v1/leads/{other}/disqualify"),
            &json!({"reason": "no budget"}),
        )
        .await;
    answers.check("post", "/v1/leads/{id}/disqualify", &reply);
    answers.check(
        "get",
        "/v1/leads/{id}",
        &app.get(&format!("/v1/leads/{other}")).await,
    );

    // A deal through every command.
    let reply = app.post("/v1/opportunities", &deal_body()).await;
    let deal = answers.check("post", "/v1/opportunities", &reply)["id"]
        .as_str()
        .unwrap()
        .to_owned();
    for (segment, body) in [
        (
            "stage",
            json!({"stage": "quoted", "reason": "pricing sent"}),
        ),
        (
            "probability",
            json!({"probability": 80, "forecast_category": "commit"}),
        ),
        ("amount", json!({"amount": 150_000, "currency": "EUR"})),
        ("close-date", json!({"expected_close_date": "2026-11-30"})),
        ("owner", json!({"owner": "bob"})),
        (
            "activities",
            json!({"kind": "call", "summary": "terms agreed"}),
        ),
    ] {
        let reply = app
            .post(&format!("/v1/opportunities/{deal}/{segment}"), &body)
            .await;
        answers.check(
            "post",
            &format!("/v1/opportunities/{{id}}/{segment}"),
            &reply,
        );
    }
    let done = app.schedule_follow_up(&deal).await;
    app.schedule_follow_up(&deal).await;
    let reply = app
        .post(
            &format!("/v1/opportunities/{deal}/follow-ups/{done}/complete"),
            &json!({}),
        )
        .await;
    answers.check(
        "post",
        "/v1/opportunities/{id}/follow-ups/{follow_up_id}/complete",
        &reply,
    );
    let lost = app.create_deal().await;
    let reply = app
        .post(
            &format!("/v1/opportunities/{lost}/close"),
            &json!({"outcome": "lost", "reason": "went elsewhere"}),
        )
        .await;
    answers.check("post", "/v1/opportunities/{id}/close", &reply);
    let reopened = app.create_won_deal().await;
    let reply = app
        .post(&format!("/v1/opportunities/{reopened}/reopen"), &json!({}))
        .await;
    answers.check("post", "/v1/opportunities/{id}/reopen", &reply);
    let reply = app
        .put(
            "/v1/pipelines/enterprise",
            &json!({"name": "Enterprise", "stages": [
                {"name": "intro", "probability": 10, "forecast_category": "pipeline"},
                {"name": "deal", "probability": 60, "forecast_category": "commit"}]}),
        )
        .await;
    answers.check("put", "/v1/pipelines/{slug}", &reply);

    // The read models catch up, as the projector service would make them.
    let events = app.all_events().await;
    let head = events.last().expect("events were appended").position;
    projector::migrate(app.store.pool())
        .await
        .expect("read-model tables");
    for projection in [Projection::Pipeline, Projection::Forecast] {
        projector::apply_batch(&app.store, projection, &events)
            .await
            .expect("projecting");
    }
    for id in [&deal, &lost, &reopened, &converted] {
        let reply = app
            .get(&format!("/v1/opportunities/{id}?min_position={head}"))
            .await;
        answers.check("get", "/v1/opportunities/{id}", &reply);
    }
    let reply = app
        .get(&format!("/v1/opportunities?limit=2&min_position={head}"))
        .await;
    let page = answers.check("get", "/v1/opportunities", &reply);
    let cursor = page["next_cursor"].as_str().expect("a next page");
    let reply = app
        .get(&format!(
            "/v1/opportunities?limit=2&cursor={cursor}&status=open"
        ))
        .await;
    answers.check("get", "/v1/opportunities", &reply);
    let reply = app.get(&format!("/v1/opportunities/{deal}/history")).await;
    answers.check("get", "/v1/opportunities/{id}/history", &reply);
    // Answers from history carry the fields that say what they cover.
    let earlier = head - 3;
    for (method, path, query) in [
        (
            "get",
            "/v1/opportunities/{id}",
            format!("/v1/opportunities/{deal}"),
        ),
        ("get", "/v1/opportunities", "/v1/opportunities".to_owned()),
        (
            "get",
            "/v1/pipelines/{slug}/board",
            "/v1/pipelines/default/board".to_owned(),
        ),
        ("get", "/v1/forecast", "/v1/forecast".to_owned()),
        ("get", "/v1/follow-ups", "/v1/follow-ups".to_owned()),
    ] {
        let reply = app.get(&format!("{query}?as_of_position={earlier}")).await;
        assert!(answers.check(method, path, &reply)["as_of"].is_string());
        let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
        let reply = app.get(&format!("{query}?valid_at={now}")).await;
        let answer = answers.check(method, path, &reply);
        assert!(answer["valid_at"].is_string(), "{answer}");
        assert!(answer.get("as_of").is_none(), "{answer}");
    }
    let today = chrono::Utc::now().date_naive();
    let reply = app
        .get(&format!(
            "/v1/forecast/trend?period=2026-Q4&currency=EUR&from={}&to={today}&step=week",
            today - chrono::Duration::days(21)
        ))
        .await;
    let trend = answers.check("get", "/v1/forecast/trend", &reply);
    assert_eq!(trend["points"].as_array().map(Vec::len), Some(4));
    let reply = app
        .get(&format!(
            "/v1/forecast/trend?period=2026-Q4&currency=EUR&from={}&to={today}&time=occurred",
            today - chrono::Duration::days(2)
        ))
        .await;
    let trend = answers.check("get", "/v1/forecast/trend", &reply);
    assert_eq!(trend["time"], "occurred");
    let reply = app
        .get("/v1/analytics/win-rates?pipeline=default&lookback=30d")
        .await;
    let rates = answers.check("get", "/v1/analytics/win-rates", &reply);
    assert!(!rates["stages"].as_array().unwrap().is_empty());
    answers.check(
        "get",
        "/v1/analytics/win-rates",
        &app.get("/v1/analytics/win-rates?pipeline=nowhere").await,
    );
    let reply = app
        .get("/v1/analytics/forecast-accuracy?period=2026-Q1&currency=EUR&probability=historical")
        .await;
    answers.check("get", "/v1/analytics/forecast-accuracy", &reply);
    let reply = app.get("/v1/analytics/slippage?period=2026-Q1").await;
    answers.check("get", "/v1/analytics/slippage", &reply);
    let reply = app
        .get("/v1/analytics/funnel?pipeline=default&from=2026-01-01&to=2026-12-31")
        .await;
    answers.check("get", "/v1/analytics/funnel", &reply);
    let reply = app.get("/v1/work-queue").await;
    answers.check("get", "/v1/work-queue", &reply);
    let reply = app
        .get(&format!(
            "/v1/forecast?probability=historical&min_position={head}"
        ))
        .await;
    answers.check("get", "/v1/forecast", &reply);
    for slug in ["default", "enterprise"] {
        let reply = app
            .get(&format!("/v1/pipelines/{slug}/board?min_position={head}"))
            .await;
        answers.check("get", "/v1/pipelines/{slug}/board", &reply);
    }
    for query in ["", "?period=quarter&currency=EUR"] {
        let reply = app.get(&format!("/v1/forecast{query}")).await;
        let forecast = answers.check("get", "/v1/forecast", &reply);
        assert!(!forecast["rows"].as_array().unwrap().is_empty());
    }
    let reply = app.get("/v1/follow-ups").await;
    let follow_ups = answers.check("get", "/v1/follow-ups", &reply);
    assert!(!follow_ups["follow_ups"].as_array().unwrap().is_empty());
    answers.check(
        "get",
        "/v1/events",
        &app.get("/v1/events?after=0&limit=5").await,
    );

    // Errors.
    answers.check("post", "/v1/leads", &app.post_raw("/v1/leads", "{").await);
    let oversized = vec![b' '; api::MAX_BODY_BYTES + 1];
    answers.check(
        "post",
        "/v1/leads",
        &app.post_raw("/v1/leads", oversized).await,
    );
    let mut negative = deal_body();
    negative["amount"] = json!(-1);
    answers.check(
        "post",
        "/v1/opportunities",
        &app.post("/v1/opportunities", &negative).await,
    );
    let reply = app
        .call(Method::POST, &format!("/v1/opportunities/{deal}/owner"))
        .json(&json!({"owner": "carol"}))
        .if_match(1)
        .send()
        .await;
    answers.check("post", "/v1/opportunities/{id}/owner", &reply);
    let reply = app
        .post(
            &format!("/v1/opportunities/{}/stage", unknown_id()),
            &json!({"stage": "new"}),
        )
        .await;
    answers.check("post", "/v1/opportunities/{id}/stage", &reply);
    let reply = app.get(&format!("/v1/leads/{}", unknown_id())).await;
    answers.check("get", "/v1/leads/{id}", &reply);
    answers.check(
        "get",
        "/v1/forecast",
        &app.get("/v1/forecast?bogus=1").await,
    );
    answers.check(
        "get",
        "/v1/opportunities",
        &app.get("/v1/opportunities?limit=0").await,
    );
    // A committed position the read model has not applied (no projector runs here): 503.
    let unapplied = app
        .post(
            &format!("/v1/opportunities/{deal}/owner"),
            &json!({"owner": "dora"}),
        )
        .await
        .command_answer(200)["position"]
        .as_i64()
        .expect("a position");
    let reply = app
        .call(
            Method::GET,
            &format!("/v1/opportunities/{deal}?min_position={unapplied}"),
        )
        .allow_unavailable()
        .send()
        .await;
    answers.check("get", "/v1/opportunities/{id}", &reply);
    let statuses: BTreeSet<u16> = answers.seen.iter().map(|(_, _, status)| *status).collect();
    assert_eq!(
        statuses,
        BTreeSet::from([200, 201, 400, 404, 409, 413, 422, 503]),
        "the statuses checked"
    );

    // Every route's success answer was among them.
    for (method, path) in api::routes() {
        let success = answers
            .seen
            .iter()
            .any(|(m, p, status)| m == method && p == path && *status < 300);
        assert!(success, "no success answer of {method} {path} was checked");
    }
}
