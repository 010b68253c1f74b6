//! TLS plaintext capture: uprobes on the `SSL_*` functions of each selected process's
//! OpenSSL-compatible libraries, filtered to that process, each probe carrying its function as
//! cookie (`TLS_FN_*`). The kernel side is `sidecar-bpf/src/programs/tls.rs`.
//!
//! Two kinds of uprobe carry them, chosen once at start ([`choose`], `OTEL_EBPF_TLS_UPROBES`):
//! `uprobe_multi` links (Linux 6.6+), which need only CAP_BPF and CAP_PERFMON, one entry link
//! and one return link per library and process ([`bpf`]); else, where CAP_SYS_ADMIN happens to
//! be granted, perf-event uprobes, one per function and process ([`perf`]). Opening the library
//! through `/proc/<pid>/root` needs CAP_SYS_PTRACE (CAP_DAC_READ_SEARCH for files the sidecar's
//! user could not read). The sidecar's four capabilities cover the first kind.

use std::{
    collections::HashMap,
    num::NonZeroU32,
    os::fd::OwnedFd,
    time::{Duration, Instant},
};

use aya::{
    Ebpf,
    maps::{HashMap as AyaHashMap, MapData},
    programs::uprobe::UProbeLink,
};
use sidecar_bpf::names;

use crate::{Result, config::TlsUprobes};

mod bpf;
mod perf;
mod targets;

use targets::{FileId, FunctionCache, Target};

/// The kind of uprobe the TLS hooks are attached with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UprobeKind {
    /// `uprobe_multi` links: two per library and process.
    Multi,
    /// Perf-event uprobes: one per function and process.
    Perf,
}

impl std::fmt::Display for UprobeKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Multi => "uprobe_multi links",
            Self::Perf => "perf-event uprobes",
        })
    }
}

/// The outcome of [`choose`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UprobeChoice {
    pub kind: UprobeKind,
    /// Why `auto` did not take `uprobe_multi` links.
    pub fallback: Option<String>,
}

impl std::fmt::Display for UprobeChoice {
    /// The start-up log line.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TLS plaintext through {}", self.kind)?;
        match &self.fallback {
            Some(why) => write!(f, " ({why})"),
            None => Ok(()),
        }
    }
}

/// Resolves `OTEL_EBPF_TLS_UPROBES` against what the kernel and the sidecar's effective
/// capabilities allow (nothing is attached). Err: why TLS plaintext is not captured, naming the
/// cause, for the one log line that says so.
pub fn choose(requested: TlsUprobes) -> std::result::Result<UprobeChoice, String> {
    decide(requested, bpf::uprobe_multi_support, perf::support)
}

/// [`choose`] given the two checks (each: Err says what is missing).
fn decide(
    requested: TlsUprobes,
    multi: impl FnOnce() -> std::result::Result<(), String>,
    perf: impl FnOnce() -> std::result::Result<(), String>,
) -> std::result::Result<UprobeChoice, String> {
    let chosen = |kind, fallback| UprobeChoice { kind, fallback };
    let forced = requested.as_str();
    match requested {
        TlsUprobes::Multi => multi()
            .map(|()| chosen(UprobeKind::Multi, None))
            .map_err(|why| {
                format!("OTEL_EBPF_TLS_UPROBES={forced}: uprobe_multi links are unavailable: {why}")
            }),
        TlsUprobes::Perf => perf()
            .map(|()| chosen(UprobeKind::Perf, None))
            .map_err(|why| format!("OTEL_EBPF_TLS_UPROBES={forced}: {why}")),
        TlsUprobes::Auto => match multi() {
            Ok(()) => Ok(chosen(UprobeKind::Multi, None)),
            Err(multi_why) => match perf() {
                Ok(()) => Ok(chosen(
                    UprobeKind::Perf,
                    Some(format!("uprobe_multi links are unavailable: {multi_why}")),
                )),
                Err(perf_why) => Err(format!(
                    "uprobe_multi links are unavailable ({multi_why}), and {perf_why}"
                )),
            },
        },
    }
}

/// How often a selected process's mappings are looked at again for a library loaded since
/// (Python loads libssl with its `ssl` module, on import).
const RECHECK: Duration = Duration::from_millis(900);

/// The loaded TLS programs, by the kind of uprobe they are attached with.
enum Programs {
    /// Loaded by [`bpf`] for `uprobe_multi` links.
    Multi(bpf::Programs),
    /// The object's own, loaded by aya in the `Ebpf` [`TlsHooks::hook`] is given.
    Perf,
}

impl Programs {
    fn kind(&self) -> UprobeKind {
        match self {
            Self::Multi(_) => UprobeKind::Multi,
            Self::Perf => UprobeKind::Perf,
        }
    }
}

