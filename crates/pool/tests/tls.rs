//! TLS for real: a throwaway cluster with `ssl = on` and certificates the test made itself.
//! Every sslmode against servers with and without TLS, host name and authority checks, an
//! expired certificate, client certificates, SCRAM with channel binding, password files, SNI,
//! cancel over TLS, and the wire tap still seeing the protocol through the encryption.

mod tls_support;

use std::sync::OnceLock;
use std::time::Duration;

use holdfast_pool::{connect, ConnectConfig, ConnectError, Pool, PoolConfig, TlsProblem, TxStatus};
use holdfast_tempdb::TempCluster;
use holdfast_testkit::cluster;
use tls_support::{Pki, SCRAM_PASSWORD};
use tokio_postgres::error::SqlState;

fn tls() -> &'static (Pki, TempCluster) {
    static TLS: OnceLock<(Pki, TempCluster)> = OnceLock::new();
    TLS.get_or_init(|| Pki::with_cluster(false))
}

fn plain() -> &'static TempCluster {
    cluster()
}

/// A URL to the TLS cluster as `user`, with extra parameters.
fn url(user: &str, host: &str, params: &str) -> String {
    format!("postgres://{user}@{host}:{}/postgres?{params}", tls().1.port())
}

async fn open(url: &str) -> Result<holdfast_pool::Connection, ConnectError> {
    let config = ConnectConfig::from_url(url)
        .expect("url")
        .connect_timeout(Duration::from_secs(10));
    connect(&config).await
}

/// Whether the server sees this session encrypted.
async fn server_says_ssl(conn: &holdfast_pool::Connection) -> bool {
    conn.query_one("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()", &[])
        .await
        .expect("pg_stat_ssl")
        .get(0)
}

fn tls_problem(result: Result<holdfast_pool::Connection, ConnectError>) -> (TlsProblem, String) {
    match result {
        Err(ConnectError::Tls { problem, detail, .. }) => (problem, detail),
        Err(other) => panic!("expected a TLS error, got {other}"),
        Ok(_) => panic!("expected a TLS error, got a connection"),
    }
}

#[tokio::test]
async fn each_sslmode_against_a_server_with_tls() {
    let root = tls().0.path("root.crt");
    for (mode, encrypted) in [
        ("disable", false),
        ("prefer", true),
        ("require", true),
        ("verify-ca", true),
        ("verify-full", true),
    ] {
        let conn = open(&url(
            "postgres",
            "localhost",
            &format!("sslmode={mode}&sslrootcert={root}"),
        ))
        .await
        .unwrap_or_else(|e| panic!("sslmode={mode}: {e}"));
        assert_eq!(conn.is_tls(), encrypted, "sslmode={mode}");
        assert_eq!(
            server_says_ssl(&conn).await,
            encrypted,
            "sslmode={mode}, as the server sees it"
        );
    }
    // Without roots, prefer and require encrypt without checking (libpq's meaning).
    for mode in ["prefer", "require"] {
        let conn = open(&url("postgres", "127.0.0.1", &format!("sslmode={mode}")))
            .await
            .expect(mode);
        assert!(server_says_ssl(&conn).await, "{mode}");
    }
    // The default is prefer.
    let conn = open(&url("postgres", "127.0.0.1", "")).await.expect("default");
    assert!(conn.is_tls());
}

#[tokio::test]
async fn each_sslmode_against_a_server_without_tls() {
    let root = tls().0.path("root.crt");
    let url = |mode: &str| {
        format!(
            "postgres://postgres@localhost:{}/postgres?sslmode={mode}&sslrootcert={root}",
            plain().port()
        )
    };
    for mode in ["disable", "prefer"] {
        let conn = open(&url(mode)).await.unwrap_or_else(|e| panic!("{mode}: {e}"));
        assert!(!conn.is_tls(), "{mode}");
    }
    for mode in ["require", "verify-ca", "verify-full"] {
        let (problem, detail) = tls_problem(open(&url(mode)).await);
        assert_eq!(problem, TlsProblem::NotSupportedByServer, "{mode}: {detail}");
        assert!(detail.contains("needs TLS"), "{detail}");
    }
}

#[tokio::test]
async fn verify_full_checks_the_host_name_and_verify_ca_does_not() {
    let root = tls().0.path("root.crt");
    // Connect to 127.0.0.1, but call the server by a name its certificate does not carry.
    let wrong = |mode: &str| {
        format!(
            "host=wrong.holdfast.test hostaddr=127.0.0.1 port={} user=postgres dbname=postgres sslmode={mode} sslrootcert={root}",
            tls().1.port()
        )
    };
    let (problem, detail) = tls_problem(open(&wrong("verify-full")).await);
    assert_eq!(problem, TlsProblem::HostMismatch, "{detail}");
    assert!(detail.contains("wrong.holdfast.test"), "{detail}");
    let conn = open(&wrong("verify-ca"))
        .await
        .expect("verify-ca does not check the name");
    assert!(conn.is_tls());
    // The certificate names 127.0.0.1 as an address too.
    let conn = open(&url(
        "postgres",
        "127.0.0.1",
        &format!("sslmode=verify-full&sslrootcert={root}"),
    ))
    .await
    .expect("IP address in the certificate");
    assert!(conn.is_tls());
}

