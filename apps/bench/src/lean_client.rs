//! The workers' statements on the leanest async client this bench could write: one tokio task
//! per connection that encodes the messages itself (postgres-protocol), writes them and reads
//! the replies on the same task, with no driver task, no channels, no statement objects. It
//! is not a client for use (trust authentication only, no TLS, errors end the run): it marks
//! what tokio and the socket path cost without tokio-postgres, so that the tasks bench can tell
//! the driver's share of "where the time goes" from the runtime's, and it sends batches of
//! statements under one Sync for the pools bench's section `syncs`.

use bytes::{BufMut, BytesMut};
use fallible_iterator::FallibleIterator;
use postgres_protocol::message::backend::Message;
use postgres_protocol::message::frontend;
use postgres_protocol::IsNull;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

type Error = Box<dyn std::error::Error + Send + Sync>;

/// Object ids of the parameter types (pg_type).
const TEXT: u32 = 25;
const INT8: u32 = 20;
const INT4: u32 = 23;
const TEXT_ARRAY: u32 = 1009;
/// The kinds the claim asks for: the bench's tasks are all `noop`.
const KINDS: &str = "{noop}";
/// The claim's leases, one per kind (float8[]).
const FLOAT8_ARRAY: u32 = 1022;

/// One connection, its statements prepared as "claim" and "succeed".
pub struct Lean {
    stream: TcpStream,
    out: BytesMut,
    input: BytesMut,
}

