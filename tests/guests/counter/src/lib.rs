//! A test guest that reveals whether state survives between calls.
//!
//! Every `admit` call increments a `static` counter and denies with
//! `call N`. The host promises a fresh instance per evaluation, so N must
//! always be 1; any larger number means an instance (or its memory) was
//! reused.

use std::sync::atomic::{AtomicU32, Ordering};

use wasmdock_guest_sdk::TaskAdmission;
use wasmdock_guest_sdk::task_admission::{Decision, Request};

/// Calls seen by this instance.
static CALLS: AtomicU32 = AtomicU32::new(0);

/// Counts one call and returns its number, starting at 1.
fn next_call() -> u32 {
    CALLS.fetch_add(1, Ordering::Relaxed).wrapping_add(1)
}

struct Counter;

impl TaskAdmission for Counter {
    fn admit(_request: Request) -> Decision {
        Decision::Deny(format!("call {}", next_call()))
    }
}

wasmdock_guest_sdk::export!(Counter => [task_admission]);

#[cfg(test)]
mod tests {
    use super::next_call;

    #[test]
    fn counts_up_within_one_instance() {
        let first = next_call();
        assert_eq!(next_call(), first + 1);
    }
}
