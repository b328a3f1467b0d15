//! `livectx demo`: the whole loop on one machine, with nothing to configure.
//!
//! It starts the real server ([`Application`]: in-memory store, built-in summarizer, no LLM
//! key) and the simulated users. By default they are posthog-js users: each event is one POST
//! of PostHog's HTTP Webhook body to livectx's `/ingest/<product_id>` with the
//! `X-PostHog-Secret` the demo sets as livectx's ingest secret, so events travel the path a
//! PostHog destination takes in production (the receiver, the PostHog decoder and its naming,
//! the store). With `--source autoplay`, a simulated Autoplay connector streams them over SSE
//! instead. The demo then narrates what the personas do, prints `curl` commands that ask for a
//! persona the way Dify does (all three identity routes), and every few seconds shows the
//! context that persona's chatbot would get, fetched over HTTP from `/retrieval` like Dify
//! would.

use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::app::{Application, StartupError};
use crate::clock;
use crate::config::ServeConfig;
use crate::demo::config::{DemoConfig, DemoSource, PushFormat, SimulateConfig};
use crate::demo::personas::{self, Persona, Role};
use crate::demo::simulator::{Narration, Simulator};
use crate::render::activity::ACTIVITY_HEADER;

/// The token between livectx and the in-process simulator (both ends are this process).
const STREAM_TOKEN: &str = "demo-stream-token";
/// The demo's LIVECTX_INGEST_SECRET, shared by livectx and the simulated PostHog destination.
const INGEST_SECRET: &str = "demo-ingest-secret";
/// The operator console's key in the demo (printed with its URL).
const DEMO_CONSOLE_KEY: &str = "demo-console-key-0000";

/// One way Dify can name the user, as a ready-to-send `/retrieval` body.
#[derive(Debug, Clone, PartialEq)]
pub struct DifyRoute {
    /// What the route is, for people.
    pub label: &'static str,
    /// The JSON body, with its fields in the order Dify sends them.
    pub body: String,
}

/// The question a persona would type into the chatbot.
pub fn question_of(role: Role) -> &'static str {
    match role {
        Role::NotificationsHunter => "Where can I find my notifications?",
        Role::ProjectAbandoner => "How do I create a project?",
        Role::BillingStuck => "Why does my payment keep failing?",
        Role::Newcomer => "How do I get started?",
        Role::AnonymousVisitor | Role::UnlinkedTraffic => "Which plan should I pick?",
    }
}

/// The three `/retrieval` bodies that reach `session_id`, exactly as Dify would send them.
/// The knowledge base's External Knowledge ID is the product id (livectx then scopes email
/// and user-id lookups to that product).
pub fn dify_routes(product_id: &str, session_id: &str, question: &str) -> Vec<DifyRoute> {
    let text = |s: &str| Value::String(s.to_string()).to_string();
    let setting = r#""retrieval_setting": {"top_k": 3, "score_threshold": 0.0}"#;
    vec![
        DifyRoute {
            label: "knowledge_id = the session id (one Dify knowledge base per user: fine for testing)",
            body: format!(
                r#"{{{setting}, "query": {}, "knowledge_id": {}}}"#,
                text(question),
                text(session_id)
            ),
        },
        DifyRoute {
            label: "chatflow Template node: the session id on the query's first line",
            body: format!(
                r#"{{{setting}, "query": {}, "knowledge_id": {}}}"#,
                text(&format!("session_id: {session_id}\n{question}")),
                text(product_id)
            ),
        },
        DifyRoute {
            label: "knowledge base metadata filter: session_id is {{session_id}}",
            body: format!(
                r#"{{{setting}, "query": {}, "knowledge_id": {}, "metadata_condition": {{"logical_operator": "and", "conditions": [{{"name": "session_id", "comparison_operator": "is", "value": {}}}]}}}}"#,
                text(question),
                text(product_id),
                text(session_id)
            ),
        },
    ]
}

/// A copy-paste `curl` command that POSTs the JSON `body` to `base_url`'s `/retrieval`.
pub fn curl_command(base_url: &str, api_key: &str, body: &str) -> String {
    // Shell single quotes keep the JSON (and its `\n` escapes) exactly as written.
    let json = body.replace('\'', r"'\''");
    format!(
        "curl -s {base_url}/retrieval \\\n  -H 'Authorization: Bearer {api_key}' -H 'Content-Type: application/json' \\\n  -d '{json}'"
    )
}

