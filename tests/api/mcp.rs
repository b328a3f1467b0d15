//! `/mcp` driven by the real rmcp client over HTTP: the handshake, the tool list, both tools,
//! and every way a key, a Host header or an identifier can be refused.

use std::collections::HashSet;

use crate::helpers::{TestApp, action, batch, metric, push_webhook, test_config};
use livectx::ServeConfig;
use livectx::api::identity::IdentitySigner;
use rmcp::model::{CallToolRequestParams, CallToolResult, ClientConfig};
use rmcp::service::{ClientInitializeError, RunningService};
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::{RoleClient, ServiceExt};
use serde_json::{Value, json};

const API_KEY: &str = "dify-key";
const MCP_KEY: &str = "mcp-only-key";
const WEBHOOK_SECRET: &str = "test-secret";
const MARIA: &str = "01983f2a-6b1c-7d40-9e2f-5a7b3c9d1e84";
const ACTIONS_BODY: &[u8] = include_bytes!("../fixtures/samples/webhook_actions_body.json");
const SUMMARY_BODY: &[u8] = include_bytes!("../fixtures/samples/webhook_summary_body.json");

type Client = RunningService<RoleClient, ClientConfig>;

fn keyed_config() -> ServeConfig {
    ServeConfig {
        api_keys: vec![API_KEY.into()],
        mcp_keys: vec![MCP_KEY.into()],
        mcp_operator_tools: true,
        webhook_secret: Some(WEBHOOK_SECRET.into()),
        ..test_config()
    }
}

/// Deliver a body through the real webhook receiver, signed like the connector signs it.
async fn connect(app: &TestApp, key: Option<&str>) -> Result<Client, ClientInitializeError> {
    let mut config = StreamableHttpClientTransportConfig::with_uri(app.url("/mcp"));
    if let Some(key) = key {
        // Without "Bearer ": the transport adds it.
        config = config.auth_header(key);
    }
    let transport = StreamableHttpClientTransport::with_client(reqwest::Client::new(), config);
    ClientConfig::default().serve(transport).await
}

async fn call(client: &Client, tool: &str, arguments: Value) -> CallToolResult {
    let arguments = arguments.as_object().cloned().unwrap();
    client
        .call_tool(CallToolRequestParams::new(tool.to_string()).with_arguments(arguments))
        .await
        .expect("tool call answered")
}

fn text_of(result: &CallToolResult) -> String {
    assert_eq!(result.content.len(), 1, "one text block: {result:?}");
    result.content[0].as_text().expect("text").text.clone()
}

