//! A stand-in for a Kubernetes pod with `shareProcessNamespace: true`: a fresh PID namespace
//! (with its own /proc) whose init is a sleeping process, and helpers to start the sidecar and
//! real servers and clients inside it.
//!
//! [`Pod::spawn`] starts a process in the pod's namespaces only. [`Pod::container`] makes a
//! container as runtimes do: a cgroup v2 directory of its own under the test's pod cgroup, and
//! processes that join it, then a cgroup namespace rooted there and a mount namespace where
//! cgroup2 is mounted at `/sys/fs/cgroup` (so `/proc/<pid>/root/sys/fs/cgroup` is the
//! container's cgroup, as in a real pod). Cgroups are removed when the pod is dropped.
//!
//! A pod runs the sidecar in one [`Mode`]: in [`Mode::Pod`] every program [`Pod::spawn`] starts
//! (the sidecar too) is a container of its own, as the pod-scoped capture needs; in
//! [`Mode::Tracepoints`] programs share the pod's namespaces only. `OBI_TEST_CAPTURE_MODE`
//! (`pod` or `tracepoints`) sets the mode of [`Pod::new`], so any test binary can be run in
//! either.

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
    sync::atomic::{AtomicU32, Ordering},
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

/// Each test once per capture mode: `tracepoints::<test>` and `pod_scoped::<test>`, each
/// calling `<test>(mode)` of the invoking module (the test binary's root, which declares
/// this file as `mod pod`).
#[macro_export]
macro_rules! in_both_modes {
    ($($test:ident),* $(,)?) => {
        mod tracepoints {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    super::$test($crate::pod::Mode::Tracepoints).await;
                }
            )*
        }
        mod pod_scoped {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    super::$test($crate::pod::Mode::Pod).await;
                }
            )*
        }
    };
}

/// The capture mode a pod's sidecar is started in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Tracepoints,
    Pod,
}

impl Mode {
    /// `OBI_TEST_CAPTURE_MODE`, tracepoints by default.
    pub fn from_env() -> Self {
        match std::env::var("OBI_TEST_CAPTURE_MODE").as_deref() {
            Ok("pod") => Self::Pod,
            Ok("tracepoints") | Err(_) => Self::Tracepoints,
            Ok(other) => panic!("OBI_TEST_CAPTURE_MODE={other:?} is not pod or tracepoints"),
        }
    }

    /// The value of `OTEL_EBPF_CAPTURE_MODE` forcing this mode.
    pub fn as_env(self) -> &'static str {
        match self {
            Self::Tracepoints => "tracepoints",
            Self::Pod => "pod",
        }
    }
}

pub struct Pod {
    pub mode: Mode,
    init: Child,
    /// The init process's pid as seen from the test's namespace.
    init_pid: u32,
    pub dir: tempfile::TempDir,
    children: Vec<Child>,
    /// The pod's cgroup directory (under the cgroup v2 mount), made with its first container.
    cgroup: Option<PathBuf>,
    /// Every container cgroup made, removed on drop (children first).
    container_cgroups: Vec<PathBuf>,
}

/// A container of a [`Pod`]: a cgroup of its own and namespaces its processes join.
#[derive(Clone, Debug)]
pub struct Container {
    pub name: String,
    /// The container's cgroup directory, as the test sees it.
    pub cgroup: PathBuf,
    /// The container's init (a sleeping process), pid as seen from the test.
    init_pid: u32,
}

impl Container {
    /// Pids (as seen from the test) of the processes in the container's cgroup.
    pub fn pids(&self) -> Vec<u32> {
        std::fs::read_to_string(self.cgroup.join("cgroup.procs"))
            .unwrap_or_default()
            .split_whitespace()
            .filter_map(|pid| pid.parse().ok())
            .collect()
    }

    /// Device and inode of the container's cgroup directory: how the sidecar knows it.
    pub fn cgroup_id(&self) -> (u64, u64) {
        use std::os::unix::fs::MetadataExt;
        let meta = std::fs::metadata(&self.cgroup).expect("container cgroup");
        (meta.dev(), meta.ino())
    }
}

/// Where cgroup v2 is mounted in the test's mount namespace: `/sys/fs/cgroup` on unified hosts,
/// `/sys/fs/cgroup/unified` on hybrid ones.
pub fn cgroup2_mount() -> PathBuf {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    mountinfo
        .lines()
        .find_map(|line| {
            let (fields, rest) = line.split_once(" - ")?;
            let point = fields.split(' ').nth(4)?;
            rest.starts_with("cgroup2 ").then(|| PathBuf::from(point))
        })
        .expect("these tests need a cgroup v2 mount")
}

