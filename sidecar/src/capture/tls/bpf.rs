//! The two `bpf(2)` paths aya 0.14 does not wrap: loading a program with `expected_attach_type`
//! `BPF_TRACE_UPROBE_MULTI`, and creating `uprobe_multi` links; and, with both, the check
//! that the kernel has these links ([`uprobe_multi_support`]).
//!
//! aya loads `#[uprobe]` programs with no expected attach type (for perf-event uprobes, which
//! need CAP_SYS_ADMIN: [`super::perf`]), and the kernel creates `uprobe_multi` links only for programs loaded
//! with that type (which also picks the `bpf_get_attach_cookie` of multi links). So the two TLS
//! programs are loaded here from the same embedded object: aya-obj parses and links it, its
//! map references are relocated to the descriptors of the maps aya created for the main
//! object (the programs share every map, globals included), and its BTF is loaded for the
//! function info `bpf_loop` callbacks need. These need CAP_BPF and CAP_PERFMON only.

use std::{
    ffi::CString,
    io,
    os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd},
};

use aya::{Ebpf, maps::Map};
use aya_obj::{
    Object,
    generated::{bpf_attach_type, bpf_attr, bpf_cmd, bpf_insn, bpf_prog_type},
};

use crate::{Error, Result};

/// Flag of a `uprobe_multi` link whose probes fire at function return.
pub(super) const UPROBE_MULTI_RETURN: u32 = aya_obj::generated::BPF_F_UPROBE_MULTI_RETURN;

fn sys_bpf(cmd: bpf_cmd, attr: &mut bpf_attr) -> io::Result<OwnedFd> {
    // SAFETY: `attr` is a zero-initialised `bpf_attr` whose fields for `cmd` were filled by the
    // caller; every pointer in it refers to memory the caller keeps alive across the call.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd as libc::c_long,
            attr as *mut bpf_attr,
            size_of::<bpf_attr>(),
        )
    };
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: these commands return a new descriptor, owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(ret as RawFd) })
}

fn zeroed_attr() -> bpf_attr {
    // SAFETY: `bpf_attr` is a C union of plain integers: all zeroes is its documented default.
    unsafe { std::mem::zeroed() }
}

fn io_error(context: impl Into<String>) -> impl FnOnce(io::Error) -> Error {
    move |source| Error::Io {
        context: context.into(),
        source,
    }
}

/// The descriptor of a map aya created (the types the object uses).
fn map_fd(map: &Map) -> Option<RawFd> {
    let data = match map {
        Map::Array(data)
        | Map::HashMap(data)
        | Map::LruHashMap(data)
        | Map::PerCpuArray(data)
        | Map::RingBuf(data) => data,
        _ => return None,
    };
    Some(data.fd().as_fd().as_raw_fd())
}

/// The loaded TLS programs.
pub(super) struct Programs {
    pub entry: OwnedFd,
    pub exit: OwnedFd,
    // Kept open while the programs live: their function info refers to it.
    _btf: Option<OwnedFd>,
}

