//! The sidecar's event loop: ring buffer → connections → telemetry, with periodic discovery.
//!
//! The capture mode is chosen once at start-up ([`choose_mode`]): the pod-scoped hooks
//! ([`pod`]) when the containers' cgroups and the privileges allow, else the tracepoints. In the
//! pod-scoped mode the tracepoints are still loaded, on demand, for the processes of a container
//! that could not be attached, so that a failed attach falls back rather than capturing nothing.

use std::{collections::HashMap, time::Duration};

use aya::maps::{MapData, RingBuf};
use tokio::{
    io::{Interest, unix::AsyncFd},
    signal::unix::{SignalKind, signal},
};

use crate::{
    Error, Result,
    capture::{
        HookChoice, PidNamespace, ProbeConfig, Probes,
        cgroup::{Capture, PodHooks, PodHooksConfig, choose_mode},
        events::{Event, Role},
        tls::{self, UprobeKind},
    },
    config::Config,
    connection::{ConnKey, Connections, Limits},
    discovery::{Discovery, Selected, Selection},
    telemetry::{ProcessInfo, Telemetry, spans::WallClock},
    transaction::Transaction,
};

mod pod;

use pod::PodCapture;

/// How often `/proc` is scanned: processes that start or exit are noticed within this, and
/// their containers attached.
const SCAN_INTERVAL: Duration = Duration::from_millis(250);

type Ring = AsyncFd<RingBuf<MapData>>;

/// Runs until SIGTERM or SIGINT.
pub async fn run(config: Config) -> Result<()> {
    let namespace = PidNamespace::current()?;
    let mut discovery = Discovery::new(Selection::from_config(&config));
    // The processes instrumented from the start: their containers are what the probe attaches.
    let first = discovery.scan();
    let tls = tls_uprobes(&config);
    let pod_config = PodHooksConfig::new(namespace, config.ring_buffer_bytes, tls);
    let choice = choose_mode(config.capture_mode, || {
        PodHooks::probe(&pod_config, first.selected.iter().map(|s| s.snapshot.pid))
    })?;
    if let Some(reason) = &choice.fallback {
        tracing::warn!("{reason}");
    }
    let (pod, probes) = match choice.capture {
        Capture::Pod(hooks) => (Some(PodCapture::new(hooks)), None),
        Capture::Syscalls(hooks) => {
            let probes = Probes::load(ProbeConfig {
                pid_namespace: namespace,
                ring_buffer_bytes: config.ring_buffer_bytes,
                hooks,
                tls,
            })?;
            (None, Some(probes))
        }
    };
    let telemetry = Telemetry::start(&config).await?;
    let mut sidecar = Sidecar {
        namespace,
        ring_buffer_bytes: config.ring_buffer_bytes,
        tls,
        probes,
        pod,
        discovery,
        connections: Connections::new(Limits::default()),
        processes: HashMap::new(),
        completed: Vec::new(),
        telemetry,
    };
    let mut rings = Rings {
        pod: sidecar
            .pod
            .as_mut()
            .and_then(PodCapture::take_events)
            .map(register_readable)
            .transpose()?,
        syscalls: sidecar
            .probes
            .as_mut()
            .and_then(Probes::take_events)
            .map(register_readable)
            .transpose()?,
    };
    let new = sidecar.apply(first);
    sidecar.after_scan(&mut rings, &new)?;
    match (&sidecar.pod, &sidecar.probes) {
        (Some(pod), _) => tracing::info!(
            "capturing with the pod-scoped hooks (cgroup_skb ingress/egress, sock_ops) on {} \
             containers; instrumented processes: {}",
            pod.containers(),
            sidecar.processes.len()
        ),
        (None, Some(probes)) => tracing::info!(
            "capturing with the {}; instrumented processes: {}",
            probes.hook(),
            sidecar.processes.len()
        ),
        (None, None) => {}
    }

    let mut scan = tokio::time::interval(SCAN_INTERVAL);
    let mut drain = tokio::time::interval(Duration::from_millis(sidecar_bpf::DRAIN_INTERVAL_MS));
    drain.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut terminate = signal(SignalKind::terminate()).map_err(|source| Error::Io {
        context: "installing the SIGTERM handler".into(),
        source,
    })?;
    let mut interrupt = signal(SignalKind::interrupt()).map_err(|source| Error::Io {
        context: "installing the SIGINT handler".into(),
        source,
    })?;
    loop {
        tokio::select! {
            ready = readable(rings.pod.as_mut()) => {
                let mut guard = ready.map_err(poll_error)?;
                sidecar.drain_pod(guard.get_inner_mut());
                guard.clear_ready();
            }
            ready = readable(rings.syscalls.as_mut()) => {
                let mut guard = ready.map_err(poll_error)?;
                sidecar.drain_syscalls(guard.get_inner_mut());
                guard.clear_ready();
            }
            _ = drain.tick() => {
                if let Some(ring) = rings.pod.as_mut() {
                    sidecar.drain_pod(ring.get_mut());
                }
                if let Some(ring) = rings.syscalls.as_mut() {
                    sidecar.drain_syscalls(ring.get_mut());
                }
                sidecar.expire();
            }
            _ = scan.tick() => {
                let changes = sidecar.discovery.scan();
                let new = sidecar.apply(changes);
                sidecar.after_scan(&mut rings, &new)?;
            }
            _ = terminate.recv() => break,
            _ = interrupt.recv() => break,
        }
    }
    tracing::info!("shutting down");
    sidecar.telemetry.shutdown().await;
    Ok(())
}

