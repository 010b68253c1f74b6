//! Which processes of the pod to instrument, found by scanning `/proc`.
//!
//! The sidecar shares the pod's PID namespace, so `/proc` lists exactly the pod's processes. A
//! scan reads each process's executable and listening TCP sockets; [`Selection`] decides, as a
//! pure function of that snapshot, whether it is instrumented (OBI's `OTEL_EBPF_OPEN_PORT` and
//! `OTEL_EBPF_AUTO_TARGET_EXE`) and which container it belongs to. A selected process's
//! connections are read too, to hand them over to the capture.
//!
//! Sockets come from `sock_diag` for processes in the sidecar's network namespace (the pod's),
//! and from the process's own `/proc/<pid>/net/tcp{,6}` otherwise or when netlink is refused.

use std::{
    collections::{HashMap, HashSet},
    net::SocketAddr,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
};

use globset::GlobMatcher;
use procfs::{
    net::{TcpNetEntry, TcpState},
    process::{FDTarget, Process},
};

use crate::{
    capture::events::Role,
    config::{Config, PortSet, container_for_port},
    sock_diag::{SockDiag, States, TcpSocket},
};

/// One TCP socket a process holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SocketInfo {
    pub fd: i32,
    pub local: SocketAddr,
    pub peer: SocketAddr,
    pub listening: bool,
}

/// What a scan saw of one process.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProcessSnapshot {
    pub pid: u32,
    pub exe: PathBuf,
    pub sockets: Vec<SocketInfo>,
}

impl ProcessSnapshot {
    /// Ports the process listens on.
    pub fn listening_ports(&self) -> impl Iterator<Item = u16> + '_ {
        self.sockets
            .iter()
            .filter(|s| s.listening)
            .map(|s| s.local.port())
    }

    /// Established connections with the role the process plays in each: it is the server of a
    /// connection whose local port it listens on.
    pub fn connections(&self) -> impl Iterator<Item = (&SocketInfo, Role)> + '_ {
        let listening: HashSet<u16> = self.listening_ports().collect();
        self.sockets.iter().filter(|s| !s.listening).map(move |s| {
            let role = if listening.contains(&s.local.port()) {
                Role::Server
            } else {
                Role::Client
            };
            (s, role)
        })
    }
}

/// The selection criteria, from the configuration.
#[derive(Debug, Default)]
pub struct Selection {
    open_ports: Option<PortSet>,
    exe: Option<GlobMatcher>,
    container_ports: Vec<(String, PortSet)>,
}

impl Selection {
    pub fn new(
        open_ports: Option<PortSet>,
        exe: Option<GlobMatcher>,
        container_ports: Vec<(String, PortSet)>,
    ) -> Self {
        Self {
            open_ports,
            exe,
            container_ports,
        }
    }

    pub fn from_config(config: &Config) -> Self {
        Self::new(
            config.open_ports.clone(),
            config.auto_target_exe.clone(),
            config.container_ports.clone(),
        )
    }

    /// Whether to instrument a process: it must satisfy every criterion that is set, and with
    /// none set every process is instrumented.
    pub fn matches(&self, process: &ProcessSnapshot) -> bool {
        let port_ok = self
            .open_ports
            .as_ref()
            .is_none_or(|ports| process.listening_ports().any(|p| ports.contains(p)));
        let exe_ok = self
            .exe
            .as_ref()
            .is_none_or(|glob| glob.is_match(&process.exe));
        port_ok && exe_ok
    }

    /// The container a process runs in, from the ports it listens on.
    pub fn container(&self, process: &ProcessSnapshot) -> Option<String> {
        process
            .listening_ports()
            .find_map(|port| container_for_port(&self.container_ports, port))
            .map(str::to_owned)
    }
}

/// A process that became instrumented in this scan.
#[derive(Clone, Debug)]
pub struct Selected {
    pub snapshot: ProcessSnapshot,
    pub container: Option<String>,
}

/// What changed since the previous scan.
#[derive(Debug, Default)]
pub struct Changes {
    pub selected: Vec<Selected>,
    pub exited: Vec<u32>,
}

#[derive(Debug)]
struct Known {
    start_time: u64,
    selected: bool,
    /// For a process that was not selected, what its verdict was based on.
    settled: Option<Settled>,
}

