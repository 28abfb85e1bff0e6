//! Launching a plugin binary exactly as a Nomad agent does, and connecting
//! to it: environment, handshake line parsing, unix-socket gRPC channel.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context as _, bail};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncBufReadExt as _, AsyncRead, BufReader};
use tokio::process::{Child, ChildStderr, Command};
use tonic::transport::{Channel, Endpoint};

use crate::plugin::handshake::{
    APP_PROTOCOL_VERSION, CORE_PROTOCOL_VERSION, MAGIC_COOKIE_KEY, MAGIC_COOKIE_VALUE,
};

/// How long Nomad waits for the handshake line.
pub const START_TIMEOUT: Duration = Duration::from_secs(60);

/// The parsed handshake line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Handshake {
    /// The line as written, without the newline.
    pub line: String,
    /// Network (`unix`).
    pub network: String,
    /// Socket path.
    pub address: PathBuf,
}

/// Parses a handshake line with go-plugin's client rules.
pub fn parse_handshake(line: &str) -> anyhow::Result<Handshake> {
    let line = line.trim();
    let parts: Vec<&str> = line.split('|').collect();
    if parts.len() < 4 {
        bail!("Unrecognized remote plugin message: {line}");
    }
    if parts[0].parse::<u32>().ok() != Some(CORE_PROTOCOL_VERSION) {
        bail!("incompatible core API version with plugin: {}", parts[0]);
    }
    if parts[1] != APP_PROTOCOL_VERSION.to_string() {
        bail!(
            "incompatible API version with plugin. Plugin version: {}, Client versions: [{APP_PROTOCOL_VERSION}]",
            parts[1]
        );
    }
    match parts.get(4) {
        Some(&"grpc") => {}
        other => bail!(
            "unsupported plugin protocol {:?}",
            other.copied().unwrap_or("netrpc")
        ),
    }
    if parts[2] != "unix" {
        bail!(
            "unsupported network {:?} (only unix sockets on this platform)",
            parts[2]
        );
    }
    Ok(Handshake {
        line: line.to_owned(),
        network: parts[2].to_owned(),
        address: PathBuf::from(parts[3]),
    })
}

/// A running plugin process and a channel to it.
#[derive(Debug)]
pub struct Plugin {
    /// The process.
    pub child: Child,
    /// Its handshake.
    pub handshake: Handshake,
    /// A gRPC channel over its socket.
    pub channel: Channel,
    /// Its stderr, for the caller to read (hclog JSON lines).
    pub stderr: Option<ChildStderr>,
}

/// Starts `binary args…` with the agent's environment plus what Nomad adds,
/// waits for the handshake and connects.
pub async fn launch(
    binary: &Path,
    args: &[String],
    extra_env: &[(&str, &str)],
) -> anyhow::Result<Plugin> {
    let mut command = Command::new(binary);
    command
        .args(args)
        .env(MAGIC_COOKIE_KEY, MAGIC_COOKIE_VALUE)
        .env("PLUGIN_MIN_PORT", "10000")
        .env("PLUGIN_MAX_PORT", "25000")
        .env("PLUGIN_PROTOCOL_VERSIONS", APP_PROTOCOL_VERSION.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    for (key, value) in extra_env {
        command.env(key, value);
    }
    let mut child = command
        .spawn()
        .with_context(|| format!("cannot start {}", binary.display()))?;
    let stdout = child
        .stdout
        .take()
        .context("plugin stdout was not captured")?;
    let line = match tokio::time::timeout(START_TIMEOUT, first_line(stdout)).await {
        Ok(Ok(line)) => line,
        Ok(Err(err)) => {
            let status = child.wait().await.ok();
            bail!("plugin exited before we could connect ({err}; status {status:?})");
        }
        Err(_) => bail!("timeout while waiting for plugin to start"),
    };
    let handshake = parse_handshake(&line)?;
    let channel = connect(&handshake.address).await?;
    let stderr = child.stderr.take();
    Ok(Plugin {
        child,
        handshake,
        channel,
        stderr,
    })
}

/// Reads the first stdout line, then keeps draining (and discarding) stdout
/// in the background as the go-plugin client does.
async fn first_line(stdout: impl AsyncRead + Unpin + Send + 'static) -> anyhow::Result<String> {
    let mut reader = BufReader::new(stdout);
    let mut line = String::new();
    if reader.read_line(&mut line).await? == 0 {
        bail!("stdout closed without a handshake line");
    }
    tokio::spawn(async move {
        let mut sink = tokio::io::sink();
        let _ = tokio::io::copy(&mut reader, &mut sink).await;
    });
    Ok(line)
}

/// A gRPC channel over a unix socket (`:authority` is `unused`, as Nomad's).
pub async fn connect(socket: &Path) -> anyhow::Result<Channel> {
    let socket = socket.to_owned();
    Endpoint::try_from("http://unused")?
        .connect_with_connector(tower::service_fn(move |_| {
            let socket = socket.clone();
            async move {
                tokio::net::UnixStream::connect(socket)
                    .await
                    .map(TokioIo::new)
            }
        }))
        .await
        .context("cannot connect to the plugin socket")
}

/// `{"@level":"info","@message":"m","k":"v",…}` → `plugin [info] m k=v`.
pub fn pretty_log_line(line: &str) -> String {
    let Ok(serde_json::Value::Object(map)) = serde_json::from_str::<serde_json::Value>(line) else {
        return format!("plugin (not JSON!) {line}");
    };
    let get = |k: &str| {
        map.get(k)
            .and_then(serde_json::Value::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    let mut out = format!("plugin [{}] {}", get("@level"), get("@message"));
    for (key, value) in &map {
        if !key.starts_with('@') {
            let value = value
                .as_str()
                .map_or_else(|| value.to_string(), str::to_owned);
            out.push_str(&format!(" {key}={value}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_go_plugin_lines() {
        let hs = parse_handshake("1|2|unix|/tmp/plugin123|grpc|\n").unwrap();
        assert_eq!(hs.address, PathBuf::from("/tmp/plugin123"));
        assert_eq!(hs.line, "1|2|unix|/tmp/plugin123|grpc|");
    }

    #[test]
    fn rejects_what_go_plugin_rejects() {
        for (line, needle) in [
            ("1|2|unix", "Unrecognized remote plugin message"),
            ("2|2|unix|/x|grpc|", "core API version"),
            ("1|1|unix|/x|grpc|", "incompatible API version"),
            ("1|2|unix|/x", "netrpc"),
            ("1|2|unix|/x|netrpc|", "netrpc"),
        ] {
            let err = parse_handshake(line).unwrap_err().to_string();
            assert!(err.contains(needle), "{line}: {err}");
        }
    }
}
