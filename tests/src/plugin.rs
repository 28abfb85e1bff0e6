//! The plugin under test: the real `nomad-driver-wasmdock` binary, launched
//! exactly as a Nomad agent launches it (magic cookie, handshake, unix
//! socket) and configured as an agent configures it (SetConfig with the
//! plugin config and the agent's topology, then Init).
//!
//! The binary is built once per test process with `cargo build -p
//! wasmdock-host --bin nomad-driver-wasmdock` (cargo's own lock makes
//! concurrent builds wait for each other), unless `WASMDOCK_E2E_PLUGIN`
//! names a binary to use instead. Its stderr (hclog JSON lines) is
//! collected in the background; a test that panics prints it, and
//! `WASMDOCK_E2E_ECHO=1` echoes it live.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use tokio::io::{AsyncBufReadExt as _, BufReader};
use tonic::transport::Channel;
use wasmdock_host::config::cty::encode_json;
use wasmdock_host::dev::alloc::{MAX_DYNAMIC_PORT, MIN_DYNAMIC_PORT, Node};
use wasmdock_host::dev::launcher::{self, Plugin};
use wasmdock_host::logs::holder::{self, Holder};
use wasmdock_host::rpc::proto::base::{
    NomadConfig, SetConfigRequest, base_plugin_client::BasePluginClient,
};
use wasmdock_host::rpc::proto::drivers::{InitRequest, driver_client::DriverClient};
use wasmdock_host::rpc::proto::plugin::{Empty, grpc_controller_client::GrpcControllerClient};

/// The plugin API version Nomad sends in SetConfig.
pub const PLUGIN_API_VERSION: &str = "v0.1.0";
/// Cores of the topology the agent reports.
pub const NODE_CORES: u32 = 2;
/// Base speed of each core (MHz).
pub const CORE_MHZ: u64 = 1000;
/// Total compute of the node (MHz): what `PercentTicks` is relative to.
pub const NODE_COMPUTE_MHZ: u64 = NODE_CORES as u64 * CORE_MHZ;
/// The agent's `min_dynamic_port`.
pub const CLIENT_MIN_PORT: u32 = MIN_DYNAMIC_PORT;
/// The agent's `max_dynamic_port`.
pub const CLIENT_MAX_PORT: u32 = MAX_DYNAMIC_PORT;
/// How long go-plugin waits after GRPCController.Shutdown before killing.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);
/// Environment variable naming a prebuilt plugin binary to test instead.
pub const PLUGIN_BINARY_ENV: &str = "WASMDOCK_E2E_PLUGIN";
/// Environment variable that makes the plugin's stderr echo live.
pub const ECHO_ENV: &str = "WASMDOCK_E2E_ECHO";

/// The workspace root (the parent of this crate's manifest dir).
pub fn workspace_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().unwrap_or(manifest).to_owned()
}

/// Cargo's target dir: `CARGO_TARGET_DIR`, else `<workspace>/target`.
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map_or_else(
        || workspace_root().join("target"),
        |dir| {
            let dir = PathBuf::from(dir);
            if dir.is_absolute() {
                dir
            } else {
                workspace_root().join(dir)
            }
        },
    )
}

/// The plugin binary, built on first use in this process. Panics with the
/// build's errors if it cannot be built.
pub fn plugin_binary() -> &'static Path {
    static BINARY: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    match BINARY.get_or_init(|| build_plugin().map_err(|err| format!("{err:#}"))) {
        Ok(path) => path,
        Err(message) => panic!("cannot build the plugin binary: {message}"),
    }
}