/// Reading a process's TCP tables costs syscalls (and, from `/proc`, a walk of the kernel's whole
/// connection hash table: milliseconds on a large machine), for every unselected process with
/// sockets, four times a second. An unselected process that gained no socket and kept its
/// executable cannot have started listening on a new socket, so its verdict stands without
/// reading them. The one way around that, `listen` on a socket that already existed at the last
/// read, is caught by re-reading every [`SETTLED_SCANS`] scans.
#[derive(Debug)]
struct Settled {
    exe: PathBuf,
    /// Socket inodes, sorted.
    sockets: Vec<u64>,
    /// The scan from which the tables are read again regardless.
    until_scan: u64,
}

/// Scans an unchanged unselected process's verdict is trusted for (2 s at 250 ms).
const SETTLED_SCANS: u64 = 8;

impl Settled {
    fn still_holds(&self, exe: &Path, sockets: &[u64], scan: u64) -> bool {
        scan < self.until_scan
            && self.exe == *exe
            && sockets
                .iter()
                .all(|s| self.sockets.binary_search(s).is_ok())
    }
}

/// Tracks the pod's processes across scans.
#[derive(Debug)]
pub struct Discovery {
    selection: Selection,
    self_pid: u32,
    known: HashMap<u32, Known>,
    /// Scans done so far.
    scans: u64,
    sock_diag: Option<SockDiag>,
    /// Inode of the sidecar's network namespace: processes in it are served by `sock_diag`.
    netns: Option<u64>,
}

impl Discovery {
    pub fn new(selection: Selection) -> Self {
        let sock_diag = SockDiag::open()
            .inspect_err(|e| tracing::info!("no sock_diag ({e}); reading /proc/<pid>/net/tcp"))
            .ok();
        Self {
            selection,
            self_pid: std::process::id(),
            known: HashMap::new(),
            scans: 0,
            sock_diag,
            netns: netns_inode("self"),
        }
    }

    /// Scans `/proc`. Processes that vanish mid-scan, or whose entries cannot be read (kernel
    /// threads, missing ptrace access), are passed over: the next scan tries again.
    pub fn scan(&mut self) -> Changes {
        let mut changes = Changes::default();
        let mut alive = HashSet::new();
        self.scans += 1;
        let Ok(processes) = procfs::process::all_processes() else {
            tracing::warn!("cannot list /proc");
            return changes;
        };
        let mut tables = Tables {
            diag: self.sock_diag.as_mut(),
            netns: self.netns,
            listening: None,
            all: None,
        };
        for process in processes.flatten() {
            let Ok(pid) = u32::try_from(process.pid) else {
                continue;
            };
            if pid == self.self_pid {
                continue;
            }
            let Ok(stat) = process.stat() else { continue };
            alive.insert(pid);
            if let Some(known) = self.known.get(&pid)
                && known.start_time != stat.starttime
            {
                // The pid was reused by a new process.
                if known.selected {
                    changes.exited.push(pid);
                }
                self.known.remove(&pid);
            }
            let known = self.known.get(&pid);
            if known.is_some_and(|known| known.selected) {
                continue;
            }
            let Some((exe, inodes)) = exe_and_sockets(&process) else {
                continue;
            };
            let mut fingerprint: Vec<u64> = inodes.keys().copied().collect();
            fingerprint.sort_unstable();
            let settled = known.and_then(|known| known.settled.as_ref());
            if settled.is_some_and(|s| s.still_holds(&exe, &fingerprint, self.scans)) {
                continue;
            }
            // One look at its network namespace serves both reads of its tables below.
            let same_netns = !inodes.is_empty() && tables.shares_netns(&process);
            let mut snapshot = ProcessSnapshot {
                pid,
                exe,
                sockets: tables.sockets(&process, &inodes, States::Listening, same_netns),
            };
            let selected = self.selection.matches(&snapshot);
            let settled = (!selected).then(|| Settled {
                exe: snapshot.exe.clone(),
                sockets: fingerprint,
                until_scan: self.scans + SETTLED_SCANS,
            });
            self.known.insert(
                pid,
                Known {
                    start_time: stat.starttime,
                    selected,
                    settled,
                },
            );
            if selected {
                snapshot.sockets = tables.sockets(
                    &process,
                    &inodes,
                    States::ListeningAndEstablished,
                    same_netns,
                );
                let container = self.selection.container(&snapshot);
                changes.selected.push(Selected {
                    snapshot,
                    container,
                });
            }
        }
        self.known.retain(|pid, known| {
            let keep = alive.contains(pid);
            if !keep && known.selected {
                changes.exited.push(*pid);
            }
            keep
        });
        changes
    }
}

