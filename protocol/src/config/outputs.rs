//! `[[outputs]]`: where findings (and, for some outputs, every tool call) go besides
//! Kafka: files, syslog collectors, webhooks, Splunk's HTTP Event Collector.

use serde::Deserialize;

use crate::time::Duration;

/// One output for findings.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum OutputConfig {
    /// Findings appended to a file, one record per line.
    File {
        /// How each finding is rendered.
        format: FindingFormat,
        /// The file; created if missing, appended to otherwise.
        path: String,
        /// Also write every tool call: as OCSF API Activity (class 6003) with
        /// `format = "ocsf"`, as the `toolgate.event.v1` JSON with `format = "jsonl"`.
        #[serde(default)]
        tool_calls: bool,
    },
    /// Findings sent as RFC 5424 syslog messages over TCP or TLS, framed by octet
    /// counting (RFC 6587), to a SIEM's collector.
    Syslog {
        /// `host:port` of the collector.
        address: String,
        /// `tcp` or `tls`.
        #[serde(default)]
        transport: SyslogTransport,
        /// The message body: `cef` by default.
        #[serde(default = "default_syslog_format")]
        format: FindingFormat,
        /// For `tls`: PEM file of the CA certificates to trust; the system's roots
        /// when absent.
        #[serde(default)]
        ca_file: Option<String>,
        /// For `tls`: the name the collector's certificate must carry; the host of
        /// `address` when absent.
        #[serde(default)]
        server_name: Option<String>,
        /// Syslog facility number (RFC 5424), 10 (security/authorization) by default.
        #[serde(default = "default_syslog_facility")]
        facility: u8,
        /// APP-NAME of every message.
        #[serde(default = "default_syslog_app")]
        app_name: String,
        /// Findings held in memory while the collector is unreachable; past it they
        /// go to the output's dead-letter file under the engine's data directory.
        #[serde(default = "default_output_buffer")]
        buffer: usize,
    },
    /// Each finding POSTed as one JSON request, signed with HMAC-SHA256 when a secret
    /// is configured (headers `X-Toolgate-Timestamp` and `X-Toolgate-Signature`).
    Webhook {
        /// The `http://` or `https://` URL to POST to.
        url: String,
        /// The request body: `toolgate` (the finding in `format`), `slack` (a Block
        /// Kit message for a Slack incoming webhook) or `teams` (an Adaptive Card for
        /// a Microsoft Teams workflow webhook).
        #[serde(default)]
        body: WebhookBody,
        /// For `body = "toolgate"`: `jsonl` (`toolgate.finding.v1`), `ocsf` or `ecs`.
        #[serde(default = "default_json_format")]
        format: FindingFormat,
        /// The environment variable holding the HMAC-SHA256 key. Unsigned when
        /// absent (Slack and Teams webhooks authenticate by their secret URL).
        #[serde(default)]
        secret_env: Option<String>,
        /// For `https`: PEM file of the CA certificates to trust; the system's roots
        /// when absent.
        #[serde(default)]
        ca_file: Option<String>,
        /// How long one request may take before it is retried.
        #[serde(default = "default_http_timeout")]
        timeout: Duration,
        /// Findings held in memory while the endpoint is unreachable; past it they go
        /// to the output's dead-letter file under the engine's data directory.
        #[serde(default = "default_output_buffer")]
        buffer: usize,
    },
    /// Findings (and optionally every tool call) sent in batches to a Splunk HTTP
    /// Event Collector.
    SplunkHec {
        /// The collector, e.g. `https://splunk.example.com:8088`; the path
        /// `/services/collector/event` is used when the URL has none.
        url: String,
        /// The environment variable holding the HEC token.
        token_env: String,
        /// The event body: `jsonl` (`toolgate.finding.v1`), `ocsf` or `ecs`.
        #[serde(default = "default_json_format")]
        format: FindingFormat,
        /// Also send every tool call (OCSF API Activity with `format = "ocsf"`, the
        /// `toolgate.event.v1` JSON with `format = "jsonl"`).
        #[serde(default)]
        tool_calls: bool,
        /// The index events go to; the token's default index when absent.
        #[serde(default)]
        index: Option<String>,
        /// The `source` of every event.
        #[serde(default = "default_hec_source")]
        source: String,
        /// The `sourcetype` of findings.
        #[serde(default = "default_hec_sourcetype")]
        sourcetype: String,
        /// The `sourcetype` of tool calls.
        #[serde(default = "default_hec_tool_call_sourcetype")]
        tool_call_sourcetype: String,
        /// At most this many events per request.
        #[serde(default = "default_hec_batch")]
        batch: usize,
        /// For `https`: PEM file of the CA certificates to trust; the system's roots
        /// when absent.
        #[serde(default)]
        ca_file: Option<String>,
        /// How long one request may take before it is retried.
        #[serde(default = "default_http_timeout")]
        timeout: Duration,
        /// Events held in memory while the collector is unreachable; past it they go
        /// to the output's dead-letter file under the engine's data directory.
        #[serde(default = "default_output_buffer")]
        buffer: usize,
    },
}

