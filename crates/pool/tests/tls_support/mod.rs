//! Certificates made by the tests themselves (rcgen), and clusters that serve TLS with them.
#![allow(dead_code)]

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

use holdfast_tempdb::{ClusterOptions, TempCluster};
use rcgen::{
    date_time_ymd, BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair,
    KeyUsagePurpose,
};

/// The password of the `scramuser` role.
pub const SCRAM_PASSWORD: &str = "correct horse battery";

/// A certificate authority of the test's own.
pub struct Authority {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl Authority {
    pub fn new(name: &str) -> Authority {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate().expect("key");
        Authority {
            issuer: CertifiedIssuer::self_signed(params, key).expect("self-signed"),
        }
    }

    pub fn pem(&self) -> String {
        self.issuer.pem()
    }

    /// A leaf certificate for `names` (DNS names or IP addresses), common name `cn`, valid
    /// from `from` to `until` (years); PEM certificate and PEM key.
    pub fn issue(&self, cn: &str, names: &[&str], years: (i32, i32)) -> (String, String) {
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut params = CertificateParams::new(names).expect("params");
        params.distinguished_name.push(DnType::CommonName, cn);
        params.not_before = date_time_ymd(years.0, 1, 1);
        params.not_after = date_time_ymd(years.1, 1, 1);
        let key = KeyPair::generate().expect("key");
        let cert = params.signed_by(&key, &self.issuer).expect("sign");
        (cert.pem(), key.serialize_pem())
    }
}

/// Years for a certificate valid now.
pub const VALID: (i32, i32) = (2020, 2090);
/// Years for a certificate that has expired.
pub const EXPIRED: (i32, i32) = (2001, 2002);

/// The test's PKI: a trusted authority, an unknown one, and the client side's files (written
/// into the cluster's directory, so that they go when the cluster goes).
pub struct Pki {
    pub dir: PathBuf,
    pub ca: Authority,
    pub other_ca: Authority,
}

impl Pki {
    /// Authorities, and a cluster serving TLS with a certificate from the trusted one (or,
    /// with `expired`, one that has expired) for localhost and 127.0.0.1, asking clients for
    /// certificates signed by it, with the roles the tests use.
    pub fn with_cluster(expired: bool) -> (Pki, TempCluster) {
        let ca = Authority::new("holdfast test CA");
        let other_ca = Authority::new("someone else's CA");
        let years = if expired { EXPIRED } else { VALID };
        let (cert, key) = ca.issue("localhost", &["localhost", "127.0.0.1"], years);
        let options = ClusterOptions::default()
            .server_file("server.crt", cert, 0o644)
            .server_file("server.key", key, 0o600)
            .server_file("root.crt", ca.pem(), 0o644)
            .setting("ssl", "on")
            .setting("ssl_cert_file", "'server.crt'")
            .setting("ssl_key_file", "'server.key'")
            .setting("ssl_ca_file", "'root.crt'")
            .hba_line("hostssl all certuser 127.0.0.1/32 cert")
            .hba_line("host all certuser 127.0.0.1/32 reject")
            .hba_line("host all scramuser 127.0.0.1/32 scram-sha-256")
            .hba_line("hostssl all plainuser 127.0.0.1/32 reject");
        let cluster = TempCluster::start(options).expect("TLS cluster");
        cluster
            .psql(
                "postgres",
                &format!(
                    "CREATE ROLE certuser LOGIN; CREATE ROLE plainuser LOGIN; CREATE ROLE scramuser LOGIN PASSWORD '{SCRAM_PASSWORD}'"
                ),
            )
            .expect("roles");
        let dir = cluster.socket_dir().join("client-pki");
        std::fs::create_dir(&dir).expect("client dir");
        let pki = Pki { dir, ca, other_ca };
        pki.write("root.crt", &pki.ca.pem(), 0o644);
        pki.write("other-root.crt", &pki.other_ca.pem(), 0o644);
        let (cert, key) = pki.ca.issue("certuser", &[], VALID);
        pki.write("client.crt", &cert, 0o644);
        pki.write("client.key", &key, 0o600);
        let (cert, key) = pki.other_ca.issue("certuser", &[], VALID);
        pki.write("rogue.crt", &cert, 0o644);
        pki.write("rogue.key", &key, 0o600);
        (pki, cluster)
    }

    pub fn write(&self, name: &str, contents: &str, mode: u32) -> PathBuf {
        let path = self.dir.join(name);
        std::fs::write(&path, contents).expect("write");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).expect("chmod");
        path
    }

    pub fn path(&self, name: &str) -> String {
        self.dir.join(name).display().to_string()
    }
}
