//! The limits the host enforces on a guest's answers, and a helper to stay
//! within them. An answer that breaks one is an error, not a decision, so
//! guests that echo untrusted text (image names, container names) into a
//! reason should [`clip`] it.

/// Longest reason or message (deny, ours, not-ours, reject), in bytes.
pub const MAX_REASON: usize = 4096;
/// Longest name (label key, environment variable, runtime, capability).
pub const MAX_NAME: usize = 256;
/// Longest label or environment value.
pub const MAX_VALUE: usize = 16 * 1024;
/// Most entries in one patch list (labels, env, capabilities, options).
pub const MAX_PATCH_ENTRIES: usize = 64;
/// Most device requests in a GPU selection.
pub const MAX_DEVICE_REQUESTS: usize = 16;
/// Most breakdown entries in a stats sample.
pub const MAX_BREAKDOWN: usize = 32;
/// Longest breakdown key.
pub const MAX_BREAKDOWN_KEY: usize = 128;
/// The whole answer, in bytes.
pub const MAX_ANSWER: usize = 64 * 1024;

/// Cuts `text` to at most `max` bytes on a character boundary, marking the
/// cut with `…`, and replaces NUL characters (which the host refuses).
///
/// ```
/// use wasmdock_guest_sdk::limits::clip;
/// assert_eq!(clip("é".repeat(10), 6), "é…");
/// assert_eq!(clip("a\0b".into(), 10), "a\u{fffd}b");
/// ```
pub fn clip(mut text: String, max: usize) -> String {
    if text.contains('\0') {
        text = text.replace('\0', "\u{fffd}");
    }
    if text.len() > max {
        let room = max.saturating_sub('…'.len_utf8());
        let cut = (0..=room)
            .rev()
            .find(|&i| text.is_char_boundary(i))
            .unwrap_or(0);
        text.truncate(cut);
        text.push('…');
    }
    text
}
