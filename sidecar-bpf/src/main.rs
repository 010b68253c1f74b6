//! eBPF program of the OBI sidecar on syscall exit, in two forms: a BTF tracepoint and a raw
//! tracepoint for kernels without BTF.
//!
//! Tracepoints need neither kprobes nor a tracefs mount, so they work on kernels without
//! kprobes and in pods without hostPath volumes. Everything is filtered here, before any copy:
//! the syscall number, the sidecar's PID namespace, the selected processes and the tracked
//! sockets. Other pods' traffic never leaves the kernel.
#![cfg_attr(target_arch = "bpf", no_std, no_main)]

#[cfg(target_arch = "bpf")]
mod programs;

/// Built for the host this binary has nothing to do: the object is built for `bpfel-unknown-none`
/// by the sidecar's build script and embedded there.
#[cfg(not(target_arch = "bpf"))]
fn main() {
    eprintln!(
        "sidecar-bpf is an eBPF object; it is built for the bpf target and embedded in obi-sidecar"
    );
    std::process::exit(2);
}
