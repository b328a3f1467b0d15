//! `/mcp`: a Model Context Protocol server over the Streamable HTTP transport, for chatbots that
//! call tools (Dify Agents, Intercom Fin, Crisp, Tidio, Maven, ...).
//!
//! - Two tools: `get_live_user_activity` (what the person in the conversation is doing now) and
//!   `list_active_sessions` (who is online, for operators; offered only with
//!   `LIVECTX_MCP_OPERATOR_TOOLS`, because it lists other people's sessions).
//! - Stateless: no `Mcp-Session-Id`, every POST stands alone and is answered with
//!   `application/json`, so any replica behind a load balancer can answer any request and
//!   nothing is held between calls. rmcp builds a handler per request by cloning a template
//!   that holds only the shared [`ApiState`].
//! - Keys: `Authorization: Bearer <key>` with a key from `LIVECTX_API_KEY` or
//!   `LIVECTX_MCP_KEY`, checked before rmcp sees the request; otherwise 401 with a JSON body
//!   and a `WWW-Authenticate` challenge (which MCP clients turn into "authentication
//!   required" rather than a generic failure). With no key configured at all, `/mcp` is open,
//!   like `/retrieval`.
//! - Host check: rmcp refuses by default any `Host` header that is not loopback, to stop DNS
//!   rebinding (a web page whose domain is re-pointed at 127.0.0.1 reaching a local server from
//!   the victim's browser). Behind a load balancer the Host is the public name, so that default
//!   refuses every real request. livectx accepts any Host unless `LIVECTX_MCP_ALLOWED_HOSTS`
//!   lists some: rebinding cannot supply the Bearer key a browser never has, so the check
//!   matters only for an open `/mcp` on a machine or network browsers can reach.

use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::middleware;
use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::handler::server::tool::schema_for_output;
use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::{CallToolResult, ContentBlock, Implementation, ServerCapabilities, ServerConfig};
use rmcp::schemars::JsonSchema;
use rmcp::transport::streamable_http_server::session::never::NeverSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use rmcp::{ErrorData, ServerHandler, tool, tool_handler, tool_router};
use serde::{Deserialize, Serialize};

use crate::api::ApiState;
use crate::api::auth::{ApiKey, McpKeys};
use crate::api::identity::{ClaimKind, Via};
use crate::api::rest::{self, LiveAction, Lookup, live_actions, look_up};
use crate::clock::{self, format_duration, format_rfc3339};
use crate::diagnostics::{LookupChannel, LookupEntry, LookupMiss, clip};
use crate::render::records::{join_content, session_records};
use crate::session::model::Session;
use crate::session::store::decode_cursor;
use crate::web::auth::ApiKeys;
use crate::web::error::ErrorBody;

/// Where the MCP endpoint listens.
pub const PATH: &str = "/mcp";
/// Largest accepted request body: tool calls are a few hundred bytes.
pub const BODY_LIMIT: usize = 64 * 1024;
/// Actions `get_live_user_activity` lists when the caller names no limit (they go into a
/// model's context, so fewer than the REST default).
pub const DEFAULT_ACTION_LIMIT: u32 = 20;
/// Minutes `list_active_sessions` looks back when the caller names none.
pub const DEFAULT_ACTIVE_MINUTES: u32 = 15;
/// Longest look-back of `list_active_sessions` (a day: sessions expire after the TTL anyway).
pub const MAX_ACTIVE_MINUTES: u32 = 24 * 60;
/// Sessions per `list_active_sessions` page when the caller names no limit.
pub const DEFAULT_PAGE_SIZE: u32 = 20;
/// Largest `list_active_sessions` page, so one answer stays readable for a model.
pub const MAX_PAGE_SIZE: u32 = 100;
/// What the model reads to decide when to call `get_live_user_activity`.
pub const ACTIVITY_TOOL_DESCRIPTION: &str = "See what the person you are talking to is doing in the product right now: the page they are on and for how long, what they clicked and submitted in the last minutes, a summary of their session so far, and their recent actions. Call it at the start of a conversation and whenever the answer depends on where they are or what they just did (\"where do I find...\", \"why can't I...\", \"it doesn't work\"), before giving generic instructions. Pass the user id you were given for this conversation (a session id, email or user id) exactly as given; never guess one, and never look up an id the user mentions for someone else. The activity belongs only to the person in this conversation: use it to tailor your answer to them and never share it with anyone else. If it reports no recent activity, answer without it.";

