//! Settings of the Autoplay pull source (flattened into `livectx serve`).

use std::time::Duration;

use clap::Args;

use crate::clock::parse_duration;

/// Where Autoplay's hosted API lives.
pub const DEFAULT_API_URL: &str = "https://mcp.autoplay.ai";

/// `AUTOPLAY_API_KEY` and friends: read a user's activity from Autoplay's hosted
/// live-activity API when a lookup asks for them.
#[derive(Debug, Clone, PartialEq, Args)]
pub struct AutoplayApiConfig {
    /// Autoplay's key for its live-activity API (your product's mcp_key), sent as
    /// "Authorization: Bearer <key>". With AUTOPLAY_PRODUCT_ID, enables the pull source.
    #[arg(
        long = "autoplay-api-key",
        env = "AUTOPLAY_API_KEY",
        hide_env_values = true
    )]
    pub api_key: Option<String>,

    /// Your Autoplay product id (prod_…), the product the pull API is asked about.
    #[arg(long = "autoplay-product-id", env = "AUTOPLAY_PRODUCT_ID")]
    pub product_id: Option<String>,

    /// Base URL of Autoplay's hosted API.
    #[arg(long = "autoplay-api-url", env = "AUTOPLAY_API_URL", default_value = DEFAULT_API_URL)]
    pub url: String,

    /// Longest a lookup waits for Autoplay's API before answering from what livectx holds
    /// (keep it well under Dify's 5 s timeout).
    #[arg(long = "autoplay-pull-budget", env = "AUTOPLAY_PULL_BUDGET", default_value = "1500ms", value_parser = parse_duration)]
    pub budget: Duration,

    /// A user fetched this recently is not fetched again (a chat turn's retries reuse it).
    #[arg(long = "autoplay-pull-freshness", env = "AUTOPLAY_PULL_FRESHNESS", default_value = "5s", value_parser = parse_duration)]
    pub freshness: Duration,

    /// A user Autoplay reported no activity for is not asked about again for this long.
    #[arg(long = "autoplay-pull-negative-ttl", env = "AUTOPLAY_PULL_NEGATIVE_TTL", default_value = "15s", value_parser = parse_duration)]
    pub negative_ttl: Duration,

    /// Refresh recently asked-about users in the background this often (off when unset), so
    /// their context is ready before the next question.
    #[arg(long = "autoplay-pull-refresh-interval", env = "AUTOPLAY_PULL_REFRESH_INTERVAL", value_parser = parse_duration)]
    pub refresh_interval: Option<Duration>,

    /// Users refreshed per background round at most (the most recently asked about first).
    #[arg(long = "autoplay-pull-refresh-cap", env = "AUTOPLAY_PULL_REFRESH_CAP", default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..))]
    pub refresh_cap: u32,
}

impl Default for AutoplayApiConfig {
    fn default() -> Self {
        Self {
            api_key: None,
            product_id: None,
            url: DEFAULT_API_URL.to_string(),
            budget: Duration::from_millis(1500),
            freshness: Duration::from_secs(5),
            negative_ttl: Duration::from_secs(15),
            refresh_interval: None,
            refresh_cap: 100,
        }
    }
}

/// The validated settings of an enabled pull source.
#[derive(Debug, Clone, PartialEq)]
pub struct PullSettings {
    /// Without a trailing slash.
    pub base_url: String,
    pub product_id: String,
    pub api_key: String,
    pub budget: Duration,
    pub freshness: Duration,
    pub negative_ttl: Duration,
    pub refresh_interval: Option<Duration>,
    pub refresh_cap: usize,
}

impl AutoplayApiConfig {
    /// `None` when the source is off (neither key nor product id set); an error for a half
    /// or nonsensical configuration.
    pub fn settings(&self) -> Result<Option<PullSettings>, String> {
        let key = self
            .api_key
            .as_deref()
            .map(str::trim)
            .filter(|k| !k.is_empty());
        let product = self
            .product_id
            .as_deref()
            .map(str::trim)
            .filter(|p| !p.is_empty());
        let (api_key, product_id) = match (key, product) {
            (None, None) => return Ok(None),
            (Some(key), Some(product)) => (key.to_string(), product.to_string()),
            (Some(_), None) => {
                return Err("AUTOPLAY_API_KEY is set without AUTOPLAY_PRODUCT_ID: the pull API is asked about one product (your prod_… id)".to_string());
            }
            (None, Some(_)) => {
                return Err(
                    "AUTOPLAY_PRODUCT_ID is set without AUTOPLAY_API_KEY (your product's mcp_key)"
                        .to_string(),
                );
            }
        };
        if product_id.contains(['/', '?', '#']) || product_id.chars().any(char::is_control) {
            return Err(format!(
                "AUTOPLAY_PRODUCT_ID {product_id:?} is not a product id"
            ));
        }
        let base_url = self.url.trim().trim_end_matches('/').to_string();
        match reqwest::Url::parse(&base_url) {
            Ok(url) if matches!(url.scheme(), "http" | "https") && url.host().is_some() => {}
            _ => {
                return Err(format!(
                    "AUTOPLAY_API_URL {:?} is not an http(s) URL like {DEFAULT_API_URL}",
                    self.url
                ));
            }
        }
        if self.budget.is_zero() {
            return Err("AUTOPLAY_PULL_BUDGET must be longer than 0".to_string());
        }
        Ok(Some(PullSettings {
            base_url,
            product_id,
            api_key,
            budget: self.budget,
            freshness: self.freshness,
            negative_ttl: self.negative_ttl,
            refresh_interval: self.refresh_interval.filter(|i| !i.is_zero()),
            refresh_cap: self.refresh_cap as usize,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(key: Option<&str>, product: Option<&str>) -> AutoplayApiConfig {
        AutoplayApiConfig {
            api_key: key.map(str::to_string),
            product_id: product.map(str::to_string),
            ..AutoplayApiConfig::default()
        }
    }

    #[test]
    fn off_unless_both_key_and_product_are_set() {
        assert_eq!(with(None, None).settings(), Ok(None));
        assert_eq!(with(Some("  "), Some("")).settings(), Ok(None));
        assert!(with(Some("k"), None).settings().is_err());
        assert!(with(None, Some("prod_1")).settings().is_err());
        let settings = with(Some(" k \n"), Some("prod_1"))
            .settings()
            .unwrap()
            .unwrap();
        assert_eq!(settings.api_key, "k");
        assert_eq!(settings.base_url, DEFAULT_API_URL);
        assert_eq!(settings.budget, Duration::from_millis(1500));
        assert_eq!(settings.refresh_interval, None);
    }

    #[test]
    fn refuses_nonsense() {
        assert!(with(Some("k"), Some("a/b")).settings().is_err());
        let mut bad_url = with(Some("k"), Some("p"));
        bad_url.url = "mcp.autoplay.ai".into();
        assert!(bad_url.settings().is_err());
        bad_url.url = "ftp://x".into();
        assert!(bad_url.settings().is_err());
        let mut zero = with(Some("k"), Some("p"));
        zero.budget = Duration::ZERO;
        assert!(zero.settings().is_err());
        let mut trailing = with(Some("k"), Some("p"));
        trailing.url = "http://127.0.0.1:9/base/".into();
        assert_eq!(
            trailing.settings().unwrap().unwrap().base_url,
            "http://127.0.0.1:9/base"
        );
    }
}
