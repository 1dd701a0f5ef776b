//! POSTing records to an HTTP collector (webhooks, Splunk HEC): one client per output
//! with its trusted roots and timeout, and what a response means for delivery. A
//! status that may pass (408, 425, 429, 5xx) or no answer at all is retried; any
//! other non-2xx answer refuses the records for good, and they are dead-lettered
//! with the collector's answer instead of being retried for ever.

use std::time::Duration;

use anyhow::{Context, Result};
use ureq::tls::{Certificate, RootCerts, TlsConfig};

use super::deliver::Failure;
use super::roots::trusted_roots;

/// How much of a refusing answer is kept in the dead-letter file and the log.
const ANSWER_EXCERPT: usize = 300;

/// A client for one URL.
pub struct HttpPoster {
    agent: ureq::Agent,
    url: String,
}

impl HttpPoster {
    /// Posts to `url`, trusting `ca_file` (PEM) or the system's roots for `https`;
    /// one request may take `timeout`.
    pub fn new(url: &str, ca_file: Option<&str>, timeout: Duration) -> Result<Self> {
        let roots: Vec<Certificate<'static>> = trusted_roots(ca_file)?
            .iter()
            .map(|der| Certificate::from_der(der.as_ref()).to_owned())
            .collect();
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            // A redirect is an answer the operator must look at, not follow blindly
            // with a signed body or a token.
            .max_redirects(0)
            .timeout_global(Some(timeout))
            .user_agent(format!("toolgate/{}", super::PRODUCT_VERSION))
            .tls_config(
                TlsConfig::builder()
                    .root_certs(RootCerts::new_with_certs(&roots))
                    .build(),
            )
            .build()
            .into();
        url.parse::<ureq::http::Uri>()
            .with_context(|| format!("{url:?} is not a URL"))?;
        Ok(HttpPoster {
            agent,
            url: url.to_string(),
        })
    }

    /// The URL, for messages.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// POSTs a JSON `body` with `headers`; a failure concerns the `records` records
    /// the body carries.
    pub fn post(
        &self,
        body: &[u8],
        headers: &[(&str, String)],
        records: usize,
    ) -> Result<(), Failure> {
        let mut request = self
            .agent
            .post(&self.url)
            .header("Content-Type", "application/json");
        for (name, value) in headers {
            request = request.header(*name, value);
        }
        let mut response = request
            .send(body)
            .map_err(|e| Failure::Retry(e.to_string()))?;
        let status = response.status().as_u16();
        // Reading the answer lets the connection be reused, and explains a refusal.
        let answer = response
            .body_mut()
            .with_config()
            .limit(64 * 1024)
            .read_to_string()
            .unwrap_or_default();
        if (200..300).contains(&status) {
            return Ok(());
        }
        let excerpt: String = answer.trim().chars().take(ANSWER_EXCERPT).collect();
        let reason = format!("HTTP {status}: {excerpt}");
        match status {
            408 | 425 | 429 | 500..=599 => Err(Failure::Retry(reason)),
            _ => Err(Failure::Refused {
                count: records,
                reason,
            }),
        }
    }
}

/// Seconds since the Unix epoch, as signature timestamps carry them.
pub fn unix_seconds() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}
