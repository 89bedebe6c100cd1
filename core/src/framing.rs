//! Framing of STUN and ChannelData messages on a byte stream (TCP), RFC 8656 §12.5.
//!
//! Over a stream, a STUN message is delimited by its header's length field and
//! a ChannelData message by its length field rounded up to a multiple of four.
//! A [`StreamFramer`] owns one connection's reassembly buffer. Frames are
//! handed out as ranges of that buffer, which stay valid until the owner calls
//! [`StreamFramer::compact`]; compacted between reads, it holds at most
//! [`MAX_FRAME`] plus one read and is reused, so framing costs no allocation
//! per message.

use std::ops::Range;

use crate::stun::{channel_data, classify, view, PacketKind};

/// The largest frame: a STUN header plus the largest 16-bit body.
pub const MAX_FRAME: usize = 20 + 0xFFFF;

/// Why a stream can no longer be framed; the connection should be closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum FramingError {
    /// The next bytes are neither STUN nor ChannelData, so message boundaries are lost.
    Desynchronized,
}

/// Reassembles frames from stream bytes.
#[derive(Debug, Default)]
pub struct StreamFramer {
    buf: Vec<u8>,
    start: usize,
}

/// The length of the frame at the front of `bytes`: `Ok(None)` if more
/// bytes are needed to tell or to complete it.
pub fn frame_len(bytes: &[u8]) -> Result<Option<usize>, FramingError> {
    let len = match classify(bytes) {
        PacketKind::Stun => view::message_len(bytes).map_err(|_| FramingError::Desynchronized)?,
        PacketKind::ChannelData => channel_data::frame_len(bytes),
        PacketKind::Other if bytes.is_empty() => None,
        PacketKind::Other => return Err(FramingError::Desynchronized),
    };
    Ok(len.filter(|n| bytes.len() >= *n))
}

impl StreamFramer {
    /// An empty framer.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends bytes read from the stream. Bytes already buffered stay where
    /// they are, so ranges from [`Self::next_frame`] remain valid.
    pub fn push(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// Drops the frames already returned, when that is cheap (all of them
    /// were) or when they pile up (a frame's worth). Ranges from
    /// [`Self::next_frame`] are invalid afterwards: call it only when nothing
    /// borrows them any more.
    pub fn compact(&mut self) {
        if self.start > 0 && (self.start == self.buf.len() || self.start >= MAX_FRAME) {
            self.buf.drain(..self.start);
            self.start = 0;
        }
    }

    /// Bytes buffered but not yet returned as frames.
    pub fn pending(&self) -> usize {
        self.buf.len() - self.start
    }

    /// The range, within [`Self::buffer`], of the next complete frame, which
    /// is consumed. `Ok(None)` when no complete frame is buffered.
    pub fn next_frame(&mut self) -> Result<Option<Range<usize>>, FramingError> {
        let rest = &self.buf[self.start..];
        match frame_len(rest)? {
            Some(n) => {
                let r = self.start..self.start + n;
                self.start += n;
                Ok(Some(r))
            }
            None => Ok(None),
        }
    }

    /// Takes everything buffered and not yet handed out, unframed (a TCP
    /// relay's bytes, RFC 6062): its range within [`Self::buffer`].
    pub fn take_rest(&mut self) -> Range<usize> {
        let r = self.start..self.buf.len();
        self.start = self.buf.len();
        r
    }

    /// The buffer that ranges from [`Self::next_frame`] index into.
    pub fn buffer(&self) -> &[u8] {
        &self.buf
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_stun_and_padded_channel_data_across_reads() {
        let mut stream = Vec::new();
        let mut stun = vec![0u8, 1, 0, 4, 0x21, 0x12, 0xA4, 0x42];
        stun.extend_from_slice(&[0; 12]);
        stun.extend_from_slice(&[0x80, 0x22, 0, 0]);
        stream.extend_from_slice(&stun);
        stream.extend_from_slice(&[0x40, 0x00, 0, 5, 1, 2, 3, 4, 5, 0, 0, 0]);
        let mut f = StreamFramer::new();
        let mut frames = Vec::new();
        for chunk in stream.chunks(3) {
            f.compact();
            f.push(chunk);
            while let Some(r) = f.next_frame().unwrap() {
                frames.push(f.buffer()[r].to_vec());
            }
        }
        assert_eq!(frames.len(), 2);
        assert_eq!(frames[0], stun);
        assert_eq!(frames[1].len(), 12);
        assert_eq!(f.pending(), 0);
    }

    #[test]
    fn garbage_desynchronizes() {
        let mut f = StreamFramer::new();
        // A TLS ClientHello (first byte 22) on the plain port.
        f.push(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03");
        assert_eq!(f.next_frame(), Err(FramingError::Desynchronized));
    }
}