/// The persona called `name` (its name or its role, e.g. `priya` or `billing-stuck`).
fn pick_persona(personas: &[Persona], name: &str) -> anyhow::Result<Persona> {
    let wanted = name.trim().to_ascii_lowercase();
    personas
        .iter()
        .filter(|p| p.session_id.is_some())
        .find(|p| p.name == wanted || p.role.key() == wanted)
        .cloned()
        .ok_or_else(|| {
            let names: Vec<&str> = personas
                .iter()
                .filter(|p| p.session_id.is_some())
                .map(|p| p.name.as_str())
                .collect();
            anyhow::anyhow!(
                "no persona called {name:?}: --watch takes one of {}",
                names.join(", ")
            )
        })
}

/// `livectx demo`: run until Ctrl-C (or SIGTERM).
pub async fn run(config: DemoConfig) -> anyhow::Result<()> {
    let started = Instant::now();
    init_tracing();
    let simulate = SimulateConfig {
        listen: config.simulator_listen,
        token: STREAM_TOKEN.to_string(),
        seed: config.seed,
        speed: config.speed,
        ..SimulateConfig::default()
    };
    let serve = ServeConfig {
        listen: config.listen,
        api_keys: vec![config.api_key.clone()],
        console_key: Some(DEMO_CONSOLE_KEY.to_string()),
        ..ServeConfig::default()
    };
    // PostHog: livectx first (the simulator posts to its address), with the ingest secret the
    // demo makes up. Autoplay: the simulator first (livectx subscribes to its stream).
    let (app, mut simulator, feed) = match config.source {
        DemoSource::Posthog => {
            let app = build_app(ServeConfig {
                ingest_secret: Some(INGEST_SECRET.to_string()),
                ..serve
            })
            .await?;
            let ingest_url = format!(
                "http://{}/ingest/{}",
                app.local_addr(),
                personas::DEFAULT_PRODUCT
            );
            let simulator = bind_simulator(SimulateConfig {
                push_to: Some(ingest_url.clone()),
                secret: Some(INGEST_SECRET.to_string()),
                push_format: PushFormat::Posthog,
                ..simulate
            })
            .await?;
            (app, simulator, Feed::Posthog(ingest_url))
        }
        DemoSource::Autoplay => {
            let simulator = bind_simulator(simulate).await?;
            let stream_url = simulator.stream_url();
            let app = build_app(ServeConfig {
                stream_urls: vec![stream_url.clone()],
                api_token: Some(STREAM_TOKEN.to_string()),
                ..serve
            })
            .await?;
            (app, simulator, Feed::Autoplay(stream_url))
        }
    };
    let mut narration = simulator.narrate();
    let personas = simulator.personas();
    let watched = pick_persona(&personas, &config.watch)?;
    let base_url = format!("http://{}", app.local_addr());
    let app_stop = app.shutdown_token();
    let app_task = tokio::spawn(app.run_until_stopped());
    let sim_stop = CancellationToken::new();
    let sim_task = tokio::spawn(simulator.run(sim_stop.clone()));

    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .context("cannot build the HTTP client")?;
    wait_until_healthy(&http, &base_url).await;
    let ready_in = started.elapsed();

    print_banner(&config, &base_url, &feed, &personas, &watched, ready_in);

    let session_id = watched.session_id.clone().unwrap_or_default();
    let question = question_of(watched.role);
    let mut every = (!config.every.is_zero()).then(|| {
        let mut interval = tokio::time::interval_at(
            tokio::time::Instant::now() + config.every.min(Duration::from_secs(3)),
            config.every,
        );
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        interval
    });
    let mut told_unlinked = false;
    let signal = crate::shutdown::wait_for_signal();
    tokio::pin!(signal);
    loop {
        tokio::select! {
            () = &mut signal => break,
            Some(line) = narration.recv() => {
                if !config.quiet {
                    narrate(&line, &mut told_unlinked);
                }
            }
            _ = tick(&mut every) => {
                show_context(&http, &base_url, &config.api_key, &watched, &session_id, question).await;
            }
        }
    }
    println!("\nStopping: livectx first (it closes its stream), then the simulated users.");
    app_stop.cancel();
    match tokio::time::timeout(Duration::from_secs(15), app_task).await {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(error))) => tracing::error!(%error, "livectx stopped with an error"),
        Ok(Err(error)) => tracing::error!(%error, "livectx's task failed"),
        Err(_) => tracing::error!("livectx did not stop within 15 s"),
    }
    sim_stop.cancel();
    let report = tokio::time::timeout(Duration::from_secs(10), sim_task).await;
    match report {
        Ok(Ok(report)) => println!(
            "Demo stopped cleanly after {:.0} s: the simulator sent {} payloads ({} actions).",
            started.elapsed().as_secs_f64(),
            report.emitted,
            report.actions
        ),
        _ => println!("Demo stopped (the simulator did not report)."),
    }
    Ok(())
}

