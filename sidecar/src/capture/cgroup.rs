//! The pod-scoped capture mode: `cgroup_skb` (ingress, egress) and `sock_ops` programs of the
//! embedded object attached to the cgroup of each app container, so the kernel runs them for the
//! pod's own sockets only and other pods pay nothing.
//!
//! A container's cgroup is reached without a hostPath volume: container runtimes mount cgroup2
//! at `/sys/fs/cgroup` inside the container's cgroup namespace, so `/proc/<pid>/root/sys/fs/cgroup`
//! of any of its processes is that container's cgroup directory. A container is known by the
//! directory's device and inode. The sidecar's own container (its own `/sys/fs/cgroup`) is never
//! attached, so its OTLP traffic is never captured.
//!
//! Attachments are BPF links held by this process: they go away when it exits, however it
//! exits. [`PodHooks::sync`], called on each discovery scan, attaches containers whose processes
//! appeared and drops the links of containers whose processes are all gone (a restarted
//! container is a new cgroup, attached anew).

use std::{
    collections::{HashMap, HashSet},
    fs::File,
    io,
    os::{fd::AsFd, unix::fs::MetadataExt},
    path::{Path, PathBuf},
};

use aya::{
    Ebpf,
    maps::{Array, HashMap as AyaHashMap, MapData, PerCpuArray, RingBuf},
    programs::{
        CgroupAttachMode, CgroupSkb, CgroupSkbAttachType, ProgramError, SockOps,
        cgroup_skb::CgroupSkbLink, sock_ops::SockOpsLink,
    },
};
use sidecar_bpf::names;

use super::{
    HookChoice, KernelStats, OBJECT, PidNamespace, map_error, program, read_stats,
    tls::{TlsHooks, UprobeKind},
};
use crate::{Error, Result, config::CaptureMode, error::PodCaptureError};

/// `statfs` magic of cgroup2.
const CGROUP2_SUPER_MAGIC: i64 = 0x6367_7270;
/// Where a process's container sees its cgroup v2 hierarchy: `/sys/fs/cgroup` (unified layout,
/// what runtimes mount in a cgroup namespace) or, on hybrid layouts, `/sys/fs/cgroup/unified`.
const CGROUP_MOUNTS: [&str; 2] = ["sys/fs/cgroup", "sys/fs/cgroup/unified"];

/// Identity of a cgroup v2 directory: its device and inode (the inode is the cgroup id).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CgroupId {
    pub dev: u64,
    pub ino: u64,
}

/// A container's cgroup and the process through which it was reached.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Container {
    pub cgroup: CgroupId,
    /// A process of the container (namespace pid), the one used to reach its cgroup.
    pub pid: u32,
    /// The cgroup directory, as reached through that process.
    pub path: PathBuf,
}

/// A container that could not be attached (reported once per cgroup, or once per process when
/// its cgroup could not even be reached).
#[derive(Debug)]
pub struct AttachFailure {
    /// The process through which the cgroup was looked for.
    pub pid: u32,
    /// The cgroup, when it was reached.
    pub cgroup: Option<CgroupId>,
    pub error: PodCaptureError,
}

/// What one [`PodHooks::sync`] changed.
#[derive(Debug, Default)]
pub struct Changes {
    /// Containers attached by this call.
    pub attached: Vec<Container>,
    /// Containers whose processes are all gone: their links were dropped.
    pub detached: Vec<Container>,
    /// Containers (or processes) that could not be attached, with the cause.
    pub failed: Vec<AttachFailure>,
}

impl Changes {
    /// Nothing changed.
    pub fn is_empty(&self) -> bool {
        self.attached.is_empty() && self.detached.is_empty() && self.failed.is_empty()
    }
}

/// Settings for [`PodHooks::load`].
#[derive(Clone, Debug)]
pub struct PodHooksConfig {
    /// The sidecar's PID namespace: egress and connect records name tasks by their ids there.
    pub pid_namespace: PidNamespace,
    /// Ring buffer size in bytes: a power-of-two multiple of the page size.
    pub ring_buffer_bytes: u32,
    /// The procfs of the pod's PID namespace (`/proc` in the sidecar).
    pub proc: PathBuf,
    /// The sidecar's own cgroup v2 directory (`/sys/fs/cgroup` in its container), never
    /// attached. Not a cgroup2 mount: nothing is skipped.
    pub own_cgroup: PathBuf,
    /// Load the TLS programs for this kind of uprobe, to hook processes' TLS libraries
    /// ([`PodHooks::hook_tls`]); None: no TLS capture.
    pub tls: Option<UprobeKind>,
}

