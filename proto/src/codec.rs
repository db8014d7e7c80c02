//! The protobuf codec of the API's servers and clients: prost's, except that a message that does
//! not decode (invalid UTF-8 in a string, a field of the wrong wire type, a truncated field) is
//! the sender's error, INVALID_ARGUMENT naming the message and prost's reason, where tonic-prost
//! answers INTERNAL, which says the server failed. And a message over the size limit is
//! RESOURCE_EXHAUSTED, as gRPC's status code table has it ("message larger than configured
//! max"), where tonic answers OUT_OF_RANGE: [`too_large_is_resource_exhausted`], mapped over a
//! server's responses.

use std::marker::PhantomData;

use prost::Message;
use tonic::codegen::http;
use tonic::{
    Code, Status,
    codec::{BufferSettings, Codec, DecodeBuf, Decoder},
};
use tonic_prost::ProstCodec;

/// Encodes `T` as prost does and decodes `U`, refusing a malformed `U` as INVALID_ARGUMENT.
#[derive(Debug, Clone, Copy)]
pub struct ProtoCodec<T, U>(PhantomData<(T, U)>);

impl<T, U> Default for ProtoCodec<T, U> {
    fn default() -> Self {
        ProtoCodec(PhantomData)
    }
}

impl<T, U> Codec for ProtoCodec<T, U>
where
    T: Message + Send + 'static,
    U: Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = <ProstCodec<T, U> as Codec>::Encoder;
    type Decoder = ProtoDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstCodec::<T, U>::raw_encoder(BufferSettings::default())
    }

    fn decoder(&mut self) -> Self::Decoder {
        ProtoDecoder(PhantomData)
    }
}

/// See [`ProtoCodec`].
#[derive(Debug, Clone, Copy)]
pub struct ProtoDecoder<U>(PhantomData<U>);

impl<U: Message + Default> Decoder for ProtoDecoder<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        decode(buf).map(Some)
    }
}

/// `U` from `buf`; INVALID_ARGUMENT with prost's reason when it is not one.
pub fn decode<U: Message + Default>(buf: impl prost::bytes::Buf) -> Result<U, Status> {
    U::decode(buf).map_err(|error| {
        let name = std::any::type_name::<U>().rsplit("::").next().unwrap_or_default();
        Status::invalid_argument(format!("the message is not a valid {name}: {error}"))
    })
}

/// A response whose status is tonic's OUT_OF_RANGE for a message over the size limit, with
/// RESOURCE_EXHAUSTED instead (message kept); any other response as it is. For
/// `tower::util::MapResponseLayer` on a server: the status of a request that failed to decode
/// is in the response's headers.
pub fn too_large_is_resource_exhausted<B>(mut response: http::Response<B>) -> http::Response<B> {
    let too_large = Status::from_header_map(response.headers()).is_some_and(|status| {
        status.code() == Code::OutOfRange && status.message().contains("message length too large")
    });
    if too_large {
        let code = http::HeaderValue::from(Code::ResourceExhausted as i32);
        response.headers_mut().insert(GRPC_STATUS, code);
    }
    response
}

const GRPC_STATUS: &str = "grpc-status";
#[cfg(test)]
mod tests {
    use super::*;
    use crate::data_management::DatasetPointer;

    #[test]
    fn a_malformed_message_is_the_senders_error() {
        // Field 1 (dataset_id, a string) holding invalid UTF-8.
        let status = decode::<DatasetPointer>(&[0x0a, 0x02, 0xff, 0xfe][..]).unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument);
        assert!(
            status
                .message()
                .starts_with("the message is not a valid DatasetPointer: "),
            "{status:?}"
        );
        // Truncated.
        let truncated = decode::<DatasetPointer>(&[0x0a, 0x05, b'a'][..]).unwrap_err();
        assert_eq!(truncated.code(), Code::InvalidArgument);
        // A valid one decodes.
        let valid: DatasetPointer = decode(&[0x0a, 0x01, b'7'][..]).unwrap();
        assert_eq!(valid.dataset_id, "7");
    }

    #[test]
    fn a_message_over_the_limit_is_resource_exhausted() {
        let code = |response: http::Response<()>| Status::from_header_map(response.headers()).unwrap().code();
        let too_large = Status::out_of_range(
            "Error, decoded message length too large: found 67108869 bytes, the limit is: 4194304 bytes",
        );
        let mapped = too_large_is_resource_exhausted(too_large.clone().into_http::<()>());
        assert_eq!(code(mapped), Code::ResourceExhausted);
        let message =
            Status::from_header_map(too_large_is_resource_exhausted(too_large.into_http::<()>()).headers())
                .unwrap();
        assert!(message.message().contains("found 67108869 bytes"), "{message:?}");
        // Any other status stays.
        for other in [
            Status::out_of_range("epoch 9 of 5"),
            Status::invalid_argument("message length too large"),
        ] {
            let before = other.code();
            assert_eq!(
                code(too_large_is_resource_exhausted(other.into_http::<()>())),
                before
            );
        }
    }
}
