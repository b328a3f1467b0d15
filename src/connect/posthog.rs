//! `livectx connect posthog`: create, update or verify the PostHog destination that posts every
//! event to livectx's `POST /ingest/{product_id}`.
//!
//! It works through PostHog's hog functions API
//! (`/api/environments/<project_id>/hog_functions/`), the way Autoplay's SDK creates its own
//! destination: list the project's destinations, find ours by name, PATCH it when it exists,
//! POST it otherwise, so running the command twice updates and never duplicates. The
//! destination is PostHog's stock "HTTP Webhook" template (`template-webhook`) with its default
//! body, `{"event": "{event}", "person": "{person}"}`, which livectx's receiver reads, and the
//! shared secret in an `X-PostHog-Secret` header.
//!
//! `--check` changes nothing: it reads the destination back and says what is wrong with it.

use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;
use reqwest::{Method, StatusCode};
use serde::Deserialize;
use serde_json::{Value, json};

/// The events livectx turns into named actions (`$pageleave` ends time on a page). The
/// destination's filter sends exactly these, so PostHog does not spend invocations on the rest.
pub const NAMED_EVENTS: [&str; 6] = [
    "$pageview",
    "$pageleave",
    "$autocapture",
    "$rageclick",
    "$dead_click",
    "$exception",
];

/// PostHog's stock HTTP Webhook destination template.
pub const WEBHOOK_TEMPLATE: &str = "template-webhook";

/// The header livectx's ingest route reads the shared secret from.
pub const SECRET_HEADER: &str = "X-PostHog-Secret";

/// Settings of `livectx connect posthog`.
#[derive(Debug, Clone, Args)]
pub struct PosthogConnectArgs {
    /// PostHog's app address (US Cloud, EU Cloud https://eu.posthog.com, or a self-hosted one).
    #[arg(long, env = "POSTHOG_HOST", default_value = "https://us.posthog.com")]
    pub host: String,

    /// The PostHog project (environment) id, as in its URL /project/<id>.
    #[arg(long, env = "POSTHOG_PROJECT_ID")]
    pub project_id: String,

    /// A PostHog personal API key with read and write access to hog functions (Data pipelines).
    #[arg(long, env = "POSTHOG_PERSONAL_API_KEY", hide_env_values = true)]
    pub personal_api_key: String,

    /// livectx's ingest URL PostHog posts to: https://<livectx>/ingest/<product_id>. PostHog
    /// Cloud calls only public addresses.
    #[arg(long, env = "LIVECTX_INGEST_URL")]
    pub url: String,

    /// The shared secret livectx checks (the server's LIVECTX_INGEST_SECRET).
    #[arg(long, env = "LIVECTX_INGEST_SECRET", hide_env_values = true)]
    pub secret: String,

    /// The destination's name in PostHog: how a re-run finds it again.
    #[arg(long, env = "LIVECTX_POSTHOG_DESTINATION", default_value = "livectx")]
    pub name: String,

    /// Send every event, custom ones included (livectx names them too), instead of only the
    /// events it turns into actions.
    #[arg(long)]
    pub all_events: bool,

    /// Change nothing: verify the destination exists, is enabled, posts to --url with the
    /// secret, and sends the events livectx names; exit non-zero otherwise.
    #[arg(long)]
    pub check: bool,

    /// Timeout of each request to PostHog.
    #[arg(long, default_value = "15s", value_parser = crate::clock::parse_duration)]
    pub timeout: Duration,
}

/// What `connect` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Created { id: String },
    Updated { id: String },
    Verified { id: String },
}

