//! TLS settings with libpq's names and meanings (`sslmode`, `sslrootcert`, `sslcert`,
//! `sslkey`, `sslsni`), checked and turned into a rustls client configuration once, when the
//! configuration is built: a missing or unreadable file fails at start-up, naming the setting.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::{Arc, Mutex};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ClientConfig, RootCertStore};

use super::verify::{AnyServerCert, ChainOnly};
use crate::connect::passfile::{file_stamp, Stamp};
use crate::error::ConfigError;

/// `sslmode`: whether TLS is used and what is verified (libpq's meanings).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SslMode {
    /// Never TLS.
    Disable,
    /// TLS when the server offers it, plaintext otherwise; the certificate is not checked
    /// (the default, as in libpq).
    #[default]
    Prefer,
    /// TLS or no connection; the certificate is not checked, unless `sslrootcert` is given
    /// (then as `VerifyCa`, as libpq does).
    Require,
    /// TLS, with a certificate signed by a trusted authority (`sslrootcert`).
    VerifyCa,
    /// Like `VerifyCa`, and the certificate must name the host connected to.
    VerifyFull,
}

impl SslMode {
    /// The libpq spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }

    /// True when a server without TLS must be refused.
    pub fn requires_tls(self) -> bool {
        matches!(self, SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull)
    }
}

impl FromStr for SslMode {
    type Err = String;

    fn from_str(s: &str) -> Result<SslMode, String> {
        Ok(match s {
            "disable" => SslMode::Disable,
            "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            _ => return Err("one of disable, prefer, require, verify-ca, verify-full".into()),
        })
    }
}

/// Where trusted root certificates come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RootCerts {
    /// PEM certificates in a file (`sslrootcert=/path`).
    File(PathBuf),
    /// The platform's trusted roots (`sslrootcert=system`).
    System,
}

/// What was asked for, before the files are read. Each field is `None` when not set, so that
/// the URL's parameters can take precedence over environment variables.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsOptions {
    /// `sslmode`.
    pub mode: Option<SslMode>,
    /// `sslrootcert`.
    pub root_cert: Option<RootCerts>,
    /// `sslcert`: the client certificate (PEM).
    pub client_cert: Option<PathBuf>,
    /// `sslkey`: the client certificate's private key (PEM, unencrypted).
    pub client_key: Option<PathBuf>,
    /// `sslsni`: send the host name in the handshake (default true).
    pub sni: Option<bool>,
}

impl TlsOptions {
    /// Fills what `self` leaves unset from `other`.
    pub fn or(self, other: TlsOptions) -> TlsOptions {
        TlsOptions {
            mode: self.mode.or(other.mode),
            root_cert: self.root_cert.or(other.root_cert),
            client_cert: self.client_cert.or(other.client_cert),
            client_key: self.client_key.or(other.client_key),
            sni: self.sni.or(other.sni),
        }
    }

    /// True when the parameter named `key` (libpq's name) is set.
    pub(crate) fn is_set(&self, key: &str) -> bool {
        match key {
            "sslmode" => self.mode.is_some(),
            "sslrootcert" => self.root_cert.is_some(),
            "sslcert" => self.client_cert.is_some(),
            "sslkey" => self.client_key.is_some(),
            "sslsni" => self.sni.is_some(),
            _ => false,
        }
    }

    /// Sets one parameter by its libpq name; `setting` names where it came from in errors.
    pub(crate) fn set(&mut self, setting: &str, key: &str, value: &str) -> Result<(), ConfigError> {
        let invalid = |accepted: &str| ConfigError::InvalidValue {
            setting: setting.to_string(),
            value: value.to_string(),
            accepted: accepted.to_string(),
        };
        match key {
            "sslmode" => self.mode = Some(value.parse().map_err(|a: String| invalid(&a))?),
            "sslrootcert" if value == "system" => self.root_cert = Some(RootCerts::System),
            "sslrootcert" => self.root_cert = Some(RootCerts::File(non_empty_path(value, invalid)?)),
            "sslcert" => self.client_cert = Some(non_empty_path(value, invalid)?),
            "sslkey" => self.client_key = Some(non_empty_path(value, invalid)?),
            "sslsni" => {
                self.sni = Some(match value {
                    "1" => true,
                    "0" => false,
                    _ => return Err(invalid("1 or 0")),
                })
            }
            "sslnegotiation" if value == "postgres" => {}
            "sslnegotiation" => return Err(invalid("postgres (direct TLS negotiation is not supported)")),
            _ => return Err(invalid("a TLS parameter")),
        }
        Ok(())
    }

