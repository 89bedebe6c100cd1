//! Stream framing of STUN and ChannelData over TCP: arbitrary bytes cut at
//! arbitrary points must frame exactly as the same bytes in one piece, and
//! never panic or buffer past a frame's bound.
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchboard_core::framing::{frame_len, StreamFramer, MAX_FRAME};
use switchboard_core::stun::channel_data::ChannelData;

fn frames(chunks: &[&[u8]]) -> (Vec<Vec<u8>>, bool) {
    let mut f = StreamFramer::new();
    let mut out = Vec::new();
    for c in chunks {
        f.compact();
        f.push(c);
        loop {
            match f.next_frame() {
                Ok(Some(r)) => {
                    let fr = &f.buffer()[r];
                    assert!(fr.len() <= MAX_FRAME);
                    assert_eq!(frame_len(fr).ok().flatten(), Some(fr.len()));
                    if let Ok(cd) = ChannelData::new_checked(fr) {
                        // A framed ChannelData message holds its payload and at most 3 bytes of padding.
                        assert!(fr.len() - cd.payload_range().end < 4);
                        assert_eq!(cd.payload(), &fr[cd.payload_range()]);
                    }
                    out.push(fr.to_vec());
                }
                Ok(None) => break,
                Err(_) => return (out, true),
            }
        }
        assert!(f.pending() <= MAX_FRAME + c.len());
    }
    (out, false)
}

fuzz_target!(|input: (Vec<u8>, Vec<u8>)| {
    let (cuts, data) = input;
    let whole = frames(&[&data]);
    let mut chunks = Vec::new();
    let mut rest = &data[..];
    for c in cuts.iter().cycle().take(data.len()) {
        if rest.is_empty() {
            break;
        }
        let n = (usize::from(*c) % 37 + 1).min(rest.len());
        chunks.push(&rest[..n]);
        rest = &rest[n..];
    }
    if !rest.is_empty() {
        chunks.push(rest);
    }
    let cut = frames(&chunks);
    assert_eq!(whole, cut, "framing depends on how the stream is cut");
});
