//! The seam where a sample may be rewritten or dropped before it is sent:
//! the stats-transform policy hook plugs in here. The driver holds one
//! [`StatsTransform`]; without policies it is [`Unchanged`].

use std::fmt::Debug;

use super::{TaskIdentity, Usage};

/// Rewrites or drops one task's sample.
pub trait StatsTransform: Debug + Send + Sync {
    /// The sample to send, or `None` to drop it. May block for as long as
    /// a policy's deadline: the sampler calls it on a blocking thread
    /// unless [`StatsTransform::is_identity`] says there is nothing to do.
    fn transform(&self, identity: &TaskIdentity, usage: Usage) -> Option<Usage>;

    /// True when every sample goes out unchanged (no thread hop needed).
    fn is_identity(&self) -> bool {
        false
    }
}

/// Sends every sample as it is.
#[derive(Debug, Clone, Copy, Default)]
pub struct Unchanged;

impl StatsTransform for Unchanged {
    fn transform(&self, _identity: &TaskIdentity, usage: Usage) -> Option<Usage> {
        Some(usage)
    }

    fn is_identity(&self) -> bool {
        true
    }
}
