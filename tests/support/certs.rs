//! A certificate authority of a test's own and a server certificate for `localhost` and
//! 127.0.0.1 signed by it, made with the `openssl` command (on the base image) in a
//! folder of the test's. Shared by the test crates that stand up TLS servers
//! (`#[path]`-included).

use std::path::{Path, PathBuf};
use std::process::Command;

/// PEM files: the CA's certificate, the server's certificate and its private key.
pub struct LocalhostCert {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Makes a CA and a `localhost` certificate (P-256, two days) in `dir`.
pub fn localhost_cert(dir: &Path) -> LocalhostCert {
    let (ca_cert, ca_key) = (dir.join("ca.pem"), dir.join("ca-key.pem"));
    let (cert, key, csr) = (
        dir.join("cert.pem"),
        dir.join("key.pem"),
        dir.join("cert.csr"),
    );
    let ext = dir.join("ext.cnf");
    std::fs::write(
        &ext,
        "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n",
    )
    .expect("ext");
    let d = |p: &Path| p.display().to_string();
    let ec = "-newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes";
    let steps = [
        format!(
            "req -x509 -days 2 -subj /CN=toolgate-test-CA {ec} -keyout {} -out {}",
            d(&ca_key),
            d(&ca_cert)
        ),
        format!(
            "req -new -subj /CN=localhost {ec} -keyout {} -out {}",
            d(&key),
            d(&csr)
        ),
        format!(
            "x509 -req -days 2 -in {} -CA {} -CAkey {} -CAcreateserial -extfile {} -out {}",
            d(&csr),
            d(&ca_cert),
            d(&ca_key),
            d(&ext),
            d(&cert)
        ),
    ];
    for args in steps {
        let made = Command::new("openssl")
            .args(args.split_whitespace())
            .output()
            .expect("openssl");
        assert!(
            made.status.success(),
            "{}",
            String::from_utf8_lossy(&made.stderr)
        );
    }
    LocalhostCert {
        ca: ca_cert,
        cert,
        key,
    }
}