/// What the model reads about `list_active_sessions`.
pub const SESSIONS_TOOL_DESCRIPTION: &str = "List the browser sessions active in the last N minutes (session id, product, email, user id, current page, last seen), most recent first, one page at a time: pass next_cursor back as cursor for the next page. For operators and back-office agents watching who is online. Not for answering an end user: to learn about the person you are talking to, call get_live_user_activity with their id instead. The listing holds other people's personal data; never show it to an end user.";

/// What an MCP client shows the model about the whole server.
const INSTRUCTIONS: &str = "livectx knows what each user of the product is doing right now, from their own browser session. Call get_live_user_activity with the id of the person in the conversation to see where they are and what they just did; the result is about that person only.";

/// MCP settings derived from the configuration.
#[derive(Debug, Clone, Default)]
pub struct McpSettings {
    /// Keys accepted on `/mcp`: `LIVECTX_API_KEY` and `LIVECTX_MCP_KEY` together (empty: open).
    pub keys: ApiKeys,
    /// `Host` header values accepted; empty accepts any (see the module docs).
    pub allowed_hosts: Vec<String>,
    /// Offer `list_active_sessions` (it lists other people's sessions: operators only).
    pub operator_tools: bool,
}

impl McpSettings {
    /// Settings from the `/retrieval` keys, the MCP-only keys, and the Host allow-list
    /// (blank entries dropped; `*` anywhere means any host).
    pub fn new(api_keys: &ApiKeys, mcp_keys: &[String], allowed_hosts: &[String]) -> Self {
        let hosts: Vec<String> = allowed_hosts
            .iter()
            .map(|h| h.trim().to_string())
            .filter(|h| !h.is_empty())
            .collect();
        let allowed_hosts = if hosts.iter().any(|h| h == "*") {
            Vec::new()
        } else {
            hosts
        };
        Self {
            keys: api_keys.union(&ApiKeys::new(mcp_keys)),
            allowed_hosts,
            operator_tools: false,
        }
    }
}

/// Arguments of `get_live_user_activity`.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[schemars(crate = "rmcp::schemars")]
pub struct LiveActivityParams {
    /// The id of the person in this conversation, exactly as your instructions or the
    /// conversation variables give it: a session id, an email or a user id.
    pub user_id: String,
    /// How many of their most recent actions to include (default 20, at most 500).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "u32", range(min = 1, max = 500))]
    pub limit: Option<u32>,
}

/// Structured result of `get_live_user_activity`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[schemars(crate = "rmcp::schemars")]
pub struct LiveActivityOutput {
    /// The id the tool was called with.
    pub user_id: String,
    /// The browser session it resolved to; null when no recent activity is known.
    pub session_id: Option<String>,
    /// Recent actions, oldest first, in Autoplay's action format.
    pub actions: Vec<LiveAction>,
}

/// Arguments of `list_active_sessions`.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[schemars(crate = "rmcp::schemars")]
pub struct ActiveSessionsParams {
    /// Look back this many minutes (default 15, at most 1440).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "u32", range(min = 1, max = 1440))]
    pub minutes: Option<u32>,
    /// Sessions per page (default 20, at most 100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "u32", range(min = 1, max = 100))]
    pub limit: Option<u32>,
    /// The next_cursor of the previous page; omit for the first page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "String")]
    pub cursor: Option<String>,
}

/// One active session.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[schemars(crate = "rmcp::schemars")]
pub struct ActiveSession {
    /// The browser session id (pass it to get_live_user_activity).
    pub session_id: String,
    /// The Autoplay product the session belongs to.
    pub product_id: Option<String>,
    /// The user's email, once identified.
    pub email: Option<String>,
    /// The product's user id, once identified.
    pub user_id: Option<String>,
    /// Readable name of the page they are on.
    pub current_page: Option<String>,
    /// The URL of that page (ids collapsed to `:id`).
    pub current_url: Option<String>,
    /// When the server last received activity for it (RFC 3339, UTC).
    pub last_seen: String,
    /// Seconds since then.
    pub idle_seconds: u64,
}

/// Structured result of `list_active_sessions`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[schemars(crate = "rmcp::schemars")]
pub struct ActiveSessionsOutput {
    /// The look-back window used.
    pub window_minutes: u32,
    /// Most recent first.
    pub sessions: Vec<ActiveSession>,
    /// Pass as `cursor` for the next page; null on the last page.
    pub next_cursor: Option<String>,
}

/// The MCP server: cheap to clone (an `Arc` and the tool table), cloned per request.
#[derive(Clone)]
pub struct LiveContextServer {
    state: ApiState,
    tool_router: ToolRouter<Self>,
}

