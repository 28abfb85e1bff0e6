//! Raw gRPC: any bytes to any method of the plugin, and the protobuf wire
//! format at the level a hostile client works at.
//!
//! [`RawClient`] sends a request body as is (tonic adds only the 5-byte
//! gRPC frame header) to a method path such as
//! `/hashicorp.nomad.plugins.drivers.proto.Driver/StartTask`, unary,
//! server-streaming or bidi, and hands back the response messages as raw
//! bytes. [`wire`] splits a message into its top-level fields and builds
//! fields of any wire type, so a test can truncate, retype or inflate a
//! valid request and knows which inputs no protobuf decoder can accept.

use bytes::{Buf as _, BufMut as _, Bytes};
use tonic::client::Grpc;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::Channel;
use tonic::{Status, Streaming};

/// A codec that writes its bytes unchanged and reads whole messages.
#[derive(Debug, Clone, Copy, Default)]
pub struct RawCodec;

impl Codec for RawCodec {
    type Encode = Bytes;
    type Decode = Bytes;
    type Encoder = Self;
    type Decoder = Self;

    fn encoder(&mut self) -> Self::Encoder {
        *self
    }

    fn decoder(&mut self) -> Self::Decoder {
        *self
    }
}

impl Encoder for RawCodec {
    type Item = Bytes;
    type Error = Status;

    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.reserve(item.len());
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for RawCodec {
    type Item = Bytes;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, Status> {
        let len = src.remaining();
        Ok(Some(src.copy_to_bytes(len)))
    }
}

/// A client sending raw request bodies over a plugin's channel.
#[derive(Debug, Clone)]
pub struct RawClient {
    grpc: Grpc<Channel>,
}

impl RawClient {
    /// A client over `channel`; responses of any size are accepted.
    pub fn new(channel: Channel) -> Self {
        Self {
            grpc: Grpc::new(channel).max_decoding_message_size(usize::MAX),
        }
    }

    async fn ready(&self, path: &str) -> Result<(Grpc<Channel>, PathAndQuery), Status> {
        let path = PathAndQuery::try_from(path.to_owned())
            .map_err(|err| Status::invalid_argument(format!("bad method path {path:?}: {err}")))?;
        let mut grpc = self.grpc.clone();
        grpc.ready()
            .await
            .map_err(|err| Status::unknown(format!("the channel is not ready: {err}")))?;
        Ok((grpc, path))
    }

    /// A unary call of `path` with `body` as the request message.
    pub async fn unary(&self, path: &str, body: Bytes) -> Result<Bytes, Status> {
        let (mut grpc, path) = self.ready(path).await?;
        grpc.unary(tonic::Request::new(body), path, RawCodec)
            .await
            .map(tonic::Response::into_inner)
    }

    /// A server-streaming call of `path` with `body` as the request message.
    pub async fn server_streaming(
        &self,
        path: &str,
        body: Bytes,
    ) -> Result<Streaming<Bytes>, Status> {
        let (mut grpc, path) = self.ready(path).await?;
        grpc.server_streaming(tonic::Request::new(body), path, RawCodec)
            .await
            .map(tonic::Response::into_inner)
    }

    /// A bidi call of `path` that sends `messages` and then closes its side.
    pub async fn streaming(
        &self,
        path: &str,
        messages: Vec<Bytes>,
    ) -> Result<Streaming<Bytes>, Status> {
        let (mut grpc, path) = self.ready(path).await?;
        let outbound = tokio_stream::iter(messages);
        grpc.streaming(tonic::Request::new(outbound), path, RawCodec)
            .await
            .map(tonic::Response::into_inner)
    }
}

/// The protobuf wire format, as far as a hostile client needs it.
pub mod wire {
    /// Wire type of varints.
    pub const VARINT: u8 = 0;
    /// Wire type of 64-bit fixed values.
    pub const FIXED64: u8 = 1;
    /// Wire type of length-delimited values (strings, bytes, messages).
    pub const LEN: u8 = 2;
    /// Wire type that opens a group (deprecated).
    pub const START_GROUP: u8 = 3;
    /// Wire type that closes a group (deprecated).
    pub const END_GROUP: u8 = 4;
    /// Wire type of 32-bit fixed values.
    pub const FIXED32: u8 = 5;

    /// One top-level field of a message.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct Field {
        /// Field number.
        pub number: u64,
        /// Wire type.
        pub wire_type: u8,
        /// The value's bytes: a varint's encoding, the fixed bytes, or a
        /// length-delimited field's content (without its length).
        pub value: Vec<u8>,
    }

    impl Field {
        /// A length-delimited field.
        pub fn len(number: u64, value: impl Into<Vec<u8>>) -> Self {
            Self {
                number,
                wire_type: LEN,
                value: value.into(),
            }
        }

        /// A varint field.
        pub fn varint(number: u64, value: u64) -> Self {
            let mut encoded = Vec::new();
            put_varint(&mut encoded, value);
            Self {
                number,
                wire_type: VARINT,
                value: encoded,
            }
        }

