//! Redis (RESP2 and RESP3): one span per command, answered in order by one reply each.
//!
//! Commands are arrays of bulk strings, or inline commands (a line of words); many may be sent
//! before any reply (pipelining). Replies are any RESP value; RESP3 adds maps, sets, attributes
//! (which precede a reply and are not one) and out-of-band pushes. In Pub/Sub, subscribe commands
//! are spans answered by their first confirmation, and the messages pushed later answer nothing.
//! `SELECT n` changes `db.namespace` (0 on a connection seen from its start).
//!
//! Hand-written rather than on `redis-protocol`, which never completes a frame larger than what
//! was captured: this reader keeps only the first two strings of each value (command and first
//! argument, or reply kind) in fixed buffers, skips bulk payloads by their length whether seen or
//! not, and counts aggregate elements on a small stack, so it allocates nothing while reading.
//! After a gap it cannot skip (inside a line), it resynchronizes at the next chunk boundary where
//! a value starts; until the connection goes idle, the commands in flight then get no span,
//! since which reply answers them is no longer known.

use std::collections::VecDeque;
use std::sync::Arc;

use super::db::{DbCall, DbOutcome, DbSystem};
use super::frames::Input;
use super::{Context, Detection, Exchange, Parser, Protocol, Side, Verdict};
use crate::connection::context::TraceContext;
use crate::connection::stream::Chunk;
use crate::transaction::Facts;

/// Redis as the protocol layer knows it.
pub static PROTOCOL: Protocol = Protocol {
    name: "redis",
    detect,
    parser: new_parser,
};

fn new_parser() -> Box<dyn Parser> {
    Box::new(Redis::default())
}

/// Bytes of a line kept (type byte and length, an error's code, an inline command's words).
const LINE: usize = 64;
/// Bytes kept of each of a value's first two strings.
const WORD: usize = 32;
/// Nesting of aggregates followed; deeper values lose the place.
const MAX_DEPTH: usize = 8;
/// Commands awaiting their replies on one connection.
const MAX_PENDING: usize = 512;
/// Longest inline command line detection accepts.
const MAX_INLINE: usize = 1024;

/// Inline commands detection accepts: common ones no other protocol starts with.
const INLINE_COMMANDS: &[&str] = &[
    "PING",
    "ECHO",
    "INFO",
    "SET",
    "GET",
    "DEL",
    "EXISTS",
    "INCR",
    "DECR",
    "KEYS",
    "SELECT",
    "AUTH",
    "HELLO",
    "QUIT",
    "FLUSHALL",
    "FLUSHDB",
    "DBSIZE",
    "SUBSCRIBE",
    "PSUBSCRIBE",
    "PUBLISH",
    "CLIENT",
    "CONFIG",
    "LPUSH",
    "RPUSH",
    "LPOP",
    "RPOP",
    "LRANGE",
    "HSET",
    "HGET",
    "HGETALL",
    "SADD",
    "SMEMBERS",
    "ZADD",
    "ZRANGE",
    "EXPIRE",
    "TTL",
    "MULTI",
    "EXEC",
    "TYPE",
    "MGET",
    "MSET",
    "SCAN",
];

/// Commands whose replies are Pub/Sub confirmations.
const SUBSCRIBE_COMMANDS: &[&str] = &[
    "SUBSCRIBE",
    "PSUBSCRIBE",
    "SSUBSCRIBE",
    "UNSUBSCRIBE",
    "PUNSUBSCRIBE",
    "SUNSUBSCRIBE",
];
/// First elements of pushed Pub/Sub messages.
const MESSAGES: &[&[u8]] = &[b"message", b"pmessage", b"smessage"];

/// A decimal length after a type byte: `-1` (null) as `None` inside `Some`.
fn length(digits: &[u8]) -> Option<Option<u64>> {
    if digits == b"-1" {
        return Some(None);
    }
    if digits.is_empty() || digits.len() > 18 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(Some(
        digits
            .iter()
            .fold(0u64, |n, d| n * 10 + u64::from(d - b'0')),
    ))
}

/// The first line of `bytes`, without its line end, when it ends within `max` bytes.
fn first_line(bytes: &[u8], max: usize) -> Option<&[u8]> {
    let end = bytes.iter().take(max).position(|&c| c == b'\n')?;
    Some(bytes[..end].strip_suffix(b"\r").unwrap_or(&bytes[..end]))
}