/// Where livectx's activity comes from in this run, for the banner.
enum Feed {
    /// The ingest URL the simulated PostHog destination posts to.
    Posthog(String),
    /// The simulated connector's stream URL.
    Autoplay(String),
}

async fn bind_simulator(config: SimulateConfig) -> anyhow::Result<Simulator> {
    let listen = config.listen;
    Simulator::bind(config).await.with_context(|| {
        format!(
            "the simulated users cannot listen on {listen} (choose another with --simulator-listen)"
        )
    })
}

async fn build_app(serve: ServeConfig) -> anyhow::Result<Application> {
    match Application::build(serve).await {
        Ok(app) => Ok(app),
        Err(StartupError::Bind { addr, source }) => anyhow::bail!(
            "livectx cannot listen on {addr}: {source} (is another livectx running? choose another address with --listen 127.0.0.1:8001)"
        ),
        Err(error) => Err(error).context("livectx could not start"),
    }
}

/// The demo's own output is on stdout; logs go to stderr, warnings and errors only unless
/// RUST_LOG says otherwise.
fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .try_init();
}

async fn tick(interval: &mut Option<tokio::time::Interval>) {
    match interval {
        Some(interval) => {
            interval.tick().await;
        }
        None => std::future::pending::<()>().await,
    }
}

async fn wait_until_healthy(http: &reqwest::Client, base_url: &str) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if let Ok(response) = http.get(format!("{base_url}/healthz")).send().await
            && response.status().is_success()
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    tracing::warn!("livectx did not answer /healthz within 5 s");
}

fn print_banner(
    config: &DemoConfig,
    base_url: &str,
    feed: &Feed,
    personas: &[Persona],
    watched: &Persona,
    ready_in: Duration,
) {
    let key = &config.api_key;
    println!(
        "livectx demo: live user activity in, per-session context out, as Dify receives it.\n"
    );
    println!(
        "  livectx           {base_url}   (the real server: in-memory store, built-in summarizer, API key \"{key}\")"
    );
    match feed {
        Feed::Posthog(url) => println!(
            "  PostHog events    POST {url}   (simulated posthog-js users, one webhook delivery per event, X-PostHog-Secret)"
        ),
        Feed::Autoplay(url) => println!(
            "  Autoplay stream   {url}   (simulated connector; livectx consumes it over SSE)"
        ),
    }
    println!(
        "  operator console  {base_url}/console   (log in with the key \"{DEMO_CONSOLE_KEY}\")"
    );
    println!("  ready in          {} ms\n", ready_in.as_millis());
    println!(
        "Simulated users ({}x speed, seed {}):",
        config.speed, config.seed
    );
    for p in personas {
        println!(
            "  {:<9} {:<37} {:<24} {}",
            p.name,
            p.session_id.as_deref().unwrap_or("(session_id: null)"),
            p.email.as_deref().unwrap_or("(no email)"),
            p.role.about()
        );
    }
    let session_id = watched.session_id.as_deref().unwrap_or_default();
    println!(
        "\nAsk livectx about {} exactly as Dify would (POST /retrieval with the API key):",
        watched.name
    );
    for (i, route) in dify_routes(&watched.product_id, session_id, question_of(watched.role))
        .iter()
        .enumerate()
    {
        println!("\n# {}. {}", i + 1, route.label);
        println!("{}", curl_command(base_url, key, &route.body));
    }
    println!("\nAdd  | jq -r '.records[0].content'  to read only the activity record.");
    if !config.every.is_zero() {
        println!(
            "Every {}: the context {}'s chatbot would receive. Ctrl-C stops.\n",
            humantime::format_duration(config.every),
            watched.name
        );
    } else {
        println!("Ctrl-C stops.\n");
    }
}

