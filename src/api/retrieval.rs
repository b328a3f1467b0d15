//! `POST /retrieval`: Dify's External Knowledge API, as Dify's code really calls it.
//!
//! - Lenient body: no `Content-Type` needed; an empty body or empty `knowledge_id` is Dify's
//!   registration probe and gets `200 {"records": []}`.
//! - Served at `/retrieval`, `//retrieval` and `/retrieval/retrieval` (Dify concatenates the
//!   registered URL and `/retrieval`), never redirected (Dify would turn the POST into a GET).
//! - The user is found, in order, from (a) a `metadata_condition` on `session_id`, `email` or
//!   `user_id`; (b) the first line of `query`; (c) `knowledge_id` itself. The first channel that
//!   carries an identifier decides; an unresolved Dify variable counts as absent.
//! - Side-effect free: Dify retries the same request up to three times.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde::ser::{Serialize, SerializeMap, Serializer};
use serde_json::Value;

use crate::api::ApiState;
use crate::api::auth::{ApiKey, RetrievalKeys};
use crate::api::filter::{Condition, MetadataCondition};
use crate::api::identity::{
    Claim, ClaimKind, ClaimOutcome, IdentityResolver, Rejection, SignatureError, Via, looks_signed,
};
use crate::clock;
use crate::diagnostics::{LookupChannel, LookupEntry, LookupMiss, clip};
use crate::render::records::{Record, select, session_records};
use crate::session::model::{MAX_ID_LEN, Session};
use crate::session::store::StoreError;
use crate::web::error::{ApiError, read_body};

/// Largest accepted request body.
pub const BODY_LIMIT: usize = 64 * 1024;
/// `top_k` when Dify sends `null`.
pub const DEFAULT_TOP_K: usize = 5;
/// Largest `top_k` honoured.
pub const MAX_TOP_K: usize = 50;

/// A parsed retrieval request, its text borrowed from the body where the body has it as it is
/// (no escapes): a copy of each was an allocation on every `/retrieval`.
#[derive(Debug, Clone, PartialEq)]
pub struct RetrievalRequest<'a> {
    pub knowledge_id: Cow<'a, str>,
    pub query: Cow<'a, str>,
    pub top_k: usize,
    pub score_threshold: f64,
    pub metadata_condition: Option<MetadataCondition>,
}

/// What a body turned out to be.
#[derive(Debug, Clone, PartialEq)]
pub enum ParsedRequest<'a> {
    /// Dify's registration probe (no body, or an empty `knowledge_id`).
    Probe,
    Retrieve(RetrievalRequest<'a>),
}

/// Parse a request body leniently; refuse only what cannot be a Dify request.
pub fn parse_request(bytes: &[u8]) -> Result<ParsedRequest<'_>, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(ParsedRequest::Probe);
    }
    let body = read_fields(bytes)?;
    let knowledge_id = text_field(body.knowledge_id, "knowledge_id")?;
    let query = text_field(body.query, "query")?;
    let (top_k, score_threshold) = match &body.retrieval_setting {
        None | Some(Field::Null) => (DEFAULT_TOP_K, 0.0),
        Some(Field::Object(SettingFields {
            top_k,
            score_threshold,
        })) => (
            number_field(top_k.as_ref(), "retrieval_setting.top_k")?
                .map_or(DEFAULT_TOP_K, |k| k.clamp(1.0, MAX_TOP_K as f64) as usize),
            number_field(
                score_threshold.as_ref(),
                "retrieval_setting.score_threshold",
            )?
            .map_or(0.0, |t| t.clamp(0.0, 1.0)),
        ),
        Some(Field::Text(_) | Field::Number(_) | Field::Other) => {
            return Err(ApiError::bad_request("retrieval_setting must be an object"));
        }
    };
    let metadata_condition = match &body.metadata_condition {
        None | Some(Value::Null) => None,
        Some(value) => Some(MetadataCondition::parse(value)?),
    };
    if knowledge_id.trim().is_empty() {
        return Ok(ParsedRequest::Probe);
    }
    Ok(ParsedRequest::Retrieve(RetrievalRequest {
        knowledge_id,
        query,
        top_k,
        score_threshold,
        metadata_condition,
    }))
}

/// The four top-level fields of a retrieval body, each read as the type it must have. A
/// repeated key keeps its last value, as reading the object whole would; any other key is
/// skipped unread.
///
/// Why not `serde_json::Value` for the body or its fields: building a tree of maps and strings
/// was most of what parsing cost on every `/retrieval` request, and Dify's bodies carry fields
/// livectx never reads (`inputs`, ids). A skipped value is still checked for JSON syntax; only
/// its number range and `\u` escapes are not, which is more lenient than reading it whole and
/// never refuses a body that was accepted. Every field gives exactly what its `Value` gave
/// (a test below holds the two readings to each other).
///
/// Text is borrowed from the body where it has no escapes, and moved, never copied, into the
/// request: each copy was an allocation on every `/retrieval` (docs/benchmarks.md).
#[derive(Debug, Default)]
struct BodyFields<'de> {
    knowledge_id: Option<Scalar<'de>>,
    query: Option<Scalar<'de>>,
    retrieval_setting: Option<Setting<'de>>,
    metadata_condition: Option<Value>,
}

/// A field's value as far as its readers tell values apart. `O` is what an object there is
/// read as ([`NoObject`] where none is accepted).
#[derive(Debug, Clone, PartialEq)]
enum Field<'de, O> {
    Null,
    Text(Cow<'de, str>),
    Number(serde_json::Number),
    Object(O),
    /// A boolean, an array, or an object where none is read: refused by every reader.
    Other,
}

/// A field that must be text or a number.
type Scalar<'de> = Field<'de, NoObject>;
/// `retrieval_setting`: null or an object, of which two keys are read.
type Setting<'de> = Field<'de, SettingFields<'de>>;

/// How an object in a field is read: `None` when no object is accepted there.
trait ReadObject<'de>: Sized {
    fn read<A: serde::de::MapAccess<'de>>(map: A) -> Result<Option<Self>, A::Error>;
}