/// A command array: `*N`, then a bulk string of letters (the command name).
fn is_command_array(bytes: &[u8]) -> bool {
    let Some(line) = first_line(bytes, 16) else {
        return false;
    };
    let Some(count) = line.strip_prefix(b"*") else {
        return false;
    };
    if !matches!(length(count), Some(Some(1..=1_048_576))) {
        return false;
    }
    let Some(rest) = after_crlf(bytes, line) else {
        return false;
    };
    let Some(bulk) = first_line(rest, 16) else {
        return false;
    };
    let Some(Some(len @ 1..=32)) = bulk.strip_prefix(b"$").map(length).unwrap_or_default() else {
        return false;
    };
    after_crlf(rest, bulk)
        .and_then(|name| name.get(..len as usize))
        .is_some_and(|name| name.iter().all(u8::is_ascii_alphabetic))
}

/// What follows `line`, the first line of `bytes`, when it ended with CRLF.
fn after_crlf<'a>(bytes: &'a [u8], line: &[u8]) -> Option<&'a [u8]> {
    bytes.get(line.len()..)?.strip_prefix(b"\r\n")
}

/// An inline command: one of [`INLINE_COMMANDS`] on a whole line.
fn is_inline_command(bytes: &[u8]) -> bool {
    let Some(line) = first_line(bytes, MAX_INLINE) else {
        return false;
    };
    let word = line.split(|&c| c == b' ').next().unwrap_or_default();
    INLINE_COMMANDS
        .iter()
        .any(|command| command.as_bytes().eq_ignore_ascii_case(word))
        && line.iter().all(|&c| c == b' ' || c.is_ascii_graphic())
        // `GET / HTTP/1.1` is HTTP's.
        && !line.windows(6).any(|w| w == b" HTTP/")
}

/// Redis is recognized from the client: a command array or an inline command, at the start of
/// a connection or at a boundary of one joined mid-stream.
fn detect(bytes: &[u8], side: Option<Side>) -> Detection {
    if side != Some(Side::Server) && (is_command_array(bytes) || is_inline_command(bytes)) {
        Detection::Yes(Side::Client)
    } else {
        Detection::No
    }
}

/// A string prefix in a fixed buffer.
#[derive(Clone, Copy, Debug, Default)]
struct Word {
    bytes: [u8; WORD],
    len: u8,
}

impl Word {
    fn push(&mut self, more: &[u8]) {
        let at = usize::from(self.len);
        let n = more.len().min(WORD - at);
        self.bytes[at..at + n].copy_from_slice(&more[..n]);
        self.len += n as u8;
    }

    fn as_bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }
}

/// What a top-level value showed.
#[derive(Clone, Copy, Debug, Default)]
struct Value {
    /// Its type byte (`b'i'` for an inline command).
    kind: u8,
    /// Elements of an aggregate (words of an inline command).
    count: u64,
    /// Its first two strings: the value itself for a string, an aggregate's first elements.
    words: [Word; 2],
    start_ns: u64,
    tid: Option<u32>,
}

/// Where the reader is inside a value.
#[derive(Debug, Default)]
struct Resp {
    line: Line,
    /// Elements left in each open aggregate, innermost last.
    stack: [u64; MAX_DEPTH],
    depth: usize,
    /// Bulk payload bytes left, then 2 for its line end.
    bulk_left: u64,
    /// Which of the value's words the bulk being read fills.
    capture: Option<usize>,
    /// The top-level value being read.
    value: Value,
    started: bool,
    lost: bool,
}

/// A line prefix in a fixed buffer (longer lines are cut).
#[derive(Debug)]
struct Line {
    bytes: [u8; LINE],
    len: usize,
}

impl Default for Line {
    fn default() -> Self {
        Self {
            bytes: [0; LINE],
            len: 0,
        }
    }
}

impl Resp {
    fn lose(&mut self) {
        *self = Self {
            lost: true,
            ..Self::default()
        };
    }

    fn resync(&mut self) {
        *self = Self::default();
    }

