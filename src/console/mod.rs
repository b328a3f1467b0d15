//! The operator console at `/console`: live sessions, what each one's chatbot receives, the
//! last lookups with how each identifier was read, and the health of every source.
//!
//! Server-rendered HTML (maud), one stylesheet and one small script embedded in the binary:
//! no CDN, no build step, works offline. It sits beside the APIs: it reads the store, the
//! [`crate::diagnostics`] buffers and calls [`crate::api::retrieval::preview`] for the chatbot
//! panel, so that panel shows exactly what `/retrieval` returns. Nothing below imports it.
//!
//! Off (404) unless `LIVECTX_CONSOLE_KEY` is set. Every response carries a CSP without inline
//! script, `X-Frame-Options: DENY` and `nosniff`; every value on a page comes from end users'
//! browsers and is escaped by the template engine.

pub mod auth;
pub mod pages;
pub mod timeline;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::{Arc, LazyLock};

use axum::Router;
use axum::extract::{ConnectInfo, Form, Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use maud::Markup;
use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::api::ApiState;
use crate::api::retrieval::{self, DEFAULT_TOP_K, MAX_TOP_K, RetrievalRequest};
use crate::clock;
use crate::session::model::{PersonKey, Session, SessionId};
use crate::session::store::StoreError;
use auth::{Access, LOGIN_CSRF_COOKIE, Login, LoginError, SESSION_COOKIE};
use pages::Frame;

/// What `LIVECTX_CONSOLE_*` configure.
#[derive(Clone)]
pub struct ConsoleSettings {
    pub key: String,
    pub show_identities: bool,
    /// `LIVECTX_PUBLIC_URL`: an `https://` one makes the cookie `Secure`.
    pub public_url: Option<String>,
}

impl std::fmt::Debug for ConsoleSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConsoleSettings")
            .field("show_identities", &self.show_identities)
            .finish_non_exhaustive()
    }
}

struct Console {
    api: ApiState,
    access: Access,
    show_identities: bool,
    public_url: Option<String>,
}

type Shared = Arc<Console>;

/// Rows the sessions table shows at most.
const MAX_ROWS: usize = 100;
/// Sessions a search looks through at most.
const SCAN_LIMIT: usize = 5_000;
/// The Content-Security-Policy of every console response.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

fn short_hash(text: &str) -> String {
    hex::encode(&Sha256::digest(text.as_bytes())[..6])
}

/// Asset URLs carry a hash of their content, so they can be cached for a year.
static CSS_HREF: LazyLock<String> =
    LazyLock::new(|| format!("/console/assets/console-{}.css", short_hash(pages::CSS)));
static JS_HREF: LazyLock<String> =
    LazyLock::new(|| format!("/console/assets/console-{}.js", short_hash(pages::JS)));

/// The console's routes, to merge into the application's router.
pub fn router(api: ApiState, settings: ConsoleSettings) -> Router {
    let console = Arc::new(Console {
        api,
        access: Access::new(&settings.key),
        show_identities: settings.show_identities,
        public_url: settings.public_url,
    });
    Router::new()
        .route("/console", get(sessions_page))
        .route("/console/", get(|| async { Redirect::to("/console") }))
        .route(
            "/console/login",
            post(login).get(|| async { Redirect::to("/console") }),
        )
        .route("/console/logout", post(logout))
        .route("/console/sessions/rows", get(session_rows))
        .route("/console/sessions/{id}", get(session_page))
        .route("/console/lookups", get(lookups_page))
        .route("/console/lookups/rows", get(lookup_rows))
        .route("/console/lookups/{seq}", get(lookup_page))
        .route("/console/sources", get(sources_page))
        .route("/console/assets/{file}", get(asset))
        .layer(middleware::from_fn(security_headers))
        .with_state(console)
}

