//! PostgreSQL, frontend/backend protocol 3.0: one span per statement the server executed.
//!
//! The client's messages start exchanges: a simple `Query` holds one or more statements, an
//! extended-protocol `Execute` runs the statement a `Parse` prepared (its text remembered per
//! connection, by name) through the portal a `Bind` made. The server's `CommandComplete`,
//! `PortalSuspended` and `ErrorResponse` end them, in order. A `Sync` (or a simple query) ends a
//! batch: after an error the server skips the rest of the batch, so what of it was not answered
//! by the `ReadyForQuery` that closes it was never executed, and has no span.
//!
//! Hand-written on [`frames`](super::frames) rather than on a protocol crate: captures are
//! bounded prefixes of each write with gaps, often joined mid-connection, while the crates parse
//! whole messages of one direction (`postgres-protocol` only the backend's) or panic on corrupt
//! input (`pgwire`). Every message's length is in its head, so unseen bytes are skipped by count;
//! a lost place is found again only at a chunk boundary where a message plausibly starts, and
//! until the batch in progress ends its answers complete nothing, so no span gets a wrong text.

use std::collections::VecDeque;
use std::sync::Arc;

use super::db::{DbCall, DbOutcome, DbSystem, text_of};
use super::frames::{Input, Layout, Message, Next, Reader};
use super::sql::{self, Dialect};
use super::{Context, Detection, Exchange, Parser, Protocol, Side, Verdict};
use crate::connection::context::{TraceContext, TraceParent};
use crate::connection::stream::Chunk;
use crate::transaction::Facts;

/// PostgreSQL as the protocol layer knows it.
pub static PROTOCOL: Protocol = Protocol {
    name: "postgresql",
    detect,
    parser: new_parser,
};

fn new_parser() -> Box<dyn Parser> {
    Box::new(Postgres::default())
}

/// Protocol 3.0 in a startup message.
const PROTOCOL_3: u32 = 3 << 16;
/// Request codes in the place of the protocol version.
const SSL_REQUEST: u32 = 80_877_103;
const GSSENC_REQUEST: u32 = 80_877_104;
const CANCEL_REQUEST: u32 = 80_877_102;
/// The server's limit on a startup message.
const MAX_STARTUP: u32 = 10_000;
/// Longer messages do not occur (the server's limit is 1 GiB).
const MAX_MESSAGE: u32 = 1 << 30;
/// Bytes of a message body kept when it spans chunks, and of statement text kept.
const MAX_TEXT: usize = 1024;
/// Prepared statements and portals remembered per connection.
const MAX_STATEMENTS: usize = 64;
const MAX_PORTALS: usize = 16;
/// Longest statement or portal name remembered (clients use short generated names).
const MAX_NAME: usize = 64;
/// Executions awaiting their answers on one connection.
const MAX_PENDING: usize = 256;

/// Client message types after the startup.
const CLIENT_TAGS: &[u8] = b"QPBESCDHXdcfFp";
/// Server message types.
const SERVER_TAGS: &[u8] = b"RSKZCEINTDtn123sGHWdcAVv";

fn be32(bytes: &[u8]) -> Option<u32> {
    Some(u32::from_be_bytes(bytes.get(..4)?.try_into().ok()?))
}

/// Tagged messages: a type byte and a length counting itself.
const TAGGED: Layout = Layout {
    head_len: 5,
    decode: |head| {
        let len = be32(head.get(1..)?)?;
        (4..=MAX_MESSAGE)
            .contains(&len)
            .then(|| (head[0], u64::from(len - 4)))
    },
};

/// The client's first messages: a length counting itself, then the request code.
const UNTAGGED: Layout = Layout {
    head_len: 4,
    decode: |head| {
        let len = be32(head)?;
        (8..=MAX_STARTUP)
            .contains(&len)
            .then(|| (0, u64::from(len - 4)))
    },
};