    /// Reads `input`, handing each complete top-level value to `done`; `client` allows inline
    /// commands.
    fn read(&mut self, input: &mut Input<'_>, client: bool, done: &mut impl FnMut(&Value)) {
        while !input.is_empty() {
            if self.lost {
                input.clear();
                return;
            }
            if self.bulk_left > 0 {
                self.read_bulk(input, done);
                continue;
            }
            if input.visible.is_empty() {
                // A line starts, or goes on, in bytes nobody saw.
                self.lose();
                return;
            }
            if !self.started {
                self.started = true;
                self.value.start_ns = input.timestamp_ns;
                self.value.tid = input.tid;
            }
            let end = input.visible.iter().position(|&c| c == b'\n');
            let part = input.take(end.map_or(usize::MAX, |end| end + 1));
            let room = LINE - self.line.len;
            let keep = part.len().min(room);
            self.line.bytes[self.line.len..self.line.len + keep].copy_from_slice(&part[..keep]);
            self.line.len += keep;
            if end.is_some() {
                let len = self.line.len;
                let mut line = [0u8; LINE];
                line[..len].copy_from_slice(&self.line.bytes[..len]);
                self.line.len = 0;
                let line = &line[..len];
                let line = line.strip_suffix(b"\n").unwrap_or(line);
                let line = line.strip_suffix(b"\r").unwrap_or(line);
                self.on_line(line, client, done);
            }
        }
    }

    fn read_bulk(&mut self, input: &mut Input<'_>, done: &mut impl FnMut(&Value)) {
        let payload_left = self.bulk_left.saturating_sub(2);
        let seen = input.take(usize::try_from(self.bulk_left).unwrap_or(usize::MAX));
        if let Some(slot) = self.capture {
            let payload = &seen[..seen.len().min(usize::try_from(payload_left).unwrap_or(0))];
            self.value.words[slot].push(payload);
        }
        self.bulk_left -= seen.len() as u64;
        if self.bulk_left > 0 && input.visible.is_empty() && input.unseen > 0 {
            let skip = self.bulk_left.min(input.unseen);
            self.bulk_left -= skip;
            input.unseen -= skip;
            // What follows an unseen part is not contiguous with what was kept.
            self.capture = None;
        }
        if self.bulk_left == 0 {
            self.capture = None;
            self.element_done(done);
        }
    }

    /// The index of the element about to be read among the top-level value's direct ones.
    fn direct_index(&self) -> Option<usize> {
        (self.depth == 1)
            .then(|| self.value.count.saturating_sub(self.stack[0]))
            .and_then(|i| usize::try_from(i).ok())
            .filter(|&i| i < 2)
    }

    fn on_line(&mut self, line: &[u8], client: bool, done: &mut impl FnMut(&Value)) {
        let Some((&kind, rest)) = line.split_first() else {
            if self.depth == 0 && client {
                // An empty inline line: nothing.
                self.started = false;
            } else {
                self.lose();
            }
            return;
        };
        let top = self.depth == 0;
        if top {
            self.value.kind = kind;
        }
        match kind {
            b'*' | b'>' | b'~' | b'%' | b'|' => {
                let Some(count) = length(rest) else {
                    return self.lose();
                };
                let count = count.unwrap_or(0) * if matches!(kind, b'%' | b'|') { 2 } else { 1 };
                if top {
                    self.value.count = count;
                }
                if count == 0 {
                    return self.element_done(done);
                }
                if self.depth == MAX_DEPTH {
                    return self.lose();
                }
                self.stack[self.depth] = count;
                self.depth += 1;
            }
            b'$' | b'=' | b'!' => match length(rest) {
                Some(Some(len)) => {
                    self.capture = if top { Some(0) } else { self.direct_index() };
                    self.bulk_left = len + 2;
                }
                Some(None) => self.element_done(done),
                None => self.lose(),
            },
            b'+' | b'-' | b':' | b',' | b'#' | b'_' | b'(' => {
                let slot = if top { Some(0) } else { self.direct_index() };
                if let Some(slot) = slot {
                    self.value.words[slot].push(rest);
                }
                self.element_done(done);
            }
            _ if top && client => {
                self.value.kind = b'i';
                let mut words = line.split(|&c| c == b' ').filter(|w| !w.is_empty());
                for slot in &mut self.value.words {
                    if let Some(word) = words.next() {
                        slot.push(word);
                        self.value.count += 1;
                    }
                }
                self.value.count += words.count() as u64;
                self.element_done(done);
            }
            _ => self.lose(),
        }
    }

