//! Round trips the unit tests in `src/wire.rs` leave out. Those already cover every
//! frame type through `Frame` (addresses inside connect/relay, `RstInfo` inside rst);
//! here: the connection header for any client id, an address on its own (with
//! `encoded_len` and trailing bytes), and an rst payload on its own.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};

use bytes::BytesMut;
use proptest::prelude::*;
use tunnelbed_pong::wire::{decode_rst, CONN_HEADER_LEN, FRAME_HEADER_LEN};
use tunnelbed_pong::{Address, Body, ConnHeader, Frame, PayloadError, RstCode, RstInfo};

fn arb_address() -> impl Strategy<Value = Address> {
    prop_oneof![
        (any::<[u8; 4]>(), any::<u16>())
            .prop_map(|(o, p)| Address::Ip(SocketAddr::new(Ipv4Addr::from(o).into(), p))),
        (any::<[u8; 16]>(), any::<u16>())
            .prop_map(|(o, p)| Address::Ip(SocketAddr::new(Ipv6Addr::from(o).into(), p))),
        ("[a-z0-9.-]{1,255}", any::<u16>()).prop_map(|(h, p)| Address::Domain(h, p)),
        // multi-byte UTF-8, cut to at most 255 bytes on a char boundary
        ("\\PC{1,120}", any::<u16>()).prop_map(|(mut h, p)| {
            while h.len() > 255 {
                h.pop();
            }
            Address::Domain(h, p)
        }),
    ]
}

fn arb_rst() -> impl Strategy<Value = RstInfo> {
    (any::<u8>(), "\\PC{0,60}").prop_map(|(c, d)| RstInfo::with_description(RstCode::from_u8(c), d))
}

proptest! {
    #[test]
    fn conn_header_round_trips(id in any::<[u8; 16]>(),
                               tail in proptest::collection::vec(any::<u8>(), 0..32)) {
        let h = ConnHeader { client_id: id };
        let mut b = BytesMut::new();
        h.encode(&mut b);
        prop_assert_eq!(b.len(), CONN_HEADER_LEN);
        for n in 0..CONN_HEADER_LEN {
            prop_assert_eq!(ConnHeader::decode(&b[..n]), Ok(None));
        }
        // what follows the header (the first frame) is not part of it
        b.extend_from_slice(&tail);
        prop_assert_eq!(ConnHeader::decode(&b), Ok(Some((h, CONN_HEADER_LEN))));
    }

    #[test]
    fn address_round_trips(a in arb_address(),
                           tail in proptest::collection::vec(any::<u8>(), 0..8)) {
        let mut b = BytesMut::new();
        a.encode(&mut b).expect("valid address encodes");
        prop_assert_eq!(b.len(), a.encoded_len());
        prop_assert_eq!(Address::decode_exact(&b), Ok(a.clone()));
        // a payload cut anywhere is an error, never a shorter address
        for n in 0..b.len() {
            prop_assert!(Address::decode(&b[..n]).is_err());
        }
        let n = b.len();
        b.extend_from_slice(&tail);
        prop_assert_eq!(Address::decode(&b), Ok((a, n)));
        if !tail.is_empty() {
            prop_assert_eq!(
                Address::decode_exact(&b),
                Err(PayloadError::TrailingBytes(tail.len()))
            );
        }
    }

    #[test]
    fn rst_payload_round_trips(r in proptest::option::of(arb_rst())) {
        let b = Frame::new(1, Body::Rst(r.clone())).to_bytes().expect("fits");
        prop_assert_eq!(decode_rst(&b[FRAME_HEADER_LEN..]), Ok(r));
    }
}
