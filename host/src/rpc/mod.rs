//! The Nomad gRPC edge: the BasePlugin and Driver services. The only module
//! (with `plugin` and the dev client) that sees protobuf types; every call is
//! translated into a call on [`crate::driver::Driver`].

pub mod base;
pub mod convert;
pub mod driver;
pub mod exec;
pub mod proto;
pub mod status;

/// Largest request we decode. Go plugin servers accept 4 MiB; Nomad's client
/// sends up to 2 GiB, and a task config with a big environment can be large.
pub const MAX_DECODING_MESSAGE_SIZE: usize = 64 * 1024 * 1024;

/// A boxed server-streaming response.
pub type BoxStream<T> =
    std::pin::Pin<Box<dyn tokio_stream::Stream<Item = Result<T, tonic::Status>> + Send + 'static>>;
