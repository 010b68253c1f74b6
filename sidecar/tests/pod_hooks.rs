//! The pod-scoped capture on a real kernel, in realistic pods (a PID namespace per pod, each
//! container a cgroup v2 directory with its own cgroup and mount namespaces): the loader attaches
//! the cgroup programs to the app containers' cgroups from the sidecar's own container and sees
//! a real server's segments and connection lifecycle, and nothing of a decoy pod or of the
//! sidecar's own container; a restarted container is attached within a second; the attach needs
//! CAP_NET_ADMIN beyond the tracepoint mode's four capabilities; real segments of 1 MiB each way
//! reassemble without gaps.
//!
//! The sidecar stand-in is this test binary itself, started in the pod's sidecar container with
//! `OBI_POD_HOOKS_HELPER` set: it chooses the mode as the sidecar does, syncs the attachments on
//! each 250 ms scan of the pod's processes and prints every record as a line. Needs root; CI
//! runs as root.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests and their set-up: failing loudly is their job"
)]

#[path = "support/pod.rs"]
mod pod;

use std::{
    collections::HashMap,
    io::{Read, Write},
    net::TcpListener,
    sync::mpsc,
    time::{Duration, Instant},
};

use pod::{Container, Pod, child_of, free_ports, pid_in_namespace, run};

const WAIT: Duration = Duration::from_secs(20);
const HELPER_ENV: &str = "OBI_POD_HOOKS_HELPER";
/// The effective capabilities of the pod-scoped mode: DAC_READ_SEARCH (2), NET_ADMIN (12),
/// SYS_PTRACE (19), PERFMON (38), BPF (39).
const POD_MODE_CAPS: &str = "000000c000081004";

/// The sidecar stand-in. Not a test of its own: without `OBI_POD_HOOKS_HELPER` it returns.
#[test]
fn pod_hooks_helper() {
    if let Ok(mode) = std::env::var(HELPER_ENV) {
        helper::run(&mode);
    }
}

mod helper {
    //! What the run loop will do in the pod-scoped mode, printing instead of parsing.

    use std::time::{Duration, Instant};

    use obi_sidecar::{
        capture::{
            PidNamespace,
            cgroup::{Capture, Changes, PodHooks, PodHooksConfig, choose_mode},
            events::{Direction, Payload, PodEvent, TcpConnection},
        },
        config::CaptureMode,
    };

