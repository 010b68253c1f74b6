//! MySQL and MariaDB, client/server protocol: one span per `COM_QUERY` and `COM_STMT_EXECUTE`.
//!
//! Packets are a 3-byte length and a sequence id, which is 0 on the client packet that starts a
//! command and counts the packets of its answer from 1. The server speaks first (its greeting
//! names the product: MariaDB says so in its version), the client's handshake response names
//! the database (`db.namespace`, changed later by `COM_INIT_DB` or `USE`). In the command phase
//! each command gets one answer: OK, ERR (error number and SQLSTATE), or a result set (column
//! count, column definitions, an EOF unless `CLIENT_DEPRECATE_EOF`, rows, and a terminating EOF
//! or OK that says whether more results follow). `COM_STMT_PREPARE`'s answer gives the statement
//! id `COM_STMT_EXECUTE` names later: its text is remembered per connection, by id.
//!
//! Hand-written on [`frames`](super::frames) rather than on `mysql_common`, which is heavy, has
//! no `COM_STMT_EXECUTE` parser and wants whole packets: captures are bounded prefixes with gaps,
//! often joined mid-connection. Unseen packet bodies are skipped by their length; a lost place is
//! found again at a chunk boundary where a sequence id says a command (client) or its answer
//! (server) starts. The protocol has no pipelining, so a new command also ends the answer before
//! it even when the end of that answer was not understood.

use std::collections::VecDeque;
use std::sync::Arc;

use super::db::{DbCall, DbOutcome, DbSystem, text_of};
use super::frames::{Input, Layout, Message, Next, Reader};
use super::sql::{self, Dialect};
use super::{Context, Detection, Exchange, Parser, Protocol, Side, Verdict};
use crate::connection::context::TraceContext;
use crate::connection::stream::Chunk;
use crate::transaction::Facts;

/// MySQL and MariaDB as the protocol layer knows them.
pub static PROTOCOL: Protocol = Protocol {
    name: "mysql",
    detect,
    parser: new_parser,
};

fn new_parser() -> Box<dyn Parser> {
    Box::new(Mysql::default())
}

/// Packet heads: a little-endian 24-bit length, then the sequence id (the tag).
const PACKET: Layout = Layout {
    head_len: 4,
    decode: |head| {
        let len = u32::from_le_bytes([head[0], head[1], head[2], 0]);
        Some((head[3], u64::from(len)))
    },
};

/// A packet of this length is continued by the next one.
const MAX_PACKET: u64 = 0xff_ffff;
/// Bytes of a packet kept when it spans chunks, and of statement text kept.
const MAX_TEXT: usize = 1024;
/// Prepared statements remembered per connection.
const MAX_STATEMENTS: usize = 64;
/// Commands awaiting their answers (the protocol has no pipelining; a few fire-and-forget
/// commands may queue ahead).
const MAX_PENDING: usize = 16;
/// Longest database name kept.
const MAX_NAME: usize = 64;

const COM_QUIT: u8 = 0x01;
const COM_INIT_DB: u8 = 0x02;
const COM_QUERY: u8 = 0x03;
const COM_FIELD_LIST: u8 = 0x04;
const COM_STATISTICS: u8 = 0x09;
const COM_CHANGE_USER: u8 = 0x11;
const COM_STMT_PREPARE: u8 = 0x16;
const COM_STMT_EXECUTE: u8 = 0x17;
const COM_STMT_SEND_LONG_DATA: u8 = 0x18;
const COM_STMT_CLOSE: u8 = 0x19;
const COM_STMT_FETCH: u8 = 0x1c;

const CLIENT_CONNECT_WITH_DB: u32 = 1 << 3;
const CLIENT_SSL: u32 = 1 << 11;
const CLIENT_SECURE_CONNECTION: u32 = 1 << 15;
const CLIENT_PLUGIN_AUTH_LENENC_DATA: u32 = 1 << 21;
const CLIENT_DEPRECATE_EOF: u32 = 1 << 24;
const SERVER_MORE_RESULTS_EXISTS: u16 = 0x0008;

