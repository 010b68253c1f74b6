//! TLS plaintext capture: uprobes on the `SSL_*` functions of each selected process's
//! OpenSSL-compatible libraries, attached with `uprobe_multi` links filtered to that process.
//!
//! Perf-event uprobes need CAP_SYS_ADMIN; `uprobe_multi` links (Linux 6.6+) need only CAP_BPF
//! and CAP_PERFMON, and opening the library through `/proc/<pid>/root` needs CAP_SYS_PTRACE
//! (CAP_DAC_READ_SEARCH for files the sidecar's user could not read): the four the sidecar has.
//! One entry link and one return link per library and process, each probe carrying its
//! function as cookie (`TLS_FN_*`). The kernel side is `sidecar-bpf/src/programs/tls.rs`.

use std::{
    collections::HashMap,
    os::fd::OwnedFd,
    time::{Duration, Instant},
};

use aya::{
    Ebpf,
    maps::{HashMap as AyaHashMap, MapData},
};
use sidecar_bpf::names;

use crate::Result;

mod bpf;
mod targets;

use targets::{FileId, FunctionCache, Target};

/// How often a selected process's mappings are looked at again for a library loaded since
/// (Python loads libssl with its `ssl` module, on import).
const RECHECK: Duration = Duration::from_millis(900);

/// A process's hooks.
#[derive(Debug)]
struct Hooked {
    /// Files looked at (attached or not usable): each is attached once.
    files: Vec<FileId>,
    /// The links; dropping them detaches the probes.
    links: Vec<OwnedFd>,
    checked: Instant,
}

/// The TLS programs and the links of every hooked process.
pub struct TlsHooks {
    programs: bpf::Programs,
    cache: FunctionCache,
    processes: HashMap<u32, Hooked>,
    /// The kernel refused `uprobe_multi` links outright (no support, or not permitted): TLS
    /// capture is off from then on, said once.
    refused: bool,
}

impl std::fmt::Debug for TlsHooks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsHooks")
            .field("processes", &self.processes.len())
            .finish_non_exhaustive()
    }
}

impl TlsHooks {
    /// Loads the TLS programs of `object`, sharing the maps of `ebpf` (loaded from it).
    pub fn load(object: &[u8], ebpf: &Ebpf) -> Result<Self> {
        Ok(Self {
            programs: bpf::Programs::load(object, ebpf, names::SSL_ENTRY, names::SSL_RETURN)?,
            cache: FunctionCache::default(),
            processes: HashMap::new(),
            refused: false,
        })
    }

    /// Attaches to the TLS libraries process `pid` maps that are not attached yet: at once for a
    /// process not seen before, else at most every [`RECHECK`]. True when the process has hooks
    /// it did not have before this call.
    fn refresh(&mut self, pid: u32) -> bool {
        if self.refused {
            return false;
        }
        let now = Instant::now();
        let hooked = self.processes.entry(pid).or_insert_with(|| Hooked {
            files: Vec::new(),
            links: Vec::new(),
            checked: now - RECHECK,
        });
        if now.duration_since(hooked.checked) < RECHECK {
            return false;
        }
        hooked.checked = now;
        let had = !hooked.links.is_empty();
        for target in targets::candidates(pid) {
            if hooked.files.contains(&target.id) {
                continue;
            }
            hooked.files.push(target.id);
            match attach(&self.programs, &mut self.cache, &target, pid) {
                Ok(Some(links)) => {
                    tracing::info!(pid, library = %target.path.display(), "TLS hooks attached");
                    hooked.links.extend(links);
                }
                Ok(None) => {}
                Err(error)
                    if matches!(
                        error.raw_os_error(),
                        Some(libc::EPERM | libc::EOPNOTSUPP | libc::ENOSYS)
                    ) =>
                {
                    tracing::info!(%error, "uprobe_multi links are refused: TLS plaintext is not captured");
                    self.refused = true;
                    return false;
                }
                Err(error) => {
                    tracing::warn!(pid, library = %target.path.display(), %error, "cannot attach TLS hooks");
                }
            }
        }
        !had && !hooked.links.is_empty()
    }

    /// [`TlsHooks::refresh`], then marks a newly hooked process in the programs' process
    /// table with `flags` (which must include `PID_TLS`). True when it was newly hooked.
    pub fn hook(
        &mut self,
        pid: u32,
        pids: &mut AyaHashMap<MapData, u32, u32>,
        flags: u32,
    ) -> Result<bool> {
        if !self.refresh(pid) {
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
            .filter(|h| !h.links.is_empty())
            .count()
    }
}

/// The entry and return links of one library in one process; None when it has no TLS
/// functions.
fn attach(
    programs: &bpf::Programs,
    cache: &mut FunctionCache,
    target: &Target,
    pid: u32,
) -> std::io::Result<Option<[OwnedFd; 2]>> {
    let Some(functions) = cache.get(target) else {
        return Ok(None);
    };
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
    Ok(Some([entry, exit]))
}