#[tokio::test]
async fn a_client_initializes_lists_tools_and_reads_a_live_session() {
    let app = TestApp::spawn(keyed_config()).await;
    push_webhook(&app, WEBHOOK_SECRET, ACTIONS_BODY).await;
    push_webhook(&app, WEBHOOK_SECRET, SUMMARY_BODY).await;
    let client = connect(&app, Some(MCP_KEY)).await.expect("initialized");

    let info = client.peer_info().expect("server info");
    assert_eq!(info.server_info.as_ref().unwrap().name, "livectx");
    assert!(info.capabilities.tools.is_some());
    assert!(
        info.instructions
            .as_deref()
            .is_some_and(|i| i.contains("get_live_user_activity"))
    );

    let tools = client.list_all_tools().await.unwrap();
    let names: HashSet<&str> = tools.iter().map(|t| t.name.as_ref()).collect();
    assert_eq!(
        names,
        HashSet::from(["get_live_user_activity", "list_active_sessions"])
    );
    let activity = tools
        .iter()
        .find(|t| t.name == "get_live_user_activity")
        .unwrap();
    assert_eq!(activity.input_schema["required"], json!(["user_id"]));
    assert_eq!(
        activity.input_schema["properties"]["limit"]["type"],
        "integer"
    );
    assert!(activity.output_schema.is_some());
    let description = activity.description.as_deref().unwrap();
    assert!(
        description.contains("person you are talking to"),
        "{description}"
    );
    assert!(description.contains("belongs only to the person in this conversation"));
    let listing = tools
        .iter()
        .find(|t| t.name == "list_active_sessions")
        .unwrap();
    assert!(
        listing
            .description
            .as_deref()
            .unwrap()
            .contains("never show it to an end user")
    );

    // By email, as a Dify agent would pass it; the two newest actions.
    let result = call(
        &client,
        "get_live_user_activity",
        json!({"user_id": "Maria.Lopez@example.com", "limit": 2}),
    )
    .await;
    assert_eq!(result.is_error, Some(false));
    let text = text_of(&result);
    let activity_at = text.find("Current User Activity").expect(&text);
    let summary_at = text
        .find("Summary of this user's earlier activity")
        .expect(&text);
    let actions_at = text.find("Recent actions in this session").expect(&text);
    assert_eq!(activity_at, 0, "{text}");
    assert!(
        activity_at < summary_at && summary_at < actions_at,
        "{text}"
    );
    assert!(text.contains("trying to add a teammate"), "{text}");
    assert!(text.contains("the newest 2 of the 4 held"), "{text}");
    let listed = &text[actions_at..];
    let cancel = listed.find("Click Cancel button").expect(&text);
    let project = listed.find("Page Load: Project 4812").expect(&text);
    assert!(cancel < project, "oldest first: {text}");
    assert!(!listed.contains("Click Add Project button"), "{text}");

    let structured = result.structured_content.clone().expect("structured");
    assert_eq!(structured["user_id"], "Maria.Lopez@example.com");
    assert_eq!(structured["session_id"], MARIA);
    let actions = structured["actions"].as_array().unwrap();
    let titles: Vec<&str> = actions
        .iter()
        .map(|a| a["title"].as_str().unwrap())
        .collect();
    assert_eq!(titles, ["Click Cancel button", "Page Load: Project 4812"]);
    assert_eq!(actions[1]["type"], "pageview");
    assert_eq!(
        actions[1]["raw_url"],
        "https://app.acme.io/projects/4812/overview"
    );
    assert_eq!(
        actions[1]["canonical_url"],
        "https://app.acme.io/projects/:id/overview"
    );
    assert_eq!(actions[1]["index"], 6);
    assert_eq!(actions[1]["session_id"], MARIA);
    assert_eq!(actions[1]["user_id"], "usr_7Qk2mN9x");
    assert_eq!(actions[1]["email"], "maria.lopez@example.com");

    // Default limit covers all four; the session id and user id resolve to the same session.
    for id in [MARIA, "usr_7Qk2mN9x"] {
        let result = call(&client, "get_live_user_activity", json!({"user_id": id})).await;
        let structured = result.structured_content.unwrap();
        assert_eq!(structured["session_id"], MARIA, "{id}");
        assert_eq!(structured["actions"].as_array().unwrap().len(), 4, "{id}");
    }

    let metrics = app.metrics().await;
    assert_eq!(
        metric(
            &metrics,
            "livectx_mcp_tool_calls_total{tool=\"get_live_user_activity\",outcome=\"found\"}"
        ),
        3.0
    );
    assert_eq!(
        metric(
            &metrics,
            "livectx_identity_lookups_total{via=\"mcp\",result=\"found\"}"
        ),
        3.0
    );
    client.cancel().await.unwrap();
    app.stop().await;
}

#[tokio::test]
async fn an_unknown_user_is_a_normal_answer_without_activity() {
    let app = TestApp::spawn(keyed_config()).await;
    push_webhook(&app, WEBHOOK_SECRET, ACTIONS_BODY).await;
    // The /retrieval key works on /mcp too.
    let client = connect(&app, Some(API_KEY)).await.expect("initialized");
    let result = call(
        &client,
        "get_live_user_activity",
        json!({"user_id": "nobody@example.com"}),
    )
    .await;
    assert_eq!(result.is_error, Some(false));
    assert!(text_of(&result).starts_with("No recent activity is known for this user"));
    let structured = result.structured_content.unwrap();
    assert_eq!(structured["actions"], json!([]));
    assert_eq!(structured["session_id"], Value::Null);

    // An empty id is the model's mistake: a readable tool error.
    let result = call(&client, "get_live_user_activity", json!({"user_id": "  "})).await;
    assert_eq!(result.is_error, Some(true));
    assert!(text_of(&result).contains("user_id is empty"));

    let metrics = app.metrics().await;
    assert_eq!(
        metric(
            &metrics,
            "livectx_mcp_tool_calls_total{tool=\"get_live_user_activity\",outcome=\"unknown\"}"
        ),
        1.0
    );
    client.cancel().await.unwrap();
    app.stop().await;
}