/// The first bytes of a packet: its length, sequence id and payload prefix.
fn packet(bytes: &[u8]) -> Option<(u32, u8, &[u8])> {
    let head = bytes.get(..4)?;
    let len = u32::from_le_bytes([head[0], head[1], head[2], 0]);
    Some((len, head[3], &bytes[4..]))
}

/// A server greeting: protocol 10, then a printable NUL-terminated version.
fn is_greeting(bytes: &[u8]) -> bool {
    let Some((len, 0, payload)) = packet(bytes) else {
        return false;
    };
    if !(32..=1024).contains(&len) || payload.first() != Some(&10) {
        return false;
    }
    let version = &payload[1..payload.len().min(len as usize).min(80)];
    let Some(end) = version.iter().position(|&c| c == 0) else {
        return false;
    };
    // After the version: a thread id (4), the first 8 bytes of auth data and a 0 filler.
    end > 0
        && version[..end].iter().all(|c| c.is_ascii_graphic())
        && payload.get(1 + end + 1 + 12) == Some(&0)
}

/// A client command that starts a statement: `COM_QUERY` or `COM_STMT_PREPARE` whose text
/// starts with a SQL keyword.
fn is_statement_start(bytes: &[u8]) -> bool {
    let Some((len, 0, payload)) = packet(bytes) else {
        return false;
    };
    let end = payload.len().min(len as usize);
    let text = &payload[1.min(end)..end];
    len >= 2
        && matches!(payload.first(), Some(&(COM_QUERY | COM_STMT_PREPARE)))
        && sql::starts_with_operation(text, Dialect::Mysql)
        // Statement text is not NUL-terminated (PostgreSQL's is).
        && !text.contains(&0)
}

/// MySQL is recognized from the server's greeting at the start of a connection, or from a
/// statement command at a boundary of one joined mid-stream.
fn detect(bytes: &[u8], side: Option<Side>) -> Detection {
    if side != Some(Side::Client) && is_greeting(bytes) {
        Detection::Yes(Side::Server)
    } else if side != Some(Side::Server) && is_statement_start(bytes) {
        Detection::Yes(Side::Client)
    } else {
        Detection::No
    }
}

/// A length-encoded integer at the start of `bytes`, and what follows it.
fn lenenc(bytes: &[u8]) -> Option<(u64, &[u8])> {
    let (&first, rest) = bytes.split_first()?;
    let size = match first {
        0xfc => 2,
        0xfd => 3,
        0xfe => 8,
        0xfb | 0xff => return None,
        value => return Some((u64::from(value), rest)),
    };
    let digits = rest.get(..size)?;
    let value = digits
        .iter()
        .rev()
        .fold(0u64, |acc, &b| (acc << 8) | u64::from(b));
    Some((value, &rest[size..]))
}

fn le16(bytes: &[u8]) -> Option<u16> {
    Some(u16::from_le_bytes(bytes.get(..2)?.try_into().ok()?))
}

fn le32(bytes: &[u8]) -> Option<u32> {
    Some(u32::from_le_bytes(bytes.get(..4)?.try_into().ok()?))
}

/// What a command's answer looks like.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Expect {
    /// OK or ERR.
    Status,
    /// OK, ERR or result sets.
    Results,
    /// `COM_STMT_PREPARE`'s own answer.
    Prepare,
    /// Column definitions ending with an EOF (`COM_FIELD_LIST`), or rows ending so
    /// (`COM_STMT_FETCH`).
    UntilEof,
    /// `COM_STATISTICS`: one text packet.
    Text,
}

/// Where an answer is.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum Reply {
    /// Its first packet is next.
    #[default]
    Start,
    /// Column definitions still to come, then `after`.
    Definitions { left: u64, after: After },
    /// An EOF may follow the definitions, then `after`.
    MaybeEof { after: After },
    /// Rows until an EOF or OK terminator.
    Rows,
}

/// What follows a run of definitions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum After {
    Rows,
    /// A prepared statement's parameters came; its columns are next.
    Columns(u64),
    Done,
}

