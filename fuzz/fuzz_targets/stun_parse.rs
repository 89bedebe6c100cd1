//! STUN and ChannelData parsing: the checked views, the stun_codec decoder,
//! and the STUN server's answer to whatever arrives. None may panic, and what the
//! view accepts must be self-consistent.
#![no_main]

use std::net::SocketAddr;

use libfuzzer_sys::fuzz_target;
use switchboard_core::stun::channel_data::ChannelData;
use switchboard_core::stun::view::StunView;
use switchboard_core::stun::{classify, message, PacketKind, StunServer};

fuzz_target!(|data: &[u8]| {
    let kind = classify(data);
    if let Ok(v) = StunView::new_checked(data) {
        // RFC 8489 allows a first byte up to 0x3F; RFC 7983 demultiplexing
        // gives STUN only 0..=3 (the rest is ZRTP and DTLS), so a "STUN"
        // message of another method range is parsed but never reaches the server.
        assert!(data[0] < 0x40);
        assert_eq!(matches!(kind, PacketKind::Stun), data[0] <= 3);
        assert_eq!(v.bytes().len() % 4, 0);
        let mut end = 20;
        for a in v.attributes() {
            end += 4 + a.value.len().next_multiple_of(4);
        }
        assert!(end <= v.bytes().len());
        let _ = v.fingerprint_ok();
        let _ = v.check_integrity(b"0123456789abcdef");
        for typ in [0x0001, 0x0020, 0x0012, 0x0016] {
            let _ = v.xor_address(typ);
        }
        let _ = v.known_attributes_well_formed();
    }
    if let Ok(cd) = ChannelData::new_checked(data) {
        assert!(matches!(kind, PacketKind::ChannelData));
        assert_eq!(cd.payload(), &data[cd.payload_range()]);
    }
    let _ = message::decode(data);
    let from: SocketAddr = "192.0.2.1:3478".parse().unwrap();
    let mut s = StunServer::new();
    if let Some(resp) = s.handle_packet(from, data) {
        // Whatever the server answers must itself parse, with a valid FINGERPRINT.
        let v = StunView::new_checked(&resp).expect("server answered with an unparsable message");
        assert_eq!(v.fingerprint_ok(), Some(true));
    }
});
