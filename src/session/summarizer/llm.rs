//! A client for any OpenAI-compatible chat-completions endpoint (OpenAI, Ollama, vLLM,
//! llama.cpp server, ...).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::session::model::{SummaryDraft, SummaryJob, SummarySource};

/// The prompt used unless `LIVECTX_SUMMARY_PROMPT` overrides it. `{previous_summary}` and
/// `{actions}` are replaced; the previous summary is always included so summaries accumulate.
pub const DEFAULT_PROMPT: &str = "You keep a running summary of one user's current session in a web product. \
A support chatbot reads it to understand what this user is doing.

Summary so far (empty at the start of the session):
{previous_summary}

New actions since that summary, oldest first:
{actions}

Write the updated summary of the whole session in at most 150 words of plain text. Cover: the pages \
visited in order (say when a page was visited repeatedly), the main actions taken, forms started or \
abandoned, the user's apparent goal, and where the user is now. Keep every fact from the summary so \
far that still matters. Do not invent anything that is not in the summary or the actions.";

/// Settings of the LLM client.
#[derive(Clone)]
pub struct LlmConfig {
    /// Base URL ending before `/chat/completions`, e.g. `https://api.openai.com/v1`.
    pub base_url: String,
    pub api_key: Option<String>,
    pub model: String,
    pub temperature: f32,
    pub max_tokens: u32,
    pub timeout: Duration,
    pub prompt_template: String,
}

impl std::fmt::Debug for LlmConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The key is never printed.
        f.debug_struct("LlmConfig")
            .field("base_url", &crate::telemetry::redact_url(&self.base_url))
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .field("model", &self.model)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// Why an LLM call failed. Messages never contain the API key.
#[derive(Debug, thiserror::Error)]
pub enum LlmError {
    #[error("LLM request timed out after {0:?}")]
    Timeout(Duration),
    #[error("LLM endpoint unreachable: {0}")]
    Transport(String),
    #[error("LLM endpoint answered HTTP {status}: {body}")]
    Status { status: u16, body: String },
    #[error("LLM answer could not be read: {0}")]
    Malformed(String),
    #[error("LLM answer had no text")]
    Empty,
}

#[derive(Serialize)]
struct ChatRequest<'a> {
    model: &'a str,
    messages: [ChatMessage<'a>; 1],
    temperature: f32,
    max_tokens: u32,
}

#[derive(Serialize)]
struct ChatMessage<'a> {
    role: &'a str,
    content: &'a str,
}

#[derive(Deserialize)]
struct ChatResponse {
    choices: Vec<Choice>,
}

#[derive(Deserialize)]
struct Choice {
    message: ChoiceMessage,
}

#[derive(Deserialize)]
struct ChoiceMessage {
    #[serde(default)]
    content: Option<String>,
}

/// The OpenAI-compatible client.
#[derive(Debug, Clone)]
pub struct LlmClient {
    http: reqwest::Client,
    config: LlmConfig,
    endpoint: String,
}