#[tokio::test]
async fn active_sessions_are_listed_newest_first_one_page_at_a_time() {
    let app = TestApp::spawn(keyed_config()).await;
    let now = livectx::clock::now();
    for (i, id) in ["s-old", "s-mid", "s-new"].iter().enumerate() {
        app.seed(batch(
            id,
            Some(&format!("{id}@example.com")),
            None,
            vec![action(
                "pageview",
                &format!("Page Load: Page {i}"),
                &format!("https://app.acme.io/p{i}"),
                now,
            )],
        ))
        .await;
        // Distinct last-seen times, so the order is defined.
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    let client = connect(&app, Some(MCP_KEY)).await.unwrap();

    let first = call(&client, "list_active_sessions", json!({"limit": 2})).await;
    assert_eq!(first.is_error, Some(false));
    let page = first.structured_content.clone().unwrap();
    assert_eq!(page["window_minutes"], 15);
    let ids: Vec<&str> = page["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["session_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["s-new", "s-mid"]);
    let newest = &page["sessions"][0];
    assert_eq!(newest["email"], "s-new@example.com");
    assert_eq!(newest["current_page"], "Page 2");
    assert_eq!(newest["current_url"], "https://app.acme.io/p2");
    assert!(newest["last_seen"].as_str().unwrap().ends_with('Z'));
    let cursor = page["next_cursor"]
        .as_str()
        .expect("more pages")
        .to_string();
    let text = text_of(&first);
    assert!(
        text.contains("s-new [acme_prod]: s-new@example.com on \"Page 2\""),
        "{text}"
    );
    assert!(text.contains(&cursor), "{text}");

    let second = call(
        &client,
        "list_active_sessions",
        json!({"limit": 2, "cursor": cursor}),
    )
    .await;
    let page = second.structured_content.unwrap();
    let ids: Vec<&str> = page["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["session_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["s-old"]);
    assert_eq!(page["next_cursor"], Value::Null);

    // No arguments at all: the defaults.
    let all = call(&client, "list_active_sessions", json!({})).await;
    assert_eq!(
        all.structured_content.unwrap()["sessions"]
            .as_array()
            .unwrap()
            .len(),
        3
    );

    let bad = call(
        &client,
        "list_active_sessions",
        json!({"cursor": "not-a-cursor"}),
    )
    .await;
    assert_eq!(bad.is_error, Some(true));
    assert!(text_of(&bad).contains("not a next_cursor"));
    client.cancel().await.unwrap();
    app.stop().await;
}

#[tokio::test]
async fn calls_without_or_with_a_wrong_key_get_401_with_a_challenge() {
    let app = TestApp::spawn(keyed_config()).await;

    let error = connect(&app, None).await.expect_err("refused");
    assert_eq!(error.auth_challenge(), Some(r#"Bearer realm="livectx""#));
    let error = connect(&app, Some("wrong")).await.expect_err("refused");
    assert_eq!(
        error.auth_challenge(),
        Some(r#"Bearer realm="livectx", error="invalid_token""#)
    );

    // What a plain HTTP client sees: a JSON error saying what to send.
    let initialize = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "curl", "version": "0"}}});
    let (status, body) = app.post_json("/mcp", Some("wrong"), &initialize).await;
    assert_eq!(status, 401);
    assert_eq!(body["error_code"], 4011);
    let message = body["error_msg"].as_str().unwrap();
    assert!(message.contains("LIVECTX_MCP_KEY"), "{message}");

    // The MCP-only key opens /mcp and nothing else.
    let (status, _) = app.retrieve(Some(MCP_KEY), MARIA, "hi").await;
    assert_eq!(status, 403);

    let metrics = app.metrics().await;
    assert!(
        metric(
            &metrics,
            "livectx_http_requests_total{route=\"/mcp\",status=\"401\"}"
        ) >= 3.0,
        "{metrics}"
    );
    app.stop().await;
}