fn narrate(line: &Narration, told_unlinked: &mut bool) {
    let time = clock::format_utc_time(line.at);
    if line.persona == "unlinked" {
        if *told_unlinked {
            return;
        }
        *told_unlinked = true;
        println!(
            "  {time}  {:<9} {}   (session_id is null: livectx refuses it and never pools anonymous traffic; not shown again)",
            line.persona, line.line
        );
        return;
    }
    println!("  {time}  {:<9} {}", line.persona, line.line);
}

async fn show_context(
    http: &reqwest::Client,
    base_url: &str,
    api_key: &str,
    persona: &Persona,
    session_id: &str,
    question: &str,
) {
    let body = json!({
        "knowledge_id": session_id,
        "query": question,
        "retrieval_setting": {"top_k": 5, "score_threshold": 0.0},
    });
    let response = http
        .post(format!("{base_url}/retrieval"))
        .bearer_auth(api_key)
        .json(&body)
        .send()
        .await;
    let rule = "─".repeat(24);
    println!(
        "\n{rule} what {}'s chatbot receives now (\"{question}\") {rule}",
        persona.name
    );
    match response {
        Ok(response) if response.status().is_success() => {
            let value: Value = response.json().await.unwrap_or(Value::Null);
            let records = value["records"].as_array().cloned().unwrap_or_default();
            let activity = records.iter().find(|r| {
                r["content"]
                    .as_str()
                    .is_some_and(|c| c.starts_with(ACTIVITY_HEADER))
            });
            match activity {
                Some(record) => {
                    for line in record["content"].as_str().unwrap_or_default().lines() {
                        println!("  {line}");
                    }
                    let others: Vec<&str> = records
                        .iter()
                        .filter(|r| !std::ptr::eq(*r, record))
                        .filter_map(|r| r["metadata"]["kind"].as_str())
                        .collect();
                    if !others.is_empty() {
                        println!(
                            "  (+ {} more record(s): {})",
                            others.len(),
                            others.join(", ")
                        );
                    }
                }
                None => println!("  (no activity for {} yet)", persona.name),
            }
        }
        Ok(response) => println!(
            "  /retrieval answered HTTP {}: {}",
            response.status().as_u16(),
            response.text().await.unwrap_or_default()
        ),
        Err(error) => println!("  /retrieval failed: {}", error.without_url()),
    }
    println!("{}\n", "─".repeat(72));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::identity::ClaimKind;
    use crate::api::retrieval::{ParsedRequest, QueryIdentity, parse_request, split_query};

    #[test]
    fn the_three_routes_name_the_session_the_way_livectx_reads_them() {
        let routes = dify_routes("acme_prod", "019f-abc", "Where are my alerts?");
        assert_eq!(routes.len(), 3);
        let parsed: Vec<_> = routes
            .iter()
            .map(|r| match parse_request(r.body.as_bytes()).unwrap() {
                ParsedRequest::Retrieve(request) => request,
                ParsedRequest::Probe => panic!("not a probe"),
            })
            .collect();
        assert_eq!(parsed[0].knowledge_id, "019f-abc");
        assert_eq!(parsed[1].knowledge_id, "acme_prod");
        assert_eq!(
            split_query(&parsed[1].query),
            (
                QueryIdentity::Explicit(ClaimKind::SessionId, "019f-abc"),
                "Where are my alerts?"
            )
        );
        let condition = parsed[2].metadata_condition.as_ref().unwrap();
        assert_eq!(condition.conditions[0].names, ["session_id"]);
    }

    #[test]
    fn curl_commands_quote_safely() {
        let command = curl_command("http://h:1", "k", r#"{"query": "it's\nhere"}"#);
        assert!(
            command.contains(r#"-d '{"query": "it'\''s\nhere"}'"#),
            "{command}"
        );
        assert!(command.starts_with("curl -s http://h:1/retrieval \\\n"));
    }

    #[test]
    fn personas_are_picked_by_name_or_role() {
        let cast = crate::demo::personas::cast(7, "p");
        assert_eq!(
            pick_persona(&cast, "Devon").unwrap().role,
            Role::BillingStuck
        );
        assert_eq!(pick_persona(&cast, "newcomer").unwrap().name, "sam");
        let error = pick_persona(&cast, "unlinked").unwrap_err().to_string();
        assert!(
            error.contains("priya, maria, devon, sam, visitor"),
            "{error}"
        );
    }
}
