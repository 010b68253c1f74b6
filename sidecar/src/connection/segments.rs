//! The pod-scoped capture's records as the connection layer's inputs. Each socket, known by its
//! cookie, gets its two directions put back in order ([`Reassembler`]) and its process
//! attributed, then its chunks go through [`Connections::open`], [`Connections::chunk`] and
//! [`Connections::close`] like those of any capture mode.
//!
//! Attribution, since packets carry no process: a client socket is the process that called
//! `connect(2)`; a server socket is the process whose thread writes on it (the first egress
//! segment sent by a write names the writer), until then the selected process listening on its
//! port. Sockets of processes that are not instrumented are dropped until they are.
//!
//! Sockets seen being set up (`sock_ops`) start each direction where the handshake says; the
//! others (open before their container was attached) start at their first segment, with
//! addresses the run loop finds by cookie, and a role the connection layer infers from the bytes.

use std::net::SocketAddr;

use super::{ConnKey, Connections, Opened, reassembly};
use crate::capture::events::{Direction, PodEvent, Role, Task, TcpConnection, TcpFlags};
use crate::connection::reassembly::Reassembler;
use crate::transaction::Transaction;

/// Lookups happen for every segment: a fast non-cryptographic hasher (cookies are kernel ids).
type HashMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;
type HashSet<K> = std::collections::HashSet<K, foldhash::fast::RandomState>;

/// A socket idle this long that the connection layer no longer tracks (evicted, never set up,
/// or of a process not instrumented) is forgotten; it is adopted anew if it moves again.
const IDLE_NS: u64 = 60_000_000_000;
/// How often idle sockets are looked for.
const SWEEP_NS: u64 = 1_000_000_000;

/// What attribution asks of the rest of the sidecar.
pub trait Sockets {
    /// The instrumented process listening on `local`'s port, if one is known to.
    fn listener(&self, local: SocketAddr) -> Option<u32>;
    /// Whether a process is instrumented.
    fn selected(&self, pid: u32) -> bool;
    /// (local, peer) of a socket by cookie, for a socket whose set-up was not seen.
    fn addresses(&mut self, cookie: u64) -> Option<(SocketAddr, SocketAddr)>;
}

/// One socket of an attached container.
#[derive(Debug)]
struct Socket {
    /// Ingress, egress.
    streams: [Reassembler; 2],
    ended: [bool; 2],
    role: Role,
    local: Option<SocketAddr>,
    peer: Option<SocketAddr>,
    /// 0 until known.
    pid: u32,
    /// A task of the process named it (`connect(2)`, a write), rather than its listening port.
    named: bool,
    /// Its process is not instrumented: its records are dropped.
    ignored: bool,
    last_ns: u64,
}

const fn index(direction: Direction) -> usize {
    match direction {
        Direction::Ingress => 0,
        Direction::Egress => 1,
    }
}

impl Socket {
    fn new(limits: reassembly::Limits) -> Self {
        Self {
            streams: [Reassembler::new(limits), Reassembler::new(limits)],
            ended: [false; 2],
            role: Role::Unknown,
            local: None,
            peer: None,
            pid: 0,
            named: false,
            ignored: false,
            last_ns: 0,
        }
    }

    fn name(&mut self, task: Task, sockets: &impl Sockets) {
        self.pid = task.pid;
        self.named = true;
        self.ignored = !sockets.selected(task.pid);
    }
}

/// The sockets of the attached containers, by cookie.
#[derive(Debug, Default)]
pub struct Segments {
    limits: reassembly::Limits,
    sockets: HashMap<u64, Socket>,
    /// Sockets with segments held ahead of a hole, for [`Segments::expire`].
    holding: HashSet<u64>,
    /// When idle sockets were last looked for.
    swept_ns: u64,
}

impl Segments {
    pub fn new(limits: reassembly::Limits) -> Self {
        Self {
            limits,
            ..Self::default()
        }
    }

    /// Feeds one record; completed transactions are appended to `out`.
    pub fn on_event(
        &mut self,
        event: &PodEvent<'_>,
        sockets: &mut impl Sockets,
        conns: &mut Connections,
        out: &mut Vec<Transaction>,
    ) {
        match *event {
            PodEvent::Connect { connection, task } => {
                let mut socket = Socket::new(self.limits);
                socket.role = Role::Client;
                socket.last_ns = connection.timestamp_ns;
                if let Some(task) = task {
                    socket.name(task, sockets);
                }
                self.sockets.insert(connection.cookie, socket);
            }
            PodEvent::Established { connection, role } => {
                self.established(&connection, role, sockets, conns, out);
            }
            PodEvent::Segment {
                cookie,
                direction,
                seq,
                len,
                flags,
                timestamp_ns,
                task,
                payload,
            } => {
                let segment = reassembly::Segment {
                    seq,
                    captured: payload,
                    len,
                    timestamp_ns,
                    tid: task.map(|t| t.tid),
                };
                self.segment(cookie, direction, segment, flags, task, sockets, conns, out);
            }
            PodEvent::Closed { connection } => {
                let key = ConnKey::Socket(connection.cookie);
                if let Some(mut socket) = self.sockets.remove(&connection.cookie) {
                    if !socket.ignored {
                        for direction in [Direction::Ingress, Direction::Egress] {
                            end_stream(key, &mut socket, direction, None, conns, out);
                        }
                    }
                    self.holding.remove(&connection.cookie);
                }
                conns.close(key, connection.timestamp_ns, out);
            }
        }
    }