        /// A fixed 32-bit field.
        pub fn fixed32(number: u64, value: u32) -> Self {
            Self {
                number,
                wire_type: FIXED32,
                value: value.to_le_bytes().to_vec(),
            }
        }

        /// A fixed 64-bit field.
        pub fn fixed64(number: u64, value: u64) -> Self {
            Self {
                number,
                wire_type: FIXED64,
                value: value.to_le_bytes().to_vec(),
            }
        }

        /// Appends the field's encoding (key, length if any, value).
        pub fn encode_into(&self, out: &mut Vec<u8>) {
            put_key(out, self.number, self.wire_type);
            if self.wire_type == LEN {
                put_varint(out, self.value.len() as u64);
            }
            out.extend_from_slice(&self.value);
        }
    }

    /// Appends a base-128 varint.
    pub fn put_varint(out: &mut Vec<u8>, mut value: u64) {
        loop {
            let byte = (value & 0x7f) as u8;
            value >>= 7;
            if value == 0 {
                out.push(byte);
                return;
            }
            out.push(byte | 0x80);
        }
    }

    /// Appends a field key.
    pub fn put_key(out: &mut Vec<u8>, number: u64, wire_type: u8) {
        put_varint(out, (number << 3) | u64::from(wire_type & 7));
    }

    /// Encodes `fields` one after the other.
    pub fn encode(fields: &[Field]) -> Vec<u8> {
        let mut out = Vec::new();
        for field in fields {
            field.encode_into(&mut out);
        }
        out
    }

    fn varint(bytes: &[u8], pos: &mut usize) -> Result<u64, &'static str> {
        let mut value = 0u64;
        for shift in 0..10 {
            let Some(&byte) = bytes.get(*pos) else {
                return Err("truncated varint");
            };
            *pos += 1;
            if shift == 9 && byte > 1 {
                return Err("varint overflows 64 bits");
            }
            value |= u64::from(byte & 0x7f) << (shift * 7);
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err("varint longer than 10 bytes")
    }

    /// Splits a message into its top-level fields; `None` when it is not
    /// a well-formed sequence of fields without groups.
    pub fn fields(bytes: &[u8]) -> Option<Vec<Field>> {
        let mut pos = 0;
        let mut out = Vec::new();
        while pos < bytes.len() {
            let key = varint(bytes, &mut pos).ok()?;
            let (number, wire_type) = (key >> 3, (key & 7) as u8);
            if number == 0 || number > u64::from(u32::MAX >> 3) {
                return None;
            }
            let start = pos;
            let end = match wire_type {
                VARINT => {
                    varint(bytes, &mut pos).ok()?;
                    pos
                }
                FIXED64 => start.checked_add(8)?,
                FIXED32 => start.checked_add(4)?,
                LEN => {
                    let len = usize::try_from(varint(bytes, &mut pos).ok()?).ok()?;
                    let value_start = pos;
                    let end = value_start.checked_add(len)?;
                    if end > bytes.len() {
                        return None;
                    }
                    out.push(Field {
                        number,
                        wire_type,
                        value: bytes[value_start..end].to_vec(),
                    });
                    pos = end;
                    continue;
                }
                _ => return None,
            };
            if end > bytes.len() {
                return None;
            }
            out.push(Field {
                number,
                wire_type,
                value: bytes[start..end].to_vec(),
            });
            pos = end;
        }
        Some(out)
    }

    /// True only when no protobuf decoder can accept `bytes` as any
    /// message, whatever its fields: a truncated key, varint, fixed value
    /// or length, a field number 0, a wire type 6 or 7, or a stray group
    /// end. Anything it cannot rule out (groups included) counts as
    /// possibly well-formed.
    pub fn definitely_malformed(bytes: &[u8]) -> bool {
        let mut pos = 0;
        let mut open_groups: Vec<u64> = Vec::new();
        while pos < bytes.len() {
            let Ok(key) = varint(bytes, &mut pos) else {
                return true;
            };
            if key > u64::from(u32::MAX) {
                return true;
            }
            let (number, wire_type) = (key >> 3, (key & 7) as u8);
            if number == 0 {
                return true;
            }
            let skip = match wire_type {
                VARINT => match varint(bytes, &mut pos) {
                    Ok(_) => 0,
                    Err(_) => return true,
                },
                FIXED64 => 8,
                FIXED32 => 4,
                LEN => match varint(bytes, &mut pos) {
                    Ok(len) => match usize::try_from(len) {
                        Ok(len) => len,
                        Err(_) => return true,
                    },
                    Err(_) => return true,
                },
                START_GROUP => {
                    open_groups.push(number);
                    0
                }
                END_GROUP => {
                    if open_groups.pop() != Some(number) {
                        return true;
                    }
                    0
                }
                _ => return true,
            };
            match pos.checked_add(skip) {
                Some(end) if end <= bytes.len() => pos = end,
                _ => return true,
            }
        }
        // An unclosed group is an error too, but a decoder's view of
        // groups is not worth second-guessing here.
        false
    }
}