/// No object is accepted: one is skipped, and the field is [`Field::Other`].
#[derive(Debug, Clone, PartialEq)]
enum NoObject {}

impl<'de> ReadObject<'de> for NoObject {
    fn read<A: serde::de::MapAccess<'de>>(mut map: A) -> Result<Option<Self>, A::Error> {
        while map
            .next_entry::<serde::de::IgnoredAny, serde::de::IgnoredAny>()?
            .is_some()
        {}
        Ok(None)
    }
}

/// The keys of `retrieval_setting` that are read; a repeated key keeps its last value.
#[derive(Debug, Clone, Default, PartialEq)]
struct SettingFields<'de> {
    top_k: Option<Scalar<'de>>,
    score_threshold: Option<Scalar<'de>>,
}

impl<'de> ReadObject<'de> for SettingFields<'de> {
    fn read<A: serde::de::MapAccess<'de>>(mut map: A) -> Result<Option<Self>, A::Error> {
        let mut fields = Self::default();
        while let Some(key) = map.next_key::<Key>()? {
            match key {
                Key::TopK => fields.top_k = Some(map.next_value()?),
                Key::ScoreThreshold => fields.score_threshold = Some(map.next_value()?),
                _ => {
                    map.next_value::<serde::de::IgnoredAny>()?;
                }
            }
        }
        Ok(Some(fields))
    }
}

fn read_fields(bytes: &[u8]) -> Result<BodyFields<'_>, ApiError> {
    // The body is checked for UTF-8 once, whole, and read as text: read from bytes, serde_json
    // checks every string it reads again, and none it skips.
    let text = std::str::from_utf8(bytes).map_err(|e| {
        ApiError::bad_request(format!(
            "request body is not valid JSON: it is not UTF-8 (from byte {})",
            e.valid_up_to()
        ))
    })?;
    serde_json::from_str::<BodyFields>(text).map_err(|e| {
        if e.classify() == serde_json::error::Category::Data {
            ApiError::bad_request(
                "request body must be a JSON object like {\"knowledge_id\": \"...\", \"query\": \"...\", \"retrieval_setting\": {\"top_k\": 5, \"score_threshold\": 0.5}}",
            )
        } else {
            ApiError::bad_request(format!("request body is not valid JSON: {e}"))
        }
    })
}

impl<'de> serde::Deserialize<'de> for BodyFields<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(BodyVisitor)
    }
}

/// A key livectx reads, in the body or in `retrieval_setting`, read without allocating.
enum Key {
    KnowledgeId,
    Query,
    RetrievalSetting,
    MetadataCondition,
    TopK,
    ScoreThreshold,
    Other,
}

impl<'de> serde::Deserialize<'de> for Key {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl serde::de::Visitor<'_> for KeyVisitor {
            type Value = Key;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a field name")
            }
            fn visit_str<E: serde::de::Error>(self, key: &str) -> Result<Key, E> {
                Ok(match key {
                    "knowledge_id" => Key::KnowledgeId,
                    "query" => Key::Query,
                    "retrieval_setting" => Key::RetrievalSetting,
                    "metadata_condition" => Key::MetadataCondition,
                    "top_k" => Key::TopK,
                    "score_threshold" => Key::ScoreThreshold,
                    _ => Key::Other,
                })
            }
        }
        deserializer.deserialize_identifier(KeyVisitor)
    }
}

struct BodyVisitor;

impl<'de> serde::de::Visitor<'de> for BodyVisitor {
    type Value = BodyFields<'de>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(
        self,
        mut map: A,
    ) -> Result<BodyFields<'de>, A::Error> {
        let mut fields = BodyFields::default();
        while let Some(key) = map.next_key::<Key>()? {
            match key {
                Key::KnowledgeId => fields.knowledge_id = Some(map.next_value()?),
                Key::Query => fields.query = Some(map.next_value()?),
                Key::RetrievalSetting => fields.retrieval_setting = Some(map.next_value()?),
                Key::MetadataCondition => fields.metadata_condition = Some(map.next_value()?),
                Key::TopK | Key::ScoreThreshold | Key::Other => {
                    map.next_value::<serde::de::IgnoredAny>()?;
                }
            }
        }
        Ok(fields)
    }
}

impl<'de, O: ReadObject<'de>> serde::Deserialize<'de> for Field<'de, O> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(FieldVisitor(std::marker::PhantomData))
    }
}

struct FieldVisitor<O>(std::marker::PhantomData<O>);

impl<'de, O: ReadObject<'de>> serde::de::Visitor<'de> for FieldVisitor<O> {
    type Value = Field<'de, O>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_unit<E: serde::de::Error>(self) -> Result<Self::Value, E> {
        Ok(Field::Null)
    }
    fn visit_none<E: serde::de::Error>(self) -> Result<Self::Value, E> {
        Ok(Field::Null)
    }
    fn visit_borrowed_str<E: serde::de::Error>(self, text: &'de str) -> Result<Self::Value, E> {
        Ok(Field::Text(Cow::Borrowed(text)))
    }
    fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<Self::Value, E> {
        Ok(Field::Text(Cow::Owned(text.to_owned())))
    }
    fn visit_string<E: serde::de::Error>(self, text: String) -> Result<Self::Value, E> {
        Ok(Field::Text(Cow::Owned(text)))
    }
    fn visit_u64<E: serde::de::Error>(self, n: u64) -> Result<Self::Value, E> {
        Ok(Field::Number(n.into()))
    }
    fn visit_i64<E: serde::de::Error>(self, n: i64) -> Result<Self::Value, E> {
        Ok(Field::Number(n.into()))
    }
    fn visit_f64<E: serde::de::Error>(self, n: f64) -> Result<Self::Value, E> {
        // serde_json never hands over a non-finite number; were one to come, it is no number.
        Ok(serde_json::Number::from_f64(n).map_or(Field::Other, Field::Number))
    }
    fn visit_bool<E: serde::de::Error>(self, _: bool) -> Result<Self::Value, E> {
        Ok(Field::Other)
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<serde::de::IgnoredAny>()?.is_some() {}
        Ok(Field::Other)
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        Ok(O::read(map)?.map_or(Field::Other, Field::Object))
    }
}