#[tokio::test]
async fn an_unknown_authority_is_refused_when_verifying() {
    let other = tls().0.path("other-root.crt");
    for mode in ["verify-ca", "verify-full", "require"] {
        // require with a root certificate verifies the chain, as in libpq.
        let (problem, detail) = tls_problem(
            open(&url(
                "postgres",
                "localhost",
                &format!("sslmode={mode}&sslrootcert={other}"),
            ))
            .await,
        );
        assert_eq!(problem, TlsProblem::UnknownAuthority, "{mode}: {detail}");
    }
}

#[tokio::test]
async fn an_expired_certificate_is_refused() {
    let (pki, cluster) = Pki::with_cluster(true);
    let url = format!(
        "postgres://postgres@localhost:{}/postgres?sslmode=verify-full&sslrootcert={}",
        cluster.port(),
        pki.path("root.crt")
    );
    let (problem, detail) = tls_problem(open(&url).await);
    assert_eq!(problem, TlsProblem::CertificateExpired, "{detail}");
    // Without verification it is only encryption, as libpq does it.
    let url = format!(
        "postgres://postgres@localhost:{}/postgres?sslmode=require",
        cluster.port()
    );
    assert!(open(&url).await.expect("require").is_tls());
}

#[tokio::test]
async fn client_certificates_authenticate_and_unknown_ones_are_rejected() {
    let pki = &tls().0;
    let with = |cert: &str, key: &str| {
        url(
            "certuser",
            "localhost",
            &format!(
                "sslmode=verify-full&sslrootcert={}&sslcert={}&sslkey={}",
                pki.path("root.crt"),
                pki.path(cert),
                pki.path(key)
            ),
        )
    };
    let config = ConnectConfig::from_url(&with("client.crt", "client.key")).expect("config");
    let debug = format!("{config:?}");
    assert!(
        debug.contains("client.key") && !debug.contains("PRIVATE KEY"),
        "paths only: {debug}"
    );
    let conn = open(&with("client.crt", "client.key"))
        .await
        .expect("certificate authentication");
    let user: String = conn
        .query_one("SELECT current_user::text", &[])
        .await
        .expect("user")
        .get(0);
    assert_eq!(user, "certuser");

    let (problem, detail) = tls_problem(open(&with("rogue.crt", "rogue.key")).await);
    assert_eq!(problem, TlsProblem::ClientCertificateRejected, "{detail}");

    let without = url(
        "certuser",
        "localhost",
        &format!("sslmode=verify-full&sslrootcert={}", pki.path("root.crt")),
    );
    match open(&without).await {
        Err(e @ ConnectError::Postgres { .. }) => {
            assert_eq!(
                e.sqlstate(),
                Some(&SqlState::INVALID_AUTHORIZATION_SPECIFICATION),
                "{e}"
            );
            assert!(e.to_string().contains("certificate"), "{e}");
        }
        other => panic!("no certificate must fail authentication: {other:?}"),
    }

    // A key others can read is refused at configuration time, as libpq does.
    let loose = pki.write(
        "loose.key",
        &std::fs::read_to_string(pki.path("client.key")).expect("key"),
        0o644,
    );
    let err = ConnectConfig::from_url(&with("client.crt", "loose.key"))
        .expect_err("0644 key")
        .to_string();
    assert!(err.contains("sslkey") && err.contains("0600"), "{err}");
    assert!(!err.contains("PRIVATE KEY"), "{err}");
    drop(loose);
}

#[tokio::test]
async fn scram_with_channel_binding_over_tls() {
    let root = tls().0.path("root.crt");
    let user = format!("scramuser:{}", SCRAM_PASSWORD.replace(' ', "%20"));
    let conn = open(&url(
        &user,
        "localhost",
        &format!("sslmode=verify-full&sslrootcert={root}&channel_binding=require"),
    ))
    .await
    .expect("SCRAM-SHA-256-PLUS: channel binding to the server's certificate");
    assert!(server_says_ssl(&conn).await);

    // Without TLS there is nothing to bind to.
    let err = open(&url(
        &user,
        "localhost",
        "sslmode=disable&channel_binding=require",
    ))
    .await
    .expect_err("channel binding needs TLS");
    assert!(!err.to_string().contains(SCRAM_PASSWORD), "{err}");

    // A wrong password fails authentication and is never echoed.
    let err = open(&url("scramuser:not-the-password", "localhost", "sslmode=require"))
        .await
        .expect_err("wrong password");
    assert_eq!(err.sqlstate(), Some(&SqlState::INVALID_PASSWORD), "{err}");
    assert!(!err.to_string().contains("not-the-password"), "{err}");
}

