//! go-plugin's process protocol: the magic cookie, the unix socket, and the
//! one line written to stdout.

use std::io::Write as _;
use std::os::unix::fs::PermissionsExt as _;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};

use anyhow::Context as _;

/// Environment variable Nomad sets to prove it launched us.
pub const MAGIC_COOKIE_KEY: &str = "NOMAD_PLUGIN_MAGIC_COOKIE";
/// Its value (Nomad's `base.Handshake`).
pub const MAGIC_COOKIE_VALUE: &str =
    "e4327c2e01eabfd75a8a67adb114fb34a757d57eee7728d857a8cec6e91a7255";
/// go-plugin's core protocol version.
pub const CORE_PROTOCOL_VERSION: u32 = 1;
/// Nomad's application protocol version for plugins.
pub const APP_PROTOCOL_VERSION: u32 = 2;

/// What a person running the binary by hand is told (go-plugin's wording).
pub const NOT_LAUNCHED_BY_NOMAD: &str = "This binary is a plugin. These are not meant to be executed directly.\n\
Please execute the program that consumes these plugins, which will\n\
load any plugins automatically\n\n\
nomad-driver-wasmdock is a Nomad task driver: put it in the agent's plugin_dir and\n\
reference it with a plugin \"nomad-driver-wasmdock\" { ... } block. To try it by\n\
hand, run: nomad-driver-wasmdock dev probe";

/// Whether the environment carries Nomad's magic cookie.
pub fn launched_by_nomad() -> bool {
    std::env::var(MAGIC_COOKIE_KEY).is_ok_and(|v| v == MAGIC_COOKIE_VALUE)
}

/// Logs a warning when the client offers protocol versions that do not
/// include ours (go-plugin's client then rejects the handshake itself).
pub fn check_protocol_versions() {
    if let Ok(offered) = std::env::var("PLUGIN_PROTOCOL_VERSIONS") {
        let ours = APP_PROTOCOL_VERSION.to_string();
        if !offered.split(',').any(|v| v.trim() == ours) {
            tracing::warn!(
                offered,
                ours,
                "the client does not offer our plugin protocol version"
            );
        }
    }
    if std::env::var_os("PLUGIN_CLIENT_CERT").is_some() {
        tracing::warn!(
            "PLUGIN_CLIENT_CERT is set but AutoMTLS is not supported; serving plaintext (Nomad never enables it)"
        );
    }
}

/// The listening socket; dropping it removes the socket file.
#[derive(Debug)]
pub struct PluginSocket {
    file: tempfile::NamedTempFile<UnixListener>,
}

impl PluginSocket {
    /// Binds a fresh socket `plugin<random>` in `PLUGIN_UNIX_SOCKET_DIR` (or
    /// the temp dir) and applies `PLUGIN_UNIX_SOCKET_GROUP` if set.
    pub fn bind_from_env() -> anyhow::Result<Self> {
        let dir = std::env::var_os("PLUGIN_UNIX_SOCKET_DIR")
            .filter(|d| !d.is_empty())
            .map_or_else(std::env::temp_dir, PathBuf::from);
        let group = std::env::var("PLUGIN_UNIX_SOCKET_GROUP")
            .ok()
            .filter(|g| !g.is_empty());
        Self::bind(&dir, group.as_deref())
    }

    /// Binds a fresh socket in `dir`, owned by `group` (name or gid) with
    /// mode 0660 when a group is given.
    pub fn bind(dir: &Path, group: Option<&str>) -> anyhow::Result<Self> {
        let file = tempfile::Builder::new()
            .prefix("plugin")
            .make_in(dir, |path| UnixListener::bind(path))
            .with_context(|| format!("cannot create the plugin socket in {}", dir.display()))?;
        if let Some(group) = group {
            let gid = resolve_group(group)?;
            nix::unistd::chown(file.path(), None, Some(gid))
                .with_context(|| format!("cannot give the plugin socket to group {group:?}"))?;
            std::fs::set_permissions(file.path(), std::fs::Permissions::from_mode(0o660))
                .context("cannot set the plugin socket's mode to 0660")?;
        }
        file.as_file()
            .set_nonblocking(true)
            .context("cannot make the plugin socket non-blocking")?;
        Ok(Self { file })
    }

    /// The socket path.
    pub fn path(&self) -> &Path {
        self.file.path()
    }

    /// A tokio listener on the same socket.
    pub fn listener(&self) -> anyhow::Result<tokio::net::UnixListener> {
        let std_listener = self
            .file
            .as_file()
            .try_clone()
            .context("cannot clone the plugin socket")?;
        tokio::net::UnixListener::from_std(std_listener)
            .context("cannot register the plugin socket")
    }
}

fn resolve_group(group: &str) -> anyhow::Result<nix::unistd::Gid> {
    if let Ok(gid) = group.parse::<u32>() {
        return Ok(nix::unistd::Gid::from_raw(gid));
    }
    nix::unistd::Group::from_name(group)
        .with_context(|| format!("cannot look up group {group:?}"))?
        .map(|g| g.gid)
        .with_context(|| format!("PLUGIN_UNIX_SOCKET_GROUP names unknown group {group:?}"))
}

/// go-plugin's handshake line: `CORE|APP|unix|<path>|grpc|`.
pub fn handshake_line(socket: &Path) -> String {
    format!(
        "{CORE_PROTOCOL_VERSION}|{APP_PROTOCOL_VERSION}|unix|{}|grpc|\n",
        socket.display()
    )
}

/// Writes the handshake line as the first and only bytes of stdout, then
/// points fd 1 at /dev/null so nothing (not even a dependency) can write to
/// the channel the client reads the handshake from.
pub fn announce(socket: &Path) -> anyhow::Result<()> {
    let line = handshake_line(socket);
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(line.as_bytes())
        .context("cannot write the handshake to stdout")?;
    stdout.flush().context("cannot flush the handshake")?;
    drop(stdout);
    let devnull = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/null")
        .context("cannot open /dev/null")?;
    nix::unistd::dup2_stdout(&devnull).context("cannot detach stdout")?;
    Ok(())
}