fn text_field<'de>(value: Option<Scalar<'de>>, name: &str) -> Result<Cow<'de, str>, ApiError> {
    match value {
        None | Some(Field::Null) => Ok(Cow::Borrowed("")),
        Some(Field::Text(s)) => Ok(s),
        Some(Field::Number(n)) => Ok(Cow::Owned(n.to_string())),
        Some(Field::Object(_) | Field::Other) => {
            Err(ApiError::bad_request(format!("{name} must be a string")))
        }
    }
}

/// A number, or a string holding one (absent when null or blank). Non-finite values are
/// refused: Rust parses `"NaN"` and `"inf"`, and a NaN `top_k` would become 0 records, a NaN
/// threshold would drop every scored record (found by `fuzz/fuzz_targets/retrieval_request.rs`).
fn number_field(value: Option<&Scalar<'_>>, name: &str) -> Result<Option<f64>, ApiError> {
    let not_a_number = || ApiError::bad_request(format!("{name} must be a finite number"));
    match value {
        None | Some(Field::Null) => Ok(None),
        Some(Field::Number(n)) => Ok(n.as_f64().filter(|v| v.is_finite())),
        Some(Field::Text(s)) if s.trim().is_empty() => Ok(None),
        Some(Field::Text(s)) => match s.trim().parse::<f64>() {
            Ok(v) if v.is_finite() => Ok(Some(v)),
            _ => Err(not_a_number()),
        },
        Some(Field::Object(_) | Field::Other) => Err(not_a_number()),
    }
}

/// The first line of a query, read as an identifier (borrowed from the query).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QueryIdentity<'q> {
    /// `session_id: X`, `email: X`, `user_id: X`: decisive.
    Explicit(ClaimKind, &'q str),
    /// A single token that may be an identifier, if the store knows it.
    Candidate(&'q str),
    None,
}

/// Split a query into its identity line (if any) and the question.
pub fn split_query(query: &str) -> (QueryIdentity<'_>, &str) {
    let query = query.trim_start_matches(['\u{feff}', ' ', '\t', '\r', '\n']);
    let (first, rest) = match query.find('\n') {
        Some(i) => (&query[..i], &query[i + 1..]),
        None => (query, ""),
    };
    let first = first.trim();
    if let Some((key, value)) = split_at_assignment(first) {
        let kind = match key
            .trim()
            .to_ascii_lowercase()
            .replace([' ', '-'], "_")
            .as_str()
        {
            "session_id" | "session" | "sessionid" => Some(ClaimKind::SessionId),
            "email" | "user_email" => Some(ClaimKind::Email),
            "user_id" | "userid" | "user" => Some(ClaimKind::UserId),
            _ => None,
        };
        let value = value.trim().trim_matches(['"', '\'', '`']).trim();
        // "Email: why did I not get the invoice?" is a question, not an identity: an identifier
        // is one token.
        let one_token = !has_whitespace(value) && value.len() <= MAX_ID_LEN * 2;
        if let Some(kind) = kind.filter(|_| one_token) {
            return (QueryIdentity::Explicit(kind, value), rest);
        }
    }
    if !first.is_empty() && first.len() <= MAX_ID_LEN * 2 && !has_whitespace(first) {
        let token = first.trim_matches(['"', '\'', '`']);
        return (QueryIdentity::Candidate(token), rest);
    }
    (QueryIdentity::None, query)
}

/// `text.split_once([':', '='])`: both are single bytes, so a vectorised byte search finds
/// the same place without decoding characters (this runs on every `/retrieval` query).
fn split_at_assignment(text: &str) -> Option<(&str, &str)> {
    let at = memchr::memchr2(b':', b'=', text.as_bytes())?;
    Some((&text[..at], &text[at + 1..]))
}

/// `text.contains(char::is_whitespace)`, without decoding an ASCII text (the common case)
/// character by character.
fn has_whitespace(text: &str) -> bool {
    if text.is_ascii() {
        // `char::is_whitespace` in ASCII, which unlike `u8::is_ascii_whitespace` counts the
        // vertical tab: six bytes, found by two vectorised searches.
        let bytes = text.as_bytes();
        memchr::memchr3(b' ', b'\t', b'\n', bytes).is_some()
            || memchr::memchr3(b'\r', 0x0b, 0x0c, bytes).is_some()
    } else {
        text.contains(char::is_whitespace)
    }
}

/// Which session a request is about, and the question that remains.
pub struct Resolved<'q> {
    pub session: Option<Arc<Session>>,
    pub via: Option<Via>,
    pub question: &'q str,
    /// Conditions on fields other than the identity, to filter records with.
    pub filter: Option<MetadataCondition>,
    /// Did the identifier that decided carry a signature?
    pub signed: bool,
    /// Why no session was matched (`None` when one was).
    pub miss: Option<LookupMiss>,
    /// The identifier that matched nobody, as read (`None` when a session matched).
    pub unmatched: Option<String>,
}

const IDENTITY_FIELDS: [(&str, ClaimKind); 3] = [
    ("session_id", ClaimKind::SessionId),
    ("user_id", ClaimKind::UserId),
    ("email", ClaimKind::Email),
];

fn identity_kind(name: &str) -> Option<ClaimKind> {
    IDENTITY_FIELDS
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, k)| *k)
}

/// A channel's verdict: it carried an identifier, which names this session (or none).
struct Decision {
    session: Option<Arc<Session>>,
    via: Via,
    signed: bool,
    miss: Option<LookupMiss>,
    unmatched: Option<String>,
}