#[tokio::test]
async fn passwords_come_from_the_url_the_environment_or_a_password_file() {
    let pki = &tls().0;
    let passfile = pki.write(
        "pgpass",
        &format!("wrong.host:*:*:scramuser:nope\n*:*:*:scramuser:{SCRAM_PASSWORD}\n"),
        0o600,
    );
    let conn = open(&url(
        "scramuser",
        "localhost",
        &format!("sslmode=require&passfile={}", passfile.display()),
    ))
    .await
    .expect("password from the file");
    assert!(conn.is_tls());

    let base = url("scramuser", "localhost", "sslmode=require");
    let from_env =
        PoolConfig::from_source(&[("DATABASE_URL", base.as_str()), ("DB_PASSWORD", SCRAM_PASSWORD)])
            .expect("config");
    let debug = format!("{from_env:?}");
    assert!(!debug.contains(SCRAM_PASSWORD), "{debug}");
    connect(&from_env.connect)
        .await
        .expect("password from DB_PASSWORD");

    let file = passfile.display().to_string();
    let from_file =
        PoolConfig::from_source(&[("DATABASE_URL", base.as_str()), ("DB_PASSFILE", file.as_str())])
            .expect("config");
    connect(&from_file.connect)
        .await
        .expect("password from DB_PASSFILE");

    // TLS settings from the environment fill what the URL leaves unset.
    let bare = url("postgres", "localhost", "");
    let root = pki.path("other-root.crt");
    let strict = PoolConfig::from_source(&[
        ("DATABASE_URL", bare.as_str()),
        ("DB_SSLMODE", "verify-full"),
        ("DB_SSLROOTCERT", root.as_str()),
    ])
    .expect("config");
    let (problem, _) = tls_problem(connect(&strict.connect).await);
    assert_eq!(problem, TlsProblem::UnknownAuthority, "DB_SSLROOTCERT was used");
    let err = PoolConfig::from_source(&[("DATABASE_URL", bare.as_str()), ("DB_SSLMODE", "verify")])
        .expect_err("bad mode")
        .to_string();
    assert!(err.starts_with("DB_SSLMODE: invalid value \"verify\""), "{err}");
}

#[tokio::test]
async fn the_wire_tap_sees_the_protocol_through_tls() {
    let root = tls().0.path("root.crt");
    let config = ConnectConfig::from_url(&url(
        "postgres",
        "localhost",
        &format!("sslmode=verify-full&sslrootcert={root}"),
    ))
    .expect("url");
    let pool = Pool::new(PoolConfig::new(config).pool_size(1).max_overflow(0)).expect("pool");
    let conn = pool.get().await.expect("get");
    assert!(conn.connection().is_tls());
    conn.batch_execute("DROP TABLE IF EXISTS tap_through_tls; CREATE TABLE tap_through_tls (x int)")
        .await
        .expect("create");
    let pid = conn.backend_pid();
    conn.batch_execute("BEGIN; INSERT INTO tap_through_tls VALUES (1)")
        .await
        .expect("raw begin");
    assert_eq!(
        conn.state().tx_status(),
        TxStatus::InTransaction,
        "the tap reads the decrypted ReadyForQuery"
    );
    drop(conn);
    let conn = pool.get().await.expect("get again");
    assert_eq!(conn.backend_pid(), pid, "the same connection, cleaned");
    assert_eq!(conn.state().tx_status(), TxStatus::Idle);
    let rows: i64 = conn
        .query_one("SELECT count(*) FROM tap_through_tls", &[])
        .await
        .expect("count")
        .get(0);
    assert_eq!(rows, 0, "rolled back before reuse");
}

#[tokio::test]
async fn a_cancel_request_reaches_a_tls_session() {
    let conn = std::sync::Arc::new(
        open(&url("postgres", "localhost", "sslmode=require"))
            .await
            .expect("connect"),
    );
    let sleeper = std::sync::Arc::clone(&conn);
    let sleep = tokio::spawn(async move { sleeper.batch_execute("SELECT pg_sleep(30)").await });
    let admin = open(&url("postgres", "localhost", "sslmode=require"))
        .await
        .expect("admin");
    let pid = conn.backend_pid().expect("pid");
    // Wait (bounded) until the sleep runs, then cancel it.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let active: i64 = admin
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE pid = $1 AND query LIKE 'SELECT pg_sleep%' AND state = 'active'",
                &[&pid],
            )
            .await
            .expect("activity")
            .get(0);
        if active == 1 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "the sleep never started");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    conn.cancel_query().await.expect("cancel over TLS");
    let err = sleep.await.expect("join").expect_err("cancelled");
    assert_eq!(err.code(), Some(&SqlState::QUERY_CANCELED));
}

