//! Helpers shared by the end-to-end tests.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Where build.rs left the guest components (defaults, example, fixtures).
pub fn guest(name: &str) -> PathBuf {
    Path::new(env!("TANDEM_GUEST_DIR")).join(name)
}

pub fn guest_bytes(name: &str) -> Vec<u8> {
    std::fs::read(guest(name)).unwrap_or_else(|e| panic!("guest {name}: {e}"))
}

/// Polls `check` until it returns Some or `limit` passes; the value and how long it took.
pub fn wait_for<T>(limit: Duration, mut check: impl FnMut() -> Option<T>) -> Option<(T, Duration)> {
    let start = Instant::now();
    loop {
        if let Some(v) = check() {
            return Some((v, start.elapsed()));
        }
        if start.elapsed() > limit {
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Runs `cmd` (its stderr captured) for at most `limit`: its output, or `None` (and the process
/// killed) if it was still running.
pub fn output_within(cmd: &mut std::process::Command, limit: Duration) -> Option<std::process::Output> {
    let mut child =
        cmd.stdout(std::process::Stdio::null()).stderr(std::process::Stdio::piped()).spawn().unwrap();
    let done = wait_for(limit, || child.try_wait().unwrap());
    if done.is_none() {
        let _ = child.kill();
    }
    let out = child.wait_with_output().unwrap();
    done.map(|_| out)
}

/// Copies a file into place the way an operator's deploy would: write aside, then rename.
pub fn install_file(bytes: &[u8], dest: &Path) {
    let tmp = dest.with_extension("incoming");
    std::fs::write(&tmp, bytes).unwrap();
    std::fs::rename(&tmp, dest).unwrap();
}

/// A TCP relay between a client and a server (a standby and its primary) that cuts the
/// connection once the server has sent `cut_after` bytes through it. Serves one connection.
pub struct Relay {
    pub addr: String,
    /// Bytes relayed from the primary to the standby.
    pub down: Arc<AtomicU64>,
}

impl Relay {
    pub fn start(primary: &str, cut_after: Option<u64>) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let down = Arc::new(AtomicU64::new(0));
        let (primary, counter) = (primary.to_string(), down.clone());
        std::thread::spawn(move || {
            let Ok((standby, _)) = listener.accept() else { return };
            let upstream = TcpStream::connect(&primary).unwrap();
            let (from_standby, to_primary) = (standby.try_clone().unwrap(), upstream.try_clone().unwrap());
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut &from_standby, &mut &to_primary);
                let _ = to_primary.shutdown(Shutdown::Write);
            });
            relay_down(upstream, standby, cut_after, &counter);
        });
        Relay { addr, down }
    }
}

fn relay_down(from: TcpStream, to: TcpStream, cut_after: Option<u64>, counter: &AtomicU64) {
    let mut buf = vec![0u8; 64 << 10];
    let mut sent = 0u64;
    loop {
        let room = cut_after.map_or(buf.len() as u64, |cut| (cut - sent).min(buf.len() as u64));
        let n = match (&from).read(&mut buf[..room as usize]) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if (&to).write_all(&buf[..n]).is_err() {
            break;
        }
        sent += n as u64;
        counter.store(sent, Ordering::SeqCst);
        if cut_after == Some(sent) {
            let _ = from.shutdown(Shutdown::Both);
            let _ = to.shutdown(Shutdown::Both);
            return;
        }
    }
    let _ = to.shutdown(Shutdown::Write);
}

/// One HTTP/1.1 request on a connection of its own (`Connection: close`): (status, body), within
/// 10 s, or status 0 and the error. `token` goes in `Authorization: Bearer`; `body` is sent
/// as JSON.
pub fn http(addr: &str, method: &str, path: &str, token: Option<&str>, body: &[u8]) -> (u16, String) {
    http_within(addr, method, path, token, body, Duration::from_secs(10))
}

/// [`http`] with a time limit of its own (bodies of tens of MB on a debug build).
pub fn http_within(
    addr: &str,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: &[u8],
    limit: Duration,
) -> (u16, String) {
    let addr: std::net::SocketAddr = addr.trim().parse().unwrap();
    let mut s = match TcpStream::connect_timeout(&addr, limit) {
        Ok(s) => s,
        Err(e) => return (0, format!("connecting: {e}")),
    };
    s.set_read_timeout(Some(limit)).unwrap();
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{auth}\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .unwrap();
    s.write_all(body).unwrap();
    let mut raw = Vec::new();
    if let Err(e) = s.read_to_end(&mut raw) {
        return (0, format!("reading the answer: {e}"));
    }
    let text = String::from_utf8_lossy(&raw).into_owned();
    let code = text.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    (code, body)
}