    /// Checks the combination, reads the files, and builds the rustls configuration.
    pub fn build(&self) -> Result<Tls, ConfigError> {
        self.build_named(&|key: &str| key.to_string())
    }

    /// Like [`build`](Self::build); `name` says what errors call each parameter (its
    /// environment variable, or the URL it came from).
    pub(crate) fn build_named(&self, name: &dyn Fn(&str) -> String) -> Result<Tls, ConfigError> {
        let invalid = |key: &str, value: String, accepted: String| ConfigError::InvalidValue {
            setting: name(key),
            value,
            accepted,
        };
        // Taken before the files are read: a change made while reading is seen next time.
        let stamps = self.stamps();
        let root_cert = self.root_cert.clone().or_else(default_root_cert);
        let mode = match (self.mode, &root_cert) {
            // libpq: with sslrootcert=system the default is verify-full, and weaker modes
            // that still use TLS are refused (they would not use the roots).
            (None, Some(RootCerts::System)) => SslMode::VerifyFull,
            (Some(m @ (SslMode::Prefer | SslMode::Require | SslMode::VerifyCa)), Some(RootCerts::System)) => {
                return Err(invalid(
                    "sslmode",
                    m.as_str().into(),
                    "verify-full (or disable) with sslrootcert=system".into(),
                ));
            }
            // libpq: require with a root certificate file (given, or ~/.postgresql/root.crt)
            // verifies the chain.
            (Some(SslMode::Require), Some(_)) => SslMode::VerifyCa,
            (mode, _) => mode.unwrap_or_default(),
        };
        if mode == SslMode::Disable {
            return Ok(Tls {
                mode,
                sni: false,
                client: None,
                options: self.clone(),
                live: Live::default(),
            });
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ClientConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()
            .map_err(|e| {
                invalid(
                    "sslmode",
                    mode.as_str().into(),
                    format!("a TLS setup rustls accepts ({e})"),
                )
            })?;
        let builder = match mode {
            SslMode::VerifyCa | SslMode::VerifyFull => {
                let roots = match &root_cert {
                    Some(roots) => load_roots(roots).map_err(|e| invalid("sslrootcert", describe(roots), e))?,
                    None => {
                        return Err(invalid(
                            "sslrootcert",
                            String::new(),
                            format!(
                                "a file of trusted root certificates, or `system` for the platform's, with sslmode={} (no ~/.postgresql/root.crt either)",
                                mode.as_str()
                            ),
                        ))
                    }
                };
                let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(
                    Arc::new(roots),
                    Arc::clone(&provider),
                )
                .build()
                .map_err(|e| {
                    invalid(
                        "sslrootcert",
                        root_cert.as_ref().map(describe).unwrap_or_default(),
                        format!("usable root certificates ({e})"),
                    )
                })?;
                if mode == SslMode::VerifyFull {
                    builder.with_webpki_verifier(verifier)
                } else {
                    builder
                        .dangerous()
                        .with_custom_certificate_verifier(Arc::new(ChainOnly::new(verifier)))
                }
            }
            _ => builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AnyServerCert::new(provider))),
        };
        let mut client = match (&self.client_cert, &self.client_key) {
            (Some(cert), Some(key)) => {
                let certs = CertificateDer::pem_file_iter(cert)
                    .and_then(|it| it.collect::<Result<Vec<_>, _>>())
                    .map_err(|e| {
                        invalid(
                            "sslcert",
                            cert.display().to_string(),
                            format!("a readable PEM certificate file ({e})"),
                        )
                    })?;
                if certs.is_empty() {
                    return Err(invalid(
                        "sslcert",
                        cert.display().to_string(),
                        "a PEM file holding a certificate".into(),
                    ));
                }
                check_key_permissions(key).map_err(|e| invalid("sslkey", key.display().to_string(), e))?;
                let private = PrivateKeyDer::from_pem_file(key).map_err(|e| {
                    invalid(
                        "sslkey",
                        key.display().to_string(),
                        format!("a readable, unencrypted PEM private key ({e})"),
                    )
                })?;
                builder.with_client_auth_cert(certs, private).map_err(|e| {
                    invalid(
                        "sslkey",
                        key.display().to_string(),
                        format!("the private key of sslcert ({e})"),
                    )
                })?
            }
            (None, None) => builder.with_no_client_auth(),
            (Some(cert), None) => {
                return Err(invalid(
                    "sslkey",
                    String::new(),
                    format!("the key of sslcert {}: both are needed", cert.display()),
                ))
            }
            (None, Some(key)) => {
                return Err(invalid(
                    "sslcert",
                    String::new(),
                    format!("the certificate of sslkey {}: both are needed", key.display()),
                ))
            }
        };
        let sni = self.sni.unwrap_or(true);
        client.enable_sni = sni;
        let client = Some(Arc::new(client));
        let live = Live(Arc::new(Mutex::new(Some((stamps, client.clone())))));
        Ok(Tls {
            mode,
            sni,
            client,
            options: self.clone(),
            live,
        })
    }
}

