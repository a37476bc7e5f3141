//! The web page in a real browser: Debian's chromium, driven over WebDriver by chromedriver,
//! against a real node (`dealstream run`) loaded with `dealstream demo`. Each check compares what
//! the page shows with what the API answers the same question, and each view is photographed
//! into `docs/screenshots/`, which the README shows.
//!
//! The page marks each view with the time it stands at (`data-at` on the board and the
//! forecast) once drawn, so the test waits for that mark rather than for a fixed time.

mod node;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use chrono::{Days, Utc};
use fantoccini::key::Key;
use fantoccini::wd::WebDriverCompatibleCommand;
use fantoccini::{Client, ClientBuilder, Locator};
use futures::FutureExt;
use serde_json::{Value, json};

use node::{Driver, Node};

/// Months of demo history: enough for several quarters on both time axes, small enough to load
/// in a few seconds.
const DEMO_MONTHS: u32 = 9;
/// How far back the slider is moved.
const DAYS_BACK: u64 = 45;
/// The actor of the token the page is given and whose work queue it shows; one of the demo's
/// owners.
const ACTOR: &str = "anna";
/// How long the page may take to draw a view before the test fails.
const DRAW_TIMEOUT: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_shows_what_the_api_answers() {
    let node = Node::start(DEMO_MONTHS, ACTOR).await;
    let driver = Driver::start().await;
    let outcome = std::panic::AssertUnwindSafe(drive(&node, &driver))
        .catch_unwind()
        .await;
    drop(driver);
    node.remove().await;
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

async fn drive(node: &Node, driver: &Driver) {
    let capabilities = json!({
        "browserName": "chrome",
        "goog:chromeOptions": {
            "binary": "/usr/bin/chromium",
            // No sandbox: CI runs as root, where chromium refuses to start with one.
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                     "--disable-dev-shm-usage", "--window-size=1280,800",
                     "--force-device-scale-factor=1", "--lang=en-GB"],
        },
        "goog:loggingPrefs": { "browser": "ALL" },
    });
    let Value::Object(capabilities) = capabilities else {
        unreachable!("a JSON object literal")
    };
    let browser = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(capabilities)
        .connect(&driver.url)
        .await
        .expect("a chromium session");
    let outcome = std::panic::AssertUnwindSafe(check_views(node, &browser))
        .catch_unwind()
        .await;
    let _ = browser.close().await;
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

async fn check_views(node: &Node, browser: &Client) {
    browser.goto(&node.base).await.expect("open the page");
    // Before a token is entered the page asks for one instead of fetching 401s (which the
    // console check at the end would catch).
    browser
        .wait()
        .at_most(DRAW_TIMEOUT)
        .for_element(Locator::Css("#status.error"))
        .await
        .expect("the page asks for a token");
    let token = browser
        .find(Locator::Id("token"))
        .await
        .expect("token field");
    token.send_keys(&node.token).await.expect("type the token");
    // The work queue is the actor's.
    let actor = browser
        .find(Locator::Id("actor"))
        .await
        .expect("actor field");
    actor.send_keys(ACTOR).await.expect("type the actor");
    browser
        .find(Locator::Css("#access button[type=submit]"))
        .await
        .expect("the access form's button")
        .click()
        .await
        .expect("submit the access form");

    // The board, live: its sums are the API's board answer.
    wait_for_mark(browser, "board", "live").await;
    let board = node.get("/v1/pipelines/default/board").await;
    assert_eq!(board_on_page(browser).await, board_from_api(&board));
    assert!(
        board_from_api(&board)
            .values()
            .any(|totals| !totals.is_empty()),
        "the demo leaves open deals on the board"
    );
    screenshot(browser, "board").await;

    // A deal's whole history, from its card.
    // A deal in the furthest stage that holds one has come the longest way, so its timeline
    // has the most to show.
    let deal = browser
        .execute(
            "return [...document.querySelectorAll('#board .column')].reverse()
                .map((column) => column.querySelector('.card[data-deal]'))
                .find((card) => card)?.dataset.deal ?? null;",
            vec![],
        )
        .await
        .expect("look for a deal card");
    let deal = deal.as_str().expect("a deal card on the board").to_owned();
    let card = browser
        .find(Locator::Css(&format!(".card[data-deal='{deal}']")))
        .await
        .expect("the deal's card");
    card.click().await.expect("open the deal");
    let timeline = format!("ol.timeline[data-deal='{deal}']");
    browser
        .wait()
        .at_most(DRAW_TIMEOUT)
        .for_element(Locator::Css(&timeline))
        .await
        .expect("the deal's timeline");
    let history = node.get(&format!("/v1/opportunities/{deal}/history")).await;
    let expected: Vec<Value> = history["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|event| json!([event["event_id"], event["event_type"]]))
        .collect();
    let shown = browser
        .execute(
            "return [...document.querySelectorAll(arguments[0] + ' > li')]
                .map((item) => [item.dataset.event, item.dataset.type]);",
            vec![json!(timeline)],
        )
        .await
        .expect("read the timeline");
    assert_eq!(shown, Value::Array(expected), "the timeline of deal {deal}");
    assert!(
        history["events"].as_array().unwrap().len() > 1,
        "a demo deal has more than its creation"
    );
    screenshot(browser, "deal-history").await;
    browser
        .find(Locator::Id("deal-close"))
        .await
        .expect("the dialog's close button")
        .click()
        .await
        .expect("close the dialog");

    // The forecast, live, both probability models.
    click(browser, "nav a[data-view=forecast]").await;
    wait_for_mark(browser, "forecast", "live").await;
    assert_eq!(
        forecast_on_page(browser).await,
        forecast_from_api(node, "quarter", "").await
    );
    screenshot(browser, "forecast").await;

    // The slider, moved back by keyboard: as known then, then as it was.
    let past_day = Utc::now()
        .date_naive()
        .checked_sub_days(Days::new(DAYS_BACK))
        .expect("a past day");
    let instant = format!("{past_day}T23:59:59Z");
    let slider = browser
        .find(Locator::Id("day-slider"))
        .await
        .expect("the slider");
    let left = Key::Left.to_string().repeat(DAYS_BACK as usize);
    slider.send_keys(&left).await.expect("move the slider");
    let as_of = format!("as_of={instant}");
    wait_for_mark(browser, "forecast", &as_of).await;
    assert_eq!(
        forecast_on_page(browser).await,
        forecast_from_api(node, "quarter", &as_of).await,
        "the forecast as known at {instant}"
    );
    click(browser, "input[name=axis][value=valid_at]").await;
    let valid_at = format!("valid_at={instant}");
    wait_for_mark(browser, "forecast", &valid_at).await;
    let then = forecast_from_api(node, "quarter", &valid_at).await;
    assert!(
        !then.is_empty(),
        "the demo history has deals {DAYS_BACK} days ago"
    );
    assert_eq!(
        forecast_on_page(browser).await,
        then,
        "the forecast as it was at {instant}"
    );
    screenshot(browser, "forecast-as-it-was").await;
    click(browser, "nav a[data-view=board]").await;
    wait_for_mark(browser, "board", &valid_at).await;
    let board_then = node
        .get(&format!("/v1/pipelines/default/board?{valid_at}"))
        .await;
    assert_eq!(board_on_page(browser).await, board_from_api(&board_then));
    screenshot(browser, "board-as-it-was").await;

    // The actor's work queue.
    click(browser, "nav a[data-view=queue]").await;
    browser
        .wait()
        .at_most(DRAW_TIMEOUT)
        .for_element(Locator::Css(&format!("#queue[data-owner='{ACTOR}']")))
        .await
        .expect("the work queue");
    let queue = node.get(&format!("/v1/work-queue?owner={ACTOR}")).await;
    let expected: Vec<Value> = queue["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|item| json!([item["opportunity_id"], item["reason"]]))
        .collect();
    let shown = browser
        .execute(
            "return [...document.querySelectorAll('#queue tbody tr')]
                .map((row) => [row.dataset.deal, row.dataset.reason]);",
            vec![],
        )
        .await
        .expect("read the work queue");
    assert_eq!(shown, Value::Array(expected), "the work queue of {ACTOR}");
    screenshot(browser, "work-queue").await;

    // A phone-width screen: the board's columns stack.
    browser
        .set_window_size(390, 844)
        .await
        .expect("narrow the window");
    click(browser, "button#today").await;
    click(browser, "nav a[data-view=board]").await;
    wait_for_mark(browser, "board", "live").await;
    let overflow = browser
        .execute(
            "return document.documentElement.scrollWidth - window.innerWidth;",
            vec![],
        )
        .await
        .expect("measure the page");
    assert!(
        overflow.as_i64().is_some_and(|pixels| pixels <= 0),
        "the page scrolls sideways on a phone: {overflow} px"
    );
    screenshot(browser, "phone-board").await;

    let errors = console_errors(browser).await;
    assert!(errors.is_empty(), "the console has errors: {errors:#?}");
}

async fn click(browser: &Client, selector: &str) {
    browser
        .find(Locator::Css(selector))
        .await
        .unwrap_or_else(|error| panic!("find {selector}: {error}"))
        .click()
        .await
        .unwrap_or_else(|error| panic!("click {selector}: {error}"));
}

/// Waits until the view `id` was drawn for the time `mark` (`live`, `as_of=…`, `valid_at=…`)
/// and no newer load of it is under way.
async fn wait_for_mark(browser: &Client, id: &str, mark: &str) {
    let selector = format!("#{id}[data-at='{mark}']:not([aria-busy])");
    browser
        .wait()
        .at_most(DRAW_TIMEOUT)
        .for_element(Locator::Css(&selector))
        .await
        .unwrap_or_else(|error| panic!("the {id} view was not drawn for {mark}: {error}"));
}

/// Per stage, the sums per currency as `[currency, count, amount, weighted]`.
type BoardSums = BTreeMap<String, Vec<Value>>;

async fn board_on_page(browser: &Client) -> BoardSums {
    let shown = browser
        .execute(
            "return [...document.querySelectorAll('#board .column')].map((column) => [
                column.dataset.stage,
                [...column.querySelectorAll('.totals li')].map((total) => [
                    total.dataset.currency, Number(total.dataset.count),
                    Number(total.dataset.amount), Number(total.dataset.weighted)])]);",
            vec![],
        )
        .await
        .expect("read the board");
    serde_json::from_value::<Vec<(String, Vec<Value>)>>(shown)
        .expect("stages and sums")
        .into_iter()
        .collect()
}

fn board_from_api(board: &Value) -> BoardSums {
    board["columns"]
        .as_array()
        .expect("columns")
        .iter()
        .map(|column| {
            let totals = column["totals"]
                .as_array()
                .expect("totals")
                .iter()
                .map(|total| {
                    json!([
                        total["currency"],
                        total["count"],
                        total["amount"],
                        total["weighted_amount"]
                    ])
                })
                .collect();
            (column["stage"].as_str().expect("stage").to_owned(), totals)
        })
        .collect()
}

/// Per currency and period, the figures the chart draws, by field name.
type ForecastSums = BTreeMap<(String, String), BTreeMap<String, i64>>;

async fn forecast_on_page(browser: &Client) -> ForecastSums {
    let shown = browser
        .execute(
            "return [...document.querySelectorAll('#forecast table.figures tbody tr')]
                .map((row) => [row.closest('table').dataset.currency, row.dataset.period,
                    Object.fromEntries([...row.querySelectorAll('td')]
                        .map((cell) => [cell.dataset.field, Number(cell.dataset.value)]))]);",
            vec![],
        )
        .await
        .expect("read the forecast");
    serde_json::from_value::<Vec<(String, String, BTreeMap<String, i64>)>>(shown)
        .expect("currency, period and figures")
        .into_iter()
        .map(|(currency, period, figures)| ((currency, period), figures))
        .collect()
}

/// The API's forecast at `time` (`""` for now) summed per currency and period over owners, with
/// the weighted amount of both probability models.
async fn forecast_from_api(node: &Node, period: &str, time: &str) -> ForecastSums {
    let mut sums = ForecastSums::new();
    for probability in ["stage", "historical"] {
        let answer = node
            .get(&format!(
                "/v1/forecast?period={period}&pipeline=default&probability={probability}&{time}"
            ))
            .await;
        for row in answer["rows"].as_array().expect("rows") {
            let key = (
                row["currency"].as_str().expect("currency").to_owned(),
                row["period"].as_str().expect("period").to_owned(),
            );
            let figures = sums.entry(key).or_default();
            let mut add = |field: &str, value: &Value| {
                *figures.entry(field.to_owned()).or_default() += value.as_i64().expect("a number");
            };
            if probability == "stage" {
                for field in [
                    "open_count",
                    "closed_won",
                    "commit",
                    "best_case",
                    "pipeline_amount",
                ] {
                    add(field, &row[field]);
                }
                add("weighted_stage", &row["weighted_amount"]);
            } else {
                add("weighted_historical", &row["weighted_amount"]);
            }
        }
    }
    sums
}

async fn screenshot(browser: &Client, name: &str) {
    let png = browser.screenshot().await.expect("a screenshot");
    let directory = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/screenshots");
    std::fs::create_dir_all(&directory).expect("create docs/screenshots");
    std::fs::write(directory.join(format!("{name}.png")), png).expect("write the screenshot");
}

/// chromedriver's `POST /session/{id}/se/log`: the browser's console since the last call.
#[derive(Debug)]
struct BrowserLog;

impl WebDriverCompatibleCommand for BrowserLog {
    fn endpoint(
        &self,
        base_url: &url::Url,
        session_id: Option<&str>,
    ) -> Result<url::Url, url::ParseError> {
        base_url.join(&format!(
            "session/{}/se/log",
            session_id.unwrap_or_default()
        ))
    }

    fn method_and_body(&self, _request_url: &url::Url) -> (http::Method, Option<String>) {
        (
            http::Method::POST,
            Some(json!({"type": "browser"}).to_string()),
        )
    }
}

/// The console messages of level SEVERE: errors the page logged or the browser reported.
async fn console_errors(browser: &Client) -> Vec<Value> {
    let log = browser
        .issue_cmd(BrowserLog)
        .await
        .expect("the browser log");
    log.as_array()
        .expect("log entries")
        .iter()
        .filter(|entry| entry["level"] == "SEVERE")
        .cloned()
        .collect()
}