impl Decision {
    fn of(outcome: ClaimOutcome, claim: &Claim<'_>) -> Self {
        let (session, miss) = match outcome {
            ClaimOutcome::Found(session) => (Some(session), None),
            ClaimOutcome::Unknown(miss) => (None, Some(miss)),
            ClaimOutcome::Rejected(rejection) => (None, Some(rejection.into())),
        };
        Self {
            unmatched: miss.map(|_| claim.value.to_string()),
            session,
            via: claim.via,
            signed: looks_signed(claim.value),
            miss,
        }
    }
}

/// Resolve the user of a retrieval request (see the module docs for the order).
pub async fn resolve_request<'q>(
    state: &ApiState,
    request: &'q RetrievalRequest<'_>,
    now: f64,
) -> Result<Resolved<'q>, StoreError> {
    let resolver = IdentityResolver {
        store: state.store.as_ref(),
        policy: &state.identity,
        metrics: &state.metrics,
        puller: state.puller.as_deref(),
    };
    let knowledge_id = request.knowledge_id.trim();
    let product = if !knowledge_id.is_empty() && state.store.has_product(knowledge_id).await? {
        Some(knowledge_id)
    } else {
        None
    };
    let (query_identity, rest) = split_query(&request.query);

    // Conditions naming the user choose the session; the others filter its records.
    let mut filter = request.metadata_condition.clone();
    let mut metadata_claims = Vec::new();
    if let Some(condition) = filter.as_mut() {
        condition.conditions.retain(|c| {
            let identity =
                c.is_equality() && c.names.len() == 1 && identity_kind(&c.names[0]).is_some();
            if identity {
                metadata_claims.push(c.clone());
            }
            !identity
        });
    }
    metadata_claims.sort_by_key(|c| IDENTITY_FIELDS.iter().position(|(n, _)| *n == c.names[0]));

    let question = match query_identity {
        QueryIdentity::Explicit(..) => rest,
        _ => &request.query,
    };
    let decision = match decide_by_metadata(&resolver, &metadata_claims, product, now).await? {
        Some(decision) => Some(decision),
        None => match decide_by_query(&resolver, &query_identity, product, now).await? {
            Some(decision) => {
                // The identity line is not part of the question.
                return Ok(Resolved {
                    session: decision.session,
                    via: Some(decision.via),
                    question: rest,
                    filter,
                    signed: decision.signed,
                    miss: decision.miss,
                    unmatched: decision.unmatched,
                });
            }
            None => decide_by_knowledge_id(&resolver, knowledge_id, product, now).await?,
        },
    };
    Ok(match decision {
        Some(decision) => Resolved {
            via: Some(decision.via),
            session: decision.session,
            question,
            filter,
            signed: decision.signed,
            miss: decision.miss,
            unmatched: decision.unmatched,
        },
        None => Resolved {
            via: None,
            session: None,
            question,
            filter,
            signed: false,
            miss: Some(LookupMiss::NoIdentifier),
            unmatched: None,
        },
    })
}

/// (a) Conditions on `session_id`, `user_id` or `email`: the first value that resolves wins;
/// any other well-formed identifier there decides "nobody". Unresolved variables are absent.
async fn decide_by_metadata(
    resolver: &IdentityResolver<'_>,
    conditions: &[Condition],
    product: Option<&str>,
    now: f64,
) -> Result<Option<Decision>, StoreError> {
    let mut refused: Option<Decision> = None;
    for condition in conditions {
        let Some(kind) = identity_kind(&condition.names[0]) else {
            continue;
        };
        for value in condition.values() {
            let claim = Claim {
                kind,
                value: &value,
                via: Via::Metadata,
            };
            match resolver.resolve(&claim, product, now).await? {
                ClaimOutcome::Rejected(Rejection::UnresolvedVariable) => {}
                outcome @ ClaimOutcome::Found(_) => return Ok(Some(Decision::of(outcome, &claim))),
                outcome @ (ClaimOutcome::Unknown(_) | ClaimOutcome::Rejected(_)) => {
                    refused.get_or_insert(Decision::of(outcome, &claim));
                }
            }
        }
    }
    Ok(refused)
}

/// (b) The first line of the query: an explicit `session_id: X` always decides; a bare token
/// decides only when it resolves, or when it carries a signature that fails.
async fn decide_by_query(
    resolver: &IdentityResolver<'_>,
    identity: &QueryIdentity<'_>,
    product: Option<&str>,
    now: f64,
) -> Result<Option<Decision>, StoreError> {
    let (kind, value, explicit) = match identity {
        QueryIdentity::Explicit(kind, value) => (*kind, *value, true),
        // With signed identities on, a bare first word without a signature is the start of a
        // question ("help") — unless it names someone: then it is an identity sent unsigned,
        // refused, counted and decisive.
        QueryIdentity::Candidate(token)
            if resolver.policy.signer.is_some() && !looks_signed(token) =>
        {
            if !resolver.names_someone(token, product, now).await? {
                return Ok(None);
            }
            resolver.count_rejection(Via::Query, SignatureError::Unsigned.into());
            return Ok(Some(Decision {
                session: None,
                via: Via::Query,
                signed: false,
                miss: Some(LookupMiss::Unsigned),
                unmatched: Some(token.to_string()),
            }));
        }
        QueryIdentity::Candidate(token) => (ClaimKind::Any, *token, false),
        QueryIdentity::None => return Ok(None),
    };
    let claim = Claim {
        kind,
        value,
        via: Via::Query,
    };
    let outcome = resolver.resolve(&claim, product, now).await?;
    let decisive = match &outcome {
        ClaimOutcome::Found(_) => true,
        ClaimOutcome::Rejected(Rejection::UnresolvedVariable) => false,
        ClaimOutcome::Rejected(Rejection::Signature(error)) if !explicit => {
            matches!(
                error,
                SignatureError::BadSignature | SignatureError::Expired
            )
        }
        ClaimOutcome::Unknown(_) | ClaimOutcome::Rejected(_) => explicit,
    };
    Ok(decisive.then(|| Decision::of(outcome, &claim)))
}