#[tool_router]
impl LiveContextServer {
    /// A server answering from `state`.
    pub fn new(state: ApiState) -> Self {
        Self {
            state,
            tool_router: Self::tool_router(),
        }
    }

    #[tool(
        description = ACTIVITY_TOOL_DESCRIPTION,
        output_schema = schema_for_output::<LiveActivityOutput>(),
        annotations(
            title = "Live user activity",
            read_only_hint = true,
            destructive_hint = false,
            idempotent_hint = true,
            open_world_hint = false
        )
    )]
    async fn get_live_user_activity(
        &self,
        Parameters(params): Parameters<LiveActivityParams>,
    ) -> Result<CallToolResult, ErrorData> {
        let started = Instant::now();
        let mut lookup = LookupEntry::new(LookupChannel::Mcp, "get_live_user_activity");
        let result = self.live_user_activity(params, &mut lookup).await;
        lookup.latency = started.elapsed();
        self.state.diagnostics.lookups.record(lookup);
        Ok(result)
    }

    #[tool(
        description = SESSIONS_TOOL_DESCRIPTION,
        output_schema = schema_for_output::<ActiveSessionsOutput>(),
        annotations(
            title = "Active sessions",
            read_only_hint = true,
            destructive_hint = false,
            idempotent_hint = true,
            open_world_hint = false
        )
    )]
    async fn list_active_sessions(
        &self,
        Parameters(params): Parameters<ActiveSessionsParams>,
    ) -> Result<CallToolResult, ErrorData> {
        Ok(self.active_sessions(params).await)
    }
}

#[tool_handler(router = self.tool_router)]
impl ServerHandler for LiveContextServer {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new("livectx", env!("CARGO_PKG_VERSION")))
            .with_instructions(INSTRUCTIONS)
    }
}

/// A tool result the model reads as a failure, logged and counted.
fn tool_error(
    tool: &'static str,
    outcome: &'static str,
    state: &ApiState,
    message: String,
) -> CallToolResult {
    state.metrics.mcp_tool_call(tool, outcome);
    tracing::warn!(tool, outcome, %message, "MCP tool call refused");
    CallToolResult::error(vec![ContentBlock::text(message)])
}

/// Structured content plus one readable text block (the structured JSON is not repeated as
/// text: it would only double what the model has to read).
fn tool_result<T: Serialize>(text: String, structured: &T) -> CallToolResult {
    let value = serde_json::to_value(structured).unwrap_or_default();
    let mut result = CallToolResult::structured(value);
    result.content = vec![ContentBlock::text(text)];
    result
}

impl LiveContextServer {
    async fn live_user_activity(
        &self,
        params: LiveActivityParams,
        record: &mut LookupEntry,
    ) -> CallToolResult {
        const TOOL: &str = "get_live_user_activity";
        let state = &self.state;
        let user = params.user_id.trim();
        record.identifier = clip(user);
        record.via = Some("user_id");
        if user.is_empty() {
            record.miss = Some(LookupMiss::NoIdentifier);
            return tool_error(
                TOOL,
                "invalid",
                state,
                "user_id is empty: pass the id of the person in this conversation".to_string(),
            );
        }
        let limit = params
            .limit
            .map_or(DEFAULT_ACTION_LIMIT, |l| l.clamp(1, rest::MAX_LIMIT as u32))
            as usize;
        let now = clock::now();
        let lookup = match look_up(state, ClaimKind::Any, user, Via::Mcp, None, now).await {
            Ok(lookup) => lookup,
            Err(error) => {
                record.miss = Some(LookupMiss::StoreUnavailable);
                state.metrics.store_error("mcp");
                return tool_error(
                    TOOL,
                    "store_error",
                    state,
                    format!(
                        "the live activity store is unavailable right now ({error}); try again shortly"
                    ),
                );
            }
        };
        lookup.note(record, user);
        let session = match lookup {
            Lookup::Found(session) => session,
            Lookup::Unknown(_) | Lookup::OtherProduct => {
                state.metrics.mcp_tool_call(TOOL, "unknown");
                tracing::debug!(tool = TOOL, "no live session for this id");
                let output = LiveActivityOutput {
                    user_id: params.user_id,
                    session_id: None,
                    actions: Vec::new(),
                };
                return tool_result(
                    "No recent activity is known for this user: they have no live session on this server right now, or the id is not one the product reports. Answer without it.".to_string(),
                    &output,
                );
            }
            Lookup::Rejected(rejection) => {
                return tool_error(
                    TOOL,
                    "rejected",
                    state,
                    format!("user_id refused: {}", rejection.message()),
                );
            }
        };
        state.metrics.mcp_tool_call(TOOL, "found");
        let actions = live_actions(&session, limit);
        record.records = actions.len();
        let text = activity_text(state, &session, &actions, now);
        tracing::debug!(tool = TOOL, session = %session.id(), actions = actions.len(), "live activity answered");
        let output = LiveActivityOutput {
            user_id: params.user_id,
            session_id: Some(session.id().to_string()),
            actions,
        };
        tool_result(text, &output)
    }

