//! The certificates a TLS output trusts: the CA file of its config, or the system's.

use anyhow::{Context, Result, bail};
use rustls::pki_types::CertificateDer;

/// Every certificate of `ca_file` (PEM), or the system's roots when `None`.
pub fn trusted_roots(ca_file: Option<&str>) -> Result<Vec<CertificateDer<'static>>> {
    match ca_file {
        Some(path) => {
            use rustls::pki_types::pem::PemObject;
            let certs = CertificateDer::pem_file_iter(path)
                .with_context(|| format!("cannot read CA file {path}"))?
                .collect::<Result<Vec<_>, _>>()
                .with_context(|| format!("CA file {path}"))?;
            if certs.is_empty() {
                bail!("CA file {path} holds no certificate");
            }
            Ok(certs)
        }
        None => Ok(rustls_native_certs::load_native_certs().certs),
    }
}
