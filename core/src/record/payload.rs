//! Video RTP payload formats, parsed by hand with checked reads: VP8 (RFC 7741),
//! VP9 (RFC 9628) and H.264 (RFC 6184: single NAL unit, STAP-A, FU-A).
//!
//! Each parser says whether a packet starts a frame and whether that frame is
//! a keyframe, and hands back (or writes) the codec bytes the packet carries.

/// What one VP8 or VP9 packet holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Vpx<'a> {
    /// The packet starts a frame (for VP9: a frame of spatial layer 0).
    pub head: bool,
    /// The packet ends the frame without a marker bit (VP9's E flag).
    pub end: bool,
    /// A packet of a layer we do not record (VP9 spatial layers above 0).
    pub skip: bool,
    /// The codec bytes after the payload descriptor.
    pub data: &'a [u8],
}

/// Parse a VP8 payload descriptor (RFC 7741 §4.2).
pub(crate) fn vp8(p: &[u8]) -> Option<Vpx<'_>> {
    let b0 = *p.first()?;
    let mut i = 1;
    if b0 & 0x80 != 0 {
        let x = *p.get(i)?;
        i += 1;
        if x & 0x80 != 0 {
            // PictureID: 7 or 15 bits (M bit)
            i += if *p.get(i)? & 0x80 != 0 { 2 } else { 1 };
        }
        if x & 0x40 != 0 {
            i += 1; // TL0PICIDX
        }
        if x & 0x30 != 0 {
            i += 1; // TID/Y/KEYIDX
        }
    }
    let data = p.get(i..)?;
    let head = b0 & 0x10 != 0 && b0 & 0x07 == 0;
    Some(Vpx { head, end: false, skip: false, data })
}

/// Whether a VP8 frame (its first bytes) is a keyframe: the P bit of the frame tag is 0 (RFC 6386 §9.1).
pub(crate) fn vp8_keyframe(frame: &[u8]) -> bool {
    frame.first().is_some_and(|b| b & 0x01 == 0)
}

/// Width and height from a VP8 keyframe header: frame tag, start code 9d 01 2a, 14-bit sizes.
pub(crate) fn vp8_size(frame: &[u8]) -> Option<(u16, u16)> {
    if !vp8_keyframe(frame) || frame.get(3..6)? != [0x9d, 0x01, 0x2a] {
        return None;
    }
    let w = u16::from_le_bytes([*frame.get(6)?, *frame.get(7)?]) & 0x3fff;
    let h = u16::from_le_bytes([*frame.get(8)?, *frame.get(9)?]) & 0x3fff;
    Some((w, h))
}

/// Parse a VP9 payload descriptor (RFC 9628 §4.2), flexible or not, with an
/// optional scalability structure. Only spatial layer 0 is recorded: a packet
/// of a higher spatial layer is marked `skip`, so an SVC stream is recorded at
/// its base resolution.
pub(crate) fn vp9(p: &[u8]) -> Option<Vpx<'_>> {
    let b0 = *p.first()?;
    let (has_pid, inter, has_layers, flexible) = (b0 & 0x80 != 0, b0 & 0x40 != 0, b0 & 0x20 != 0, b0 & 0x10 != 0);
    let (begin, end, has_ss) = (b0 & 0x08 != 0, b0 & 0x04 != 0, b0 & 0x02 != 0);
    let mut i = 1;
    if has_pid {
        i += if *p.get(i)? & 0x80 != 0 { 2 } else { 1 };
    }
    let mut sid = 0;
    if has_layers {
        sid = (*p.get(i)? >> 1) & 0x07;
        i += 1;
        if !flexible {
            i += 1; // TL0PICIDX
        }
    }
    if flexible && inter {
        // Up to 3 P_DIFF bytes, each with the N (more follow) bit last.
        for _ in 0..3 {
            let b = *p.get(i)?;
            i += 1;
            if b & 0x01 == 0 {
                break;
            }
        }
    }
    if has_ss {
        let b = *p.get(i)?;
        i += 1;
        let spatial = usize::from(b >> 5) + 1;
        if b & 0x10 != 0 {
            i += 4 * spatial; // WIDTH, HEIGHT per layer
        }
        if b & 0x08 != 0 {
            let groups = *p.get(i)?;
            i += 1;
            for _ in 0..groups {
                let g = *p.get(i)?;
                i += 1 + usize::from((g >> 2) & 0x03); // T, U, R, then R P_DIFFs
            }
        }
    }
    let data = p.get(i..)?;
    Some(Vpx { head: begin && sid == 0, end: end && sid == 0, skip: sid != 0, data })
}

/// Reads bits MSB first; every read past the end is None.
struct Bits<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Bits<'_> {
    fn read(&mut self, n: u32) -> Option<u32> {
        let mut v = 0u32;
        for _ in 0..n {
            let byte = *self.bytes.get(self.at / 8)?;
            let bit = (byte >> (7 - (self.at % 8))) & 1;
            v = (v << 1) | u32::from(bit);
            self.at += 1;
        }
        Some(v)
    }
}