/// How syslog reaches the collector.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum SyslogTransport {
    /// Plain TCP.
    #[default]
    Tcp,
    /// TLS over TCP (RFC 5425).
    Tls,
}

/// What a webhook request carries.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum WebhookBody {
    /// The finding, rendered in the output's `format`.
    #[default]
    Toolgate,
    /// A Slack message (`text` and Block Kit `blocks`).
    Slack,
    /// A Teams message with one Adaptive Card attachment.
    Teams,
}

/// A rendering of findings.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum FindingFormat {
    /// `toolgate.finding.v1` JSON.
    Jsonl,
    /// OCSF Detection Finding (class 2004) JSON.
    Ocsf,
    /// Elastic Common Schema JSON.
    Ecs,
    /// ArcSight CEF lines.
    Cef,
}

fn default_syslog_format() -> FindingFormat {
    FindingFormat::Cef
}
fn default_syslog_facility() -> u8 {
    10
}
fn default_syslog_app() -> String {
    "toolgate".into()
}
fn default_output_buffer() -> usize {
    10_000
}
fn default_json_format() -> FindingFormat {
    FindingFormat::Jsonl
}
fn default_http_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_hec_source() -> String {
    "toolgate".into()
}
fn default_hec_sourcetype() -> String {
    "toolgate:finding".into()
}
fn default_hec_tool_call_sourcetype() -> String {
    "toolgate:tool_call".into()
}
fn default_hec_batch() -> usize {
    100
}

/// Checks what parses but makes no sense; the error names the key and the problem.
pub(super) fn validate(outputs: &[OutputConfig]) -> Result<(), (String, String)> {
    for (i, output) in outputs.iter().enumerate() {
        let key = |field: &str| format!("outputs[{i}].{field}");
        let at_least_one = |field: &str, n: usize| {
            if n == 0 {
                Err((key(field), "must be at least 1".to_string()))
            } else {
                Ok(())
            }
        };
        let json_format = |format: FindingFormat| {
            if format == FindingFormat::Cef {
                Err((
                    key("format"),
                    "cef is not JSON; expected jsonl, ocsf or ecs".to_string(),
                ))
            } else {
                Ok(())
            }
        };
        let tool_call_format = |tool_calls: bool, format: FindingFormat| {
            if tool_calls && !matches!(format, FindingFormat::Jsonl | FindingFormat::Ocsf) {
                Err((
                    key("tool_calls"),
                    "tool calls are written as jsonl or ocsf (API Activity); \
                     set format to one of those"
                        .to_string(),
                ))
            } else {
                Ok(())
            }
        };
        let positive = |field: &str, d: Duration| {
            if d.as_nanos() <= 0 {
                Err((key(field), "must be longer than zero".to_string()))
            } else {
                Ok(())
            }
        };
        match output {
            OutputConfig::File {
                path,
                format,
                tool_calls,
            } => {
                if path.is_empty() {
                    return Err((key("path"), "is empty".into()));
                }
                tool_call_format(*tool_calls, *format)?;
            }
            OutputConfig::Syslog {
                address,
                facility,
                buffer,
                ..
            } => {
                if address
                    .rsplit_once(':')
                    .is_none_or(|(h, p)| h.is_empty() || p.parse::<u16>().is_err())
                {
                    return Err((key("address"), format!("{address:?} is not host:port")));
                }
                if *facility > 23 {
                    return Err((
                        key("facility"),
                        format!("{facility} is not a syslog facility (0 to 23)"),
                    ));
                }
                at_least_one("buffer", *buffer)?;
            }
            OutputConfig::Webhook {
                url,
                body,
                format,
                secret_env,
                timeout,
                buffer,
                ..
            } => {
                http_url(url).map_err(|m| (key("url"), m))?;
                json_format(*format)?;
                if *body != WebhookBody::Toolgate && *format != FindingFormat::Jsonl {
                    return Err((
                        key("format"),
                        "only applies to body = \"toolgate\"; Slack and Teams bodies are \
                         messages for people"
                            .into(),
                    ));
                }
                if secret_env.as_deref() == Some("") {
                    return Err((key("secret_env"), "is empty".into()));
                }
                positive("timeout", *timeout)?;
                at_least_one("buffer", *buffer)?;
            }
            OutputConfig::SplunkHec {
                url,
                token_env,
                format,
                tool_calls,
                batch,
                timeout,
                buffer,
                ..
            } => {
                http_url(url).map_err(|m| (key("url"), m))?;
                if token_env.is_empty() {
                    return Err((key("token_env"), "is empty".into()));
                }
                json_format(*format)?;
                tool_call_format(*tool_calls, *format)?;
                at_least_one("batch", *batch)?;
                positive("timeout", *timeout)?;
                at_least_one("buffer", *buffer)?;
            }
        }
    }
    Ok(())
}