/// A startup message, SSL or GSS encryption request, or cancel request from its first bytes.
fn is_startup(bytes: &[u8]) -> bool {
    let (Some(len), Some(code)) = (be32(bytes), bytes.get(4..).and_then(be32)) else {
        return false;
    };
    match code {
        PROTOCOL_3 => (8..=MAX_STARTUP).contains(&len),
        SSL_REQUEST | GSSENC_REQUEST => len == 8,
        CANCEL_REQUEST => len == 16,
        _ => false,
    }
}

/// A message head with a plausible length whose type is one of `tags`.
fn is_head(bytes: &[u8], tags: &[u8]) -> bool {
    bytes.first().is_some_and(|tag| tags.contains(tag))
        && bytes
            .get(1..)
            .and_then(be32)
            .is_some_and(|len| (4..=MAX_MESSAGE).contains(&len))
}

/// A NUL-terminated string at the start of `bytes`, and what follows it.
fn cstr(bytes: &[u8]) -> Option<(&[u8], &[u8])> {
    let end = bytes.iter().position(|&c| c == 0)?;
    Some((&bytes[..end], &bytes[end + 1..]))
}

/// A client message that starts a query mid-connection: a simple query or a `Parse` whose text
/// starts with a SQL keyword, or a whole `Bind` directly followed by another extended-protocol
/// message.
fn is_query_start(bytes: &[u8]) -> bool {
    if !is_head(bytes, b"QPB") {
        return false;
    }
    let body = &bytes[5..];
    // A message wholly in view ends where its length says, with a NUL for `Q` and `P`.
    let len = be32(&bytes[1..]).map_or(0, |len| len as usize);
    let terminated = bytes.get(len).is_none_or(|&last| last == 0);
    match bytes[0] {
        b'Q' => terminated && sql::starts_with_operation(body, Dialect::Postgres),
        b'P' => cstr(body).is_some_and(|(name, text)| {
            name.len() <= MAX_NAME && sql::starts_with_operation(text, Dialect::Postgres)
        }),
        _ => {
            let after = bytes.get(1 + len..).unwrap_or_default();
            cstr(body).and_then(|(_, rest)| cstr(rest)).is_some() && is_head(after, b"EDSH")
        }
    }
}

/// PostgreSQL is recognized from the client: a startup (or encryption request) at the start of
/// a connection, a query message at a boundary of one joined mid-stream.
fn detect(bytes: &[u8], side: Option<Side>) -> Detection {
    if side == Some(Side::Server) {
        return Detection::No;
    }
    if is_startup(bytes) || is_query_start(bytes) {
        Detection::Yes(Side::Client)
    } else {
        Detection::No
    }
}

/// A statement's text as `Parse` (or a simple query) sent it.
#[derive(Clone, Debug)]
struct Statement {
    text: Arc<str>,
    truncated: bool,
}

/// An execution awaiting its answer.
#[derive(Debug)]
struct Pending {
    statement: Option<Statement>,
    /// The `Sync`-delimited batch it was sent in.
    batch: u64,
    /// Sent while the client stream was not followed exactly: its answer cannot be told apart.
    unsure: bool,
    start_ns: u64,
    tid: Option<u32>,
    trace: TraceContext,
}

/// The PostgreSQL state of one connection: a reader per direction, and what their messages
/// tell (apart, so that a message borrowed from a reader can update the rest).
#[derive(Debug, Default)]
pub struct Postgres {
    client: Reader,
    server: Reader,
    conn: Conn,
}

