//! The Docker engine adapter: the only module that knows bollard.
//!
//! [`Docker`] wraps a bollard client with the calls the driver makes, each
//! bounded by a timeout, and turns engine answers into [`DockerError`]
//! variants the driver can reason about (not found, conflict, not modified,
//! timeout) so no HTTP status code leaks out of this module.

pub mod auth;
pub mod container;
pub mod engine;
pub mod exec;
pub mod image;
pub mod logs;
pub mod reference;
pub mod spec;
pub mod stats;

use std::time::Duration;

use crate::config::PluginConfig;

/// Timeout of ordinary engine calls (inspect, create, remove, …).
pub const CALL_TIMEOUT: Duration = Duration::from_secs(120);

/// What went wrong talking to the engine.
#[derive(Debug, thiserror::Error)]
pub enum DockerError {
    /// The object (container, image, network, exec) does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The request conflicts with the object's state (name in use, …).
    #[error("{0}")]
    Conflict(String),
    /// Nothing to do (container already stopped or started).
    #[error("not modified")]
    NotModified,
    /// The engine did not answer in time.
    #[error("timed out after {0:?} waiting for the Docker engine")]
    Timeout(Duration),
    /// The engine answered with an error.
    #[error("Docker responded with status code {status}: {message}")]
    Engine {
        /// HTTP status code.
        status: u16,
        /// The engine's message.
        message: String,
    },
    /// The engine could not be reached or the answer could not be read.
    #[error("{0}")]
    Transport(String),
    /// The client could not be set up from the plugin config.
    #[error("cannot set up the Docker client: {0}")]
    Setup(String),
}

impl DockerError {
    /// Whether a retry may succeed (engine unreachable, timed out, 5xx).
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Timeout(_) | Self::Transport(_) => true,
            Self::Engine { status, .. } => *status >= 500,
            _ => false,
        }
    }

    /// The message, for error texts that quote the engine.
    pub fn message(&self) -> String {
        match self {
            Self::NotFound(m) | Self::Conflict(m) | Self::Transport(m) | Self::Setup(m) => {
                m.clone()
            }
            Self::Engine { message, .. } => message.clone(),
            other => other.to_string(),
        }
    }
}

impl From<bollard::errors::Error> for DockerError {
    fn from(err: bollard::errors::Error) -> Self {
        use bollard::errors::Error as E;
        match err {
            E::DockerResponseServerError {
                status_code: 404,
                message,
            } => Self::NotFound(message),
            E::DockerResponseServerError {
                status_code: 409,
                message,
            } => Self::Conflict(message),
            E::DockerResponseServerError {
                status_code: 304, ..
            } => Self::NotModified,
            E::DockerResponseServerError {
                status_code,
                message,
            } => Self::Engine {
                status: status_code,
                message,
            },
            E::RequestTimeoutError => Self::Timeout(CALL_TIMEOUT),
            other => Self::Transport(other.to_string()),
        }
    }
}

/// Result of an engine call.
pub type Result<T, E = DockerError> = std::result::Result<T, E>;

/// Runs `call` with a deadline.
pub(crate) async fn bounded<T>(
    timeout: Duration,
    call: impl Future<Output = std::result::Result<T, bollard::errors::Error>>,
) -> Result<T> {
    match tokio::time::timeout(timeout, call).await {
        Ok(result) => result.map_err(DockerError::from),
        Err(_) => Err(DockerError::Timeout(timeout)),
    }
}

/// A connection to the Docker engine.
#[derive(Debug, Clone)]
pub struct Docker {
    client: bollard::Docker,
}

impl Docker {
    /// A client for the plugin config's `endpoint`, or from `DOCKER_HOST`
    /// when it is empty. No request is made here.
    pub fn connect(config: &PluginConfig) -> Result<Self> {
        let endpoint = config.endpoint.trim();
        let tls = &config.tls;
        let client = if endpoint.is_empty() {
            bollard::Docker::connect_with_defaults()
        } else if !tls.cert.is_empty() || !tls.key.is_empty() || !tls.ca.is_empty() {
            // Nomad uses the tls block only together with an endpoint.
            for (key, path) in [
                ("tls.cert", &tls.cert),
                ("tls.key", &tls.key),
                ("tls.ca", &tls.ca),
            ] {
                if path.is_empty() {
                    return Err(DockerError::Setup(format!(
                        "{key} must be set when any TLS file is"
                    )));
                }
            }
            bollard::Docker::connect_with_ssl(
                endpoint,
                std::path::Path::new(&tls.key),
                std::path::Path::new(&tls.cert),
                std::path::Path::new(&tls.ca),
                CALL_TIMEOUT.as_secs(),
                bollard::API_DEFAULT_VERSION,
            )
        } else {
            bollard::Docker::connect_with_host(endpoint)
        }
        .map_err(|e| match e {
            // The engine is not running (yet, or while it restarts): as
            // transient as a refused connection.
            bollard::errors::Error::SocketNotFoundError(path) => DockerError::Transport(format!(
                "no Docker engine listens on {path}: the socket does not exist"
            )),
            other => DockerError::Setup(other.to_string()),
        })?;
        Ok(Self {
            client: client.with_timeout(CALL_TIMEOUT),
        })
    }

    /// Agrees on an API version with the engine (Docker 20.10 speaks 1.41),
    /// so requests are not refused as "client version too new".
    pub async fn negotiate(self) -> Result<Self> {
        let client = bounded(Duration::from_secs(30), self.client.negotiate_version()).await?;
        Ok(Self { client })
    }

    /// The bollard client, for the submodules.
    pub(crate) fn api(&self) -> &bollard::Docker {
        &self.client
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_needs_all_three_files_and_readable_ones() {
        let mut config = PluginConfig {
            endpoint: "tcp://127.0.0.1:2376".to_owned(),
            ..PluginConfig::default()
        };
        config.tls.cert = "/nonexistent/cert.pem".to_owned();
        let err = Docker::connect(&config).unwrap_err().to_string();
        assert!(err.contains("tls.key must be set"), "{err}");
        config.tls.key = "/nonexistent/key.pem".to_owned();
        config.tls.ca = "/nonexistent/ca.pem".to_owned();
        let err = Docker::connect(&config).unwrap_err().to_string();
        assert!(err.contains("cannot set up the Docker client"), "{err}");
    }

    #[test]
    fn endpoints_are_checked_without_a_request() {
        let connect = |endpoint: &str| {
            Docker::connect(&PluginConfig {
                endpoint: endpoint.to_owned(),
                ..PluginConfig::default()
            })
        };
        assert!(connect("tcp://127.0.0.1:1").is_ok(), "tcp connects lazily");
        // A unix socket must exist; a fingerprint then reports the engine
        // undetected. Its absence is transient: the engine may be restarting.
        let missing = connect("unix:///nonexistent.sock").unwrap_err();
        assert!(missing.is_transient(), "{missing}");
        assert!(
            missing.to_string().contains("/nonexistent.sock"),
            "{missing}"
        );
        assert!(connect("ftp://x").is_err());
    }
}
