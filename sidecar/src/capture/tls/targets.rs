//! Where a process's TLS functions are: the OpenSSL-compatible libraries it maps (libssl.so.1.1,
//! libssl.so.3, BoringSSL builds that export the API) and executables with one linked in that
//! export its symbols (Node.js), each as a file reachable through `/proc/<pid>/root` and the
//! file offsets of its `SSL_*` functions.

use std::{
    collections::HashMap,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
};

use object::{Object, ObjectSegment, ObjectSymbol};
use sidecar_bpf::{
    TLS_FN_FREE, TLS_FN_HANDSHAKE, TLS_FN_READ, TLS_FN_READ_EX, TLS_FN_SHUTDOWN, TLS_FN_WRITE,
    TLS_FN_WRITE_EX,
};

/// The hooked functions and the cookie each probe carries.
const FUNCTIONS: [(&str, u32); 7] = [
    ("SSL_read", TLS_FN_READ),
    ("SSL_read_ex", TLS_FN_READ_EX),
    ("SSL_write", TLS_FN_WRITE),
    ("SSL_write_ex", TLS_FN_WRITE_EX),
    ("SSL_do_handshake", TLS_FN_HANDSHAKE),
    ("SSL_shutdown", TLS_FN_SHUTDOWN),
    ("SSL_free", TLS_FN_FREE),
];

/// A file's identity, to attach each library once per process and read each file once.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FileId {
    pub dev: u64,
    pub ino: u64,
}

/// The functions found in one file: `(file offset, TLS_FN_*)`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Functions {
    pub entries: Vec<(u64, u32)>,
}

impl Functions {
    /// The functions whose returns are probed too (the data calls and the handshake).
    pub fn returns(&self) -> impl Iterator<Item = (u64, u32)> + '_ {
        self.entries
            .iter()
            .copied()
            .filter(|(_, f)| *f != TLS_FN_SHUTDOWN && *f != TLS_FN_FREE)
    }

    /// Whether both a read and a write function are there: less is not a TLS library.
    fn usable(&self) -> bool {
        let has = |a: u32, b: u32| self.entries.iter().any(|(_, f)| *f == a || *f == b);
        has(TLS_FN_READ, TLS_FN_READ_EX) && has(TLS_FN_WRITE, TLS_FN_WRITE_EX)
    }
}

/// A file of a process to attach to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    pub id: FileId,
    /// `/proc/<pid>/root/<path as the process maps it>`.
    pub path: PathBuf,
}

/// Whether a mapped file may hold an OpenSSL-compatible library: its name says so, or it is
/// the process's executable (a static link). Other libraries are not read at all.
fn candidate(path: &str, exe: Option<&str>) -> bool {
    let name = path.rsplit('/').next().unwrap_or(path);
    name.contains("ssl") || name.contains("crypto") && name.contains("boring") || exe == Some(path)
}

/// The executable file mappings of process `pid` that may hold TLS functions, each once.
pub fn candidates(pid: u32) -> Vec<Target> {
    let proc = PathBuf::from(format!("/proc/{pid}"));
    let Ok(maps) = std::fs::read_to_string(proc.join("maps")) else {
        return Vec::new();
    };
    let exe = std::fs::read_link(proc.join("exe"))
        .ok()
        .map(|p| p.to_string_lossy().into_owned());
    let mut seen = Vec::new();
    let mut out = Vec::new();
    for line in maps.lines() {
        // address perms offset dev inode path
        let mut fields = line.split_whitespace();
        let (Some(_), Some(perms), Some(_), Some(_), Some(inode), Some(path)) = (
            fields.next(),
            fields.next(),
            fields.next(),
            fields.next(),
            fields.next(),
            fields.next(),
        ) else {
            continue;
        };
        if !perms.contains('x') || inode == "0" || !path.starts_with('/') {
            continue;
        }
        // A file deleted since it was mapped has no path to attach by.
        if fields.next().is_some() || !candidate(path, exe.as_deref()) {
            continue;
        }
        let full = proc.join("root").join(path.trim_start_matches('/'));
        let Ok(meta) = std::fs::metadata(&full) else {
            continue;
        };
        let id = FileId {
            dev: meta.dev(),
            ino: meta.ino(),
        };
        if !seen.contains(&id) {
            seen.push(id);
            out.push(Target { id, path: full });
        }
    }
    out
}

