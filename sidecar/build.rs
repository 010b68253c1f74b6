//! Compiles the eBPF programs of `sidecar-bpf` for the bpf target (nightly + bpf-linker) and leaves
//! the object in OUT_DIR, where `probes` embeds it.
fn main() -> aya_build::Result<()> {
    let metadata_dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../sidecar-bpf");
    let root_dir = metadata_dir.to_string_lossy();
    aya_build::build_ebpf(
        [aya_build::Package {
            name: "sidecar-bpf",
            root_dir: &root_dir,
            ..Default::default()
        }],
        aya_build::Toolchain::default(),
    )
}