    async fn active_sessions(&self, params: ActiveSessionsParams) -> CallToolResult {
        const TOOL: &str = "list_active_sessions";
        let state = &self.state;
        let minutes = params
            .minutes
            .map_or(DEFAULT_ACTIVE_MINUTES, |m| m.clamp(1, MAX_ACTIVE_MINUTES));
        let limit = params
            .limit
            .map_or(DEFAULT_PAGE_SIZE, |l| l.clamp(1, MAX_PAGE_SIZE));
        let cursor = params
            .cursor
            .as_deref()
            .map(str::trim)
            .filter(|c| !c.is_empty());
        if let Some(cursor) = cursor
            && decode_cursor(cursor).is_none()
        {
            return tool_error(
                TOOL,
                "invalid",
                state,
                format!(
                    "cursor {cursor:?} is not a next_cursor this tool returned; omit it to start from the most recent session"
                ),
            );
        }
        let now = clock::now();
        let since = now - f64::from(minutes) * 60.0;
        let page = match state
            .store
            .active_sessions(since, cursor, limit as usize, now)
            .await
        {
            Ok(page) => page,
            Err(error) => {
                state.metrics.store_error("mcp");
                return tool_error(
                    TOOL,
                    "store_error",
                    state,
                    format!(
                        "the session store is unavailable right now ({error}); try again shortly"
                    ),
                );
            }
        };
        state.metrics.mcp_tool_call(TOOL, "ok");
        let sessions: Vec<ActiveSession> = page
            .sessions
            .into_iter()
            .map(|info| ActiveSession {
                idle_seconds: (now - info.last_seen).max(0.0).round() as u64,
                last_seen: format_rfc3339(info.last_seen),
                session_id: info.session_id,
                product_id: info.product_id,
                email: info.email,
                user_id: info.user_id,
                current_page: info.current_page,
                current_url: info.current_url,
            })
            .collect();
        let output = ActiveSessionsOutput {
            window_minutes: minutes,
            sessions,
            next_cursor: page.next_cursor,
        };
        tool_result(sessions_text(&output, cursor.is_some()), &output)
    }
}

/// The text of `get_live_user_activity`: the Current User Activity, the summary, then the
/// recent actions, rendered like the `/retrieval` records.
fn activity_text(state: &ApiState, session: &Session, actions: &[LiveAction], now: f64) -> String {
    let window = state.activity_window.as_secs_f64();
    let records: Vec<_> = session_records(session, "", now, window)
        .into_iter()
        .filter(|r| matches!(r.kind(), Some("activity" | "summary")))
        .collect();
    let mut text = join_content(&records);
    text.push('\n');
    let held = session.recent_action_iter().count();
    if actions.is_empty() {
        text.push_str("No individual actions are held for this session right now.");
        return text;
    }
    let earlier = if session.summary().is_some() {
        "; earlier activity is in the summary above"
    } else {
        ""
    };
    if actions.len() < held {
        text.push_str(&format!(
            "Recent actions in this session, oldest first (the newest {} of the {held} held{earlier}):",
            actions.len()
        ));
    } else {
        text.push_str(&format!(
            "Recent actions in this session, oldest first ({} held{earlier}):",
            actions.len()
        ));
    }
    for action in session.recent_action_iter().skip(held - actions.len()) {
        text.push_str("\n- ");
        text.push_str(&action.describe());
    }
    text
}

