//! End-to-end proof of the capture chain on a real kernel, for each set of hooks (socket
//! tracepoints, and the `sys_exit` fallbacks as BTF and raw tracepoint): the embedded object loads
//! and attaches, and a connect + write + close of a process in the sidecar's PID namespace reaches
//! userspace through the ring buffer (a three-piece sendmsg gathered whole), while the same
//! traffic of a process in another PID namespace never does, even when its pids are on the
//! selection list. HTTP/2 writes are captured frame by frame: frames behind large DATA frames,
//! in one buffer or gathered from several, and across a frame split over two writes.
//!
//! Needs root (CAP_BPF, CAP_PERFMON, CAP_SYS_ADMIN for unshare); CI runs as root.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests and their set-up: failing loudly is their job"
)]

use std::{
    io::{Read, Write},
    net::{TcpListener, TcpStream},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use aya::maps::{MapData, RingBuf};
use obi_sidecar::capture::{
    Hook, HookChoice, PidNamespace, ProbeConfig, Probes,
    events::{Direction, Event, Role},
    tls::{self, UprobeKind},
};
use obi_sidecar::config::TlsUprobes;

const CLIENT: &str = "import socket, sys\n\
sys.stdin.readline()\n\
s = socket.create_connection(('127.0.0.1', int(sys.argv[1])))\n\
m = sys.argv[2].encode()\n\
s.sendmsg([m[:3], m[3:7], m[7:]])\n\
s.recv(16)\n\
s.close()\n";

fn require_root() {
    assert!(
        nix_is_root(),
        "this test loads eBPF programs and creates PID namespaces: run it as root"
    );
}

fn nix_is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Listens on `addr` (port 0: any) and, until the test ends, hands each accepted connection to
/// `handle` on a thread of its own; returns the port.
fn serve(addr: &str, handle: fn(TcpStream)) -> u16 {
    let listener = TcpListener::bind(addr).unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            std::thread::spawn(move || handle(stream));
        }
    });
    port
}

/// Reads whatever arrives first on each connection and answers "ok"; returns the port.
fn serving(addr: &str) -> u16 {
    serve(addr, |mut stream| {
        let mut buf = [0u8; 256];
        let _ = stream.read(&mut buf);
        let _ = stream.write_all(b"ok");
    })
}

/// Pids in the test's namespace of `parent`'s children (the process `unshare --fork` started).
fn children(parent: u32) -> Vec<u32> {
    let path = format!("/proc/{parent}/task/{parent}/children");
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|pid| pid.parse().ok())
        .collect()
}

#[test]
fn socket_tracepoints_see_own_pid_namespace_only() {
    // This machine (and CI's) has kernel BTF and Linux 6.3+, so the preferred hooks must be the
    // ones in use.
    assert!(
        std::path::Path::new("/sys/kernel/btf/vmlinux").exists(),
        "this test expects kernel BTF"
    );
    events_of_own_pid_namespace_only(HookChoice::Best, Hook::SocketTracepoints);
}

#[test]
fn btf_sys_exit_fallback_sees_own_pid_namespace_only() {
    events_of_own_pid_namespace_only(HookChoice::SyscallOnly, Hook::BtfTracepoint);
}

#[test]
fn raw_tracepoint_fallback_sees_own_pid_namespace_only() {
    events_of_own_pid_namespace_only(HookChoice::RawOnly, Hook::RawTracepoint);
}

/// As root, both kinds of uprobe are possible here (Linux 6.6+, CAP_SYS_ADMIN): `auto` takes
/// `uprobe_multi` links, and the TLS programs also load for perf-event uprobes, in the object
/// aya loaded.
#[test]
fn both_uprobe_kinds_are_chosen_and_load_as_root() {
    require_root();
    let choice = tls::choose(TlsUprobes::Auto).expect("uprobe_multi links on this kernel");
    assert_eq!(choice.kind, UprobeKind::Multi);
    assert_eq!(choice.fallback, None);
    let choice = tls::choose(TlsUprobes::Perf).expect("perf-event uprobes as root");
    assert_eq!(choice.kind, UprobeKind::Perf);
    let probes = Probes::load(ProbeConfig {
        pid_namespace: PidNamespace::current().expect("own pid namespace"),
        ring_buffer_bytes: 1 << 20,
        hooks: HookChoice::Best,
        tls: Some(UprobeKind::Perf),
    })
    .expect("load and attach the embedded eBPF object");
    assert!(probes.tls_enabled());
}