fn build_plugin() -> anyhow::Result<PathBuf> {
    if let Some(path) = std::env::var_os(PLUGIN_BINARY_ENV) {
        let path = PathBuf::from(path);
        if !path.is_file() {
            bail!("{PLUGIN_BINARY_ENV}={} is not a file", path.display());
        }
        return Ok(path);
    }
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let output = Command::new(&cargo)
        .args([
            "build",
            "-p",
            "wasmdock-host",
            "--bin",
            "nomad-driver-wasmdock",
            "--message-format=json-render-diagnostics",
        ])
        .current_dir(workspace_root())
        .output()
        .with_context(|| format!("cannot run {}", cargo.to_string_lossy()))?;
    if !output.status.success() {
        bail!(
            "`cargo build -p wasmdock-host --bin nomad-driver-wasmdock` failed ({}):\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    // Cargo says where it put the executable; trust that over guessing.
    let from_cargo = String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|msg| {
            msg["reason"] == "compiler-artifact" && msg["target"]["name"] == "nomad-driver-wasmdock"
        })
        .find_map(|msg| msg["executable"].as_str().map(PathBuf::from));
    let path = from_cargo.unwrap_or_else(|| target_dir().join("debug/nomad-driver-wasmdock"));
    if !path.is_file() {
        bail!("the plugin binary is not at {}", path.display());
    }
    Ok(path)
}

/// What the agent sends as `nomad_config`: dynamic port range and a
/// topology of [`NODE_CORES`] cores at [`CORE_MHZ`] on one NUMA node.
pub fn nomad_config() -> NomadConfig {
    Node {
        id: String::new(),
        name: String::new(),
        cores: NODE_CORES,
        core_mhz: CORE_MHZ,
    }
    .nomad_config()
}

/// The SetConfig an agent sends for a plugin block `config` (as JSON).
pub fn set_config_request(config: &serde_json::Value) -> SetConfigRequest {
    SetConfigRequest {
        msgpack_config: encode_json(config),
        nomad_config: Some(nomad_config()),
        plugin_api_version: PLUGIN_API_VERSION.to_owned(),
    }
}

/// A running, configured plugin process; killed on drop if still alive.
#[derive(Debug)]
pub struct PluginUnderTest {
    plugin: Plugin,
    config: serde_json::Value,
    driver_name: String,
    args: Vec<String>,
    env: Vec<(String, String)>,
    stderr: Arc<Mutex<Vec<String>>>,
    exit: Option<ExitStatus>,
    // Holds the sockets (a killed process leaves its socket behind).
    _socket_dir: tempfile::TempDir,
}

impl PluginUnderTest {
    /// Launches the plugin as driver `driver_name` (`--name`), sends SetConfig
    /// with `config` (the plugin block's `config {}` as JSON) and Init.
    pub async fn start(config: serde_json::Value, driver_name: &str) -> anyhow::Result<Self> {
        Self::start_with_env(config, driver_name, &[]).await
    }

    /// [`Self::start`] with extra environment for the process (on top of
    /// `WASMDOCK_LOG_LEVEL=debug` and a private `PLUGIN_UNIX_SOCKET_DIR`,
    /// removed on drop).
    pub async fn start_with_env(
        config: serde_json::Value,
        driver_name: &str,
        env: &[(&str, &str)],
    ) -> anyhow::Result<Self> {
        let args = vec![format!("--name={driver_name}")];
        let socket_dir = tempfile::Builder::new()
            .prefix("wasmdock-e2e-plugin-")
            .tempdir()?;
        let mut all_env = vec![
            ("WASMDOCK_LOG_LEVEL".to_owned(), "debug".to_owned()),
            (
                "PLUGIN_UNIX_SOCKET_DIR".to_owned(),
                socket_dir.path().to_string_lossy().into_owned(),
            ),
        ];
        all_env.extend(env.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())));
        // A private log holder per plugin, so tests can watch theirs; and no
        // dangling-container reconciler unless a test asks for one: it looks
        // at every container of the engine, other tests' included.
        let mut config = config;
        if let Some(object) = config.as_object_mut() {
            object
                .entry("run_dir")
                .or_insert_with(|| socket_dir.path().join("run").to_string_lossy().into());
            let gc = object.entry("gc").or_insert_with(|| serde_json::json!({}));
            if let Some(gc) = gc.as_object_mut() {
                let dangling = gc
                    .entry("dangling_containers")
                    .or_insert_with(|| serde_json::json!({}));
                if let Some(dangling) = dangling.as_object_mut() {
                    dangling
                        .entry("enabled")
                        .or_insert(serde_json::Value::Bool(false));
                }
            }
        }
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let plugin = launch_configured(&args, &all_env, &config, &stderr).await?;
        Ok(Self {
            plugin,
            config,
            driver_name: driver_name.to_owned(),
            args,
            env: all_env,
            stderr,
            exit: None,
            _socket_dir: socket_dir,
        })
    }

    /// A BasePlugin client.
    pub fn base(&self) -> BasePluginClient<Channel> {
        BasePluginClient::new(self.plugin.channel.clone())
    }

    /// A Driver client.
    pub fn driver(&self) -> DriverClient<Channel> {
        DriverClient::new(self.plugin.channel.clone())
    }

    /// A GRPCController client.
    pub fn controller(&self) -> GrpcControllerClient<Channel> {
        GrpcControllerClient::new(self.plugin.channel.clone())
    }

    /// The gRPC channel.
    pub fn channel(&self) -> Channel {
        self.plugin.channel.clone()
    }

    /// The unix socket from the handshake.
    pub fn socket(&self) -> &Path {
        &self.plugin.handshake.address
    }

    /// The process id while running.
    pub fn pid(&self) -> Option<u32> {
        self.plugin.child.id()
    }

    /// The plugin config it was given.
    pub fn config(&self) -> &serde_json::Value {
        &self.config
    }

    /// The stderr lines so far (all processes, after restarts too).
    pub fn stderr_lines(&self) -> Vec<String> {
        self.stderr
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The shared stderr line buffer.
    pub fn stderr(&self) -> Arc<Mutex<Vec<String>>> {
        self.stderr.clone()
    }

    /// Waits until a stderr line contains `needle`; returns it, or `None`
    /// on timeout.
    pub async fn wait_for_stderr(&self, needle: &str, timeout: Duration) -> Option<String> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(line) = self.stderr_lines().into_iter().find(|l| l.contains(needle)) {
                return Some(line);
            }
            if Instant::now() > deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// GRPCController.Shutdown, then waits up to [`SHUTDOWN_GRACE`] for the
    /// exit, as go-plugin does; kills it if it does not exit in time (and
    /// errs).
    pub async fn shutdown(&mut self) -> anyhow::Result<ExitStatus> {
        if let Some(status) = self.exit {
            return Ok(status);
        }
        self.controller()
            .shutdown(Empty {})
            .await
            .context("GRPCController.Shutdown")?;
        match tokio::time::timeout(SHUTDOWN_GRACE, self.plugin.child.wait()).await {
            Ok(status) => {
                let status = status?;
                self.exit = Some(status);
                Ok(status)
            }
            Err(_) => {
                let status = self.kill().await?;
                bail!("the plugin did not exit within {SHUTDOWN_GRACE:?} of Shutdown ({status})")
            }
        }
    }

    /// SIGKILLs the process (as a crash would) and reaps it.
    pub async fn kill(&mut self) -> anyhow::Result<ExitStatus> {
        if let Some(status) = self.exit {
            return Ok(status);
        }
        let _ = self.plugin.child.start_kill();
        let status = self.plugin.child.wait().await?;
        self.exit = Some(status);
        Ok(status)
    }

    /// Waits up to `timeout` for the process to exit on its own.
    pub async fn wait_exit(&mut self, timeout: Duration) -> anyhow::Result<ExitStatus> {
        if let Some(status) = self.exit {
            return Ok(status);
        }
        let status = tokio::time::timeout(timeout, self.plugin.child.wait())
            .await
            .context("the plugin did not exit in time")??;
        self.exit = Some(status);
        Ok(status)
    }

    /// The exit status once the process has been reaped.
    pub fn exit_status(&self) -> Option<ExitStatus> {
        self.exit
    }

    /// SIGKILLs the process and launches a fresh one with the same
    /// arguments, environment and config; as for any new process, the
    /// agent sends SetConfig and Init again. Tasks started before are then
    /// re-adopted with RecoverTask by the test.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.kill().await?;
        self.relaunch().await
    }

    /// Leaves `key` out of the environment of later launches.
    pub fn remove_env(&mut self, key: &str) {
        self.env.retain(|(k, _)| k != key);
    }

    /// Launches a fresh process after [`Self::kill`], as [`Self::restart`] does.
    pub async fn relaunch(&mut self) -> anyhow::Result<()> {
        self.plugin = launch_configured(&self.args, &self.env, &self.config, &self.stderr).await?;
        self.exit = None;
        Ok(())
    }

    /// The node's log holder this plugin uses (its private `run_dir`).
    pub fn log_holder(&self) -> Holder {
        let run_dir = self.config["run_dir"].as_str().unwrap_or_default();
        Holder::new(holder::directory(run_dir, &self.driver_name))
    }
}