/// The probes on one library in one process; dropping them detaches them.
#[derive(Debug)]
enum Attached {
    /// The entry link and the return link.
    Multi([OwnedFd; 2]),
    /// One link (over its perf event) per probe.
    Perf(Vec<UProbeLink>),
}

impl Attached {
    /// BPF links held.
    fn links(&self) -> usize {
        match self {
            Self::Multi(links) => links.len(),
            Self::Perf(links) => links.len(),
        }
    }
}

/// Why one library could not be attached.
#[derive(Debug)]
struct AttachError {
    /// The kernel refuses this kind of uprobe altogether (no support, or not permitted), not
    /// just this library.
    refused: bool,
    message: String,
}

/// A process's hooks.
#[derive(Debug)]
struct Hooked {
    /// Files looked at (attached or not usable): each is attached once.
    files: Vec<FileId>,
    attached: Vec<Attached>,
    checked: Instant,
}

/// The TLS programs and the probes of every hooked process.
pub struct TlsHooks {
    programs: Programs,
    cache: FunctionCache,
    processes: HashMap<u32, Hooked>,
    /// The kernel refused the uprobes outright (no support, or not permitted): TLS capture is
    /// off from then on, said once.
    refused: bool,
}

impl std::fmt::Debug for TlsHooks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsHooks")
            .field("kind", &self.programs.kind())
            .field("processes", &self.processes.len())
            .finish_non_exhaustive()
    }
}

impl TlsHooks {
    /// Loads the TLS programs of `object` for `kind`, sharing the maps of `ebpf` (loaded from
    /// it): for `uprobe_multi` links a copy of them, for perf-event uprobes those of `ebpf`.
    pub fn load(object: &[u8], ebpf: &mut Ebpf, kind: UprobeKind) -> Result<Self> {
        let programs = match kind {
            UprobeKind::Multi => Programs::Multi(bpf::Programs::load(
                object,
                ebpf,
                names::SSL_ENTRY,
                names::SSL_RETURN,
            )?),
            UprobeKind::Perf => {
                perf::load(ebpf)?;
                Programs::Perf
            }
        };
        Ok(Self {
            programs,
            cache: FunctionCache::default(),
            processes: HashMap::new(),
            refused: false,
        })
    }

    /// Attaches to the TLS libraries process `pid` maps that are not attached yet: at once for a
    /// process not seen before, else at most every [`RECHECK`]. True when the process has hooks
    /// it did not have before this call. `ebpf` is the one given to [`TlsHooks::load`].
    fn refresh(&mut self, ebpf: &mut Ebpf, pid: u32) -> bool {
        // Pid 0 would be every process using the library.
        let Some(process) = NonZeroU32::new(pid) else {
            return false;
        };
        if self.refused {
            return false;
        }
        let now = Instant::now();
        let hooked = self.processes.entry(pid).or_insert_with(|| Hooked {
            files: Vec::new(),
            attached: Vec::new(),
            checked: now - RECHECK,
        });
        if now.duration_since(hooked.checked) < RECHECK {
            return false;
        }
        hooked.checked = now;
        let had = !hooked.attached.is_empty();
        for target in targets::candidates(pid) {
            if hooked.files.contains(&target.id) {
                continue;
            }
            hooked.files.push(target.id);
            match attach(&self.programs, ebpf, &mut self.cache, &target, process) {
                Ok(Some(attached)) => {
                    tracing::info!(
                        pid,
                        library = %target.path.display(),
                        links = attached.links(),
                        "TLS hooks attached"
                    );
                    hooked.attached.push(attached);
                }
                Ok(None) => {}
                Err(AttachError {
                    refused: true,
                    message,
                }) => {
                    tracing::info!(
                        "{} are refused ({message}): TLS plaintext is not captured",
                        self.programs.kind()
                    );
                    self.refused = true;
                    return false;
                }
                Err(AttachError { message, .. }) => {
                    tracing::warn!(pid, library = %target.path.display(), error = %message, "cannot attach TLS hooks");
                }
            }
        }
        !had && !hooked.attached.is_empty()
    }

    /// [`TlsHooks::refresh`], then marks a newly hooked process in the programs' process
    /// table with `flags` (which must include `PID_TLS`). True when it was newly hooked.
    pub fn hook(
        &mut self,
        ebpf: &mut Ebpf,
        pid: u32,
        pids: &mut AyaHashMap<MapData, u32, u32>,
        flags: u32,
    ) -> Result<bool> {
        if !self.refresh(ebpf, pid) {
            return Ok(false);
        }
        pids.insert(pid, flags, 0)
            .map_err(|source| crate::Error::Map {
                what: "PIDS insert",
                source,
            })?;
        Ok(true)
    }

