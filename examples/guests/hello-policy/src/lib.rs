//! The smallest policy guest: it denies images tagged `:latest`.

use wasmdock_guest_sdk::task_admission::{Decision, Request};
use wasmdock_guest_sdk::{TaskAdmission, host};

struct NoLatest;

impl TaskAdmission for NoLatest {
    fn admit(request: Request) -> Decision {
        if request.image.ends_with(":latest") {
            host::warn("refusing a :latest image", &[("image", &request.image)]);
            return Decision::Deny(format!("{} uses the :latest tag", request.image));
        }
        Decision::Allow
    }
}

wasmdock_guest_sdk::export!(NoLatest => [task_admission]);
