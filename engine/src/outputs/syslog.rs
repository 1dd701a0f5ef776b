//! RFC 5424 syslog messages framed by octet counting (RFC 6587), over TCP or TLS
//! (RFC 5425): what SIEM collectors (rsyslog, syslog-ng, Splunk, QRadar, Sentinel's
//! agent) receive. The message body is one rendering of the finding, CEF by default.

use std::io::Write;
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use toolgate_protocol::config::{FindingFormat, OutputConfig, SyslogTransport};
use toolgate_protocol::{Finding, Severity};

use super::deliver::{Failure, Network, Records, Transport};
use super::{OpenContext, Output, render};

/// Opens a `syslog` entry.
pub fn open(config: &OutputConfig, context: &OpenContext<'_>) -> Result<Box<dyn Output>> {
    let OutputConfig::Syslog {
        address,
        transport,
        format,
        ca_file,
        server_name,
        facility,
        app_name,
        buffer,
    } = config
    else {
        bail!("not a syslog output");
    };
    let client = SyslogClient::new(
        address,
        *transport,
        ca_file.as_deref(),
        server_name.as_deref(),
    )
    .with_context(|| context.key.clone())?;
    Network::start(
        format!("{} (syslog {address})", context.key),
        Box::new(client),
        *buffer,
        context.dead_letter_file("syslog", address),
        SyslogRecords {
            header: Header {
                facility: *facility,
                hostname: hostname(),
                app_name: app_name.clone(),
            },
            format: *format,
        },
    )
}

/// Findings as framed syslog messages.
struct SyslogRecords {
    header: Header,
    format: FindingFormat,
}

impl Records for SyslogRecords {
    fn finding(&self, finding: &Finding) -> Vec<u8> {
        frame(&self.header, finding, self.format)
    }
}
use super::roots::trusted_roots;

/// Syslog severity (RFC 5424 table 2) of a finding's severity.
pub fn severity(s: Severity) -> u8 {
    match s {
        Severity::Critical => 2,
        Severity::High => 3,
        Severity::Medium => 4,
        Severity::Low => 5,
        Severity::Info => 6,
    }
}

/// How each message is headed.
#[derive(Debug, Clone)]
pub struct Header {
    /// Facility number, 0 to 23.
    pub facility: u8,
    /// HOSTNAME: this machine's name.
    pub hostname: String,
    /// APP-NAME.
    pub app_name: String,
}

/// PRINTUSASCII without spaces, at most `max` long; `-` (the nil value) when empty.
fn field(s: &str, max: usize) -> String {
    let clean: String = s
        .chars()
        .filter(|c| c.is_ascii_graphic())
        .take(max)
        .collect();
    if clean.is_empty() { "-".into() } else { clean }
}

/// One framed message: `LEN <PRI>1 TIMESTAMP HOSTNAME APP-NAME - MSGID [SD] MSG`.
pub fn frame(header: &Header, finding: &Finding, format: FindingFormat) -> Vec<u8> {
    let pri = u16::from(header.facility) * 8 + u16::from(severity(finding.severity));
    let message = format!(
        "<{pri}>1 {time} {host} {app} - finding [toolgate@32473 finding_id=\"{id}\" detector=\"{detector}\"] {body}",
        time = finding.time,
        host = field(&header.hostname, 255),
        app = field(&header.app_name, 48),
        id = finding.finding_id,
        detector = finding.detector.as_str(),
        body = render(finding, format),
    );
    let mut out = format!("{} ", message.len()).into_bytes();
    out.extend_from_slice(message.as_bytes());
    out
}

/// This machine's host name, for HOSTNAME.
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .or_else(|_| std::env::var("HOSTNAME"))
        .unwrap_or_default()
}

/// Sends framed messages to a collector over one connection, reconnecting after an
/// error.
pub struct SyslogClient {
    address: String,
    tls: Option<(
        Arc<rustls::ClientConfig>,
        rustls::pki_types::ServerName<'static>,
    )>,
    connection: Option<Box<dyn Write + Send>>,
}

