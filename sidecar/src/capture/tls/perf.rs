//! Perf-event uprobes: the TLS hooks on a kernel without `uprobe_multi` links (before 6.6), used
//! only when CAP_SYS_ADMIN happens to be in the sidecar's effective set.
//!
//! The webhook never grants CAP_SYS_ADMIN, and since the fix for CVE-2025-38466 the kernel asks
//! for it to open a uprobe perf event (CAP_PERFMON was enough before, which is not relied on).
//! Where it is granted anyway, this path serves nodes whose kernel predates `uprobe_multi`
//! links. It attaches the object's own `ssl_entry` and `ssl_return` programs, loaded by aya
//! with the other programs of the object (so they share its maps), as one uprobe per function
//! and process: `perf_event_open` of the uprobe PMU, filtered to the process, and a BPF link
//! carrying the function's `TLS_FN_*` cookie (Linux 5.15+), which the programs read with
//! `bpf_get_attach_cookie` as they do from a multi link. That is 12 perf events per library
//! and process (7 entries, 5 returns) where `uprobe_multi` takes 2 links.

use std::{num::NonZeroU32, path::Path};

use aya::{
    Ebpf,
    programs::{
        ProgramError, UProbe, UProbeError,
        uprobe::{UProbeAttachLocation, UProbeAttachPoint, UProbeLink, UProbeScope},
    },
};
use sidecar_bpf::names;

use super::targets::Functions;
use crate::{Result, capture::program, capture::program_error};

/// Bit of CAP_SYS_ADMIN in the capability sets (linux/capability.h).
const CAP_SYS_ADMIN: u32 = 21;
/// Where the kernel publishes the uprobe PMU's event type (CONFIG_UPROBE_EVENTS).
const UPROBE_PMU: &str = "/sys/bus/event_source/devices/uprobe/type";

/// Whether `CapEff` of a `/proc/<pid>/status` text holds capability `cap`; None when the line
/// is missing or malformed.
fn effective_has(status: &str, cap: u32) -> Option<bool> {
    let hex = status.lines().find_map(|l| l.strip_prefix("CapEff:"))?;
    let mask = u64::from_str_radix(hex.trim(), 16).ok()?;
    Some(mask & (1u64 << cap) != 0)
}

/// Whether perf-event uprobes may be used here. Err: why not, naming what is missing.
pub(super) fn support() -> std::result::Result<(), String> {
    let status = std::fs::read_to_string("/proc/self/status")
        .map_err(|e| format!("cannot read the sidecar's capabilities (/proc/self/status: {e})"))?;
    match effective_has(&status, CAP_SYS_ADMIN) {
        Some(true) => {}
        Some(false) => {
            return Err(
                "perf-event uprobes need CAP_SYS_ADMIN, which is not in the sidecar's effective \
                 set"
                .to_owned(),
            );
        }
        None => return Err("no CapEff line in /proc/self/status".to_owned()),
    }
    let features = aya::features();
    if !(features.bpf_perf_link() && features.bpf_cookie()) {
        return Err(
            "perf-event uprobes need BPF links with cookies on perf events (Linux 5.15+)"
                .to_owned(),
        );
    }
    if !Path::new(UPROBE_PMU).exists() {
        return Err(format!(
            "the kernel has no uprobe PMU ({UPROBE_PMU}: CONFIG_UPROBE_EVENTS)"
        ));
    }
    Ok(())
}

/// Loads the object's TLS programs for perf-event uprobes (aya loads them with no expected
/// attach type, which is what those need).
pub(super) fn load(ebpf: &mut Ebpf) -> Result<()> {
    for name in [names::SSL_ENTRY, names::SSL_RETURN] {
        program::<UProbe>(ebpf, name)?
            .load()
            .map_err(program_error(name))?;
    }
    Ok(())
}

/// One uprobe per entry and one per return of `functions` in file `path`, firing only in
/// process `pid` (sidecar namespace). On failure the probes made so far are dropped, which
/// detaches them.
pub(super) fn attach(
    ebpf: &mut Ebpf,
    functions: &Functions,
    path: &Path,
    pid: NonZeroU32,
) -> std::result::Result<Vec<UProbeLink>, ProgramError> {
    let scope = UProbeScope::OneProcess(pid);
    let mut links = Vec::new();
    let mut add = |name: &str, probes: &mut dyn Iterator<Item = (u64, u32)>| {
        // Loaded by `load`: a missing one is a program that is not loaded.
        let prog: &mut UProbe = ebpf
            .program_mut(name)
            .ok_or(ProgramError::NotLoaded)?
            .try_into()?;
        for (offset, function) in probes {
            let point = UProbeAttachPoint {
                location: UProbeAttachLocation::AbsoluteOffset(offset),
                cookie: Some(u64::from(function)),
            };
            let id = prog.attach(point, path, scope)?;
            links.push(prog.take_link(id)?);
        }
        Ok::<(), ProgramError>(())
    };
    add(names::SSL_ENTRY, &mut functions.entries.iter().copied())?;
    add(names::SSL_RETURN, &mut functions.returns())?;
    Ok(links)
}

/// Whether a failed attach means perf-event uprobes are refused here altogether (no point in
/// trying other libraries), rather than this library failing.
pub(super) fn refused(error: &ProgramError) -> bool {
    match error {
        ProgramError::SyscallError(e) => matches!(
            e.io_error.raw_os_error(),
            Some(libc::EACCES | libc::EPERM | libc::EOPNOTSUPP | libc::ENOSYS)
        ),
        // The PMU's sysfs files, or cookies, are missing.
        ProgramError::UProbeError(UProbeError::FileError { .. })
        | ProgramError::AttachCookieNotSupported => true,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_effective_set() {
        let status = "Name:\tobi-sidecar\nCapInh:\t0000000000000000\n\
                      CapPrm:\t000001ffffffffff\nCapEff:\t000000c000080004\n";
        assert_eq!(effective_has(status, CAP_SYS_ADMIN), Some(false));
        assert_eq!(effective_has(status, 39), Some(true));
        let root = "CapEff:\t000001ffffffffff\n";
        assert_eq!(effective_has(root, CAP_SYS_ADMIN), Some(true));
        assert_eq!(effective_has("CapPrm:\t000001ffffffffff\n", 21), None);
        assert_eq!(effective_has("CapEff:\tzz\n", 21), None);
    }

    #[test]
    fn refusals_are_told_from_one_librarys_failure() {
        let syscall = |call, errno| {
            ProgramError::SyscallError(aya::sys::SyscallError {
                call,
                io_error: std::io::Error::from_raw_os_error(errno),
            })
        };
        assert!(refused(&syscall("perf_event_open", libc::EACCES)));
        assert!(refused(&syscall("bpf_link_create", libc::EPERM)));
        assert!(refused(&ProgramError::AttachCookieNotSupported));
        // The process is gone, or the offset is not in the file: that library only.
        assert!(!refused(&syscall("perf_event_open", libc::ESRCH)));
        assert!(!refused(&syscall("perf_event_open", libc::EINVAL)));
    }
}
