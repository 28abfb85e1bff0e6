//! Registries on loopback for pull, auth and timeout tests.
//!
//! [`Registry`] runs Debian's `docker-registry` (the CNCF distribution
//! registry) on `127.0.0.1:<free port>` with storage in a temp dir,
//! optionally behind htpasswd basic auth. Docker allows plain HTTP to
//! 127.0.0.0/8 by default, so pushes and pulls need no daemon setting. Every
//! docker command aimed at it runs with a private `DOCKER_CONFIG`, so logins
//! never touch the user's configuration.
//!
//! [`BlackHoleRegistry`] accepts connections and never answers a byte.

use base64::Engine as _;
use std::ffi::OsStr;
use std::fs;
use std::io::{Read as _, Write as _};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use tempfile::TempDir;

use crate::docker;
use crate::ids::random_hex;
use crate::images::{self, Recipe, TEST_REPOSITORY};

/// The registry binary of Debian's `docker-registry` package.
pub const REGISTRY_BINARY: &str = "/usr/bin/docker-registry";

/// How long a registry may take to answer `GET /v2/` after starting.
pub const READY_TIMEOUT: Duration = Duration::from_secs(20);

/// A running `docker-registry` on loopback; stopped (and every local image
/// reference into it removed) on drop.
#[derive(Debug)]
pub struct Registry {
    child: Child,
    port: u16,
    dir: TempDir,
    docker_config: TempDir,
    credentials: Option<(String, String)>,
}

impl Registry {
    /// Starts a registry without authentication.
    pub async fn start() -> anyhow::Result<Self> {
        Self::launch(None).await
    }

    /// Starts a registry that requires basic auth as `username`/`password`.
    pub async fn start_with_auth(username: &str, password: &str) -> anyhow::Result<Self> {
        Self::launch(Some((username.to_owned(), password.to_owned()))).await
    }

    async fn launch(credentials: Option<(String, String)>) -> anyhow::Result<Self> {
        crate::require_docker();
        let mut last_error = None;
        // The free port is free when we look; another process may take it
        // before the registry binds it, so try a few.
        for _ in 0..5 {
            match Self::launch_once(credentials.clone()).await {
                Ok(registry) => return Ok(registry),
                Err(err) => last_error = Some(err),
            }
        }
        Err(last_error.unwrap_or_else(|| anyhow::anyhow!("registry did not start")))
    }

