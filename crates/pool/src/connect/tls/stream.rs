//! TLS negotiated by holdfast itself, so that the wire tap sees the plaintext protocol: the
//! SSLRequest, then a rustls handshake; tokio-postgres is handed the finished stream (through
//! the tap) together with the channel binding data that SCRAM-SHA-256-PLUS needs.

use std::future::{ready, Ready};
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use rustls::pki_types::ServerName;
use rustls::ClientConfig;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio_postgres::tls::{ChannelBinding, TlsConnect, TlsStream};
use tokio_rustls::TlsConnector;

use super::config::{SslMode, Tls};
use crate::connect::socket::Socket;
use crate::error::TlsProblem;

/// The SSLRequest message: length 8, code 80877103.
const SSL_REQUEST: [u8; 8] = [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f];

/// The byte stream under the tap: plaintext, or TLS over the socket.
#[derive(Debug)]
pub(crate) enum Transport {
    /// No TLS.
    Plain(Socket),
    /// TLS, negotiated with the server.
    Tls(Box<tokio_rustls::client::TlsStream<Socket>>),
}

/// The result of negotiating: the stream, and the channel binding data when TLS is on.
#[derive(Debug)]
pub(crate) struct Negotiated {
    pub(crate) transport: Transport,
    pub(crate) binding: Option<Vec<u8>>,
}

/// Why TLS could not be set up, and the details for the message.
#[derive(Debug)]
pub(crate) struct TlsFailure {
    pub(crate) problem: TlsProblem,
    pub(crate) detail: String,
}

/// Why negotiating failed: the connection itself (reset, closed), or TLS.
#[derive(Debug)]
pub(crate) enum NegotiateError {
    Io(io::Error),
    Tls(TlsFailure),
}

impl From<TlsFailure> for NegotiateError {
    fn from(failure: TlsFailure) -> Self {
        NegotiateError::Tls(failure)
    }
}

/// Asks the server for TLS when `tls` says to, and runs the handshake with `host` as the name
/// to verify (and to send as SNI). Unix sockets never use TLS, as in libpq.
pub(crate) async fn negotiate(
    tls: &Tls,
    mut socket: Socket,
    host: &str,
) -> Result<Negotiated, NegotiateError> {
    let plain = |socket| Negotiated {
        transport: Transport::Plain(socket),
        binding: None,
    };
    let Some(config) = tls.client_config() else {
        return Ok(plain(socket));
    };
    if matches!(socket, Socket::Unix(_)) || tls.mode() == SslMode::Disable {
        return Ok(plain(socket));
    }
    let answer = async {
        socket.write_all(&SSL_REQUEST).await?;
        let mut answer = [0u8; 1];
        socket.read_exact(&mut answer).await?;
        Ok::<u8, io::Error>(answer[0])
    };
    match answer.await {
        Ok(b'S') => {}
        Ok(b'N') if !tls.mode().requires_tls() => return Ok(plain(socket)),
        Ok(b'N') => {
            return Err(NegotiateError::Tls(TlsFailure {
                problem: TlsProblem::NotSupportedByServer,
                detail: format!(
                    "it answered the SSLRequest with N, and sslmode={} needs TLS",
                    tls.mode().as_str()
                ),
            }))
        }
        Ok(other) => {
            return Err(NegotiateError::Tls(TlsFailure {
                problem: TlsProblem::Handshake,
                detail: format!(
                    "the server answered the SSLRequest with {:?}, not S or N",
                    other as char
                ),
            }))
        }
        // The connection failed (reset, closed): not a TLS problem.
        Err(e) => return Err(NegotiateError::Io(e)),
    }
    // Nothing the server sent before the handshake is read as protocol: rustls reads the
    // next bytes as TLS records, so injected plaintext fails the handshake.
    let stream = handshake(&config, socket, host).await?;
    let binding = stream
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|certs| certs.first())
        .and_then(|cert| server_end_point(cert.as_ref()));
    Ok(Negotiated {
        transport: Transport::Tls(Box::new(stream)),
        binding,
    })
}

async fn handshake<S: AsyncRead + AsyncWrite + Unpin>(
    config: &Arc<ClientConfig>,
    stream: S,
    host: &str,
) -> Result<tokio_rustls::client::TlsStream<S>, NegotiateError> {
    let name = ServerName::try_from(host.to_string()).map_err(|e| TlsFailure {
        problem: TlsProblem::Handshake,
        detail: format!("{host:?} cannot be used as a TLS server name: {e}"),
    })?;
    TlsConnector::from(Arc::clone(config))
        .connect(name, stream)
        .await
        .map_err(|e| {
            match e
                .get_ref()
                .and_then(|inner| inner.downcast_ref::<rustls::Error>())
            {
                Some(tls) => NegotiateError::Tls(failure_from_rustls(tls, host)),
                None => NegotiateError::Io(e),
            }
        })
}