/// TLS settings, checked and ready: the mode and the rustls configuration. Cheap to clone.
#[derive(Clone)]
pub struct Tls {
    mode: SslMode,
    sni: bool,
    client: Option<Arc<ClientConfig>>,
    options: TlsOptions,
    /// The configuration as the files are now: read again when they change.
    live: Live,
}

/// The rustls configuration of the files as last read, and their stamps (shared by clones).
#[derive(Clone, Default)]
struct Live(Arc<Mutex<Option<Loaded>>>);

/// The stamps of the files when read, and the configuration they made.
type Loaded = (Vec<Stamp>, Option<Arc<ClientConfig>>);

impl Tls {
    /// No TLS.
    pub(crate) fn disabled() -> Tls {
        Tls {
            mode: SslMode::Disable,
            sni: false,
            client: None,
            options: TlsOptions {
                mode: Some(SslMode::Disable),
                ..TlsOptions::default()
            },
            live: Live::default(),
        }
    }

    /// The effective mode (after libpq's rules for `sslrootcert`).
    pub fn mode(&self) -> SslMode {
        self.mode
    }

    /// What was asked for.
    pub fn options(&self) -> &TlsOptions {
        &self.options
    }

    /// The rustls configuration; `None` when TLS is off. When the root, certificate or key
    /// file changed since it was last read (a rotated client certificate), they are read
    /// again first; files that no longer make a valid configuration leave the last one in
    /// use, with a warning.
    pub(crate) fn client_config(&self) -> Option<Arc<ClientConfig>> {
        let mut live = self.live.0.lock().unwrap_or_else(|p| p.into_inner());
        let Some((stamps, client)) = live.as_mut() else {
            return self.client.clone();
        };
        let now = self.options.stamps();
        if now != *stamps {
            match self.options.build() {
                Ok(fresh) => {
                    tracing::info!("TLS certificate or key files changed: read again");
                    *client = fresh.client;
                }
                Err(error) => {
                    tracing::warn!(%error, "TLS files changed but do not make a valid configuration: keeping the last one");
                }
            }
            *stamps = now;
        }
        client.clone()
    }
}

impl Default for Tls {
    /// `sslmode=prefer` without verification, as libpq does by default.
    fn default() -> Tls {
        match TlsOptions::default().build() {
            Ok(tls) => tls,
            // The default reads no file; it cannot fail. Stay safe anyway: no TLS.
            Err(_) => Tls {
                mode: SslMode::Disable,
                sni: false,
                client: None,
                options: TlsOptions::default(),
                live: Live::default(),
            },
        }
    }
}

impl TlsOptions {
    /// The stamps of the files these options name (root certificates, client certificate and
    /// key), to tell when one changed.
    fn stamps(&self) -> Vec<Stamp> {
        let root = match &self.root_cert {
            Some(RootCerts::File(path)) => Some(path),
            _ => None,
        };
        [root, self.client_cert.as_ref(), self.client_key.as_ref()]
            .into_iter()
            .flatten()
            .map(|path| file_stamp(path))
            .collect()
    }
}

impl fmt::Debug for Tls {
    /// Modes and paths only: never key material.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tls")
            .field("mode", &self.mode)
            .field("root_cert", &self.options.root_cert)
            .field("client_cert", &self.options.client_cert)
            .field("client_key", &self.options.client_key)
            .field("sni", &self.sni)
            .finish()
    }
}

fn non_empty_path(value: &str, invalid: impl Fn(&str) -> ConfigError) -> Result<PathBuf, ConfigError> {
    if value.is_empty() {
        Err(invalid("a file path"))
    } else {
        Ok(PathBuf::from(value))
    }
}

fn describe(roots: &RootCerts) -> String {
    match roots {
        RootCerts::File(path) => path.display().to_string(),
        RootCerts::System => "system".into(),
    }
}

