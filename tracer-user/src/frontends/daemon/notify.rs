//! systemd's readiness protocol (`Type=notify`): one datagram with
//! `READY=1` once the probes are attached, `RELOADING=1`/`READY=1` around
//! a reload, `STOPPING=1` on shutdown. Written by hand because it is one
//! `sendto` on the socket named by `NOTIFY_SOCKET` (a path, or an
//! abstract socket when it starts with `@`); without that variable there
//! is no service manager to tell and every call does nothing.

use std::{io, os::unix::net::UnixDatagram};

pub struct Notifier {
    target: Option<String>,
}

impl Notifier {
    pub fn from_env() -> Self {
        Self {
            target: std::env::var("NOTIFY_SOCKET")
                .ok()
                .filter(|s| !s.is_empty()),
        }
    }

    /// Sends `state` (`READY=1`, ...); a failure is returned for logging,
    /// never fatal: the service manager would time the start out anyway.
    pub fn notify(&self, state: &str) -> io::Result<()> {
        let Some(target) = &self.target else {
            return Ok(());
        };
        let socket = UnixDatagram::unbound()?;
        match target.strip_prefix('@') {
            Some(name) => {
                use std::os::linux::net::SocketAddrExt;
                let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())?;
                socket.send_to_addr(state.as_bytes(), &addr)?;
            }
            None => {
                socket.send_to(state.as_bytes(), target)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_and_abstract_sockets_receive_the_state() {
        let dir = std::env::temp_dir().join(format!("crashtrace-notify-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let path = dir.join("notify.sock");
        let _ = std::fs::remove_file(&path);
        let listener = UnixDatagram::bind(&path).unwrap();
        let n = Notifier {
            target: Some(path.display().to_string()),
        };
        n.notify("READY=1").unwrap();
        let mut buf = [0u8; 64];
        let len = listener.recv(&mut buf).unwrap();
        assert_eq!(&buf[..len], b"READY=1");

        use std::os::linux::net::SocketAddrExt;
        let name = format!("crashtrace-notify-test-{}", std::process::id());
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let listener = UnixDatagram::bind_addr(&addr).unwrap();
        let n = Notifier {
            target: Some(format!("@{name}")),
        };
        n.notify("STOPPING=1").unwrap();
        let len = listener.recv(&mut buf).unwrap();
        assert_eq!(&buf[..len], b"STOPPING=1");
        assert!(Notifier { target: None }.notify("READY=1").is_ok());
    }
}