/// (c) The knowledge id, when it is not a product name: the session it names, or (for the
/// console's lookup log) why it names none.
async fn decide_by_knowledge_id(
    resolver: &IdentityResolver<'_>,
    knowledge_id: &str,
    product: Option<&str>,
    now: f64,
) -> Result<Option<Decision>, StoreError> {
    if product.is_some() || knowledge_id.is_empty() {
        return Ok(None);
    }
    let claim = Claim {
        kind: ClaimKind::Any,
        value: knowledge_id,
        via: Via::KnowledgeId,
    };
    let outcome = resolver.resolve(&claim, None, now).await?;
    Ok(Some(Decision::of(outcome, &claim)))
}

/// The records for one session: activity first, filtered, thresholded, cut to `top_k`.
pub fn records_for(
    state: &ApiState,
    session: &Session,
    question: &str,
    filter: Option<&MetadataCondition>,
    score_threshold: f64,
    top_k: usize,
    now: f64,
) -> Vec<Record> {
    chosen_records(
        session,
        question,
        filter,
        score_threshold,
        top_k,
        now,
        state.activity_window.as_secs_f64(),
    )
}

/// Every record `/retrieval` would send for this session, in order: activity first, then the
/// rest filtered, thresholded, sorted and cut to `top_k`.
pub fn chosen_records(
    session: &Session,
    question: &str,
    filter: Option<&MetadataCondition>,
    score_threshold: f64,
    top_k: usize,
    now: f64,
    window_secs: f64,
) -> Vec<Record> {
    let mut records = session_records(session, question, now, window_secs);
    if let Some(filter) = filter {
        records.retain(|r| filter.matches(&r.metadata));
    }
    select(records, score_threshold, top_k)
}

/// The answer body `{"records": [...]}`, written straight from the records.
///
/// Byte for byte what serialising `json!({"records": records})` gives — each record's keys in
/// sorted order (`content`, `metadata`, `score`, `title`), as a `serde_json::Value` object has
/// them — without first copying every record into a `Value` tree.
struct RecordsBody<'a>(&'a [Record]);

impl Serialize for RecordsBody<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        struct Sorted<'a>(&'a Record);
        impl Serialize for Sorted<'_> {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                let record = self.0;
                let mut map = serializer.serialize_map(Some(4))?;
                map.serialize_entry("content", &record.content)?;
                map.serialize_entry("metadata", &record.metadata)?;
                map.serialize_entry("score", &record.score)?;
                map.serialize_entry("title", &record.title)?;
                map.end()
            }
        }
        let mut map = serializer.serialize_map(Some(1))?;
        map.serialize_entry("records", &self.0.iter().map(Sorted).collect::<Vec<_>>())?;
        map.end()
    }
}

/// The answer body for one session at server time `now`: its records (activity first,
/// filtered, thresholded, cut to `top_k`) as `{"records": [...]}`.
#[allow(clippy::too_many_arguments)]
pub fn answer_body(
    session: &Arc<Session>,
    question: &str,
    filter: Option<&MetadataCondition>,
    score_threshold: f64,
    top_k: usize,
    now: f64,
    window_secs: f64,
) -> Answer {
    // Without a metadata filter (the usual request), the answer is finished from what was
    // prepared for this snapshot: no record is built, only scored and written.
    if filter.is_none_or(|f| f.conditions.is_empty()) {
        let (body, records) = crate::render::answer::answer(
            session,
            question,
            score_threshold,
            top_k,
            now,
            window_secs,
        );
        return Answer { body, records };
    }
    let records = chosen_records(
        session,
        question,
        filter,
        score_threshold,
        top_k,
        now,
        window_secs,
    );
    Answer {
        body: records_body(&records),
        records: records.len(),
    }
}

/// A rendered `/retrieval` answer.
#[derive(Debug, Clone)]
pub struct Answer {
    /// `{"records": [...]}`, ready to send.
    pub body: Bytes,
    /// How many records it holds.
    pub records: usize,
}

/// `{"records": [...]}` of already chosen records.
pub fn records_body(records: &[Record]) -> Bytes {
    let mut out = Vec::with_capacity(128);
    // Writing strings, numbers and maps of them into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut out, &RecordsBody(records));
    Bytes::from(out)
}

/// A JSON answer of ready bytes: `Content-Type` in a header map sized for the headers every
/// answer ends up with (this one, the guard's `Server`, and `Content-Length`), so none of them
/// grows it. `Content-Length` itself comes from the body's exact size.
fn json_response(body: Bytes) -> Response {
    let mut headers = HeaderMap::with_capacity(3);
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    let mut response = Response::new(Body::from(body));
    *response.headers_mut() = headers;
    response
}

/// What `/retrieval` would send for one parsed request now, as records, and how the request
/// was resolved: the operator console's "what the chatbot receives" panel. The same
/// resolution ([`resolve_request`]) and selection ([`chosen_records`]) as the handler.
pub struct Preview {
    pub records: Vec<Record>,
    pub session: Option<Arc<Session>>,
    pub miss: Option<LookupMiss>,
}

/// See [`Preview`].
pub async fn preview(state: &ApiState, request: &RetrievalRequest<'_>, now: f64) -> Preview {
    let resolved = match resolve_request(state, request, now).await {
        Ok(resolved) => resolved,
        Err(error) => {
            state.metrics.store_error("console");
            tracing::warn!(%error, "storage unavailable during a console preview");
            return Preview {
                records: Vec::new(),
                session: None,
                miss: Some(LookupMiss::StoreUnavailable),
            };
        }
    };
    let records = resolved.session.as_ref().map_or_else(Vec::new, |session| {
        chosen_records(
            session,
            resolved.question,
            resolved.filter.as_ref(),
            request.score_threshold,
            request.top_k,
            now,
            state.activity_window.as_secs_f64(),
        )
    });
    Preview {
        records,
        session: resolved.session,
        miss: resolved.miss,
    }
}

