//! The framing and bookkeeping on real message streams: a conversation with a live server is
//! recorded byte for byte, then replayed through an [`Observer`] split at every possible
//! boundary (and at random ones); the observed state must not depend on where the socket
//! happened to cut the bytes.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll};

use futures_util::SinkExt;
use holdfast_wire::{CommitState, Direction, Framer, Liveness, Observer, Snapshot, Tag, Tap, TxStatus};
use proptest::prelude::*;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

type Log = Arc<Mutex<Vec<(Direction, Vec<u8>)>>>;

/// Records every chunk that crosses it, in order, with its direction.
struct Recorder<S> {
    inner: S,
    log: Log,
}

impl<S> Recorder<S> {
    fn push(&self, direction: Direction, bytes: &[u8]) {
        if !bytes.is_empty() {
            self.log.lock().expect("log").push((direction, bytes.to_vec()));
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Recorder<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let result = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = result {
            self.push(Direction::Backend, &buf.filled()[before..]);
        }
        result
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Recorder<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = result {
            self.push(Direction::Frontend, &buf[..n]);
        }
        result
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

struct Recording {
    log: Vec<(Direction, Vec<u8>)>,
    /// What the live tap saw during the conversation.
    live: Snapshot,
}

/// Runs a conversation that touches every message kind holdfast reads: start-up, simple and
/// extended queries, errors in and out of transactions, COMMIT answered with ROLLBACK,
/// prepared COMMIT, COPY in and out, notices, notifications, a row bigger than any read
/// buffer, and Terminate.
fn recording() -> &'static Recording {
    static RECORDING: OnceLock<Recording> = OnceLock::new();
    RECORDING.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(record())
    })
}

async fn record() -> Recording {
    let cluster = holdfast_tempdb::shared().expect("cluster");
    let db = cluster.create_database().expect("database");
    let config: tokio_postgres::Config = db.url.parse().expect("url");
    let socket = tokio::net::TcpStream::connect(("127.0.0.1", cluster.port()))
        .await
        .expect("tcp");
    let log: Log = Arc::default();
    let tap = Tap::new(Recorder {
        inner: socket,
        log: Arc::clone(&log),
    });
    let state = tap.state();
    let (client, connection) = config
        .connect_raw(tap, tokio_postgres::NoTls)
        .await
        .expect("connect");
    let driver = tokio::spawn(connection);

    client
        .batch_execute(
            "CREATE TABLE t (id int PRIMARY KEY, v text); BEGIN; INSERT INTO t VALUES (1, 'a'); COMMIT",
        )
        .await
        .expect("simple");
    let stmt = client
        .prepare("INSERT INTO t VALUES ($1, $2)")
        .await
        .expect("prepare");
    client
        .execute(&stmt, &[&2i32, &"b"])
        .await
        .expect("extended insert");
    client.batch_execute("BEGIN").await.expect("begin");
    client.execute("COMMIT", &[]).await.expect("prepared commit");
    client.batch_execute("BEGIN; SELECT 1").await.expect("begin");
    client
        .batch_execute("SELECT 1/0")
        .await
        .expect_err("error in transaction");
    client
        .batch_execute("COMMIT")
        .await
        .expect("commit answered with rollback");
    client
        .query("SELECT * FROM nope", &[])
        .await
        .expect_err("extended error");
    client
        .batch_execute("DO $$ BEGIN RAISE NOTICE 'hello'; END $$; LISTEN ch; NOTIFY ch, 'payload'")
        .await
        .expect("notice and notify");
    let sink = client.copy_in("COPY t FROM STDIN").await.expect("copy in");
    futures_util::pin_mut!(sink);
    sink.send(bytes::Bytes::from_static(b"3\tc\n4\td\n"))
        .await
        .expect("copy data");
    sink.finish().await.expect("copy done");
    let out = client.copy_out("COPY t TO STDOUT").await.expect("copy out");
    futures_util::pin_mut!(out);
    while let Some(chunk) = futures_util::StreamExt::next(&mut out).await {
        chunk.expect("copy chunk");
    }
    let big: String = client
        .query_one("SELECT repeat('x', 50000)", &[])
        .await
        .expect("big row")
        .get(0);
    assert_eq!(big.len(), 50_000);
    client
        .query_typed("SELECT $1::int", &[(&5i32, tokio_postgres::types::Type::INT4)])
        .await
        .expect("typed");
    drop(client);
    driver.await.expect("driver task").expect("clean end");
    let log = log.lock().expect("log").clone();
    Recording {
        log,
        live: state.snapshot().without_times(),
    }
}

fn replay<'a>(chunks: impl IntoIterator<Item = (Direction, &'a [u8])>) -> Observer {
    let mut observer = Observer::new();
    for (direction, bytes) in chunks {
        observer.bytes(direction, bytes);
    }
    observer
}

fn whole(direction: Direction) -> Vec<u8> {
    recording()
        .log
        .iter()
        .filter(|(d, _)| *d == direction)
        .flat_map(|(_, b)| b.iter().copied())
        .collect()
}

type Frames = Vec<(Tag, u32, Vec<u8>)>;

fn frames_of(direction: Direction, pieces: &[&[u8]]) -> Frames {
    let mut framer = Framer::new(direction);
    let mut out = Vec::new();
    for piece in pieces {
        framer
            .feed(piece, |f| out.push((f.tag, f.len, f.prefix.to_vec())))
            .expect("recorded stream is well formed");
    }
    assert!(framer.at_boundary(), "stream ends between messages");
    out
}