/// What one connection's messages told so far.
#[derive(Debug, Default)]
struct Conn {
    /// The first client chunk was seen: whether the connection was seen from its startup.
    started: bool,
    /// The client's next message is untagged (startup or encryption request).
    client_untagged: bool,
    /// The server answers an encryption request with one byte.
    encryption_answer: bool,
    /// Server bytes reached the parser.
    server_fed: bool,
    namespace: Option<Arc<str>>,
    statements: Vec<(Box<str>, Statement)>,
    portals: Vec<(Box<str>, Option<Statement>)>,
    pending: VecDeque<Pending>,
    /// Batches the client started, and the server closed with `ReadyForQuery`.
    client_batch: u64,
    server_batch: u64,
    /// The client stream lost its place during the current batch.
    client_unsure: bool,
    /// The server stream lost its place: answers until the next `ReadyForQuery` are unsure.
    server_unsure: bool,
    /// The latest execution request, for an answer whose request was not visible.
    last_request: Option<(u64, Option<u32>)>,
}

impl Parser for Postgres {
    fn feed(&mut self, side: Side, chunk: &Chunk<'_>, cx: &mut Context<'_>) -> Verdict {
        let mut input = Input::new(chunk);
        let conn = &mut self.conn;
        match side {
            Side::Client => {
                if !conn.started {
                    conn.started = true;
                    conn.client_untagged = is_startup(chunk.visible);
                    if !conn.client_untagged {
                        // Joined mid-stream: the server's answers in flight are not ours.
                        self.server = Reader::lost();
                    }
                }
                if self.client.is_lost() && chunk.at_boundary && is_head(chunk.visible, CLIENT_TAGS)
                {
                    self.client.resync();
                }
                read_client(&mut self.client, conn, &mut input, cx)
            }
            Side::Server => {
                if conn.encryption_answer {
                    match input.visible.first() {
                        Some(b'N') => {
                            conn.encryption_answer = false;
                            input.take(1);
                        }
                        // Encrypted from here on: not ours to read.
                        Some(b'S' | b'G') => return Verdict::Abandon,
                        // An old server refusing with an ErrorResponse, read as such.
                        _ => conn.encryption_answer = false,
                    }
                }
                if self.server.is_lost() && chunk.at_boundary && is_head(chunk.visible, SERVER_TAGS)
                {
                    self.server.resync();
                    // Answers the parser saw nothing of before were dropped with their place;
                    // a connection joined mid-stream starts reading its server side here.
                    conn.server_unsure = conn.server_fed;
                }
                conn.server_fed = true;
                read_server(&mut self.server, conn, &mut input, cx);
                Verdict::Keep
            }
        }
    }

    /// Executions still waiting end without an answer; unless answers were lost, when what
    /// became of them is unknown.
    fn finish(&mut self, end_ns: u64, cx: &mut Context<'_>) {
        if self.server.is_lost() || self.conn.server_unsure {
            return self.discard(cx);
        }
        while let Some(pending) = self.conn.pending.pop_front() {
            self.conn
                .complete(pending, None, DbOutcome::NoResponse, end_ns, cx);
        }
    }

    fn discard(&mut self, cx: &mut Context<'_>) {
        for pending in std::mem::take(&mut self.conn.pending) {
            cx.drop_exchange(pending.tid, &pending.trace);
        }
    }

    fn heap_bytes(&self) -> usize {
        let conn = &self.conn;
        let statements: usize = conn
            .statements
            .iter()
            .map(|(name, s)| name.len() + s.text.len())
            .sum();
        let portals: usize = conn.portals.iter().map(|(name, _)| name.len()).sum();
        self.client.buffered()
            + self.server.buffered()
            + statements
            + portals
            + conn.statements.capacity() * size_of::<(Box<str>, Statement)>()
            + conn.portals.capacity() * size_of::<(Box<str>, Option<Statement>)>()
            + conn.pending.capacity() * size_of::<Pending>()
    }
}

