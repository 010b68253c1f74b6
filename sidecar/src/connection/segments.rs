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
//!
//! A socket whose TLS session the uprobes tied (by cookie) takes its bytes from the plaintext
//! records instead; the kernel records none of its ciphertext after the tie, and what came before
//! is dropped, so its segments only end its directions.

use std::net::SocketAddr;

use super::{ConnKey, Connections, Opened, reassembly};
use crate::capture::events::{Direction, Event, PodEvent, Role, Task, TcpConnection, TcpFlags};
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
    /// It carries a hooked TLS session: its bytes are the plaintext of the TLS records, and
    /// its segments only say where each direction ends.
    tls: bool,
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
            tls: false,
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
            PodEvent::Tls(ref tls) => self.tls(tls, sockets, conns, out),
        }
    }

    /// A record of the TLS uprobes. A session tied to a socket (by cookie) makes it a TLS
    /// socket: what its segments held is dropped (ciphertext), the process that made the call
    /// names it (its egress, which would have, is not recorded), and the plaintext goes to the
    /// connection layer under the socket's key.
    fn tls(
        &mut self,
        event: &Event<'_>,
        sockets: &mut impl Sockets,
        conns: &mut Connections,
        out: &mut Vec<Transaction>,
    ) {
        let cookie = match *event {
            Event::TlsData { session, .. } | Event::TlsTie { session, .. } => session.cookie,
            _ => 0,
        };
        if cookie != 0 {
            let meta = *event.meta();
            let socket = adopt(&mut self.sockets, self.limits, cookie, sockets, conns);
            socket.last_ns = meta.timestamp_ns;
            if !socket.tls {
                socket.tls = true;
                socket.streams = [Reassembler::new(self.limits), Reassembler::new(self.limits)];
                self.holding.remove(&cookie);
            }
            if !socket.named {
                socket.name(
                    Task {
                        pid: meta.pid,
                        tid: meta.tid,
                    },
                    sockets,
                );
            }
            if socket.ignored {
                return;
            }
        }
        conns.on_event(event, out);
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
        let socket = adopt(&mut self.sockets, limits, cookie, sockets, conns);
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
        if !socket.ignored && !socket.tls && !socket.ended[at] {
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

/// The socket under `cookie`; one not seen before was open before its container was attached,
/// and is joined mid-stream with the addresses `sockets` finds for it.
fn adopt<'s>(
    known: &'s mut HashMap<u64, Socket>,
    limits: reassembly::Limits,
    cookie: u64,
    sockets: &mut impl Sockets,
    conns: &mut Connections,
) -> &'s mut Socket {
    let socket = known.entry(cookie).or_insert_with(|| Socket::new(limits));
    // Set-up not seen: its addresses come from a socket table dump, which may miss it (seen
    // here: a dump that listed only listeners while the socket was established), so a socket
    // still without them asks again with its next records (the run loop spaces the dumps).
    if socket.local.is_none()
        && socket.role == Role::Unknown
        && let Some((local, peer)) = sockets.addresses(cookie)
    {
        socket.local = Some(local);
        socket.peer = Some(peer);
        if !socket.named {
            socket.pid = sockets.listener(local).unwrap_or(0);
        }
        conns.set_addresses(ConnKey::Socket(cookie), socket.pid, Some(local), Some(peer));
    }
    socket
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
    if socket.ignored || socket.tls {
        return;
    }
    let pid = socket.pid;
    socket.streams[at].finish(end_seq, &mut |chunk| {
        conns.chunk(key, pid, direction, &chunk, out);
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capture::events::{Meta, Payload, TlsSession};
    use crate::connection::{Limits, testing::http};

    const COOKIE: u64 = 77;
    const MASTER: u32 = 10;
    const WORKER: u32 = 11;

    /// nginx as the sidecar sees it: a master and a worker on the same listening port.
    struct Nginx;

    impl Sockets for Nginx {
        fn listener(&self, _: SocketAddr) -> Option<u32> {
            Some(MASTER)
        }
        fn selected(&self, pid: u32) -> bool {
            pid == MASTER || pid == WORKER
        }
        fn addresses(&mut self, _: u64) -> Option<(SocketAddr, SocketAddr)> {
            None
        }
    }

    struct Pod {
        segments: Segments,
        conns: Connections,
        out: Vec<Transaction>,
    }

    impl Pod {
        fn feed(&mut self, event: &PodEvent<'_>) {
            self.segments
                .on_event(event, &mut Nginx, &mut self.conns, &mut self.out);
        }

        fn segment(&mut self, direction: Direction, seq: u32, payload: &[u8], flags: u8) {
            self.feed(&PodEvent::Segment {
                cookie: COOKIE,
                direction,
                seq,
                len: payload.len() as u32,
                flags: TcpFlags(flags),
                timestamp_ns: 2,
                task: None,
                payload: Payload::Prefix(payload),
            });
        }

        fn plaintext(&mut self, direction: Direction, bytes: &[u8], at: u64) {
            self.feed(&PodEvent::Tls(Event::TlsData {
                meta: Meta {
                    pid: WORKER,
                    tid: WORKER + 100,
                    fd: -1,
                    timestamp_ns: at,
                },
                session: TlsSession {
                    ssl: 0x5000,
                    cookie: COOKIE,
                },
                direction,
                total_len: bytes.len() as u32,
                data: Payload::Prefix(bytes),
            }));
        }
    }

    #[test]
    fn a_tied_sockets_plaintext_is_its_stream_and_its_ciphertext_only_ends_it() {
        let mut pod = Pod {
            segments: Segments::new(reassembly::Limits::default()),
            conns: Connections::new(Limits::default()),
            out: Vec::new(),
        };
        let local: SocketAddr = "10.0.0.1:443".parse().unwrap();
        let connection = TcpConnection {
            cookie: COOKIE,
            timestamp_ns: 1,
            local: Some(local),
            peer: Some("10.0.0.2:50000".parse().unwrap()),
            send_next: 1000,
            recv_next: 5000,
        };
        pod.feed(&PodEvent::Established {
            connection,
            role: Role::Server,
        });
        // The ClientHello arrives before the session is tied: recorded, and not a protocol.
        let hello = [0x16, 0x03, 0x01, 0x00, 0x05, 1, 0, 0, 1, 0];
        pod.segment(Direction::Ingress, 5000, &hello, 0);
        pod.plaintext(
            Direction::Ingress,
            b"GET /a HTTP/1.1\r\nHost: shop\r\n\r\n",
            10,
        );
        // A ciphertext segment recorded before the kernel knew the tie, arriving late: ignored.
        pod.segment(Direction::Ingress, 5010, &[0x17, 0x03, 0x03, 0, 1, 9], 0);
        pod.plaintext(
            Direction::Egress,
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
            20,
        );
        assert_eq!(pod.out.len(), 1, "{:?}", pod.out);
        let tx = &pod.out[0];
        assert!(tx.tls);
        assert_eq!(http(tx).target, "/a");
        assert_eq!(http(tx).status, 200);
        // The worker that made the calls, not the listening port's first process.
        assert_eq!(tx.pid, WORKER);
        assert_eq!(tx.local, Some(local));
        // Both directions' FINs end the socket, with no gap put into its plaintext.
        pod.segment(Direction::Ingress, 5016, &[], 0x01);
        pod.segment(Direction::Egress, 1000, &[], 0x01);
        assert!(!pod.segments.sockets.contains_key(&COOKIE));
        assert!(!pod.conns.contains(ConnKey::Socket(COOKIE)));
        assert_eq!(pod.out.len(), 1, "{:?}", pod.out);
    }
}
