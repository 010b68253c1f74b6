//! Test support for the database tests: the tests' own database servers (PostgreSQL, MariaDB,
//! Redis from Debian, each with its own data directory and loopback port, started by
//! `scripts/db-server.sh`), inside a pod or beside one, and clients run to completion in a pod.

#![allow(
    dead_code,
    reason = "each test binary uses a different part of the harness"
)]
#![allow(
    clippy::expect_used,
    clippy::panic,
    reason = "a test harness: failing loudly with context is its job"
)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::pod::{Pod, free_port, wait_for_port};

/// How long a server may take to initialize its data directory and listen.
const STARTUP: Duration = Duration::from_secs(90);
/// How long a client may run.
const CLIENT: Duration = Duration::from_secs(60);

pub fn scripts() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts")
}

/// A database server the test started beside its pods; stopped when dropped.
pub struct Server {
    child: Child,
    pub port: u16,
    _dir: tempfile::TempDir,
}

impl Server {
    /// Starts `kind` (`postgres`, `mariadb`, `redis`) on a free port and waits until it listens.
    pub fn start(kind: &str) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        // PostgreSQL runs as `postgres`, which must reach its data directory.
        std::fs::set_permissions(
            dir.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .expect("chmod");
        let port = free_port();
        let data = dir.path().join("data");
        let child = Command::new("bash")
            .arg(scripts().join("db-server.sh"))
            .args([kind, &data.to_string_lossy(), &port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("db-server.sh");
        wait_for_port(port, STARTUP);
        Self {
            child,
            port,
            _dir: dir,
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // A clean shutdown first (PostgreSQL's backends end with their postmaster; the clients
        // are gone by now), then a kill.
        // SAFETY: plain kill(2) on a process we started.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `kind` inside `pod` (its process is then the pod's database) and waits until it
/// listens; the pod stops it.
pub fn start_in_pod(pod: &mut Pod, kind: &str) -> u16 {
    start_in_pod_with(pod, kind, &[])
}

/// As [`start_in_pod`], the server accepting TLS too (`DB_TLS=1`, PostgreSQL).
pub fn start_tls_in_pod(pod: &mut Pod, kind: &str) -> u16 {
    start_in_pod_with(pod, kind, &[("DB_TLS", "1")])
}

fn start_in_pod_with(pod: &mut Pod, kind: &str, env: &[(&str, &str)]) -> u16 {
    let port = free_port();
    let data = pod.path(&format!("{kind}-data"));
    std::fs::set_permissions(
        pod.dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .expect("chmod");
    let script = scripts().join("db-server.sh");
    pod.spawn(
        kind,
        &[
            "bash",
            &script.to_string_lossy(),
            kind,
            &data.to_string_lossy(),
            &port.to_string(),
        ],
        env,
    );
    wait_for_port(port, STARTUP);
    port
}

/// Runs `command` (a shell command line) in `pod` to completion as the process `name`: once the
/// pod's sidecar logs that it instruments the shell (it must select it), the client replaces the
/// shell, keeping its pid. Returns its exit code; its output is in `<name>.out`.
pub fn run_in_pod(pod: &mut Pod, name: &str, command: &str) -> i32 {
    let rc = pod.path(&format!("{name}.rc"));
    let pid = pod.path(&format!("{name}.pid"));
    let go = pod.path(&format!("{name}.go"));
    for path in [&rc, &pid, &go] {
        let _ = std::fs::remove_file(path);
    }
    // The inner shell (which becomes the client) says its pid and waits until the sidecar
    // instruments it, so its first connection is seen from the start.
    let script = format!(
        "bash -c 'echo $$ > {pid}.tmp && mv {pid}.tmp {pid}; while [ ! -e {go} ]; do sleep 0.02; done; exec {}'; echo $? > {}",
        command.replace('\'', r"'\''"),
        rc.display(),
        pid = pid.display(),
        go = go.display(),
    );
    pod.spawn(name, &["bash", "-c", &script], &[("PGPASSWORD", "test")]);
    wait_for_path(&pid);
    let shell = std::fs::read_to_string(&pid).expect("the client's pid");
    pod.wait_for_log(
        "sidecar.err",
        &format!("instrumenting process pid={} ", shell.trim()),
        CLIENT,
    );
    std::fs::write(&go, "").expect("go file");
    let deadline = Instant::now() + CLIENT;
    loop {
        if let Some(code) = std::fs::read_to_string(&rc)
            .ok()
            .and_then(|text| text.trim().parse().ok())
        {
            return code;
        }
        assert!(
            Instant::now() < deadline,
            "{name} did not finish: {}",
            pod.log(&format!("{name}.err"))
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `tests/servers/db_clients.py SCENARIO PORT [args]` as a command line.
pub fn py_client(scenario: &str, port: u16, args: &[&str]) -> String {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/servers/db_clients.py");
    format!(
        "python3 {} {scenario} {port} {}",
        script.display(),
        args.join(" ")
    )
}

/// Runs a command on the host (outside any pod) and returns whether it succeeded.
pub fn host(command: &str) -> bool {
    Command::new("bash")
        .args(["-c", command])
        .env("PGPASSWORD", "test")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

/// Waits until `path` exists.
pub fn wait_for_path(path: &Path) {
    let deadline = Instant::now() + CLIENT;
    while !path.exists() {
        assert!(
            Instant::now() < deadline,
            "{} never appeared",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}
