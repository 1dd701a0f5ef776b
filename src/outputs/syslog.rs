//! RFC 5424 syslog messages framed by octet counting (RFC 6587), over TCP or TLS
//! (RFC 5425): what SIEM collectors (rsyslog, syslog-ng, Splunk, QRadar, Sentinel's
//! agent) receive. The message body is one rendering of the finding, CEF by default.

use std::io::Write;
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, anyhow};
use toolgate_protocol::config::{FindingFormat, SyslogTransport};
use toolgate_protocol::{Finding, Severity};

use super::deliver::Connect;
use super::render;

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

/// Opens connections to a collector.
pub struct SyslogConnect {
    address: String,
    tls: Option<(
        Arc<rustls::ClientConfig>,
        rustls::pki_types::ServerName<'static>,
    )>,
}

impl SyslogConnect {
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
                match ca_file {
                    Some(path) => {
                        use rustls::pki_types::pem::PemObject;
                        for cert in rustls::pki_types::CertificateDer::pem_file_iter(path)
                            .with_context(|| format!("cannot read CA file {path}"))?
                        {
                            let cert = cert.with_context(|| format!("CA file {path}"))?;
                            roots.add(cert).with_context(|| format!("CA file {path}"))?;
                        }
                    }
                    None => {
                        for cert in rustls_native_certs::load_native_certs().certs {
                            let _ = roots.add(cert);
                        }
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
        Ok(SyslogConnect {
            address: address.to_string(),
            tls,
        })
    }
}

impl Connect for SyslogConnect {
    fn connect(&mut self) -> std::io::Result<Box<dyn Write + Send>> {
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