impl SyslogClient {
    /// For `address` over `transport`; TLS trusts `ca_file` (PEM) or the system roots.
    pub fn new(
        address: &str,
        transport: SyslogTransport,
        ca_file: Option<&str>,
        server_name: Option<&str>,
    ) -> Result<Self> {
        let tls = match transport {
            SyslogTransport::Tcp => None,
            SyslogTransport::Tls => {
                let mut roots = rustls::RootCertStore::empty();
                let explicit = ca_file.is_some();
                for cert in trusted_roots(ca_file)? {
                    // A system store may hold certificates rustls cannot use; a CA
                    // file the user chose may not.
                    let added = roots.add(cert);
                    if explicit {
                        added.context("CA file")?;
                    }
                }
                let config = rustls::ClientConfig::builder_with_provider(Arc::new(
                    rustls::crypto::ring::default_provider(),
                ))
                .with_safe_default_protocol_versions()
                .context("TLS versions")?
                .with_root_certificates(roots)
                .with_no_client_auth();
                let host = server_name
                    .map(str::to_string)
                    .or_else(|| {
                        address
                            .rsplit_once(':')
                            .map(|(h, _)| h.trim_matches(['[', ']']).to_string())
                    })
                    .unwrap_or_default();
                let name = rustls::pki_types::ServerName::try_from(host.clone())
                    .map_err(|e| anyhow!("{host:?} is not a TLS server name: {e}"))?;
                Some((Arc::new(config), name))
            }
        };
        Ok(SyslogClient {
            address: address.to_string(),
            tls,
            connection: None,
        })
    }

    fn connect(&self) -> std::io::Result<Box<dyn Write + Send>> {
        let addr = self.address.to_socket_addrs()?.next().ok_or_else(|| {
            std::io::Error::other(format!("{} resolves to nothing", self.address))
        })?;
        let tcp = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
        tcp.set_write_timeout(Some(Duration::from_secs(10)))?;
        tcp.set_nodelay(true)?;
        match &self.tls {
            None => Ok(Box::new(tcp)),
            Some((config, name)) => {
                let conn = rustls::ClientConnection::new(Arc::clone(config), name.clone())
                    .map_err(std::io::Error::other)?;
                let mut stream = rustls::StreamOwned::new(conn, tcp);
                // Handshake now, so a bad certificate is an error here, not later.
                while stream.conn.is_handshaking() {
                    stream.conn.complete_io(&mut stream.sock)?;
                }
                Ok(Box::new(stream))
            }
        }
    }

    fn write_all(&mut self, records: &[Vec<u8>]) -> std::io::Result<()> {
        let stream = match &mut self.connection {
            Some(c) => c,
            None => self.connection.insert(self.connect()?),
        };
        for r in records {
            stream.write_all(r)?;
        }
        stream.flush()
    }
}

impl Transport for SyslogClient {
    fn send(&mut self, records: &[Vec<u8>]) -> Result<usize, Failure> {
        self.write_all(records).map_err(|e| {
            self.connection = None;
            Failure::Retry(e.to_string())
        })?;
        Ok(records.len())
    }

    fn describe(&self) -> String {
        format!(
            "syslog {}://{}",
            if self.tls.is_some() { "tls" } else { "tcp" },
            self.address
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outputs::tests::sample;
    use toolgate_protocol::FindingAction;

    #[test]
    fn a_message_is_octet_counted_rfc_5424_with_the_rendering_as_body() {
        let header = Header {
            facility: 10,
            hostname: "gw 1".into(),
            app_name: "toolgate".into(),
        };
        let f = sample(FindingAction::Block);
        let framed = String::from_utf8(frame(&header, &f, FindingFormat::Cef)).unwrap();
        let (len, message) = framed.split_once(' ').unwrap();
        assert_eq!(len.parse::<usize>().unwrap(), message.len());
        assert!(
            message.starts_with("<83>1 2025-03-01T10:00:05.5Z gw1 toolgate - finding [toolgate@32473 finding_id=\"0123456789abcdef0123456789abcdef\" detector=\"provenance\"] CEF:0|"),
            "{message}"
        );
        assert!(!message.contains('\n'));
    }
}