fn read_client(
    reader: &mut Reader,
    conn: &mut Conn,
    input: &mut Input<'_>,
    cx: &mut Context<'_>,
) -> Verdict {
    loop {
        let layout = if conn.client_untagged {
            UNTAGGED
        } else {
            TAGGED
        };
        let was_lost = reader.is_lost();
        let message = match reader.next(input, layout, MAX_TEXT) {
            Next::Message(message) => message,
            Next::NeedMore => return Verdict::Keep,
            Next::Lost => {
                if !was_lost {
                    conn.client_lost();
                }
                return Verdict::Keep;
            }
        };
        if conn.client_untagged {
            if let Some(verdict) = conn.on_startup(&message) {
                return verdict;
            }
            continue;
        }
        let Message {
            tag,
            body,
            whole,
            start_ns,
            tid,
            ..
        } = message;
        match tag {
            b'Q' => conn.on_query(body, whole, start_ns, tid, cx),
            b'P' => conn.on_parse(body, whole),
            b'B' => conn.on_bind(body),
            b'E' => {
                let statement = cstr(body).and_then(|(portal, _)| conn.portal(portal));
                conn.push(statement, None, start_ns, tid, cx);
            }
            b'S' => conn.end_client_batch(),
            b'C' => conn.on_close(body),
            tag if CLIENT_TAGS.contains(&tag) => {}
            _ => {
                reader.lose();
                conn.client_lost();
                return Verdict::Keep;
            }
        }
    }
}

fn read_server(reader: &mut Reader, conn: &mut Conn, input: &mut Input<'_>, cx: &mut Context<'_>) {
    loop {
        let was_lost = reader.is_lost();
        let end_ns = input.timestamp_ns;
        let message = match reader.next(input, TAGGED, MAX_TEXT) {
            Next::Message(message) => message,
            Next::NeedMore => return,
            Next::Lost => {
                if !was_lost {
                    conn.server_unsure = true;
                }
                return;
            }
        };
        match message.tag {
            b'C' => {
                let tag = cstr(message.body).map_or(message.body, |(tag, _)| tag);
                let operation = tag
                    .split(|&c| c == b' ')
                    .next()
                    .filter(|op| !op.is_empty() && op.iter().all(u8::is_ascii_uppercase))
                    .map(|op| String::from_utf8_lossy(op).into_owned());
                conn.answer(DbOutcome::Ok, operation, end_ns, cx);
            }
            b's' => conn.answer(DbOutcome::Ok, None, end_ns, cx),
            b'E' => {
                let code = error_code(message.body).unwrap_or_default();
                conn.answer(DbOutcome::Error(code), None, end_ns, cx);
            }
            b'Z' => conn.ready(end_ns, cx),
            tag if SERVER_TAGS.contains(&tag) => {}
            _ => {
                reader.lose();
                conn.server_unsure = true;
                return;
            }
        }
    }
}

impl Conn {
    /// An untagged client message; `Some` verdict ends reading the chunk.
    fn on_startup(&mut self, message: &Message<'_>) -> Option<Verdict> {
        let code = be32(message.body)?;
        match code {
            SSL_REQUEST | GSSENC_REQUEST => {
                self.encryption_answer = true;
                None
            }
            // A cancel request's connection carries nothing else.
            CANCEL_REQUEST => Some(Verdict::Abandon),
            PROTOCOL_3 => {
                self.client_untagged = false;
                let mut params = message.body.get(4..).unwrap_or_default();
                let (mut user, mut database) = (None, None);
                while let Some((key, rest)) = cstr(params) {
                    let Some((value, rest)) = cstr(rest) else {
                        break;
                    };
                    match key {
                        b"user" => user = Some(value),
                        b"database" => database = Some(value),
                        _ => {}
                    }
                    params = rest;
                }
                // The database defaults to the user's name, when the message was seen whole
                // (only then is its absence known).
                let fallback = user.filter(|_| message.whole);
                self.namespace = database
                    .or(fallback)
                    .filter(|name| !name.is_empty())
                    .map(|name| text_of(name, MAX_NAME).0);
                None
            }
            _ => Some(Verdict::Abandon),
        }
    }

