//! [`WebhookUrl`]: where a webhook or the on-publish callback is POSTed.

/// An `http://` or `https://` URL with a host (`webhooks`, `on-publish`), checked once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookUrl(String);

impl WebhookUrl {
    /// The URL as written (it may carry a token: log [`url::Url::host_str`] and the path,
    /// not this).
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Checks a webhook or on-publish URL: `http://` or `https://` with a host.
pub fn check_url(url: &str) -> Result<(), String> {
    let u = url::Url::parse(url).map_err(|e| format!("`{url}` is not a URL: {e}"))?;
    if !matches!(u.scheme(), "http" | "https") || u.host_str().is_none() {
        return Err(format!("`{url}` must be an http:// or https:// URL"));
    }
    Ok(())
}

impl std::str::FromStr for WebhookUrl {
    type Err = String;
    fn from_str(url: &str) -> Result<Self, String> {
        check_url(url).map(|()| Self(url.to_owned()))
    }
}

impl std::fmt::Display for WebhookUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

crate::serde_as_string!(WebhookUrl);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn webhook_urls() {
        assert!(check_url("http://127.0.0.1:9/hook").is_ok());
        assert!(check_url("https://example.invalid/h?token=x").is_ok());
        assert!(check_url("ftp://example.invalid/").is_err());
        assert!(check_url("/relative").is_err());
        let u: WebhookUrl = "http://127.0.0.1:9/hook".parse().unwrap();
        assert_eq!(u.as_str(), "http://127.0.0.1:9/hook");
    }
}