/// Keyframe flag and, for a keyframe, its size, from a VP9 uncompressed frame header
/// (VP9 bitstream spec §6.2). None if the header cannot be read.
pub(crate) fn vp9_frame(frame: &[u8]) -> Option<(bool, Option<(u16, u16)>)> {
    let mut b = Bits { bytes: frame, at: 0 };
    if b.read(2)? != 2 {
        return None; // frame_marker
    }
    let low = b.read(1)?;
    let profile = (b.read(1)? << 1) | low;
    if profile == 3 {
        b.read(1)?;
    }
    if b.read(1)? == 1 {
        return Some((false, None)); // show_existing_frame
    }
    if b.read(1)? != 0 {
        return Some((false, None)); // frame_type: non-key
    }
    b.read(2)?; // show_frame, error_resilient_mode
    if b.read(24)? != 0x49_83_42 {
        return Some((true, None));
    }
    if profile >= 2 {
        b.read(1)?; // ten_or_twelve_bit
    }
    let color_space = b.read(3)?;
    if color_space != 7 {
        b.read(1)?; // color_range
        if profile == 1 || profile == 3 {
            b.read(3)?; // subsampling_x, subsampling_y, reserved
        }
    } else if profile == 1 || profile == 3 {
        b.read(1)?;
    }
    let size = (|| {
        let w = u16::try_from(b.read(16)? + 1).ok()?;
        let h = u16::try_from(b.read(16)? + 1).ok()?;
        Some((w, h))
    })();
    Some((true, size))
}

const STAP_A: u8 = 24;
const FU_A: u8 = 28;
const IDR: u8 = 5;
const SPS: u8 = 7;
const START_CODE: [u8; 4] = [0, 0, 0, 1];

/// Whether an H.264 packet starts an access unit: its first NAL unit is an AUD,
/// SPS, PPS or SEI, or a slice whose first_mb_in_slice is 0 (ue(v) 0 is a single 1 bit).
pub(crate) fn h264_head(p: &[u8]) -> bool {
    let (nal, rest) = match p.first().map(|b| b & 0x1f) {
        Some(STAP_A) => (p.get(3).map(|b| b & 0x1f), p.get(4)),
        Some(FU_A) => match p.get(1) {
            Some(fu) if fu & 0x80 != 0 => (Some(fu & 0x1f), p.get(2)),
            _ => return false,
        },
        Some(t) => (Some(t), p.get(1)),
        None => return false,
    };
    match nal {
        Some(6..=9) => true,
        Some(1 | 5) => rest.is_some_and(|b| b & 0x80 != 0),
        _ => false,
    }
}

