//! Fetching debug files from debuginfod: against elfutils' real server
//! (Debian package `debuginfod`), and against a scripted local server for
//! the failure cases a real one will not produce on demand.

use std::{
    io::{Read, Write},
    net::{TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use super::{
    TempDir, assert_outer,
    debug_files::{BASE, SOURCE, build_id_of, split_build},
    marker_line, symbolize_placed,
};
use crate::symbolize::{DebuginfodConfig, Symbolizer, debuginfod::Debuginfod, elf::hex};

/// A port nothing listens on right now.
fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr").port()
}

/// A running `debuginfod`, killed when dropped.
struct Server {
    child: Child,
    log: PathBuf,
}

impl Server {
    /// Serves the ELF files under `dir`, with its database and log in
    /// `work`; waits until `build_id` is served.
    fn start(dir: &Path, work: &TempDir, build_id: &str) -> (Self, String) {
        let port = free_port();
        let log = work.join("debuginfod.log");
        let log_file = std::fs::File::create(&log).expect("create log");
        let child = Command::new("debuginfod")
            .args(["-F", "-p", &port.to_string(), "-d"])
            .arg(work.join("debuginfod.sqlite"))
            .args(["-c", "1", "-g", "0"])
            .arg(dir)
            .env_remove("DEBUGINFOD_URLS")
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().expect("clone log"))
            .stderr(log_file)
            .spawn()
            .expect("run debuginfod (install the Debian package `debuginfod`)");
        let mut server = Self { child, log };
        let url = format!("http://127.0.0.1:{port}");
        let probe = format!("{url}/buildid/{build_id}/debuginfo");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(status)) = server.child.try_wait() {
                panic!("debuginfod exited with {status}: {}", server.log_tail());
            }
            if ureq::get(&probe).call().is_ok() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "debuginfod did not serve {probe} within 30 s: {}",
                server.log_tail()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        (server, url)
    }

    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn fetches_debug_file_from_debuginfod_and_caches_it() {
    let dir = TempDir::new("debuginfod");
    let (stripped, debug, vaddr) = split_build(&dir, &["-Wl,--build-id"]);
    let id = hex(&build_id_of(&stripped));
    let served = dir.join("served");
    std::fs::create_dir_all(&served).expect("mkdir");
    std::fs::rename(&debug, served.join("prog.debug")).expect("move debug file");
    let (server, url) = Server::start(&served, &dir, &id);

    let cache = dir.join("cache");
    let config = DebuginfodConfig::new(vec![url], cache.clone());
    let line = marker_line(SOURCE, "MARK:target");
    let mut symbolizer = Symbolizer::new(Vec::new()).with_debuginfod(Some(config.clone()));
    let s = symbolize_placed(&mut symbolizer, &stripped, BASE, vaddr);
    assert_outer(&s, "target", "prog.c", line);
    let cached = cache.join(&id).join("debuginfo");
    assert_eq!(build_id_of(&cached), build_id_of(&stripped));
    let leftovers: Vec<_> = std::fs::read_dir(cache.join(&id))
        .expect("cache dir")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert_eq!(leftovers, ["debuginfo"], "no temporary files left");

    drop(server);
    let mut symbolizer = Symbolizer::new(Vec::new()).with_debuginfod(Some(config));
    let s = symbolize_placed(&mut symbolizer, &stripped, BASE, vaddr);
    assert_outer(&s, "target", "prog.c", line);
}

/// What the scripted server does with one request.
#[derive(Clone)]
enum Reply {
    Status(u16),
    File(Vec<u8>),
    /// Accept, read the request, and never answer.
    Stall,
}

/// A one-connection-at-a-time HTTP server giving every request `reply`.
struct Scripted {
    url: String,
    hits: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Scripted {
    fn start(reply: Reply) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let hits = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (thread_hits, thread_stop) = (Arc::clone(&hits), Arc::clone(&stop));
        let thread = std::thread::spawn(move || {
            for stream in listener.incoming() {
                if thread_stop.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(stream) = stream else { continue };
                thread_hits.fetch_add(1, Ordering::SeqCst);
                let _ = answer(stream, &reply, &thread_stop);
            }
        });
        Self {
            url: format!("http://{addr}"),
            hits,
            stop,
            thread: Some(thread),
        }
    }

    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

fn answer(mut stream: TcpStream, reply: &Reply, stop: &AtomicBool) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut request = Vec::new();
    let mut buf = [0u8; 1024];
    while !request.windows(4).any(|w| w == b"\r\n\r\n") && request.len() < 65536 {
        let n = stream.read(&mut buf)?;
        if n == 0 {
            break;
        }
        request.extend_from_slice(&buf[..n]);
    }
    let (status, body) = match reply {
        Reply::Status(status) => (*status, Vec::new()),
        Reply::File(bytes) => (200, bytes.clone()),
        Reply::Stall => {
            let until = Instant::now() + Duration::from_secs(10);
            while Instant::now() < until && !stop.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(50));
            }
            return Ok(());
        }
    };
    write!(
        stream,
        "HTTP/1.1 {status} X\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )?;
    stream.write_all(&body)
}