/// The ring buffers polled: the pod-scoped programs', and the tracepoints' (the mode in use, or
/// the fallback of the pod-scoped mode).
struct Rings {
    pod: Option<Ring>,
    syscalls: Option<Ring>,
}

/// Readiness of a ring buffer that may not exist (then never ready).
async fn readable(
    ring: Option<&mut Ring>,
) -> std::io::Result<tokio::io::unix::AsyncFdReadyMutGuard<'_, RingBuf<MapData>>> {
    match ring {
        Some(ring) => ring.readable_mut().await,
        None => std::future::pending().await,
    }
}

fn poll_error(source: std::io::Error) -> Error {
    Error::Io {
        context: "polling the ring buffer".into(),
        source,
    }
}

/// The kind of uprobe for TLS capture, if it is on and possible; the log says which, or why none.
fn tls_uprobes(config: &Config) -> Option<UprobeKind> {
    if !config.tls_capture {
        return None;
    }
    match tls::choose(config.tls_uprobes) {
        Ok(choice) => {
            tracing::info!("{choice}");
            Some(choice.kind)
        }
        Err(why) => {
            tracing::info!("TLS plaintext is not captured: {why}");
            None
        }
    }
}

/// Registers the ring buffer's fd with the reactor for readability.
fn register_readable(ring: RingBuf<MapData>) -> Result<Ring> {
    // SAFETY: the fd belongs to the RingBuf, which the AsyncFd owns from here on: it stays open
    // and is the same descriptor until the AsyncFd is dropped.
    unsafe { AsyncFd::register_with_interest(ring, Interest::READABLE) }
        .map_err(|error| poll_error(error.into_parts().1))
}

struct Sidecar {
    namespace: PidNamespace,
    ring_buffer_bytes: u32,
    /// The kind of uprobe TLS capture uses; None: no TLS capture.
    tls: Option<UprobeKind>,
    /// The tracepoints: the mode in use, or the pod-scoped mode's fallback once a container
    /// could not be attached.
    probes: Option<Probes>,
    pod: Option<PodCapture>,
    discovery: Discovery,
    connections: Connections,
    processes: HashMap<u32, Instrumented>,
    completed: Vec<Transaction>,
    telemetry: Telemetry,
}

/// An instrumented process: what spans need to know of it, and its listening ports to give
/// accepted connections their local address without another /proc read.
pub(crate) struct Instrumented {
    info: ProcessInfo,
    listening: Vec<std::net::SocketAddr>,
    /// Its sockets opened before it was selected, for the tracepoints should they capture it.
    connections: Vec<(i32, Role, std::net::SocketAddr, std::net::SocketAddr)>,
    /// Selected in the tracepoints' table.
    in_probes: bool,
}