/// `metadata_condition` as one line for the lookup log: `session_id is "ps_1" and kind in [..]`.
pub fn describe_condition(condition: &MetadataCondition) -> String {
    let joiner = if condition.any { " or " } else { " and " };
    let parts: Vec<String> = condition
        .conditions
        .iter()
        .map(|c| format!("{} {} {}", c.names.join(","), c.operator, c.value))
        .collect();
    clip(&parts.join(joiner))
}

/// `POST /retrieval`, as the router serves it.
pub async fn retrieve(
    _key: ApiKey<RetrievalKeys>,
    State(state): State<ApiState>,
    body: Body,
) -> Response {
    answer_request(&state, body).await
}

/// `POST /retrieval`, as `api::ApiService` serves it without the router: the same key check
/// (the one [`ApiKey`] makes) and the same answer as [`retrieve`].
///
/// Why not call [`retrieve`] as an axum handler: that boxes its future and takes the request
/// apart into extractors and back, about two thousand instructions on every answer
/// (docs/benchmarks.md).
pub async fn retrieve_direct(state: &ApiState, request: Request) -> Response {
    if let Err(refused) =
        ApiKey::<RetrievalKeys>::check(state, request.headers(), request.uri().path())
    {
        return refused.into_response();
    }
    answer_request(state, request.into_body()).await
}

/// The answer to a `/retrieval` body whose key was accepted.
async fn answer_request(state: &ApiState, body: Body) -> Response {
    // The console's lookup entry, only while the console keeps a log: its text copies (and
    // its clock reading) are not made for nobody on the hottest route.
    let started = state.diagnostics.lookups.is_recording().then(Instant::now);
    let mut lookup = started.map(|_| LookupEntry::new(LookupChannel::Retrieval, "/retrieval"));
    let response = match retrieve_inner(state, body, &mut lookup).await {
        Ok(answer) => json_response(answer),
        Err(error) => {
            tracing::warn!(status = error.status.as_u16(), code = error.code, message = %error.message, "retrieval refused");
            if let Some(lookup) = lookup.as_mut() {
                lookup.miss = Some(if error.status == StatusCode::FORBIDDEN {
                    LookupMiss::BadKey
                } else {
                    LookupMiss::BadRequest
                });
            }
            error.into_response()
        }
    };
    if let (Some(mut lookup), Some(started)) = (lookup, started) {
        lookup.latency = started.elapsed();
        state.diagnostics.lookups.record(lookup);
    }
    response
}