    fn on_query(
        &mut self,
        body: &[u8],
        whole: bool,
        start_ns: u64,
        tid: Option<u32>,
        cx: &mut Context<'_>,
    ) {
        let text = cstr(body).map_or(body, |(text, _)| text);
        let truncated = !whole || text.len() > MAX_TEXT;
        let (text, _) = text_of(text, MAX_TEXT);
        // A simple query's text is sent each time: a context in its comment is current.
        let propagated = sql::comment_traceparent(&text);
        let statements = sql::statements(&text, Dialect::Postgres);
        let count = statements.len();
        if count == 1 && statements[0].len() == text.len() {
            // The common case: one statement, its text shared as is.
            let statement = Statement {
                text: text.clone(),
                truncated,
            };
            self.push(Some(statement), propagated, start_ns, tid, cx);
        } else {
            for (i, statement) in statements.into_iter().enumerate() {
                let statement = Statement {
                    text: Arc::from(statement),
                    truncated: truncated && i + 1 == count,
                };
                self.push(Some(statement), propagated, start_ns, tid, cx);
            }
        }
        self.last_request = Some((start_ns, tid));
        self.end_client_batch();
    }

    fn on_parse(&mut self, body: &[u8], whole: bool) {
        let Some((name, rest)) = cstr(body) else {
            return;
        };
        let (text, truncated) = match cstr(rest) {
            Some((text, _)) => (text, false),
            None => (rest, true),
        };
        let (text, cut) = text_of(text, MAX_TEXT);
        let statement = Statement {
            text,
            truncated: truncated || cut || (!whole && cstr(rest).is_none()),
        };
        self.statements.retain(|(n, _)| n.as_bytes() != name);
        if name.len() > MAX_NAME {
            return;
        }
        if self.statements.len() >= MAX_STATEMENTS {
            self.statements.remove(0);
        }
        self.statements
            .push((String::from_utf8_lossy(name).into(), statement));
    }

    fn on_bind(&mut self, body: &[u8]) {
        let Some((portal, rest)) = cstr(body) else {
            return;
        };
        let statement = cstr(rest).and_then(|(name, _)| self.statement(name));
        self.portals.retain(|(n, _)| n.as_bytes() != portal);
        if portal.len() > MAX_NAME {
            return;
        }
        if self.portals.len() >= MAX_PORTALS {
            self.portals.remove(0);
        }
        self.portals
            .push((String::from_utf8_lossy(portal).into(), statement));
    }

    fn on_close(&mut self, body: &[u8]) {
        let Some((&kind, rest)) = body.split_first() else {
            return;
        };
        let name = cstr(rest).map_or(rest, |(name, _)| name);
        match kind {
            b'S' => self.statements.retain(|(n, _)| n.as_bytes() != name),
            b'P' => self.portals.retain(|(n, _)| n.as_bytes() != name),
            _ => {}
        }
    }

    fn statement(&self, name: &[u8]) -> Option<Statement> {
        self.statements
            .iter()
            .find(|(n, _)| n.as_bytes() == name)
            .map(|(_, s)| s.clone())
    }

    fn portal(&self, name: &[u8]) -> Option<Statement> {
        self.portals
            .iter()
            .find(|(n, _)| n.as_bytes() == name)
            .and_then(|(_, s)| s.clone())
    }

    /// An execution request: its exchange starts, continuing the context the client carried.
    fn push(
        &mut self,
        statement: Option<Statement>,
        propagated: Option<TraceParent>,
        start_ns: u64,
        tid: Option<u32>,
        cx: &mut Context<'_>,
    ) {
        if self.pending.len() >= MAX_PENDING
            && let Some(dropped) = self.pending.pop_front()
        {
            cx.drop_exchange(dropped.tid, &dropped.trace);
        }
        let trace = cx.start_trace(tid, propagated);
        self.pending.push_back(Pending {
            statement,
            batch: self.client_batch,
            unsure: self.client_unsure,
            start_ns,
            tid,
            trace,
        });
        self.last_request = Some((start_ns, tid));
    }