impl Drop for Scripted {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.url.trim_start_matches("http://"));
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn client(url: &str, cache: &Path) -> DebuginfodConfig {
    let mut config = DebuginfodConfig::new(vec![url.to_owned()], cache.to_owned());
    config.timeout = Duration::from_secs(1);
    config
}

const SOME_ID: [u8; 20] = [0xab; 20];

#[test]
fn remembers_build_ids_no_server_has() {
    let dir = TempDir::new("debuginfod-miss");
    let server = Scripted::start(Reply::Status(404));
    let debuginfod = Debuginfod::new(client(&server.url, dir.path()));
    assert!(debuginfod.find(&SOME_ID).is_none());
    assert!(debuginfod.find(&SOME_ID).is_none());
    assert_eq!(server.hits(), 1, "the miss is remembered");
    assert!(debuginfod.find(&[0xcd; 20]).is_none());
    assert_eq!(server.hits(), 2, "other build-ids are still asked for");

    let mut config = client(&server.url, dir.path());
    config.miss_ttl = Duration::ZERO;
    let forgetful = Debuginfod::new(config);
    assert!(forgetful.find(&SOME_ID).is_none());
    assert!(forgetful.find(&SOME_ID).is_none());
    assert_eq!(server.hits(), 4);
}

/// A fully stripped binary with a build-id and its separate debug file.
fn built(dir: &TempDir) -> (Vec<u8>, Vec<u8>) {
    let (stripped, debug, _) = split_build(dir, &["-Wl,--build-id"]);
    (build_id_of(&stripped), std::fs::read(debug).expect("read"))
}

fn assert_nothing_cached(cache: &Path) {
    let files: Vec<_> = walk(cache);
    assert!(files.is_empty(), "cache should be empty: {files:?}");
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .flatten()
        .flat_map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => walk(&e.path()),
            _ => vec![e.path()],
        })
        .collect()
}

#[test]
fn rejects_files_with_another_build_id() {
    let dir = TempDir::new("debuginfod-wrong");
    let (id, debug) = built(&dir);
    let server = Scripted::start(Reply::File(debug));
    let cache = dir.join("cache");
    let debuginfod = Debuginfod::new(client(&server.url, &cache));
    assert!(debuginfod.find(&SOME_ID).is_none());
    assert_nothing_cached(&cache);
    let found = debuginfod
        .find(&id)
        .expect("the right build-id is accepted");
    assert_eq!(found.path, cache.join(hex(&id)).join("debuginfo"));
}

#[test]
fn refuses_oversized_and_non_elf_downloads() {
    let dir = TempDir::new("debuginfod-big");
    let (id, debug) = built(&dir);
    let cache = dir.join("cache");
    let server = Scripted::start(Reply::File(debug.clone()));
    let mut config = client(&server.url, &cache);
    config.max_size = debug.len() as u64 - 1;
    assert!(Debuginfod::new(config).find(&id).is_none());
    assert_nothing_cached(&cache);

    let server = Scripted::start(Reply::File(b"not an ELF file".repeat(100)));
    assert!(
        Debuginfod::new(client(&server.url, &cache))
            .find(&id)
            .is_none()
    );
    assert_nothing_cached(&cache);
}

#[test]
fn gives_up_on_silent_servers_and_backs_off() {
    let dir = TempDir::new("debuginfod-stall");
    let server = Scripted::start(Reply::Stall);
    let debuginfod = Debuginfod::new(client(&server.url, dir.path()));
    let started = Instant::now();
    assert!(debuginfod.find(&SOME_ID).is_none());
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
    assert!(debuginfod.find(&[0xcd; 20]).is_none());
    assert_eq!(server.hits(), 1, "a server that timed out is skipped");
}