    async fn launch_once(credentials: Option<(String, String)>) -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("wasmdock-e2e-registry-")
            .tempdir()?;
        let docker_config = tempfile::Builder::new()
            .prefix("wasmdock-e2e-docker-config-")
            .tempdir()?;
        let port = free_port()?;
        let storage = dir.path().join("storage");
        fs::create_dir_all(&storage)?;
        let mut config = format!(
            "version: 0.1\n\
             log:\n  level: info\n  accesslog:\n    disabled: false\n\
             storage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n\
             http:\n  addr: 127.0.0.1:{port}\n  secret: wasmdock-e2e-{}\n",
            storage.display(),
            random_hex(16)
        );
        if let Some((username, password)) = &credentials {
            let htpasswd = dir.path().join("htpasswd");
            let hash = bcrypt::hash(password, 5).context("bcrypt the registry password")?;
            fs::write(&htpasswd, format!("{username}:{hash}\n"))?;
            config.push_str(&format!(
                "auth:\n  htpasswd:\n    realm: wasmdock-e2e\n    path: {}\n",
                htpasswd.display()
            ));
        }
        let config_path = dir.path().join("config.yml");
        fs::write(&config_path, config)?;
        let log = fs::File::create(dir.path().join("registry.log"))?;
        let child = Command::new(REGISTRY_BINARY)
            .arg("serve")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| {
                format!("cannot start {REGISTRY_BINARY} (install Debian's docker-registry package)")
            })?;
        let mut registry = Self {
            child,
            port,
            dir,
            docker_config,
            credentials,
        };
        registry.wait_ready().await?;
        if registry.credentials.is_some() {
            registry.login()?;
        }
        Ok(registry)
    }

    async fn wait_ready(&mut self) -> anyhow::Result<()> {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!(
                    "docker-registry exited with {status} before serving: {}",
                    self.log()
                );
            }
            if let Ok(response) = self.get("/v2/", None)
                && (response.status == 200 || response.status == 401)
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "docker-registry did not answer GET /v2/ within {READY_TIMEOUT:?}: {}",
                    self.log()
                );
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `127.0.0.1:<port>`: the registry part of image references.
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// `127.0.0.1:<port>/<name_tag>`.
    pub fn reference(&self, name_tag: &str) -> String {
        format!("{}/{name_tag}", self.address())
    }

    /// The username and password it requires, if any.
    pub fn credentials(&self) -> Option<(&str, &str)> {
        self.credentials
            .as_ref()
            .map(|(u, p)| (u.as_str(), p.as_str()))
    }

    /// The private `DOCKER_CONFIG` directory its docker commands use.
    pub fn docker_config(&self) -> &Path {
        self.docker_config.path()
    }

    /// Where the registry's storage and config live.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// What the registry has logged so far.
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }

    /// `docker args…` with this registry's private `DOCKER_CONFIG`; errors on
    /// a non-zero exit.
    pub fn docker<S: AsRef<OsStr>>(&self, args: &[S]) -> anyhow::Result<String> {
        docker::docker_with(
            args,
            &[("DOCKER_CONFIG", self.docker_config().as_os_str())],
            None,
        )
    }

    /// `docker args…` with this registry's private `DOCKER_CONFIG` and the
    /// given stdin; returns the output whatever the exit status.
    pub fn docker_raw<S: AsRef<OsStr>>(
        &self,
        args: &[S],
        stdin: Option<&[u8]>,
    ) -> anyhow::Result<Output> {
        docker::docker_raw(
            args,
            &[("DOCKER_CONFIG", self.docker_config().as_os_str())],
            stdin,
        )
    }

    /// `docker login` with the registry's credentials into the private config.
    pub fn login(&self) -> anyhow::Result<()> {
        let (username, password) = self
            .credentials()
            .context("this registry has no credentials")?;
        let output = self.login_as(username, password)?;
        if !output.status.success() {
            bail!(
                "docker login {} failed: {}",
                self.address(),
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
        Ok(())
    }

    /// `docker login` as anyone (into the private config); the raw output,
    /// so tests can check refusals.
    pub fn login_as(&self, username: &str, password: &str) -> anyhow::Result<Output> {
        self.docker_raw(
            &[
                "login",
                "--username",
                username,
                "--password-stdin",
                &self.address(),
            ],
            Some(password.as_bytes()),
        )
    }

    /// Pushes local image `local` as `<registry>/<name_tag>` and removes the
    /// local `<registry>/<name_tag>` tag again (the image itself stays under
    /// `local`). Returns the remote reference.
    pub fn push(&self, local: &str, name_tag: &str) -> anyhow::Result<String> {
        let remote = self.reference(name_tag);
        docker::docker(&["tag", local, &remote])?;
        let pushed = self.docker(&["push", &remote]);
        let untagged = docker::remove_image(&remote);
        pushed.with_context(|| format!("push {local} to {remote}"))?;
        untagged?;
        Ok(remote)
    }

    /// Pushes a fresh busybox image that exists nowhere else (its
    /// `/unique` file is random) as `<registry>/<name_tag>`, and removes it
    /// locally, so a pull has to download it. Returns the remote reference.
    pub fn push_unique(&self, name_tag: &str) -> anyhow::Result<String> {
        let token = random_hex(16);
        let local = format!("{TEST_REPOSITORY}:unique-{token}");
        images::build_busybox_image(
            &local,
            &Recipe {
                changes: Vec::new(),
                files: vec![("unique".to_owned(), format!("{token}\n").into_bytes())],
            },
        )?;
        let pushed = self.push(&local, name_tag);
        let removed = docker::remove_image(&local);
        let remote = pushed?;
        removed?;
        Ok(remote)
    }

    /// `GET path` on the registry, with basic auth if given.
    pub fn get(
        &self,
        path: &str,
        basic_auth: Option<(&str, &str)>,
    ) -> anyhow::Result<HttpResponse> {
        http_get(
            &SocketAddr::from(([127, 0, 0, 1], self.port)),
            path,
            basic_auth,
            Duration::from_secs(5),
        )
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let prefix = format!("{}/", self.address());
        if let Ok(references) = docker::image_references(&prefix) {
            for reference in references {
                let _ = docker::remove_image(&reference);
            }
        }
    }
}

/// A TCP port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> anyhow::Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").context("bind 127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

/// A parsed HTTP/1.1 response.
#[derive(Debug, Clone)]
pub struct HttpResponse {
    /// Status code.
    pub status: u16,
    /// Header names in lower case, with their values.
    pub headers: Vec<(String, String)>,
    /// The body (chunked transfer decoded).
    pub body: Vec<u8>,
}

impl HttpResponse {
    /// The first value of header `name` (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// A minimal `GET` over a plain TCP connection (`Connection: close`).
pub fn http_get(
    addr: &SocketAddr,
    path: &str,
    basic_auth: Option<(&str, &str)>,
    timeout: Duration,
) -> anyhow::Result<HttpResponse> {
    let mut stream = TcpStream::connect_timeout(addr, timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    let mut request = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: wasmdock-e2e\r\nConnection: close\r\n"
    );
    if let Some((username, password)) = basic_auth {
        request.push_str(&format!(
            "Authorization: Basic {}\r\n",
            base64::engine::general_purpose::STANDARD.encode(format!("{username}:{password}"))
        ));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes())?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    parse_response(&raw)
}

fn parse_response(raw: &[u8]) -> anyhow::Result<HttpResponse> {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .context("no end of HTTP headers")?;
    let head = String::from_utf8_lossy(&raw[..split]);
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("bad status line {status_line:?}"))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let mut body = raw[split + 4..].to_vec();
    let chunked = headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.eq_ignore_ascii_case("chunked"));
    if chunked {
        body = dechunk(&body)?;
    }
    Ok(HttpResponse {
        status,
        headers,
        body,
    })
}