impl LlmClient {
    /// Build a client; the timeout covers the whole request.
    pub fn new(config: LlmConfig) -> Result<Self, LlmError> {
        let http = reqwest::Client::builder()
            .timeout(config.timeout)
            .connect_timeout(Duration::from_secs(10).min(config.timeout))
            .user_agent(concat!("livectx/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| LlmError::Transport(e.to_string()))?;
        let endpoint = format!("{}/chat/completions", config.base_url.trim_end_matches('/'));
        Ok(Self {
            http,
            config,
            endpoint,
        })
    }

    /// Model name, for logs.
    pub fn model(&self) -> &str {
        &self.config.model
    }

    /// Summarise a job: previous summary plus new actions, through the configured template.
    pub async fn summarize(&self, job: &SummaryJob) -> Result<SummaryDraft, LlmError> {
        let prompt = build_prompt(&self.config.prompt_template, job);
        let text = self.complete(&prompt).await?;
        Ok(SummaryDraft {
            text,
            source: SummarySource::Llm,
            digest: None,
        })
    }

    /// One chat completion.
    pub async fn complete(&self, prompt: &str) -> Result<String, LlmError> {
        let request = ChatRequest {
            model: &self.config.model,
            messages: [ChatMessage {
                role: "user",
                content: prompt,
            }],
            temperature: self.config.temperature,
            max_tokens: self.config.max_tokens,
        };
        let mut builder = self.http.post(&self.endpoint).json(&request);
        if let Some(key) = &self.config.api_key {
            builder = builder.bearer_auth(key);
        }
        let response = builder.send().await.map_err(|e| self.transport_error(e))?;
        let status = response.status();
        let body = response
            .bytes()
            .await
            .map_err(|e| self.transport_error(e))?;
        if !status.is_success() {
            let snippet: String = String::from_utf8_lossy(&body).chars().take(300).collect();
            return Err(LlmError::Status {
                status: status.as_u16(),
                body: self.redact(&snippet),
            });
        }
        let parsed: ChatResponse =
            serde_json::from_slice(&body).map_err(|e| LlmError::Malformed(e.to_string()))?;
        let text = parsed
            .choices
            .into_iter()
            .next()
            .and_then(|c| c.message.content)
            .map(|t| t.trim().to_string())
            .unwrap_or_default();
        if text.is_empty() {
            return Err(LlmError::Empty);
        }
        Ok(text)
    }

    fn transport_error(&self, error: reqwest::Error) -> LlmError {
        if error.is_timeout() {
            LlmError::Timeout(self.config.timeout)
        } else {
            // reqwest errors carry the URL, never headers; strip the URL's query just in case.
            LlmError::Transport(self.redact(&error.without_url().to_string()))
        }
    }

    fn redact(&self, text: &str) -> String {
        match &self.config.api_key {
            Some(key) if !key.is_empty() => text.replace(key.as_str(), "<redacted>"),
            _ => text.to_string(),
        }
    }
}

/// Fill the template: `{previous_summary}` and `{actions}`.
pub fn build_prompt(template: &str, job: &SummaryJob) -> String {
    let previous = job
        .previous
        .as_ref()
        .map(|s| s.text.trim().to_string())
        .filter(|t| !t.is_empty())
        .unwrap_or_else(|| "(none yet)".to_string());
    let mut actions = String::new();
    for chunk in &job.chunks {
        for action in chunk.actions.iter() {
            actions.push_str("- ");
            actions.push_str(&action.describe());
            actions.push('\n');
        }
    }
    template
        .replace("{previous_summary}", &previous)
        .replace("{actions}", actions.trim_end())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::session::model::tests::action;
    use crate::session::model::{Chunk, SessionId, Summary};

    #[test]
    fn prompt_carries_previous_summary_and_new_actions() {
        let job = SummaryJob {
            session_id: SessionId::parse("s").unwrap(),
            previous: Some(Arc::new(Summary {
                text: "Visited billing twice.".into(),
                source: SummarySource::Llm,
                covers_through_seq: 1,
                covered_actions: 3,
                first_ts: 0.0,
                last_ts: 0.0,
                updated_at: 0.0,
                generation: 1,
                digest: None,
            })),
            chunks: vec![Arc::new(Chunk {
                seq: 2,
                actions: vec![action(
                    "click",
                    "Click Upgrade",
                    "/billing",
                    1_785_333_602.0,
                )]
                .into_boxed_slice(),
                received_at: 0.0,
                first_ts: 0.0,
                last_ts: 0.0,
            })],
            through_seq: 2,
            claim_token: 1,
        };
        let prompt = build_prompt(DEFAULT_PROMPT, &job);
        assert!(prompt.contains("Visited billing twice."));
        assert!(prompt.contains("click \"Click Upgrade\""), "{prompt}");
        assert!(!prompt.contains("{actions}"));
    }

    #[test]
    fn debug_output_hides_the_key() {
        let config = LlmConfig {
            base_url: "http://x".into(),
            api_key: Some("sk-secret".into()),
            model: "m".into(),
            temperature: 0.2,
            max_tokens: 300,
            timeout: Duration::from_secs(1),
            prompt_template: DEFAULT_PROMPT.into(),
        };
        assert!(!format!("{config:?}").contains("sk-secret"));
    }
}