/// A TCP relay that records what the client sends.
async fn recording_relay(upstream: u16) -> (u16, std::sync::Arc<std::sync::Mutex<Vec<u8>>>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let record = std::sync::Arc::clone(&seen);
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let Ok(server) = tokio::net::TcpStream::connect(("127.0.0.1", upstream)).await else {
                return;
            };
            let (mut cr, mut cw) = client.into_split();
            let (mut sr, mut sw) = server.into_split();
            let record = std::sync::Arc::clone(&record);
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                while let Ok(n) = cr.read(&mut buf).await {
                    if n == 0 || sw.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                    record.lock().expect("record").extend_from_slice(&buf[..n]);
                }
            });
            tokio::spawn(async move {
                let _ = tokio::io::copy(&mut sr, &mut cw).await;
            });
        }
    });
    (port, seen)
}

#[tokio::test]
async fn sni_names_the_host_unless_turned_off() {
    let root = tls().0.path("root.crt");
    for (sni, expected) in [("1", true), ("0", false)] {
        let (port, seen) = recording_relay(tls().1.port()).await;
        let url = format!("postgres://postgres@localhost:{port}/postgres?sslmode=verify-full&sslrootcert={root}&sslsni={sni}");
        let conn = open(&url).await.expect("through the relay");
        conn.batch_execute("SELECT 1").await.expect("query");
        let bytes = seen.lock().expect("seen").clone();
        let named = bytes.windows(b"localhost".len()).any(|w| w == b"localhost");
        assert_eq!(named, expected, "sslsni={sni}: the ClientHello names the host");
    }
}

#[tokio::test]
async fn connection_faults_reach_tls_sessions_through_the_proxy() {
    let upstream = std::net::SocketAddr::from(([127, 0, 0, 1], tls().1.port()));
    let proxy = holdfast_faults::FaultProxy::start_local(upstream)
        .await
        .expect("proxy");
    let root = tls().0.path("root.crt");
    let conn = open(&format!(
        "postgres://postgres@localhost:{}/postgres?sslmode=verify-full&sslrootcert={root}",
        proxy.port()
    ))
    .await
    .expect("TLS through the proxy");
    conn.batch_execute("SELECT 1").await.expect("query");
    assert_eq!(
        proxy.counters().encrypted_sessions,
        1,
        "the proxy knows it cannot read it"
    );
    proxy.reset_all();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !conn.state().liveness().is_dead() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the reset never reached the tap"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(conn.batch_execute("SELECT 1").await.is_err());
}

#[tokio::test]
async fn prefer_falls_back_to_plaintext_when_the_server_refuses_tls_sessions() {
    // pg_hba.conf rejects `plainuser` over TLS (and lets it in without).
    let conn = open(&url("plainuser", "localhost", "sslmode=prefer"))
        .await
        .expect("prefer tries again without TLS, as libpq does");
    assert!(!conn.is_tls());
    assert!(!server_says_ssl(&conn).await);
    let err = open(&url("plainuser", "localhost", "sslmode=require"))
        .await
        .expect_err("require has no plaintext to fall back to");
    assert_eq!(
        err.sqlstate(),
        Some(&SqlState::INVALID_AUTHORIZATION_SPECIFICATION),
        "{err}"
    );
}

#[tokio::test]
async fn a_rotated_client_certificate_is_read_again_without_a_restart() {
    let pki = &tls().0;
    let (cert, key) = pki.ca.issue("certuser", &[], tls_support::VALID);
    pki.write("rotating.crt", &cert, 0o644);
    pki.write("rotating.key", &key, 0o600);
    let config = ConnectConfig::from_url(&url(
        "certuser",
        "localhost",
        &format!(
            "sslmode=verify-full&sslrootcert={}&sslcert={}&sslkey={}",
            pki.path("root.crt"),
            pki.path("rotating.crt"),
            pki.path("rotating.key")
        ),
    ))
    .expect("config");
    let serial = |conn: holdfast_pool::Connection| async move {
        let row = conn
            .query_one(
                "SELECT client_serial::text FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
                &[],
            )
            .await
            .expect("pg_stat_ssl");
        row.get::<_, String>(0)
    };
    let first = serial(connect(&config).await.expect("first certificate")).await;
    // The certificate is renewed on disk (as cert-manager or Vault's agent do).
    let (cert, key) = pki.ca.issue("certuser", &[], tls_support::VALID);
    pki.write("rotating.crt", &cert, 0o644);
    pki.write("rotating.key", &key, 0o600);
    let second = serial(connect(&config).await.expect("renewed certificate")).await;
    assert_ne!(first, second, "the new connect presents the renewed certificate");
}
