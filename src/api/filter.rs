//! Dify's `metadata_condition`: parsing, and applying it to records' metadata.
//!
//! Conditions on `session_id`, `email` or `user_id` choose the session (see
//! [`crate::api::retrieval`]); the others filter that session's records with Dify's operators.
//! A filter that matches nothing returns nothing, never "everything".

use serde_json::{Map, Value};

use crate::web::error::ApiError;

/// One condition, as Dify sends it.
#[derive(Debug, Clone, PartialEq)]
pub struct Condition {
    /// `name` may be a string or (older documentation) a list of strings.
    pub names: Vec<String>,
    pub operator: String,
    pub value: Value,
}

/// Conditions joined by `and` (default) or `or`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct MetadataCondition {
    pub any: bool,
    pub conditions: Vec<Condition>,
}

impl MetadataCondition {
    /// Parse Dify's object (`null`/absent handled by the caller).
    pub fn parse(value: &Value) -> Result<Self, ApiError> {
        let Value::Object(object) = value else {
            return Err(ApiError::bad_request(
                "metadata_condition must be an object or null",
            ));
        };
        let any = match object.get("logical_operator") {
            None | Some(Value::Null) => false,
            Some(Value::String(op)) if op.eq_ignore_ascii_case("and") => false,
            Some(Value::String(op)) if op.eq_ignore_ascii_case("or") => true,
            Some(other) => {
                return Err(ApiError::bad_request(format!(
                    "metadata_condition.logical_operator must be \"and\" or \"or\", not {other}"
                )));
            }
        };
        let conditions = match object.get("conditions") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(items)) => items
                .iter()
                .map(parse_condition)
                .collect::<Result<Vec<_>, _>>()?,
            Some(_) => {
                return Err(ApiError::bad_request(
                    "metadata_condition.conditions must be a list",
                ));
            }
        };
        Ok(Self { any, conditions })
    }

    /// Does a record's metadata satisfy every (or, with `or`, any) condition?
    /// With no conditions, everything matches.
    pub fn matches(&self, metadata: &Map<String, Value>) -> bool {
        if self.conditions.is_empty() {
            return true;
        }
        let mut results = self.conditions.iter().map(|c| c.matches(metadata));
        if self.any {
            results.any(|r| r)
        } else {
            results.all(|r| r)
        }
    }
}

fn parse_condition(value: &Value) -> Result<Condition, ApiError> {
    let Value::Object(object) = value else {
        return Err(ApiError::bad_request(
            "each metadata condition must be an object",
        ));
    };
    let names = match object.get("name") {
        Some(Value::String(name)) => vec![name.clone()],
        Some(Value::Array(names)) => names
            .iter()
            .map(|n| n.as_str().map(str::to_string))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| ApiError::bad_request("metadata condition names must be strings"))?,
        _ => {
            return Err(ApiError::bad_request(
                "each metadata condition needs a \"name\"",
            ));
        }
    };
    let operator = match object.get("comparison_operator") {
        Some(Value::String(op)) => op.trim().to_string(),
        _ => {
            return Err(ApiError::bad_request(
                "each metadata condition needs a \"comparison_operator\" string",
            ));
        }
    };
    if !is_known_operator(&operator) {
        return Err(ApiError::bad_request(format!(
            "unknown comparison_operator \"{operator}\" (Dify's operators: contains, not contains, start with, end with, is, is not, empty, not empty, in, not in, =, ≠, >, <, ≥, ≤, before, after)"
        )));
    }
    Ok(Condition {
        names,
        operator,
        value: object.get("value").cloned().unwrap_or(Value::Null),
    })
}

fn is_known_operator(op: &str) -> bool {
    matches!(
        op,
        "contains"
            | "not contains"
            | "start with"
            | "end with"
            | "is"
            | "is not"
            | "empty"
            | "not empty"
            | "in"
            | "not in"
            | "="
            | "≠"
            | "!="
            | ">"
            | "<"
            | "≥"
            | ">="
            | "≤"
            | "<="
            | "before"
            | "after"
    )
}

impl Condition {
    /// The values this condition compares against (a list for `in`, else one value).
    pub fn values(&self) -> Vec<String> {
        match &self.value {
            Value::Array(items) => items.iter().filter_map(scalar_text).collect(),
            Value::String(s) if matches!(self.operator.as_str(), "in" | "not in") => s
                .split(',')
                .map(|p| p.trim().to_string())
                .filter(|p| !p.is_empty())
                .collect(),
            other => scalar_text(other).into_iter().collect(),
        }
    }

    /// Is this an equality test (`is`, `=`, `in`) — the kind that can name a session?
    pub fn is_equality(&self) -> bool {
        matches!(self.operator.as_str(), "is" | "=" | "in")
    }

    fn matches(&self, metadata: &Map<String, Value>) -> bool {
        // A multi-name condition holds when it holds for any of its names.
        self.names
            .iter()
            .any(|name| self.matches_field(metadata.get(name)))
    }

