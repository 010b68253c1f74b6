//! `obi-sidecar`: configuration from the environment, logs, then [`obi_sidecar::run`].

use std::{io::IsTerminal, process::ExitCode};

use obi_sidecar::config::Config;

fn main() -> ExitCode {
    // Start-up may parse the kernel's BTF more than once (aya's loader where Landlock cannot
    // stop it, then the tracepoints' attach), each a few MiB freed right after. glibc raises its
    // mmap threshold when such blocks are freed, so a second parse would land on the heap beside
    // the first one's leftovers; a fixed threshold keeps large blocks in their own mappings,
    // returned to the kernel when freed, and the peak RSS at the size of one parse.
    // SAFETY: mallopt only changes allocator tuning; called before any thread starts.
    unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, 256 * 1024) };
    let config = match Config::from_env() {
        Ok(config) => config,
        Err(error) => {
            eprintln!("obi-sidecar: invalid configuration: {error}");
            return ExitCode::from(2);
        }
    };
    // Logs go to stderr: stdout belongs to the trace printer.
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_new(&config.log_level)
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    // One thread runs capture and export: a handoff between threads per ring buffer wakeup would
    // cost more than the work itself.
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("obi-sidecar: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(obi_sidecar::run::run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!("{error}");
            eprintln!("obi-sidecar: {error}");
            // A forced capture mode that cannot run is a configuration error, as above.
            if matches!(error, obi_sidecar::Error::CaptureModeUnavailable { .. }) {
                ExitCode::from(2)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}
