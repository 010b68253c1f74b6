//! The run loop's pod-scoped side: the cgroup programs' records through [`Segments`] into the
//! connection layer, the attachments kept in line with the instrumented processes, and what
//! attribution asks of the rest of the sidecar.

use std::{collections::HashMap, net::SocketAddr};

use aya::maps::{MapData, RingBuf};

use super::Instrumented;
use crate::{
    Result,
    capture::{
        KernelStats,
        cgroup::{Changes, PodHooks},
        events::PodEvent,
    },
    connection::{Connections, reassembly, segments::Segments, segments::Sockets},
    sock_diag::{SockDiag, States},
    transaction::Transaction,
};

/// How often the kernel's socket table may be dumped to find the addresses of sockets whose
/// set-up was not seen (open before their container was attached).
const DUMP_INTERVAL_NS: u64 = 250_000_000;

/// The pod-scoped capture in use.
pub struct PodCapture {
    hooks: PodHooks,
    segments: Segments,
    addresses: Addresses,
}

impl PodCapture {
    pub fn new(hooks: PodHooks) -> Self {
        Self {
            hooks,
            segments: Segments::new(reassembly::Limits::default()),
            addresses: Addresses::new(),
        }
    }

    pub fn take_events(&mut self) -> Option<RingBuf<MapData>> {
        self.hooks.take_events()
    }

    pub fn stats(&self) -> Result<KernelStats> {
        self.hooks.stats()
    }

    /// How many containers are attached now.
    pub fn containers(&self) -> usize {
        self.hooks.containers().count()
    }

    /// Hooks the TLS libraries of a process these hooks capture (see [`PodHooks::hook_tls`]).
    pub fn hook_tls(&mut self, pid: u32) -> Result<()> {
        self.hooks.hook_tls(pid)
    }

    /// A process exited.
    pub fn forget(&mut self, pid: u32) {
        self.hooks.forget(pid);
    }

    /// Whether a process's container could not be attached: the tracepoints capture it instead.
    pub fn refused(&self, pid: u32) -> bool {
        self.hooks.refused(pid)
    }

    /// Attaches the containers of the instrumented processes and detaches those left without
    /// one, logging each change.
    pub fn sync(&mut self, processes: &HashMap<u32, Instrumented>) -> Changes {
        let changes = self.hooks.sync(processes.keys().copied());
        for container in &changes.attached {
            tracing::info!(
                pid = container.pid,
                cgroup = %container.path.display(),
                "attached the pod-scoped hooks to a container"
            );
        }
        for container in &changes.detached {
            tracing::info!(
                cgroup = %container.path.display(),
                "detached a container whose processes are gone"
            );
        }
        for failure in &changes.failed {
            tracing::warn!(
                pid = failure.pid,
                error = %failure.error,
                "cannot attach the pod-scoped hooks to this process's container; its processes \
                 are captured with the socket tracepoints"
            );
        }
        changes
    }

    /// Feeds one ring buffer record.
    pub fn on_record(
        &mut self,
        record: &[u8],
        processes: &HashMap<u32, Instrumented>,
        connections: &mut Connections,
        out: &mut Vec<Transaction>,
    ) {
        let event = match PodEvent::decode(record) {
            Ok(event) => event,
            Err(error) => {
                tracing::warn!(%error, "skipping event");
                return;
            }
        };
        let mut sockets = PodSockets {
            processes,
            addresses: &mut self.addresses,
        };
        self.segments
            .on_event(&event, &mut sockets, connections, out);
    }

    /// Time passed: holes waited for too long are given up.
    pub fn expire(
        &mut self,
        now_ns: u64,
        connections: &mut Connections,
        out: &mut Vec<Transaction>,
    ) {
        self.segments.expire(now_ns, connections, out);
    }
}

/// The addresses of the pod's TCP sockets by cookie, from `sock_diag` dumps made on demand.
struct Addresses {
    diag: Option<SockDiag>,
    by_cookie: HashMap<u64, (SocketAddr, SocketAddr)>,
    dumped_ns: Option<u64>,
}

impl Addresses {
    fn new() -> Self {
        let diag = SockDiag::open()
            .inspect_err(|e| {
                tracing::info!("no sock_diag ({e}): sockets open before their container was attached have no addresses")
            })
            .ok();
        Self {
            diag,
            by_cookie: HashMap::new(),
            dumped_ns: None,
        }
    }

    fn lookup(&mut self, cookie: u64) -> Option<(SocketAddr, SocketAddr)> {
        if let Some(found) = self.by_cookie.remove(&cookie) {
            return Some(found);
        }
        let now = crate::telemetry::spans::WallClock::monotonic_now_ns();
        if self
            .dumped_ns
            .is_some_and(|at| now.saturating_sub(at) < DUMP_INTERVAL_NS)
        {
            return None;
        }
        self.dumped_ns = Some(now);
        let sockets = match self.diag.as_mut()?.tcp(States::ListeningAndEstablished) {
            Ok(sockets) => sockets,
            Err(error) => {
                tracing::warn!(%error, "sock_diag dump failed");
                return None;
            }
        };
        // Each socket is looked up once, when first seen: the table holds only this dump's.
        self.by_cookie = sockets
            .into_iter()
            .filter(|s| !s.listening)
            .map(|s| (s.cookie, (s.local, s.peer)))
            .collect();
        let found = self.by_cookie.remove(&cookie);
        if found.is_none() {
            tracing::debug!(
                cookie,
                connections = self.by_cookie.len(),
                "a socket's addresses are not in the sock_diag dump; looked up again later"
            );
        }
        found
    }
}

/// Attribution's view of the instrumented processes.
struct PodSockets<'a> {
    processes: &'a HashMap<u32, Instrumented>,
    addresses: &'a mut Addresses,
}

impl Sockets for PodSockets<'_> {
    fn listener(&self, local: SocketAddr) -> Option<u32> {
        // Several processes share a listening socket (a pre-forking server's workers): the
        // lowest pid (its parent, usually) until a write names the one that serves.
        self.processes
            .iter()
            .filter(|(_, process)| {
                process.listening.iter().any(|listening| {
                    listening.port() == local.port()
                        && (listening.ip().is_unspecified() || listening.ip() == local.ip())
                })
            })
            .map(|(pid, _)| *pid)
            .min()
    }

    fn selected(&self, pid: u32) -> bool {
        self.processes.contains_key(&pid)
    }

    fn addresses(&mut self, cookie: u64) -> Option<(SocketAddr, SocketAddr)> {
        self.addresses.lookup(cookie)
    }
}