fn dechunk(mut data: &[u8]) -> anyhow::Result<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let end = data
            .windows(2)
            .position(|w| w == b"\r\n")
            .context("bad chunk header")?;
        let size_text = String::from_utf8_lossy(&data[..end]);
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
            .with_context(|| format!("bad chunk size {size_text:?}"))?;
        data = &data[end + 2..];
        if size == 0 {
            return Ok(out);
        }
        if data.len() < size + 2 {
            bail!("truncated chunk");
        }
        out.extend_from_slice(&data[..size]);
        data = &data[size + 2..];
    }
}

/// A "registry" that accepts TCP connections and never sends a byte nor
/// closes them (until dropped): pulls from it hang until their own timeout.
#[derive(Debug)]
pub struct BlackHoleRegistry {
    port: u16,
    stop: Arc<AtomicBool>,
    accepted: Arc<AtomicUsize>,
    held: Arc<Mutex<Vec<TcpStream>>>,
    thread: Option<JoinHandle<()>>,
}

impl BlackHoleRegistry {
    /// Listens on `127.0.0.1:<free port>`.
    pub fn start() -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").context("bind 127.0.0.1:0")?;
        let port = listener.local_addr()?.port();
        let stop = Arc::new(AtomicBool::new(false));
        let accepted = Arc::new(AtomicUsize::new(0));
        let held = Arc::new(Mutex::new(Vec::new()));
        let thread = {
            let (stop, accepted, held) = (stop.clone(), accepted.clone(), held.clone());
            std::thread::Builder::new()
                .name("black-hole-registry".to_owned())
                .spawn(move || {
                    for stream in listener.incoming() {
                        if stop.load(Ordering::SeqCst) {
                            break;
                        }
                        if let Ok(stream) = stream {
                            accepted.fetch_add(1, Ordering::SeqCst);
                            held.lock()
                                .unwrap_or_else(std::sync::PoisonError::into_inner)
                                .push(stream);
                        }
                    }
                })?
        };
        Ok(Self {
            port,
            stop,
            accepted,
            held,
            thread: Some(thread),
        })
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `127.0.0.1:<port>`.
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// `127.0.0.1:<port>/<name_tag>`.
    pub fn reference(&self, name_tag: &str) -> String {
        format!("{}/{name_tag}", self.address())
    }

    /// How many connections it has accepted so far.
    pub fn connections(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

impl Drop for BlackHoleRegistry {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        for stream in self
            .held
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .drain(..)
        {
            let _ = stream.shutdown(Shutdown::Both);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_plain_and_chunked_responses() {
        let plain = parse_response(b"HTTP/1.1 401 Unauthorized\r\nWww-Authenticate: Basic realm=\"x\"\r\nContent-Length: 2\r\n\r\n{}").unwrap();
        assert_eq!(plain.status, 401);
        assert_eq!(plain.header("WWW-Authenticate"), Some("Basic realm=\"x\""));
        assert_eq!(plain.text(), "{}");
        let chunked = parse_response(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;x=y\r\nde\r\n0\r\n\r\n",
        )
        .unwrap();
        assert_eq!(chunked.text(), "abcde");
    }
}