#[tokio::test]
async fn without_any_key_mcp_is_open_like_retrieval() {
    let app = TestApp::spawn(test_config()).await;
    let client = connect(&app, None).await.expect("open");
    // Operator tools stay off unless enabled.
    assert_eq!(client.list_all_tools().await.unwrap().len(), 1);
    client.cancel().await.unwrap();
    app.stop().await;
}

async fn raw_initialize(app: &TestApp, host: &str) -> (u16, String) {
    let response = app
        .http
        .post(app.url("/mcp"))
        .header("host", host)
        .header("accept", "application/json, text/event-stream")
        .bearer_auth(API_KEY)
        .json(&json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "lb", "version": "0"}}}))
        .send()
        .await
        .unwrap();
    (response.status().as_u16(), response.text().await.unwrap())
}

#[tokio::test]
async fn any_host_is_served_by_default_and_a_host_list_is_enforced() {
    // Behind a load balancer the Host is the public name.
    let app = TestApp::spawn(keyed_config()).await;
    let (status, body) = raw_initialize(&app, "livectx.example.com").await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"protocolVersion\""), "{body}");
    app.stop().await;

    let app = TestApp::spawn(ServeConfig {
        mcp_allowed_hosts: vec!["livectx.example.com".into()],
        ..keyed_config()
    })
    .await;
    assert_eq!(raw_initialize(&app, "livectx.example.com").await.0, 200);
    assert_eq!(raw_initialize(&app, "attacker.example").await.0, 403);
    app.stop().await;
}

#[tokio::test]
async fn identifiers_follow_the_identity_policy() {
    let secret = "identity-secret";
    let app = TestApp::spawn(ServeConfig {
        identity_secret: Some(secret.into()),
        no_email_lookup: true,
        ..keyed_config()
    })
    .await;
    push_webhook(&app, WEBHOOK_SECRET, ACTIONS_BODY).await;
    let client = connect(&app, Some(MCP_KEY)).await.unwrap();

    let unsigned = call(&client, "get_live_user_activity", json!({"user_id": MARIA})).await;
    assert_eq!(unsigned.is_error, Some(true));
    assert!(text_of(&unsigned).contains("requires signed identifiers"));

    let expires = livectx::clock::now() as u64 + 600;
    let signer = IdentitySigner::new(secret);
    let signed = call(
        &client,
        "get_live_user_activity",
        json!({"user_id": signer.sign(MARIA, expires)}),
    )
    .await;
    assert_eq!(signed.is_error, Some(false));
    assert_eq!(signed.structured_content.unwrap()["session_id"], MARIA);

    let email = call(
        &client,
        "get_live_user_activity",
        json!({"user_id": signer.sign("maria.lopez@example.com", expires)}),
    )
    .await;
    assert_eq!(email.is_error, Some(true));
    assert!(text_of(&email).contains("email lookups are disabled"));

    let metrics = app.metrics().await;
    assert_eq!(
        metric(
            &metrics,
            "livectx_mcp_tool_calls_total{tool=\"get_live_user_activity\",outcome=\"rejected\"}"
        ),
        2.0
    );
    client.cancel().await.unwrap();
    app.stop().await;
}

#[tokio::test]
async fn the_operator_tool_is_unlisted_unless_enabled() {
    let app = TestApp::spawn(ServeConfig {
        mcp_operator_tools: false,
        ..keyed_config()
    })
    .await;
    let client = connect(&app, Some(MCP_KEY)).await.expect("initialized");
    let tools = client.list_all_tools().await.unwrap();
    let names: Vec<&str> = tools.iter().map(|t| t.name.as_ref()).collect();
    assert_eq!(names, ["get_live_user_activity"]);
    let refused = client
        .call_tool(CallToolRequestParams::new("list_active_sessions"))
        .await;
    assert!(
        refused.is_err(),
        "an unlisted tool cannot be called: {refused:?}"
    );
}
