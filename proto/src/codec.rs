//! The protobuf codec of the API's servers and clients: prost's, except that a message that does
//! not decode (invalid UTF-8 in a string, a field of the wrong wire type, a truncated field) is
//! the sender's error, INVALID_ARGUMENT naming the message and prost's reason, where tonic-prost
//! answers INTERNAL, which says the server failed.

use std::marker::PhantomData;

use prost::Message;
use tonic::{
    Status,
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

#[cfg(test)]
mod tests {
    use tonic::Code;

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
}