/// An absolute `http://` or `https://` URL with a host.
fn http_url(url: &str) -> Result<(), String> {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
        .ok_or_else(|| format!("{url:?} is not an http:// or https:// URL"))?;
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    if authority.is_empty() || authority.starts_with(':') {
        return Err(format!("{url:?} has no host"));
    }
    if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!("{url:?} contains white space"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::Config;

    fn error(toml: &str) -> String {
        Config::from_toml(toml, "<inline>")
            .map(|_| ())
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn http_outputs_name_the_key_that_is_wrong() {
        let cases = [
            (
                "[[outputs]]\ntype = \"webhook\"\nurl = \"ftp://x\"",
                "`outputs[0].url`: \"ftp://x\" is not an http:// or https:// URL",
            ),
            (
                "[[outputs]]\ntype = \"webhook\"\nurl = \"https:///hook\"",
                "has no host",
            ),
            (
                "[[outputs]]\ntype = \"webhook\"\nurl = \"https://h/\"\nformat = \"cef\"",
                "`outputs[0].format`: cef is not JSON",
            ),
            (
                "[[outputs]]\ntype = \"webhook\"\nurl = \"https://h/\"\nbody = \"slack\"\nformat = \"ocsf\"",
                "only applies to body = \"toolgate\"",
            ),
            (
                "[[outputs]]\ntype = \"webhook\"\nurl = \"https://h/\"\ntimeout = \"0s\"",
                "`outputs[0].timeout`: must be longer than zero",
            ),
            (
                "[[outputs]]\ntype = \"splunk_hec\"\nurl = \"https://h:8088\"\ntoken_env = \"\"",
                "`outputs[0].token_env`: is empty",
            ),
            (
                "[[outputs]]\ntype = \"splunk_hec\"\nurl = \"https://h:8088\"\ntoken_env = \"T\"\nbatch = 0",
                "`outputs[0].batch`: must be at least 1",
            ),
            (
                "[[outputs]]\ntype = \"splunk_hec\"\nurl = \"https://h:8088\"\ntoken_env = \"T\"\nformat = \"ecs\"\ntool_calls = true",
                "`outputs[0].tool_calls`: tool calls are written as jsonl or ocsf",
            ),
            (
                "[[outputs]]\ntype = \"webhook\"\nurl = \"https://h/\"\ntoken = \"x\"",
                "unknown field `token`",
            ),
        ];
        for (toml, want) in cases {
            let got = error(toml);
            assert!(got.contains(want), "{toml}\n→ {got}");
        }
        let ok = "[[outputs]]\ntype = \"splunk_hec\"\nurl = \"http://127.0.0.1:8088\"\n\
                  token_env = \"HEC\"\nformat = \"ocsf\"\ntool_calls = true\n\
                  [[outputs]]\ntype = \"webhook\"\nurl = \"https://hooks.slack.com/services/T/B/X\"\n\
                  body = \"slack\"";
        Config::from_toml(ok, "<inline>").expect("valid");
    }
}
