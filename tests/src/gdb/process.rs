//! Small process helpers the other modules share: running a build tool to
//! completion, waiting for a child with a time limit while draining its
//! pipes, and making paths absolute.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus};
use std::time::{Duration, Instant};

pub(super) fn run_tool(command: &mut Command, hint: &str) {
    let result = command
        .output()
        .unwrap_or_else(|e| panic!("running {command:?}: {e} ({hint})"));
    if !result.status.success() {
        panic!(
            "{command:?} failed ({}):\n{}",
            result.status,
            String::from_utf8_lossy(&result.stderr)
        );
    }
}

pub(super) fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|e| panic!("resolving {}: {e}", path.display()))
}

/// Output of a child process that had to finish within `limit`. The child
/// leads its own process group (`process_group(0)`), which is killed when
/// the time is up.
pub(super) fn wait_output(
    mut child: Child,
    limit: Duration,
    what: &str,
) -> (ExitStatus, String, String) {
    let pipe = |p: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut text = Vec::new();
            if let Some(mut p) = p {
                let _ = p.read_to_end(&mut text);
            }
            String::from_utf8_lossy(&text).into_owned()
        })
    };
    let out = pipe(
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let err = pipe(
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let deadline = Instant::now() + limit;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) if Instant::now() >= deadline => break None,
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => panic!("waiting for {what}: {e}"),
        }
    };
    let Some(status) = status else {
        // SAFETY: plain syscall on the group the caller created.
        unsafe {
            libc::kill(-(child.id() as libc::pid_t), libc::SIGKILL);
        }
        let _ = child.wait();
        panic!("{what} did not finish within {limit:?}");
    };
    let stdout = out.join().unwrap_or_default();
    let stderr = err.join().unwrap_or_default();
    (status, stdout, stderr)
}