#[test]
fn the_recording_is_what_the_live_tap_saw() {
    let rec = recording();
    let replayed = replay(rec.log.iter().map(|(d, b)| (*d, b.as_slice())));
    let mut snapshot = replayed.state().snapshot().without_times();
    // The live tap was dropped by the driver after Terminate; the replay just stops.
    assert_eq!(rec.live.liveness, Liveness::Terminated);
    assert_eq!(snapshot.liveness, Liveness::Terminated);
    snapshot.liveness = rec.live.liveness;
    assert_eq!(snapshot, rec.live);
    // And the conversation ended where the workload says it did.
    assert_eq!(snapshot.tx_status, TxStatus::Idle);
    assert_eq!(snapshot.in_flight, 0);
    // CREATE ...; BEGIN; ...; COMMIT is one Query that does not start with COMMIT: not
    // tracked (documented); the prepared COMMIT and the one answered with ROLLBACK are.
    assert_eq!(snapshot.commits_written, 2);
    assert_eq!(snapshot.commit, CommitState::RolledBack);
    assert!(snapshot.bytes_received > 50_000);
}

#[test]
fn framing_is_the_same_split_at_every_boundary() {
    for direction in [Direction::Frontend, Direction::Backend] {
        let bytes = whole(direction);
        let reference = frames_of(direction, &[&bytes]);
        assert!(reference.len() > 20, "{direction:?}: {} frames", reference.len());
        for cut in 0..=bytes.len() {
            let (a, b) = bytes.split_at(cut);
            let split = frames_of(direction, &[a, b]);
            assert!(
                split == reference,
                "{direction:?} split at {cut} of {} differs",
                bytes.len()
            );
        }
        // And byte by byte, the worst case a socket can deliver.
        let singles: Vec<&[u8]> = bytes.chunks(1).collect();
        assert!(
            frames_of(direction, &singles) == reference,
            "{direction:?} byte by byte"
        );
    }
}

#[test]
fn observed_state_is_the_same_split_at_every_boundary() {
    let rec = recording();
    let snapshots_at_chunk_ends = |observer_chunks: &[(usize, Direction, &[u8])]| -> Vec<Snapshot> {
        let mut observer = Observer::new();
        let mut out = Vec::new();
        for (i, (chunk, direction, bytes)) in observer_chunks.iter().enumerate() {
            observer.bytes(*direction, bytes);
            let last_piece = observer_chunks.get(i + 1).is_none_or(|next| next.0 != *chunk);
            if last_piece {
                out.push(observer.state().snapshot().without_times());
            }
        }
        out
    };
    let pieces: Vec<(usize, Direction, &[u8])> = rec
        .log
        .iter()
        .enumerate()
        .map(|(i, (d, b))| (i, *d, b.as_slice()))
        .collect();
    let reference = snapshots_at_chunk_ends(&pieces);
    for (chunk, (direction, bytes)) in rec.log.iter().enumerate() {
        for cut in 1..bytes.len() {
            let mut split = pieces.clone();
            split[chunk] = (chunk, *direction, &bytes[..cut]);
            split.insert(chunk + 1, (chunk, *direction, &bytes[cut..]));
            let got = snapshots_at_chunk_ends(&split);
            assert!(
                got == reference,
                "chunk {chunk} split at {cut} changes the observed state"
            );
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// Re-chunk each direction at random points, merging and splitting the recorded reads
    /// and writes while keeping the order between directions.
    #[test]
    fn observed_state_survives_random_rechunking(seed in any::<u64>()) {
        let rec = recording();
        let reference = replay(rec.log.iter().map(|(d, b)| (*d, b.as_slice()))).state().snapshot().without_times();
        let mut rng = seed;
        let mut next = move || { rng ^= rng << 13; rng ^= rng >> 7; rng ^= rng << 17; rng };
        let mut observer = Observer::new();
        for (direction, bytes) in &rec.log {
            let mut rest = bytes.as_slice();
            while !rest.is_empty() {
                let take = 1 + (next() as usize % rest.len().min(700));
                observer.bytes(*direction, &rest[..take]);
                rest = &rest[take..];
            }
        }
        prop_assert_eq!(observer.state().snapshot().without_times(), reference);
    }

    /// Arbitrary bytes in either direction never panic; they end as a well-defined state.
    #[test]
    fn arbitrary_bytes_never_panic(
        chunks in proptest::collection::vec((any::<bool>(), proptest::collection::vec(any::<u8>(), 0..64)), 0..32)
    ) {
        let mut observer = Observer::new();
        for (frontend, bytes) in &chunks {
            let direction = if *frontend { Direction::Frontend } else { Direction::Backend };
            observer.bytes(direction, bytes);
        }
        let snapshot = observer.state().snapshot();
        prop_assert!(snapshot.in_flight < 1_000_000);
    }

    /// Arbitrary bytes after a real start-up (typed messages from then on).
    #[test]
    fn arbitrary_bytes_after_startup_never_panic(
        chunks in proptest::collection::vec((any::<bool>(), proptest::collection::vec(any::<u8>(), 0..64)), 0..32)
    ) {
        let mut observer = Observer::established();
        for (frontend, bytes) in &chunks {
            let direction = if *frontend { Direction::Frontend } else { Direction::Backend };
            observer.bytes(direction, bytes);
        }
        let _ = observer.state().snapshot();
    }
}

#[test]
fn a_bad_length_marks_the_state_malformed() {
    let mut observer = Observer::established();
    observer.backend_bytes(b"Z\0\0\0\x05I");
    assert_eq!(observer.state().liveness(), Liveness::Open);
    observer.backend_bytes(b"Z\0\0\0\x02I");
    assert_eq!(observer.state().liveness(), Liveness::Malformed);
    // Nothing afterwards revives it.
    observer.backend_bytes(b"Z\0\0\0\x05T");
    assert_eq!(observer.state().liveness(), Liveness::Malformed);
    assert!(!observer.state().is_clean());
}
