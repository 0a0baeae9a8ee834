//! Running `crashtrace daemon` the way systemd would: with a config file,
//! `NOTIFY_SOCKET` pointing at a datagram socket the test reads, and its
//! stderr (the journal) parsed for acknowledgements.
//!
//! An acknowledgement is the line the daemon logs once a crash's
//! transaction has committed:
//! `crashtrace: stored crash id=N pid=P class=C fingerprint=F exe=E`.
//! The daemon watches the whole host, and other tests crash programs at
//! the same time, so tests look for the pids and executables they started.

use std::{
    io::{BufRead, BufReader},
    os::unix::{fs::PermissionsExt, net::UnixDatagram},
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Output, Stdio},
    sync::{Arc, Mutex},
    thread,
    time::{Duration, Instant},
};

use crate::crashtrace_bin;

/// One acknowledged crash.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ack {
    pub id: i64,
    pub pid: u32,
    pub class: String,
    pub fingerprint: String,
    pub exe: String,
}

impl Ack {
    fn parse(line: &str) -> Option<Self> {
        let rest = line.strip_prefix("crashtrace: stored crash ")?;
        let field = |name: &str| {
            rest.split(' ')
                .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
                .map(str::to_string)
        };
        Some(Self {
            id: field("id")?.parse().ok()?,
            pid: field("pid")?.parse().ok()?,
            class: field("class")?,
            fingerprint: field("fingerprint")?,
            exe: rest.split_once(" exe=")?.1.to_string(),
        })
    }
}

/// A scratch directory under /tmp that any user can traverse (the query
/// tests run as `nobody`), removed on drop.
pub struct ScratchDir(PathBuf);