/// `livectx connect posthog`: print what happened; an error explains what to fix.
pub async fn run(args: PosthogConnectArgs) -> anyhow::Result<()> {
    let outcome = connect(&args).await?;
    let events = if args.all_events {
        "every event".to_string()
    } else {
        NAMED_EVENTS.join(", ")
    };
    match outcome {
        Outcome::Created { id } => println!(
            "Created the PostHog destination \"{}\" (id {id}): it posts {events} to {}.",
            args.name, args.url
        ),
        Outcome::Updated { id } => println!(
            "Updated the PostHog destination \"{}\" (id {id}): it posts {events} to {}.",
            args.name, args.url
        ),
        Outcome::Verified { id } => println!(
            "The PostHog destination \"{}\" (id {id}) is enabled and posts {events} to {} with the secret.",
            args.name, args.url
        ),
    }
    Ok(())
}

/// Create or update the destination (or, with `--check`, verify it).
pub async fn connect(args: &PosthogConnectArgs) -> anyhow::Result<Outcome> {
    let api = Api::new(args)?;
    let existing = api.find(&args.name).await?;
    if args.check {
        let Some(id) = existing else {
            bail!(
                "PostHog project {} has no destination named \"{}\": run `livectx connect posthog` without --check to create it",
                args.project_id,
                args.name
            );
        };
        let function = api.get(&id).await?;
        let problems = problems(&function, args);
        if !problems.is_empty() {
            bail!(
                "the PostHog destination \"{}\" (id {id}) is not right:\n  - {}\nRun `livectx connect posthog` without --check to fix it.",
                args.name,
                problems.join("\n  - ")
            );
        }
        return Ok(Outcome::Verified { id });
    }
    match existing {
        Some(id) => {
            api.send(Method::PATCH, &format!("{id}/"), Some(update_body(args)))
                .await?;
            Ok(Outcome::Updated { id })
        }
        None => {
            let created: Created =
                serde_json::from_value(api.send(Method::POST, "", Some(create_body(args))).await?)
                    .context("PostHog created the destination but did not answer with its id")?;
            Ok(Outcome::Created { id: created.id })
        }
    }
}

/// The inputs of the webhook template: where, how, what and with which headers.
pub fn inputs(args: &PosthogConnectArgs) -> Value {
    json!({
        "url": { "value": args.url.trim() },
        "method": { "value": "POST" },
        "body": { "value": { "event": "{event}", "person": "{person}" } },
        "headers": { "value": {
            "Content-Type": "application/json",
            SECRET_HEADER: args.secret.trim(),
        } },
    })
}

/// The event filter: the events livectx names, or none (everything).
pub fn filters(args: &PosthogConnectArgs) -> Value {
    if args.all_events {
        return json!({});
    }
    let events: Vec<Value> = NAMED_EVENTS
        .iter()
        .enumerate()
        .map(|(order, event)| json!({ "id": event, "name": event, "type": "events", "order": order }))
        .collect();
    json!({ "events": events })
}

const DESCRIPTION: &str = "Sends UI activity to livectx, which gives a support chatbot live context (managed by `livectx connect posthog`).";

/// The POST body of a new destination.
pub fn create_body(args: &PosthogConnectArgs) -> Value {
    json!({
        "type": "destination",
        "template_id": WEBHOOK_TEMPLATE,
        "name": args.name,
        "description": DESCRIPTION,
        "enabled": true,
        "inputs": inputs(args),
        "filters": filters(args),
    })
}

/// The PATCH body that brings an existing destination back to what livectx needs.
pub fn update_body(args: &PosthogConnectArgs) -> Value {
    json!({
        "description": DESCRIPTION,
        "enabled": true,
        "inputs": inputs(args),
        "filters": filters(args),
    })
}