impl Programs {
    /// Loads programs `entry` and `exit` of `object` for `uprobe_multi` links, sharing the maps
    /// of `ebpf` (loaded from the same object).
    pub fn load(object: &[u8], ebpf: &Ebpf, entry: &str, exit: &str) -> Result<Self> {
        let mut obj = Object::parse(object).map_err(|e| Error::Tls(format!("parsing: {e}")))?;
        let features = aya::features();
        let btf = match features.btf() {
            Some(btf_features) => match obj.fixup_and_sanitize_btf(btf_features) {
                Ok(Some(btf)) => Some(load_btf(&btf.to_bytes())?),
                Ok(None) => None,
                Err(e) => return Err(Error::Tls(format!("object BTF: {e}"))),
            },
            None => None,
        };
        // Relocation borrows the object mutably: the definitions it matches maps by are a copy.
        let defs = obj.maps.clone();
        let mut maps = Vec::new();
        for (name, map) in ebpf.maps() {
            let fd = map_fd(map).ok_or_else(|| Error::Tls(format!("map {name}: unknown type")))?;
            if let Some(def) = defs.get(name) {
                maps.push((name, fd, def));
            }
        }
        let text_sections = obj.functions.keys().map(|(section, _)| *section).collect();
        obj.relocate_maps(maps.into_iter(), &text_sections)
            .map_err(|e| Error::Tls(format!("relocating maps: {e}")))?;
        obj.relocate_calls(&text_sections)
            .map_err(|e| Error::Tls(format!("relocating calls: {e}")))?;
        obj.sanitize_functions(features);
        let load = |name: &str| -> Result<OwnedFd> {
            let program = obj
                .programs
                .get(name)
                .ok_or_else(|| Error::Tls(format!("no program {name} in the object")))?;
            let function = obj
                .functions
                .get(&program.function_key())
                .ok_or_else(|| Error::Tls(format!("no function for program {name}")))?;
            load_program(
                name,
                &function.instructions,
                &obj.license,
                btf.as_ref().map(|fd| {
                    (
                        fd,
                        function.func_info.func_info_bytes(),
                        function.func_info.num_info,
                        function.func_info_rec_size,
                        function.line_info.line_info_bytes(),
                        function.line_info.num_info,
                        function.line_info_rec_size,
                    )
                }),
            )
        };
        let entry = load(entry)?;
        let exit = load(exit)?;
        Ok(Self {
            entry,
            exit,
            _btf: btf,
        })
    }
}

fn load_btf(bytes: &[u8]) -> Result<OwnedFd> {
    let mut attr = zeroed_attr();
    // SAFETY: writing the BTF_LOAD member of the zeroed union.
    let btf = unsafe { &mut attr.__bindgen_anon_7 };
    btf.btf = bytes.as_ptr() as u64;
    btf.btf_size = bytes.len() as u32;
    sys_bpf(bpf_cmd::BPF_BTF_LOAD, &mut attr).map_err(io_error("loading the object's BTF"))
}

/// BTF descriptor, function info (bytes, count, record size), line info (same).
type FunctionBtf<'a> = (&'a OwnedFd, Vec<u8>, u32, usize, Vec<u8>, u32, usize);

fn load_program(
    name: &str,
    insns: &[bpf_insn],
    license: &CString,
    btf: Option<FunctionBtf<'_>>,
) -> Result<OwnedFd> {
    let mut log = vec![0u8; 1 << 20];
    match prog_load(name, insns, license, btf.as_ref(), None) {
        Ok(fd) => Ok(fd),
        Err(first) => {
            // Again with the verifier's log, to say why.
            let _ = prog_load(name, insns, license, btf.as_ref(), Some(&mut log));
            let end = log.iter().position(|&b| b == 0).unwrap_or(log.len());
            let text = String::from_utf8_lossy(&log[..end]);
            let tail: Vec<&str> = text.lines().rev().take(20).collect();
            Err(Error::Tls(format!(
                "loading {name}: {first}; verifier: {}",
                tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
            )))
        }
    }
}

/// `BPF_PROG_LOAD` of a kprobe-type program for `uprobe_multi` links, with the verifier's log
/// in `log` when given.
fn prog_load(
    name: &str,
    insns: &[bpf_insn],
    license: &CString,
    btf: Option<&FunctionBtf<'_>>,
    log: Option<&mut [u8]>,
) -> io::Result<OwnedFd> {
    let mut attr = zeroed_attr();
    // SAFETY: writing the PROG_LOAD member of the zeroed union.
    let load = unsafe { &mut attr.__bindgen_anon_3 };
    load.prog_type = bpf_prog_type::BPF_PROG_TYPE_KPROBE as u32;
    load.expected_attach_type = bpf_attach_type::BPF_TRACE_UPROBE_MULTI as u32;
    load.insns = insns.as_ptr() as u64;
    load.insn_cnt = insns.len() as u32;
    load.license = license.as_ptr() as u64;
    for (slot, byte) in load.prog_name.iter_mut().zip(name.bytes().take(15)) {
        *slot = byte as libc::c_char;
    }
    if let Some((fd, func_info, func_count, func_size, line_info, line_count, line_size)) = btf {
        load.prog_btf_fd = fd.as_raw_fd() as u32;
        load.func_info = func_info.as_ptr() as u64;
        load.func_info_cnt = *func_count;
        load.func_info_rec_size = *func_size as u32;
        load.line_info = line_info.as_ptr() as u64;
        load.line_info_cnt = *line_count;
        load.line_info_rec_size = *line_size as u32;
    }
    if let Some(log) = log {
        load.log_level = 1;
        load.log_buf = log.as_mut_ptr() as u64;
        load.log_size = log.len() as u32;
    }
    sys_bpf(bpf_cmd::BPF_PROG_LOAD, &mut attr)
}