    fn matches_field(&self, field: Option<&Value>) -> bool {
        let field_text = field.and_then(scalar_text);
        let expected = self.values();
        let first = expected.first().map(String::as_str).unwrap_or("");
        match self.operator.as_str() {
            "empty" => field_text.as_deref().is_none_or(str::is_empty),
            "not empty" => field_text.as_deref().is_some_and(|t| !t.is_empty()),
            "contains" => {
                field_text.is_some_and(|t| t.to_lowercase().contains(&first.to_lowercase()))
            }
            "not contains" => {
                field_text.is_none_or(|t| !t.to_lowercase().contains(&first.to_lowercase()))
            }
            "start with" => field_text.is_some_and(|t| t.starts_with(first)),
            "end with" => field_text.is_some_and(|t| t.ends_with(first)),
            "is" | "=" => field_text.is_some_and(|t| equal(&t, first)),
            "is not" | "≠" | "!=" => field_text.is_none_or(|t| !equal(&t, first)),
            "in" => field_text.is_some_and(|t| expected.iter().any(|e| equal(&t, e))),
            "not in" => field_text.is_none_or(|t| !expected.iter().any(|e| equal(&t, e))),
            ">" | "<" | "≥" | ">=" | "≤" | "<=" => {
                match (field_text.as_deref().and_then(number), number(first)) {
                    (Some(a), Some(b)) => compare(&self.operator, a, b),
                    _ => false,
                }
            }
            "before" | "after" => match (field.and_then(time_of), time_of(&self.value)) {
                (Some(a), Some(b)) => {
                    if self.operator == "before" {
                        a < b
                    } else {
                        a > b
                    }
                }
                _ => false,
            },
            _ => false,
        }
    }
}

fn compare(op: &str, a: f64, b: f64) -> bool {
    match op {
        ">" => a > b,
        "<" => a < b,
        "≥" | ">=" => a >= b,
        _ => a <= b,
    }
}

fn equal(a: &str, b: &str) -> bool {
    match (number(a), number(b)) {
        (Some(x), Some(y)) => x == y,
        _ => a == b,
    }
}

fn number(text: &str) -> Option<f64> {
    text.trim().parse::<f64>().ok().filter(|v| v.is_finite())
}

/// A time as Unix seconds: a number, a numeric string, or an RFC 3339 string.
fn time_of(value: &Value) -> Option<f64> {
    match value {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => number(s).or_else(|| {
            humantime::parse_rfc3339_weak(s.trim())
                .ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map(|d| d.as_secs_f64())
        }),
        _ => None,
    }
}

fn scalar_text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn meta() -> Map<String, Value> {
        json!({"kind": "summary", "session_id": "s1", "action_count": 12, "start_time": "2026-07-29T14:00:00.000Z", "start_ts": 1785333600})
            .as_object()
            .cloned()
            .unwrap()
    }

    fn cond(v: Value) -> MetadataCondition {
        MetadataCondition::parse(&v).unwrap()
    }

    #[test]
    fn applies_difys_operators() {
        let m = meta();
        let check = |name: &str, op: &str, value: Value| {
            cond(json!({"conditions": [{"name": name, "comparison_operator": op, "value": value}]}))
                .matches(&m)
        };
        assert!(check("kind", "is", json!("summary")));
        assert!(!check("kind", "is", json!("actions")));
        assert!(check("kind", "in", json!(["actions", "summary"])));
        assert!(check("kind", "not in", json!("actions, activity")));
        assert!(check("kind", "contains", json!("SUMM")));
        assert!(check("kind", "start with", json!("sum")));
        assert!(check("action_count", ">", json!(10)));
        assert!(check("action_count", "≤", json!("12")));
        assert!(!check("action_count", "<", json!(12)));
        assert!(check("missing", "empty", Value::Null));
        assert!(!check("missing", "is", json!("x")));
        assert!(check("start_time", "after", json!("2026-07-29T13:00:00Z")));
        assert!(check("start_ts", "before", json!(1785333700)));
    }

    #[test]
    fn and_or_and_list_names() {
        let m = meta();
        let both = json!({"logical_operator": "and", "conditions": [
            {"name": "kind", "comparison_operator": "is", "value": "summary"},
            {"name": ["nope", "session_id"], "comparison_operator": "is", "value": "s2"}]});
        assert!(!cond(both.clone()).matches(&m));
        let mut either = both;
        either["logical_operator"] = json!("or");
        assert!(cond(either).matches(&m));
    }

    #[test]
    fn refuses_malformed_conditions() {
        assert!(MetadataCondition::parse(&json!("x")).is_err());
        assert!(
            MetadataCondition::parse(
                &json!({"conditions": [{"name": "a", "comparison_operator": "like"}]})
            )
            .is_err()
        );
        assert!(
            MetadataCondition::parse(&json!({"conditions": [{"comparison_operator": "is"}]}))
                .is_err()
        );
        assert!(MetadataCondition::parse(&json!({"logical_operator": "xor"})).is_err());
    }
}
