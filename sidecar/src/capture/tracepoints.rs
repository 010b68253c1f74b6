//! The tracepoint capture mode: programs on the kernel's socket tracepoints (Linux 6.3+ with
//! BTF), else on `sys_exit` (BTF form, else raw). They run for the socket I/O of every task of the
//! node and turn away all but the selected processes in the kernel.

use aya::{
    Btf, Ebpf,
    programs::{BtfTracePoint, RawTracePoint},
};
use sidecar_bpf::names;

use super::{program, program_error};
use crate::Result;

/// Hooks the loader may use, best first; each falls back to the next when the kernel lacks it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum HookChoice {
    /// Socket tracepoints, else `sys_exit` as a BTF tracepoint, else as a raw tracepoint.
    #[default]
    Best,
    /// Only `sys_exit` (BTF form when possible), as on kernels before 6.3.
    SyscallOnly,
    /// Only the raw `sys_exit` tracepoint, as on kernels without BTF.
    RawOnly,
}

/// The hooks that were attached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hook {
    SocketTracepoints,
    BtfTracepoint,
    RawTracepoint,
}

impl std::fmt::Display for Hook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Hook::SocketTracepoints => {
                "BTF tracepoints sock_recv_length, sock_send_length, inet_sock_set_state"
            }
            Hook::BtfTracepoint => "BTF tracepoint sys_exit",
            Hook::RawTracepoint => "raw tracepoint sys_exit",
        })
    }
}

/// (program, tracepoint) of each hook set attached as BTF tracepoints.
const SOCKET_PROGRAMS: [(&str, &str); 3] = [
    (names::SOCK_RECV, "sock_recv_length"),
    (names::SOCK_SEND, "sock_send_length"),
    (names::SOCK_STATE, "inet_sock_set_state"),
];
const SYS_EXIT_PROGRAMS: [(&str, &str); 1] = [(names::SYS_EXIT_BTF, "sys_exit")];

/// Attaches a set of BTF tracepoint programs (their loads are checked by the verifier against
/// the kernel's types), all or none.
fn attach_btf(ebpf: &mut Ebpf, btf: &Btf, programs: &[(&'static str, &'static str)]) -> Result<()> {
    let result = programs.iter().try_for_each(|&(name, tracepoint)| {
        let prog: &mut BtfTracePoint = program(ebpf, name)?;
        prog.load(tracepoint, btf).map_err(program_error(name))?;
        prog.attach().map_err(program_error(name)).map(drop)
    });
    if result.is_err() {
        // A half-attached set next to the fallback would capture some traffic twice.
        for &(name, _) in programs {
            if let Ok(prog) = program::<BtfTracePoint>(ebpf, name) {
                let _ = prog.unload();
            }
        }
    }
    result
}

/// The best hooks `choice` allows that the kernel accepts.
pub(super) fn attach_best(ebpf: &mut Ebpf, btf: Option<&Btf>, choice: HookChoice) -> Result<Hook> {
    if let Some(btf) = btf {
        if choice == HookChoice::Best {
            match attach_btf(ebpf, btf, &SOCKET_PROGRAMS) {
                Ok(()) => return Ok(Hook::SocketTracepoints),
                Err(e) => tracing::info!("socket tracepoints refused ({e}); hooking sys_exit"),
            }
        }
        match attach_btf(ebpf, btf, &SYS_EXIT_PROGRAMS) {
            Ok(()) => return Ok(Hook::BtfTracepoint),
            Err(e) => tracing::info!("BTF tracepoint refused ({e}); using the raw tracepoint"),
        }
    }
    attach_raw(ebpf)?;
    Ok(Hook::RawTracepoint)
}

/// The `sys_exit` program as a plain raw tracepoint, for kernels without BTF.
fn attach_raw(ebpf: &mut Ebpf) -> Result<()> {
    let error = program_error(names::SYS_EXIT);
    let prog: &mut RawTracePoint = program(ebpf, names::SYS_EXIT)?;
    prog.load().map_err(&error)?;
    prog.attach("sys_exit").map_err(error)?;
    Ok(())
}