async fn security_headers(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    if !headers.contains_key(header::CACHE_CONTROL) {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}

async fn asset(Path(file): Path<String>) -> Response {
    let (body, kind) = if file == CSS_HREF.trim_start_matches("/console/assets/") {
        (pages::CSS, "text/css; charset=utf-8")
    } else if file == JS_HREF.trim_start_matches("/console/assets/") {
        (pages::JS, "text/javascript; charset=utf-8")
    } else {
        return (StatusCode::NOT_FOUND, "no such asset").into_response();
    };
    (
        [
            (header::CONTENT_TYPE, kind),
            (header::CACHE_CONTROL, "public, max-age=31536000, immutable"),
        ],
        body,
    )
        .into_response()
}

impl Console {
    fn login_of(&self, headers: &HeaderMap) -> Option<Login> {
        self.access.login_of(headers, clock::now())
    }

    fn secure(&self, headers: &HeaderMap) -> bool {
        auth::is_https(headers, self.public_url.as_deref())
    }

    /// A full page for a logged-in operator.
    fn page(&self, login: &Login, title: &str, active: &str, content: Markup) -> Response {
        let frame = Frame {
            title,
            active,
            csrf: &login.csrf,
            css_href: &CSS_HREF,
            js_href: &JS_HREF,
        };
        pages::page(&frame, content).into_response()
    }

    /// The login form (with `status` and an optional error), setting the pre-login CSRF
    /// cookie if the browser has none.
    fn login_form(&self, headers: &HeaderMap, status: StatusCode, error: Option<&str>) -> Response {
        let existing = auth::cookie(headers, LOGIN_CSRF_COOKIE).map(str::to_string);
        let csrf = existing.clone().unwrap_or_else(auth::random_token);
        let mut response = (status, pages::login(&CSS_HREF, &csrf, error)).into_response();
        if existing.is_none()
            && let Ok(value) = HeaderValue::from_str(&auth::set_cookie(
                LOGIN_CSRF_COOKIE,
                &csrf,
                3600,
                self.secure(headers),
            ))
        {
            response.headers_mut().append(header::SET_COOKIE, value);
        }
        response
    }

    fn message(&self, status: StatusCode, title: &str, text: &str) -> Response {
        (status, pages::message(&CSS_HREF, title, text)).into_response()
    }

    fn store_error(&self, error: &StoreError) -> Response {
        self.api.metrics.store_error("console");
        tracing::warn!(%error, "the console could not read the session store");
        self.message(
            StatusCode::SERVICE_UNAVAILABLE,
            "Store unavailable",
            "The session store could not be read right now; try again shortly.",
        )
    }
}

#[derive(Debug, Deserialize)]
struct LoginForm {
    #[serde(default)]
    key: String,
    #[serde(default)]
    csrf: String,
}

async fn login(
    State(console): State<Shared>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Form(form): Form<LoginForm>,
) -> Response {
    let expected = auth::cookie(&headers, LOGIN_CSRF_COOKIE).unwrap_or("");
    if expected.is_empty() || !auth::same_token(expected, &form.csrf) {
        tracing::warn!(client = %peer.ip(), "console login refused: CSRF token missing or wrong");
        return console.login_form(
            &headers,
            StatusCode::FORBIDDEN,
            Some("This form expired or came from another site; try again."),
        );
    }
    match console
        .access
        .log_in(&form.key, Some(peer.ip()), clock::now())
    {
        Ok((token, _)) => {
            tracing::info!(client = %peer.ip(), "console login");
            let secure = console.secure(&headers);
            let mut response = Redirect::to("/console").into_response();
            for cookie in [
                auth::set_cookie(SESSION_COOKIE, &token, auth::LOGIN_TTL_SECS as u64, secure),
                auth::set_cookie(LOGIN_CSRF_COOKIE, "", 0, secure),
            ] {
                if let Ok(value) = HeaderValue::from_str(&cookie) {
                    response.headers_mut().append(header::SET_COOKIE, value);
                }
            }
            response
        }
        Err(LoginError::WrongKey) => {
            tracing::warn!(client = %peer.ip(), "console login refused: wrong key");
            console.login_form(&headers, StatusCode::UNAUTHORIZED, Some("Wrong key."))
        }
        Err(LoginError::TooMany(wait)) => {
            tracing::warn!(client = %peer.ip(), "console login refused: too many wrong keys");
            let mut response = console.login_form(
                &headers,
                StatusCode::TOO_MANY_REQUESTS,
                Some(&format!(
                    "Too many wrong keys from this address; try again in {wait} s."
                )),
            );
            if let Ok(value) = HeaderValue::from_str(&wait.to_string()) {
                response.headers_mut().insert(header::RETRY_AFTER, value);
            }
            response
        }
    }
}

#[derive(Debug, Deserialize)]
struct LogoutForm {
    #[serde(default)]
    csrf: String,
}

async fn logout(
    State(console): State<Shared>,
    headers: HeaderMap,
    Form(form): Form<LogoutForm>,
) -> Response {
    let Some(login) = console.login_of(&headers) else {
        return Redirect::to("/console").into_response();
    };
    if !auth::same_token(&login.csrf, &form.csrf) {
        return console.message(
            StatusCode::FORBIDDEN,
            "Refused",
            "The log-out form carried no valid CSRF token.",
        );
    }
    console.access.log_out(&headers);
    let mut response = Redirect::to("/console").into_response();
    if let Ok(value) = HeaderValue::from_str(&auth::set_cookie(
        SESSION_COOKIE,
        "",
        0,
        console.secure(&headers),
    )) {
        response.headers_mut().append(header::SET_COOKIE, value);
    }
    response
}

#[derive(Debug, Default, Deserialize)]
struct SearchQuery {
    #[serde(default)]
    q: String,
}

/// The live sessions matching `query`, newest activity first. Without shown identities, an
/// email or user id must be typed in full (a partial search would reveal masked values).
async fn find_sessions(
    console: &Console,
    query: &str,
    now: f64,
) -> Result<Vec<Arc<Session>>, StoreError> {
    let store = console.api.store.as_ref();
    let query = query.trim();
    let mut found: Vec<Arc<Session>> = Vec::new();
    let mut seen: HashSet<String> = HashSet::new();
    if !query.is_empty() {
        let mut ids = Vec::new();
        if let Ok(id) = SessionId::parse(query) {
            ids.push(id);
        }
        for key in [PersonKey::email(query), PersonKey::user_id(query)]
            .into_iter()
            .flatten()
        {
            if let Some(id) = store.resolve_person(&key, None, now).await? {
                ids.push(id);
            }
        }
        for id in ids {
            if let Some(session) = store.session(&id, now).await?
                && seen.insert(session.id().to_string())
            {
                found.push(session);
            }
        }
    }
    let needle = query.to_lowercase();
    let mut cursor: Option<String> = None;
    let mut scanned = 0;
    while found.len() < MAX_ROWS && scanned < SCAN_LIMIT {
        let page = store
            .active_sessions(0.0, cursor.as_deref(), 200, now)
            .await?;
        scanned += page.sessions.len();
        for info in &page.sessions {
            if found.len() >= MAX_ROWS {
                break;
            }
            let matches = needle.is_empty()
                || info.session_id.to_lowercase().contains(&needle)
                || (console.show_identities
                    && [&info.email, &info.user_id]
                        .into_iter()
                        .flatten()
                        .any(|v| v.to_lowercase().contains(&needle)));
            if !matches || seen.contains(&info.session_id) {
                continue;
            }
            let Ok(id) = SessionId::parse(&info.session_id) else {
                continue;
            };
            if let Some(session) = store.session(&id, now).await? {
                seen.insert(info.session_id.clone());
                found.push(session);
            }
        }
        match page.next_cursor {
            Some(next) if !page.sessions.is_empty() => cursor = Some(next),
            _ => break,
        }
    }
    found.sort_by(|a, b| b.last_activity().total_cmp(&a.last_activity()));
    Ok(found)
}

async fn sessions_page(
    State(console): State<Shared>,
    headers: HeaderMap,
    Query(search): Query<SearchQuery>,
) -> Response {
    let Some(login) = console.login_of(&headers) else {
        return console.login_form(&headers, StatusCode::OK, None);
    };
    let now = clock::now();
    let sessions = match find_sessions(&console, &search.q, now).await {
        Ok(sessions) => sessions,
        Err(error) => return console.store_error(&error),
    };
    let rows = pages::session_rows(&sessions, console.show_identities, now);
    console.page(
        &login,
        "Sessions",
        "/console",
        pages::sessions(&search.q, rows, console.show_identities),
    )
}

/// A fragment for the live table; 401 tells the script to reload into the login form.
async fn session_rows(
    State(console): State<Shared>,
    headers: HeaderMap,
    Query(search): Query<SearchQuery>,
) -> Response {
    if console.login_of(&headers).is_none() {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    let now = clock::now();
    match find_sessions(&console, &search.q, now).await {
        Ok(sessions) => {
            pages::session_rows(&sessions, console.show_identities, now).into_response()
        }
        Err(error) => console.store_error(&error),
    }
}

#[derive(Debug, Default, Deserialize)]
struct AskQuery {
    question: Option<String>,
    top_k: Option<String>,
    threshold: Option<String>,
}

async fn session_page(
    State(console): State<Shared>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(ask): Query<AskQuery>,
) -> Response {
    let Some(login) = console.login_of(&headers) else {
        return console.login_form(&headers, StatusCode::OK, None);
    };
    let now = clock::now();
    let missing = || {
        console.message(
            StatusCode::NOT_FOUND,
            "No such session",
            "No live session has this id (it may have expired or been evicted).",
        )
    };
    let Ok(session_id) = SessionId::parse(&id) else {
        return missing();
    };
    let session = match console.api.store.session(&session_id, now).await {
        Ok(Some(session)) => session,
        Ok(None) => return missing(),
        Err(error) => return console.store_error(&error),
    };
    let question = ask.question.unwrap_or_default();
    let top_k = ask
        .top_k
        .and_then(|k| k.trim().parse::<usize>().ok())
        .map_or(DEFAULT_TOP_K, |k| k.clamp(1, MAX_TOP_K));
    let threshold = ask
        .threshold
        .and_then(|t| t.trim().parse::<f64>().ok())
        .filter(|t| t.is_finite())
        .map_or(0.0, |t| t.clamp(0.0, 1.0));
    let request = RetrievalRequest {
        knowledge_id: session.id().as_str().into(),
        query: question.as_str().into(),
        top_k,
        score_threshold: threshold,
        metadata_condition: None,
    };
    let answer = retrieval::preview(&console.api, &request, now).await;
    let request_json = serde_json::to_string_pretty(&serde_json::json!({
        "knowledge_id": request.knowledge_id,
        "query": request.query,
        "retrieval_setting": { "top_k": top_k, "score_threshold": threshold },
    }))
    .unwrap_or_default();
    let panel = pages::ChatbotAnswer {
        question: &question,
        top_k,
        threshold,
        request_json,
        resolved_to: answer.session.as_ref().map(|s| s.id().to_string()),
        miss: answer.miss.map(|m| (m.as_str(), m.explain())),
        records: answer.records,
    };
    let items = timeline::timeline(&session);
    let title = format!("Session {}", session.id());
    console.page(
        &login,
        &title,
        "/console",
        pages::session_view(&session, &items, console.show_identities, now, Some(&panel)),
    )
}

async fn lookups_page(State(console): State<Shared>, headers: HeaderMap) -> Response {
    let Some(login) = console.login_of(&headers) else {
        return console.login_form(&headers, StatusCode::OK, None);
    };
    let log = &console.api.diagnostics.lookups;
    let rows = pages::lookup_rows(&log.newest(log.capacity()), console.show_identities);
    console.page(
        &login,
        "Lookups",
        "/console/lookups",
        pages::lookups(rows, log.capacity()),
    )
}

async fn lookup_rows(State(console): State<Shared>, headers: HeaderMap) -> Response {
    if console.login_of(&headers).is_none() {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    let log = &console.api.diagnostics.lookups;
    pages::lookup_rows(&log.newest(log.capacity()), console.show_identities).into_response()
}

/// A matched lookup opens its session; a missed one explains itself and says whether its
/// identifier names a session now.
async fn lookup_page(
    State(console): State<Shared>,
    headers: HeaderMap,
    Path(seq): Path<String>,
) -> Response {
    let Some(login) = console.login_of(&headers) else {
        return console.login_form(&headers, StatusCode::OK, None);
    };
    let Some(entry) = seq
        .parse::<u64>()
        .ok()
        .and_then(|seq| console.api.diagnostics.lookups.get(seq))
    else {
        return console.message(
            StatusCode::NOT_FOUND,
            "No such lookup",
            "This lookup is no longer in the log (it keeps the most recent ones).",
        );
    };
    if let Some(session) = &entry.session {
        return Redirect::to(&pages::session_href(session)).into_response();
    }
    let now = clock::now();
    let store = console.api.store.as_ref();
    let mut now_resolves = None;
    let query_value = entry
        .query_line
        .split_once([':', '='])
        .map_or(entry.query_line.as_str(), |(_, v)| v)
        .trim()
        .trim_matches(['"', '\'', '`']);
    'candidates: for value in [
        entry.knowledge_id.as_str(),
        entry.identifier.as_str(),
        query_value,
    ] {
        let value = value.trim();
        if value.is_empty() {
            continue;
        }
        let mut ids = Vec::new();
        if let Ok(id) = SessionId::parse(value) {
            ids.push(id);
        }
        for key in [PersonKey::email(value), PersonKey::user_id(value)]
            .into_iter()
            .flatten()
        {
            if let Ok(Some(id)) = store.resolve_person(&key, None, now).await {
                ids.push(id);
            }
        }
        for id in ids {
            if let Ok(Some(session)) = store.session(&id, now).await {
                now_resolves = Some((session.id().to_string(), session.created_at()));
                break 'candidates;
            }
        }
    }
    let title = format!("Lookup #{}", entry.seq);
    console.page(
        &login,
        &title,
        "/console/lookups",
        pages::lookup_detail(
            &entry,
            console.show_identities,
            now_resolves.as_ref().map(|(id, at)| (id.as_str(), *at)),
        ),
    )
}

/// `(summarizer, outcome, count)` from the `livectx_summaries_total` metric.
fn summary_counts(exposition: &str) -> Vec<(String, String, u64)> {
    let label = |line: &str, name: &str| {
        let start = line.find(&format!("{name}=\""))? + name.len() + 2;
        let end = line[start..].find('"')? + start;
        Some(line[start..end].to_string())
    };
    exposition
        .lines()
        .filter(|line| line.starts_with("livectx_summaries_total{"))
        .filter_map(|line| {
            let count = line.rsplit(' ').next()?.parse::<f64>().ok()? as u64;
            Some((label(line, "summarizer")?, label(line, "outcome")?, count))
        })
        .collect()
}

async fn sources_page(State(console): State<Shared>, headers: HeaderMap) -> Response {
    let Some(login) = console.login_of(&headers) else {
        return console.login_form(&headers, StatusCode::OK, None);
    };
    let api = &console.api;
    let now = clock::now();
    let (llm_calls, llm_failures) = api.metrics.llm_totals();
    let view = pages::SourcesView {
        streams: api.streams.iter().map(|s| s.view(now)).collect(),
        webhook: api.webhook_enabled,
        routes: api.diagnostics.events.history(now),
        refusals: api.diagnostics.refusals.groups(),
        engine: &api.summarizer_engine,
        queue: api.metrics.summary_queue.get(),
        summaries: summary_counts(&api.metrics.encode()),
        llm_calls,
        llm_failures,
        now,
    };
    console.page(&login, "Sources", "/console/sources", pages::sources(&view))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_counts_come_from_the_metric() {
        let text = "# HELP x\nlivectx_summaries_total{summarizer=\"builtin\",outcome=\"ok\"} 3\nlivectx_summaries_total{summarizer=\"llm\",outcome=\"failed\"} 1\nlivectx_sessions 2\n";
        assert_eq!(
            summary_counts(text),
            [
                ("builtin".to_string(), "ok".to_string(), 3),
                ("llm".to_string(), "failed".to_string(), 1)
            ]
        );
    }

    #[test]
    fn asset_urls_carry_a_content_hash() {
        assert!(CSS_HREF.starts_with("/console/assets/console-"));
        assert!(CSS_HREF.ends_with(".css") && JS_HREF.ends_with(".js"));
        assert_ne!(CSS_HREF.as_str(), JS_HREF.as_str());
    }
}
