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
    /// Takes over hooks attached to the first containers (see [`PodHooks::probe`]).
    pub fn new(hooks: PodHooks) -> Self {
        let mut addresses = Addresses::new();
        addresses.dump();
        Self {
            hooks,
            segments: Segments::new(reassembly::Limits::default()),
            addresses,
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
        if !changes.attached.is_empty() {
            self.addresses.dump();
        }
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

/// The addresses of the pod's TCP sockets by cookie, for sockets whose set-up `sock_ops` did not
/// see (open before their container was attached), from `sock_diag` dumps.
///
/// A dump is made right after each attach, not when the socket's first record is read: the
/// records of a connection that closes soon after the attach may be read after it is gone from
/// the kernel's table (reading lags behind while new processes' TLS libraries are hooked). A
/// record of a socket in no dump so far asks for another, at most every [`DUMP_INTERVAL_NS`].
struct Addresses {
    diag: Option<SockDiag>,
    /// Each socket with the time of the last dump that listed it; removed when looked up, as a
    /// connection asks once, and when no dump listed it for [`DUMPED_KEPT_NS`].
    by_cookie: HashMap<u64, Dumped>,
    dumped_ns: Option<u64>,
}

#[derive(Clone, Copy, Debug)]
struct Dumped {
    local: SocketAddr,
    peer: SocketAddr,
    at_ns: u64,
}

/// How long a dumped socket nobody asked for is kept: long enough for the records of an attach
/// to be read, short enough that sockets closed unseen do not pile up.
const DUMPED_KEPT_NS: u64 = 30_000_000_000;

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

    /// Notes the sockets the kernel lists now, keeping those of earlier dumps for a while.
    fn dump(&mut self) {
        let Some(diag) = self.diag.as_mut() else {
            return;
        };
        let now = crate::telemetry::spans::WallClock::monotonic_now_ns();
        self.dumped_ns = Some(now);
        let sockets = match diag.tcp(States::ListeningAndEstablished) {
            Ok(sockets) => sockets,
            Err(error) => {
                tracing::warn!(%error, "sock_diag dump failed");
                return;
            }
        };
        self.by_cookie
            .retain(|_, dumped| now.saturating_sub(dumped.at_ns) < DUMPED_KEPT_NS);
        for socket in sockets.into_iter().filter(|s| !s.listening) {
            self.by_cookie.insert(
                socket.cookie,
                Dumped {
                    local: socket.local,
                    peer: socket.peer,
                    at_ns: now,
                },
            );
        }
    }

    fn lookup(&mut self, cookie: u64) -> Option<(SocketAddr, SocketAddr)> {
        if !self.by_cookie.contains_key(&cookie) {
            let now = crate::telemetry::spans::WallClock::monotonic_now_ns();
            if self
                .dumped_ns
                .is_some_and(|at| now.saturating_sub(at) < DUMP_INTERVAL_NS)
            {
                return None;
            }
            self.dump();
        }
        let found = self.by_cookie.remove(&cookie);
        if found.is_none() {
            tracing::debug!(
                cookie,
                connections = self.by_cookie.len(),
                "a socket's addresses are not in the sock_diag dump; looked up again later"
            );
        }
        found.map(|dumped| (dumped.local, dumped.peer))
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sock_diag::cookie_of;
    use std::net::{TcpListener, TcpStream};
    use std::os::fd::AsRawFd;

    #[test]
    fn a_connection_dumped_at_the_attach_keeps_its_addresses_after_it_is_gone() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        let (cookie, local, peer) = (
            cookie_of(server.as_raw_fd()),
            server.local_addr().unwrap(),
            client.local_addr().unwrap(),
        );
        let mut addresses = Addresses::new();
        addresses.dump();
        // Closed before its first record is read: no later dump can list it.
        drop((client, server));
        assert_eq!(addresses.lookup(cookie), Some((local, peer)));
        // Asked once per connection: the entry is not kept for nobody.
        assert!(!addresses.by_cookie.contains_key(&cookie));
    }

    #[test]
    fn a_connection_opened_after_the_last_dump_asks_for_another() {
        let mut addresses = Addresses::new();
        addresses.dump();
        addresses.dumped_ns = Some(0);
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        assert_eq!(
            addresses.lookup(cookie_of(server.as_raw_fd())),
            Some((server.local_addr().unwrap(), client.local_addr().unwrap()))
        );
    }
}
