//! Capture: loading the eBPF object of `sidecar-bpf`, attaching its programs in one of the
//! capture modes (one submodule each), and the maps and ring buffer userspace drives.
//!
//! The object is compiled by the build script and embedded, so the binary carries everything it
//! needs. The tracepoint modes attach to BTF or raw tracepoints, which need only CAP_BPF +
//! CAP_PERFMON: no kprobes, no tracefs, no hostPath volume. Preferred are the socket tracepoints
//! (Linux 6.3+), which run only for socket I/O; older kernels get a `sys_exit` program instead.
//! The pod-scoped mode ([`cgroup`]) attaches to the app containers' cgroups and also needs
//! CAP_NET_ADMIN.

use std::{io, os::fd::FromRawFd, os::unix::fs::MetadataExt, path::Path};

use aya::{
    Btf, Ebpf, EbpfLoader,
    maps::{HashMap, MapData, PerCpuArray, RingBuf},
    programs::{Program, ProgramError},
};
use sidecar_bpf::{
    PID_SELECTED, PID_TLS, ROLE_CLIENT, ROLE_SERVER, ROLE_UNKNOWN, STAT_DROPPED, STAT_EVENTS,
    SocketKey, SocketState, names,
};

use crate::{Error, Result};

pub mod cgroup;
pub mod events;
pub mod tls;
pub mod tracepoints;

use events::Role;
use tracepoints::attach_best;
pub use tracepoints::{Hook, HookChoice};

/// The eBPF object built for this architecture by `build.rs`.
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/sidecar-bpf"));

/// Identity of a PID namespace as `bpf_get_ns_current_pid_tgid` compares it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PidNamespace {
    /// Device of the nsfs inode in the kernel's internal `dev_t` encoding.
    pub dev: u64,
    pub ino: u64,
}

impl PidNamespace {
    /// The namespace of the calling process.
    pub fn current() -> Result<Self> {
        Self::of_path(Path::new("/proc/self/ns/pid"))
    }

    /// The namespace a `/proc/<pid>/ns/pid` link points to.
    pub fn of_path(path: &Path) -> Result<Self> {
        let meta = std::fs::metadata(path).map_err(|source| Error::Io {
            context: format!("stat {}", path.display()),
            source,
        })?;
        let dev = meta.dev();
        // stat() reports the userspace dev_t encoding; the helper compares the kernel's
        // (major << 20 | minor).
        let (major, minor) = (libc::major(dev) as u64, libc::minor(dev) as u64);
        Ok(Self {
            dev: (major << 20) | minor,
            ino: meta.ino(),
        })
    }
}

/// Settings for [`Probes::load`].
#[derive(Clone, Copy, Debug)]
pub struct ProbeConfig {
    /// Only tasks of this PID namespace are ever looked at.
    pub pid_namespace: PidNamespace,
    /// Ring buffer size in bytes: a power-of-two multiple of the page size.
    pub ring_buffer_bytes: u32,
    /// Which hooks may be attached.
    pub hooks: HookChoice,
    /// Load the TLS programs for this kind of uprobe, to hook processes' TLS libraries
    /// ([`Probes::hook_tls`]); None: no TLS capture.
    pub tls: Option<tls::UprobeKind>,
}

/// Counters kept by the eBPF programs, summed over CPUs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KernelStats {
    /// Records written to the ring buffer.
    pub events: u64,
    /// Records lost because the ring buffer was full.
    pub dropped: u64,
}

/// The loaded and attached programs and the maps userspace drives.
pub struct Probes {
    // Keeps the programs and their links alive; the TLS hooks attach its uprobe programs.
    ebpf: Ebpf,
    pids: HashMap<MapData, u32, u32>,
    sockets: HashMap<MapData, SocketKey, SocketState>,
    stats: PerCpuArray<MapData, u64>,
    hook: Hook,
    events: Option<RingBuf<MapData>>,
    tls: Option<tls::TlsHooks>,
}

impl std::fmt::Debug for Probes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Probes").finish_non_exhaustive()
    }
}

fn map_error(what: &'static str) -> impl FnOnce(aya::maps::MapError) -> Error {
    move |source| Error::Map { what, source }
}

pub(crate) fn program_error(program: &'static str) -> impl Fn(ProgramError) -> Error {
    move |source| Error::Program { program, source }
}

/// A program of the object, as its concrete type.
pub(crate) fn program<'a, T>(ebpf: &'a mut Ebpf, name: &'static str) -> Result<&'a mut T>
where
    &'a mut T: TryFrom<&'a mut Program, Error = ProgramError>,
{
    ebpf.program_mut(name)
        .ok_or(Error::MissingObjectItem(name))?
        .try_into()
        .map_err(program_error(name))
}

