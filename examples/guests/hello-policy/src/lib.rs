//! The smallest policy guest: it builds as a WebAssembly component against
//! the SDK. It grows real hooks as the WIT contract does.

/// The WIT package this guest was written for.
pub fn package() -> &'static str {
    wasmdock_guest_sdk::WIT_PACKAGE
}