/// Finds a rustls error anywhere in `error`'s chain (an `io::Error` hides its inner error
/// from `source()`, so each level is also looked into).
pub(crate) fn find_rustls_error<'a>(
    error: &'a (dyn std::error::Error + 'static),
) -> Option<&'a rustls::Error> {
    let mut next = Some(error);
    while let Some(e) = next {
        if let Some(tls) = e.downcast_ref::<rustls::Error>() {
            return Some(tls);
        }
        if let Some(tls) = e
            .downcast_ref::<io::Error>()
            .and_then(|io| io.get_ref())
            .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        {
            return Some(tls);
        }
        next = e.source();
    }
    None
}

/// What a rustls error means for the user.
pub(crate) fn failure_from_rustls(e: &rustls::Error, host: &str) -> TlsFailure {
    use rustls::{AlertDescription as A, CertificateError as C, Error as E};
    let problem = match e {
        E::InvalidCertificate(C::UnknownIssuer) => TlsProblem::UnknownAuthority,
        E::InvalidCertificate(C::Expired | C::ExpiredContext { .. }) => TlsProblem::CertificateExpired,
        E::InvalidCertificate(C::NotValidYet | C::NotValidYetContext { .. }) => {
            TlsProblem::CertificateNotYetValid
        }
        E::InvalidCertificate(C::NotValidForName | C::NotValidForNameContext { .. }) => {
            return TlsFailure {
                problem: TlsProblem::HostMismatch,
                detail: format!("the server's certificate is not valid for {host:?} ({e})"),
            }
        }
        E::InvalidCertificate(_) => TlsProblem::InvalidCertificate,
        E::AlertReceived(
            A::CertificateRequired
            | A::BadCertificate
            | A::UnsupportedCertificate
            | A::CertificateRevoked
            | A::CertificateExpired
            | A::CertificateUnknown
            | A::UnknownCA
            | A::AccessDenied,
        ) => TlsProblem::ClientCertificateRejected,
        _ => TlsProblem::Handshake,
    };
    TlsFailure {
        problem,
        detail: e.to_string(),
    }
}

/// `tls-server-end-point` channel binding (RFC 5929), as PostgreSQL computes it: the hash of
/// the server's certificate with the hash of its signature algorithm, SHA-256 in place of MD5
/// and SHA-1. `None` for algorithms PostgreSQL cannot bind to either (Ed25519, RSA-PSS).
pub(crate) fn server_end_point(cert: &[u8]) -> Option<Vec<u8>> {
    let algorithm = match signature_algorithm_oid(cert)? {
        // md5WithRSA, sha1WithRSA, sha256WithRSA, ecdsa-with-SHA1, ecdsa-with-SHA256
        [0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x04 | 0x05 | 0x0b]
        | [0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x01]
        | [0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02] => &ring::digest::SHA256,
        // sha384WithRSA, ecdsa-with-SHA384
        [0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0c]
        | [0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x03] => &ring::digest::SHA384,
        // sha512WithRSA, ecdsa-with-SHA512
        [0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0d]
        | [0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x04] => &ring::digest::SHA512,
        _ => return None,
    };
    Some(ring::digest::digest(algorithm, cert).as_ref().to_vec())
}

/// The OID of `Certificate.signatureAlgorithm` in a DER certificate:
/// `SEQUENCE { tbsCertificate SEQUENCE, signatureAlgorithm SEQUENCE { OID, ... }, ... }`.
fn signature_algorithm_oid(der: &[u8]) -> Option<&[u8]> {
    let (tag, certificate, _) = der_element(der)?;
    if tag != 0x30 {
        return None;
    }
    let (_, _, after_tbs) = der_element(certificate)?;
    let (tag, algorithm, _) = der_element(after_tbs)?;
    if tag != 0x30 {
        return None;
    }
    let (tag, oid, _) = der_element(algorithm)?;
    (tag == 0x06).then_some(oid)
}

