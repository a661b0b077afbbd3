//! Framing of the KMS API: a request or response body is a sequence of frames
//! `u16 big-endian command id | u32 big-endian length | protobuf message`.

// Input from the network or from a C caller must never panic here: no
// unwrap, expect or unchecked indexing (tests excepted).
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)
)]

use bytes::{BufMut, BytesMut};

use crate::cmd::Command;

/// Size of a frame header.
pub const HEADER_LEN: usize = 6;

/// One decoded frame, borrowing its payload from the body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame<'a> {
    /// The raw command id (not necessarily a known command).
    pub id: u16,
    /// The protobuf payload.
    pub payload: &'a [u8],
}

/// Why a body is not a valid sequence of frames.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("truncated frame header at byte {offset}: {remaining} bytes left, a header needs 6")]
    TruncatedHeader { offset: usize, remaining: usize },
    #[error("frame at byte {offset} declares {declared} bytes but only {remaining} remain")]
    TruncatedPayload {
        offset: usize,
        declared: u32,
        remaining: usize,
    },
    #[error("empty request body: at least one frame is required")]
    Empty,
}

/// Iterates over the frames of a body. Yields an error (and then stops) at the
/// first malformed frame.
pub fn frames(body: &[u8]) -> Frames<'_> {
    Frames {
        body,
        offset: 0,
        failed: false,
    }
}

/// Iterator returned by [`frames`].
pub struct Frames<'a> {
    body: &'a [u8],
    offset: usize,
    failed: bool,
}

impl<'a> Iterator for Frames<'a> {
    type Item = Result<Frame<'a>, FrameError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.offset >= self.body.len() {
            return None;
        }
        let rest = self.body.get(self.offset..).unwrap_or_default();
        let Some((head, tail)) = rest.split_first_chunk::<HEADER_LEN>() else {
            self.failed = true;
            return Some(Err(FrameError::TruncatedHeader {
                offset: self.offset,
                remaining: rest.len(),
            }));
        };
        let [i0, i1, l0, l1, l2, l3] = *head;
        let id = u16::from_be_bytes([i0, i1]);
        let len = u32::from_be_bytes([l0, l1, l2, l3]);
        let Some(payload) = usize::try_from(len).ok().and_then(|n| tail.get(..n)) else {
            self.failed = true;
            return Some(Err(FrameError::TruncatedPayload {
                offset: self.offset,
                declared: len,
                remaining: tail.len(),
            }));
        };
        self.offset += HEADER_LEN + payload.len();
        Some(Ok(Frame { id, payload }))
    }
}

/// Decodes a whole body into frames, or the first error.
pub fn decode_all(body: &[u8]) -> Result<Vec<Frame<'_>>, FrameError> {
    if body.is_empty() {
        return Err(FrameError::Empty);
    }
    frames(body).collect()
}

/// Appends one frame holding `msg` to `buf`.
pub fn encode<M: prost::Message>(buf: &mut BytesMut, cmd: u16, msg: &M) {
    let len = msg.encoded_len();
    buf.reserve(HEADER_LEN + len);
    buf.put_u16(cmd);
    buf.put_u32(len as u32);
    // Cannot fail: BytesMut grows as needed (and capacity was reserved).
    let _ = msg.encode(buf);
}

/// Encodes a batch of messages of one command into a body.
pub fn encode_batch<M: prost::Message>(cmd: Command, msgs: &[M]) -> BytesMut {
    let mut buf = BytesMut::new();
    for m in msgs {
        encode(&mut buf, cmd as u16, m);
    }
    buf
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::KeyStatusRequest;
    use proptest::prelude::*;

    #[test]
    fn roundtrip() {
        let msgs = vec![
            KeyStatusRequest {
                name: "a".into(),
                version: 0,
            },
            KeyStatusRequest {
                name: "bb".into(),
                version: 7,
            },
            KeyStatusRequest::default(),
        ];
        let body = encode_batch(Command::KeyStatus, &msgs);
        let fr = decode_all(&body).unwrap();
        assert_eq!(fr.len(), 3);
        for (f, m) in fr.iter().zip(&msgs) {
            assert_eq!(f.id, 204);
            assert_eq!(
                &<KeyStatusRequest as prost::Message>::decode(f.payload).unwrap(),
                m
            );
        }
        // Golden bytes: id 204, length 3, field 1 = "a".
        assert_eq!(&body[..9], &[0, 204, 0, 0, 0, 3, 0x0a, 1, b'a']);
    }

    #[test]
    fn malformed() {
        assert_eq!(decode_all(&[]), Err(FrameError::Empty));
        assert!(matches!(
            decode_all(&[0, 1, 0]),
            Err(FrameError::TruncatedHeader { .. })
        ));
        assert!(matches!(
            decode_all(&[0, 1, 0, 0, 0, 5, 1, 2]),
            Err(FrameError::TruncatedPayload {
                declared: 5,
                remaining: 2,
                ..
            })
        ));
        assert!(matches!(
            decode_all(&[0, 1, 0xff, 0xff, 0xff, 0xff]),
            Err(FrameError::TruncatedPayload { .. })
        ));
    }

    proptest! {
        #[test]
        fn random_bytes_never_panic(body in proptest::collection::vec(any::<u8>(), 0..512)) {
            if let Ok(frames) = decode_all(&body) {
                let total: usize = frames.iter().map(|f| HEADER_LEN + f.payload.len()).sum();
                prop_assert_eq!(total, body.len());
                for f in frames {
                    let _ = <crate::proto::DecryptRequest as prost::Message>::decode(f.payload);
                    let _ = <crate::proto::CreatePolicyRequest as prost::Message>::decode(f.payload);
                    let _ = <crate::proto::ListKeysResponse as prost::Message>::decode(f.payload);
                }
            }
        }
    }
}
