//! Which session a request is about.
//!
//! Dify sends no user identity, so an identifier arrives through a channel the operator set up:
//! a metadata filter, the first line of the query, or the knowledge id (see
//! [`crate::api::retrieval`]); the MCP tool and the REST API pass one directly. Every
//! identifier is a *claim*: it resolves to at most one session (the person's newest), an
//! unresolved Dify variable (`{{session_id}}`) counts as absent, and with
//! `LIVECTX_IDENTITY_SECRET` set, claims from end-user-controlled channels must be signed by the
//! product's backend.

use std::borrow::Cow;
use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::diagnostics::LookupMiss;
use crate::web::auth::hmac_sha256;

use crate::session::model::{PersonKey, Session, SessionId, normalize_email};
use crate::session::pull::{ActivityPuller, PullOutcome, mark_stale};
use crate::session::store::{SessionStore, StoreError};
use crate::telemetry::{Metrics, Person};

/// What kind of identifier a claim is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClaimKind {
    SessionId,
    Email,
    UserId,
    /// Unknown: tried as a session id, then an email, then a user id.
    Any,
}

/// Where a claim came from; decides whether a signature is required and labels metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    Metadata,
    Query,
    KnowledgeId,
    Mcp,
    Rest,
}

impl Via {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Metadata => "metadata",
            Self::Query => "query",
            Self::KnowledgeId => "knowledge_id",
            Self::Mcp => "mcp",
            Self::Rest => "rest",
        }
    }

    /// The knowledge id is typed by the operator in Dify, not by the end user.
    fn end_user_controlled(self) -> bool {
        !matches!(self, Self::KnowledgeId)
    }
}

/// One identifier claim, borrowed from the request that carries it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim<'a> {
    pub kind: ClaimKind,
    pub value: &'a str,
    pub via: Via,
}

/// Is this a Dify variable that was never substituted (`{{session_id}}`, `{{#sys.user_id#}}`)?
pub fn is_unresolved_variable(value: &str) -> bool {
    let v = value.trim();
    v.starts_with("{{") && v.ends_with("}}")
}

/// Does `value` have the shape of a signed identifier (`<id>.<digits>.<43 base64url chars>`)?
/// Only a shape check: [`IdentitySigner::verify`] decides.
pub fn looks_signed(value: &str) -> bool {
    let Some((message, signature)) = value.trim().rsplit_once('.') else {
        return false;
    };
    let Some((id, expires)) = message.rsplit_once('.') else {
        return false;
    };
    !id.is_empty()
        && !expires.is_empty()
        && expires.bytes().all(|b| b.is_ascii_digit())
        && signature.len() == 43
        && signature
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Why a signed identifier was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("identifier is not signed")]
    Unsigned,
    #[error("identifier signature does not match")]
    BadSignature,
    #[error("signed identifier has expired")]
    Expired,
}

impl SignatureError {
    pub fn reason(self) -> &'static str {
        match self {
            Self::Unsigned => "unsigned",
            Self::BadSignature => "bad_signature",
            Self::Expired => "expired",
        }
    }
}

/// Why a claim was refused. The label ([`Rejection::reason`]) names it in metrics and logs;
/// code downstream matches on the variant, never on the label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    /// A signed identifier that failed its check.
    #[error(transparent)]
    Signature(#[from] SignatureError),
    /// A template variable the chatbot platform never filled in (`{{user_id}}`).
    #[error("identifier is an unresolved template variable")]
    UnresolvedVariable,
    /// An email, with email lookups off (`LIVECTX_NO_EMAIL_LOOKUP`).
    #[error("email lookups are disabled")]
    EmailLookupDisabled,
}

impl Rejection {
    /// The label of `livectx_identity_rejected_total{reason}` and of the log line.
    pub fn reason(self) -> &'static str {
        match self {
            Self::Signature(error) => error.reason(),
            Self::UnresolvedVariable => "unresolved_variable",
            Self::EmailLookupDisabled => "email_lookup_disabled",
        }
    }

    /// What the caller should fix, for error bodies and tool answers.
    pub fn message(self) -> &'static str {
        match self {
            Self::UnresolvedVariable => {
                "the identifier is an unresolved template variable such as {{user_id}}: the chatbot platform did not fill it in; check the variable's name in the bot's configuration"
            }
            Self::Signature(SignatureError::Unsigned) => {
                "this server requires signed identifiers (LIVECTX_IDENTITY_SECRET is set): pass the signed id your product's backend issued (see `livectx sign`), not a raw id"
            }
            Self::Signature(SignatureError::BadSignature) => {
                "the signed identifier's signature does not match: it was altered or signed with another secret"
            }
            Self::Signature(SignatureError::Expired) => {
                "the signed identifier has expired: ask your product's backend for a fresh one"
            }
            Self::EmailLookupDisabled => {
                "email lookups are disabled on this server (LIVECTX_NO_EMAIL_LOOKUP): pass the session id or the user id instead"
            }
        }
    }
}

