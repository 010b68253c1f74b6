//! Sets `bpf_target_arch` for host builds too, so the ABI's per-architecture syscall numbers and
//! register offsets are chosen by one cfg on both sides.
fn main() -> aya_build::Result<()> {
    aya_build::emit_bpf_target_arch_cfg()
}