/// One process's executable and socket inodes (to their fds); None if it is gone or not
/// readable.
fn exe_and_sockets(process: &Process) -> Option<(PathBuf, HashMap<u64, i32>)> {
    let exe = process.exe().ok()?;
    let inodes = process
        .fd()
        .ok()?
        .flatten()
        .filter_map(|fd| match fd.target {
            FDTarget::Socket(inode) => Some((inode, fd.fd)),
            _ => None,
        })
        .collect();
    Some((exe, inodes))
}

fn netns_inode(pid: &str) -> Option<u64> {
    std::fs::metadata(format!("/proc/{pid}/ns/net"))
        .ok()
        .map(|meta| meta.ino())
}

/// The TCP tables one scan reads: each `sock_diag` dump at most once, and only if needed.
struct Tables<'a> {
    diag: Option<&'a mut SockDiag>,
    netns: Option<u64>,
    listening: Option<Vec<TcpSocket>>,
    all: Option<Vec<TcpSocket>>,
}

impl Tables<'_> {
    /// Whether the process is in the sidecar's network namespace, whose `sock_diag` dumps hold
    /// its sockets.
    fn shares_netns(&self, process: &Process) -> bool {
        self.netns.is_some() && netns_inode(&process.pid.to_string()) == self.netns
    }

    /// The TCP sockets in `states` among a process's socket inodes; `same_netns` from
    /// [`Tables::shares_netns`].
    fn sockets(
        &mut self,
        process: &Process,
        inodes: &HashMap<u64, i32>,
        states: States,
        same_netns: bool,
    ) -> Vec<SocketInfo> {
        if inodes.is_empty() {
            return Vec::new();
        }
        if same_netns && let Some(table) = self.dump(states) {
            return join(inodes, table);
        }
        // Another network namespace (or no netlink): the tables as the process sees them.
        let table: Vec<TcpSocket> = process
            .tcp()
            .unwrap_or_default()
            .into_iter()
            .chain(process.tcp6().unwrap_or_default())
            .filter_map(|entry| proc_entry(entry, states))
            .collect();
        join(inodes, &table)
    }

    fn dump(&mut self, states: States) -> Option<&[TcpSocket]> {
        let slot = match states {
            States::Listening => &mut self.listening,
            States::ListeningAndEstablished => &mut self.all,
        };
        if slot.is_none() {
            match self.diag.as_deref_mut()?.tcp(states) {
                Ok(table) => *slot = Some(table),
                Err(error) => {
                    tracing::warn!(%error, "sock_diag dump failed; reading /proc for this scan");
                    self.diag = None;
                    return None;
                }
            }
        }
        slot.as_deref()
    }
}

/// A `/proc/<pid>/net/tcp` row as a socket, if it is listening or established.
fn proc_entry(entry: TcpNetEntry, states: States) -> Option<TcpSocket> {
    let listening = entry.state == TcpState::Listen;
    let wanted = listening
        || (states == States::ListeningAndEstablished && entry.state == TcpState::Established);
    wanted.then_some(TcpSocket {
        inode: entry.inode,
        // /proc does not show cookies; only the pod-scoped mode needs them, from sock_diag.
        cookie: 0,
        local: entry.local_address,
        peer: entry.remote_address,
        listening,
    })
}

/// Joins a process's socket inodes with a TCP table of its network namespace.
fn join(inodes: &HashMap<u64, i32>, table: &[TcpSocket]) -> Vec<SocketInfo> {
    let mut sockets: Vec<SocketInfo> = table
        .iter()
        .filter_map(|entry| {
            Some(SocketInfo {
                fd: *inodes.get(&entry.inode)?,
                local: entry.local,
                peer: entry.peer,
                listening: entry.listening,
            })
        })
        .collect();
    sockets.sort_by_key(|s| s.fd);
    sockets
}

#[cfg(test)]
mod tests {
    use super::*;

    fn socket(fd: i32, local: &str, peer: &str, listening: bool) -> SocketInfo {
        SocketInfo {
            fd,
            local: local.parse().unwrap(),
            peer: peer.parse().unwrap(),
            listening,
        }
    }

    fn process(exe: &str, sockets: Vec<SocketInfo>) -> ProcessSnapshot {
        ProcessSnapshot {
            pid: 10,
            exe: exe.into(),
            sockets,
        }
    }

    fn glob(pattern: &str) -> GlobMatcher {
        globset::Glob::new(pattern).unwrap().compile_matcher()
    }