    /// The pod's processes but its init, which stands for the pause container (never selected).
    fn pod_pids() -> Vec<u32> {
        std::fs::read_dir("/proc")
            .into_iter()
            .flatten()
            .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse().ok())
            .filter(|pid| *pid != 1)
            .collect()
    }

    fn changes(changes: &Changes) {
        for c in &changes.attached {
            println!(
                "ATTACHED {} {} {}",
                c.cgroup.dev,
                c.cgroup.ino,
                c.path.display()
            );
        }
        for c in &changes.detached {
            println!("DETACHED {} {}", c.cgroup.dev, c.cgroup.ino);
        }
        for f in &changes.failed {
            println!("FAILED {} {}", f.pid, f.error);
        }
    }

    fn addresses(c: &TcpConnection) -> String {
        let show = |a: Option<std::net::SocketAddr>| a.map_or("-".to_owned(), |a| a.to_string());
        format!("{} {}", show(c.local), show(c.peer))
    }

    pub fn run(mode: &str) {
        // libtest has printed "test pod_hooks_helper ... " without a line end.
        println!();
        let mode = match CaptureMode::parse(mode) {
            Ok(mode) => mode,
            Err(e) => return println!("ERROR {e}"),
        };
        let namespace = match PidNamespace::current() {
            Ok(namespace) => namespace,
            Err(e) => return println!("ERROR {e}"),
        };
        let config = PodHooksConfig::new(namespace, sidecar_bpf::DEFAULT_RING_BYTES, None);
        let mut hooks = match choose_mode(mode, || PodHooks::probe(&config, pod_pids())) {
            Err(e) => return println!("ERROR {e}"),
            Ok(choice) => match choice.capture {
                Capture::Pod(hooks) => hooks,
                Capture::Syscalls(hooks) => {
                    let reason = choice.fallback.unwrap_or_default();
                    return println!("FALLBACK {hooks:?} {reason}");
                }
            },
        };
        for c in hooks.containers() {
            println!(
                "ATTACHED {} {} {}",
                c.cgroup.dev,
                c.cgroup.ino,
                c.path.display()
            );
        }
        println!("READY");
        let Some(mut ring) = hooks.take_events() else {
            return println!("ERROR no ring buffer");
        };
        let started = Instant::now();
        let mut scanned = Instant::now();
        // Bounded, in case the test dies without killing its pods.
        while started.elapsed() < Duration::from_secs(90) {
            if scanned.elapsed() >= Duration::from_millis(250) {
                scanned = Instant::now();
                changes(&hooks.sync(pod_pids()));
            }
            let Some(record) = ring.next() else {
                std::thread::sleep(Duration::from_millis(5));
                continue;
            };
            match PodEvent::decode(&record) {
                Ok(PodEvent::Segment {
                    cookie,
                    direction,
                    seq,
                    len,
                    flags,
                    timestamp_ns,
                    task,
                    payload,
                }) => println!(
                    "SEG {cookie} {} {seq} {len} {} {} {} {timestamp_ns} {} {}",
                    if direction == Direction::Egress {
                        "out"
                    } else {
                        "in"
                    },
                    flags.0,
                    task.map_or(0, |t| t.pid),
                    task.map_or(0, |t| t.tid),
                    match payload {
                        Payload::Prefix(_) => "prefix",
                        Payload::Pieces(_) => "pieces",
                    },
                    // Each piece (a prefix is one) as offset:hex; "-" for none.
                    Some(
                        payload
                            .ranges()
                            .map(|(offset, bytes)| format!("{offset}:{}", hex::encode(bytes)))
                            .collect::<Vec<_>>()
                            .join(",")
                    )
                    .filter(|p| !p.is_empty())
                    .unwrap_or_else(|| "-".to_owned()),
                ),
                Ok(PodEvent::Connect { connection, task }) => println!(
                    "CONNECT {} {} {} {}",
                    connection.cookie,
                    task.map_or(0, |t| t.pid),
                    task.map_or(0, |t| t.tid),
                    addresses(&connection)
                ),
                Ok(PodEvent::Established { connection, role }) => println!(
                    "ESTABLISHED {} {role:?} {} {} {}",
                    connection.cookie,
                    addresses(&connection),
                    connection.send_next,
                    connection.recv_next
                ),
                Ok(PodEvent::Closed { connection }) => println!(
                    "CLOSED {} {} {} {}",
                    connection.cookie,
                    addresses(&connection),
                    connection.send_next,
                    connection.recv_next
                ),
                // This helper loads no TLS programs.
                Ok(PodEvent::Tls(event)) => println!("TLS {event:?}"),
                Err(e) => println!("MALFORMED {e}"),
            }
        }
    }
}

/// One line of the helper's output.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Line {
    Ready,
    Attached {
        cgroup: (u64, u64),
    },
    Detached {
        cgroup: (u64, u64),
    },
    Failed(String),
    Fallback(String),
    Error(String),
    Segment(Seg),
    Connect {
        cookie: u64,
        pid: u32,
        tid: u32,
        peer: String,
    },
    Established {
        cookie: u64,
        role: String,
        local: String,
        peer: String,
        send: u32,
        recv: u32,
    },
    Closed {
        cookie: u64,
        send: u32,
        recv: u32,
    },
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Seg {
    cookie: u64,
    egress: bool,
    seq: u32,
    len: u32,
    flags: u8,
    pid: u32,
    tid: u32,
    /// A pieced record (HTTP/2 frames walked in the kernel) rather than a prefix.
    pieced: bool,
    /// What the record holds: (offset in the segment, bytes); a prefix is one piece at 0.
    pieces: Vec<(u32, Vec<u8>)>,
}

impl Seg {
    fn contains(&self, needle: &str) -> bool {
        self.pieces
            .iter()
            .any(|(_, bytes)| bytes.windows(needle.len()).any(|w| w == needle.as_bytes()))
    }

    /// The bytes of a prefix record.
    fn prefix(&self) -> &[u8] {
        assert!(!self.pieced, "a pieced record: {self:?}");
        self.pieces.first().map_or(&[][..], |(_, bytes)| bytes)
    }
}

