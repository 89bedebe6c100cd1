//! IVF, the container of libvpx: a 32-byte file header, then per frame a
//! 12-byte header (size, pts) and the frame.
//!
//! The header as ffmpeg's `ivfdec` reads it (libavformat/ivfdec.c): "DKIF",
//! version (u16), header size (u16), fourcc, width and height (u16), then the
//! time base as *denominator* at offset 16 and numerator at 20, and at offset
//! 24 a u32 it takes as the stream's duration in time-base units. libvpx
//! calls that field the frame count; with ffmpeg's own time base of 1/fps the
//! two agree. We use a time base of 1/1000 and write the duration in ms there,
//! so ffprobe reports the real duration.

/// Size of the file header.
pub(crate) const HEADER_LEN: usize = 32;
/// Offset of the duration field that is patched while recording.
pub(crate) const DURATION_AT: u64 = 24;
/// Time base denominator: pts and duration are in milliseconds.
pub(crate) const TIMEBASE_DEN: u32 = 1000;

/// The 32-byte file header.
pub(crate) fn header(fourcc: &[u8; 4], width: u16, height: u16, duration_ms: u32) -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    let fields: [(usize, &[u8]); 9] = [
        (0, b"DKIF"),
        (4, &0u16.to_le_bytes()),
        (6, &(HEADER_LEN as u16).to_le_bytes()),
        (8, fourcc),
        (12, &width.to_le_bytes()),
        (14, &height.to_le_bytes()),
        (16, &TIMEBASE_DEN.to_le_bytes()),
        (20, &1u32.to_le_bytes()),
        (24, &duration_ms.to_le_bytes()),
    ];
    for (at, bytes) in fields {
        if let Some(dst) = h.get_mut(at..at + bytes.len()) {
            dst.copy_from_slice(bytes);
        }
    }
    h
}

/// One frame record: 4-byte size, 8-byte pts, the frame.
pub(crate) fn frame(pts_ms: u64, data: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(12 + data.len());
    // Frames are capped far below 4 GiB by the assembler.
    f.extend_from_slice(&u32::try_from(data.len()).unwrap_or(u32::MAX).to_le_bytes());
    f.extend_from_slice(&pts_ms.to_le_bytes());
    f.extend_from_slice(data);
    f
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_layout() {
        let h = header(b"VP80", 320, 240, 10_000);
        assert_eq!(&h[0..4], b"DKIF");
        assert_eq!(u16::from_le_bytes([h[4], h[5]]), 0);
        assert_eq!(u16::from_le_bytes([h[6], h[7]]), 32);
        assert_eq!(&h[8..12], b"VP80");
        assert_eq!(u16::from_le_bytes([h[12], h[13]]), 320);
        assert_eq!(u16::from_le_bytes([h[14], h[15]]), 240);
        assert_eq!(u32::from_le_bytes([h[16], h[17], h[18], h[19]]), 1000, "ffmpeg reads the denominator first");
        assert_eq!(u32::from_le_bytes([h[20], h[21], h[22], h[23]]), 1);
        assert_eq!(u32::from_le_bytes([h[24], h[25], h[26], h[27]]), 10_000);
        assert_eq!(&h[28..32], &[0; 4]);
    }

    #[test]
    fn frame_layout() {
        let f = frame(0x0102_0304_0506, &[9, 8, 7]);
        assert_eq!(f, [3, 0, 0, 0, 6, 5, 4, 3, 2, 1, 0, 0, 9, 8, 7]);
    }
}