fn events_of_own_pid_namespace_only(hooks: HookChoice, expected: Hook) {
    require_root();
    let mut probes = Probes::load(ProbeConfig {
        pid_namespace: PidNamespace::current().expect("own pid namespace"),
        ring_buffer_bytes: 1 << 20,
        hooks,
        tls: Some(UprobeKind::Multi),
    })
    .expect("load and attach the embedded eBPF object");
    assert_eq!(probes.hook(), expected);
    // The TLS programs pass the verifier as uprobe_multi programs, sharing the maps.
    assert!(probes.tls_enabled());
    let mut ring = probes.take_events().expect("ring buffer");

    let port = serving("127.0.0.1:0");
    let nonce = std::process::id();
    let decoy_marker = format!("DECOY-{nonce}");
    let own_marker = format!("HELLO-{nonce}");

    // The decoy: same program, in a fresh PID namespace. Select both its pid as seen from here
    // and its pid inside its namespace, so only the namespace check can keep it out.
    let mut decoy = Command::new("unshare")
        .args([
            "--pid",
            "--fork",
            "python3",
            "-c",
            CLIENT,
            &port.to_string(),
        ])
        .arg(&decoy_marker)
        .stdin(Stdio::piped())
        .spawn()
        .expect("spawn unshare (util-linux)");
    let deadline = Instant::now() + Duration::from_secs(5);
    let decoy_pids = loop {
        let pids = children(decoy.id());
        if !pids.is_empty() {
            break pids;
        }
        assert!(Instant::now() < deadline, "decoy never started");
        std::thread::sleep(Duration::from_millis(10));
    };
    for pid in decoy_pids.iter().copied().chain([1, 2]) {
        probes.select_process(pid).unwrap();
    }
    writeln!(decoy.stdin.take().unwrap()).unwrap();
    assert!(decoy.wait().unwrap().success(), "decoy client failed");

    let mut own = Command::new("python3")
        .args(["-c", CLIENT, &port.to_string(), &own_marker])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    let own_pid = own.id();
    probes.select_process(own_pid).unwrap();
    writeln!(own.stdin.take().unwrap()).unwrap();
    assert!(own.wait().unwrap().success(), "client failed");

    let mut connected = false;
    let mut wrote_marker = false;
    let mut closed = false;
    let deadline = Instant::now() + Duration::from_secs(5);
    while !(connected && wrote_marker && closed) && Instant::now() < deadline {
        let Some(item) = ring.next() else {
            std::thread::sleep(Duration::from_millis(5));
            continue;
        };
        let event = Event::decode(&item).expect("well-formed event");
        match event {
            Event::Connect {
                meta,
                role,
                peer,
                local,
            } => {
                assert!(
                    !decoy_pids.contains(&meta.pid) && meta.pid != 1,
                    "event from the other namespace leaked: {event:?}"
                );
                if meta.pid == own_pid {
                    assert_eq!(peer, Some(format!("127.0.0.1:{port}").parse().unwrap()));
                    if expected == Hook::SocketTracepoints {
                        // Seen first when it sends; the socket itself names the local end.
                        assert_eq!(role, Role::Unknown);
                        let local = local.expect("local address read from the socket");
                        assert_eq!(local.ip().to_string(), "127.0.0.1");
                        assert_ne!(local.port(), 0);
                    } else {
                        assert_eq!(role, Role::Client);
                        assert_eq!(local, None);
                    }
                    connected = true;
                }
            }
            Event::Data {
                meta,
                direction,
                total_len,
                payload,
                ..
            } => {
                assert!(
                    !payload
                        .windows(decoy_marker.len())
                        .any(|w| w == decoy_marker.as_bytes()),
                    "decoy traffic leaked into the ring buffer"
                );
                if meta.pid == own_pid && direction == Direction::Egress {
                    assert_eq!(payload, own_marker.as_bytes());
                    assert_eq!(total_len as usize, own_marker.len());
                    wrote_marker = true;
                }
            }
            Event::Close { meta } => {
                assert!(
                    !decoy_pids.contains(&meta.pid) && meta.pid != 1,
                    "event from the other namespace leaked: {event:?}"
                );
                closed |= meta.pid == own_pid;
            }
            Event::Pieces { .. } => {
                panic!("a short plain-text write captured as pieces: {event:?}")
            }
            Event::TlsData { .. } | Event::TlsTie { .. } | Event::TlsClose { .. } => {
                panic!("no TLS library is hooked here: {event:?}")
            }
        }
    }
    assert!(connected, "no connect event from the selected process");
    assert!(wrote_marker, "no data event from the selected process");
    assert!(closed, "no close event from the selected process");
    let stats = probes.stats().unwrap();
    assert!(stats.events >= 3, "kernel counted {stats:?}");
    assert_eq!(stats.dropped, 0);
}