/// One DER element at the start of `bytes`: its tag, its contents, and what follows it.
fn der_element(bytes: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let tag = *bytes.first()?;
    let first = *bytes.get(1)? as usize;
    let (length, header) = if first < 0x80 {
        (first, 2)
    } else {
        let count = first & 0x7f;
        if count == 0 || count > 4 {
            return None;
        }
        let mut length = 0usize;
        for i in 0..count {
            length = (length << 8) | *bytes.get(2 + i)? as usize;
        }
        (length, 2 + count)
    };
    let end = header.checked_add(length)?;
    Some((tag, bytes.get(header..end)?, bytes.get(end..)?))
}

/// The stream tokio-postgres talks through: whatever it is handed, with the channel binding
/// data of the TLS session negotiated before.
#[derive(Debug)]
pub(crate) struct Handed<S> {
    stream: S,
    binding: Option<Vec<u8>>,
}

/// Hands an already negotiated stream to tokio-postgres (used with
/// `SslNegotiation::Direct`, so that tokio-postgres sends no SSLRequest of its own).
#[derive(Debug, Clone, Default)]
pub(crate) struct Handover {
    pub(crate) binding: Option<Vec<u8>>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> TlsConnect<S> for Handover {
    type Stream = Handed<S>;
    type Error = io::Error;
    type Future = Ready<Result<Handed<S>, io::Error>>;

    fn connect(self, stream: S) -> Self::Future {
        ready(Ok(Handed {
            stream,
            binding: self.binding,
        }))
    }
}

impl<S> TlsStream for Handed<S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    fn channel_binding(&self) -> ChannelBinding {
        match &self.binding {
            Some(hash) => ChannelBinding::tls_server_end_point(hash.clone()),
            None => ChannelBinding::none(),
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Handed<S> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Handed<S> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

/// Cancel requests of a TLS connection go over TLS too: SSLRequest and handshake on the new
/// socket, then tokio-postgres writes the CancelRequest.
#[derive(Debug, Clone)]
pub(crate) struct CancelTls {
    pub(crate) tls: Tls,
    pub(crate) host: String,
}

impl TlsConnect<Socket> for CancelTls {
    type Stream = Handed<Transport>;
    type Error = io::Error;
    type Future = Pin<Box<dyn std::future::Future<Output = io::Result<Handed<Transport>>> + Send>>;

    fn connect(self, socket: Socket) -> Self::Future {
        Box::pin(async move {
            let negotiated = negotiate(&self.tls, socket, &self.host)
                .await
                .map_err(|e| match e {
                    NegotiateError::Io(e) => e,
                    NegotiateError::Tls(f) => io::Error::other(format!("{}: {}", f.problem, f.detail)),
                })?;
            Ok(Handed {
                stream: negotiated.transport,
                binding: None,
            })
        })
    }
}

impl AsyncRead for Transport {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Transport::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Transport::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Transport {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Transport::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Transport::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Transport::Plain(s) => Pin::new(s).poll_flush(cx),
            Transport::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Transport::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Transport::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn der_walking_is_bounded_by_the_input() {
        assert_eq!(der_element(&[0x30]), None);
        assert_eq!(der_element(&[0x30, 0x85, 1, 2, 3, 4, 5]), None);
        assert_eq!(der_element(&[0x30, 0x82, 0xff, 0xff, 0]), None);
        assert_eq!(
            der_element(&[0x06, 0x01, 0x2a, 9]),
            Some((0x06, &[0x2a][..], &[9][..]))
        );
        assert_eq!(server_end_point(b"not a certificate"), None);
    }

    #[test]
    fn channel_binding_hashes_with_the_certificates_signature_hash() {
        for (alg, len) in [
            (&rcgen::PKCS_ECDSA_P256_SHA256, 32),
            (&rcgen::PKCS_ECDSA_P384_SHA384, 48),
            (&rcgen::PKCS_ED25519, 0),
        ] {
            let key = rcgen::KeyPair::generate_for(alg).expect("key");
            let params = rcgen::CertificateParams::new(vec!["localhost".to_string()]).expect("params");
            let cert = params.self_signed(&key).expect("cert");
            let binding = server_end_point(cert.der());
            assert_eq!(binding.as_ref().map_or(0, Vec::len), len, "{alg:?}");
            if let Some(hash) = binding {
                let expected = match len {
                    32 => ring::digest::digest(&ring::digest::SHA256, cert.der()),
                    _ => ring::digest::digest(&ring::digest::SHA384, cert.der()),
                };
                assert_eq!(hash, expected.as_ref());
            }
        }
    }
}
