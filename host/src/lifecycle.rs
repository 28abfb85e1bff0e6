//! Process lifetime: one shutdown signal for the whole plugin.
//!
//! SIGTERM and go-plugin's `GRPCController.Shutdown` both trigger it. SIGINT
//! is ignored: the plugin shares the agent's process group, and Ctrl-C on the
//! agent must not kill plugins it wants to reattach to later.

use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;

/// Cloneable handle on the process-wide shutdown signal.
#[derive(Debug, Clone, Default)]
pub struct Shutdown(CancellationToken);

impl Shutdown {
    /// A new, untriggered signal.
    pub fn new() -> Self {
        Self::default()
    }

    /// Asks the whole plugin to stop.
    pub fn trigger(&self, reason: &str) {
        if !self.0.is_cancelled() {
            tracing::info!(reason, "shutting down");
        }
        self.0.cancel();
    }

    /// Whether shutdown has been asked for.
    pub fn is_triggered(&self) -> bool {
        self.0.is_cancelled()
    }

    /// Resolves once shutdown has been asked for.
    pub async fn wait(&self) {
        self.0.cancelled().await;
    }

    /// The underlying token, for child tokens of background work.
    pub fn token(&self) -> &CancellationToken {
        &self.0
    }
}

/// Installs the signal handlers: SIGTERM triggers `shutdown`, SIGINT is
/// swallowed. Must run inside the runtime before the handshake is written.
pub fn install_signal_handlers(shutdown: &Shutdown) -> std::io::Result<()> {
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    let shutdown = shutdown.clone();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = terminate.recv() => shutdown.trigger("SIGTERM"),
                _ = interrupt.recv() => tracing::debug!("ignoring SIGINT: the agent's process group got an interrupt"),
                () = shutdown.wait() => break,
            }
        }
    });
    Ok(())
}