/// What a command is, for its answer.
#[derive(Debug)]
enum Command {
    /// A statement run: a span.
    Statement {
        statement: Option<(Arc<str>, bool)>,
        trace: TraceContext,
    },
    /// A statement prepared: its text is remembered under the id the answer gives.
    Prepare { text: Arc<str>, truncated: bool },
    /// `COM_INIT_DB`: the namespace changes when it succeeds.
    InitDb(Option<Arc<str>>),
    /// Anything else that has an answer: nothing to report.
    Other,
}

#[derive(Debug)]
struct Pending {
    command: Command,
    expect: Expect,
    start_ns: u64,
    tid: Option<u32>,
}

/// Where the connection is.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum Phase {
    /// Seen from its start: the server greeting comes first.
    #[default]
    Greeting,
    /// The client's handshake response (or SSL request) is next.
    HandshakeResponse,
    /// Authentication until the server's OK or ERR.
    Auth,
    Command,
}

/// The MySQL state of one connection: a reader per direction, and what their packets told.
#[derive(Debug, Default)]
pub struct Mysql {
    client: Reader,
    server: Reader,
    conn: Conn,
}

#[derive(Debug, Default)]
struct Conn {
    started: bool,
    phase: Phase,
    mariadb: bool,
    server_caps: u32,
    /// Both sides' capabilities, once the handshake was seen.
    caps: Option<u32>,
    namespace: Option<Arc<str>>,
    statements: Vec<(u32, Arc<str>, bool)>,
    pending: VecDeque<Pending>,
    reply: Reply,
    /// A terminating EOF may still come for the answer just completed, with this sequence id.
    trailing_eof: Option<u8>,
    /// The previous client packet had the maximum length: this one continues it.
    client_continued: bool,
    server_continued: bool,
    last_server_ns: u64,
}

impl Parser for Mysql {
    fn feed(&mut self, side: Side, chunk: &Chunk<'_>, cx: &mut Context<'_>) -> Verdict {
        let conn = &mut self.conn;
        if !conn.started {
            conn.started = true;
            if !(side == Side::Server && is_greeting(chunk.visible)) {
                // Joined mid-stream: at a command, and the server's bytes in flight are not ours.
                conn.phase = Phase::Command;
                self.server = Reader::lost();
            }
        }
        let mut input = Input::new(chunk);
        match side {
            Side::Client => {
                if self.client.is_lost()
                    && chunk.at_boundary
                    && packet(chunk.visible).is_some_and(|(_, seq, _)| seq == 0)
                {
                    self.client.resync();
                    conn.client_continued = false;
                }
                read(&mut self.client, &mut input, |message| {
                    conn.on_client(message, cx)
                })
            }
            Side::Server => {
                if self.server.is_lost()
                    && chunk.at_boundary
                    && packet(chunk.visible).is_some_and(|(_, seq, _)| seq == 1)
                {
                    self.server.resync();
                    conn.server_continued = false;
                    conn.reply = Reply::Start;
                }
                let verdict = read(&mut self.server, &mut input, |message| {
                    conn.on_server(message, cx)
                });
                conn.last_server_ns = chunk.timestamp_ns;
                verdict
            }
        }
    }

    /// Commands still waiting end without an answer.
    fn finish(&mut self, end_ns: u64, cx: &mut Context<'_>) {
        while let Some(pending) = self.conn.pending.pop_front() {
            self.conn
                .complete(pending, DbOutcome::NoResponse, end_ns, cx);
        }
    }

    fn discard(&mut self, cx: &mut Context<'_>) {
        for pending in std::mem::take(&mut self.conn.pending) {
            if let Command::Statement { trace, .. } = pending.command {
                cx.drop_exchange(pending.tid, &trace);
            }
        }
    }

    fn heap_bytes(&self) -> usize {
        let conn = &self.conn;
        let texts: usize = conn.statements.iter().map(|(_, t, _)| t.len()).sum();
        self.client.buffered()
            + self.server.buffered()
            + texts
            + conn.statements.capacity() * size_of::<(u32, Arc<str>, bool)>()
            + conn.pending.capacity() * size_of::<Pending>()
    }
}