    /// An element (or the whole value) is complete.
    fn element_done(&mut self, done: &mut impl FnMut(&Value)) {
        while self.depth > 0 {
            let left = &mut self.stack[self.depth - 1];
            *left -= 1;
            if *left > 0 {
                return;
            }
            self.depth -= 1;
        }
        let value = std::mem::take(&mut self.value);
        self.started = false;
        if value.kind != b'|' {
            done(&value);
        }
    }
}

/// A command awaiting its reply.
#[derive(Debug)]
struct Pending {
    /// Upper case, letters only; `None` when the name is not one.
    command: Option<String>,
    arguments: u32,
    /// `SELECT`'s argument.
    select: Option<Arc<str>>,
    /// Sent while the streams were not followed exactly: its reply cannot be told.
    unsure: bool,
    start_ns: u64,
    tid: Option<u32>,
    trace: TraceContext,
}

/// The Redis state of one connection: a reader per direction, and what their values told.
#[derive(Debug, Default)]
pub struct Redis {
    client: Resp,
    server: Resp,
    conn: Conn,
}

#[derive(Debug, Default)]
struct Conn {
    started: bool,
    namespace: Option<Arc<str>>,
    pending: VecDeque<Pending>,
    /// A stream lost its place: commands in flight get no span until the connection is idle.
    unsure: bool,
    subscribed: bool,
}

/// A value's string as a command name: upper case, letters (and `|` for subcommands) only.
fn command_name(word: &[u8]) -> Option<String> {
    (!word.is_empty() && word.len() < WORD && word.iter().all(u8::is_ascii_alphabetic))
        .then(|| String::from_utf8_lossy(word).to_ascii_uppercase())
}

impl Parser for Redis {
    fn feed(&mut self, side: Side, chunk: &Chunk<'_>, cx: &mut Context<'_>) -> Verdict {
        let conn = &mut self.conn;
        if !conn.started {
            conn.started = true;
            if cx.from_start() {
                conn.namespace = Some(Arc::from("0"));
            } else {
                // Joined mid-stream: replies in flight answer commands not seen.
                self.server.lose();
            }
        }
        let mut input = Input::new(chunk);
        match side {
            Side::Client => {
                if self.client.lost && chunk.at_boundary && is_command_array(chunk.visible) {
                    self.client.resync();
                }
                let was_lost = self.client.lost;
                self.client
                    .read(&mut input, true, &mut |value| conn.on_command(value, cx));
                if self.client.lost && !was_lost {
                    conn.unsure = true;
                }
            }
            Side::Server => {
                if self.server.lost && chunk.at_boundary && starts_value(chunk.visible) {
                    self.server.resync();
                }
                let was_lost = self.server.lost;
                self.server.read(&mut input, false, &mut |reply| {
                    conn.on_reply(reply, chunk.timestamp_ns, cx);
                });
                if self.server.lost && !was_lost {
                    // The replies to what was sent so far were in the bytes lost, or still are:
                    // those commands get no span, and the ones sent from now on none either
                    // until the connection is idle again.
                    conn.unsure = true;
                    for pending in std::mem::take(&mut conn.pending) {
                        cx.drop_exchange(pending.tid, &pending.trace);
                    }
                }
                if conn.pending.is_empty() && !self.server.lost {
                    conn.unsure = false;
                }
            }
        }
        Verdict::Keep
    }

    /// Commands still waiting end without a reply, unless replies were lost: what became of
    /// them is unknown then.
    fn finish(&mut self, end_ns: u64, cx: &mut Context<'_>) {
        if self.server.lost || self.conn.unsure {
            return self.discard(cx);
        }
        while let Some(pending) = self.conn.pending.pop_front() {
            self.conn
                .complete(pending, DbOutcome::NoResponse, end_ns, cx);
        }
    }

    fn discard(&mut self, cx: &mut Context<'_>) {
        for pending in std::mem::take(&mut self.conn.pending) {
            cx.drop_exchange(pending.tid, &pending.trace);
        }
    }