/// libpq's default: `~/.postgresql/root.crt` when it exists.
fn default_root_cert() -> Option<RootCerts> {
    let home = std::env::var_os("HOME")?;
    let path = Path::new(&home).join(".postgresql").join("root.crt");
    path.is_file().then_some(RootCerts::File(path))
}

fn load_roots(roots: &RootCerts) -> Result<RootCertStore, String> {
    let mut store = RootCertStore::empty();
    match roots {
        RootCerts::File(path) => {
            let certs = CertificateDer::pem_file_iter(path)
                .and_then(|it| it.collect::<Result<Vec<_>, _>>())
                .map_err(|e| format!("a readable PEM file of root certificates ({e})"))?;
            let (added, _) = store.add_parsable_certificates(certs);
            if added == 0 {
                return Err("a PEM file holding at least one usable root certificate".into());
            }
        }
        RootCerts::System => {
            let found = rustls_native_certs::load_native_certs();
            let (added, _) = store.add_parsable_certificates(found.certs);
            if added == 0 {
                return Err(
                    "the platform's trusted roots, but none were found (install ca-certificates)".into(),
                );
            }
        }
    }
    Ok(store)
}

/// libpq's rule: the key must not be readable by others (0600 or less), or, owned by root,
/// at most 0640.
fn check_key_permissions(key: &Path) -> Result<(), String> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let meta = std::fs::metadata(key).map_err(|e| format!("a readable private key file ({e})"))?;
    let mode = meta.permissions().mode() & 0o777;
    let allowed = if meta.uid() == 0 { 0o640 } else { 0o600 };
    if mode & !allowed != 0 {
        return Err(format!(
            "a key file with permissions u=rw (0600) or less (root-owned: u=rw,g=r, 0640); it has {mode:04o}"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_parse_with_libpq_names() {
        for m in ["disable", "prefer", "require", "verify-ca", "verify-full"] {
            assert_eq!(m.parse::<SslMode>().expect(m).as_str(), m);
        }
        let err = "allow".parse::<SslMode>().expect_err("allow");
        assert!(err.contains("verify-full"), "{err}");
    }

    #[test]
    fn verification_needs_roots_and_a_client_cert_needs_its_key() {
        let mut o = TlsOptions::default();
        o.set("url", "sslmode", "verify-full").expect("set");
        if default_root_cert().is_none() {
            let err = o.build().expect_err("no roots").to_string();
            assert!(err.starts_with("sslrootcert: invalid value"), "{err}");
            assert!(err.contains("`system`"), "{err}");
        }
        let mut o = TlsOptions::default();
        o.set("url", "sslmode", "require").expect("set");
        o.set("url", "sslcert", "/c.pem").expect("set");
        let err = o
            .build_named(&|key: &str| format!("DB_{}", key.to_ascii_uppercase()))
            .expect_err("no key")
            .to_string();
        assert!(err.starts_with("DB_SSLKEY: invalid value"), "{err}");
        let err = TlsOptions::default()
            .set("url", "sslsni", "yes")
            .expect_err("sni")
            .to_string();
        assert!(err.contains("1 or 0"), "{err}");
        let mut o = TlsOptions::default();
        o.set("url", "sslrootcert", "/nonexistent/root.crt").expect("set");
        o.set("url", "sslmode", "verify-ca").expect("set");
        let err = o.build().expect_err("missing file").to_string();
        assert!(err.contains("/nonexistent/root.crt"), "{err}");
    }

    #[test]
    fn system_roots_imply_verify_full() {
        let mut o = TlsOptions::default();
        o.set("url", "sslrootcert", "system").expect("set");
        match o.build() {
            Ok(tls) => assert_eq!(tls.mode(), SslMode::VerifyFull),
            Err(e) => assert!(e.to_string().contains("install ca-certificates"), "{e}"),
        }
    }

    #[test]
    fn libpq_rules_for_root_certificates() {
        let mut o = TlsOptions::default();
        o.set("url", "sslrootcert", "system").expect("set");
        o.set("url", "sslmode", "require").expect("set");
        let err = o.build().expect_err("require + system").to_string();
        assert!(err.contains("verify-full (or disable)"), "{err}");
        let defaults = TlsOptions::default().build().expect("default");
        assert_eq!(defaults.mode(), SslMode::Prefer);
        let mut o = TlsOptions::default();
        o.set("url", "sslmode", "disable").expect("set");
        assert!(o.build().expect("disable").client_config().is_none());
    }
}