/// The pid of a process in the innermost PID namespace it is in (the pod's), from its host pid.
pub fn pid_in_namespace(pid: u32) -> u32 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("process status");
    status
        .lines()
        .find_map(|line| line.strip_prefix("NSpid:"))
        .and_then(|ids| ids.split_whitespace().last())
        .and_then(|id| id.parse().ok())
        .expect("NSpid in /proc/<pid>/status")
}

/// Removes a cgroup directory once its processes are gone (they may take a moment to exit).
fn remove_cgroup(dir: &Path) {
    if !dir.exists() {
        return;
    }
    let _ = std::fs::write(dir.join("cgroup.kill"), "1");
    let deadline = Instant::now() + Duration::from_secs(5);
    while std::fs::remove_dir(dir).is_err() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
}

static POD_SEQ: AtomicU32 = AtomicU32::new(0);

/// A fresh cgroup directory for a pod, under the cgroup v2 mount.
fn new_pod_cgroup() -> PathBuf {
    let seq = POD_SEQ.fetch_add(1, Ordering::Relaxed);
    let dir = cgroup2_mount().join(format!("obi-test-{}-{seq}", std::process::id()));
    std::fs::create_dir(&dir).expect("the pod's cgroup");
    dir
}

impl Pod {
    /// A pod in the mode `OBI_TEST_CAPTURE_MODE` names.
    pub fn new() -> Self {
        Self::with_mode(Mode::from_env())
    }

    /// A pod whose sidecar runs in `mode`. In [`Mode::Pod`] the pod's init is a container too
    /// (`pause`, as the pause container of a real pod is), so every process of the pod is in a
    /// container of its own.
    pub fn with_mode(mode: Mode) -> Self {
        require_root();
        let (cgroup, pause) = match mode {
            Mode::Tracepoints => (None, None),
            Mode::Pod => {
                let cgroup = new_pod_cgroup();
                let pause = cgroup.join("pause.0");
                std::fs::create_dir(&pause).expect("the pause container's cgroup");
                (Some(cgroup), Some(pause))
            }
        };
        let init = match &pause {
            None => Command::new("unshare")
                .args(["--pid", "--fork", "--mount-proc", "sleep", "3600"])
                .spawn(),
            Some(pause) => Command::new("sh")
                .args([
                    "-c",
                    &format!(
                        "echo $$ > {} && exec unshare --pid --fork --mount-proc --cgroup \
                         --propagation private -- \
                         sh -c 'mount -t cgroup2 cgroup2 /sys/fs/cgroup && exec sleep 3600'",
                        pause.join("cgroup.procs").display()
                    ),
                ])
                .spawn(),
        }
        .expect("unshare (util-linux)");
        let deadline = Instant::now() + Duration::from_secs(5);
        let init_pid = loop {
            if let Some(pid) = child_of(init.id())
                && std::fs::read_to_string(format!("/proc/{pid}/comm"))
                    .is_ok_and(|comm| comm.trim() == "sleep")
            {
                break pid;
            }
            assert!(Instant::now() < deadline, "the pod's init never started");
            std::thread::sleep(Duration::from_millis(10));
        };
        Self {
            mode,
            init,
            init_pid,
            dir: tempfile::tempdir().expect("temp dir"),
            children: Vec::new(),
            cgroup,
            container_cgroups: pause.into_iter().collect(),
        }
    }

    /// Makes a container named `name`: a fresh cgroup under the pod's, whose init runs in a
    /// cgroup namespace rooted there and a mount namespace with cgroup2 at `/sys/fs/cgroup`.
    pub fn container(&mut self, name: &str) -> Container {
        self.make_container(name, true)
    }

    /// As [`Pod::container`], but the container sees a tmpfs at `/sys/fs/cgroup`, as on a node
    /// with cgroup v1 only.
    pub fn container_without_cgroup2(&mut self, name: &str) -> Container {
        self.make_container(name, false)
    }