/// The text of `list_active_sessions`: one line per session.
fn sessions_text(output: &ActiveSessionsOutput, continued: bool) -> String {
    if output.sessions.is_empty() {
        return if continued {
            "No more active sessions.".to_string()
        } else {
            format!(
                "No sessions were active in the last {} minutes.",
                output.window_minutes
            )
        };
    }
    let mut text = format!(
        "{} session(s) active in the last {} minutes, most recent first:",
        output.sessions.len(),
        output.window_minutes
    );
    for s in &output.sessions {
        let person = s
            .email
            .as_deref()
            .or(s.user_id.as_deref())
            .unwrap_or("anonymous");
        let product = s
            .product_id
            .as_deref()
            .map(|p| format!(" [{p}]"))
            .unwrap_or_default();
        let page = match (&s.current_page, &s.current_url) {
            (Some(page), Some(url)) => format!(" on \"{page}\" ({url})"),
            (Some(page), None) => format!(" on \"{page}\""),
            _ => String::new(),
        };
        text.push_str(&format!(
            "\n- {}{product}: {person}{page}, last seen {} ago",
            s.session_id,
            format_duration(s.idle_seconds as f64)
        ));
    }
    if let Some(cursor) = &output.next_cursor {
        text.push_str(&format!(
            "\nMore sessions: call again with cursor \"{cursor}\"."
        ));
    }
    text
}

/// The `/mcp` route, with its key check; merged into [`crate::api::router`].
pub fn routes(state: &ApiState) -> Router<ApiState> {
    let mut template = LiveContextServer::new(Arc::clone(state));
    if !state.mcp.operator_tools {
        // Not merely refused: unlisted, so an agent never learns it exists.
        template.tool_router.remove_route("list_active_sessions");
    }
    let config = StreamableHttpServerConfig::default()
        .with_legacy_session_mode(false)
        .with_json_response(true)
        .with_sse_keep_alive(None)
        .with_max_request_body_bytes(BODY_LIMIT);
    let config = if state.mcp.allowed_hosts.is_empty() {
        config.disable_allowed_hosts()
    } else {
        config.with_allowed_hosts(state.mcp.allowed_hosts.clone())
    };
    let service = StreamableHttpService::new(
        move || Ok(template.clone()),
        Arc::new(NeverSessionManager::default()),
        config,
    );
    Router::new()
        .route_service(PATH, service)
        // Requests without an accepted key are refused before rmcp sees them.
        .layer(middleware::from_extractor_with_state::<ApiKey<McpKeys>, _>(
            Arc::clone(state),
        ))
}

/// Documentation of `/mcp` for `/openapi.json` (the route itself is rmcp's service).
#[utoipa::path(
    post,
    path = "/mcp",
    tag = "mcp",
    operation_id = "mcp",
    summary = "MCP server (Streamable HTTP, stateless, JSON responses)",
    description = "Model Context Protocol endpoint for MCP clients such as Dify (Tools → MCP). Tools: get_live_user_activity (user_id, optional limit) returns the Current User Activity, the session summary and the recent actions of the person in the conversation; list_active_sessions (minutes, limit, cursor) lists sessions active recently, for operators. Send JSON-RPC 2.0 messages with Accept: application/json, text/event-stream. Keys: LIVECTX_API_KEY or LIVECTX_MCP_KEY. Not a plain REST tool: register it as an MCP server, not as a custom tool.",
    request_body(content = serde_json::Value, description = "A JSON-RPC 2.0 message (initialize, tools/list, tools/call, ...)", content_type = "application/json"),
    responses(
        (status = 200, description = "The JSON-RPC response", body = serde_json::Value),
        (status = 202, description = "A notification was accepted"),
        (status = 401, description = "Missing or wrong key", body = ErrorBody),
        (status = 403, description = "Host header not in LIVECTX_MCP_ALLOWED_HOSTS"),
    ),
    security(("bearer" = []))
)]
#[allow(dead_code)]
pub(crate) fn endpoint_doc() {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_list_star_or_blank_means_any_host() {
        let keys = ApiKeys::default();
        assert!(McpSettings::new(&keys, &[], &[]).allowed_hosts.is_empty());
        assert!(
            McpSettings::new(&keys, &[], &[" ".into(), "*".into(), "a.example".into()])
                .allowed_hosts
                .is_empty()
        );
        assert_eq!(
            McpSettings::new(&keys, &[], &[" livectx.example.com ".into()]).allowed_hosts,
            ["livectx.example.com"]
        );
    }

    #[test]
    fn both_key_sets_open_mcp() {
        let settings = McpSettings::new(&ApiKeys::new(["dify"]), &["mcp-only".into()], &[]);
        assert_eq!(settings.keys.check_key("dify"), Ok(()));
        assert_eq!(settings.keys.check_key("mcp-only"), Ok(()));
        assert!(settings.keys.check_key("other").is_err());
        assert!(
            McpSettings::new(&ApiKeys::default(), &[], &[])
                .keys
                .is_open()
        );
    }
}
