//! Ogg pages (RFC 3533) carrying Opus (RFC 7845), and the Opus TOC byte (RFC 6716 §3.1).
//!
//! One Opus packet per page, so every page the shell appends is a complete,
//! decodable unit: a file cut anywhere loses at most the page being written.

/// The Ogg CRC-32: polynomial 0x04c11db7, not reflected, initial value 0, no final xor.
/// (Not the zlib CRC that `crc32fast` computes.)
const CRC_TABLE: [u32; 256] = crc_table();

const fn crc_table() -> [u32; 256] {
    let mut table = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut r = (i as u32) << 24;
        let mut bit = 0;
        while bit < 8 {
            r = if r & 0x8000_0000 != 0 { (r << 1) ^ 0x04c1_1db7 } else { r << 1 };
            bit += 1;
        }
        table[i] = r;
        i += 1;
    }
    table
}

/// The Ogg CRC of `bytes` (a whole page with its CRC field zeroed).
pub(crate) fn crc(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0u32, |crc, &b| (crc << 8) ^ CRC_TABLE[usize::from(((crc >> 24) as u8) ^ b)])
}

/// Page header flag: first page of the stream.
pub(crate) const BOS: u8 = 0x02;
/// Page header flag: last page of the stream.
pub(crate) const EOS: u8 = 0x04;
/// Offset of the header-type byte in a page; the CRC ends at [`CRC_END`].
pub(crate) const FLAGS_AT: usize = 5;
const CRC_AT: usize = 22;
/// End of the CRC field: a patch of `FLAGS_AT..CRC_END` rewrites flags, granule, serial, sequence and CRC.
pub(crate) const CRC_END: usize = 26;

/// The largest packet one page can carry (255 lacing values).
pub(crate) const MAX_PACKET: usize = 255 * 255 - 1;

/// Build one page holding exactly one packet, or None if the packet does not fit in a page.
pub(crate) fn page(flags: u8, granule: u64, serial: u32, sequence: u32, packet: &[u8]) -> Option<Vec<u8>> {
    if packet.len() > MAX_PACKET {
        return None;
    }
    // Lacing: 255s, then the remainder (a 0 if the packet is a multiple of 255, so it ends).
    let full = packet.len() / 255;
    let segments = full + 1;
    let mut page = Vec::with_capacity(27 + segments + packet.len());
    page.extend_from_slice(b"OggS");
    page.push(0); // version
    page.push(flags);
    page.extend_from_slice(&granule.to_le_bytes());
    page.extend_from_slice(&serial.to_le_bytes());
    page.extend_from_slice(&sequence.to_le_bytes());
    page.extend_from_slice(&[0; 4]); // CRC, filled below
    page.push(segments as u8); // <= 255 by the MAX_PACKET check
    page.extend(std::iter::repeat_n(255u8, full));
    page.push((packet.len() % 255) as u8);
    page.extend_from_slice(packet);
    seal(&mut page);
    Some(page)
}

/// Recompute and store the CRC of a page built by [`page`].
pub(crate) fn seal(page: &mut [u8]) {
    if let Some(field) = page.get_mut(CRC_AT..CRC_END) {
        field.copy_from_slice(&[0; 4]);
    } else {
        return;
    }
    let sum = crc(page);
    if let Some(field) = page.get_mut(CRC_AT..CRC_END) {
        field.copy_from_slice(&sum.to_le_bytes());
    }
}

/// Channel count written in OpusHead. WebRTC's Opus is negotiated as stereo
/// (`opus/48000/2`); a mono packet decodes to two channels fine.
const CHANNELS: u8 = 2;

/// The identification header (RFC 7845 §5.1). Pre-skip is 0: the recording
/// starts mid-stream of an encoder that is already warmed up, so there are no
/// encoder-delay samples to hide, and the granule of the first page maps
/// exactly to its start time.
pub(crate) fn opus_head() -> Vec<u8> {
    let mut h = Vec::with_capacity(19);
    h.extend_from_slice(b"OpusHead");
    h.push(1); // version
    h.push(CHANNELS);
    h.extend_from_slice(&0u16.to_le_bytes()); // pre-skip
    h.extend_from_slice(&48_000u32.to_le_bytes()); // input sample rate (informational)
    h.extend_from_slice(&0i16.to_le_bytes()); // output gain
    h.push(0); // channel mapping family 0: mono or stereo, no table
    h
}

/// The comment header (RFC 7845 §5.2): vendor "switchboard", no comments.
pub(crate) fn opus_tags() -> Vec<u8> {
    const VENDOR: &[u8] = b"switchboard";
    let mut t = Vec::with_capacity(8 + 4 + VENDOR.len() + 4);
    t.extend_from_slice(b"OpusTags");
    t.extend_from_slice(&(VENDOR.len() as u32).to_le_bytes());
    t.extend_from_slice(VENDOR);
    t.extend_from_slice(&0u32.to_le_bytes());
    t
}