    fn end_client_batch(&mut self) {
        self.client_batch += 1;
        self.client_unsure = false;
    }

    /// The client stream lost its place: what the current batch answers can no longer be
    /// matched to requests.
    fn client_lost(&mut self) {
        self.client_unsure = true;
        let batch = self.client_batch;
        for pending in self.pending.iter_mut().filter(|p| p.batch == batch) {
            pending.unsure = true;
        }
    }

    /// An answer to the oldest execution of the batch the server is in.
    fn answer(
        &mut self,
        outcome: DbOutcome,
        operation: Option<String>,
        end_ns: u64,
        cx: &mut Context<'_>,
    ) {
        match self.pending.front() {
            Some(front) if front.batch == self.server_batch => {
                let Some(pending) = self.pending.pop_front() else {
                    return;
                };
                if pending.unsure || self.server_unsure {
                    cx.drop_exchange(pending.tid, &pending.trace);
                } else {
                    self.complete(pending, operation, outcome, end_ns, cx);
                }
            }
            // Answers of a batch whose requests were not seen (joined mid-stream, or text the
            // capture cut): a span with what the answer tells, timed from the latest request.
            None if !self.server_unsure => {
                let Some((start_ns, tid)) = self.last_request else {
                    return;
                };
                let trace = cx.start_trace(tid, None);
                let pending = Pending {
                    statement: None,
                    batch: self.server_batch,
                    unsure: false,
                    start_ns,
                    tid,
                    trace,
                };
                self.complete(pending, operation, outcome, end_ns, cx);
            }
            _ => {}
        }
    }

    /// `ReadyForQuery` at `end_ns`: the batch is over; what of it was not answered was not
    /// executed.
    fn ready(&mut self, end_ns: u64, cx: &mut Context<'_>) {
        if self.server_unsure {
            // Which batch ended is unknown after a gap: every request sent before it is given
            // up, and counting starts again from the first one sent after it.
            while let Some(pending) = self.pending.pop_front_if(|p| p.start_ns <= end_ns) {
                cx.drop_exchange(pending.tid, &pending.trace);
            }
            self.server_unsure = false;
            self.server_batch = self.pending.front().map_or(self.client_batch, |p| p.batch);
            return;
        }
        let batch = self.server_batch;
        while let Some(pending) = self.pending.pop_front_if(|p| p.batch <= batch) {
            cx.drop_exchange(pending.tid, &pending.trace);
        }
        // The server is never ahead of the client: the `ReadyForQuery` after the startup, or
        // one of a batch sent before the sidecar joined, closes no batch of ours.
        self.server_batch = (batch + 1).min(self.client_batch);
    }

    fn complete(
        &self,
        pending: Pending,
        operation: Option<String>,
        outcome: DbOutcome,
        end_ns: u64,
        cx: &mut Context<'_>,
    ) {
        let mut call = DbCall::new(DbSystem::Postgresql, outcome);
        call.namespace = self.namespace.clone();
        match pending.statement {
            Some(statement) => {
                call.statement = Some(statement.text);
                call.truncated = statement.truncated;
            }
            None => call.operation = operation,
        }
        cx.complete(Exchange {
            tid: pending.tid,
            start_ns: pending.start_ns,
            end_ns,
            trace: pending.trace,
            facts: Facts::Db(call),
        });
    }
}

/// The SQLSTATE code field of an `ErrorResponse`.
fn error_code(mut body: &[u8]) -> Option<String> {
    while let Some((&field, rest)) = body.split_first() {
        if field == 0 {
            break;
        }
        let (value, rest) = cstr(rest)?;
        if field == b'C' {
            return (value.len() == 5 && value.iter().all(u8::is_ascii_alphanumeric))
                .then(|| String::from_utf8_lossy(value).into_owned());
        }
        body = rest;
    }
    None
}

#[cfg(test)]
mod tests;