/// `LANDLOCK_ACCESS_FS_READ_FILE` (uapi `linux/landlock.h`).
const LANDLOCK_ACCESS_FS_READ_FILE: u64 = 1 << 2;

/// An `EbpfLoader` whose construction did not parse the kernel's BTF.
///
/// aya's `EbpfLoader::new` parses `/sys/kernel/btf/vmlinux` (about 12 MiB of heap at its peak,
/// which then stays the process's peak RSS) even when the loader is told right after not to use
/// it (aya-rs/aya#1172; releases that load it lazily need a newer Rust than this workspace's).
/// The programs need no BTF to load, so the loader is made on a thread of its own that Landlock
/// forbids to read any file: the parse fails at its first read and the loader has no BTF, as
/// `.btf(None)` would leave it. Without Landlock (older kernels, not in the LSM list) the parse
/// happens and is dropped, as before.
pub(crate) fn loader_without_kernel_btf() -> EbpfLoader<'static> {
    let without_btf = || {
        let mut loader = EbpfLoader::new();
        loader.btf(None);
        loader
    };
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                if let Err(error) = forbid_file_reads_on_this_thread() {
                    tracing::debug!(%error, "no Landlock: the loader parses the kernel BTF");
                }
                without_btf()
            })
            .join()
            .unwrap_or_else(|_| without_btf())
    })
}

/// Restricts the calling thread (not the process) so that it can open no file for reading.
fn forbid_file_reads_on_this_thread() -> io::Result<()> {
    let handled: u64 = LANDLOCK_ACCESS_FS_READ_FILE;
    // SAFETY: landlock_create_ruleset reads `size` bytes of the attribute struct, whose first
    // (and, at this size, only) field is `handled_access_fs`: the u64 we own.
    let ruleset = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            &raw const handled,
            std::mem::size_of::<u64>(),
            0u32,
        )
    };
    if ruleset < 0 {
        return Err(io::Error::last_os_error());
    }
    let ruleset =
        i32::try_from(ruleset).map_err(|_| io::Error::other("ruleset fd out of range"))?;
    // SAFETY: the syscall returned a new descriptor that nothing else owns.
    let ruleset = unsafe { std::os::fd::OwnedFd::from_raw_fd(ruleset) };
    // Landlock needs no_new_privs (or CAP_SYS_ADMIN); like the restriction, it is per thread.
    // SAFETY: prctl with integer arguments only.
    if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the descriptor is a Landlock ruleset, open for the duration of the call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_landlock_restrict_self,
            std::os::fd::AsRawFd::as_raw_fd(&ruleset),
            0u32,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

impl Probes {
    /// Loads the embedded object, sets the namespace filter and attaches the tracepoint.
    pub fn load(config: ProbeConfig) -> Result<Self> {
        let ring = config.ring_buffer_bytes;
        if !ring.is_power_of_two() || ring < 4096 {
            return Err(Error::InvalidRingBufferSize(ring));
        }
        // The programs read kernel structs at fixed offsets: no CO-RE relocations to apply, so
        // the loader needs no kernel BTF (the attach below reads it once).
        let mut ebpf = loader_without_kernel_btf()
            .override_global(names::PIDNS_DEV, &config.pid_namespace.dev, true)
            .override_global(names::PIDNS_INO, &config.pid_namespace.ino, true)
            .override_global(
                names::WAKEUP_BYTES,
                &u64::from(ring / sidecar_bpf::WAKEUP_FRACTION),
                true,
            )
            .map_max_entries(names::EVENTS, ring)
            // The pod-scoped programs' table of HTTP/2 sockets is not used here.
            .map_max_entries(names::SEGMENT_H2, 1)
            .load(OBJECT)
            .map_err(|source| Error::Load { source })?;
        let btf = match config.hooks {
            HookChoice::Best | HookChoice::SyscallOnly => Btf::from_sys_fs()
                .inspect_err(|e| tracing::info!("no kernel BTF ({e}); using the raw tracepoint"))
                .ok(),
            HookChoice::RawOnly => None,
        };
        let hook = attach_best(&mut ebpf, btf.as_ref(), config.hooks)?;
        // Before the maps are taken: the TLS programs are relocated to the same maps.
        let tls = config.tls.and_then(|kind| {
            tls::TlsHooks::load(OBJECT, &mut ebpf, kind)
                .inspect_err(|e| tracing::info!("TLS plaintext is not captured: {e}"))
                .ok()
        });
        let mut take =
            |name: &'static str| ebpf.take_map(name).ok_or(Error::MissingObjectItem(name));
        let pids = HashMap::try_from(take(names::PIDS)?).map_err(map_error("PIDS"))?;
        let sockets = HashMap::try_from(take(names::SOCKETS)?).map_err(map_error("SOCKETS"))?;
        let stats = PerCpuArray::try_from(take(names::STATS)?).map_err(map_error("STATS"))?;
        let events = RingBuf::try_from(take(names::EVENTS)?).map_err(map_error("EVENTS"))?;
        Ok(Self {
            ebpf,
            pids,
            sockets,
            stats,
            events: Some(events),
            hook,
            tls,
        })
    }