/// The file offsets of the `SSL_*` functions `path` defines and exports (or keeps in its symbol
/// table); None when it has no usable set.
pub fn functions(path: &Path) -> Option<Functions> {
    // Read on demand: only the headers and symbol tables are touched, not the whole file (a
    // node binary is about 100 MB).
    let data = object::ReadCache::new(std::fs::File::open(path).ok()?);
    let file = object::File::parse(&data).ok()?;
    let mut found = Functions::default();
    add_symbols(&file, file.dynamic_symbols(), &mut found);
    // The static symbol table only when the exports do not have them: it is large where it
    // exists (node's holds every symbol of the binary), and the cache would keep it.
    if !found.usable() {
        add_symbols(&file, file.symbols(), &mut found);
    }
    found.usable().then_some(found)
}

fn add_symbols<'a, R: object::ReadRef<'a> + 'a>(
    file: &object::File<'a, R>,
    symbols: impl Iterator<Item = object::Symbol<'a, 'a, R>>,
    found: &mut Functions,
) {
    for symbol in symbols {
        if !symbol.is_definition() || symbol.address() == 0 {
            continue;
        }
        let Ok(name) = symbol.name() else {
            continue;
        };
        let Some(&(_, function)) = FUNCTIONS.iter().find(|(n, _)| *n == name) else {
            continue;
        };
        if found.entries.iter().any(|(_, f)| *f == function) {
            continue;
        }
        if let Some(offset) = file_offset(file, symbol.address()) {
            found.entries.push((offset, function));
        }
    }
}

/// The file offset of virtual address `address`: uprobes are placed by offset.
fn file_offset<'a, R: object::ReadRef<'a>>(
    file: &object::File<'a, R>,
    address: u64,
) -> Option<u64> {
    file.segments().find_map(|segment| {
        let (offset, size) = segment.file_range();
        let start = segment.address();
        (address >= start && address < start + size).then(|| offset + (address - start))
    })
}

/// What each file read so far holds, so a library shared by many processes is read once.
#[derive(Debug, Default)]
pub struct FunctionCache {
    files: HashMap<FileId, Option<Functions>>,
}

impl FunctionCache {
    pub fn get(&mut self, target: &Target) -> Option<&Functions> {
        self.files
            .entry(target.id)
            .or_insert_with(|| functions(&target.path))
            .as_ref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn candidates_are_ssl_libraries_and_the_executable() {
        assert!(candidate("/usr/lib/x86_64-linux-gnu/libssl.so.3", None));
        assert!(candidate("/usr/bin/node", Some("/usr/bin/node")));
        assert!(!candidate(
            "/usr/lib/x86_64-linux-gnu/libc.so.6",
            Some("/usr/bin/node")
        ));
    }

    #[test]
    fn finds_the_functions_of_the_system_libssl() {
        // The machine's own libssl (the tests' peers use it): every function is exported.
        let Some(path) = ["/usr/lib/x86_64-linux-gnu/libssl.so.3", "/lib/libssl.so.3"]
            .into_iter()
            .map(Path::new)
            .find(|p| p.exists())
        else {
            return;
        };
        let found = functions(path).expect("libssl exports SSL_read and SSL_write");
        assert_eq!(found.entries.len(), FUNCTIONS.len(), "{found:?}");
        assert_eq!(found.returns().count(), 5);
        let libc = Path::new("/usr/lib/x86_64-linux-gnu/libc.so.6");
        if libc.exists() {
            assert_eq!(functions(libc), None);
        }
    }
}
