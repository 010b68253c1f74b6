//! Compiles the eBPF programs of `sidecar-bpf` for the bpf target (nightly + bpf-linker) and leaves
//! the object in OUT_DIR, where `probes` embeds it.
use std::path::Path;

fn main() -> aya_build::Result<()> {
    let bpf_crate = Path::new(env!("CARGO_MANIFEST_DIR")).join("../sidecar-bpf");
    // aya-build watches the crate directory, whose mtime does not change when a file in it is
    // edited: name every source file so an edited program is rebuilt.
    watch(&bpf_crate.join("src"))?;
    println!(
        "cargo:rerun-if-changed={}",
        bpf_crate.join("Cargo.toml").display()
    );
    let root_dir = bpf_crate.to_string_lossy();
    aya_build::build_ebpf(
        [aya_build::Package {
            name: "sidecar-bpf",
            root_dir: &root_dir,
            ..Default::default()
        }],
        aya_build::Toolchain::default(),
    )
}

fn watch(dir: &Path) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            watch(&path)?;
        } else {
            println!("cargo:rerun-if-changed={}", path.display());
        }
    }
    Ok(())
}