impl From<Rejection> for LookupMiss {
    fn from(rejection: Rejection) -> Self {
        match rejection {
            Rejection::UnresolvedVariable => Self::UnfilledVariable,
            Rejection::Signature(SignatureError::Unsigned) => Self::Unsigned,
            Rejection::Signature(SignatureError::BadSignature) => Self::BadSignature,
            Rejection::Signature(SignatureError::Expired) => Self::Expired,
            Rejection::EmailLookupDisabled => Self::EmailLookupDisabled,
        }
    }
}

/// Mints and checks signed identifiers: `<id>.<expires_unix>.<base64url(HMAC-SHA256(secret, "<id>.<expires_unix>"))>`.
#[derive(Clone)]
pub struct IdentitySigner {
    key: Arc<[u8]>,
}

impl std::fmt::Debug for IdentitySigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("IdentitySigner(<secret>)")
    }
}

impl IdentitySigner {
    pub fn new(secret: &str) -> Self {
        Self {
            key: Arc::from(secret.as_bytes()),
        }
    }

    fn mac(&self, message: &str) -> Hmac<Sha256> {
        hmac_sha256(&self.key, message.as_bytes())
    }

    /// A signed identifier for `id`, valid until `expires_at` (Unix seconds).
    pub fn sign(&self, id: &str, expires_at: u64) -> String {
        let message = format!("{id}.{expires_at}");
        let tag = self.mac(&message).finalize().into_bytes();
        format!("{message}.{}", URL_SAFE_NO_PAD.encode(tag))
    }

    /// The identifier inside a valid signed token. Checked in constant time.
    pub fn verify(&self, token: &str, now: f64) -> Result<String, SignatureError> {
        let token = token.trim();
        let (message, signature) = token.rsplit_once('.').ok_or(SignatureError::Unsigned)?;
        let (id, expires) = message.rsplit_once('.').ok_or(SignatureError::Unsigned)?;
        let expires: u64 = expires.parse().map_err(|_| SignatureError::Unsigned)?;
        let tag = URL_SAFE_NO_PAD
            .decode(signature)
            .map_err(|_| SignatureError::Unsigned)?;
        if tag.len() != 32 || id.is_empty() {
            return Err(SignatureError::Unsigned);
        }
        self.mac(message)
            .verify_slice(&tag)
            .map_err(|_| SignatureError::BadSignature)?;
        if (expires as f64) < now {
            return Err(SignatureError::Expired);
        }
        Ok(id.to_string())
    }
}

/// How identifiers are checked.
#[derive(Debug, Clone, Default)]
pub struct IdentityPolicy {
    /// When set, claims from end-user-controlled channels must be signed.
    pub signer: Option<IdentitySigner>,
    /// Emails are guessable; production may allow only session and user ids.
    pub email_lookup: bool,
}

/// The outcome of one claim.
#[derive(Debug, Clone)]
pub enum ClaimOutcome {
    /// The claim names this session.
    Found(Arc<Session>),
    /// A well-formed claim that matches no live session: unknown id, no activity yet, or
    /// another product (the operator console shows which).
    Unknown(LookupMiss),
    /// Refused (unsigned, forged, expired, unresolved variable, email lookups off).
    Rejected(Rejection),
}

/// Resolves claims against the store.
pub struct IdentityResolver<'a> {
    pub store: &'a dyn SessionStore,
    pub policy: &'a IdentityPolicy,
    pub metrics: &'a Metrics,
    /// A source read on demand, asked before user-id lookups (Autoplay's pull API).
    pub puller: Option<&'a dyn ActivityPuller>,
}