    /// The hooks in use.
    pub fn hook(&self) -> Hook {
        self.hook
    }

    /// Starts capturing the traffic of a process (namespace pid).
    pub fn select_process(&mut self, pid: u32) -> Result<()> {
        self.pids
            .insert(pid, PID_SELECTED, 0)
            .map_err(map_error("PIDS insert"))
    }

    /// Stops capturing a process. Unknown pids are not an error: it may have been evicted.
    pub fn deselect_process(&mut self, pid: u32) -> Result<()> {
        if let Some(tls) = &mut self.tls {
            tls.forget(pid);
        }
        ignore_missing(self.pids.remove(&pid)).map_err(map_error("PIDS remove"))
    }

    /// Hooks the TLS libraries of a selected process not hooked yet (see
    /// [`tls::TlsHooks::hook`]); nothing when TLS capture is off.
    pub fn hook_tls(&mut self, pid: u32) -> Result<()> {
        let Some(tls) = &mut self.tls else {
            return Ok(());
        };
        tls.hook(&mut self.ebpf, pid, &mut self.pids, PID_SELECTED | PID_TLS)?;
        Ok(())
    }

    /// Whether TLS plaintext is captured.
    pub fn tls_enabled(&self) -> bool {
        self.tls.is_some()
    }

    /// Tracks a socket that existed before its process was selected.
    pub fn track_socket(&mut self, pid: u32, fd: i32, role: Role) -> Result<()> {
        let role = match role {
            Role::Server => ROLE_SERVER,
            Role::Client => ROLE_CLIENT,
            Role::Unknown => ROLE_UNKNOWN,
        };
        let state = SocketState {
            role,
            ..SocketState::default()
        };
        self.sockets
            .insert(SocketKey { pid, fd }, state, 0)
            .map_err(map_error("SOCKETS insert"))
    }

    /// Stops tracking a socket (it is not TCP, or its process is gone).
    pub fn untrack_socket(&mut self, pid: u32, fd: i32) -> Result<()> {
        ignore_missing(self.sockets.remove(&SocketKey { pid, fd }))
            .map_err(map_error("SOCKETS remove"))
    }

    /// Drops every socket of a process that exited.
    pub fn untrack_process_sockets(&mut self, pid: u32) -> Result<()> {
        let keys: Vec<SocketKey> = self
            .sockets
            .keys()
            .filter_map(|key| key.ok())
            .filter(|key| key.pid == pid)
            .collect();
        for key in keys {
            self.untrack_socket(key.pid, key.fd)?;
        }
        Ok(())
    }

    /// The ring buffer the programs write to. It can be taken once, to be polled on its own.
    pub fn take_events(&mut self) -> Option<RingBuf<MapData>> {
        self.events.take()
    }

    /// The programs' counters, summed over CPUs.
    pub fn stats(&self) -> Result<KernelStats> {
        read_stats(&self.stats)
    }
}

/// The counters of [`names::STATS`], summed over CPUs.
fn read_stats(stats: &PerCpuArray<MapData, u64>) -> Result<KernelStats> {
    let sum = |index: u32| -> Result<u64> {
        let values = stats.get(&index, 0).map_err(map_error("STATS lookup"))?;
        Ok(values.iter().sum())
    };
    Ok(KernelStats {
        events: sum(STAT_EVENTS)?,
        dropped: sum(STAT_DROPPED)?,
    })
}

/// A key removed concurrently by the kernel (close) or evicted (LRU) is already gone: fine.
fn ignore_missing(result: Result<(), aya::maps::MapError>) -> Result<(), aya::maps::MapError> {
    match result {
        Err(aya::maps::MapError::KeyNotFound) => Ok(()),
        Err(aya::maps::MapError::SyscallError(ref e))
            if e.io_error.kind() == io::ErrorKind::NotFound =>
        {
            Ok(())
        }
        other => other,
    }
}
