//! A self-signed server certificate made by openssl (a peer we did not write), for the
//! wss:// tests: an EC P-256 end-entity certificate for the given IP addresses, valid two
//! days. A missing openssl fails with how to install it.
#![allow(dead_code)]

use std::path::Path;
use std::process::Command;

/// Writes `DIR/NAME.pem` and `DIR/NAME.key` for `ips` and returns their paths.
pub(crate) fn make_cert(dir: &Path, name: &str, ips: &[&str]) -> (String, String) {
    std::fs::create_dir_all(dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
    let (cert, key) = (
        dir.join(format!("{name}.pem")),
        dir.join(format!("{name}.key")),
    );
    let san: Vec<String> = ips.iter().map(|ip| format!("IP:{ip}")).collect();
    let out = Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt"])
        .args(["ec_paramgen_curve:prime256v1", "-nodes", "-days", "2"])
        .args(["-subj", "/CN=candy.test"])
        .args(["-addext", &format!("subjectAltName={}", san.join(","))])
        // An end-entity certificate: rustls (webpki) refuses a CA as the server's.
        .args(["-addext", "basicConstraints=critical,CA:FALSE"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl is needed (apt-get install openssl)");
    assert!(
        out.status.success(),
        "openssl req: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    (
        cert.to_string_lossy().into_owned(),
        key.to_string_lossy().into_owned(),
    )
}