async fn retrieve_inner(
    state: &ApiState,
    body: Body,
    lookup: &mut Option<LookupEntry>,
) -> Result<Bytes, ApiError> {
    let bytes = read_body(body, BODY_LIMIT).await?;
    let request = match parse_request(&bytes)? {
        ParsedRequest::Probe => {
            tracing::info!("answered Dify's registration probe");
            if let Some(lookup) = lookup.as_mut() {
                lookup.miss = Some(LookupMiss::Probe);
            }
            return Ok(records_body(&[]));
        }
        ParsedRequest::Retrieve(request) => request,
    };
    if let Some(lookup) = lookup.as_mut() {
        lookup.knowledge_id = clip(&request.knowledge_id);
        lookup.query_line = clip(request.query.lines().next().unwrap_or(""));
        if let Some(condition) = &request.metadata_condition {
            lookup.metadata_condition = describe_condition(condition);
        }
    }
    let now = clock::now();
    let resolved = match resolve_request(state, &request, now).await {
        Ok(resolved) => resolved,
        Err(error) => {
            // Never a 5xx storm: Dify would retry three times. Answer with nothing, loudly.
            state.metrics.store_error("retrieval");
            tracing::warn!(%error, "storage unavailable during retrieval; answering with no records");
            if let Some(lookup) = lookup.as_mut() {
                lookup.miss = Some(LookupMiss::StoreUnavailable);
            }
            return Ok(records_body(&[]));
        }
    };
    if let Some(lookup) = lookup.as_mut() {
        lookup.via = resolved.via.map(Via::as_str);
        lookup.signed = resolved.signed;
        lookup.miss = resolved.miss;
        if let Some(unmatched) = &resolved.unmatched
            && resolved.via != Some(Via::KnowledgeId)
        {
            lookup.identifier = clip(unmatched);
        }
    }
    let Some(session) = resolved.session else {
        tracing::debug!(
            via = resolved.via.map(Via::as_str),
            "no session for this request"
        );
        return Ok(records_body(&[]));
    };
    let answer = answer_body(
        &session,
        resolved.question,
        resolved.filter.as_ref(),
        request.score_threshold,
        request.top_k,
        now,
        state.activity_window.as_secs_f64(),
    );
    tracing::debug!(session = %session.id(), via = resolved.via.map(Via::as_str), records = answer.records, "retrieval answered");
    if let Some(lookup) = lookup.as_mut() {
        lookup.session = Some(session.id().to_string());
        lookup.records = answer.records;
    }
    Ok(answer.body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// The texts the byte scans of [`split_query`] are held to their `char` forms on: every
    /// whitespace in and out of ASCII (vertical tab, NEL, no-break space, ideographic space),
    /// both separators, quotes, a BOM and non-ASCII letters.
    const SCANNED: &str = "[a-z@.\"'`:= \t\n\r\u{0b}\u{0c}\u{85}\u{a0}\u{3000}\u{feff}é_-]{0,40}";

    /// `split_query` differs from its `char` form only in these two scans.
    fn assert_scans_read_as_char_forms(text: &str) {
        assert_eq!(
            split_at_assignment(text),
            text.split_once([':', '=']),
            "{text:?}"
        );
        assert_eq!(
            has_whitespace(text),
            text.contains(char::is_whitespace),
            "{text:?}"
        );
    }

    proptest::proptest! {
        #[test]
        fn split_query_scans_read_as_their_char_forms(text in SCANNED) {
            assert_scans_read_as_char_forms(&text);
        }

        #[test]
        fn split_query_scans_read_as_their_char_forms_in_ascii(text in "[ -~\t\n\r\u{0b}\u{0c}]{0,40}") {
            assert_scans_read_as_char_forms(&text);
        }
    }

    #[test]
    fn split_query_scans_read_as_their_char_forms_on_edges() {
        for text in [
            "session_id: s-1\nwhy?",
            "s-1\u{0b}x\nq",
            "s-1\u{0b}x",
            "s-1\u{85}x\nq",
            "s-1\u{85}x",
            "Email = a@b.co\nq",
            "email: why did I not get it?\nq",
            "\u{feff} \"s-1\"\nq",
            "user-id=`u1`",
            "é:è=1",
            "",
        ] {
            assert_scans_read_as_char_forms(text);
        }
    }

    #[test]
    fn the_answer_body_is_what_a_json_value_gives() {
        use crate::session::model::tests::{action, batch};
        use crate::session::model::{SessionId, SessionLimits};
        let mut session = Session::new(SessionId::parse("s1").unwrap(), 0.0);
        for (i, title) in [
            "Page Load: Billing",
            "Click Export CSV \"now\" ✓ 🚀",
            "Submit",
        ]
        .iter()
        .enumerate()
        {
            session.append(
                batch(
                    "s1",
                    vec![action("click", title, "/billing?x=1", 100.0 + i as f64)],
                ),
                100.0 + i as f64,
                SessionLimits { max_chunks: 50 },
            );
        }
        let records = session_records(&session, "export csv", 130.0, 120.0);
        assert!(records.len() >= 3);
        let via_value = serde_json::to_string(&json!({ "records": records })).unwrap();
        let direct = serde_json::to_string(&RecordsBody(&records)).unwrap();
        assert_eq!(direct, via_value);
        let empty: Vec<Record> = Vec::new();
        assert_eq!(
            serde_json::to_string(&RecordsBody(&empty)).unwrap(),
            r#"{"records":[]}"#
        );
    }

    /// The body is read field by field, each field as its type; what that gives is what
    /// reading the body whole as a JSON value and each field from it gave, for every
    /// combination of field types (the readers of the whole value are kept here as the
    /// reference).
    #[test]
    fn field_reading_agrees_with_reading_the_whole_body() {
        fn text(value: Option<&Value>, name: &str) -> Result<String, ApiError> {
            match value {
                None | Some(Value::Null) => Ok(String::new()),
                Some(Value::String(s)) => Ok(s.clone()),
                Some(Value::Number(n)) => Ok(n.to_string()),
                Some(_) => Err(ApiError::bad_request(format!("{name} must be a string"))),
            }
        }
        fn number(value: Option<&Value>, name: &str) -> Result<Option<f64>, ApiError> {
            let not_a_number = || ApiError::bad_request(format!("{name} must be a finite number"));
            match value {
                None | Some(Value::Null) => Ok(None),
                Some(Value::Number(n)) => Ok(n.as_f64().filter(|v| v.is_finite())),
                Some(Value::String(s)) if s.trim().is_empty() => Ok(None),
                Some(Value::String(s)) => match s.trim().parse::<f64>() {
                    Ok(v) if v.is_finite() => Ok(Some(v)),
                    _ => Err(not_a_number()),
                },
                Some(_) => Err(not_a_number()),
            }
        }
        /// `None` when the body is no JSON object at all.
        fn whole(bytes: &[u8]) -> Option<Result<ParsedRequest<'_>, ApiError>> {
            let Ok(Value::Object(map)) = serde_json::from_slice::<Value>(bytes) else {
                return None;
            };
            Some((|| {
                let knowledge_id = text(map.get("knowledge_id"), "knowledge_id")?;
                let query = text(map.get("query"), "query")?;
                let (top_k, score_threshold) = match map.get("retrieval_setting") {
                    None | Some(Value::Null) => (DEFAULT_TOP_K, 0.0),
                    Some(Value::Object(setting)) => (
                        number(setting.get("top_k"), "retrieval_setting.top_k")?
                            .map_or(DEFAULT_TOP_K, |k| k.clamp(1.0, MAX_TOP_K as f64) as usize),
                        number(
                            setting.get("score_threshold"),
                            "retrieval_setting.score_threshold",
                        )?
                        .map_or(0.0, |t| t.clamp(0.0, 1.0)),
                    ),
                    Some(_) => {
                        return Err(ApiError::bad_request("retrieval_setting must be an object"));
                    }
                };
                let metadata_condition = match map.get("metadata_condition") {
                    None | Some(Value::Null) => None,
                    Some(value) => Some(MetadataCondition::parse(value)?),
                };
                if knowledge_id.trim().is_empty() {
                    return Ok(ParsedRequest::Probe);
                }
                Ok(ParsedRequest::Retrieve(RetrievalRequest {
                    knowledge_id: knowledge_id.into(),
                    query: query.into(),
                    top_k,
                    score_threshold,
                    metadata_condition,
                }))
            })())
        }
        let scalars = [
            "null",
            r#""k""#,
            r#""""#,
            r#"" 7 ""#,
            r#""NaN""#,
            "5",
            "-3",
            "2.5e3",
            "0.25",
            "18446744073709551615",
            "-9223372036854775808",
            "true",
            r#"[1, "a", {"b": null}]"#,
            r#"{"a": [1]}"#,
            r#""session_id: a\nhi ✓ \ud83d\ude80""#,
        ];
        let mut settings: Vec<String> = ["null", r#""x""#, "3", "true", "[1]", "{}"]
            .iter()
            .map(|s| (*s).to_string())
            .collect();
        for value in scalars {
            settings.push(format!(r#"{{"top_k": {value}, "other": [1, {{}}]}}"#));
            settings.push(format!(r#"{{"score_threshold": {value}, "top_k": 2}}"#));
            settings.push(format!(r#"{{"top_k": 9, "top_k": {value}}}"#));
        }
        let mut bodies = vec![
            r#"{"knowledge_id": "k", "knowledge_id": "last", "query": null, "inputs": {"a": [1, 2.5e3, "\u00e9"]}}"#.to_string(),
            r#"{"kn\u006fwledge_id": "escaped key", "metadata_condition": {"conditions": []}}"#.to_string(),
            r#"{"knowledge_id": "k", "metadata_condition": {"logical_operator": "and", "conditions": [{"name": ["kind"], "comparison_operator": "is", "value": "activity"}]}}"#.to_string(),
            r#"{"knowledge_id": "k", "metadata_condition": 5}"#.to_string(),
            "{}".to_string(),
            "  {\"query\": 5}  ".to_string(),
            "{\"query\": \"Ärger ✓\", \"x\": \"🚀\"}".to_string(),
        ];
        for id in scalars {
            for query in scalars {
                bodies.push(format!(r#"{{"knowledge_id": {id}, "query": {query}}}"#));
            }
            for setting in &settings {
                bodies.push(format!(
                    r#"{{"query": "q", "knowledge_id": {id}, "retrieval_setting": {setting}}}"#
                ));
            }
        }
        let mut accepted = 0;
        for body in &bodies {
            let expected = whole(body.as_bytes()).unwrap_or_else(|| panic!("not JSON: {body}"));
            let got = parse_request(body.as_bytes());
            assert_eq!(got, expected, "{body}");
            accepted += usize::from(got.is_ok());
        }
        // Both readings accept most of these and refuse some: the comparison covers each.
        assert!(
            accepted > bodies.len() / 3 && accepted < bodies.len(),
            "{accepted}"
        );
        for refused in [
            &b"{not json"[..],
            b"[1]",
            b"\"text\"",
            b"null",
            b"{\"a\": 1,}",
            b"{\"x\": 01}",
            b"{\"x\": \"\xff\"}",
            b"{\"knowledge_id\": \"k\"} trailing",
        ] {
            assert!(whole(refused).is_none());
            let error = read_fields(refused).unwrap_err();
            assert_eq!(error.status, StatusCode::BAD_REQUEST);
        }
        assert!(
            read_fields(b"[1]")
                .unwrap_err()
                .message
                .contains("must be a JSON object")
        );
        assert!(
            read_fields(b"{\"a\": ")
                .unwrap_err()
                .message
                .contains("not valid JSON")
        );
    }

    #[test]
    fn probes_are_recognised() {
        assert_eq!(parse_request(b""), Ok(ParsedRequest::Probe));
        assert_eq!(parse_request(b"  \n"), Ok(ParsedRequest::Probe));
        let newer = br#"{"knowledge_id": "", "query": "", "retrieval_setting": {"top_k": 1, "score_threshold": 0.0}}"#;
        assert_eq!(parse_request(newer), Ok(ParsedRequest::Probe));
    }

    #[test]
    fn settings_are_defaulted_and_clamped() {
        let body = br#"{"knowledge_id": "k", "query": "q", "retrieval_setting": {"top_k": null, "score_threshold": 2}}"#;
        let ParsedRequest::Retrieve(r) = parse_request(body).unwrap() else {
            panic!()
        };
        assert_eq!((r.top_k, r.score_threshold), (DEFAULT_TOP_K, 1.0));
        let body = br#"{"knowledge_id": "k", "retrieval_setting": {"top_k": 500}}"#;
        let ParsedRequest::Retrieve(r) = parse_request(body).unwrap() else {
            panic!()
        };
        assert_eq!(r.top_k, MAX_TOP_K);
    }

    /// Regression (fuzzing): `"NaN"` in a string gave `top_k` 0 and a NaN threshold.
    #[test]
    fn non_finite_numbers_in_strings_are_refused() {
        for setting in [
            r#"{"top_k": "NaN"}"#,
            r#"{"top_k": "inf"}"#,
            r#"{"score_threshold": "nan"}"#,
            r#"{"score_threshold": "-Infinity"}"#,
        ] {
            let body = format!(r#"{{"knowledge_id": "k", "retrieval_setting": {setting}}}"#);
            let error = parse_request(body.as_bytes()).unwrap_err();
            assert_eq!(error.status, StatusCode::BAD_REQUEST, "{setting}");
            assert!(error.message.contains("finite number"), "{error}");
        }
        let body = br#"{"knowledge_id": "k", "retrieval_setting": {"top_k": " 3 ", "score_threshold": "0.25"}}"#;
        let ParsedRequest::Retrieve(r) = parse_request(body).unwrap() else {
            panic!()
        };
        assert_eq!((r.top_k, r.score_threshold), (3, 0.25));
    }

    #[test]
    fn garbage_is_a_readable_400() {
        for body in [
            &b"{not json"[..],
            b"[1]",
            br#"{"knowledge_id": {"a": 1}}"#,
            br#"{"knowledge_id": "k", "retrieval_setting": {"top_k": "many"}}"#,
        ] {
            let error = parse_request(body).unwrap_err();
            assert_eq!(error.status, StatusCode::BAD_REQUEST, "{error}");
        }
    }

    #[test]
    fn query_identity_lines() {
        assert_eq!(
            split_query("session_id: ps_1\nwhere are my alerts?"),
            (
                QueryIdentity::Explicit(ClaimKind::SessionId, "ps_1"),
                "where are my alerts?"
            )
        );
        assert_eq!(
            split_query("Email = \"Maria@X.com\"\nhi"),
            (
                QueryIdentity::Explicit(ClaimKind::Email, "Maria@X.com"),
                "hi"
            )
        );
        assert_eq!(
            split_query("ps_1\nhelp"),
            (QueryIdentity::Candidate("ps_1"), "help")
        );
        assert_eq!(
            split_query("where are my alerts?"),
            (QueryIdentity::None, "where are my alerts?")
        );
        assert_eq!(
            split_query("Email: why did I not get the invoice email?\nthanks"),
            (
                QueryIdentity::None,
                "Email: why did I not get the invoice email?\nthanks"
            )
        );
        assert_eq!(
            split_query("user: how do I reset"),
            (QueryIdentity::None, "user: how do I reset")
        );
        assert_eq!(
            split_query("note: this is a question"),
            (QueryIdentity::None, "note: this is a question")
        );
    }
}