    #[test]
    fn selection_table() {
        let server = process(
            "/usr/sbin/nginx",
            vec![
                socket(6, "0.0.0.0:8080", "0.0.0.0:0", true),
                socket(9, "10.0.0.2:8080", "10.0.0.9:41000", false),
            ],
        );
        let client = process(
            "/usr/bin/curl",
            vec![socket(3, "10.0.0.2:41000", "10.0.0.9:80", false)],
        );
        let ports = |s: &str| Some(PortSet::parse(s).unwrap());
        let cases = [
            (Selection::default(), &server, true),
            (Selection::default(), &client, true),
            (Selection::new(ports("8080"), None, vec![]), &server, true),
            (
                Selection::new(ports("80,8000-8999"), None, vec![]),
                &server,
                true,
            ),
            (Selection::new(ports("80"), None, vec![]), &server, false),
            // A connection to a selected port does not make the client a listener.
            (Selection::new(ports("80"), None, vec![]), &client, false),
            (
                Selection::new(None, Some(glob("*/nginx")), vec![]),
                &server,
                true,
            ),
            (
                Selection::new(None, Some(glob("*/nginx")), vec![]),
                &client,
                false,
            ),
            (
                Selection::new(ports("8080"), Some(glob("*/curl")), vec![]),
                &server,
                false,
            ),
        ];
        for (i, (selection, process, expected)) in cases.iter().enumerate() {
            assert_eq!(selection.matches(process), *expected, "case {i}");
        }
    }

    #[test]
    fn container_from_listening_ports() {
        let selection = Selection::new(
            None,
            None,
            vec![
                ("api".into(), PortSet::parse("8080").unwrap()),
                ("metrics".into(), PortSet::parse("9090-9091").unwrap()),
            ],
        );
        let api = process("/app", vec![socket(3, "[::]:8080", "[::]:0", true)]);
        let metrics = process("/exp", vec![socket(3, "0.0.0.0:9091", "0.0.0.0:0", true)]);
        let client = process("/c", vec![socket(3, "1.2.3.4:5000", "1.2.3.5:8080", false)]);
        assert_eq!(selection.container(&api).as_deref(), Some("api"));
        assert_eq!(selection.container(&metrics).as_deref(), Some("metrics"));
        assert_eq!(selection.container(&client), None);
    }

    #[test]
    fn connection_roles_follow_listening_ports() {
        let p = process(
            "/app",
            vec![
                socket(3, "0.0.0.0:8080", "0.0.0.0:0", true),
                socket(4, "127.0.0.1:8080", "127.0.0.1:50000", false),
                socket(5, "127.0.0.1:50001", "127.0.0.1:5432", false),
            ],
        );
        let roles: Vec<(i32, Role)> = p.connections().map(|(s, r)| (s.fd, r)).collect();
        assert_eq!(roles, vec![(4, Role::Server), (5, Role::Client)]);
    }

    /// A python child that does one step per line on stdin and acknowledges it: `bind` (a new
    /// socket bound to the port, not listening), `listen` (that socket starts listening),
    /// `accept` (one connection is accepted and kept open).
    struct Stepper {
        child: std::process::Child,
        stdout: std::io::BufReader<std::process::ChildStdout>,
        port: u16,
    }

    impl Stepper {
        fn start() -> Self {
            Self::start_with(&[], "127.0.0.1")
        }

        /// Runs the child under `wrapper` (a command prefix), binding to `host` when told.
        fn start_with(wrapper: &[&str], host: &str) -> Self {
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            let script = "import socket,sys\n\
                print('ready', flush=True)\n\
                for line in sys.stdin:\n\
                \x20   if line.strip() == 'bind':\n\
                \x20       s = socket.socket()\n\
                \x20       s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n\
                \x20       s.bind((sys.argv[2], int(sys.argv[1])))\n\
                \x20   if line.strip() == 'listen': s.listen()\n\
                \x20   if line.strip() == 'accept': c, _ = s.accept()\n\
                \x20   print('done', flush=True)\n";
            let mut command = match wrapper.split_first() {
                Some((program, args)) => {
                    let mut command = std::process::Command::new(program);
                    command.args(args).arg("python3");
                    command
                }
                None => std::process::Command::new("python3"),
            };
            let mut child = command
                .args(["-c", script, &port.to_string(), host])
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .spawn()
                .unwrap();
            let stdout = std::io::BufReader::new(child.stdout.take().unwrap());
            let mut stepper = Self {
                child,
                stdout,
                port,
            };
            assert_eq!(stepper.ack(), "ready");
            stepper
        }

        fn ack(&mut self) -> String {
            let mut line = String::new();
            std::io::BufRead::read_line(&mut self.stdout, &mut line).unwrap();
            line.trim().to_owned()
        }

        fn step(&mut self, command: &str) {
            let stdin = self.child.stdin.as_mut().unwrap();
            std::io::Write::write_all(stdin, format!("{command}\n").as_bytes()).unwrap();
            assert_eq!(self.ack(), "done");
        }

