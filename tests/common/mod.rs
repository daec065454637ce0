//! Helpers for end-to-end tests that run real `byzmtl-node` processes on loopback.
//!
//! A test picks free ports ([`free_address`]), writes a topology into a fresh folder
//! ([`Network::new`]), starts the nodes it wants as child processes ([`Network::spawn`]), and
//! waits on conditions with a deadline ([`wait_until`]), never on a fixed sleep. Dropping the
//! [`Network`] kills and reaps every child, prints their logs if the test is failing, and
//! removes the folder.

#![allow(dead_code)] // every test crate uses a different part of this module

use std::collections::BTreeSet;
use std::future::Future;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The node daemon.
pub const NODE_BIN: &str = env!("CARGO_BIN_EXE_byzmtl-node");

/// The operator's tool.
pub const CLI_BIN: &str = env!("CARGO_BIN_EXE_byzmtl");

/// Ports already handed out by this test binary, so parallel tests never share one.
static HANDED_OUT: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());

/// A loopback port that was free a moment ago: bound at 127.0.0.1:0, read, and released.
pub fn free_port() -> u16 {
    loop {
        let listener = TcpListener::bind("127.0.0.1:0").expect("cannot bind 127.0.0.1:0");
        let port = listener
            .local_addr()
            .expect("bound socket has an address")
            .port();
        let mut handed_out = HANDED_OUT.lock().unwrap_or_else(|e| e.into_inner());
        if handed_out.insert(port) {
            return port;
        }
    }
}

/// `127.0.0.1:<free port>`.
pub fn free_address() -> String {
    format!("127.0.0.1:{}", free_port())
}

/// One `[[nodes]]` entry of a target-localization topology: the node sits at `position` and
/// every honest node's target is (10, 10). `extra` holds further `key = value` lines, such
/// as `role = "byzantine"` or `metrics = "127.0.0.1:9100"`.
pub fn localization_node(id: &str, address: &str, position: [f64; 2], extra: &str) -> String {
    format!(
        "[[nodes]]\nid = \"{id}\"\naddress = \"{address}\"\nposition = [{:?}, {:?}]\n\
         shard = {{ target = [10.0, 10.0] }}\n{extra}\n",
        position[0], position[1]
    )
}

/// A network of node processes started from one topology file in a scratch folder.
pub struct Network {
    /// The scratch folder: the topology file, and one log file per node.
    pub dir: PathBuf,
    /// The topology file.
    pub topology: PathBuf,
    children: Vec<(String, Child)>,
}

impl Network {
    /// A scratch folder named after `name` holding `topology` (TOML text) as `net.toml`.
    pub fn new(name: &str, topology: &str) -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let dir =
            std::env::temp_dir().join(format!("byzmtl-test-{name}-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("cannot create the test folder");
        let path = dir.join("net.toml");
        std::fs::write(&path, topology).expect("cannot write the topology file");
        Self {
            dir,
            topology: path,
            children: Vec::new(),
        }
    }

    /// Starts node `id` with `args` added to `--topology FILE --id ID`, and `env` set. Its
    /// stderr (the log) goes to `<dir>/<id>.log`, its stdout to `<dir>/<id>.out`.
    pub fn spawn_with(&mut self, id: &str, args: &[&str], env: &[(&str, &str)]) {
        let log = std::fs::File::create(self.log_path(id)).expect("cannot create a log file");
        let out = std::fs::File::create(self.dir.join(format!("{id}.out")))
            .expect("cannot create an output file");
        let mut command = Command::new(NODE_BIN);
        command
            .arg("--topology")
            .arg(&self.topology)
            .args(["--id", id])
            .args(args)
            .env_remove("RUST_LOG")
            .env_remove("BYZMTL_LOG_FORMAT")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(log);
        let child = command.spawn().expect("cannot start byzmtl-node");
        self.children.push((id.to_string(), child));
    }

    /// Starts node `id` with no further flags.
    pub fn spawn(&mut self, id: &str) {
        self.spawn_with(id, &[], &[]);
    }

    /// Where node `id` logs.
    pub fn log_path(&self, id: &str) -> PathBuf {
        self.dir.join(format!("{id}.log"))
    }

    /// What node `id` has logged so far.
    pub fn log(&self, id: &str) -> String {
        std::fs::read_to_string(self.log_path(id)).unwrap_or_default()
    }

    /// Waits until node `id` exits, at most `timeout`; `None` if it is still running then.
    pub async fn wait_exit(&mut self, id: &str, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            let child = self
                .children
                .iter_mut()
                .find(|(name, _)| name == id)
                .map(|(_, child)| child)?;
            if let Ok(Some(status)) = child.try_wait() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        for (_, child) in &mut self.children {
            child.kill().ok();
            child.wait().ok();
        }
        if std::thread::panicking() {
            for (id, _) in &self.children {
                eprintln!("---- log of node {id} ----\n{}", self.log(id));
            }
        }
        std::fs::remove_dir_all(&self.dir).ok();
    }
}

/// Polls `check` every 50 ms until it returns `Some`, and returns that. Panics, naming
/// `what`, if `timeout` passes first.
pub async fn wait_until<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "gave up after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A plain HTTP/1.1 GET of `path` from `address`: the status code and the body, or `None`
/// if the server cannot be reached or answers with something that is not HTTP.
pub async fn http_get(address: &str, path: &str) -> Option<(u16, String)> {
    let mut stream = tokio::net::TcpStream::connect(address).await.ok()?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.ok()?;
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await.ok()?;
    let answer = String::from_utf8(answer).ok()?;

    let (head, body) = answer.split_once("\r\n\r\n")?;
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    let chunked = head
        .lines()
        .any(|l| l.eq_ignore_ascii_case("transfer-encoding: chunked"));
    let body = if chunked {
        dechunk(body)?
    } else {
        body.to_string()
    };
    Some((status, body))
}

/// Joins the chunks of a chunked HTTP body.
fn dechunk(mut body: &str) -> Option<String> {
    let mut out = String::new();
    loop {
        let (size, rest) = body.split_once("\r\n")?;
        let size = usize::from_str_radix(size.trim(), 16).ok()?;
        if size == 0 {
            return Some(out);
        }
        out.push_str(rest.get(..size)?);
        body = rest.get(size + 2..)?;
    }
}

/// The path of `name` if it is an executable file in a folder of `PATH`.
pub fn find_on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| is_executable(candidate))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata()
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}