    fn heap_bytes(&self) -> usize {
        let pending = &self.conn.pending;
        pending.capacity() * size_of::<Pending>()
            + pending
                .iter()
                .map(|p| p.command.as_ref().map_or(0, String::capacity))
                .sum::<usize>()
    }
}

/// A reply value starts here: a RESP type byte, then a line.
fn starts_value(bytes: &[u8]) -> bool {
    bytes
        .first()
        .is_some_and(|c| b"+-:$*_,#!=(%~>|".contains(c))
        && first_line(bytes, LINE).is_some()
}

impl Conn {
    fn on_command(&mut self, value: &Value, cx: &mut Context<'_>) {
        if !matches!(value.kind, b'*' | b'i') || value.count == 0 {
            return;
        }
        let command = command_name(value.words[0].as_bytes());
        let select = (command.as_deref() == Some("SELECT"))
            .then(|| value.words[1].as_bytes())
            .filter(|db| !db.is_empty() && db.iter().all(u8::is_ascii_digit))
            .map(|db| Arc::from(String::from_utf8_lossy(db)));
        if self.pending.len() >= MAX_PENDING
            && let Some(dropped) = self.pending.pop_front()
        {
            cx.drop_exchange(dropped.tid, &dropped.trace);
        }
        let trace = cx.start_trace(value.tid, None);
        self.pending.push_back(Pending {
            command,
            arguments: u32::try_from(value.count - 1).unwrap_or(u32::MAX),
            select,
            unsure: self.unsure,
            start_ns: value.start_ns,
            tid: value.tid,
            trace,
        });
    }

    fn on_reply(&mut self, reply: &Value, end_ns: u64, cx: &mut Context<'_>) {
        let first = reply.words[0].as_bytes();
        let is_aggregate = matches!(reply.kind, b'*' | b'>');
        if is_aggregate && (reply.kind == b'>' || self.subscribed) {
            if MESSAGES.iter().any(|m| m.eq_ignore_ascii_case(first)) {
                // A published message: it answers no command.
                return;
            }
            let confirms = SUBSCRIBE_COMMANDS
                .iter()
                .any(|c| c.as_bytes().eq_ignore_ascii_case(first));
            let front_subscribes = self.pending.front().is_some_and(|p| {
                p.command
                    .as_deref()
                    .is_some_and(|c| SUBSCRIBE_COMMANDS.contains(&c))
            });
            if confirms && !front_subscribes {
                // The further confirmations of a command naming several channels.
                return;
            }
            if reply.kind == b'>' && !confirms {
                // Another push (client tracking, ...): out of band.
                return;
            }
        }
        let Some(pending) = self.pending.pop_front() else {
            return;
        };
        if pending.unsure {
            cx.drop_exchange(pending.tid, &pending.trace);
            return;
        }
        let outcome = match reply.kind {
            b'-' | b'!' => {
                let code = first
                    .split(|&c| c == b' ')
                    .next()
                    .filter(|code| code.iter().all(u8::is_ascii_uppercase))
                    .map(|code| String::from_utf8_lossy(code).into_owned())
                    .unwrap_or_default();
                DbOutcome::Error(code)
            }
            _ => DbOutcome::Ok,
        };
        if outcome == DbOutcome::Ok {
            match pending.command.as_deref() {
                Some("SELECT") => {
                    if let Some(db) = &pending.select {
                        self.namespace = Some(db.clone());
                    }
                }
                Some(command) if SUBSCRIBE_COMMANDS.contains(&command) => {
                    self.subscribed = true;
                }
                _ => {}
            }
        }
        self.complete(pending, outcome, end_ns, cx);
    }

    fn complete(&self, pending: Pending, outcome: DbOutcome, end_ns: u64, cx: &mut Context<'_>) {
        let mut call = DbCall::new(DbSystem::Redis, outcome);
        call.operation = pending.command;
        call.arguments = pending.arguments;
        call.namespace = self.namespace.clone();
        cx.complete(Exchange {
            tid: pending.tid,
            start_ns: pending.start_ns,
            end_ns,
            trace: pending.trace,
            facts: Facts::Db(call),
        });
    }
}

#[cfg(test)]
mod tests;