fn parse(line: &str) -> Option<Line> {
    let (tag, rest) = line.split_once(' ').unwrap_or((line, ""));
    let f: Vec<&str> = rest.split(' ').collect();
    let num = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok());
    let small = |i: usize| num(i).and_then(|v| u32::try_from(v).ok());
    Some(match tag {
        "READY" => Line::Ready,
        "ATTACHED" => Line::Attached {
            cgroup: (num(0)?, num(1)?),
        },
        "DETACHED" => Line::Detached {
            cgroup: (num(0)?, num(1)?),
        },
        "FAILED" => Line::Failed(rest.to_owned()),
        "FALLBACK" => Line::Fallback(rest.to_owned()),
        "ERROR" => Line::Error(rest.to_owned()),
        "SEG" => Line::Segment(Seg {
            cookie: num(0)?,
            egress: *f.get(1)? == "out",
            seq: small(2)?,
            len: small(3)?,
            flags: u8::try_from(num(4)?).ok()?,
            pid: small(5)?,
            tid: small(6)?,
            pieced: *f.get(8)? == "pieces",
            pieces: match *f.get(9)? {
                "-" => Vec::new(),
                list => list
                    .split(',')
                    .map(|piece| {
                        let (offset, bytes) = piece.split_once(':')?;
                        Some((offset.parse().ok()?, hex::decode(bytes).ok()?))
                    })
                    .collect::<Option<_>>()?,
            },
        }),
        "CONNECT" => Line::Connect {
            cookie: num(0)?,
            pid: small(1)?,
            tid: small(2)?,
            peer: (*f.get(4)?).to_owned(),
        },
        "ESTABLISHED" => Line::Established {
            cookie: num(0)?,
            role: (*f.get(1)?).to_owned(),
            local: (*f.get(2)?).to_owned(),
            peer: (*f.get(3)?).to_owned(),
            send: small(4)?,
            recv: small(5)?,
        },
        "CLOSED" => Line::Closed {
            cookie: num(0)?,
            send: small(3)?,
            recv: small(4)?,
        },
        _ => return None,
    })
}

/// The sidecar stand-in of one pod, running in its sidecar container.
struct Helper {
    name: String,
}

impl Helper {
    /// Starts the stand-in in `container` under `bounding` capabilities (setpriv syntax; None:
    /// all of root's).
    fn start(pod: &mut Pod, container: &Container, mode: &str, bounding: Option<&str>) -> Self {
        let exe = std::env::current_exe().expect("the test binary");
        let exe = exe.to_string_lossy().into_owned();
        let name = format!("helper-{mode}-{}", bounding.map_or("root", |_| "setpriv"));
        let bounding = bounding.map(|caps| format!("--bounding-set=-all,{caps}"));
        let mut argv: Vec<&str> = Vec::new();
        if let Some(bounding) = &bounding {
            argv.extend(["setpriv", bounding.as_str(), "--"]);
        }
        argv.extend([
            exe.as_str(),
            "pod_hooks_helper",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ]);
        pod.spawn_in(container, &name, &argv, &[(HELPER_ENV, mode)]);
        Self { name }
    }

    fn lines(&self, pod: &Pod) -> Vec<Line> {
        pod.log(&format!("{}.out", self.name))
            .lines()
            .filter_map(parse)
            .collect()
    }

    /// Waits until `done` holds for the lines printed so far; returns them.
    fn wait(&self, pod: &Pod, what: &str, done: impl Fn(&[Line]) -> bool) -> Vec<Line> {
        let deadline = Instant::now() + WAIT;
        loop {
            let lines = self.lines(pod);
            if done(&lines) {
                return lines;
            }
            assert!(
                Instant::now() < deadline,
                "{}: no {what}; it printed:\n{}\n{}",
                self.name,
                pod.log(&format!("{}.out", self.name)),
                pod.log(&format!("{}.err", self.name)),
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Waits until the stand-in is capturing; returns the cgroups it attached.
    fn ready(&self, pod: &Pod) -> Vec<(u64, u64)> {
        let lines = self.wait(pod, "READY", |lines| {
            lines
                .iter()
                .any(|l| matches!(l, Line::Ready | Line::Error(_) | Line::Fallback(_)))
        });
        assert!(lines.contains(&Line::Ready), "{lines:?}");
        attached(&lines)
    }
}

fn attached(lines: &[Line]) -> Vec<(u64, u64)> {
    lines
        .iter()
        .filter_map(|l| match l {
            Line::Attached { cgroup } => Some(*cgroup),
            _ => None,
        })
        .collect()
}

fn segments(lines: &[Line]) -> impl Iterator<Item = &Seg> {
    lines.iter().filter_map(|l| match l {
        Line::Segment(s) => Some(s),
        _ => None,
    })
}

/// A server outside every pod: answers each connection once and reports its request line.
fn host_server(port: u16) -> mpsc::Receiver<String> {
    let listener = TcpListener::bind(("127.0.0.1", port)).expect("host server port");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut buf = [0u8; 4096];
            let n = stream.read(&mut buf).unwrap_or(0);
            let request = String::from_utf8_lossy(&buf[..n]);
            let _ = tx.send(request.lines().next().unwrap_or_default().to_owned());
            let _ = stream
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok");
        }
    });
    rx
}

fn curl(args: &[&str]) -> String {
    let mut argv = vec!["curl", "-sS", "-o", "/dev/null"];
    argv.extend_from_slice(args);
    run(&argv)
}