    fn make_container(&mut self, name: &str, cgroup2: bool) -> Container {
        let pod_cgroup = self.cgroup.get_or_insert_with(new_pod_cgroup).clone();
        // A restarted container gets a new cgroup, as runtimes do.
        let generation = self
            .container_cgroups
            .iter()
            .filter(|dir| {
                dir.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with(&format!("{name}.")))
            })
            .count();
        let cgroup = pod_cgroup.join(format!("{name}.{generation}"));
        std::fs::create_dir(&cgroup).expect("the container's cgroup");
        self.container_cgroups.push(cgroup.clone());
        // The pod's own mount there (the pause container's, in [`Mode::Pod`]) goes first: the
        // kernel refuses cgroup2 on top of cgroup2.
        let fs = if cgroup2 {
            "{ umount /sys/fs/cgroup 2>/dev/null || true; } && mount -t cgroup2 cgroup2 /sys/fs/cgroup"
        } else {
            "{ umount /sys/fs/cgroup 2>/dev/null || true; } && mount -t tmpfs tmpfs /sys/fs/cgroup"
        };
        // Join the cgroup first, then the pod's PID and mount namespaces; then the container's
        // own cgroup namespace (rooted at the cgroup just joined) and mount namespace.
        let script = format!(
            "echo $$ > {procs} && exec nsenter --target={pod} --pid --mount -- \
             unshare --cgroup --mount --propagation private -- \
             sh -c '{fs} && exec sleep 3600'",
            procs = cgroup.join("cgroup.procs").display(),
            pod = self.init_pid,
        );
        let child = Command::new("sh")
            .args(["-c", &script])
            .stdin(Stdio::null())
            .spawn()
            .expect("sh");
        let wrapper = child.id();
        self.children.push(child);
        let deadline = Instant::now() + Duration::from_secs(5);
        let init_pid = loop {
            if let Some(pid) = child_of(wrapper)
                && std::fs::read_to_string(format!("/proc/{pid}/comm"))
                    .is_ok_and(|comm| comm.trim() == "sleep")
            {
                break pid;
            }
            assert!(Instant::now() < deadline, "container {name} never started");
            std::thread::sleep(Duration::from_millis(10));
        };
        Container {
            name: name.to_owned(),
            cgroup,
            init_pid,
        }
    }

    /// Stops every process of a container and removes its cgroup; then makes it again with a
    /// new cgroup (a container restart). Returns the new container.
    pub fn restart(&mut self, container: &Container) -> Container {
        remove_cgroup(&container.cgroup);
        self.make_container(&container.name, true)
    }

    /// Starts a program inside a container of the pod; output as with [`Pod::spawn`].
    pub fn spawn_in(
        &mut self,
        container: &Container,
        name: &str,
        argv: &[&str],
        env: &[(&str, &str)],
    ) -> u32 {
        let procs = container.cgroup.join("cgroup.procs");
        let mut wrapped = vec![
            "sh".to_owned(),
            "-c".to_owned(),
            // $$ is the shell, which becomes nsenter: its child, the program, starts in the
            // container's cgroup.
            format!(
                "echo $$ > {} && exec nsenter --target={} --pid --mount --cgroup -- \"$@\"",
                procs.display(),
                container.init_pid
            ),
            "sh".to_owned(),
        ];
        wrapped.extend(argv.iter().map(|a| (*a).to_owned()));
        let args: Vec<&str> = wrapped.iter().map(String::as_str).collect();
        self.spawn_raw(name, &args, env)
    }

    /// Starts `tests/servers/app.py` on `port` in a container.
    pub fn start_app_in(&mut self, container: &Container, name: &str, port: u16) {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/servers/app.py");
        let port_arg = port.to_string();
        self.spawn_in(
            container,
            name,
            &["python3", &script.to_string_lossy(), &port_arg],
            &[],
        );
        wait_for_port(port, Duration::from_secs(10));
    }

    /// Starts a program inside the pod (in [`Mode::Pod`], in a container of its own named
    /// `name`); its output goes to `<dir>/<name>.out|.err`. Returns the pid of the `nsenter`
    /// whose child is the program.
    pub fn spawn(&mut self, name: &str, argv: &[&str], env: &[(&str, &str)]) -> u32 {
        if self.mode == Mode::Pod {
            let container = self.container(name);
            return self.spawn_in(&container, name, argv, env);
        }
        let target = format!("--target={}", self.init_pid);
        let mut args = vec!["nsenter", &target, "--pid", "--mount", "--"];
        args.extend_from_slice(argv);
        self.spawn_raw(name, &args, env)
    }

    /// Runs `argv` (which enters the pod itself) with its output in the pod's directory.
    fn spawn_raw(&mut self, name: &str, argv: &[&str], env: &[(&str, &str)]) -> u32 {
        let out = File::create(self.path(&format!("{name}.out"))).expect("log file");
        let err = File::create(self.path(&format!("{name}.err"))).expect("log file");
        let child = Command::new(argv[0])
            .args(&argv[1..])
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

    /// Starts the sidecar with `env`, forced into the pod's mode, and waits until it captures.
    pub fn start_sidecar(&mut self, env: &[(&str, &str)]) {
        let mut env = env.to_vec();
        env.push(("OTEL_EBPF_CAPTURE_MODE", self.mode.as_env()));
        self.spawn("sidecar", &[&sidecar_bin()], &env);
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
        for dir in self.container_cgroups.iter().rev() {
            remove_cgroup(dir);
        }
        if let Some(dir) = &self.cgroup {
            remove_cgroup(dir);
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