impl Sidecar {
    fn drain_syscalls(&mut self, events: &mut RingBuf<MapData>) {
        while let Some(record) = events.next() {
            self.on_record(&record);
        }
    }

    fn drain_pod(&mut self, events: &mut RingBuf<MapData>) {
        let Some(pod) = self.pod.as_mut() else { return };
        while let Some(record) = events.next() {
            pod.on_record(
                &record,
                &self.processes,
                &mut self.connections,
                &mut self.completed,
            );
            flush(&mut self.completed, &self.processes, &mut self.telemetry);
        }
    }

    /// Held bytes and client calls that waited too long go out.
    fn expire(&mut self) {
        let now = WallClock::monotonic_now_ns();
        if let Some(pod) = self.pod.as_mut() {
            pod.expire(now, &mut self.connections, &mut self.completed);
            self.connections.expire(now, &mut self.completed);
        }
        flush(&mut self.completed, &self.processes, &mut self.telemetry);
    }

    fn on_record(&mut self, record: &[u8]) {
        let event = match Event::decode(record) {
            Ok(event) => event,
            Err(error) => {
                tracing::warn!(%error, "skipping event");
                return;
            }
        };
        self.connections.on_event(&event, &mut self.completed);
        if let Event::Connect {
            meta,
            role: Role::Server,
            peer,
            local: None,
        } = event
        {
            // An accepted socket's local address (which `sys_exit` cannot see) is the one
            // listening address of its process in the usual case; with several, the connection layer
            // keeps what the peer and headers say.
            if let Some(process) = self.processes.get(&meta.pid)
                && let [local] = process.listening.as_slice()
            {
                self.connections.set_addresses(
                    ConnKey::Fd {
                        pid: meta.pid,
                        fd: meta.fd,
                    },
                    meta.pid,
                    Some(*local),
                    peer,
                );
            }
        }
        flush(&mut self.completed, &self.processes, &mut self.telemetry);
    }

    /// Takes in one discovery scan: exited processes are forgotten, new ones noted (and
    /// returned) for [`Sidecar::after_scan`] to capture.
    fn apply(&mut self, changes: crate::discovery::Changes) -> Vec<u32> {
        for pid in changes.exited {
            let in_probes = match self.processes.remove(&pid) {
                Some(process) => {
                    tracing::info!(pid, "process exited");
                    process.in_probes
                }
                None => false,
            };
            if let Some(pod) = self.pod.as_mut() {
                pod.forget(pid);
            }
            self.connections.forget_process(pid, &mut self.completed);
            flush(&mut self.completed, &self.processes, &mut self.telemetry);
            if let Some(probes) = self.probes.as_mut().filter(|_| in_probes)
                && let Err(error) = probes
                    .deselect_process(pid)
                    .and_then(|()| probes.untrack_process_sockets(pid))
            {
                tracing::warn!(pid, %error, "cleaning up after an exited process");
            }
        }
        changes
            .selected
            .into_iter()
            .map(|selected| self.instrument(selected))
            .collect()
    }

