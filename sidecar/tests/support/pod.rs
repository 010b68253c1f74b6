//! A stand-in for a Kubernetes pod with `shareProcessNamespace: true`: a fresh PID namespace
//! (with its own /proc) whose init is a sleeping process, and helpers to start the sidecar and
//! real servers and clients inside it, as containers would be.

#![allow(
    dead_code,
    reason = "each test binary uses a different part of the harness"
)]
#![allow(
    clippy::expect_used,
    clippy::panic,
    reason = "a test harness: failing loudly with context is its job"
)]

use std::{
    fs::File,
    io::{BufRead, BufReader},
    net::TcpListener,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

pub fn require_root() {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "these tests load eBPF programs and create PID namespaces: run them as root"
    );
}

/// The sidecar binary under test: `OBI_SIDECAR_BIN` (the Makefile points it at the release
/// build, the one that ships) or the test profile's build.
pub fn sidecar_bin() -> String {
    std::env::var("OBI_SIDECAR_BIN")
        .unwrap_or_else(|_| env!("CARGO_BIN_EXE_obi-sidecar").to_string())
}

/// `N` distinct free TCP ports on loopback. All are held at once while choosing: ports picked
/// one after another can come back equal, since a released port may be handed out again.
pub fn free_ports<const N: usize>() -> [u16; N] {
    let listeners: [TcpListener; N] =
        std::array::from_fn(|_| TcpListener::bind("127.0.0.1:0").expect("a free loopback port"));
    listeners.map(|l| l.local_addr().expect("a bound address").port())
}

pub fn free_port() -> u16 {
    let [port] = free_ports();
    port
}

pub fn wait_for_port(port: u16, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "nothing listens on {port}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub struct Pod {
    init: Child,
    /// The init process's pid as seen from the test's namespace.
    init_pid: u32,
    pub dir: tempfile::TempDir,
    children: Vec<Child>,
}

impl Pod {
    pub fn new() -> Self {
        require_root();
        let init = Command::new("unshare")
            .args(["--pid", "--fork", "--mount-proc", "sleep", "3600"])
            .spawn()
            .expect("unshare (util-linux)");
        let deadline = Instant::now() + Duration::from_secs(5);
        let init_pid = loop {
            if let Some(pid) = child_of(init.id()) {
                break pid;
            }
            assert!(Instant::now() < deadline, "the pod's init never started");
            std::thread::sleep(Duration::from_millis(10));
        };
        Self {
            init,
            init_pid,
            dir: tempfile::tempdir().expect("temp dir"),
            children: Vec::new(),
        }
    }

    /// Starts a program inside the pod; its output goes to `<dir>/<name>.out|.err`.
    pub fn spawn(&mut self, name: &str, argv: &[&str], env: &[(&str, &str)]) -> u32 {
        let out = File::create(self.path(&format!("{name}.out"))).expect("log file");
        let err = File::create(self.path(&format!("{name}.err"))).expect("log file");
        let child = Command::new("nsenter")
            .arg(format!("--target={}", self.init_pid))
            .args(["--pid", "--mount", "--"])
            .args(argv)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .expect("nsenter (util-linux)");
        let id = child.id();
        self.children.push(child);
        id
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.path(name)).unwrap_or_default()
    }

    /// Waits until a line containing `needle` shows up in a log file of the pod.
    pub fn wait_for_log(&self, name: &str, needle: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(file) = File::open(self.path(name))
                && BufReader::new(file)
                    .lines()
                    .any(|l| l.is_ok_and(|l| l.contains(needle)))
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{name} never logged {needle:?}; it logged:\n{}",
                self.log(name)
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Starts the sidecar with `env` and waits until it captures.
    pub fn start_sidecar(&mut self, env: &[(&str, &str)]) {
        self.spawn("sidecar", &[&sidecar_bin()], env);
        self.wait_for_log("sidecar.err", "capturing", Duration::from_secs(20));
    }

    /// Starts `tests/servers/app.py` on `port`.
    pub fn start_app(&mut self, name: &str, port: u16) {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/servers/app.py");
        let port_arg = port.to_string();
        self.spawn(
            name,
            &["python3", &script.to_string_lossy(), &port_arg],
            &[],
        );
        wait_for_port(port, Duration::from_secs(10));
    }

    /// Starts nginx on `port` with `tests/servers/nginx.conf.in`.
    pub fn start_nginx(&mut self, name: &str, port: u16) {
        let conf = nginx_conf(&self.path(name), port);
        let conf_arg = conf.to_string_lossy().into_owned();
        self.spawn(name, &["nginx", "-c", &conf_arg], &[]);
        wait_for_port(port, Duration::from_secs(10));
    }
}

/// The first child of a process (the program `nsenter` or `unshare --fork` started).
pub fn child_of(pid: u32) -> Option<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Writes an nginx configuration for `port` under `dir` and returns its path.
pub fn nginx_conf(dir: &Path, port: u16) -> PathBuf {
    std::fs::create_dir_all(dir).expect("nginx dir");
    let template = include_str!("../servers/nginx.conf.in");
    let conf = template
        .replace("PORT", &port.to_string())
        .replace("DIR", &dir.to_string_lossy());
    let path = dir.join("nginx.conf");
    std::fs::write(&path, conf).expect("nginx.conf");
    path
}

impl Drop for Pod {
    fn drop(&mut self) {
        // Killing a PID namespace's init kills every process in it.
        // SAFETY: plain kill(2) on a pid we started.
        unsafe { libc::kill(self.init_pid as i32, libc::SIGKILL) };
        let _ = self.init.kill();
        let _ = self.init.wait();
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Runs a command to completion and returns its stdout; panics with its stderr on failure.
pub fn run(argv: &[&str]) -> String {
    let output = Command::new(argv[0])
        .args(&argv[1..])
        .output()
        .unwrap_or_else(|e| panic!("{argv:?}: {e}"));
    assert!(
        output.status.success(),
        "{argv:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

impl Pod {
    /// Runs a program inside the pod to completion and returns its stdout; panics with its
    /// stderr on failure.
    pub fn run_in(&self, argv: &[&str]) -> String {
        let target = format!("--target={}", self.init_pid);
        let mut full = vec!["nsenter", target.as_str(), "--pid", "--mount", "--"];
        full.extend_from_slice(argv);
        run(&full)
    }

    /// Starts nginx on `port` serving cleartext HTTP/2 with prior knowledge (h2c), with
    /// `tests/servers/nginx.conf.in`.
    pub fn start_nginx_h2c(&mut self, name: &str, port: u16) {
        let conf = nginx_conf(&self.path(name), port);
        let text = std::fs::read_to_string(&conf).expect("nginx.conf");
        std::fs::write(
            &conf,
            text.replace(&format!("{port};"), &format!("{port} http2;")),
        )
        .expect("nginx.conf");
        let conf_arg = conf.to_string_lossy().into_owned();
        self.spawn(name, &["nginx", "-c", &conf_arg], &[]);
        wait_for_port(port, Duration::from_secs(10));
    }
}
