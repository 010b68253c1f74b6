//! What the connection layer pays per HTTP/1 request in each capture mode, from the decoded
//! record to the transaction: wrk's keep-alive load on nginx as the tracepoints report it (one
//! record per `read`/`write`, with its thread) and as the pod-scoped capture does (one record per
//! segment, put back in order per socket, the thread known on egress only). Telemetry is left
//! out (`record_cost` measures it); so are the kernel and the ring buffer (`prog-cost.sh`).
//!
//! Run with `cargo run --release -p obi-sidecar --example capture_cost`. The modes take turns,
//! so the machine's drift hits both alike; prints ns per request for each, the fastest and the
//! median of the runs, and the median of the per-turn ratio.

use std::net::SocketAddr;
use std::time::Instant;

use obi_sidecar::capture::events::{
    Direction, Event, Meta, Payload, PodEvent, Role, Task, TcpConnection, TcpFlags,
};
use obi_sidecar::connection::segments::{Segments, Sockets};
use obi_sidecar::connection::{Connections, Limits, reassembly};
use obi_sidecar::transaction::Transaction;

const CONNECTIONS: u32 = 50;
const PER_RUN: u32 = 200_000;
const RUNS: usize = 15;
const PID: u32 = 7;

const REQUEST: &[u8] = b"GET /status/200 HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n\r\n";
const RESPONSE: &[u8] = b"HTTP/1.1 200 OK\r\nServer: nginx/1.26.3\r\nDate: Thu, 03 Dec 2026 06:00:00 GMT\r\nContent-Type: text/plain\r\nContent-Length: 0\r\nConnection: keep-alive\r\n\r\n";

fn local() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8080))
}

fn peer(conn: u32) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 40_000 + conn as u16))
}

/// nginx's one worker, listening on the port.
struct Nginx;

impl Sockets for Nginx {
    fn listener(&self, _: SocketAddr) -> Option<u32> {
        Some(PID)
    }
    fn selected(&self, pid: u32) -> bool {
        pid == PID
    }
    fn addresses(&mut self, _: u64) -> Option<(SocketAddr, SocketAddr)> {
        None
    }
}

trait Mode {
    fn name(&self) -> &'static str;
    /// Request `n` and its response, on connection `n % CONNECTIONS`.
    fn exchange(&mut self, n: u32, out: &mut Vec<Transaction>);
}

struct Tracepoints {
    conns: Connections,
}

impl Tracepoints {
    fn new(out: &mut Vec<Transaction>) -> Self {
        let mut conns = Connections::new(Limits::default());
        for conn in 0..CONNECTIONS {
            let event = Event::Connect {
                meta: meta(conn, 0),
                role: Role::Server,
                peer: Some(peer(conn)),
                local: Some(local()),
            };
            conns.on_event(&event, out);
        }
        Self { conns }
    }
}

fn meta(conn: u32, ts: u64) -> Meta {
    Meta {
        pid: PID,
        tid: PID,
        fd: 10 + conn as i32,
        timestamp_ns: ts,
    }
}

impl Mode for Tracepoints {
    fn name(&self) -> &'static str {
        "tracepoints"
    }

    fn exchange(&mut self, n: u32, out: &mut Vec<Transaction>) {
        let conn = n % CONNECTIONS;
        let ts = u64::from(n) * 1000;
        for (direction, bytes, at) in [
            (Direction::Ingress, REQUEST, ts),
            (Direction::Egress, RESPONSE, ts + 500),
        ] {
            let event = Event::Data {
                meta: meta(conn, at),
                direction,
                total_len: bytes.len() as u32,
                payload: bytes,
            };
            self.conns.on_event(&event, out);
        }
    }
}

struct Pod {
    segments: Segments,
    conns: Connections,
    /// Next sequence number of each connection's ingress and egress.
    seq: Vec<[u32; 2]>,
}

impl Pod {
    fn new(out: &mut Vec<Transaction>) -> Self {
        let mut segments = Segments::new(reassembly::Limits::default());
        let mut conns = Connections::new(Limits::default());
        let seq: Vec<[u32; 2]> = (0..CONNECTIONS).map(|c| [c * 7919, c * 104_729]).collect();
        for (conn, &[recv_next, send_next]) in (0..CONNECTIONS).zip(&seq) {
            let event = PodEvent::Established {
                connection: TcpConnection {
                    cookie: cookie(conn),
                    timestamp_ns: 0,
                    local: Some(local()),
                    peer: Some(peer(conn)),
                    send_next,
                    recv_next,
                },
                role: Role::Server,
            };
            segments.on_event(&event, &mut Nginx, &mut conns, out);
        }
        Self {
            segments,
            conns,
            seq,
        }
    }
}

fn cookie(conn: u32) -> u64 {
    0x1000 + u64::from(conn)
}

impl Mode for Pod {
    fn name(&self) -> &'static str {
        "pod"
    }

    fn exchange(&mut self, n: u32, out: &mut Vec<Transaction>) {
        let conn = n % CONNECTIONS;
        let ts = u64::from(n) * 1000;
        for (direction, bytes, at, task) in [
            (Direction::Ingress, REQUEST, ts, None),
            (
                Direction::Egress,
                RESPONSE,
                ts + 500,
                Some(Task { pid: PID, tid: PID }),
            ),
        ] {
            let at_direction = usize::from(direction == Direction::Egress);
            let next = &mut self.seq[conn as usize][at_direction];
            let event = PodEvent::Segment {
                cookie: cookie(conn),
                direction,
                seq: *next,
                len: bytes.len() as u32,
                // ACK and PSH, as nginx and wrk send them.
                flags: TcpFlags(0x18),
                timestamp_ns: at,
                task,
                payload: Payload::Prefix(bytes),
            };
            *next = next.wrapping_add(bytes.len() as u32);
            self.segments
                .on_event(&event, &mut Nginx, &mut self.conns, out);
        }
    }
}

/// ns per request of one run, which starts at request `first`; panics unless every request
/// made its transaction.
fn run(mode: &mut dyn Mode, first: u32, out: &mut Vec<Transaction>) -> f64 {
    let mut transactions = 0;
    let start = Instant::now();
    for n in first..first + PER_RUN {
        mode.exchange(n, out);
        transactions += out.len();
        out.clear();
    }
    let ns = start.elapsed().as_nanos() as f64 / f64::from(PER_RUN);
    assert_eq!(transactions, PER_RUN as usize, "{}", mode.name());
    ns
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn main() {
    let mut out = Vec::new();
    let mut tracepoints = Tracepoints::new(&mut out);
    let mut pod = Pod::new(&mut out);
    let mut times = [Vec::new(), Vec::new()];
    let mut ratios = Vec::new();
    for turn in 0..=RUNS {
        let first = turn as u32 * PER_RUN;
        let tp = run(&mut tracepoints, first, &mut out);
        let p = run(&mut pod, first, &mut out);
        // The first turn warms caches and allocations up.
        if turn > 0 {
            times[0].push(tp);
            times[1].push(p);
            ratios.push(p / tp);
        }
    }
    for (mode, times) in [&tracepoints as &dyn Mode, &pod].iter().zip(&mut times) {
        let fastest = times.iter().copied().fold(f64::INFINITY, f64::min);
        println!(
            "{:<12} {fastest:6.0} ns per request (fastest of {RUNS}), median {:6.0}",
            mode.name(),
            median(times)
        );
    }
    println!(
        "pod / tracepoints, median of the per-turn ratio: {:.3}",
        median(&mut ratios)
    );
}
