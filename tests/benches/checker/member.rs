//! One `tandem daemon` the checker drives: its folder, its fixed addresses (a restart keeps
//! them), its process and the faults done to it (kill -9, SIGTERM, SIGSTOP/SIGCONT), and plain
//! HTTP/1.1 to its REST API from inside its lab host. Must never hide a failed start: it is
//! returned, since a member that cannot come back is a finding.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Every member's admin token (the API needs one; the checker is the operator).
pub const TOKEN: &str = "checker-admin-token-0123456789";
const SECRET: &str = "the fault checker's cluster secret";
/// How long a member may take to write its `api.addr` after a start.
const START_LIMIT: Duration = Duration::from_secs(60);
/// How long a SIGTERM'd member may take to exit before it is killed.
const TERM_LIMIT: Duration = Duration::from_secs(10);

pub struct Member {
    pub name: String,
    dir: tempfile::TempDir,
    /// Its peer address (`ip:port`).
    pub peer: String,
    /// Its API address, on its host's loopback.
    pub api: String,
    /// The lab host (network namespace) it runs in, if any.
    pub ns: Option<String>,
    child: Option<Child>,
}

impl Member {
    /// Writes the member's configuration (`extra`: whole tables after `[cluster]`) and starts it.
    /// `ip` is its host's address; inside a lab host the ports can be fixed.
    pub fn new(
        name: &str,
        ns: Option<String>,
        ip: &str,
        ports: (u16, u16),
        extra: &str,
    ) -> Result<Self, String> {
        let dir = tempfile::Builder::new().prefix(&format!("checker-{name}-")).tempdir().unwrap();
        write_secret(&dir.path().join("secret"));
        let (peer, api) = (format!("{ip}:{}", ports.0), format!("127.0.0.1:{}", ports.1));
        let config = format!(
            "node_name = \"{name}\"\ndata_dir = \"{0}/data\"\n\
             [peer]\nlisten = \"{peer}\"\nsecret_file = \"{0}/secret\"\n\
             [api]\nlisten = \"{api}\"\nadmin_token = \"{TOKEN}\"\n\
             [cluster]\nheartbeat_ms = 50\nelection_timeout_ms = 300\nretry_ms = 100\ncommit_timeout_ms = 1500\n{extra}",
            dir.path().display()
        );
        std::fs::write(dir.path().join("tandem.toml"), config).unwrap();
        let mut m = Self { name: name.into(), dir, peer, api, ns, child: None };
        m.start()?;
        Ok(m)
    }

    pub fn start(&mut self) -> Result<(), String> {
        let _ = std::fs::remove_file(self.data().join("api.addr"));
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("stderr"))
            .unwrap();
        let exe = env!("CARGO_BIN_EXE_tandem");
        let mut cmd = match &self.ns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, exe]);
                c
            }
            None => Command::new(exe),
        };
        cmd.env_remove("TANDEM_CONFIG")
            .env("RUST_LOG", "info")
            .arg("--config")
            .arg(self.dir.path().join("tandem.toml"))
            .arg("daemon")
            .stdout(Stdio::null())
            .stderr(log);
        self.child = Some(cmd.spawn().map_err(|e| format!("{}: spawn: {e}", self.name))?);
        let started = Instant::now();
        loop {
            if std::fs::read_to_string(self.data().join("api.addr")).is_ok_and(|a| a.ends_with('\n')) {
                return Ok(());
            }
            if let Some(c) = self.child.as_mut()
                && let Ok(Some(status)) = c.try_wait()
            {
                self.child = None;
                return Err(format!("{} exited at start ({status}): {}", self.name, self.stderr_tail()));
            }
            if started.elapsed() > START_LIMIT {
                return Err(format!("{} never came up: {}", self.name, self.stderr_tail()));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn running(&self) -> bool {
        self.child.is_some()
    }

    /// kill -9 (a stopped member is killed as it is).
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait for a clean exit (kill -9 after [`TERM_LIMIT`]): whether it exited by itself.
    pub fn terminate(&mut self) -> bool {
        self.cont();
        let Some(mut c) = self.child.take() else { return true };
        signal(c.id(), libc::SIGTERM);
        let start = Instant::now();
        while start.elapsed() < TERM_LIMIT {
            if let Ok(Some(_)) = c.try_wait() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        // The evidence: where each thread of the hung daemon waits (if gdb is here).
        let out = Command::new("gdb")
            .args(["-p", &c.id().to_string(), "-batch", "-ex", "thread apply all bt 30"])
            .output();
        if let Ok(out) = out {
            let _ = std::fs::write(self.dir.path().join(format!("hang-{}.txt", c.id())), out.stdout);
        }
        let _ = c.kill();
        let _ = c.wait();
        false
    }

    pub fn stop(&mut self) {
        if let Some(c) = &self.child {
            signal(c.id(), libc::SIGSTOP);
        }
    }

    pub fn cont(&mut self) {
        if let Some(c) = &self.child {
            signal(c.id(), libc::SIGCONT);
        }
    }

    pub fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Keeps the member's folder after the run (a violation's evidence); returns its path.
    pub fn keep(self) -> PathBuf {
        let mut me = self;
        me.kill9();
        let dir = std::mem::replace(&mut me.dir, tempfile::tempdir().unwrap());
        dir.keep()
    }

    fn stderr_tail(&self) -> String {
        let text = std::fs::read_to_string(self.dir.path().join("stderr")).unwrap_or_default();
        text.lines().rev().take(15).collect::<Vec<_>>().into_iter().rev().collect::<Vec<_>>().join("\n")
    }

    /// One request to this member's API, from inside its host; `Err` for no answer.
    pub fn http(
        &self,
        method: &str,
        path: &str,
        body: &str,
        limit: Duration,
    ) -> Result<(u16, String), String> {
        let (api, method, path, body) =
            (self.api.clone(), method.to_owned(), path.to_owned(), body.to_owned());
        match &self.ns {
            Some(ns) => crate::lab::in_netns(ns, move || http(&api, &method, &path, &body, limit)),
            None => http(&api, &method, &path, &body, limit),
        }
    }

    /// The member's own row of `/v1/cluster/status`, and the whole answer.
    pub fn status(&self) -> Result<serde_json::Value, String> {
        let (code, body) = self.http("GET", "/v1/cluster/status", "", Duration::from_secs(5))?;
        if code != 200 {
            return Err(format!("status {code}: {body}"));
        }
        serde_json::from_str(&body).map_err(|e| format!("{e}: {body}"))
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        self.cont();
        self.kill9();
    }
}

fn signal(pid: u32, sig: i32) {
    // SAFETY: kill has no memory preconditions; the pid is our own child.
    unsafe { libc::kill(pid as i32, sig) };
}

fn write_secret(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, SECRET).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

/// One HTTP/1.1 request on its own connection, in the calling thread's network namespace:
/// (status, body), or why there was no answer within `limit`.
pub fn http(
    addr: &str,
    method: &str,
    path: &str,
    body: &str,
    limit: Duration,
) -> Result<(u16, String), String> {
    let sock: std::net::SocketAddr = addr.parse().map_err(|e| format!("{addr}: {e}"))?;
    let mut s = TcpStream::connect_timeout(&sock, limit).map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(limit)).unwrap();
    s.set_write_timeout(Some(limit)).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: Bearer {TOKEN}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .map_err(|e| format!("send: {e}"))?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).map_err(|e| format!("read: {e}"))?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let code = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("no status line: {text}"))?;
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    Ok((code, body))
}
