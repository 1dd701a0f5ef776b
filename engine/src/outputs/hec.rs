//! Splunk's HTTP Event Collector: events in HEC's JSON envelope (`time`, `host`,
//! `source`, `sourcetype`, `index`, `event`), several per request, concatenated, with
//! `Authorization: Splunk <token>`. A refused batch (bad data, a rejected token) goes to
//! the dead-letter file whole; a busy collector (503) is retried.

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};
use toolgate_protocol::config::{FindingFormat, OutputConfig};
use toolgate_protocol::{Event, Finding, Timestamp};

use super::deliver::{Failure, Network, Records, Transport};
use super::http::HttpPoster;
use super::{OpenContext, Output, render_json, syslog, tool_call_json};

/// Opens a `splunk_hec` entry.
pub fn open(config: &OutputConfig, context: &OpenContext<'_>) -> Result<Box<dyn Output>> {
    let OutputConfig::SplunkHec {
        url,
        token_env,
        format,
        tool_calls,
        index,
        source,
        sourcetype,
        tool_call_sourcetype,
        batch,
        ca_file,
        timeout,
        buffer,
    } = config
    else {
        bail!("not a Splunk HEC output");
    };
    let endpoint = endpoint(url);
    let poster = HttpPoster::new(&endpoint, ca_file.as_deref(), timeout.to_std())
        .with_context(|| context.key.clone())?;
    let client = HecClient::new(poster, token_env, *batch).with_context(|| context.key.clone())?;
    Network::start(
        format!("{} (Splunk HEC {endpoint})", context.key),
        Box::new(client),
        *buffer,
        context.dead_letter_file("hec", url),
        HecRecords {
            envelope: Envelope {
                host: syslog::hostname(),
                source: source.clone(),
                sourcetype: sourcetype.clone(),
                tool_call_sourcetype: tool_call_sourcetype.clone(),
                index: index.clone(),
            },
            format: *format,
            tool_calls: *tool_calls,
        },
    )
}

/// Findings, and tool calls if asked, as HEC events.
struct HecRecords {
    envelope: Envelope,
    format: FindingFormat,
    tool_calls: bool,
}

impl Records for HecRecords {
    fn finding(&self, finding: &Finding) -> Vec<u8> {
        self.envelope
            .wrap(finding.time, render_json(finding, self.format), false)
    }

    fn wants_tool_calls(&self) -> bool {
        self.tool_calls
    }

    fn tool_call(&self, event: &Event) -> Option<Vec<u8>> {
        let value = tool_call_json(event, self.format)?;
        Some(self.envelope.wrap(event.time, value, true))
    }
}

/// The collector's endpoint for JSON events.
pub const EVENT_PATH: &str = "/services/collector/event";

/// `url` with [`EVENT_PATH`] when it has no path of its own.
pub fn endpoint(url: &str) -> String {
    let after_scheme = url.split_once("://").map_or(url, |(_, rest)| rest);
    if after_scheme.trim_end_matches('/').contains('/') {
        url.to_string()
    } else {
        format!("{}{EVENT_PATH}", url.trim_end_matches('/'))
    }
}

/// The envelope's fixed fields.
#[derive(Debug, Clone)]
pub struct Envelope {
    /// This machine's name.
    pub host: String,
    /// `source`.
    pub source: String,
    /// `sourcetype` of findings.
    pub sourcetype: String,
    /// `sourcetype` of tool calls.
    pub tool_call_sourcetype: String,
    /// `index`, or the token's default.
    pub index: Option<String>,
}

impl Envelope {
    /// One HEC event carrying `event`, which happened at `time`.
    pub fn wrap(&self, time: Timestamp, event: Value, tool_call: bool) -> Vec<u8> {
        // HEC takes epoch seconds with a fraction; milliseconds are what it indexes.
        let seconds = time.unix_millis() as f64 / 1000.0;
        let sourcetype = if tool_call {
            &self.tool_call_sourcetype
        } else {
            &self.sourcetype
        };
        let mut out = json!({
            "time": seconds,
            "host": self.host,
            "source": self.source,
            "sourcetype": sourcetype,
            "event": event,
        });
        if let Some(index) = &self.index {
            out["index"] = json!(index);
        }
        out.to_string().into_bytes()
    }
}

/// Sends up to `batch` events per request.
pub struct HecClient {
    poster: HttpPoster,
    authorization: String,
    batch: usize,
}

impl HecClient {
    /// Posts through `poster`; `token_env` names the variable holding the token.
    pub fn new(poster: HttpPoster, token_env: &str, batch: usize) -> Result<Self> {
        let token = match std::env::var(token_env) {
            Ok(v) if !v.trim().is_empty() => v.trim().to_string(),
            Ok(_) => bail!("token_env: the variable {token_env} is empty"),
            Err(_) => bail!("token_env: the variable {token_env} is not set"),
        };
        Ok(HecClient {
            poster,
            authorization: format!("Splunk {token}"),
            batch: batch.max(1),
        })
    }
}

impl Transport for HecClient {
    fn send(&mut self, records: &[Vec<u8>]) -> Result<usize, Failure> {
        let take = records.len().min(self.batch);
        let mut body = Vec::with_capacity(records[..take].iter().map(|r| r.len() + 1).sum());
        for r in &records[..take] {
            body.extend_from_slice(r);
            body.push(b'\n');
        }
        self.poster.post(
            &body,
            &[("Authorization", self.authorization.clone())],
            take,
        )?;
        Ok(take)
    }

    fn describe(&self) -> String {
        format!("Splunk HEC {}", self.poster.url())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_event_path_is_added_only_when_the_url_has_none() {
        assert_eq!(
            endpoint("https://splunk:8088"),
            "https://splunk:8088/services/collector/event"
        );
        assert_eq!(
            endpoint("https://splunk:8088/"),
            "https://splunk:8088/services/collector/event"
        );
        assert_eq!(
            endpoint("https://splunk:8088/services/collector"),
            "https://splunk:8088/services/collector"
        );
    }

    #[test]
    fn the_envelope_carries_epoch_seconds_with_milliseconds() {
        let e = Envelope {
            host: "gw".into(),
            source: "toolgate".into(),
            sourcetype: "toolgate:finding".into(),
            tool_call_sourcetype: "toolgate:tool_call".into(),
            index: Some("security".into()),
        };
        let t = Timestamp::parse("2025-03-01T10:00:05.5Z").unwrap();
        let v: Value = serde_json::from_slice(&e.wrap(t, json!({"a": 1}), true)).unwrap();
        assert_eq!(v["time"].as_f64(), Some(1_740_823_205.5));
        assert_eq!(v["sourcetype"], "toolgate:tool_call");
        assert_eq!(v["index"], "security");
        assert_eq!(v["event"]["a"], 1);
    }
}