/// Depacketize one H.264 RTP payload into Annex-B (start code before each NAL
/// unit). `fu_open` carries whether a fragmented NAL unit is in progress.
/// Returns whether the packet carried an IDR slice or an SPS, or None if the
/// packet is malformed or breaks a fragmented NAL unit (the frame is then lost).
pub(crate) fn h264(p: &[u8], out: &mut Vec<u8>, fu_open: &mut bool) -> Option<bool> {
    let b0 = *p.first()?;
    let t = b0 & 0x1f;
    match t {
        1..=23 => {
            if *fu_open {
                return None;
            }
            out.extend_from_slice(&START_CODE);
            out.extend_from_slice(p);
            Some(t == IDR || t == SPS)
        }
        STAP_A => {
            if *fu_open {
                return None;
            }
            let mut rest = p.get(1..)?;
            let mut key = false;
            while !rest.is_empty() {
                let len = usize::from(u16::from_be_bytes([*rest.first()?, *rest.get(1)?]));
                let nal = rest.get(2..2 + len)?;
                let kind = nal.first()? & 0x1f;
                key |= kind == IDR || kind == SPS;
                out.extend_from_slice(&START_CODE);
                out.extend_from_slice(nal);
                rest = rest.get(2 + len..)?;
            }
            Some(key)
        }
        FU_A => {
            let fu = *p.get(1)?;
            let (start, end, kind) = (fu & 0x80 != 0, fu & 0x40 != 0, fu & 0x1f);
            let data = p.get(2..)?;
            if start {
                if *fu_open {
                    return None;
                }
                out.extend_from_slice(&START_CODE);
                out.push((b0 & 0xe0) | kind);
                *fu_open = true;
            } else if !*fu_open {
                return None;
            }
            out.extend_from_slice(data);
            if end {
                *fu_open = false;
            }
            Some(kind == IDR || kind == SPS)
        }
        // STAP-B, MTAP, FU-B: interleaved mode, which WebRTC does not use.
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vp8_descriptors() {
        // S=1, PID=0, no extension
        let v = vp8(&[0x10, 0xaa]).unwrap();
        assert!(v.head);
        assert_eq!(v.data, &[0xaa]);
        // X with I (15-bit picture id), L, T
        let v = vp8(&[0x90, 0xe0, 0x80, 0x01, 0x05, 0x20, 0xbb]).unwrap();
        assert!(v.head);
        assert_eq!(v.data, &[0xbb]);
        // continuation (S=0) and a later partition (PID=1)
        assert!(!vp8(&[0x00, 1]).unwrap().head);
        assert!(!vp8(&[0x11, 1]).unwrap().head);
        // truncated descriptors
        assert_eq!(vp8(&[]), None);
        assert_eq!(vp8(&[0x80]), None);
        assert_eq!(vp8(&[0x80, 0x80]), None);
        assert_eq!(vp8(&[0x80, 0x80, 0x80]), None);
    }

    #[test]
    fn vp8_keyframe_size() {
        let key = [0x50, 0x2d, 0x00, 0x9d, 0x01, 0x2a, 0x40, 0x01, 0xf0, 0x00];
        assert!(vp8_keyframe(&key));
        assert_eq!(vp8_size(&key), Some((320, 240)));
        assert!(!vp8_keyframe(&[0x51]));
        assert_eq!(vp8_size(&key[..9]), None);
    }

    #[test]
    fn vp9_descriptors() {
        // I (7-bit), B, E, non-flexible without layers
        let v = vp9(&[0x8c, 0x05, 0xcc]).unwrap();
        assert_eq!((v.head, v.end, v.skip, v.data), (true, true, false, &[0xcc][..]));
        // L, non-flexible: layer byte with SID=1 and TL0PICIDX: skipped
        let v = vp9(&[0x28, 0x02, 0x00, 0xdd]).unwrap();
        assert!(v.skip && !v.head);
        // flexible, inter, two P_DIFFs
        let v = vp9(&[0x58, 0x03, 0x04, 0xee]).unwrap();
        assert_eq!(v.data, &[0xee]);
        // scalability structure: 1 layer with size, 1 group with 1 P_DIFF
        let v = vp9(&[0x0a, 0x18, 0x01, 0x40, 0x00, 0xf0, 0x01, 0x04, 0x01, 0xff]).unwrap();
        assert_eq!(v.data, &[0xff]);
        assert_eq!(vp9(&[0x0a, 0x18, 0x01]), None);
    }

    #[test]
    fn vp9_keyframe_header() {
        // profile 0 keyframe 320x240: marker 10, profile 00, show_existing 0, type 0, show 1, er 0,
        // sync code, color space 2 (BT.709) + range 0, then w-1 = 319, h-1 = 239.
        let mut bits = String::from("10000010");
        bits += "010010011000001101000010"; // sync
        bits += "0100"; // color_space(3)=2, color_range=0
        bits += &format!("{:016b}{:016b}", 319, 239);
        while bits.len() % 8 != 0 {
            bits.push('0');
        }
        let bytes: Vec<u8> =
            bits.as_bytes().chunks(8).map(|c| u8::from_str_radix(std::str::from_utf8(c).unwrap(), 2).unwrap()).collect();
        assert_eq!(vp9_frame(&bytes), Some((true, Some((320, 240)))));
        assert_eq!(vp9_frame(&[0x86]), Some((false, None)), "inter frame");
        assert_eq!(vp9_frame(&bytes[..4]), None);
        assert_eq!(vp9_frame(&[]), None);
    }

    #[test]
    fn h264_modes() {
        let mut out = Vec::new();
        let mut open = false;
        // single IDR slice
        assert_eq!(h264(&[0x65, 0x88], &mut out, &mut open), Some(true));
        assert_eq!(out, [0, 0, 0, 1, 0x65, 0x88]);
        // STAP-A with SPS and PPS
        out.clear();
        assert_eq!(h264(&[0x78, 0, 2, 0x67, 1, 0, 1, 0x68], &mut out, &mut open), Some(true));
        assert_eq!(out, [0, 0, 0, 1, 0x67, 1, 0, 0, 0, 1, 0x68]);
        // STAP-A whose length runs past the packet
        assert_eq!(h264(&[0x78, 0, 9, 0x67], &mut out, &mut open), None);
        // FU-A: start, middle, end of a non-IDR slice
        out.clear();
        assert_eq!(h264(&[0x7c, 0x81, 0xaa], &mut out, &mut open), Some(false));
        assert!(open);
        assert_eq!(h264(&[0x7c, 0x01, 0xbb], &mut out, &mut open), Some(false));
        assert_eq!(h264(&[0x7c, 0x41, 0xcc], &mut out, &mut open), Some(false));
        assert!(!open);
        assert_eq!(out, [0, 0, 0, 1, 0x61, 0xaa, 0xbb, 0xcc]);
        // a middle fragment with no start is refused
        assert_eq!(h264(&[0x7c, 0x01, 0xbb], &mut out, &mut open), None);
        assert_eq!(h264(&[], &mut out, &mut open), None);
        assert_eq!(h264(&[0x7c], &mut out, &mut open), None);
    }

    #[test]
    fn h264_heads() {
        assert!(h264_head(&[0x65, 0x88])); // IDR, first_mb 0
        assert!(!h264_head(&[0x61, 0x40])); // slice with first_mb != 0
        assert!(h264_head(&[0x78, 0, 2, 0x67, 1])); // STAP-A starting with SPS
        assert!(h264_head(&[0x7c, 0x85, 0x88])); // FU-A start of IDR
        assert!(!h264_head(&[0x7c, 0x05, 0x88])); // FU-A middle
        assert!(!h264_head(&[]));
    }
}