impl Drop for PluginUnderTest {
    fn drop(&mut self) {
        if self.exit.is_none() {
            let _ = self.plugin.child.start_kill();
        }
        if std::thread::panicking() {
            let lines = self.stderr_lines();
            eprintln!(
                "---- plugin stderr ({} lines) ----\n{}\n---- end of plugin stderr ----",
                lines.len(),
                lines.join("\n")
            );
        }
    }
}

async fn launch_configured(
    args: &[String],
    env: &[(String, String)],
    config: &serde_json::Value,
    stderr: &Arc<Mutex<Vec<String>>>,
) -> anyhow::Result<Plugin> {
    let binary = tokio::task::spawn_blocking(plugin_binary)
        .await
        .map_err(|err| match err.try_into_panic() {
            Ok(payload) => anyhow::anyhow!(
                "{}",
                payload
                    .downcast_ref::<String>()
                    .map_or("building the plugin panicked", String::as_str)
            ),
            Err(err) => anyhow::anyhow!("building the plugin failed: {err}"),
        })?;
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let mut plugin = launcher::launch(binary, args, &env).await?;
    collect_stderr(&mut plugin, stderr.clone());
    let result = async {
        BasePluginClient::new(plugin.channel.clone())
            .set_config(set_config_request(config))
            .await
            .context("SetConfig")?;
        DriverClient::new(plugin.channel.clone())
            .init(InitRequest {})
            .await
            .context("Init")?;
        anyhow::Ok(())
    }
    .await;
    if let Err(err) = result {
        let _ = plugin.child.start_kill();
        let _ = plugin.child.wait().await;
        let lines = stderr
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .join("\n");
        return Err(err.context(format!("plugin stderr:\n{lines}")));
    }
    Ok(plugin)
}

fn collect_stderr(plugin: &mut Plugin, sink: Arc<Mutex<Vec<String>>>) {
    let Some(stderr) = plugin.stderr.take() else {
        return;
    };
    let echo = std::env::var_os(ECHO_ENV).is_some_and(|v| v == "1");
    tokio::spawn(async move {
        let mut lines = BufReader::new(stderr).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            if echo {
                eprintln!("[plugin] {line}");
            }
            sink.lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(line);
        }
    });
}