impl PodHooksConfig {
    /// The paths as they are in a sidecar container.
    pub fn new(
        pid_namespace: PidNamespace,
        ring_buffer_bytes: u32,
        tls: Option<UprobeKind>,
    ) -> Self {
        Self {
            pid_namespace,
            ring_buffer_bytes,
            proc: PathBuf::from("/proc"),
            own_cgroup: PathBuf::from("/sys/fs/cgroup"),
            tls,
        }
    }
}

/// The three links of one attached container; dropping them detaches it.
struct Attached {
    container: Container,
    _links: (SockOpsLink, CgroupSkbLink, CgroupSkbLink),
}

/// The loaded cgroup programs, the containers they are attached to, and the ring buffer.
pub struct PodHooks {
    ebpf: Ebpf,
    stats: PerCpuArray<MapData, u64>,
    events: Option<RingBuf<MapData>>,
    tls: Option<PodTls>,
    proc: PathBuf,
    /// The sidecar's own cgroup, never attached.
    own: Option<CgroupId>,
    attached: HashMap<CgroupId, Attached>,
    /// Cgroups whose attach failed: reported once, not retried (a restart is a new cgroup).
    refused: HashSet<CgroupId>,
    /// The cgroup of each process seen, so a scan costs no syscall per known process.
    cgroup_of: HashMap<u32, CgroupId>,
    /// Processes whose cgroup could not be reached: reported once.
    unreachable: HashSet<u32>,
}

/// TLS capture in the pod-scoped mode: the uprobes and the tables the cgroup programs consult.
struct PodTls {
    hooks: TlsHooks,
    /// Processes with TLS hooks (`PID_TLS`): their egress is looked at for ties.
    pids: AyaHashMap<MapData, u32, u32>,
    /// Entry 0 switches the cgroup programs' TLS lookups on, with the first hooked process.
    capture: Array<MapData, u32>,
    capturing: bool,
}

impl std::fmt::Debug for PodHooks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PodHooks")
            .field("own", &self.own)
            .field("attached", &self.attached.len())
            .finish_non_exhaustive()
    }
}

fn setup(error: Error) -> PodCaptureError {
    PodCaptureError::Setup(Box::new(error))
}

/// The errno of a failed load or attach.
fn errno(error: &ProgramError) -> Option<i32> {
    match error {
        ProgramError::LoadError { io_error, .. } => io_error.raw_os_error(),
        ProgramError::SyscallError(e) => e.io_error.raw_os_error(),
        _ => None,
    }
}

