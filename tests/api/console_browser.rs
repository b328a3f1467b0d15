//! The console in a real headless Chromium (Debian's `chromium` + `chromium-driver`, driven over
//! WebDriver by fantoccini): log in, find a session by email, ask the "what the chatbot
//! receives" question, see a failed Dify lookup with its reason, check that hostile page titles
//! and element texts stay inert, log out. One browser session, a few seconds.
//!
//! Without chromedriver this test fails (it never skips): `.ci/run` installs it.
//! `LIVECTX_UPDATE_SCREENSHOT=1` writes the session view to `docs/console.png`.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::helpers::redis_env::free_port;
use crate::helpers::{TestApp, action, batch, test_config};
use fantoccini::{ClientBuilder, Locator};
use livectx::ServeConfig;
use serde_json::{Value, json};

const KEY: &str = "browser-test-console-key-42";
/// Runs script if ever interpreted: sets a flag the test looks for.
const IMG_XSS: &str = "<img src=x onerror=\"window.__xss='img';alert(1)\">";
const SCRIPT_XSS: &str = "<script>window.__xss='script';alert(2)</script>";

/// The chromedriver child, killed (by its own pid) when the test ends.
struct Driver {
    child: Child,
    port: u16,
    profile: std::path::PathBuf,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

fn start_driver() -> Driver {
    let binary = ["chromedriver", "/usr/bin/chromedriver"]
        .into_iter()
        .find(|b| {
            Command::new(b)
                .arg("--version")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok()
        })
        .expect(
            "chromedriver is not installed: the console's browser test needs Debian's chromium and chromium-driver (apt-get install -y chromium chromium-driver; .ci/run does this)",
        );
    let port = free_port();
    let child = Command::new(binary)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromedriver starts");
    let profile = std::env::temp_dir().join(format!(
        "livectx-console-chromium-{}-{port}",
        std::process::id()
    ));
    Driver {
        child,
        port,
        profile,
    }
}

async fn wait_for_driver(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(20);
    let http = reqwest::Client::new();
    loop {
        if let Ok(response) = http
            .get(format!("http://127.0.0.1:{port}/status"))
            .send()
            .await
            && response.status().is_success()
        {
            return;
        }
        assert!(Instant::now() < deadline, "chromedriver did not start");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn wait_until<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(10);
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn seed_batches(now: f64) -> Vec<livectx::session::model::ActionBatch> {
    let mut priya = batch(
        "ps_priya_7f3a",
        Some("priya@acme.io"),
        Some("usr_priya"),
        vec![
            action(
                "pageview",
                "Page Load: Dashboard",
                "https://app.acme.io/dashboard",
                now - 60.0,
            ),
            action(
                "click",
                "Click Consultants link",
                "https://app.acme.io/dashboard",
                now - 55.0,
            ),
            action(
                "pageview",
                "Page Load: Consultants",
                "https://app.acme.io/consultants",
                now - 54.0,
            ),
            action(
                "click",
                "Click Notifications bell",
                "https://app.acme.io/consultants",
                now - 40.0,
            ),
            action(
                "click",
                "Click Notifications bell",
                "https://app.acme.io/consultants",
                now - 39.5,
            ),
            action(
                "click",
                "Click Notifications bell",
                "https://app.acme.io/consultants",
                now - 39.0,
            ),
            action(
                "error",
                "Error: Notifications failed to load",
                "https://app.acme.io/consultants",
                now - 38.0,
            ),
        ],
    );
    priya.product_id = Some("acme".into());
    let mut hostile = batch(
        "ps_hostile_01",
        Some("mallory@evil.test"),
        None,
        vec![
            action(
                "pageview",
                IMG_XSS,
                "https://app.acme.io/<svg onload=alert(3)>",
                now - 30.0,
            ),
            action(
                "click",
                SCRIPT_XSS,
                "https://app.acme.io/<svg onload=alert(3)>",
                now - 20.0,
            ),
        ],
    );
    hostile.product_id = Some("acme".into());
    let mut devon = batch(
        "ps_devon_91c2",
        Some("devon@acme.io"),
        Some("usr_devon"),
        vec![
            action(
                "pageview",
                "Page Load: Checkout",
                "https://app.acme.io/checkout",
                now - 15.0,
            ),
            action(
                "submit",
                "Submit payment",
                "https://app.acme.io/checkout",
                now - 10.0,
            ),
            action(
                "error",
                "Card declined",
                "https://app.acme.io/checkout",
                now - 9.0,
            ),
        ],
    );
    devon.product_id = Some("acme".into());
    vec![priya, hostile, devon]
}

#[tokio::test]
async fn an_operator_uses_the_console_in_chromium() {
    let driver = start_driver();
    let app = TestApp::spawn(ServeConfig {
        console_key: Some(KEY.to_string()),
        ..test_config()
    })
    .await;
    let now = livectx::clock::now();
    for b in seed_batches(now) {
        app.seed(b).await;
    }
    // Dify with an unfilled variable, as a misconfigured app sends it.
    app.retrieve(None, "{{session_id}}", "Where are my notifications?")
        .await;
    app.retrieve(None, "ps_priya_7f3a", "Where are my notifications?")
        .await;

    wait_for_driver(driver.port).await;
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".to_string(),
        json!({
            "binary": "/usr/bin/chromium",
            "args": [
                "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--window-size=1280,1000",
                format!("--user-data-dir={}", driver.profile.display()),
            ],
        }),
    );
    let client = ClientBuilder::rustls()
        .expect("TLS roots")
        .capabilities(caps)
        .connect(&format!("http://127.0.0.1:{}", driver.port))
        .await
        .expect("a Chromium session");
    let base = app.url("");

    // Log in.
    client.goto(&format!("{base}/console")).await.unwrap();
    client
        .find(Locator::Id("key"))
        .await
        .unwrap()
        .send_keys(KEY)
        .await
        .unwrap();
    client
        .find(Locator::Id("login"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    client
        .wait()
        .for_element(Locator::Id("search"))
        .await
        .unwrap();

    // Find a session by email: the live table updates without a page reload.
    client
        .execute("window.__samePage = true;", vec![])
        .await
        .unwrap();
    client
        .find(Locator::Id("search"))
        .await
        .unwrap()
        .send_keys("devon@acme.io")
        .await
        .unwrap();
    wait_until("the table to show only devon", || async {
        let text = text_of(&client, "session-rows").await;
        text.contains("ps_devon_91c2") && !text.contains("ps_priya_7f3a")
    })
    .await;
    let same_page = client
        .execute("return window.__samePage === true;", vec![])
        .await
        .unwrap();
    assert_eq!(same_page, Value::Bool(true), "no page reload");

    // Open priya's session and ask what her chatbot receives.
    client
        .goto(&format!("{base}/console?q=priya%40acme.io"))
        .await
        .unwrap();
    client
        .find(Locator::Css("a.session-link"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let question = client
        .wait()
        .for_element(Locator::Id("question"))
        .await
        .unwrap();
    question
        .send_keys("Where are my notifications?")
        .await
        .unwrap();
    client
        .find(Locator::Id("ask"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let count = text_of(&client, "record-count").await;
    assert!(!count.starts_with('0'), "{count}");
    let panel = text_of(&client, "chatbot").await;
    assert!(panel.contains("Current User Activity"), "{panel}");
    assert!(panel.contains("Notifications bell"), "{panel}");
    let timeline = client
        .find(Locator::Css("ol.timeline"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        timeline.contains("rage click") && timeline.contains("error"),
        "{timeline}"
    );
    if std::env::var("LIVECTX_UPDATE_SCREENSHOT").as_deref() == Ok("1") {
        let png = client.screenshot().await.unwrap();
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/console.png");
        std::fs::write(&path, png).unwrap();
    }

    // The failed Dify lookup, with its reason.
    client
        .goto(&format!("{base}/console/lookups"))
        .await
        .unwrap();
    let lookups = text_of(&client, "lookup-rows").await;
    assert!(lookups.contains("unfilled {{variable}}"), "{lookups}");
    assert!(lookups.contains("{{session_id}}"), "{lookups}");

    // Hostile titles and element texts: visible as text, never run.
    client
        .goto(&format!("{base}/console/sessions/ps_hostile_01"))
        .await
        .unwrap();
    let timeline = client
        .wait()
        .for_element(Locator::Css("ol.timeline"))
        .await
        .unwrap();
    let text = timeline.text().await.unwrap();
    assert!(text.contains(IMG_XSS), "{text}");
    assert!(text.contains(SCRIPT_XSS), "{text}");
    client.goto(&format!("{base}/console")).await.unwrap();
    client
        .wait()
        .for_element(Locator::Id("session-rows"))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(3500)).await; // one live refresh of the table
    let rows = text_of(&client, "session-rows").await;
    assert!(rows.contains(IMG_XSS), "{rows}");
    assert!(client.get_alert_text().await.is_err(), "no alert dialog");
    let ran = client
        .execute("return window.__xss === undefined;", vec![])
        .await
        .unwrap();
    assert_eq!(ran, Value::Bool(true), "no injected script ran");
    let injected = client
        .find_all(Locator::Css("main img, main script, main svg[onload]"))
        .await
        .unwrap();
    assert!(injected.is_empty(), "no injected element");

    // Log out: the console is behind the login form again.
    client
        .find(Locator::Id("logout"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    client.wait().for_element(Locator::Id("key")).await.unwrap();
    client
        .goto(&format!("{base}/console/lookups"))
        .await
        .unwrap();
    client.wait().for_element(Locator::Id("key")).await.unwrap();

    client.close().await.unwrap();
    app.stop().await;
    drop(driver);
}

/// The text of the element with this id, read again when a live update replaced the element
/// between finding and reading it (the pages refresh themselves every few seconds).
async fn text_of(client: &fantoccini::Client, id: &str) -> String {
    let mut last_error = None;
    for _ in 0..50 {
        match client.wait().for_element(Locator::Id(id)).await {
            Ok(element) => match element.text().await {
                Ok(text) => return text,
                Err(error) => last_error = Some(error.to_string()),
            },
            Err(error) => last_error = Some(error.to_string()),
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("could not read #{id}: {last_error:?}");
}