    /// The process exited: its links go, which detaches its probes.
    pub fn forget(&mut self, pid: u32) {
        self.processes.remove(&pid);
    }

    /// Processes with TLS hooks.
    pub fn hooked(&self) -> usize {
        self.processes
            .values()
            .filter(|h| !h.attached.is_empty())
            .count()
    }
}

/// The probes of one library in one process; None when it has no TLS functions.
fn attach(
    programs: &Programs,
    ebpf: &mut Ebpf,
    cache: &mut FunctionCache,
    target: &Target,
    pid: NonZeroU32,
) -> std::result::Result<Option<Attached>, AttachError> {
    let Some(functions) = cache.get(target) else {
        return Ok(None);
    };
    let attached = match programs {
        Programs::Multi(programs) => attach_multi(programs, functions, target, pid.get())
            .map(Attached::Multi)
            .map_err(|e| AttachError {
                refused: matches!(
                    e.raw_os_error(),
                    Some(libc::EPERM | libc::EOPNOTSUPP | libc::ENOSYS)
                ),
                message: e.to_string(),
            })?,
        Programs::Perf => perf::attach(ebpf, functions, &target.path, pid)
            .map(Attached::Perf)
            .map_err(|e| AttachError {
                refused: perf::refused(&e),
                message: crate::error::chain(&e),
            })?,
    };
    Ok(Some(attached))
}

/// The entry and return `uprobe_multi` links of one library in one process.
fn attach_multi(
    programs: &bpf::Programs,
    functions: &targets::Functions,
    target: &Target,
    pid: u32,
) -> std::io::Result<[OwnedFd; 2]> {
    let (offsets, cookies): (Vec<u64>, Vec<u64>) = functions
        .entries
        .iter()
        .map(|&(offset, f)| (offset, u64::from(f)))
        .unzip();
    let entry =
        bpf::attach_uprobe_multi(&programs.entry, &target.path, &offsets, &cookies, pid, 0)?;
    let (offsets, cookies): (Vec<u64>, Vec<u64>) = functions
        .returns()
        .map(|(offset, f)| (offset, u64::from(f)))
        .unzip();
    let exit = bpf::attach_uprobe_multi(
        &programs.exit,
        &target.path,
        &offsets,
        &cookies,
        pid,
        bpf::UPROBE_MULTI_RETURN,
    )?;
    Ok([entry, exit])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn available() -> std::result::Result<(), String> {
        Ok(())
    }

    fn no_multi() -> std::result::Result<(), String> {
        Err("the kernel refuses them: Invalid argument (os error 22); they need Linux 6.6+".into())
    }

    fn no_sys_admin() -> std::result::Result<(), String> {
        Err(
            "perf-event uprobes need CAP_SYS_ADMIN, which is not in the sidecar's effective set"
                .into(),
        )
    }

    fn never() -> std::result::Result<(), String> {
        panic!("checked although not asked for")
    }

    #[test]
    fn auto_prefers_uprobe_multi_then_perf_then_says_why_neither() {
        let choice = decide(TlsUprobes::Auto, available, never).unwrap();
        assert_eq!(choice.kind, UprobeKind::Multi);
        assert_eq!(
            choice.to_string(),
            "TLS plaintext through uprobe_multi links"
        );

        let choice = decide(TlsUprobes::Auto, no_multi, available).unwrap();
        assert_eq!(choice.kind, UprobeKind::Perf);
        let line = choice.to_string();
        assert!(
            line.starts_with("TLS plaintext through perf-event uprobes (uprobe_multi links are unavailable: the kernel refuses them"),
            "{line}"
        );

        let why = decide(TlsUprobes::Auto, no_multi, no_sys_admin).unwrap_err();
        assert!(why.contains("Linux 6.6+"), "{why}");
        assert!(why.contains("CAP_SYS_ADMIN"), "{why}");
    }

    #[test]
    fn a_forced_kind_is_that_kind_or_nothing() {
        assert_eq!(
            decide(TlsUprobes::Multi, available, never).unwrap().kind,
            UprobeKind::Multi
        );
        let why = decide(TlsUprobes::Multi, no_multi, never).unwrap_err();
        assert!(
            why.starts_with("OTEL_EBPF_TLS_UPROBES=multi: uprobe_multi links are unavailable"),
            "{why}"
        );

        // Perf forced even where uprobe_multi links would do.
        assert_eq!(
            decide(TlsUprobes::Perf, never, available).unwrap(),
            UprobeChoice {
                kind: UprobeKind::Perf,
                fallback: None
            }
        );
        let why = decide(TlsUprobes::Perf, never, no_sys_admin).unwrap_err();
        assert!(
            why.starts_with("OTEL_EBPF_TLS_UPROBES=perf: perf-event uprobes need CAP_SYS_ADMIN"),
            "{why}"
        );
    }
}