/// Everything that keeps `function` from delivering to livectx, for people.
pub fn problems(function: &Value, args: &PosthogConnectArgs) -> Vec<String> {
    let mut problems = Vec::new();
    if function.get("enabled").and_then(Value::as_bool) != Some(true) {
        problems.push("it is disabled".to_string());
    }
    let input = |key: &str| function.pointer(&format!("/inputs/{key}/value"));
    match input("url").and_then(Value::as_str) {
        Some(url) if url.trim() == args.url.trim() => {}
        Some(url) => problems.push(format!("it posts to {url}, not {}", args.url.trim())),
        None => problems.push("it has no URL".to_string()),
    }
    if let Some(method) = input("method").and_then(Value::as_str)
        && !method.eq_ignore_ascii_case("POST")
    {
        problems.push(format!("it sends {method} requests, not POST"));
    }
    let secret = input("headers")
        .and_then(Value::as_object)
        .and_then(|headers| {
            headers
                .iter()
                .find(|(name, _)| name.eq_ignore_ascii_case(SECRET_HEADER))
                .map(|(_, value)| value.as_str().unwrap_or_default().trim().to_string())
        });
    match secret {
        Some(sent) if sent == args.secret.trim() => {}
        Some(_) => problems.push(format!(
            "its {SECRET_HEADER} header is not the secret given (LIVECTX_INGEST_SECRET)"
        )),
        None => problems.push(format!("it sends no {SECRET_HEADER} header")),
    }
    if !args.all_events {
        let filtered: Option<Vec<&str>> = function
            .pointer("/filters/events")
            .and_then(Value::as_array)
            .map(|events| {
                events
                    .iter()
                    .filter_map(|e| e.get("id").and_then(Value::as_str))
                    .collect()
            });
        // No event filter at all sends every event, which includes ours.
        if let Some(filtered) = filtered.filter(|f| !f.is_empty()) {
            let missing: Vec<&str> = NAMED_EVENTS
                .iter()
                .copied()
                .filter(|e| !filtered.contains(e))
                .collect();
            if !missing.is_empty() {
                problems.push(format!("its filters leave out {}", missing.join(", ")));
            }
        }
    }
    problems
}

#[derive(Deserialize)]
struct Created {
    id: String,
}

#[derive(Deserialize)]
struct Page {
    results: Vec<Listed>,
    next: Option<String>,
}

#[derive(Deserialize)]
struct Listed {
    id: String,
    name: String,
}

/// The hog functions collection of one project.
struct Api {
    http: reqwest::Client,
    base: String,
    key: String,
}

impl Api {
    fn new(args: &PosthogConnectArgs) -> anyhow::Result<Self> {
        let host = args.host.trim().trim_end_matches('/');
        if !(host.starts_with("https://") || host.starts_with("http://")) {
            bail!("--host must be a URL such as https://us.posthog.com, not {host:?}");
        }
        let project = args.project_id.trim();
        if project.is_empty() || !project.chars().all(|c| c.is_ascii_alphanumeric()) {
            bail!("--project-id must be PostHog's project id (digits), not {project:?}");
        }
        if args.personal_api_key.trim().is_empty() {
            bail!(
                "the personal API key is empty: set POSTHOG_PERSONAL_API_KEY or --personal-api-key"
            );
        }
        if args.secret.trim().is_empty() {
            bail!("the ingest secret is empty: set LIVECTX_INGEST_SECRET or --secret");
        }
        let url = args.url.trim();
        if !(url.starts_with("https://") || url.starts_with("http://")) || !url.contains("/ingest/")
        {
            bail!(
                "--url must be livectx's ingest URL, https://<livectx>/ingest/<product_id>, not {url:?}"
            );
        }
        let http = reqwest::Client::builder()
            .timeout(args.timeout)
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        Ok(Self {
            http,
            base: format!("{host}/api/environments/{project}/hog_functions/"),
            key: args.personal_api_key.trim().to_string(),
        })
    }

    /// The id of the destination called `name`, following the list's pages.
    async fn find(&self, name: &str) -> anyhow::Result<Option<String>> {
        let mut next = Some(format!("{}?type=destination&limit=100", self.base));
        while let Some(url) = next {
            let page: Page = serde_json::from_value(self.call(Method::GET, &url, None).await?)
                .context("PostHog's list of destinations has an unexpected shape")?;
            if let Some(found) = page.results.into_iter().find(|f| f.name == name) {
                return Ok(Some(found.id));
            }
            // Only follow pages of the same collection (never another host with our key).
            next = page.next.filter(|n| n.starts_with(&self.base));
        }
        Ok(None)
    }