impl PodHooks {
    /// Loads the cgroup programs of the embedded object (attaching nothing yet). Needs CAP_BPF
    /// and CAP_NET_ADMIN (the kernel checks it when loading `sock_ops`, and when attaching
    /// `cgroup_skb`); no kernel BTF is read.
    pub fn load(config: &PodHooksConfig) -> Result<Self, PodCaptureError> {
        let ring = config.ring_buffer_bytes;
        if !ring.is_power_of_two() || ring < 4096 {
            return Err(setup(Error::InvalidRingBufferSize(ring)));
        }
        let pidns = config.pid_namespace;
        let mut ebpf = super::loader_without_kernel_btf()
            .override_global(names::PIDNS_DEV, &pidns.dev, true)
            .override_global(names::PIDNS_INO, &pidns.ino, true)
            .override_global(
                names::WAKEUP_BYTES,
                &u64::from(ring / sidecar_bpf::WAKEUP_FRACTION),
                true,
            )
            .map_max_entries(names::EVENTS, ring)
            // The tracepoint mode's socket table is not used here: keep its kernel memory small
            // (the process table holds only the TLS-hooked processes).
            .map_max_entries(names::SOCKETS, 1)
            .map_max_entries(
                names::PIDS,
                if config.tls.is_some() {
                    sidecar_bpf::MAX_PIDS
                } else {
                    1
                },
            )
            .load(OBJECT)
            .map_err(|source| setup(Error::Load { source }))?;
        for name in [names::SKB_INGRESS, names::SKB_EGRESS] {
            let prog: &mut CgroupSkb = program(&mut ebpf, name).map_err(setup)?;
            prog.load().map_err(|source| PodCaptureError::Program {
                program: name,
                source,
            })?;
        }
        let ops: &mut SockOps = program(&mut ebpf, names::TCP_OPS).map_err(setup)?;
        ops.load().map_err(|source| {
            if errno(&source) == Some(libc::EPERM) {
                PodCaptureError::NoNetAdmin {
                    what: format!("loading the sock_ops program {}", names::TCP_OPS),
                    source,
                }
            } else {
                PodCaptureError::Program {
                    program: names::TCP_OPS,
                    source,
                }
            }
        })?;
        // Before the maps are taken: the TLS programs are relocated to the same maps.
        let tls_hooks = config.tls.and_then(|kind| {
            TlsHooks::load(OBJECT, &mut ebpf, kind)
                .inspect_err(|e| tracing::info!("TLS plaintext is not captured: {e}"))
                .ok()
        });
        let mut take = |name: &'static str| {
            ebpf.take_map(name)
                .ok_or_else(|| setup(Error::MissingObjectItem(name)))
        };
        let stats =
            PerCpuArray::try_from(take(names::STATS)?).map_err(|e| setup(map_error("STATS")(e)))?;
        let events =
            RingBuf::try_from(take(names::EVENTS)?).map_err(|e| setup(map_error("EVENTS")(e)))?;
        let tls = match tls_hooks {
            Some(hooks) => Some(PodTls {
                hooks,
                pids: AyaHashMap::try_from(take(names::PIDS)?)
                    .map_err(|e| setup(map_error("PIDS")(e)))?,
                capture: Array::try_from(take(names::TLS_CAPTURE)?)
                    .map_err(|e| setup(map_error("TLS_CAPTURE")(e)))?,
                capturing: false,
            }),
            None => None,
        };
        Ok(Self {
            ebpf,
            stats,
            events: Some(events),
            tls,
            proc: config.proc.clone(),
            own: open_cgroup(&config.own_cgroup).ok().map(|(id, _)| id),
            attached: HashMap::new(),
            refused: HashSet::new(),
            cgroup_of: HashMap::new(),
            unreachable: HashSet::new(),
        })
    }

    /// Loads the programs and attaches them to the containers of `pids`: the probe of
    /// [`choose_mode`]. Fails, naming what is missing, when the programs cannot load, when a
    /// container cannot be attached, or, with no app container yet, when the sidecar's own
    /// `/sys/fs/cgroup` is not cgroup v2 (so the app containers' will not be either).
    pub fn probe(
        config: &PodHooksConfig,
        pids: impl IntoIterator<Item = u32>,
    ) -> Result<Self, PodCaptureError> {
        let mut hooks = Self::load(config)?;
        let changes = hooks.sync(pids);
        // A process sharing the sidecar's cgroup is no reason to give the mode up: it alone
        // falls back.
        if let Some(failure) = changes
            .failed
            .into_iter()
            .find(|failure| !matches!(failure.error, PodCaptureError::OwnCgroup))
        {
            return Err(failure.error);
        }
        if hooks.attached.is_empty() {
            open_cgroup(&config.own_cgroup)?;
        }
        Ok(hooks)
    }

    /// Brings the attachments in line with the processes of one discovery scan (namespace
    /// pids): every container with a process among them is attached (within this call), every
    /// attached container without one is detached. Failures are reported once per cgroup.
    pub fn sync(&mut self, pids: impl IntoIterator<Item = u32>) -> Changes {
        let mut changes = Changes::default();
        // Each container's cgroup with the first of its processes seen.
        let mut live: HashMap<CgroupId, u32> = HashMap::new();
        let mut seen_pids = HashSet::new();
        for pid in pids {
            seen_pids.insert(pid);
            let cgroup = match self.cgroup_of.get(&pid) {
                Some(cgroup) => *cgroup,
                None => match self.resolve(pid) {
                    Ok(Some(cgroup)) => {
                        self.cgroup_of.insert(pid, cgroup);
                        cgroup
                    }
                    // Exited during the scan, or a kernel thread: nothing to attach.
                    Ok(None) => continue,
                    Err(error) => {
                        if self.unreachable.insert(pid) {
                            changes.failed.push(AttachFailure {
                                pid,
                                cgroup: None,
                                error,
                            });
                        }
                        continue;
                    }
                },
            };
            if Some(cgroup) == self.own {
                // Not attached, so that the sidecar's own traffic is never captured; an
                // instrumented process there (the sidecar run outside containers, beside its
                // app) is left to the tracepoints.
                if self.unreachable.insert(pid) {
                    changes.failed.push(AttachFailure {
                        pid,
                        cgroup: Some(cgroup),
                        error: PodCaptureError::OwnCgroup,
                    });
                }
                continue;
            }
            live.entry(cgroup).or_insert(pid);
        }
        self.cgroup_of.retain(|pid, _| seen_pids.contains(pid));
        self.unreachable.retain(|pid| seen_pids.contains(pid));
        self.refused.retain(|cgroup| live.contains_key(cgroup));

        let gone: Vec<CgroupId> = self
            .attached
            .keys()
            .filter(|cgroup| !live.contains_key(cgroup))
            .copied()
            .collect();
        for cgroup in gone {
            if let Some(attached) = self.attached.remove(&cgroup) {
                // Dropping the links detaches the programs.
                changes.detached.push(attached.container);
            }
        }
        let mut new: Vec<(CgroupId, u32)> = live
            .into_iter()
            .filter(|(cgroup, _)| {
                !self.attached.contains_key(cgroup) && !self.refused.contains(cgroup)
            })
            .collect();
        new.sort_unstable();
        for (cgroup, pid) in new {
            match self.attach(cgroup, pid) {
                Ok(Some(container)) => changes.attached.push(container),
                Ok(None) => {}
                Err(error) => {
                    self.refused.insert(cgroup);
                    changes.failed.push(AttachFailure {
                        pid,
                        cgroup: Some(cgroup),
                        error,
                    });
                }
            }
        }
        changes
    }

    /// Whether a process's container could not be attached (or not even reached), as of the
    /// last [`PodHooks::sync`]: its traffic is not captured by these hooks.
    pub fn refused(&self, pid: u32) -> bool {
        self.unreachable.contains(&pid)
            || self
                .cgroup_of
                .get(&pid)
                .is_some_and(|cgroup| self.refused.contains(cgroup))
    }

    /// Hooks the TLS libraries of an instrumented process not hooked yet (see
    /// [`TlsHooks::hook`]); nothing when TLS capture is off.
    pub fn hook_tls(&mut self, pid: u32) -> Result<()> {
        let Some(tls) = &mut self.tls else {
            return Ok(());
        };
        if !tls
            .hooks
            .hook(&mut self.ebpf, pid, &mut tls.pids, sidecar_bpf::PID_TLS)?
            || tls.capturing
        {
            return Ok(());
        }
        tls.capture
            .set(0, 1, 0)
            .map_err(map_error("TLS_CAPTURE set"))?;
        tls.capturing = true;
        Ok(())
    }

    /// A process exited: its TLS hooks go.
    pub fn forget(&mut self, pid: u32) {
        if let Some(tls) = &mut self.tls {
            tls.hooks.forget(pid);
            // Absent when it had no hooks.
            let _ = tls.pids.remove(&pid);
        }
    }

    /// Whether TLS plaintext is captured.
    pub fn tls_enabled(&self) -> bool {
        self.tls.is_some()
    }

    /// The containers attached now.
    pub fn containers(&self) -> impl Iterator<Item = &Container> {
        self.attached.values().map(|attached| &attached.container)
    }

    /// The ring buffer the programs write to. It can be taken once, to be polled on its own.
    pub fn take_events(&mut self) -> Option<RingBuf<MapData>> {
        self.events.take()
    }

    /// The programs' counters, summed over CPUs.
    pub fn stats(&self) -> Result<KernelStats> {
        read_stats(&self.stats)
    }

    /// The cgroup directory of a process's container and its path, or None when the process
    /// is gone.
    fn cgroup_dir(&self, pid: u32) -> Result<Option<(CgroupId, File, PathBuf)>, PodCaptureError> {
        let root = self.proc.join(pid.to_string()).join("root");
        let mut first_error = None;
        for mount in CGROUP_MOUNTS {
            let path = root.join(mount);
            match open_cgroup(&path) {
                Ok((id, dir)) => return Ok(Some((id, dir, path))),
                Err(PodCaptureError::Unreachable { source, .. })
                    if source.kind() == io::ErrorKind::NotFound
                        && !self.proc.join(pid.to_string()).exists() =>
                {
                    return Ok(None);
                }
                Err(error) => {
                    first_error.get_or_insert(error);
                }
            }
        }
        match first_error {
            Some(error) => Err(error),
            None => Ok(None),
        }
    }

    fn resolve(&self, pid: u32) -> Result<Option<CgroupId>, PodCaptureError> {
        Ok(self.cgroup_dir(pid)?.map(|(id, _, _)| id))
    }

    /// Attaches the three programs to a container's cgroup, all or none.
    /// `None`: the process exited, or is in another cgroup than the scan found (it moved, or
    /// its pid was reused); the next scan looks again.
    fn attach(&mut self, cgroup: CgroupId, pid: u32) -> Result<Option<Container>, PodCaptureError> {
        let Some((id, dir, path)) = self.cgroup_dir(pid)?.filter(|(id, ..)| *id == cgroup) else {
            self.cgroup_of.remove(&pid);
            return Ok(None);
        };
        self.check_own_container(pid, &path)?;
        let shown = path.display().to_string();
        let refused = |program: &'static str, source: ProgramError| {
            if errno(&source) == Some(libc::EPERM) {
                PodCaptureError::Exclusive {
                    program,
                    path: shown.clone(),
                }
            } else {
                PodCaptureError::Program { program, source }
            }
        };
        // Links (every kernel with ring buffers has them) always share the cgroup with other
        // programs, as BPF_F_ALLOW_MULTI does, and the kernel takes no flags with them
        // (EINVAL): the default mode is the one that passes none.
        let mode = CgroupAttachMode::Single;
        let ops: &mut SockOps = program(&mut self.ebpf, names::TCP_OPS).map_err(setup)?;
        let link = ops
            .attach(dir.as_fd(), mode)
            .map_err(|e| refused(names::TCP_OPS, e))?;
        let ops_link = ops
            .take_link(link)
            .map_err(|e| refused(names::TCP_OPS, e))?;
        let mut skb_link = |name: &'static str, kind: CgroupSkbAttachType| {
            let prog: &mut CgroupSkb = program(&mut self.ebpf, name).map_err(setup)?;
            let link = prog
                .attach(dir.as_fd(), kind, mode)
                .map_err(|e| refused(name, e))?;
            prog.take_link(link).map_err(|e| refused(name, e))
        };
        // On failure the links taken so far are dropped, which detaches them.
        let egress = skb_link(names::SKB_EGRESS, CgroupSkbAttachType::Egress)?;
        let ingress = skb_link(names::SKB_INGRESS, CgroupSkbAttachType::Ingress)?;
        let container = Container {
            cgroup: id,
            pid,
            path,
        };
        self.attached.insert(
            id,
            Attached {
                container: container.clone(),
                _links: (ops_link, egress, ingress),
            },
        );
        Ok(Some(container))
    }

    /// Refuses a cgroup mount whose root is the sidecar's own cgroup-namespace root or an
    /// ancestor of it: a container sharing the node's cgroup namespace sees the node's whole
    /// hierarchy at `/sys/fs/cgroup`, and attaching there would capture other pods.
    fn check_own_container(&self, pid: u32, path: &Path) -> Result<(), PodCaptureError> {
        let mountinfo = self.proc.join(pid.to_string()).join("mountinfo");
        let text =
            std::fs::read_to_string(&mountinfo).map_err(|source| PodCaptureError::Unreachable {
                path: mountinfo.display().to_string(),
                source,
            })?;
        let root = self.proc.join(pid.to_string()).join("root");
        let mount_point = path
            .strip_prefix(&root)
            .map(|p| Path::new("/").join(p))
            .unwrap_or_default();
        match cgroup2_mount_root(&text, &mount_point) {
            // Shown relative to the sidecar's cgroup namespace: only `..` components mean an
            // ancestor of (or the same as) the sidecar's own root.
            Some(cgroup) if cgroup.split('/').all(|c| c.is_empty() || c == "..") => {
                Err(PodCaptureError::NotAContainer {
                    path: path.display().to_string(),
                    cgroup: cgroup.to_owned(),
                })
            }
            Some(_) => Ok(()),
            None => Err(PodCaptureError::NoCgroup2 {
                path: path.display().to_string(),
            }),
        }
    }
}