    /// After a scan: the pod-scoped attachments follow the processes, processes the pod-scoped
    /// hooks cannot capture go to the tracepoints, the `new` processes are logged once they are
    /// captured, and the counters are published.
    fn after_scan(&mut self, rings: &mut Rings, new: &[u32]) -> Result<()> {
        if let Some(pod) = self.pod.as_mut() {
            pod.sync(&self.processes);
            let refused: Vec<u32> = self
                .processes
                .iter()
                .filter(|(pid, process)| !process.in_probes && pod.refused(**pid))
                .map(|(pid, _)| *pid)
                .collect();
            if !refused.is_empty() && self.probes.is_none() {
                let mut probes = Probes::load(ProbeConfig {
                    pid_namespace: self.namespace,
                    ring_buffer_bytes: self.ring_buffer_bytes,
                    hooks: HookChoice::Best,
                    tls: self.tls,
                })?;
                tracing::warn!(
                    "falling back to the {} for the processes of containers the pod-scoped \
                     hooks cannot attach",
                    probes.hook()
                );
                rings.syscalls = probes.take_events().map(register_readable).transpose()?;
                self.probes = Some(probes);
            }
            for pid in refused {
                self.select_in_probes(pid);
            }
        } else {
            let pending: Vec<u32> = self
                .processes
                .iter()
                .filter(|(_, process)| !process.in_probes)
                .map(|(pid, _)| *pid)
                .collect();
            for pid in pending {
                self.select_in_probes(pid);
            }
        }
        for pid in new {
            if let Some(process) = self.processes.get(pid) {
                tracing::info!(
                    pid,
                    exe = process.info.exe,
                    container = process.info.container.as_deref(),
                    "instrumenting process"
                );
            }
        }
        // TLS libraries, by the hooks that capture each process; libraries loaded since a process
        // was selected (an `import ssl`) are found here.
        for (&pid, process) in &self.processes {
            let hooked = match (process.in_probes, self.probes.as_mut(), self.pod.as_mut()) {
                (true, Some(probes), _) => probes.hook_tls(pid),
                (false, _, Some(pod)) => pod.hook_tls(pid),
                _ => Ok(()),
            };
            if let Err(error) = hooked {
                tracing::warn!(pid, %error, "hooking TLS libraries");
            }
        }
        let metrics = self.telemetry.self_metrics();
        metrics
            .processes_instrumented
            .set(self.processes.len() as u64);
        let stats = [
            self.probes.as_ref().map(Probes::stats),
            self.pod.as_ref().map(PodCapture::stats),
        ];
        let (mut events, mut dropped) = (0, 0);
        for stats in stats.into_iter().flatten() {
            match stats {
                Ok(stats) => {
                    events += stats.events;
                    dropped += stats.dropped;
                }
                Err(error) => tracing::warn!(%error, "reading kernel counters"),
            }
        }
        metrics.events_captured.set_total(events);
        metrics.events_dropped.set_total(dropped);
        Ok(())
    }

    /// Has the tracepoints capture a process, with the connections it had open.
    fn select_in_probes(&mut self, pid: u32) {
        let (Some(probes), Some(process)) = (self.probes.as_mut(), self.processes.get_mut(&pid))
        else {
            return;
        };
        if let Err(error) = probes.select_process(pid) {
            tracing::warn!(pid, %error, "cannot instrument process");
            return;
        }
        process.in_probes = true;
        // Connections opened before now are not seen by accept/connect: hand them over.
        for (fd, role, local, peer) in std::mem::take(&mut process.connections) {
            if let Err(error) = probes.track_socket(pid, fd, role) {
                tracing::warn!(pid, fd, %error, "cannot track socket");
                continue;
            }
            self.connections
                .set_addresses(ConnKey::Fd { pid, fd }, pid, Some(local), Some(peer));
        }
    }

    /// Notes a newly selected process; returns its pid.
    fn instrument(&mut self, selected: Selected) -> u32 {
        let Selected {
            snapshot,
            container,
        } = selected;
        let pid = snapshot.pid;
        let exe = snapshot.exe.to_string_lossy().into_owned();
        let listening = snapshot
            .sockets
            .iter()
            .filter(|s| s.listening)
            .map(|s| s.local)
            .collect();
        let connections = snapshot
            .connections()
            .map(|(socket, role)| (socket.fd, role, socket.local, socket.peer))
            .collect();
        self.processes.insert(
            pid,
            Instrumented {
                info: ProcessInfo {
                    pid,
                    exe,
                    container,
                },
                listening,
                connections,
                in_probes: false,
            },
        );
        pid
    }
}

/// Completed transactions of instrumented processes go to telemetry.
fn flush(
    completed: &mut Vec<Transaction>,
    processes: &HashMap<u32, Instrumented>,
    telemetry: &mut Telemetry,
) {
    for transaction in completed.drain(..) {
        if let Some(process) = processes.get(&transaction.pid) {
            telemetry.record(&transaction, &process.info);
        }
    }
}
