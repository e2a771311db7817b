//! TLS negotiated by holdfast: libpq's settings (`config`), the handshake under the wire tap
//! with the channel binding SCRAM needs (`stream`), and the certificate checks the modes
//! call for (`verify`).

pub(crate) mod config;
pub(crate) mod stream;
mod verify;