impl ScratchDir {
    pub fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("crashtrace-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("creating a scratch directory");
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        Self(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    /// A copy of `program` under a name of this test's own, so that its
    /// crashes are told apart from every other test's.
    pub fn copy_program(&self, program: &Path, name: &str) -> PathBuf {
        let to = self.0.join(name);
        std::fs::copy(program, &to).expect("copying a test program");
        std::fs::set_permissions(&to, std::fs::Permissions::from_mode(0o755)).unwrap();
        to
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

pub struct Daemon {
    child: Option<Child>,
    pub config: PathBuf,
    pub store: PathBuf,
    notify: UnixDatagram,
    stderr: Arc<Mutex<String>>,
    reader: Option<thread::JoinHandle<()>>,
}

/// How long the daemon may take to load and attach its probes.
const READY_TIMEOUT: Duration = Duration::from_secs(60);

impl Daemon {
    /// Writes `config` (see [`config_in`]: the store is `dir/crashes.db`)
    /// to `dir/config.toml` and starts the daemon on it, returning once it
    /// sent `READY=1`.
    pub fn start(dir: &Path, config: &str, args: &[&str]) -> Self {
        let config_path = dir.join("config.toml");
        std::fs::write(&config_path, config).unwrap();
        let socket_path = dir.join("notify.sock");
        let _ = std::fs::remove_file(&socket_path);
        let notify = UnixDatagram::bind(&socket_path).expect("binding the notify socket");
        notify
            .set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let mut child = Command::new(crashtrace_bin())
            .arg("daemon")
            .arg("--config")
            .arg(&config_path)
            .args(args)
            .env("NOTIFY_SOCKET", &socket_path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting crashtrace daemon");
        let stderr = Arc::new(Mutex::new(String::new()));
        let pipe = child.stderr.take().unwrap();
        let log = stderr.clone();
        let reader = thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                let mut log = log.lock().unwrap();
                log.push_str(&line);
                log.push('\n');
            }
        });
        let store = dir.join("crashes.db");
        let mut daemon = Self {
            child: Some(child),
            config: config_path,
            store,
            notify,
            stderr,
            reader: Some(reader),
        };
        daemon.wait_notify("READY=1", READY_TIMEOUT);
        daemon
    }

    /// Waits for a datagram holding `state`; panics with the log if none
    /// comes in time or the daemon exits.
    pub fn wait_notify(&mut self, state: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        let mut buf = [0u8; 4096];
        while Instant::now() < deadline {
            if let Ok(n) = self.notify.recv(&mut buf)
                && String::from_utf8_lossy(&buf[..n])
                    .lines()
                    .any(|l| l == state)
            {
                return;
            }
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                panic!(
                    "daemon exited with {status} before {state}:\n{}",
                    self.log()
                );
            }
        }
        panic!("no {state} from the daemon in {timeout:?}:\n{}", self.log());
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(Child::id).unwrap_or(0)
    }

    /// Everything the daemon logged so far.
    pub fn log(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Every acknowledgement so far.
    pub fn acks(&self) -> Vec<Ack> {
        self.log().lines().filter_map(Ack::parse).collect()
    }

    /// Waits for the acknowledgement of `pid`'s crash.
    pub fn wait_ack(&self, pid: u32, timeout: Duration) -> Ack {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(a) = self.acks().into_iter().find(|a| a.pid == pid) {
                return a;
            }
            assert!(
                Instant::now() < deadline,
                "no acknowledgement for pid {pid} in {timeout:?}:\n{}",
                self.log()
            );
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits until the log holds `text`.
    pub fn wait_log(&self, text: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while !self.log().contains(text) {
            assert!(
                Instant::now() < deadline,
                "daemon never logged {text:?}:\n{}",
                self.log()
            );
            thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on our own child.
        unsafe { libc::kill(self.pid() as i32, sig) };
    }

    /// SIGTERM, then waits for the exit; returns the status and full log.
    pub fn stop(mut self) -> (ExitStatus, String) {
        self.signal(libc::SIGTERM);
        self.wait_notify("STOPPING=1", Duration::from_secs(30));
        let status = self.wait_exit();
        (status, self.log())
    }

    /// SIGKILL, then waits for the exit.
    pub fn kill(mut self) -> String {
        self.signal(libc::SIGKILL);
        self.wait_exit();
        self.log()
    }

    fn wait_exit(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("daemon running");
        let deadline = Instant::now() + Duration::from_secs(60);
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("daemon did not exit in time:\n{}", self.log());
            }
            thread::sleep(Duration::from_millis(50));
        };
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
        status
    }

    /// Runs `crashtrace ARGS --store STORE`.
    pub fn query(&self, args: &[&str]) -> Output {
        query(&self.store, args)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Runs `crashtrace ARGS --store STORE` and returns its output.
pub fn query(store: &Path, args: &[&str]) -> Output {
    Command::new(crashtrace_bin())
        .args(args)
        .arg("--store")
        .arg(store)
        .output()
        .expect("running a crashtrace query")
}

/// Stdout of a query that must succeed.
pub fn query_ok(store: &Path, args: &[&str]) -> String {
    let out = query(store, args);
    assert!(
        out.status.success(),
        "crashtrace {args:?} failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 output")
}

/// JSON Lines of a query that must succeed.
pub fn query_json(store: &Path, args: &[&str]) -> Vec<serde_json::Value> {
    query_ok(store, args)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad JSON {l:?}: {e}")))
        .collect()
}

/// A config with the store in `dir` and `extra` appended.
pub fn config_in(dir: &Path, store_section: &str, extra: &str) -> String {
    format!(
        "[store]\npath = \"{}\"\n{store_section}\n{extra}\n",
        dir.join("crashes.db").display()
    )
}

/// Runs a program to its (crashing) end; returns its pid.
pub fn crash(program: &Path) -> u32 {
    let mut child = Command::new(program)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", program.display()));
    let pid = child.id();
    let status = child.wait().unwrap();
    assert!(!status.success(), "{} did not crash", program.display());
    pid
}

/// A free TCP port on 127.0.0.1.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A plain HTTP GET to 127.0.0.1; returns the body of a 200 answer.
pub fn http_get(port: u16, target: &str) -> Option<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(
        s,
        "GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut response = String::new();
    s.read_to_string(&mut response).ok()?;
    let (head, body) = response.split_once("\r\n\r\n")?;
    if !head.starts_with("HTTP/1.1 200") {
        return None;
    }
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        return Some(dechunk(body));
    }
    Some(body.to_string())
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        body = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// Percent-encodes a URL query value.
pub fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