    /// Gives up holes that waited too long at `now_ns`, and forgets idle sockets the connection
    /// layer no longer tracks.
    pub fn expire(&mut self, now_ns: u64, conns: &mut Connections, out: &mut Vec<Transaction>) {
        let sockets = &mut self.sockets;
        self.holding.retain(|&cookie| {
            let Some(socket) = sockets.get_mut(&cookie) else {
                return false;
            };
            let (pid, key) = (socket.pid, ConnKey::Socket(cookie));
            for direction in [Direction::Ingress, Direction::Egress] {
                socket.streams[index(direction)].expire(now_ns, &mut |chunk| {
                    conns.chunk(key, pid, direction, &chunk, out);
                });
            }
            socket.streams.iter().any(|s| s.held_bytes() > 0)
        });
        if now_ns.saturating_sub(self.swept_ns) < SWEEP_NS {
            return;
        }
        self.swept_ns = now_ns;
        sockets.retain(|&cookie, socket| {
            now_ns.saturating_sub(socket.last_ns) < IDLE_NS
                || (!socket.ignored && conns.contains(ConnKey::Socket(cookie)))
        });
    }

    fn established(
        &mut self,
        connection: &TcpConnection,
        role: Role,
        sockets: &mut impl Sockets,
        conns: &mut Connections,
        out: &mut Vec<Transaction>,
    ) {
        let socket = self
            .sockets
            .entry(connection.cookie)
            .or_insert_with(|| Socket::new(self.limits));
        socket.streams = [
            Reassembler::starting_at(connection.recv_next, self.limits),
            Reassembler::starting_at(connection.send_next, self.limits),
        ];
        socket.ended = [false; 2];
        socket.role = role;
        socket.local = connection.local;
        socket.peer = connection.peer;
        socket.last_ns = connection.timestamp_ns;
        if !socket.named {
            socket.pid = connection
                .local
                .and_then(|local| sockets.listener(local))
                .unwrap_or(0);
        }
        if socket.ignored {
            return;
        }
        let opened = Opened {
            role,
            local: connection.local,
            peer: connection.peer,
        };
        conns.open(
            ConnKey::Socket(connection.cookie),
            socket.pid,
            opened,
            connection.timestamp_ns,
            out,
        );
    }

    #[allow(
        clippy::too_many_arguments,
        reason = "one segment's fields, passed on as they are"
    )]
    fn segment(
        &mut self,
        cookie: u64,
        direction: Direction,
        segment: reassembly::Segment<'_>,
        flags: TcpFlags,
        task: Option<Task>,
        sockets: &mut impl Sockets,
        conns: &mut Connections,
        out: &mut Vec<Transaction>,
    ) {
        let key = ConnKey::Socket(cookie);
        let limits = self.limits;
        let socket = self.sockets.entry(cookie).or_insert_with(|| {
            // Open before its container was attached: joined mid-stream.
            let mut socket = Socket::new(limits);
            if let Some((local, peer)) = sockets.addresses(cookie) {
                socket.local = Some(local);
                socket.peer = Some(peer);
                socket.pid = sockets.listener(local).unwrap_or(0);
                conns.set_addresses(key, socket.pid, Some(local), Some(peer));
            }
            socket
        });
        socket.last_ns = segment.timestamp_ns;
        if direction == Direction::Egress
            && !socket.named
            && let Some(task) = task
        {
            let was_ignored = socket.ignored;
            socket.name(task, sockets);
            if socket.ignored && !was_ignored {
                conns.discard(key, out);
            }
        }
        if socket.ignored && socket.named && sockets.selected(socket.pid) {
            // Its process became instrumented since: captured from here on, joined mid-stream.
            socket.ignored = false;
            socket.streams = [Reassembler::new(limits), Reassembler::new(limits)];
            socket.ended = [false; 2];
            conns.set_addresses(key, socket.pid, socket.local, socket.peer);
        }
        let at = index(direction);
        if !socket.ignored && !socket.ended[at] {
            let pid = socket.pid;
            socket.streams[at].push(segment, &mut |chunk| {
                conns.chunk(key, pid, direction, &chunk, out);
            });
            if socket.streams[at].held_bytes() > 0 {
                self.holding.insert(cookie);
            }
        }
        if flags.rst() {
            for direction in [Direction::Ingress, Direction::Egress] {
                end_stream(key, socket, direction, None, conns, out);
            }
        } else if flags.fin() {
            let end = segment.seq.wrapping_add(segment.len);
            end_stream(key, socket, direction, Some(end), conns, out);
        }
        if socket.ended == [true; 2] {
            self.sockets.remove(&cookie);
            self.holding.remove(&cookie);
            conns.close(key, segment.timestamp_ns, out);
        }
    }
}

/// One direction of a socket ended (FIN, RST, close): what it held is delivered, holes as gaps,
/// and a last gap up to `end_seq` when known.
fn end_stream(
    key: ConnKey,
    socket: &mut Socket,
    direction: Direction,
    end_seq: Option<u32>,
    conns: &mut Connections,
    out: &mut Vec<Transaction>,
) {
    let at = index(direction);
    if socket.ended[at] {
        return;
    }
    socket.ended[at] = true;
    if socket.ignored {
        return;
    }
    let pid = socket.pid;
    socket.streams[at].finish(end_seq, &mut |chunk| {
        conns.chunk(key, pid, direction, &chunk, out);
    });
}