    async fn get(&self, id: &str) -> anyhow::Result<Value> {
        self.send(Method::GET, &format!("{id}/"), None).await
    }

    async fn send(&self, method: Method, path: &str, body: Option<Value>) -> anyhow::Result<Value> {
        let url = format!("{}{path}", self.base);
        self.call(method, &url, body).await
    }

    async fn call(&self, method: Method, url: &str, body: Option<Value>) -> anyhow::Result<Value> {
        let mut request = self
            .http
            .request(method.clone(), url)
            .bearer_auth(&self.key);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request
            .send()
            .await
            .with_context(|| format!("PostHog did not answer {method} {url}"))?;
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        if status.is_success() {
            return serde_json::from_str(&text)
                .with_context(|| format!("PostHog answered {method} {url} with non-JSON"));
        }
        let detail = serde_json::from_str::<Value>(&text)
            .ok()
            .and_then(|v| v.get("detail").and_then(Value::as_str).map(str::to_string))
            .unwrap_or_else(|| text.chars().take(200).collect());
        match status {
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => bail!(
                "PostHog refused the personal API key ({status}: {detail}). Check POSTHOG_PERSONAL_API_KEY, that it may read and write hog functions, and that it belongs to project {}",
                self.base
            ),
            StatusCode::NOT_FOUND => bail!(
                "PostHog has no such project or destination at {url} (404): check --host and --project-id"
            ),
            _ => bail!("PostHog answered {method} {url} with {status}: {detail}"),
        }
    }
}

#[cfg(test)]
mod tests {
    //! Against a stand-in of PostHog's hog functions API on a real socket.
    use std::collections::BTreeMap;
    use std::sync::{Arc, Mutex};

    use axum::Json;
    use axum::Router;
    use axum::extract::{Path, State};
    use axum::http::{HeaderMap, StatusCode};
    use axum::response::{IntoResponse, Response};
    use axum::routing::get;

    use super::*;

    const KEY: &str = "phx_test_key";

    #[derive(Default)]
    struct FakePosthog {
        functions: BTreeMap<String, Value>,
        created: usize,
        patched: usize,
    }

    type Shared = Arc<Mutex<FakePosthog>>;

    fn authorized(headers: &HeaderMap) -> bool {
        headers.get("authorization").and_then(|v| v.to_str().ok()) == Some("Bearer phx_test_key")
    }

    fn refused() -> Response {
        (
            StatusCode::UNAUTHORIZED,
            Json(json!({"type": "authentication_error", "code": "authentication_failed", "detail": "Invalid personal API key."})),
        )
            .into_response()
    }

    async fn list(State(fake): State<Shared>, headers: HeaderMap) -> Response {
        if !authorized(&headers) {
            return refused();
        }
        let fake = fake.lock().unwrap();
        // The list shows name and id (never the inputs), one item a page to exercise `next`.
        let results: Vec<Value> = fake
            .functions
            .values()
            .map(|f| json!({"id": f["id"], "name": f["name"], "type": f["type"], "enabled": f["enabled"]}))
            .collect();
        Json(json!({"count": results.len(), "next": null, "previous": null, "results": results}))
            .into_response()
    }

    async fn create(
        State(fake): State<Shared>,
        Path(project): Path<String>,
        headers: HeaderMap,
        Json(body): Json<Value>,
    ) -> Response {
        if !authorized(&headers) {
            return refused();
        }
        assert_eq!(project, "4242");
        let mut fake = fake.lock().unwrap();
        if body["inputs"]["url"]["value"].as_str().is_none() {
            return (
                StatusCode::BAD_REQUEST,
                Json(json!({"type": "validation_error", "attr": "inputs__url", "detail": "This field is required."})),
            )
                .into_response();
        }
        fake.created += 1;
        let id = format!("0193-fn-{}", fake.created);
        let mut function = body;
        function["id"] = json!(id);
        fake.functions.insert(id, function.clone());
        (StatusCode::CREATED, Json(function)).into_response()
    }