/// Reads the packets of `input`, handing each to `on_packet` until it gives a verdict.
fn read(
    reader: &mut Reader,
    input: &mut Input<'_>,
    mut on_packet: impl FnMut(&Message<'_>) -> Option<Verdict>,
) -> Verdict {
    loop {
        match reader.next(input, PACKET, MAX_TEXT) {
            Next::Message(message) => {
                if let Some(verdict) = on_packet(&message) {
                    return verdict;
                }
            }
            Next::NeedMore | Next::Lost => return Verdict::Keep,
        }
    }
}

impl Conn {
    /// A client packet; `Some` verdict ends reading.
    fn on_client(&mut self, message: &Message<'_>, cx: &mut Context<'_>) -> Option<Verdict> {
        let continued = std::mem::replace(&mut self.client_continued, message.len == MAX_PACKET);
        if continued {
            return None;
        }
        match self.phase {
            Phase::Greeting => None,
            Phase::HandshakeResponse => self.on_handshake_response(message),
            Phase::Auth => None,
            Phase::Command if message.tag == 0 => {
                self.on_command(message, cx);
                None
            }
            Phase::Command => None,
        }
    }

    fn on_handshake_response(&mut self, message: &Message<'_>) -> Option<Verdict> {
        let body = message.body;
        let client_caps = u32::from(le16(body)?);
        if client_caps & (1 << 9) == 0 {
            // Protocol 3.20 and older: not worth following.
            return Some(Verdict::Abandon);
        }
        let client_caps = le32(body)?;
        if client_caps & CLIENT_SSL != 0 && message.len == 32 {
            // TLS from here on: not ours to read.
            return Some(Verdict::Abandon);
        }
        self.caps = Some(client_caps & self.server_caps);
        self.phase = Phase::Auth;
        let rest = body.get(32..)?;
        let end = rest.iter().position(|&c| c == 0)?;
        let rest = &rest[end + 1..];
        let rest = if client_caps & CLIENT_PLUGIN_AUTH_LENENC_DATA != 0 {
            let (len, rest) = lenenc(rest)?;
            rest.get(usize::try_from(len).ok()?..)?
        } else if client_caps & CLIENT_SECURE_CONNECTION != 0 {
            let (&len, rest) = rest.split_first()?;
            rest.get(usize::from(len)..)?
        } else {
            &rest[rest.iter().position(|&c| c == 0)? + 1..]
        };
        if client_caps & CLIENT_CONNECT_WITH_DB != 0 {
            let end = rest.iter().position(|&c| c == 0)?;
            if end > 0 {
                self.namespace = Some(text_of(&rest[..end], MAX_NAME).0);
            }
        }
        None
    }

    fn on_command(&mut self, message: &Message<'_>, cx: &mut Context<'_>) {
        // No pipelining: an answer still open when the client sends a command is over.
        self.close_open_answer(cx);
        let Some((&code, body)) = message.body.split_first() else {
            return;
        };
        let truncated = !message.whole;
        let (command, expect) = match code {
            COM_QUERY => {
                let text = Self::query_text(body);
                let statement = text_of(text, MAX_TEXT);
                let statement = (statement.0, statement.1 || truncated);
                // The text is sent each time: a context in its comment is current.
                let propagated = sql::comment_traceparent(&statement.0);
                let trace = cx.start_trace(message.tid, propagated);
                let command = Command::Statement {
                    statement: Some(statement),
                    trace,
                };
                (command, Expect::Results)
            }
            COM_STMT_EXECUTE => {
                let statement = le32(body).and_then(|id| {
                    self.statements
                        .iter()
                        .find(|(known, _, _)| *known == id)
                        .map(|(_, text, cut)| (text.clone(), *cut))
                });
                let trace = cx.start_trace(message.tid, None);
                (Command::Statement { statement, trace }, Expect::Results)
            }
            COM_STMT_PREPARE => {
                let (text, cut) = text_of(body, MAX_TEXT);
                let command = Command::Prepare {
                    text,
                    truncated: cut || truncated,
                };
                (command, Expect::Prepare)
            }
            COM_STMT_CLOSE => {
                if let Some(id) = le32(body) {
                    self.statements.retain(|(known, _, _)| *known != id);
                }
                return;
            }
            COM_QUIT | COM_STMT_SEND_LONG_DATA => return,
            COM_INIT_DB => {
                // A name cut by the capture would be another database's.
                let name = (message.whole && !body.is_empty() && body.len() <= MAX_NAME)
                    .then(|| text_of(body, MAX_NAME).0);
                (Command::InitDb(name), Expect::Status)
            }
            COM_FIELD_LIST | COM_STMT_FETCH => (Command::Other, Expect::UntilEof),
            COM_STATISTICS => (Command::Other, Expect::Text),
            COM_CHANGE_USER => {
                self.phase = Phase::Auth;
                (Command::Other, Expect::Status)
            }
            // COM_PING, COM_RESET_CONNECTION, COM_SET_OPTION, COM_STMT_RESET, ...
            _ => (Command::Other, Expect::Status),
        };
        if self.pending.len() >= MAX_PENDING
            && let Some(dropped) = self.pending.pop_front()
        {
            self.drop_pending(dropped, cx);
        }
        self.pending.push_back(Pending {
            command,
            expect,
            start_ns: message.start_ns,
            tid: message.tid,
        });
    }

    /// The text of a `COM_QUERY`, past the query attributes a MySQL 8 client may put first
    /// (a parameter count of 0 and one parameter set, when none are sent).
    fn query_text(body: &[u8]) -> &[u8] {
        match body {
            [0, 1, rest @ ..] => rest,
            _ => body,
        }
    }

    /// The answer in progress is over, whatever was understood of its end: it succeeded if it
    /// began, and is dropped if nothing of it was seen.
    fn close_open_answer(&mut self, cx: &mut Context<'_>) {
        let Some(front) = self.pending.front() else {
            return;
        };
        if front.expect == Expect::Prepare {
            // Its statement id was not seen: nothing to remember.
            self.pending.pop_front();
        } else if self.reply != Reply::Start {
            if let Some(pending) = self.pending.pop_front() {
                self.complete(pending, DbOutcome::Ok, self.last_server_ns, cx);
            }
        } else if let Some(pending) = self.pending.pop_front() {
            self.drop_pending(pending, cx);
        }
        self.reply = Reply::Start;
    }

    fn drop_pending(&self, pending: Pending, cx: &mut Context<'_>) {
        if let Command::Statement { trace, .. } = pending.command {
            cx.drop_exchange(pending.tid, &trace);
        }
    }

    /// A server packet; `Some` verdict ends reading.
    fn on_server(&mut self, message: &Message<'_>, cx: &mut Context<'_>) -> Option<Verdict> {
        let continued = std::mem::replace(&mut self.server_continued, message.len == MAX_PACKET);
        if continued {
            return None;
        }
        let body = message.body;
        let first = body.first().copied();
        let short = message.len < 9;
        match self.phase {
            Phase::Greeting => {
                self.on_greeting(body);
                return None;
            }
            Phase::HandshakeResponse => return None,
            Phase::Auth => {
                if matches!(first, Some(0x00 | 0xff)) {
                    self.phase = Phase::Command;
                    // A change of user answered: that command is over.
                    if let Some(pending) = self.pending.pop_front() {
                        self.complete(pending, DbOutcome::Ok, message.start_ns, cx);
                    }
                }
                return None;
            }
            Phase::Command => {}
        }
        if self.trailing_eof.take() == Some(message.tag) && first == Some(0xfe) && short {
            return None;
        }
        let end_ns = message.start_ns;
        let expect = self.pending.front().map(|p| p.expect)?;
        match self.reply {
            Reply::Start => match first {
                Some(0xff) => self.finish_front(error(body), end_ns, cx),
                Some(0x00) if expect == Expect::Prepare => self.on_prepared(body),
                Some(0x00) if expect != Expect::UntilEof => {
                    self.end_of_results(ok_status(body), end_ns, cx);
                }
                Some(0xfe) if short => self.end_of_results(eof_status(body), end_ns, cx),
                // LOCAL INFILE: the client sends the file; the OK or ERR after it ends the answer.
                Some(0xfb) if expect == Expect::Results => {}
                _ => match expect {
                    Expect::Results => {
                        let columns = lenenc(body).map_or(0, |(n, _)| n);
                        self.reply = Reply::Definitions {
                            left: columns,
                            after: After::Rows,
                        };
                    }
                    Expect::UntilEof => self.reply = Reply::Rows,
                    Expect::Text | Expect::Status | Expect::Prepare => {
                        self.finish_front(DbOutcome::Ok, end_ns, cx);
                    }
                },
            },
            Reply::Definitions { left, after } => {
                let left = left.saturating_sub(1);
                self.reply = if left > 0 {
                    Reply::Definitions { left, after }
                } else {
                    self.after_definitions(after, message.tag, end_ns, cx)
                };
            }
            Reply::MaybeEof { after } => {
                self.reply = self.enter(after, end_ns, cx);
                if !(first == Some(0xfe) && short) {
                    return self.on_server_again(message, cx);
                }
            }
            Reply::Rows => match first {
                Some(0xfe) if message.len < MAX_PACKET => {
                    let status = if short {
                        eof_status(body)
                    } else {
                        ok_status(body)
                    };
                    self.end_of_results(status, end_ns, cx);
                }
                Some(0xff) => self.finish_front(error(body), end_ns, cx),
                _ => {}
            },
        }
        None
    }

    /// The same packet read again in the state it led to.
    fn on_server_again(&mut self, message: &Message<'_>, cx: &mut Context<'_>) -> Option<Verdict> {
        if self.reply == Reply::Start {
            return None;
        }
        self.server_continued = false;
        self.on_server(message, cx)
    }

    /// The last definition of a run was read: an EOF may follow unless the handshake said
    /// there is none.
    fn after_definitions(
        &mut self,
        after: After,
        seq: u8,
        end_ns: u64,
        cx: &mut Context<'_>,
    ) -> Reply {
        // When the handshake was not seen, whether EOFs are sent is unknown; neither a row nor a
        // definition looks like an EOF, and an answer that ends here is told from the next one
        // by the sequence id.
        match self.caps.map(|caps| caps & CLIENT_DEPRECATE_EOF != 0) {
            Some(true) => self.enter(after, end_ns, cx),
            Some(false) | None if after == After::Done => {
                self.trailing_eof = Some(seq.wrapping_add(1));
                self.enter(after, end_ns, cx)
            }
            Some(false) | None => Reply::MaybeEof { after },
        }
    }

    fn enter(&mut self, after: After, end_ns: u64, cx: &mut Context<'_>) -> Reply {
        match after {
            After::Rows => Reply::Rows,
            After::Columns(0) | After::Done => {
                self.finish_front(DbOutcome::Ok, end_ns, cx);
                Reply::Start
            }
            After::Columns(columns) => Reply::Definitions {
                left: columns,
                after: After::Done,
            },
        }
    }

    fn on_greeting(&mut self, body: &[u8]) {
        self.phase = Phase::HandshakeResponse;
        let Some((&10, rest)) = body.split_first() else {
            return;
        };
        let Some(end) = rest.iter().position(|&c| c == 0) else {
            return;
        };
        let version = &rest[..end];
        self.mariadb = version
            .windows(7)
            .any(|w| w.eq_ignore_ascii_case(b"mariadb"));
        // Thread id (4), auth data (8), filler (1), then the capabilities' two halves.
        let caps = &rest[end + 1..];
        let low = caps.get(13..).and_then(le16);
        let high = caps.get(18..).and_then(le16);
        self.server_caps = u32::from(low.unwrap_or(0)) | (u32::from(high.unwrap_or(0)) << 16);
    }

    /// `COM_STMT_PREPARE` succeeded: the statement id, then its parameter and column
    /// definitions.
    fn on_prepared(&mut self, body: &[u8]) {
        let (Some(id), Some(columns), Some(params)) = (
            body.get(1..).and_then(le32),
            body.get(5..).and_then(le16),
            body.get(7..).and_then(le16),
        ) else {
            self.pending.pop_front();
            return;
        };
        if let Some(Pending {
            command: Command::Prepare { text, truncated },
            ..
        }) = self.pending.pop_front()
        {
            self.statements.retain(|(known, _, _)| *known != id);
            if self.statements.len() >= MAX_STATEMENTS {
                self.statements.remove(0);
            }
            self.statements.push((id, text, truncated));
        }
        let (params, columns) = (u64::from(params), u64::from(columns));
        // The answer goes on with definitions, but nothing waits for it any more.
        self.reply = match (params, columns) {
            (0, 0) => Reply::Start,
            (0, columns) => Reply::Definitions {
                left: columns,
                after: After::Done,
            },
            (params, columns) => Reply::Definitions {
                left: params,
                after: After::Columns(columns),
            },
        };
        if self.reply != Reply::Start {
            self.pending.push_front(Pending {
                command: Command::Other,
                expect: Expect::Prepare,
                start_ns: 0,
                tid: None,
            });
        }
    }

    /// An OK or EOF ended a result (or was the whole answer): more may follow.
    fn end_of_results(&mut self, status: Option<u16>, end_ns: u64, cx: &mut Context<'_>) {
        if status.is_some_and(|s| s & SERVER_MORE_RESULTS_EXISTS != 0) {
            self.reply = Reply::Start;
            return;
        }
        self.finish_front(DbOutcome::Ok, end_ns, cx);
    }

    /// The oldest command's answer is over.
    fn finish_front(&mut self, outcome: DbOutcome, end_ns: u64, cx: &mut Context<'_>) {
        self.reply = Reply::Start;
        if let Some(pending) = self.pending.pop_front() {
            self.complete(pending, outcome, end_ns, cx);
        }
    }

    fn complete(
        &mut self,
        pending: Pending,
        outcome: DbOutcome,
        end_ns: u64,
        cx: &mut Context<'_>,
    ) {
        let system = if self.mariadb {
            DbSystem::Mariadb
        } else {
            DbSystem::Mysql
        };
        let (statement, trace) = match pending.command {
            Command::Statement { statement, trace } => (statement, trace),
            Command::InitDb(name) => {
                if outcome == DbOutcome::Ok {
                    self.namespace = name;
                }
                return;
            }
            // A statement that could not be prepared is reported as the error it is.
            Command::Prepare { text, truncated } if matches!(outcome, DbOutcome::Error(_)) => {
                (Some((text, truncated)), cx.start_trace(pending.tid, None))
            }
            Command::Prepare { .. } | Command::Other => return,
        };
        if outcome == DbOutcome::Ok
            && let Some((text, false)) = &statement
            && let Some(name) = use_database(text)
        {
            self.namespace = Some(name);
        }
        let mut call = DbCall::new(system, outcome);
        call.namespace = self.namespace.clone();
        if let Some((text, truncated)) = statement {
            call.statement = Some(text);
            call.truncated = truncated;
        }
        cx.complete(Exchange {
            tid: pending.tid,
            start_ns: pending.start_ns,
            end_ns,
            trace,
            facts: Facts::Db(call),
        });
    }
}

/// The database a `USE db` statement switches to.
fn use_database(text: &str) -> Option<Arc<str>> {
    let rest = text.trim_start();
    let head = rest.get(..4)?;
    if !head.eq_ignore_ascii_case("use ") {
        return None;
    }
    let name = rest[4..]
        .trim()
        .trim_end_matches(';')
        .trim()
        .trim_matches('`');
    (!name.is_empty() && name.len() <= MAX_NAME && !name.contains(char::is_whitespace))
        .then(|| Arc::from(name))
}

/// An ERR packet's error number.
fn error(body: &[u8]) -> DbOutcome {
    DbOutcome::Error(
        body.get(1..)
            .and_then(le16)
            .map(|code| code.to_string())
            .unwrap_or_default(),
    )
}

/// The status flags of an OK packet (`0x00` or `0xfe` header).
fn ok_status(body: &[u8]) -> Option<u16> {
    let (_, rest) = lenenc(body.get(1..)?)?;
    let (_, rest) = lenenc(rest)?;
    le16(rest)
}

/// The status flags of an EOF packet.
fn eof_status(body: &[u8]) -> Option<u16> {
    body.get(3..).and_then(le16)
}

#[cfg(test)]
mod tests;