/// A parameter, binary encoded.
enum Param<'a> {
    Text(&'a str),
    /// A value in the server's text format (an array literal, say).
    Literal(&'a str),
    Int8(i64),
    Int4(i32),
}

impl Lean {
    /// Connects as `postgres` to the database `postgres` (trust) and prepares the claim of one
    /// task and the final write.
    pub async fn connect(port: u16, claim: &str, succeed: &str) -> Result<Lean, Error> {
        Lean::prepared(
            port,
            &[
                ("claim", claim, &[TEXT, INT8, FLOAT8_ARRAY, TEXT_ARRAY, TEXT]),
                ("succeed", succeed, &[INT8, INT4, INT8]),
            ],
        )
        .await
    }

    /// Connects as `postgres` to the database `postgres` (trust) and prepares each
    /// `(name, sql, parameter type oids)`.
    pub async fn prepared(port: u16, statements: &[(&str, &str, &[u32])]) -> Result<Lean, Error> {
        let stream = TcpStream::connect(("127.0.0.1", port)).await?;
        stream.set_nodelay(true)?;
        let mut lean = Lean {
            stream,
            out: BytesMut::with_capacity(4096),
            input: BytesMut::with_capacity(8192),
        };
        frontend::startup_message([("user", "postgres"), ("database", "postgres")], &mut lean.out)?;
        lean.flush().await?;
        lean.until_ready(|_| Ok(())).await?;
        for (name, sql, types) in statements {
            frontend::parse(name, sql, types.iter().copied(), &mut lean.out)?;
        }
        frontend::sync(&mut lean.out);
        lean.flush().await?;
        lean.until_ready(|_| Ok(())).await?;
        Ok(lean)
    }

    /// Queues `statements` runs of the prepared statement `name` (no parameters) followed by
    /// one Sync: they run in one implicit transaction, answered by one ReadyForQuery.
    pub fn queue_batch(&mut self, name: &str, statements: usize) -> Result<(), Error> {
        for _ in 0..statements {
            self.bind_only(name, &[])?;
        }
        frontend::sync(&mut self.out);
        Ok(())
    }

    /// Sends what was queued.
    pub async fn send(&mut self) -> Result<(), Error> {
        self.flush().await
    }

    /// Waits for answers and counts the batches answered in full (their ReadyForQuery) in
    /// everything read so far; a server error ends the run.
    pub async fn answered_batches(&mut self) -> Result<usize, Error> {
        loop {
            let mut ready = 0;
            while let Some(message) = Message::parse(&mut self.input)? {
                match message {
                    Message::ReadyForQuery(_) => ready += 1,
                    Message::ErrorResponse(body) => return Err(server_error(&body)?),
                    _ => {}
                }
            }
            if ready > 0 {
                return Ok(ready);
            }
            if self.stream.read_buf(&mut self.input).await? == 0 {
                return Err("the server closed the connection".into());
            }
        }
    }

    /// Claims one task: its id and attempt, or `None` when the queue is empty. With `done`,
    /// first writes that task's success, pipelined in the same round trip (each statement
    /// with its own Sync, as tokio-postgres sends them).
    pub async fn succeed_and_claim(
        &mut self,
        done: Option<(i64, i32, i64)>,
        owner: &str,
        token: i64,
        lease_ms: f64,
    ) -> Result<Option<(i64, i32)>, Error> {
        if let Some((id, attempt, token)) = done {
            self.bind(
                "succeed",
                &[Param::Int8(id), Param::Int4(attempt), Param::Int8(token)],
            )?;
        }
        self.bind(
            "claim",
            &[
                Param::Text(owner),
                Param::Int8(token),
                Param::Literal(&format!("{{{lease_ms}}}")),
                Param::Literal(KINDS),
                Param::Text("default"),
            ],
        )?;
        self.flush().await?;
        if done.is_some() {
            let mut updated = false;
            self.until_ready(|m| {
                if let Message::CommandComplete(body) = m {
                    updated = body.tag()? == "UPDATE 1";
                }
                Ok(())
            })
            .await?;
            if !updated {
                return Err("the final write matched no row".into());
            }
        }
        let mut claimed = None;
        self.until_ready(|m| {
            if let Message::DataRow(row) = m {
                let buffer = row.buffer();
                let mut ranges = row.ranges();
                let mut column = || -> Result<&[u8], Error> {
                    let range = ranges.next()?.flatten().ok_or("a NULL or missing column")?;
                    buffer
                        .get(range)
                        .ok_or_else(|| "a column past the row's end".into())
                };
                // RETURNING t.id, t.kind, t.payload, t.attempt, t.max_attempts
                let id = i64::from_be_bytes(column()?.try_into()?);
                let _kind = std::str::from_utf8(column()?)?;
                let _payload: serde_json::Value = serde_json::from_slice(column()?.get(1..).ok_or("jsonb")?)?;
                let attempt = i32::from_be_bytes(column()?.try_into()?);
                let _max_attempts = i32::from_be_bytes(column()?.try_into()?);
                claimed = Some((id, attempt));
            }
            Ok(())
        })
        .await?;
        Ok(claimed)
    }

    /// Queues one statement with its own Sync, as tokio-postgres sends it.
    fn bind(&mut self, statement: &str, params: &[Param<'_>]) -> Result<(), Error> {
        self.bind_only(statement, params)?;
        frontend::sync(&mut self.out);
        Ok(())
    }

    /// Queues Bind and Execute of one statement, without a Sync.
    fn bind_only(&mut self, statement: &str, params: &[Param<'_>]) -> Result<(), Error> {
        let formats: Vec<i16> = params
            .iter()
            .map(|p| i16::from(!matches!(p, Param::Literal(_))))
            .collect();
        frontend::bind(
            "",
            statement,
            formats,
            params,
            |p, buf| {
                match p {
                    Param::Text(s) | Param::Literal(s) => buf.put_slice(s.as_bytes()),
                    Param::Int8(v) => buf.put_i64(*v),
                    Param::Int4(v) => buf.put_i32(*v),
                }
                Ok(IsNull::No)
            },
            [1],
            &mut self.out,
        )
        .map_err(|_| "bind failed")?;
        frontend::execute("", 0, &mut self.out)?;
        Ok(())
    }

    async fn flush(&mut self) -> Result<(), Error> {
        self.stream.write_all(&self.out).await?;
        self.out.clear();
        Ok(())
    }

    /// Reads messages up to the next ReadyForQuery, handing each to `each`.
    async fn until_ready(
        &mut self,
        mut each: impl FnMut(&Message) -> Result<(), Error>,
    ) -> Result<(), Error> {
        loop {
            while let Some(message) = Message::parse(&mut self.input)? {
                match message {
                    Message::ReadyForQuery(_) => return Ok(()),
                    Message::ErrorResponse(body) => return Err(server_error(&body)?),
                    other => each(&other)?,
                }
            }
            if self.stream.read_buf(&mut self.input).await? == 0 {
                return Err("the server closed the connection".into());
            }
        }
    }
}

/// A server's error as the run's error: its message.
fn server_error(body: &postgres_protocol::message::backend::ErrorResponseBody) -> Result<Error, Error> {
    let mut fields = body.fields();
    let mut text = String::new();
    while let Some(field) = fields.next()? {
        if field.type_() == b'M' {
            text = String::from_utf8_lossy(field.value_bytes()).into_owned();
        }
    }
    Ok(format!("server error: {text}").into())
}