    async fn detail(
        State(fake): State<Shared>,
        Path((_, id)): Path<(String, String)>,
        headers: HeaderMap,
    ) -> Response {
        if !authorized(&headers) {
            return refused();
        }
        match fake.lock().unwrap().functions.get(&id) {
            Some(f) => Json(f.clone()).into_response(),
            None => (StatusCode::NOT_FOUND, Json(json!({"detail": "Not found."}))).into_response(),
        }
    }

    async fn patch(
        State(fake): State<Shared>,
        Path((_, id)): Path<(String, String)>,
        headers: HeaderMap,
        Json(body): Json<Value>,
    ) -> Response {
        if !authorized(&headers) {
            return refused();
        }
        let mut fake = fake.lock().unwrap();
        fake.patched += 1;
        let Some(function) = fake.functions.get_mut(&id) else {
            return (StatusCode::NOT_FOUND, Json(json!({"detail": "Not found."}))).into_response();
        };
        if let (Some(target), Some(fields)) = (function.as_object_mut(), body.as_object()) {
            for (k, v) in fields {
                target.insert(k.clone(), v.clone());
            }
        }
        Json(function.clone()).into_response()
    }

    async fn stand_in() -> (String, Shared) {
        let fake: Shared = Arc::default();
        let app = Router::new()
            .route(
                "/api/environments/{project}/hog_functions/",
                get(list).post(create),
            )
            .route(
                "/api/environments/{project}/hog_functions/{id}/",
                get(detail).patch(patch),
            )
            .with_state(fake.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        (format!("http://{addr}"), fake)
    }

    fn args(host: &str) -> PosthogConnectArgs {
        PosthogConnectArgs {
            host: host.to_string(),
            project_id: "4242".to_string(),
            personal_api_key: KEY.to_string(),
            url: "https://livectx.example.com/ingest/acme_prod".to_string(),
            secret: "s3cret".to_string(),
            name: "livectx".to_string(),
            all_events: false,
            check: false,
            timeout: Duration::from_secs(5),
        }
    }

    #[tokio::test]
    async fn creates_then_updates_without_duplicating_then_checks() {
        let (host, fake) = stand_in().await;
        let mut a = args(&host);
        let created = connect(&a).await.unwrap();
        let Outcome::Created { id } = created else {
            panic!("{created:?}")
        };
        {
            let fake = fake.lock().unwrap();
            let f = &fake.functions[&id];
            assert_eq!(f["template_id"], WEBHOOK_TEMPLATE);
            assert_eq!(f["type"], "destination");
            assert_eq!(f["enabled"], true);
            assert_eq!(
                f["inputs"]["body"]["value"],
                json!({"event": "{event}", "person": "{person}"})
            );
            assert_eq!(f["inputs"]["headers"]["value"][SECRET_HEADER], "s3cret");
            let ids: Vec<&str> = f["filters"]["events"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e["id"].as_str().unwrap())
                .collect();
            assert_eq!(ids, NAMED_EVENTS);
        }

        // Someone disables it and changes the secret; a re-run updates the same function.
        {
            let mut fake = fake.lock().unwrap();
            let f = fake.functions.get_mut(&id).unwrap();
            f["enabled"] = json!(false);
        }
        a.secret = "rotated".to_string();
        assert_eq!(
            connect(&a).await.unwrap(),
            Outcome::Updated { id: id.clone() }
        );
        {
            let fake = fake.lock().unwrap();
            assert_eq!(fake.functions.len(), 1, "a re-run must not duplicate");
            assert_eq!((fake.created, fake.patched), (1, 1));
            assert_eq!(fake.functions[&id]["enabled"], true);
            assert_eq!(
                fake.functions[&id]["inputs"]["headers"]["value"][SECRET_HEADER],
                "rotated"
            );
        }

        a.check = true;
        assert_eq!(
            connect(&a).await.unwrap(),
            Outcome::Verified { id: id.clone() }
        );
        assert_eq!(fake.lock().unwrap().patched, 1, "--check changes nothing");

        // A check with another URL fails and says why.
        a.url = "https://other.example.com/ingest/acme_prod".to_string();
        let error = connect(&a).await.unwrap_err().to_string();
        assert!(
            error.contains("posts to https://livectx.example.com/ingest/acme_prod, not https://other.example.com/ingest/acme_prod"),
            "{error}"
        );
        // And with a wrong secret.
        a.url = args(&host).url;
        a.secret = "stale".to_string();
        let error = connect(&a).await.unwrap_err().to_string();
        assert!(
            error.contains("X-PostHog-Secret header is not the secret"),
            "{error}"
        );
        assert!(
            !error.contains("stale") && !error.contains("rotated"),
            "secrets stay out of messages: {error}"
        );
    }

    #[tokio::test]
    async fn check_reports_a_missing_destination_and_a_narrow_filter() {
        let (host, fake) = stand_in().await;
        let mut a = args(&host);
        a.check = true;
        let error = connect(&a).await.unwrap_err().to_string();
        assert!(
            error.contains("has no destination named \"livectx\""),
            "{error}"
        );

        a.check = false;
        let Outcome::Created { id } = connect(&a).await.unwrap() else {
            panic!("create")
        };
        fake.lock().unwrap().functions.get_mut(&id).unwrap()["filters"] =
            json!({"events": [{"id": "$pageview", "type": "events"}]});
        a.check = true;
        let error = connect(&a).await.unwrap_err().to_string();
        assert!(
            error.contains("its filters leave out $pageleave, $autocapture, $rageclick, $dead_click, $exception"),
            "{error}"
        );
    }

    #[tokio::test]
    async fn a_refused_key_is_a_clear_error() {
        let (host, fake) = stand_in().await;
        let mut a = args(&host);
        a.personal_api_key = "phx_wrong".to_string();
        let error = connect(&a).await.unwrap_err().to_string();
        assert!(
            error.contains("PostHog refused the personal API key (401 Unauthorized"),
            "{error}"
        );
        assert!(error.contains("Invalid personal API key."), "{error}");
        assert!(
            !error.contains("phx_wrong"),
            "the key stays out of messages: {error}"
        );
        assert!(fake.lock().unwrap().functions.is_empty());
    }

    #[test]
    fn nonsense_settings_are_refused_before_any_request() {
        let mut a = args("us.posthog.com");
        assert!(Api::new(&a).is_err());
        a.host = "https://us.posthog.com".to_string();
        a.url = "https://livectx.example.com/".to_string();
        assert!(Api::new(&a).err().unwrap().to_string().contains("/ingest/"));
        a.url = args("").url;
        a.secret = " ".to_string();
        assert!(Api::new(&a).is_err());
        a.secret = "s".to_string();
        a.project_id = "../1".to_string();
        assert!(Api::new(&a).is_err());
    }

    #[test]
    fn all_events_sends_no_filter_and_checks_none() {
        let mut a = args("https://us.posthog.com");
        a.all_events = true;
        assert_eq!(filters(&a), json!({}));
        let function = json!({
            "enabled": true,
            "inputs": {"url": {"value": a.url}, "headers": {"value": {"x-posthog-secret": "s3cret"}}},
            "filters": {"events": [{"id": "$pageview"}]},
        });
        assert!(
            problems(&function, &a).is_empty(),
            "{:?}",
            problems(&function, &a)
        );
    }
}