/// The preferred hooks, which this machine (and CI's) must have, and their ring buffer.
fn load_socket_tracepoints() -> (Probes, RingBuf<MapData>) {
    require_root();
    let mut probes = Probes::load(ProbeConfig {
        pid_namespace: PidNamespace::current().expect("own pid namespace"),
        ring_buffer_bytes: 1 << 20,
        hooks: HookChoice::Best,
        tls: None,
    })
    .expect("load and attach the embedded eBPF object");
    assert_eq!(probes.hook(), Hook::SocketTracepoints);
    let ring = probes.take_events().expect("ring buffer");
    (probes, ring)
}

/// Starts a python `script` (argument: `port`) with piped stdin and stdout.
fn python(script: &str, port: u16) -> std::process::Child {
    Command::new("python3")
        .args(["-c", script, &port.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Runs a python `script` (argument: `port`) as a selected process once it is selected; returns
/// its pid and what it printed.
fn run_selected(probes: &mut Probes, script: &str, port: u16) -> (u32, String) {
    let mut child = python(script, port);
    let pid = child.id();
    probes.select_process(pid).unwrap();
    writeln!(child.stdin.take().unwrap()).unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success(), "client failed");
    (
        pid,
        String::from_utf8_lossy(&output.stdout).trim().to_owned(),
    )
}

/// Waits (up to 5 s) for the first event of process `pid` that `pick` makes something of.
fn first_event<T>(
    ring: &mut RingBuf<MapData>,
    pid: u32,
    what: &str,
    mut pick: impl FnMut(&Event<'_>) -> Option<T>,
) -> T {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        assert!(Instant::now() < deadline, "no {what} event from pid {pid}");
        let Some(item) = ring.next() else {
            std::thread::sleep(Duration::from_millis(5));
            continue;
        };
        let event = Event::decode(&item).expect("well-formed event");
        if event.meta().pid == pid
            && let Some(found) = pick(&event)
        {
            return found;
        }
    }
}

/// The selected process: a request, a peek then a read of the reply, then its descriptor is
/// pointed at a second connection with dup2 (the first socket goes without a close(2)) and used.
const REUSER: &str = "import os, socket, sys\n\
sys.stdin.readline()\n\
port = int(sys.argv[1])\n\
s = socket.create_connection(('127.0.0.1', port))\n\
s.sendall(b'FIRST')\n\
s.recv(2, socket.MSG_PEEK)\n\
s.recv(16)\n\
t = socket.create_connection(('127.0.0.1', port))\n\
os.dup2(t.fileno(), s.fileno())\n\
os.write(s.fileno(), b'SECOND')\n\
print(s.fileno(), flush=True)\n";

#[test]
fn socket_tracepoints_skip_peeks_and_notice_a_reused_descriptor() {
    let (mut probes, mut ring) = load_socket_tracepoints();
    let port = serving("127.0.0.1:0");
    let (pid, printed) = run_selected(&mut probes, REUSER, port);
    let fd: i32 = printed.parse().unwrap();

    // The local port of each connect, and the payloads, of the process's descriptor `fd`.
    let mut connects = Vec::new();
    let mut payloads: Vec<(Direction, Vec<u8>)> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    while !payloads.iter().any(|(_, p)| p == b"SECOND") && Instant::now() < deadline {
        let Some(item) = ring.next() else {
            std::thread::sleep(Duration::from_millis(5));
            continue;
        };
        match Event::decode(&item).expect("well-formed event") {
            Event::Connect { meta, local, .. } if meta.pid == pid && meta.fd == fd => {
                connects.push(local.expect("local address").port());
            }
            Event::Data {
                meta,
                direction,
                payload,
                ..
            } if meta.pid == pid && meta.fd == fd => payloads.push((direction, payload.to_vec())),
            _ => {}
        }
    }
    assert_eq!(
        payloads,
        vec![
            (Direction::Egress, b"FIRST".to_vec()),
            // The peek moved nothing off the socket: one ingress event, not two.
            (Direction::Ingress, b"ok".to_vec()),
            (Direction::Egress, b"SECOND".to_vec()),
        ]
    );
    // The descriptor was seen as two sockets (two local ports), the second without a close.
    assert_eq!(connects.len(), 2, "{connects:?}");
    assert_ne!(connects[0], connects[1]);
}

#[test]
fn socket_tracepoints_read_ipv6_addresses_from_the_socket() {
    let (mut probes, mut ring) = load_socket_tracepoints();
    let port = serving("[::1]:0");
    let script = "import socket, sys\n\
        sys.stdin.readline()\n\
        s = socket.create_connection(('::1', int(sys.argv[1])))\n\
        s.sendall(b'V6')\n\
        print(s.getsockname()[1], flush=True)\n\
        s.recv(16)\n";
    let (pid, printed) = run_selected(&mut probes, script, port);
    let local_port: u16 = printed.parse().unwrap();
    let connect = first_event(&mut ring, pid, "connect", |event| match event {
        Event::Connect { peer, local, .. } => Some((*peer, *local)),
        _ => None,
    });
    assert_eq!(connect.0, Some(format!("[::1]:{port}").parse().unwrap()));
    assert_eq!(
        connect.1,
        Some(format!("[::1]:{local_port}").parse().unwrap())
    );
}

#[test]
fn socket_tracepoints_close_a_handed_over_socket_never_seen_moving_data() {
    let (mut probes, mut ring) = load_socket_tracepoints();
    let port = serving("127.0.0.1:0");
    // Connected before its process is selected, closed without a byte sent after.
    let script = "import socket, sys\n\
        s = socket.create_connection(('127.0.0.1', int(sys.argv[1])))\n\
        print(s.fileno(), flush=True)\n\
        sys.stdin.readline()\n\
        s.close()\n";
    let mut child = python(script, port);
    let pid = child.id();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    let fd: i32 = line.trim().parse().unwrap();
    probes.select_process(pid).unwrap();
    probes.track_socket(pid, fd, Role::Client).unwrap();
    writeln!(child.stdin.take().unwrap()).unwrap();
    assert!(child.wait().unwrap().success(), "client failed");
    let closed = first_event(&mut ring, pid, "close", |event| match event {
        Event::Close { meta } => Some(meta.fd),
        _ => None,
    });
    assert_eq!(closed, fd);
}

/// Whether a poller already waiting on `fd` when data comes is woken before `timeout` (at the
/// timeout, poll looks once more and reports the data then: only the time tells a wakeup).
fn woken_within(fd: std::os::fd::RawFd, timeout: Duration) -> std::thread::JoinHandle<bool> {
    let handle = std::thread::spawn(move || {
        let mut poll = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        let millis = i32::try_from(timeout.as_millis()).unwrap();
        let start = Instant::now();
        // SAFETY: one pollfd, owned by this frame, for the duration of the call.
        let ready = unsafe { libc::poll(&mut poll, 1, millis) };
        ready > 0 && start.elapsed() < timeout
    });
    // Let the poller block before the caller makes events.
    std::thread::sleep(Duration::from_millis(300));
    handle
}

/// Reads from every connection until its end; returns the port.
fn draining() -> u16 {
    serve("127.0.0.1:0", |mut stream| {
        let _ = std::io::copy(&mut stream, &mut std::io::sink());
    })
}

#[test]
fn ring_wakes_its_reader_once_a_threshold_is_queued_not_per_record() {
    let (mut probes, mut ring) = load_socket_tracepoints();
    let threshold = (1u32 << 20) / sidecar_bpf::WAKEUP_FRACTION;
    let big_sends = threshold / 1000 + 8;
    let port = draining();
    // A small request, then (on a second line) enough 1000-byte sends to queue the threshold.
    let script = format!(
        "import socket, sys\n\
         sys.stdin.readline()\n\
         s = socket.create_connection(('127.0.0.1', int(sys.argv[1])))\n\
         s.sendall(b'SMALL')\n\
         print('sent', flush=True)\n\
         sys.stdin.readline()\n\
         for _ in range({big_sends}): s.sendall(b'y' * 1000)\n\
         s.close()\n"
    );
    let mut child = python(&script, port);
    let pid = child.id();
    probes.select_process(pid).unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let fd = std::os::fd::AsRawFd::as_raw_fd(&ring);

    // A few records far below the threshold: queued without waking a waiting reader.
    let poller = woken_within(fd, Duration::from_secs(1));
    writeln!(stdin).unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(&mut stdout, &mut line).unwrap();
    assert!(!poller.join().unwrap(), "woken for a few small records");
    let small = first_event(&mut ring, pid, "small data", |event| match event {
        Event::Data { payload, .. } => Some(payload.to_vec()),
        _ => None,
    });
    assert_eq!(small, b"SMALL");

    // Crossing the threshold wakes it, long before the client is done.
    let poller = woken_within(fd, Duration::from_secs(5));
    writeln!(stdin).unwrap();
    assert!(
        poller.join().unwrap(),
        "not woken once the threshold was queued"
    );
    assert!(child.wait().unwrap().success(), "client failed");
    let mut queued = 0u32;
    while let Some(item) = ring.next() {
        if let Ok(Event::Data {
            meta, total_len, ..
        }) = Event::decode(&item)
            && meta.pid == pid
        {
            queued += total_len;
        }
    }
    assert_eq!(queued, big_sends * 1000);
}

/// An HTTP/2 client on two connections. The first starts with the connection preface; then a
/// DATA frame of 16 KiB with trailers (a HEADERS frame) behind it in one write, a write gathered
/// from three buffers (a DATA header, its payload, a HEADERS frame), and a DATA frame split
/// across two writes with a HEADERS frame behind its second half, and a HEADERS frame whose
/// header and payload are buffers of their own. The second connection has no
/// preface (joined mid-stream, as it were), a long write of whole frames, then a long write of
/// HTTP/1-like text. Frame payloads name what they are: `TRAILERS`, `NEXT`, `SPLIT`, `APART`,
/// `LATE`.
const H2_CLIENT: &str = "import socket, struct, sys\n\
sys.stdin.readline()\n\
port = int(sys.argv[1])\n\
frame = lambda kind, flags, stream, payload: struct.pack('>I', len(payload))[1:] + bytes([kind, flags]) + struct.pack('>I', stream) + payload\n\
s = socket.create_connection(('127.0.0.1', port))\n\
s.sendall(b'PRI * HTTP/2.0\\r\\n\\r\\nSM\\r\\n\\r\\n' + frame(4, 0, 0, b''))\n\
s.sendall(frame(0, 0, 1, b'x' * 16384) + frame(1, 5, 1, b'TRAILERS'))\n\
s.sendmsg([frame(0, 0, 3, b'y' * 12000)[:9], b'y' * 12000, frame(1, 4, 5, b'NEXT')])\n\
split = frame(0, 1, 7, b'z' * 16000)\n\
s.sendall(split[:10009])\n\
s.sendall(split[10009:] + frame(1, 5, 9, b'SPLIT'))\n\
s.sendmsg([frame(1, 5, 11, b'APART')[:9], b'APART'])\n\
t = socket.create_connection(('127.0.0.1', port))\n\
t.sendall(frame(0, 0, 1, b'w' * 3000) + frame(1, 5, 1, b'LATE'))\n\
t.sendall(b'POST / HTTP/1.1\\r\\n\\r\\n' + b'v' * 3000)\n\
print(s.fileno(), t.fileno(), flush=True)\n\
s.close(); t.close()\n";

#[test]
fn socket_tracepoints_find_http2_frames_behind_large_data() {
    http2_frames_behind_large_data(HookChoice::Best, Hook::SocketTracepoints);
}

#[test]
fn raw_sys_exit_finds_http2_frames_behind_large_data() {
    http2_frames_behind_large_data(HookChoice::RawOnly, Hook::RawTracepoint);
}

fn http2_frames_behind_large_data(hooks: HookChoice, expected: Hook) {
    require_root();
    let mut probes = Probes::load(ProbeConfig {
        pid_namespace: PidNamespace::current().expect("own pid namespace"),
        ring_buffer_bytes: 1 << 20,
        hooks,
        tls: None,
    })
    .expect("load and attach the embedded eBPF object");
    assert_eq!(probes.hook(), expected);
    let mut ring = probes.take_events().expect("ring buffer");
    let port = draining();
    let (pid, printed) = run_selected(&mut probes, H2_CLIENT, port);
    let fds: Vec<i32> = printed
        .split_whitespace()
        .map(|f| f.parse().unwrap())
        .collect();
    // Per descriptor, each egress event: its pieces (offset, bytes), or `None` for a prefix.
    type Capture = (i32, u32, Option<Vec<(u64, Vec<u8>)>>);
    let mut seen: Vec<Capture> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    while seen.len() < 8 && Instant::now() < deadline {
        let Some(item) = ring.next() else {
            std::thread::sleep(Duration::from_millis(5));
            continue;
        };
        match Event::decode(&item).expect("well-formed event") {
            Event::Data {
                meta,
                direction: Direction::Egress,
                total_len,
                ..
            } if meta.pid == pid => seen.push((meta.fd, total_len, None)),
            Event::Pieces {
                meta,
                direction: Direction::Egress,
                total_len,
                pieces,
            } if meta.pid == pid => seen.push((
                meta.fd,
                total_len,
                Some(pieces.iter().map(|(o, b)| (o, b.to_vec())).collect()),
            )),
            _ => {}
        }
    }
    let frame = |kind: u8, flags: u8, stream: u8, payload: &[u8], len: usize| {
        let mut bytes = (len as u32).to_be_bytes()[1..].to_vec();
        bytes.extend_from_slice(&[kind, flags, 0, 0, 0, stream]);
        bytes.extend_from_slice(payload);
        bytes
    };
    let data = |stream: u8, flags: u8, len: usize| frame(0, flags, stream, b"", len);
    let headers =
        |stream: u8, flags: u8, payload: &[u8]| frame(1, flags, stream, payload, payload.len());
    let (s, t) = (fds[0], fds[1]);
    let preface = (expected == Hook::SocketTracepoints).then(|| {
        let mut bytes = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
        bytes.extend(frame(4, 0, 0, b"", 0));
        vec![(0, bytes)]
    });
    assert_eq!(
        seen,
        vec![
            // The preface write marks the socket; with the socket tracepoints it is walked at
            // once, preface and frames (clients send their first requests with it).
            (s, 24 + 9, preface),
            (
                s,
                16384 + 9 + 17,
                Some(vec![
                    (0, data(1, 0, 16384)),
                    (16393, headers(1, 5, b"TRAILERS"))
                ])
            ),
            (
                s,
                9 + 12000 + 13,
                Some(vec![
                    (0, data(3, 0, 12000)),
                    (12009, headers(5, 4, b"NEXT"))
                ])
            ),
            (s, 10009, Some(vec![(0, data(7, 1, 16000))])),
            // The split frame's rest is skipped by count, from the position the first half left.
            (s, 6000 + 14, Some(vec![(6000, headers(9, 5, b"SPLIT"))])),
            // A frame's header and payload in buffers of their own, as nginx writes them: one
            // piece, as bytes back to back are.
            (s, 14, Some(vec![(0, headers(11, 5, b"APART"))])),
            // Whole frames that account for a long write of an unmarked socket.
            (
                t,
                3009 + 13,
                Some(vec![(0, data(1, 0, 3000)), (3009, headers(1, 5, b"LATE"))])
            ),
            // Text: a prefix.
            (t, 19 + 3000, None),
        ]
    );
}
