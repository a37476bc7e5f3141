//! The time-travel parameters refuse what they cannot answer, each with a problem that names the
//! parameter. (That answers from history equal the live ones is checked in the projector's
//! tests, where the projections run.)

use chrono::{Duration, Utc};

use crate::helpers::TestApp;

/// Every read endpoint that takes `as_of`, with the separator before further parameters.
fn endpoints(deal: &str) -> Vec<String> {
    vec![
        "/v1/pipelines/default/board?".to_owned(),
        "/v1/forecast?".to_owned(),
        "/v1/opportunities?".to_owned(),
        format!("/v1/opportunities/{deal}?"),
        "/v1/follow-ups?".to_owned(),
    ]
}

#[tokio::test]
async fn an_instant_in_the_future_is_refused() {
    let app = TestApp::spawn().await;
    let deal = app.create_deal().await;
    let future = (Utc::now() + Duration::hours(1)).format("%Y-%m-%dT%H:%M:%SZ");
    for path in endpoints(&deal) {
        app.get(&format!("{path}as_of={future}"))
            .await
            .assert_problem(422, &["as_of", "in the future"]);
    }
    let head = app.store.head_position().await.unwrap();
    for path in endpoints(&deal) {
        app.get(&format!("{path}as_of_position={}", head + 1))
            .await
            .assert_problem(
                422,
                &["as_of_position", "beyond the last committed position"],
            );
        app.get(&format!("{path}as_of_position=-1"))
            .await
            .assert_problem(422, &["as_of_position", "negative"]);
    }
}

#[tokio::test]
async fn unparsable_instants_and_positions_are_bad_requests_naming_the_parameter() {
    let app = TestApp::spawn().await;
    let deal = app.create_deal().await;
    for path in endpoints(&deal) {
        for instant in [
            "yesterday",
            "2026-13-01T00:00:00Z",
            "2026-11-26",
            "2026-11-26T10:00:00",
        ] {
            app.get(&format!("{path}as_of={instant}"))
                .await
                .assert_problem(400, &["as_of", "RFC 3339"]);
        }
        app.get(&format!("{path}as_of="))
            .await
            .assert_problem(400, &["as_of", "RFC 3339"]);
        app.get(&format!("{path}as_of_position=ten"))
            .await
            .assert_problem(400, &["as_of_position", "whole number"]);
    }
}

#[tokio::test]
async fn as_of_and_as_of_position_together_are_refused() {
    let app = TestApp::spawn().await;
    let deal = app.create_deal().await;
    for path in endpoints(&deal) {
        app.get(&format!(
            "{path}as_of=2026-01-01T00:00:00Z&as_of_position=1"
        ))
        .await
        .assert_problem(422, &["as_of", "as_of_position", "not both"]);
    }
}

#[tokio::test]
async fn answers_from_history_say_what_they_cover() {
    let app = TestApp::spawn().await;
    let deal = app.create_deal().await;
    let head = app.store.head_position().await.unwrap();
    let now = Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    let forecast = app
        .get(&format!("/v1/forecast?as_of={}", now.replace('+', "%2B")))
        .await
        .assert_status(200)
        .json();
    assert_eq!(forecast["position"], head);
    let as_of = chrono::DateTime::parse_from_rfc3339(forecast["as_of"].as_str().unwrap()).unwrap();
    assert_eq!(as_of, chrono::DateTime::parse_from_rfc3339(&now).unwrap());
    assert_eq!(forecast["rows"].as_array().unwrap().len(), 1, "{forecast}");
    let one = app
        .get(&format!("/v1/opportunities/{deal}?as_of_position={head}"))
        .await
        .assert_status(200)
        .json();
    assert_eq!(one["as_of_position"], head);
    assert_eq!(one["id"], deal);
    let before = app
        .get("/v1/opportunities?as_of=2001-01-01T00:00:00Z")
        .await
        .assert_status(200)
        .json();
    assert_eq!(before["opportunities"], serde_json::json!([]));
    assert_eq!(before["position"], 0);
}

#[tokio::test]
async fn trend_refuses_bad_input() {
    let app = TestApp::spawn().await;
    let base = "/v1/forecast/trend?period=2026-Q4&currency=EUR";
    app.get(&format!("{base}&from=2020-01-01&to=2026-12-31"))
        .await
        .assert_problem(422, &["more than 1000"]);
    app.get(&format!("{base}&from=2026-10-01&to=2026-09-01"))
        .await
        .assert_problem(422, &["to", "before"]);
    app.get(&format!("{base}&from=2026-10-01&to=2026-12-31&step=hour"))
        .await
        .assert_problem(422, &["step"]);
    app.get("/v1/forecast/trend?period=2026-Q5&currency=EUR&from=2026-10-01&to=2026-10-02")
        .await
        .assert_problem(422, &["period"]);
    app.get("/v1/forecast/trend?period=2026-Q4&from=2026-10-01&to=2026-10-02")
        .await
        .assert_problem(400, &["currency", "required"]);
    app.get(&format!("{base}&from=2026-10-01&to=someday"))
        .await
        .assert_problem(422, &["to"]);
}

#[tokio::test]
async fn trend_has_one_point_per_step_up_to_now() {
    let app = TestApp::spawn().await;
    app.create_deal().await;
    let today = Utc::now().date_naive();
    let from = today - Duration::days(14);
    let trend = app
        .get(&format!(
            "/v1/forecast/trend?period={}&currency=EUR&from={from}&to={}&step=week",
            today.format("%Y-%m"),
            today + Duration::days(30)
        ))
        .await
        .assert_status(200)
        .json();
    let points = trend["points"].as_array().unwrap();
    assert_eq!(points.len(), 3, "{trend}");
    assert_eq!(points[0]["at"], format!("{from}T00:00:00Z"));
    assert_eq!(trend["step"], "week");
    assert_eq!(trend["time"], "recorded");
}