/// Number of 48 kHz samples in an Opus packet, from its TOC byte (RFC 6716 §3.1),
/// or None for a packet that is malformed (empty, code 3 without a count byte,
/// zero frames, or more than 120 ms, which §3.2.5 forbids).
pub(crate) fn opus_samples(packet: &[u8]) -> Option<u32> {
    let toc = *packet.first()?;
    let config = toc >> 3;
    let per_frame: u32 = match config {
        // SILK-only: 10, 20, 40, 60 ms
        0..=11 => [480, 960, 1920, 2880][usize::from(config % 4)],
        // Hybrid: 10, 20 ms
        12..=15 => [480, 960][usize::from(config % 2)],
        // CELT-only: 2.5, 5, 10, 20 ms
        _ => [120, 240, 480, 960][usize::from(config % 4)],
    };
    let frames: u32 = match toc & 0x03 {
        0 => 1,
        1 | 2 => 2,
        _ => u32::from(*packet.get(1)? & 0x3f),
    };
    let samples = per_frame * frames;
    (frames > 0 && samples <= 5760).then_some(samples)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The first page (OpusHead) of `ffmpeg -f lavfi -i sine=f=440:d=1 -c:a libopus x.ogg`.
    const FFMPEG_FIRST_PAGE: [u8; 47] = [
        0x4f, 0x67, 0x67, 0x53, 0x00, 0x02, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0xc4, 0x46, 0x60,
        0x00, 0x00, 0x00, 0x00, 0xea, 0xb2, 0xa3, 0xe3, 0x01, 0x13, 0x4f, 0x70, 0x75, 0x73, 0x48, 0x65, 0x61, 0x64,
        0x01, 0x01, 0x38, 0x01, 0x80, 0xbb, 0x00, 0x00, 0x00, 0x00, 0x00,
    ];

    #[test]
    fn crc_reproduces_an_ffmpeg_page() {
        let mut page = FFMPEG_FIRST_PAGE;
        let stored = u32::from_le_bytes([page[22], page[23], page[24], page[25]]);
        assert_eq!(stored, 0xe3a3_b2ea);
        page[22..26].fill(0);
        assert_eq!(crc(&page), stored);
        // And it is not the zlib CRC.
        assert_ne!(crc32fast::hash(&page), stored);
    }

    #[test]
    fn our_page_matches_ffmpegs_layout() {
        // Same serial, flags and payload as ffmpeg's first page, except the channel count and pre-skip.
        let payload = &FFMPEG_FIRST_PAGE[28..];
        let built = page(BOS, 0, 0x6046_c401, 0, payload).unwrap();
        assert_eq!(built, FFMPEG_FIRST_PAGE);
    }

    #[test]
    fn lacing_of_multiples_of_255_ends_with_zero() {
        let p = page(0, 0, 1, 2, &[7; 510]).unwrap();
        assert_eq!(p[26], 3);
        assert_eq!(&p[27..30], &[255, 255, 0]);
        assert_eq!(p.len(), 27 + 3 + 510);
        assert!(page(0, 0, 1, 2, &vec![0; MAX_PACKET]).is_some());
        assert!(page(0, 0, 1, 2, &vec![0; MAX_PACKET + 1]).is_none());
    }

    #[test]
    fn toc_durations() {
        assert_eq!(opus_samples(&[]), None);
        // config 31 (CELT 20 ms), one frame: what browsers send
        assert_eq!(opus_samples(&[31 << 3]), Some(960));
        // config 16 (CELT 2.5 ms), code 1: two frames
        assert_eq!(opus_samples(&[(16 << 3) | 1]), Some(240));
        // SILK 60 ms, code 2
        assert_eq!(opus_samples(&[(3 << 3) | 2, 0]), Some(5760));
        // code 3 needs its count byte; 0 frames is invalid; more than 120 ms is invalid
        assert_eq!(opus_samples(&[(31 << 3) | 3]), None);
        assert_eq!(opus_samples(&[(31 << 3) | 3, 0]), None);
        assert_eq!(opus_samples(&[(31 << 3) | 3, 6]), Some(5760));
        assert_eq!(opus_samples(&[(31 << 3) | 3, 7]), None);
        // Hybrid 10 ms
        assert_eq!(opus_samples(&[12 << 3]), Some(480));
    }

    #[test]
    fn opus_head_layout() {
        let h = opus_head();
        assert_eq!(h.len(), 19);
        assert_eq!(&h[..8], b"OpusHead");
        assert_eq!(h[8], 1);
        assert_eq!(h[9], 2);
        assert_eq!(u32::from_le_bytes([h[12], h[13], h[14], h[15]]), 48_000);
    }
}