/// Opens a directory that must be the root of a cgroup2 mount or a directory in one.
fn open_cgroup(path: &Path) -> Result<(CgroupId, File), PodCaptureError> {
    let unreachable = |source| PodCaptureError::Unreachable {
        path: path.display().to_string(),
        source,
    };
    let dir = File::open(path).map_err(unreachable)?;
    let mut fs = std::mem::MaybeUninit::<libc::statfs>::uninit();
    // SAFETY: fstatfs fills the struct it is given on success; the descriptor is open.
    let rc = unsafe { libc::fstatfs(std::os::fd::AsRawFd::as_raw_fd(&dir), fs.as_mut_ptr()) };
    if rc != 0 {
        return Err(unreachable(io::Error::last_os_error()));
    }
    // SAFETY: initialized by the successful call above.
    let magic = unsafe { fs.assume_init() }.f_type;
    if magic != CGROUP2_SUPER_MAGIC {
        return Err(PodCaptureError::NoCgroup2 {
            path: path.display().to_string(),
        });
    }
    let meta = dir.metadata().map_err(unreachable)?;
    Ok((
        CgroupId {
            dev: meta.dev(),
            ino: meta.ino(),
        },
        dir,
    ))
}

/// The root (4th field) of the last cgroup2 mount on `mount_point` in a mountinfo text.
fn cgroup2_mount_root<'a>(mountinfo: &'a str, mount_point: &Path) -> Option<&'a str> {
    let mount_point = mount_point.to_str()?;
    mountinfo
        .lines()
        .filter_map(|line| {
            let (fields, rest) = line.split_once(" - ")?;
            let mut fields = fields.split(' ');
            let root = fields.nth(3)?;
            let point = fields.next()?;
            let fstype = rest.split(' ').next()?;
            (point == mount_point && fstype == "cgroup2").then_some(root)
        })
        .next_back()
}

