//! The sidecar's error type.

/// Everything that can go wrong in the sidecar library.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A ring buffer record that does not match the kernel/user ABI.
    #[error("malformed event from the kernel: {0}")]
    MalformedEvent(&'static str),
    /// Bytes that are not valid HTTP/1.x syntax.
    #[error("invalid HTTP/1.x syntax: {0}")]
    HttpSyntax(#[from] httparse::Error),
    /// An HTTP/1.x message whose body length cannot be determined.
    #[error("invalid HTTP/1.x framing: {0}")]
    HttpFraming(&'static str),
    /// A header block that is not valid HPACK (RFC 7541).
    #[error("invalid HPACK: {0}")]
    Hpack(&'static str),
    /// Loading the eBPF object failed: usually missing capabilities or kernel features.
    #[error("{}", describe_load_error(.source))]
    Load { source: aya::EbpfError },
    /// A program could not be loaded or attached.
    #[error("eBPF program {program}: {}", describe_program_error(.source))]
    Program {
        program: &'static str,
        source: aya::programs::ProgramError,
    },
    /// A map operation failed.
    #[error("eBPF map {what}: {source}")]
    Map {
        what: &'static str,
        source: aya::maps::MapError,
    },
    /// The embedded object lacks a program or map the loader expects (a build mismatch).
    #[error("TLS capture: {0}")]
    Tls(String),

    #[error("the embedded eBPF object has no {0}")]
    MissingObjectItem(&'static str),
    /// The ring buffer size is not a power-of-two multiple of the page size.
    #[error("ring buffer size {0} must be a power of two and at least 4096")]
    InvalidRingBufferSize(u32),
    /// A configuration variable has an invalid value; the message names the variable.
    #[error("invalid {var}: {message}")]
    Config { var: &'static str, message: String },
    /// An OTLP exporter could not be built from the configuration.
    #[error("building the OTLP {signal} exporter: {message}")]
    Exporter {
        signal: &'static str,
        message: String,
    },
    /// An I/O operation on /proc or similar failed.
    #[error("{context}: {source}")]
    Io {
        context: String,
        source: std::io::Error,
    },
    /// The capture mode forced by `OTEL_EBPF_CAPTURE_MODE` is impossible here: the binary exits
    /// with code 2, naming what is missing.
    #[error("OTEL_EBPF_CAPTURE_MODE={mode} is impossible here: {reason}")]
    CaptureModeUnavailable {
        mode: &'static str,
        reason: PodCaptureError,
    },
    /// The pod-scoped capture cannot load, or cannot attach to a container's cgroup.
    #[error("pod-scoped capture: {0}")]
    PodCapture(#[from] PodCaptureError),
}

/// Why the pod-scoped capture (programs on the app containers' cgroups) cannot run, or cannot
/// reach one container: each names what is missing.
#[derive(Debug, thiserror::Error)]
pub enum PodCaptureError {
    /// What should be a container's cgroup v2 directory is something else.
    #[error("no cgroup v2 at {path} (a node with cgroup v1 only?)")]
    NoCgroup2 { path: String },
    /// A container's cgroup directory cannot be opened.
    #[error(
        "cannot open {path}: {source} (reaching another container's cgroup through \
         /proc/<pid>/root needs CAP_SYS_PTRACE and CAP_DAC_READ_SEARCH)"
    )]
    Unreachable {
        path: String,
        source: std::io::Error,
    },
    /// The directory is the sidecar's cgroup-namespace root or an ancestor of it (a container
    /// sharing the node's cgroup namespace): attaching there would capture other containers.
    #[error("{path} is not a container cgroup of its own (its cgroup is {cgroup})")]
    NotAContainer { path: String, cgroup: String },
    /// The process is in the sidecar's own cgroup (its container, or, run outside containers,
    /// the same cgroup), which is never attached.
    #[error("it shares the sidecar's own cgroup, which is never attached")]
    OwnCgroup,
    /// The kernel refused a program for want of CAP_NET_ADMIN.
    #[error("CAP_NET_ADMIN is missing: {what} was refused ({source})")]
    NoNetAdmin {
        what: String,
        source: aya::programs::ProgramError,
    },
    /// EPERM on attach although CAP_NET_ADMIN is held: an ancestor cgroup holds a program of
    /// that type attached without `BPF_F_ALLOW_MULTI`.
    #[error(
        "attaching {program} to {path} was refused although CAP_NET_ADMIN is held: an ancestor \
         cgroup has a program of that type that forbids more"
    )]
    Exclusive { program: &'static str, path: String },
    /// Loading or attaching failed otherwise.
    #[error("eBPF program {program}: {}", describe_program_error(.source))]
    Program {
        program: &'static str,
        source: aya::programs::ProgramError,
    },
    /// Any other failure while setting up (object load, maps).
    #[error("{0}")]
    Setup(Box<Error>),
}

/// Hints for the errors users actually hit: missing capabilities, or a kernel too old.
const CAPABILITY_HINT: &str = "the sidecar needs CAP_BPF and CAP_PERFMON (and CAP_SYS_PTRACE, \
CAP_DAC_READ_SEARCH to read other processes' /proc entries)";
const KERNEL_HINT: &str = "the kernel needs BPF ring buffers, raw tracepoints and \
bpf_get_ns_current_pid_tgid (Linux 5.8 or later)";

fn errno_hint(text: &str) -> Option<&'static str> {
    if text.contains("Operation not permitted") || text.contains("Permission denied") {
        Some(CAPABILITY_HINT)
    } else if text.contains("Invalid argument") || text.contains("not supported") {
        Some(KERNEL_HINT)
    } else {
        None
    }
}

/// An error and its sources, `: `-separated (aya's errors keep the errno in a source).
pub(crate) fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

fn with_hint(prefix: &str, error: &dyn std::error::Error) -> String {
    let text = chain(error);
    match errno_hint(&text) {
        Some(hint) => format!("{prefix}{text} ({hint})"),
        None => format!("{prefix}{text}"),
    }
}

fn describe_load_error(error: &aya::EbpfError) -> String {
    with_hint("loading the eBPF object: ", error)
}

fn describe_program_error(error: &aya::programs::ProgramError) -> String {
    with_hint("", error)
}

/// Result with the sidecar's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