/// An instruction with no register, offset or immediate operand.
fn plain_insn(code: u32) -> bpf_insn {
    // SAFETY: `bpf_insn` is plain integers (with a bitfield): all zeroes is r0, offset 0, imm 0.
    let mut insn: bpf_insn = unsafe { std::mem::zeroed() };
    insn.code = code as u8;
    insn
}

/// Whether this kernel makes `uprobe_multi` links for this process, as libbpf finds out: a
/// two-instruction program loaded for them (which kernels before 6.6 may refuse), then a link
/// on `/`, which a kernel with the links refuses with EBADF (not a regular file) after checking
/// the program and the arguments, and an older one with EINVAL (an attach type it does not
/// know). No probe is placed either way. Err: why not.
pub(super) fn uprobe_multi_support() -> std::result::Result<(), String> {
    use aya_obj::generated::{BPF_ALU64, BPF_EXIT, BPF_JMP, BPF_K, BPF_MOV};
    // r0 = 0; exit
    let insns = [
        plain_insn(BPF_ALU64 | BPF_MOV | BPF_K),
        plain_insn(BPF_JMP | BPF_EXIT),
    ];
    let license = c"GPL".to_owned();
    let program = prog_load("obi_multi_probe", &insns, &license, None, None)
        .map_err(|e| format!("a program for them does not load: {e}"))?;
    match attach_uprobe_multi(&program, std::path::Path::new("/"), &[0], &[0], 0, 0) {
        // Linked anyway (a kernel that accepts directories?): links work; the probe goes with
        // the descriptor.
        Ok(_) => Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::EBADF) => Ok(()),
        Err(e) => Err(format!(
            "the kernel refuses them: {e}; they need Linux 6.6+"
        )),
    }
}

/// Creates a `uprobe_multi` link of `program` on the functions at file `offsets` of `path`,
/// each with its cookie, firing only in process `pid` (sidecar namespace); `flags` is 0 or
/// [`UPROBE_MULTI_RETURN`]. The probes live as long as the returned descriptor.
pub(super) fn attach_uprobe_multi(
    program: &OwnedFd,
    path: &std::path::Path,
    offsets: &[u64],
    cookies: &[u64],
    pid: u32,
    flags: u32,
) -> io::Result<OwnedFd> {
    use std::os::unix::ffi::OsStrExt;
    let path = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    let mut attr = zeroed_attr();
    // SAFETY: writing the LINK_CREATE member of the zeroed union.
    let link = unsafe { &mut attr.link_create };
    link.__bindgen_anon_1.prog_fd = program.as_raw_fd() as u32;
    link.attach_type = bpf_attach_type::BPF_TRACE_UPROBE_MULTI as u32;
    // SAFETY: writing the uprobe_multi member of the zeroed union.
    let multi = unsafe { &mut link.__bindgen_anon_3.uprobe_multi };
    multi.path = path.as_ptr() as u64;
    multi.offsets = offsets.as_ptr() as u64;
    multi.cookies = cookies.as_ptr() as u64;
    multi.cnt = offsets.len() as u32;
    multi.flags = flags;
    multi.pid = pid;
    sys_bpf(bpf_cmd::BPF_LINK_CREATE, &mut attr)
}
