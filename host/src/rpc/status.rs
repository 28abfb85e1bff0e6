//! Driver errors as gRPC statuses — the one place that decides codes.
//!
//! Recoverable start failures go out exactly as Nomad's Go server sends
//! them: FAILED_PRECONDITION with a `google.rpc.Status` detail whose first
//! entry is a `RecoverableError{recoverable}`; the client reads only that.

use prost::Message as _;
use tonic::{Code, Status};

use super::proto::google::rpc::Status as RichStatus;
use super::proto::structs::RecoverableError;
use crate::driver::error::DriverError;

/// Type URL of Nomad's recoverable-error detail.
pub const RECOVERABLE_TYPE_URL: &str =
    "type.googleapis.com/hashicorp.nomad.plugins.shared.structs.RecoverableError";

/// Longest status message sent (bytes). Messages can quote what a client
/// sent (a task id, a config key); a quoted 3 MiB id would make a status
/// header no HTTP/2 client accepts, so the rest is cut off and counted.
pub const MAX_MESSAGE_BYTES: usize = 4096;

/// `message`, cut to at most [`MAX_MESSAGE_BYTES`] (at a character
/// boundary) with a note of how much was left out.
pub fn bounded(message: &str) -> std::borrow::Cow<'_, str> {
    if message.len() <= MAX_MESSAGE_BYTES {
        return message.into();
    }
    let mut end = MAX_MESSAGE_BYTES;
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… ({} more bytes)", &message[..end], message.len() - end).into()
}

/// A FAILED_PRECONDITION status carrying Nomad's RecoverableError detail.
pub fn recoverable_status(message: &str, recoverable: bool) -> Status {
    let message = &*bounded(message);
    let detail = prost_types::Any {
        type_url: RECOVERABLE_TYPE_URL.to_owned(),
        value: RecoverableError { recoverable }.encode_to_vec(),
    };
    let rich = RichStatus {
        code: Code::FailedPrecondition as i32,
        message: message.to_owned(),
        details: vec![detail],
    };
    Status::with_details(
        Code::FailedPrecondition,
        message,
        rich.encode_to_vec().into(),
    )
}

impl From<DriverError> for Status {
    fn from(err: DriverError) -> Self {
        let message = bounded(&err.to_string()).into_owned();
        match err {
            DriverError::TaskNotFound(_) | DriverError::NotFound(_) => Status::not_found(message),
            DriverError::InvalidConfig(_) | DriverError::InvalidRequest(_) => {
                Status::invalid_argument(message)
            }
            DriverError::AlreadyStarted(_) => Status::already_exists(message),
            DriverError::NotConfigured => Status::failed_precondition(message),
            DriverError::Recoverable { recoverable, .. } => {
                tracing::warn!(recoverable, "{message}");
                recoverable_status(&message, recoverable)
            }
            DriverError::Failed(_) => {
                tracing::warn!("{message}");
                Status::unknown(message)
            }
        }
    }
}

/// The `recoverable` flag carried by a status, as Nomad's client reads it
/// (`None` when the status has no RecoverableError detail).
pub fn recoverable_flag(status: &Status) -> Option<bool> {
    let rich = RichStatus::decode(status.details()).ok()?;
    let first = rich.details.first()?;
    (first.type_url == RECOVERABLE_TYPE_URL)
        .then(|| {
            RecoverableError::decode(first.value.as_slice())
                .ok()
                .map(|e| e.recoverable)
        })
        .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recoverable_errors_carry_nomads_detail() {
        let status: Status = DriverError::recoverable("pull failed").into();
        assert_eq!(status.code(), Code::FailedPrecondition);
        assert_eq!(status.message(), "pull failed");
        assert_eq!(recoverable_flag(&status), Some(true));
        let status: Status = DriverError::unrecoverable("no such image").into();
        assert_eq!(recoverable_flag(&status), Some(false));
        let status: Status = DriverError::TaskNotFound("x".to_owned()).into();
        assert_eq!(status.code(), Code::NotFound);
        assert_eq!(recoverable_flag(&status), None);
    }

    #[test]
    fn messages_quoting_huge_input_are_cut() {
        let id = "é".repeat(2 * 1024 * 1024);
        let status: Status = DriverError::TaskNotFound(id).into();
        assert_eq!(status.code(), Code::NotFound);
        assert!(status.message().len() < MAX_MESSAGE_BYTES + 64);
        assert!(
            status
                .message()
                .starts_with("task not found for given id: éé")
        );
        assert!(
            status.message().ends_with(" more bytes)"),
            "{}",
            &status.message()[4000..]
        );
        let status = recoverable_status(&"x".repeat(10_000), true);
        assert!(status.message().len() < MAX_MESSAGE_BYTES + 64);
        assert_eq!(recoverable_flag(&status), Some(true));
        assert_eq!(bounded("short"), "short");
    }
}