impl IdentityResolver<'_> {
    /// Resolve one claim within an optional product scope.
    pub async fn resolve(
        &self,
        claim: &Claim<'_>,
        product: Option<&str>,
        now: f64,
    ) -> Result<ClaimOutcome, StoreError> {
        let outcome = self.resolve_inner(claim, product, now).await?;
        let result = match &outcome {
            ClaimOutcome::Found(_) => "found",
            ClaimOutcome::Unknown(_) => "unknown",
            ClaimOutcome::Rejected(rejection) => {
                self.count_rejection(claim.via, *rejection);
                "rejected"
            }
        };
        self.metrics.lookup(claim.via.as_str(), result);
        Ok(outcome)
    }

    /// Count and log a refused identifier.
    pub fn count_rejection(&self, via: Via, rejection: Rejection) {
        let reason = rejection.reason();
        self.metrics.reject_identity(reason);
        tracing::warn!(via = via.as_str(), reason, "refused an identifier");
    }

    /// Does `value`, taken as it is (no signature check), name a live session? Tells an
    /// identifier sent without its signature from the first word of an ordinary question.
    pub async fn names_someone(
        &self,
        value: &str,
        product: Option<&str>,
        now: f64,
    ) -> Result<bool, StoreError> {
        let outcome = self
            .find(ClaimKind::Any, value.trim(), product, now, Via::Query)
            .await?;
        Ok(matches!(outcome, ClaimOutcome::Found(_)))
    }

    async fn resolve_inner(
        &self,
        claim: &Claim<'_>,
        product: Option<&str>,
        now: f64,
    ) -> Result<ClaimOutcome, StoreError> {
        if is_unresolved_variable(claim.value) {
            tracing::warn!(
                via = claim.via.as_str(),
                value = %claim.value,
                "an identifier is an unresolved Dify variable: the app did not pass this input (check the variable name and that your front end sends it in `inputs`)"
            );
            return Ok(ClaimOutcome::Rejected(Rejection::UnresolvedVariable));
        }
        let value = match (&self.policy.signer, claim.via.end_user_controlled()) {
            (Some(signer), true) => match signer.verify(claim.value, now) {
                Ok(id) => Cow::Owned(id),
                Err(error) => return Ok(ClaimOutcome::Rejected(error.into())),
            },
            _ => Cow::Borrowed(claim.value.trim()),
        };
        let stale = self.pull(claim, &value, product, now).await?;
        let outcome = self
            .find(claim.kind, &value, product, now, claim.via)
            .await?;
        Ok(match (outcome, stale) {
            (ClaimOutcome::Found(session), Some(as_of)) => {
                ClaimOutcome::Found(mark_stale(session, as_of))
            }
            (outcome, _) => outcome,
        })
    }

    /// Before a lookup by user id (`user_id:` claims, and the MCP tool's and REST route's
    /// argument unless it is an email or a live session id), bring that user's activity up to
    /// date from the pull source. `Some(as_of)` when it could not: what is held may be stale.
    async fn pull(
        &self,
        claim: &Claim<'_>,
        value: &str,
        product: Option<&str>,
        now: f64,
    ) -> Result<Option<Option<f64>>, StoreError> {
        let Some(puller) = self.puller else {
            return Ok(None);
        };
        let by_user_id = match claim.kind {
            ClaimKind::UserId => true,
            ClaimKind::Any if matches!(claim.via, Via::Mcp | Via::Rest) => {
                let live_session = match SessionId::parse(value) {
                    Ok(id) => self.store.session(&id, now).await?.is_some(),
                    Err(_) => false,
                };
                !value.contains('@') && !live_session
            }
            _ => false,
        };
        if !by_user_id {
            return Ok(None);
        }
        Ok(
            match puller.ensure_fresh(product, value, puller.budget()).await {
                PullOutcome::Stale { as_of, .. } => Some(as_of),
                _ => None,
            },
        )
    }

    /// Look up a verified identifier value.
    async fn find(
        &self,
        kind: ClaimKind,
        value: &str,
        product: Option<&str>,
        now: f64,
        via: Via,
    ) -> Result<ClaimOutcome, StoreError> {
        if value.is_empty() {
            return Ok(ClaimOutcome::Unknown(LookupMiss::NoIdentifier));
        }
        let mut miss = match kind {
            ClaimKind::Email | ClaimKind::UserId => LookupMiss::NoActivityYet,
            ClaimKind::Any if value.contains('@') => LookupMiss::NoActivityYet,
            ClaimKind::SessionId | ClaimKind::Any => LookupMiss::UnknownId,
        };
        let kinds: &[ClaimKind] = match kind {
            ClaimKind::Any => &[ClaimKind::SessionId, ClaimKind::Email, ClaimKind::UserId],
            ClaimKind::SessionId => &[ClaimKind::SessionId],
            ClaimKind::Email => &[ClaimKind::Email],
            ClaimKind::UserId => &[ClaimKind::UserId],
        };
        for kind in kinds {
            let found = match kind {
                ClaimKind::SessionId => match SessionId::parse(value) {
                    Ok(id) => self.store.session(&id, now).await?,
                    Err(_) => None,
                },
                ClaimKind::Email => {
                    if normalize_email(value).is_none() || !value.contains('@') {
                        continue;
                    }
                    if !self.policy.email_lookup {
                        return Ok(ClaimOutcome::Rejected(Rejection::EmailLookupDisabled));
                    }
                    self.person_session(PersonKey::email(value), product, now)
                        .await?
                }
                ClaimKind::UserId => {
                    self.person_session(PersonKey::user_id(value), product, now)
                        .await?
                }
                ClaimKind::Any => None,
            };
            if let Some(session) = found {
                let in_scope = match (product, session.product_id().as_deref()) {
                    (Some(scope), Some(own)) => scope == own,
                    _ => true,
                };
                if in_scope {
                    tracing::debug!(via = via.as_str(), person = %Person(value), session = %session.id(), "identifier resolved");
                    return Ok(ClaimOutcome::Found(session));
                }
                miss = LookupMiss::OtherProduct;
            }
        }
        Ok(ClaimOutcome::Unknown(miss))
    }

    async fn person_session(
        &self,
        key: Option<PersonKey>,
        product: Option<&str>,
        now: f64,
    ) -> Result<Option<Arc<Session>>, StoreError> {
        let Some(key) = key else { return Ok(None) };
        let Some(id) = self.store.resolve_person(&key, product, now).await? else {
            return Ok(None);
        };
        // The index only points; the session must still be this person's (a session id
        // reused after expiry starts over without its old identities).
        Ok(self
            .store
            .session(&id, now)
            .await?
            .filter(|session| session.person_keys().contains(&key)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signed_identifiers_round_trip_and_refuse_forgeries() {
        let signer = IdentitySigner::new("s3cret");
        let token = signer.sign("maria@example.com", 2_000);
        assert_eq!(
            signer.verify(&token, 1_000.0),
            Ok("maria@example.com".to_string())
        );
        assert_eq!(signer.verify(&token, 2_001.0), Err(SignatureError::Expired));
        assert_eq!(
            signer.verify("maria@example.com", 1_000.0),
            Err(SignatureError::Unsigned)
        );
        let forged = token.replacen("maria", "mario", 1);
        assert_eq!(
            signer.verify(&forged, 1_000.0),
            Err(SignatureError::BadSignature)
        );
        let other = IdentitySigner::new("other").sign("maria@example.com", 2_000);
        assert_eq!(
            signer.verify(&other, 1_000.0),
            Err(SignatureError::BadSignature)
        );
    }

    /// The token the Python and Node snippets of docs/security.md print for this input (both were run
    /// and printed exactly this): a backend in either language interoperates.
    #[test]
    fn matches_the_documented_backend_snippets() {
        let signer = IdentitySigner::new("docs-example-secret");
        let token = "maria@example.com.4102444800.SOqtWfNOCdegtO6mmrXYDhovo4Lo7Bl6XZitmGklSBQ";
        assert_eq!(signer.sign("maria@example.com", 4_102_444_800), token);
        assert_eq!(
            signer.verify(token, 4_000_000_000.0),
            Ok("maria@example.com".to_string())
        );
    }

    #[test]
    fn recognises_the_shape_of_signed_identifiers() {
        let token = IdentitySigner::new("s3cret").sign("maria@example.com", 2_000);
        assert!(looks_signed(&token));
        assert!(!looks_signed("help"));
        assert!(!looks_signed("maria@example.com"));
        assert!(!looks_signed("a.b.c"));
    }

    #[test]
    fn recognises_unresolved_dify_variables() {
        assert!(is_unresolved_variable("{{session_id}}"));
        assert!(is_unresolved_variable(" {{#sys.user_id#}} "));
        assert!(!is_unresolved_variable("ps_1"));
    }
}
