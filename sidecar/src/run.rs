//! The sidecar's event loop: ring buffer → connections → telemetry, with periodic discovery.

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
        events::{Event, Role},
    },
    config::Config,
    connection::{ConnKey, Connections, Limits},
    discovery::{Discovery, Selected, Selection},
    telemetry::{ProcessInfo, Telemetry},
    transaction::Transaction,
};

/// How often `/proc` is scanned: processes that start or exit are noticed within this.
const SCAN_INTERVAL: Duration = Duration::from_millis(250);

/// Runs until SIGTERM or SIGINT.
pub async fn run(config: Config) -> Result<()> {
    let mut probes = Probes::load(ProbeConfig {
        pid_namespace: PidNamespace::current()?,
        ring_buffer_bytes: config.ring_buffer_bytes,
        hooks: HookChoice::Best,
        tls: config.tls_capture,
    })?;
    let ring = probes
        .take_events()
        .ok_or(Error::MissingObjectItem("EVENTS"))?;
    let mut ring = register_readable(ring)?;
    let telemetry = Telemetry::start(&config).await?;
    let mut sidecar = Sidecar {
        probes,
        discovery: Discovery::new(Selection::from_config(&config)),
        connections: Connections::new(Limits::default()),
        processes: HashMap::new(),
        completed: Vec::new(),
        telemetry,
    };
    sidecar.rescan();
    tracing::info!(
        "capturing with the {}; instrumented processes: {}",
        sidecar.probes.hook(),
        sidecar.processes.len()
    );

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
            ready = ring.readable_mut() => {
                let mut guard = ready.map_err(|source| Error::Io {
                    context: "polling the ring buffer".into(),
                    source,
                })?;
                sidecar.drain(guard.get_inner_mut());
                guard.clear_ready();
            }
            _ = drain.tick() => sidecar.drain(ring.get_mut()),
            _ = scan.tick() => sidecar.rescan(),
            _ = terminate.recv() => break,
            _ = interrupt.recv() => break,
        }
    }
    tracing::info!("shutting down");
    sidecar.telemetry.shutdown().await;
    Ok(())
}

/// Registers the ring buffer's fd with the reactor for readability.
fn register_readable(ring: RingBuf<MapData>) -> Result<AsyncFd<RingBuf<MapData>>> {
    // SAFETY: the fd belongs to the RingBuf, which the AsyncFd owns from here on: it stays open
    // and is the same descriptor until the AsyncFd is dropped.
    unsafe { AsyncFd::register_with_interest(ring, Interest::READABLE) }.map_err(|error| {
        Error::Io {
            context: "polling the ring buffer".into(),
            source: error.into_parts().1,
        }
    })
}

struct Sidecar {
    probes: Probes,
    discovery: Discovery,
    connections: Connections,
    processes: HashMap<u32, Instrumented>,
    completed: Vec<Transaction>,
    telemetry: Telemetry,
}

/// An instrumented process: what spans need to know of it, and its listening ports to give
/// accepted connections their local address without another /proc read.
struct Instrumented {
    info: ProcessInfo,
    listening: Vec<std::net::SocketAddr>,
}

impl Sidecar {
    fn drain(&mut self, events: &mut RingBuf<MapData>) {
        while let Some(record) = events.next() {
            self.on_record(&record);
        }
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
        self.flush();
    }

    fn flush(&mut self) {
        for transaction in self.completed.drain(..) {
            if let Some(process) = self.processes.get(&transaction.pid) {
                self.telemetry.record(&transaction, &process.info);
            }
        }
    }

    fn rescan(&mut self) {
        let changes = self.discovery.scan();
        for pid in changes.exited {
            if self.processes.remove(&pid).is_some() {
                tracing::info!(pid, "process exited");
            }
            self.connections.forget_process(pid, &mut self.completed);
            self.flush();
            if let Err(error) = self
                .probes
                .deselect_process(pid)
                .and_then(|()| self.probes.untrack_process_sockets(pid))
            {
                tracing::warn!(pid, %error, "cleaning up after an exited process");
            }
        }
        for selected in changes.selected {
            self.instrument(selected);
        }
        // Libraries loaded since a process was selected (an `import ssl`) are found here.
        let pids: Vec<u32> = self.processes.keys().copied().collect();
        for pid in pids {
            if let Err(error) = self.probes.hook_tls(pid) {
                tracing::warn!(pid, %error, "hooking TLS libraries");
            }
        }
        let metrics = self.telemetry.self_metrics();
        metrics
            .processes_instrumented
            .set(self.processes.len() as u64);
        match self.probes.stats() {
            Ok(stats) => {
                metrics.events_captured.set_total(stats.events);
                metrics.events_dropped.set_total(stats.dropped);
            }
            Err(error) => tracing::warn!(%error, "reading kernel counters"),
        }
    }

    fn instrument(&mut self, selected: Selected) {
        let Selected {
            snapshot,
            container,
        } = selected;
        let pid = snapshot.pid;
        if let Err(error) = self.probes.select_process(pid) {
            tracing::warn!(pid, %error, "cannot instrument process");
            return;
        }
        // Connections opened before now are not seen by accept/connect: hand them over.
        for (socket, role) in snapshot.connections() {
            if let Err(error) = self.probes.track_socket(pid, socket.fd, role) {
                tracing::warn!(pid, fd = socket.fd, %error, "cannot track socket");
                continue;
            }
            self.connections.set_addresses(
                ConnKey::Fd { pid, fd: socket.fd },
                pid,
                Some(socket.local),
                Some(socket.peer),
            );
        }
        let exe = snapshot.exe.to_string_lossy().into_owned();
        tracing::info!(
            pid,
            exe,
            container = container.as_deref(),
            "instrumenting process"
        );
        let listening = snapshot
            .sockets
            .iter()
            .filter(|s| s.listening)
            .map(|s| s.local)
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
            },
        );
    }
}
