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

/// A FAILED_PRECONDITION status carrying Nomad's RecoverableError detail.
pub fn recoverable_status(message: &str, recoverable: bool) -> Status {
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
        let message = err.to_string();
        match err {
            DriverError::TaskNotFound(_) => Status::not_found(message),
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
}
