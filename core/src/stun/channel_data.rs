//! TURN ChannelData messages (RFC 8656 §12.4): a checked view to read one,
//! and [`emit_header`] to write one in front of a payload.
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-------------------------------+-------------------------------+
//! |        Channel Number         |            Length             |
//! +-------------------------------+-------------------------------+
//! |                    Application Data (Length bytes)            |
//! ```
//!
//! Over UDP the datagram may carry padding after the data; over a stream the
//! message is padded to a multiple of four ([`frame_len`]).

use std::ops::Range;

use super::{classify, PacketKind};

/// Length of the ChannelData header.
pub const HEADER_LEN: usize = 4;

/// Why bytes are not a well-formed ChannelData message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ParseError {
    /// The first byte is not in the ChannelData range (RFC 7983).
    NotChannelData,
    /// Shorter than the header, or than the length the header declares.
    Truncated,
}

/// A validated ChannelData message over borrowed bytes.
#[derive(Debug, Clone, Copy)]
pub struct ChannelData<'a> {
    bytes: &'a [u8],
}

impl<'a> ChannelData<'a> {
    /// Validates `bytes` as one ChannelData message (bytes past its declared
    /// length are padding and ignored). No accessor can panic afterwards.
    pub fn new_checked(bytes: &'a [u8]) -> Result<Self, ParseError> {
        if classify(bytes) != PacketKind::ChannelData {
            return Err(ParseError::NotChannelData);
        }
        let Some(len) = declared_len(bytes) else {
            return Err(ParseError::Truncated);
        };
        if HEADER_LEN + len > bytes.len() {
            return Err(ParseError::Truncated);
        }
        Ok(ChannelData { bytes })
    }

    /// The channel number.
    pub fn number(&self) -> u16 {
        u16::from_be_bytes([self.bytes[0], self.bytes[1]])
    }

    /// Where the application data lies within the bytes given to [`Self::new_checked`].
    pub fn payload_range(&self) -> Range<usize> {
        HEADER_LEN..HEADER_LEN + declared_len(self.bytes).unwrap_or(0)
    }

    /// The application data.
    pub fn payload(&self) -> &'a [u8] {
        self.bytes.get(self.payload_range()).unwrap_or_default()
    }
}

/// The data length a header declares; `None` for fewer than four bytes.
fn declared_len(bytes: &[u8]) -> Option<usize> {
    match bytes {
        [_, _, a, b, ..] => Some(u16::from_be_bytes([*a, *b]) as usize),
        _ => None,
    }
}

/// The length of a ChannelData message on a stream, padding included, from
/// the start of its header; `None` until the four header bytes are there.
pub fn frame_len(prefix: &[u8]) -> Option<usize> {
    declared_len(prefix).map(|len| HEADER_LEN + len.next_multiple_of(4))
}

/// Writes the header of a ChannelData message on channel `number` carrying
/// `payload_len` bytes at the end of `headroom` (the bytes just before the
/// payload). Returns where the header starts in `headroom`, or `None` if it
/// does not fit there or the payload is too long.
pub fn emit_header(number: u16, payload_len: usize, headroom: &mut [u8]) -> Option<usize> {
    let len = u16::try_from(payload_len).ok()?;
    let start = headroom.len().checked_sub(HEADER_LEN)?;
    headroom[start..start + 2].copy_from_slice(&number.to_be_bytes());
    headroom[start + 2..].copy_from_slice(&len.to_be_bytes());
    Some(start)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emit_then_parse_round_trips() {
        for (number, payload) in [(0x4000u16, &b""[..]), (0x4FFF, b"abc"), (0x7FFF, b"four")] {
            let mut b = vec![0u8; HEADER_LEN + payload.len() + 3];
            let (head, rest) = b.split_at_mut(HEADER_LEN);
            assert_eq!(emit_header(number, payload.len(), head), Some(0));
            rest[..payload.len()].copy_from_slice(payload);
            let cd = ChannelData::new_checked(&b).unwrap();
            assert_eq!(cd.number(), number);
            assert_eq!(cd.payload(), payload);
            assert_eq!(&b[cd.payload_range()], payload);
            assert_eq!(frame_len(&b), Some(HEADER_LEN + payload.len().next_multiple_of(4)));
        }
    }

    #[test]
    fn rejects_what_is_not_channel_data() {
        assert_eq!(ChannelData::new_checked(&[]).unwrap_err(), ParseError::NotChannelData);
        assert_eq!(ChannelData::new_checked(&[0x00, 1, 0, 0]).unwrap_err(), ParseError::NotChannelData);
        assert_eq!(ChannelData::new_checked(&[0x80, 0, 0, 0]).unwrap_err(), ParseError::NotChannelData);
        assert_eq!(ChannelData::new_checked(&[0x40, 0, 0]).unwrap_err(), ParseError::Truncated);
        assert_eq!(ChannelData::new_checked(&[0x40, 0, 0, 2, 1]).unwrap_err(), ParseError::Truncated);
        assert_eq!(frame_len(&[0x40, 0, 0]), None);
        assert_eq!(emit_header(0x4000, 1, &mut [0; 3]), None);
        assert_eq!(emit_header(0x4000, 0x10000, &mut [0; 4]), None);
    }
}