/// The capture [`choose_mode`] settled on.
#[derive(Debug)]
pub enum Capture<P> {
    /// The pod-scoped hooks, loaded and attached by the probe.
    Pod(P),
    /// The tracepoint modes: [`super::Probes::load`] with these hooks.
    Syscalls(HookChoice),
}

/// The outcome of [`choose_mode`].
#[derive(Debug)]
pub struct ModeChoice<P> {
    pub capture: Capture<P>,
    /// Why `auto` did not pick the pod-scoped mode: the run loop logs it.
    pub fallback: Option<String>,
}

/// Resolves `OTEL_EBPF_CAPTURE_MODE`: `auto` runs `probe_pod` (usually [`PodHooks::probe`])
/// and takes the pod-scoped mode when it works, else the socket tracepoints (which fall back to
/// `sys_exit` on their own), saying why; `pod` takes the probe's result or fails with
/// [`Error::CaptureModeUnavailable`] (exit code 2); the others never probe.
pub fn choose_mode<P>(
    requested: CaptureMode,
    probe_pod: impl FnOnce() -> Result<P, PodCaptureError>,
) -> Result<ModeChoice<P>> {
    let syscalls = |hooks, fallback| ModeChoice {
        capture: Capture::Syscalls(hooks),
        fallback,
    };
    match requested {
        CaptureMode::Tracepoints => Ok(syscalls(HookChoice::Best, None)),
        CaptureMode::SysExit => Ok(syscalls(HookChoice::SyscallOnly, None)),
        CaptureMode::Pod => match probe_pod() {
            Ok(hooks) => Ok(ModeChoice {
                capture: Capture::Pod(hooks),
                fallback: None,
            }),
            Err(reason) => Err(Error::CaptureModeUnavailable {
                mode: CaptureMode::Pod.as_str(),
                reason,
            }),
        },
        CaptureMode::Auto => match probe_pod() {
            Ok(hooks) => Ok(ModeChoice {
                capture: Capture::Pod(hooks),
                fallback: None,
            }),
            Err(reason) => Ok(syscalls(
                HookChoice::Best,
                Some(format!(
                    "pod-scoped capture unavailable ({reason}); using the socket tracepoints"
                )),
            )),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn missing_net_admin() -> PodCaptureError {
        PodCaptureError::NoNetAdmin {
            what: "loading the sock_ops program tcp_ops".to_owned(),
            source: ProgramError::SyscallError(aya::sys::SyscallError {
                call: "bpf_prog_load",
                io_error: io::Error::from_raw_os_error(libc::EPERM),
            }),
        }
    }

    #[test]
    fn auto_takes_the_pod_mode_when_the_probe_works_and_says_why_not_otherwise() {
        let choice = choose_mode(CaptureMode::Auto, || Ok(7)).unwrap();
        assert!(matches!(choice.capture, Capture::Pod(7)));
        assert_eq!(choice.fallback, None);

        let choice = choose_mode::<()>(CaptureMode::Auto, || Err(missing_net_admin())).unwrap();
        assert!(matches!(
            choice.capture,
            Capture::Syscalls(HookChoice::Best)
        ));
        let reason = choice.fallback.unwrap();
        assert!(reason.contains("CAP_NET_ADMIN"), "{reason}");
        assert!(reason.contains("socket tracepoints"), "{reason}");

        let choice = choose_mode::<()>(CaptureMode::Auto, || {
            Err(PodCaptureError::NoCgroup2 {
                path: "/sys/fs/cgroup".to_owned(),
            })
        })
        .unwrap();
        assert!(
            choice
                .fallback
                .unwrap()
                .contains("no cgroup v2 at /sys/fs/cgroup")
        );
    }

    #[test]
    fn forced_pod_mode_fails_naming_what_is_missing() {
        let error = choose_mode::<()>(CaptureMode::Pod, || Err(missing_net_admin())).unwrap_err();
        assert!(matches!(
            error,
            Error::CaptureModeUnavailable { mode: "pod", .. }
        ));
        let message = error.to_string();
        assert!(
            message.starts_with("OTEL_EBPF_CAPTURE_MODE=pod is impossible here: CAP_NET_ADMIN"),
            "{message}"
        );
        assert!(matches!(
            choose_mode(CaptureMode::Pod, || Ok(())).unwrap().capture,
            Capture::Pod(())
        ));
    }

    #[test]
    fn tracepoint_modes_never_probe() {
        for (mode, hooks) in [
            (CaptureMode::Tracepoints, HookChoice::Best),
            (CaptureMode::SysExit, HookChoice::SyscallOnly),
        ] {
            let choice = choose_mode::<()>(mode, || panic!("probed for {mode:?}")).unwrap();
            assert!(matches!(choice.capture, Capture::Syscalls(h) if h == hooks));
            assert_eq!(choice.fallback, None);
        }
    }

    #[test]
    fn finds_the_cgroup2_mount_root() {
        let text = "\
22 1 0:21 / /sys rw,nosuid - sysfs sysfs rw\n\
30 22 0:26 / /sys/fs/cgroup rw - tmpfs tmpfs rw\n\
41 30 0:30 /../app /sys/fs/cgroup rw,relatime - cgroup2 cgroup2 rw\n\
42 30 0:30 /../../.. /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw\n";
        let at = |p: &str| cgroup2_mount_root(text, Path::new(p));
        assert_eq!(at("/sys/fs/cgroup"), Some("/../app"));
        assert_eq!(at("/sys/fs/cgroup/unified"), Some("/../../.."));
        assert_eq!(at("/sys"), None);
    }
}