/// The pod-namespace pid of the program an `nsenter` wrapper started.
fn program_pid(wrapper: u32) -> u32 {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if let Some(pid) = child_of(wrapper) {
            return pid_in_namespace(pid);
        }
        assert!(
            Instant::now() < deadline,
            "nsenter {wrapper} started nothing"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The established server connection on `port`.
fn server_connection(lines: &[Line], port: u16) -> Option<(u64, u32, u32)> {
    let local = format!("127.0.0.1:{port}");
    lines.iter().find_map(|l| match l {
        Line::Established {
            cookie,
            role,
            local: l,
            send,
            recv,
            ..
        } if role == "Server" && *l == local => Some((*cookie, *send, *recv)),
        _ => None,
    })
}

#[test]
fn pod_hooks_see_the_app_containers_traffic_and_nothing_else() {
    pod::require_root();
    let nonce = std::process::id();
    let [port, decoy_port, outside] = free_ports();
    let requests = host_server(outside);

    let mut pod = Pod::new();
    let app = pod.container("app");
    let obi = pod.container("obi");
    let mut decoy = Pod::new();
    let decoy_app = decoy.container("app");
    let decoy_obi = decoy.container("obi");
    let server = {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/servers/app.py");
        let wrapper = pod.spawn_in(&app, "server", &["python3", script, &port.to_string()], &[]);
        pod::wait_for_port(port, WAIT);
        program_pid(wrapper)
    };
    decoy.start_app_in(&decoy_app, "server", decoy_port);

    let helper = Helper::start(&mut pod, &obi, "pod", None);
    let decoy_helper = Helper::start(&mut decoy, &decoy_obi, "pod", None);
    // Each attached its own app container and nothing else (not its own container).
    assert_eq!(helper.ready(&pod), vec![app.cgroup_id()]);
    assert_eq!(decoy_helper.ready(&decoy), vec![decoy_app.cgroup_id()]);

    // A request from outside, whose handler calls a server outside the pod on its own thread.
    let main = format!("MAIN-{nonce}");
    let sizes = curl(&[
        "-w",
        "%{size_request} %{size_header} %{size_download}",
        &format!("http://127.0.0.1:{port}/call/{outside}/users/{main}"),
    ]);
    assert_eq!(
        requests.recv_timeout(WAIT).expect("the nested call"),
        format!("GET /users/{main} HTTP/1.1")
    );
    // The decoy pod's traffic, and the sidecar container's own.
    let decoy_marker = format!("DECOY-{nonce}");
    curl(&[&format!(
        "http://127.0.0.1:{decoy_port}/users/{decoy_marker}"
    )]);
    let own = format!("OWN-{nonce}");
    pod.spawn_in(
        &obi,
        "own",
        &["curl", "-sS", &format!("http://127.0.0.1:{outside}/{own}")],
        &[],
    );
    assert_eq!(
        requests
            .recv_timeout(WAIT)
            .expect("the sidecar container's own request"),
        format!("GET /{own} HTTP/1.1")
    );

    let sizes: Vec<u32> = sizes
        .split(' ')
        .map(|n| n.trim().parse().unwrap())
        .collect();
    let (request_len, response_len) = (sizes[0], sizes[1] + sizes[2]);
    let lines = helper.wait(&pod, "server connection closed", |lines| {
        server_connection(lines, port).is_some_and(|(cookie, ..)| {
            lines
                .iter()
                .any(|l| matches!(l, Line::Closed { cookie: c, .. } if *c == cookie))
        })
    });
    let (cookie, send_start, recv_start) = server_connection(&lines, port).unwrap();
    let of_conn: Vec<&Seg> = segments(&lines).filter(|s| s.cookie == cookie).collect();

    // The request: one segment, starting where the handshake said the stream starts.
    let request: Vec<&Seg> = of_conn
        .iter()
        .copied()
        .filter(|s| !s.egress && s.len > 0)
        .collect();
    assert_eq!(request.len(), 1, "{request:?}");
    assert_eq!(request[0].seq, recv_start);
    assert_eq!(request[0].len, request_len);
    assert!(
        request[0].prefix().starts_with(b"GET /call/"),
        "{:?}",
        request[0]
    );
    assert_eq!(
        (request[0].pid, request[0].tid),
        (0, 0),
        "ingress names no task"
    );

    // The response: contiguous from the stream's start, sent by the server's serving thread.
    let response: Vec<&Seg> = of_conn
        .iter()
        .copied()
        .filter(|s| s.egress && s.len > 0)
        .collect();
    assert!(
        response[0].prefix().starts_with(b"HTTP/1.1 200 OK\r\n"),
        "{response:?}"
    );
    let mut next = send_start;
    for s in &response {
        assert_eq!(s.seq, next, "{response:?}");
        assert_eq!((s.pid, s.prefix().len() as u32), (server, s.len), "{s:?}");
        next = next.wrapping_add(s.len);
    }
    assert_eq!(next.wrapping_sub(send_start), response_len);
    let serving_thread = response[0].tid;
    assert_ne!(
        serving_thread, server,
        "ThreadingHTTPServer serves on a thread of its own"
    );

    // Both FINs are segments of their own, and the close names where each stream ended.
    let fin = |egress| {
        of_conn
            .iter()
            .any(|s| s.egress == egress && s.flags & 1 != 0 && s.len == 0)
    };
    assert!(fin(true) && fin(false), "{of_conn:?}");
    let closed = lines.iter().find_map(|l| match l {
        Line::Closed {
            cookie: c,
            send,
            recv,
        } if *c == cookie => Some((*send, *recv)),
        _ => None,
    });
    assert_eq!(
        closed,
        Some((
            send_start.wrapping_add(response_len + 1),
            recv_start.wrapping_add(request_len + 1)
        ))
    );

    // The nested call: connect(2) names the serving thread, which the response names too, so
    // the client call joins the request it was made for.
    let connects: Vec<(u64, u32, u32)> = lines
        .iter()
        .filter_map(|l| match l {
            Line::Connect {
                cookie,
                pid,
                tid,
                peer,
            } if *peer == format!("127.0.0.1:{outside}") => Some((*cookie, *pid, *tid)),
            _ => None,
        })
        .collect();
    assert_eq!(connects.len(), 1, "{lines:?}");
    let (client_cookie, pid, tid) = connects[0];
    assert_eq!((pid, tid), (server, serving_thread));
    assert!(lines.iter().any(|l| matches!(
        l,
        Line::Established { cookie, role, .. } if *cookie == client_cookie && role == "Client"
    )));
    assert!(segments(&lines).any(|s| s.cookie == client_cookie
        && s.egress
        && s.tid == serving_thread
        && s.contains(&format!("GET /users/{main}"))));

    // Nothing of the decoy pod, nor of the sidecar's own container, in this pod's sidecar;
    // nothing of this pod in the decoy's, which saw its own request.
    let decoy_lines = decoy_helper.wait(&decoy, "the decoy's own request", |lines| {
        segments(lines).any(|s| s.contains(&decoy_marker))
    });
    for s in segments(&lines) {
        assert!(
            !s.contains(&decoy_marker) && !s.contains(&own),
            "leaked: {s:?}"
        );
    }
    for s in segments(&decoy_lines) {
        assert!(
            !s.contains(&main) && !s.contains(&own),
            "leaked into the decoy: {s:?}"
        );
    }
    // The stand-in hands over every process of its pod, its own container's too: those are
    // reported as left to the tracepoints, and nothing else fails.
    for l in lines.iter().chain(&decoy_lines) {
        let own_cgroup =
            matches!(l, Line::Failed(f) if f.contains("shares the sidecar's own cgroup"));
        assert!(
            own_cgroup || !matches!(l, Line::Failed(_) | Line::Error(_)),
            "{l:?}"
        );
    }
}

#[test]
fn a_restarted_container_is_attached_within_a_second() {
    pod::require_root();
    let [first_port, second_port] = free_ports();
    let mut pod = Pod::new();
    let app = pod.container("app");
    let obi = pod.container("obi");
    pod.start_app_in(&app, "server", first_port);
    let helper = Helper::start(&mut pod, &obi, "pod", None);
    let old = app.cgroup_id();
    assert_eq!(helper.ready(&pod), vec![old]);

    // The new container exists, with its init, from the moment `restart` returns.
    let app = pod.restart(&app);
    let started = Instant::now();
    let new = app.cgroup_id();
    assert_ne!(new, old);
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/servers/app.py");
    pod.spawn_in(
        &app,
        "server2",
        &["python3", script, &second_port.to_string()],
        &[],
    );
    helper.wait(&pod, "the new cgroup attached", |lines| {
        attached(lines).contains(&new)
    });
    let elapsed = started.elapsed();
    assert!(
        elapsed < Duration::from_secs(1),
        "attached after {elapsed:?}"
    );
    // The old one is detached in the same scan.
    helper.wait(&pod, "the old cgroup detached", |lines| {
        lines.contains(&Line::Detached { cgroup: old })
    });

    pod::wait_for_port(second_port, WAIT);
    let marker = format!("RESTARTED-{}", std::process::id());
    curl(&[&format!("http://127.0.0.1:{second_port}/users/{marker}")]);
    helper.wait(&pod, "the restarted server's request", |lines| {
        segments(lines).any(|s| !s.egress && s.contains(&marker))
    });
}

#[test]
fn pod_mode_needs_net_admin_beyond_the_tracepoint_capabilities() {
    pod::require_root();
    let [port] = free_ports();
    let mut pod = Pod::new();
    let app = pod.container("app");
    let obi = pod.container("obi");
    pod.start_app_in(&app, "server", port);
    let four = "+bpf,+perfmon,+sys_ptrace,+dac_read_search";

    // The tracepoint mode's four: forced, the pod mode fails naming what is missing; auto
    // falls back to the socket tracepoints, saying why.
    let forced = Helper::start(&mut pod, &obi, "pod", Some(four));
    let lines = forced.wait(&pod, "an error", |lines| {
        lines.iter().any(|l| matches!(l, Line::Error(_)))
    });
    let error = lines.iter().find_map(|l| match l {
        Line::Error(e) => Some(e.clone()),
        _ => None,
    });
    let error = error.unwrap();
    assert!(
        error
            .starts_with("OTEL_EBPF_CAPTURE_MODE=pod is impossible here: CAP_NET_ADMIN is missing"),
        "{error}"
    );
    let auto = Helper::start(&mut pod, &obi, "auto", Some(four));
    let lines = auto.wait(&pod, "a fallback", |lines| {
        lines.iter().any(|l| matches!(l, Line::Fallback(_)))
    });
    assert!(
        lines.iter().any(|l| matches!(l, Line::Fallback(r)
            if r.starts_with("Best pod-scoped capture unavailable (CAP_NET_ADMIN is missing")
                && r.ends_with("using the socket tracepoints"))),
        "{lines:?}"
    );

    // With NET_ADMIN added, and nothing else, it attaches and captures.
    let helper = Helper::start(&mut pod, &obi, "pod", Some(&format!("{four},+net_admin")));
    assert_eq!(helper.ready(&pod), vec![app.cgroup_id()]);
    let stand_in = obi.pids().into_iter().find(|pid| {
        std::fs::read_to_string(format!("/proc/{pid}/cmdline"))
            .is_ok_and(|c| c.contains("pod_hooks_helper") && !c.starts_with("setpriv"))
            && std::fs::read_to_string(format!("/proc/{pid}/status"))
                .is_ok_and(|s| s.contains(&format!("CapEff:\t{POD_MODE_CAPS}")))
    });
    let stand_in = stand_in.expect("a stand-in with exactly the pod-scoped mode's capabilities");
    // For the record: the pod-scoped mode reads no kernel BTF (this is the debug test binary,
    // not the sidecar, so no bound is asserted).
    let status = std::fs::read_to_string(format!("/proc/{stand_in}/status")).unwrap();
    let peak = status
        .lines()
        .find(|l| l.starts_with("VmHWM"))
        .unwrap_or_default();
    println!("pod-scoped stand-in {peak}");
    let marker = format!("CAPS-{}", std::process::id());
    curl(&[&format!("http://127.0.0.1:{port}/users/{marker}")]);
    helper.wait(&pod, "the request", |lines| {
        segments(lines).any(|s| !s.egress && s.contains(&marker))
    });
}

#[test]
fn auto_falls_back_without_a_reachable_cgroup_v2() {
    pod::require_root();
    let [port] = free_ports();
    let mut pod = Pod::new();
    // As on a node with cgroup v1 only: the app container has no cgroup2 at /sys/fs/cgroup.
    let app = pod.container_without_cgroup2("app");
    let obi = pod.container("obi");
    pod.start_app_in(&app, "server", port);
    let auto = Helper::start(&mut pod, &obi, "auto", None);
    let lines = auto.wait(&pod, "a fallback", |lines| {
        lines.iter().any(|l| matches!(l, Line::Fallback(_)))
    });
    assert!(
        lines
            .iter()
            .any(|l| matches!(l, Line::Fallback(r) if r.contains("no cgroup v2 at /proc/"))),
        "{lines:?}"
    );
    let forced = Helper::start(&mut pod, &obi, "pod", None);
    let lines = forced.wait(&pod, "an error", |lines| {
        lines.iter().any(|l| matches!(l, Line::Error(_)))
    });
    assert!(
        lines.iter().any(|l| matches!(l, Line::Error(e)
            if e.starts_with("OTEL_EBPF_CAPTURE_MODE=pod is impossible here: no cgroup v2 at"))),
        "{lines:?}"
    );
}

#[test]
fn a_megabyte_each_way_reassembles_without_gaps() {
    use obi_sidecar::capture::events::Payload;
    use obi_sidecar::connection::{
        reassembly::{Limits, Reassembler, Segment},
        stream::Chunk,
    };

    pod::require_root();
    let [port] = free_ports();
    let mut pod = Pod::new();
    let app = pod.container("app");
    let obi = pod.container("obi");
    pod.start_app_in(&app, "server", port);
    let helper = Helper::start(&mut pod, &obi, "pod", None);
    assert_eq!(helper.ready(&pod), vec![app.cgroup_id()]);

    let body = pod.path("body");
    let payload: Vec<u8> = (0..1u32 << 20).map(|i| (i % 251) as u8).collect();
    std::fs::write(&body, &payload).unwrap();
    let sizes = curl(&[
        "-w",
        "%{size_request} %{size_upload} %{size_header} %{size_download}",
        "--data-binary",
        &format!("@{}", body.display()),
        "-H",
        "Content-Type: application/octet-stream",
        // No 100-continue round: the streams are the request and the response alone.
        "-H",
        "Expect:",
        &format!("http://127.0.0.1:{port}/echo"),
    ]);
    let sizes: Vec<u64> = sizes
        .split(' ')
        .map(|n| n.trim().parse().unwrap())
        .collect();
    assert_eq!(sizes[3], 1 << 20, "the echo came back whole");
    let (request_len, response_len) = (sizes[0] + sizes[1], sizes[2] + sizes[3]);

    let lines = helper.wait(&pod, "the connection closed", |lines| {
        server_connection(lines, port).is_some_and(|(cookie, ..)| {
            lines
                .iter()
                .any(|l| matches!(l, Line::Closed { cookie: c, .. } if *c == cookie))
        })
    });
    let (cookie, send_start, recv_start) = server_connection(&lines, port).unwrap();
    let mut biggest = HashMap::new();
    for (egress, start, want) in [
        (false, recv_start, request_len),
        (true, send_start, response_len),
    ] {
        let mut r = Reassembler::starting_at(start, Limits::default());
        let mut total = 0u64;
        let mut head = Vec::new();
        let mut sink = |c: Chunk<'_>| {
            if total == 0 {
                head = c.visible.to_vec();
            }
            total += c.len();
        };
        let mut fin = None;
        for s in segments(&lines).filter(|s| s.cookie == cookie && s.egress == egress) {
            let largest = biggest.entry(egress).or_insert(0u32);
            *largest = (*largest).max(s.len);
            r.push(
                Segment {
                    seq: s.seq,
                    // HTTP/1: the helper's payloads are each segment's prefix.
                    captured: Payload::Prefix(s.prefix()),
                    len: s.len,
                    timestamp_ns: 0,
                    tid: None,
                },
                &mut sink,
            );
            if s.flags & 1 != 0 {
                fin = Some(s.seq.wrapping_add(s.len));
            }
        }
        r.finish(fin, &mut sink);
        assert_eq!(total, want, "egress {egress}");
        assert_eq!(r.stats().gaps, 0, "egress {egress}: {:?}", r.stats());
        let start: &[u8] = if egress {
            b"HTTP/1.1 200 OK\r\n"
        } else {
            b"POST /echo HTTP/1.1\r\n"
        };
        assert!(
            head.starts_with(start),
            "{:?}",
            String::from_utf8_lossy(&head)
        );
    }
    // Loopback hands TCP super-packets around whole: one record per skb, far above the MTU.
    println!("largest skb payloads (ingress, egress): {biggest:?}");
    for largest in biggest.values() {
        assert!(*largest > 16 * 1024, "{biggest:?}");
    }
}

#[test]
fn http2_frames_are_walked_across_skbs_cut_inside_headers_and_payloads() {
    use obi_sidecar::capture::events::{Payload, Pieces};
    use obi_sidecar::connection::{
        reassembly::{Limits, Reassembler, Segment},
        stream::Chunk,
    };

    pod::require_root();
    // The server's stream: (type, stream id, payload length), SETTINGS, then HEADERS and DATA
    // frames (payload bytes that tell frames apart).
    let layout: [(u8, u32, usize); 12] = [
        (4, 0, 0),
        (1, 1, 30),
        (0, 1, 3000),
        (1, 3, 40),
        (0, 3, 2000),
        (1, 5, 50),
        (0, 5, 5000),
        (1, 7, 20),
        (0, 7, 1500),
        (1, 9, 25),
        (0, 9, 2500),
        (1, 11, 30),
    ];
    let mut stream = Vec::new();
    let mut starts = Vec::new();
    for (i, &(kind, id, len)) in layout.iter().enumerate() {
        starts.push(stream.len());
        stream.extend_from_slice(&(len as u32).to_be_bytes()[1..]);
        // END_HEADERS on HEADERS: a header cut after its 4th byte then starts with 0x04, which
        // is no plausible frame length byte.
        stream.extend_from_slice(&[kind, if kind == 1 { 0x04 } else { 0 }]);
        stream.extend_from_slice(&id.to_be_bytes());
        stream.extend((0..len).map(|j| (i * 37 + j) as u8));
    }
    // Writes (each an skb) cut inside a HEADERS frame header, inside a HEADERS payload, inside
    // a DATA payload and inside a DATA frame header; each holds a frame header past the first
    // KiB, which only a walk carried over from the skb before finds.
    let cuts = [
        starts[3] + 4,
        starts[5] + 9 + 10,
        starts[6] + 9 + 2000,
        starts[8] + 3,
    ];
    let [port] = free_ports();
    let mut pod = Pod::new();
    let app = pod.container("app");
    let obi = pod.container("obi");
    let path = pod.path("stream");
    std::fs::write(&path, &stream).unwrap();
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/servers/h2_skb_writes.py"
    );
    let cut_list = cuts.map(|c| c.to_string()).join(",");
    pod.spawn_in(
        &app,
        "writer",
        &[
            "python3",
            script,
            &port.to_string(),
            &path.to_string_lossy(),
            &cut_list,
        ],
        &[],
    );
    // Before the hooks are attached: the probe's connection is not recorded.
    pod::wait_for_port(port, WAIT);
    let helper = Helper::start(&mut pod, &obi, "pod", None);
    assert_eq!(helper.ready(&pod), vec![app.cgroup_id()]);

    let mut client = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    client
        .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        .unwrap();
    let ping = [0, 0, 8, 6, 0, 0, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8];
    let mut bounds = vec![0];
    bounds.extend(cuts);
    bounds.push(stream.len());
    for write in bounds.windows(2) {
        client.write_all(&ping).unwrap();
        let mut got = vec![0; write[1] - write[0]];
        client.read_exact(&mut got).unwrap();
        assert_eq!(got, stream[write[0]..write[1]]);
    }
    client.write_all(b"x").unwrap();
    let mut rest = Vec::new();
    client.read_to_end(&mut rest).unwrap();

    let lines = helper.wait(&pod, "the connection closed", |lines| {
        server_connection(lines, port).is_some_and(|(cookie, ..)| {
            lines
                .iter()
                .any(|l| matches!(l, Line::Closed { cookie: c, .. } if *c == cookie))
        })
    });
    let (cookie, send_start, _) = server_connection(&lines, port).unwrap();
    let egress: Vec<&Seg> = segments(&lines)
        .filter(|s| s.cookie == cookie && s.egress && s.len > 0)
        .collect();
    assert!(egress.len() >= bounds.len() - 1, "{egress:?}");
    assert!(egress.iter().all(|s| s.pieced), "{egress:?}");
    // The stream as the reassembler delivers it, each byte known or not.
    let mut seen: Vec<Option<u8>> = Vec::new();
    let mut r = Reassembler::starting_at(send_start, Limits::default());
    let mut sink = |c: Chunk<'_>| {
        seen.extend(c.visible.iter().map(|&b| Some(b)));
        seen.extend((0..c.unseen).map(|_| None));
    };
    for s in &egress {
        let mut raw = Vec::new();
        for (offset, bytes) in &s.pieces {
            raw.extend_from_slice(&offset.to_ne_bytes());
            raw.extend_from_slice(&(bytes.len() as u32).to_ne_bytes());
            raw.extend_from_slice(bytes);
        }
        let pieces = Pieces::check(&raw, s.pieces.len(), s.len).unwrap();
        let segment = Segment {
            seq: s.seq,
            captured: Payload::Pieces(pieces),
            len: s.len,
            timestamp_ns: 0,
            tid: None,
        };
        r.push(segment, &mut sink);
    }
    assert_eq!(seen.len(), stream.len());
    for (i, &(kind, _, len)) in layout.iter().enumerate() {
        let frame = starts[i]..starts[i] + 9 + len;
        let (copied, skipped) = if kind == 0 {
            (frame.start..frame.start + 9, frame.start + 9..frame.end)
        } else {
            (frame.clone(), frame.end..frame.end)
        };
        for at in copied {
            assert_eq!(seen[at], Some(stream[at]), "frame {i}, byte {at}");
        }
        for at in skipped {
            assert_eq!(seen[at], None, "frame {i}: DATA payload byte {at} copied");
        }
    }
}