        fn selected_by(&self, changes: &Changes) -> bool {
            self.selection(changes).is_some()
        }

        fn selection<'a>(&self, changes: &'a Changes) -> Option<&'a Selected> {
            changes
                .selected
                .iter()
                .find(|s| s.snapshot.pid == self.child.id())
        }
    }

    impl Drop for Stepper {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    fn port_selection(port: u16) -> Discovery {
        Discovery::new(Selection::new(
            Some(PortSet::parse(&port.to_string()).unwrap()),
            None,
            vec![],
        ))
    }

    #[test]
    fn an_unselected_process_that_opens_a_listener_is_selected_by_the_next_scan() {
        let mut stepper = Stepper::start();
        let mut discovery = port_selection(stepper.port);
        assert!(!stepper.selected_by(&discovery.scan()));
        assert!(!stepper.selected_by(&discovery.scan()));
        // A new socket is a new inode: the process is looked at again right away.
        stepper.step("bind");
        stepper.step("listen");
        assert!(stepper.selected_by(&discovery.scan()));
    }

    #[test]
    fn listen_on_a_socket_that_existed_at_the_last_read_is_seen_within_the_settled_scans() {
        let mut stepper = Stepper::start();
        let mut discovery = port_selection(stepper.port);
        stepper.step("bind");
        assert!(!stepper.selected_by(&discovery.scan()));
        stepper.step("listen");
        let scans = (1..=SETTLED_SCANS)
            .find(|_| stepper.selected_by(&discovery.scan()))
            .expect("selected within the settled scans");
        // The tables were not re-read for an unchanged process until the verdict expired.
        assert_eq!(scans, SETTLED_SCANS);
    }

    #[test]
    fn a_selected_process_s_connections_are_handed_over_with_their_role() {
        let mut stepper = Stepper::start();
        stepper.step("bind");
        stepper.step("listen");
        let client = std::net::TcpStream::connect(("127.0.0.1", stepper.port)).unwrap();
        stepper.step("accept");
        let changes = port_selection(stepper.port).scan();
        let selected = stepper.selection(&changes).expect("selected");
        let connections: Vec<_> = selected.snapshot.connections().collect();
        assert_eq!(connections.len(), 1, "{connections:?}");
        let (socket, role) = connections[0];
        assert_eq!(role, Role::Server);
        assert_eq!(socket.peer, client.local_addr().unwrap());
        assert_eq!(socket.local.port(), stepper.port);
    }

    #[test]
    fn a_process_in_another_network_namespace_is_read_from_its_own_tables() {
        // Its listener is invisible to the sidecar's sock_diag; /proc/<pid>/net/tcp shows it.
        let mut stepper = Stepper::start_with(&["unshare", "--net"], "0.0.0.0");
        let mut discovery = port_selection(stepper.port);
        stepper.step("bind");
        stepper.step("listen");
        let changes = discovery.scan();
        let selected = stepper.selection(&changes).expect("selected");
        assert_eq!(
            selected.snapshot.listening_ports().collect::<Vec<_>>(),
            vec![stepper.port]
        );
    }

    #[test]
    fn scan_sees_a_real_listener_of_a_child_process() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        let mut child = std::process::Command::new("python3")
            .args([
                "-c",
                "import socket,sys,time\ns=socket.socket()\ns.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\ns.bind(('127.0.0.1', int(sys.argv[1])))\ns.listen()\nprint('ready', flush=True)\ntime.sleep(30)",
                &port.to_string(),
            ])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(child.stdout.take().unwrap()),
            &mut line,
        )
        .unwrap();
        assert_eq!(line.trim(), "ready");
        let mut discovery = Discovery::new(Selection::new(
            Some(PortSet::parse(&port.to_string()).unwrap()),
            None,
            vec![],
        ));
        let changes = discovery.scan();
        let _ = child.kill();
        let _ = child.wait();
        let found: Vec<_> = changes
            .selected
            .iter()
            .filter(|s| s.snapshot.pid == child.id())
            .collect();
        assert_eq!(found.len(), 1, "child listening on {port} not selected");
        assert!(found[0].snapshot.exe.to_string_lossy().contains("python"));
        assert_eq!(
            found[0].snapshot.listening_ports().collect::<Vec<_>>(),
            vec![port]
        );
        // Only the child listens on that port.
        assert_eq!(changes.selected.len(), 1);
        // Its exit is reported by the next scan.
        let changes = discovery.scan();
        assert_eq!(changes.exited, vec![child.id()]);
    }
}
