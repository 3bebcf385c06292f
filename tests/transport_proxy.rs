//! PROXY protocol headers and first-bytes sniffing together: every encoded
//! header sniffs as its version, parses back to its addresses whatever
//! follows it, and each of its prefixes asks for more; the CIDR list
//! decides who may send one.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::{IpAddr, SocketAddr};

use proptest::prelude::*;

use xfwd::transport::proxy_protocol::{
    encode_v1, encode_v2, parse, Cidr, Command, Parsed, ProxyError, V1_MAX_LEN,
};
use xfwd::transport::{sniff, sniff_final, Sniffed};

fn addr_pair() -> impl Strategy<Value = (SocketAddr, SocketAddr)> {
    prop_oneof![
        (
            any::<[u8; 4]>(),
            any::<u16>(),
            any::<[u8; 4]>(),
            any::<u16>()
        )
            .prop_map(|(a, p, b, q)| (
                SocketAddr::new(IpAddr::from(a), p),
                SocketAddr::new(IpAddr::from(b), q)
            )),
        (
            any::<[u8; 16]>(),
            any::<u16>(),
            any::<[u8; 16]>(),
            any::<u16>()
        )
            .prop_map(|(a, p, b, q)| (
                SocketAddr::new(IpAddr::from(a), p),
                SocketAddr::new(IpAddr::from(b), q)
            )),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn headers_round_trip(
        (src, dst) in addr_pair(),
        v2 in any::<bool>(),
        tail in prop::collection::vec(any::<u8>(), 0..32),
    ) {
        let header = if v2 {
            encode_v2(Some(src), Some(dst))
        } else {
            encode_v1(Some(src), Some(dst)).into_bytes()
        };
        prop_assert!(v2 || header.len() <= V1_MAX_LEN);
        let want = if v2 { Sniffed::ProxyV2 } else { Sniffed::ProxyV1 };
        prop_assert_eq!(sniff(&header), want);
        let mut stream = header.clone();
        stream.extend_from_slice(&tail);
        let Parsed::Done(h) = parse(&stream).unwrap() else {
            panic!("incomplete");
        };
        prop_assert_eq!(h.command, Command::Proxy);
        prop_assert_eq!(h.source, Some(src));
        prop_assert_eq!(h.destination, Some(dst));
        prop_assert_eq!(h.consumed, header.len());
        for n in 0..header.len() {
            prop_assert_eq!(parse(&header[..n]), Ok(Parsed::NeedMore));
        }
    }

    #[test]
    fn garbage_never_panics(data in prop::collection::vec(any::<u8>(), 0..200)) {
        let _ = parse(&data);
        let s = sniff(&data);
        prop_assert!(data.len() < 12 || s != Sniffed::NeedMore);
        prop_assert_ne!(sniff_final(&data), Sniffed::NeedMore);
    }

    #[test]
    fn cidr_membership(a in any::<u32>(), b in any::<u32>(), prefix in 0u8..=32) {
        let net = Cidr::parse(&format!("{}/{prefix}", std::net::Ipv4Addr::from(a))).unwrap();
        let mask = if prefix == 0 { 0 } else { u32::MAX << (32 - prefix) };
        let inside = (a & mask) == (b & mask);
        prop_assert_eq!(net.contains(IpAddr::from(std::net::Ipv4Addr::from(b))), inside);
        // The same address as a v4-mapped v6 address.
        let mapped = std::net::Ipv4Addr::from(b).to_ipv6_mapped();
        prop_assert_eq!(net.contains(IpAddr::V6(mapped)), inside);
        // Display parses back to the same range.
        prop_assert_eq!(Cidr::parse(&net.to_string()).unwrap(), net);
    }
}

#[test]
fn haproxy_examples() {
    // From the specification's examples section.
    let v1 = b"PROXY TCP4 255.255.255.255 255.255.255.255 65535 65535\r\n";
    let Parsed::Done(h) = parse(v1).unwrap() else {
        panic!()
    };
    assert_eq!(h.consumed, v1.len());
    assert_eq!(h.source, Some("255.255.255.255:65535".parse().unwrap()));
    let unknown = b"PROXY UNKNOWN\r\n";
    let Parsed::Done(h) = parse(unknown).unwrap() else {
        panic!()
    };
    assert_eq!((h.source, h.consumed), (None, 15));
    assert_eq!(parse(b"GET / HTTP/1.1\r\n"), Err(ProxyError::NotProxy));
    // A PROXY header then an xpra hello: what the engine sniffs next.
    let mut stream = encode_v2(
        Some("10.0.0.5:40000".parse().unwrap()),
        Some("10.0.0.1:443".parse().unwrap()),
    );
    stream.extend_from_slice(b"P\x10\0\0\0\0\0\x20");
    let Parsed::Done(h) = parse(&stream).unwrap() else {
        panic!()
    };
    assert_eq!(sniff(&stream[h.consumed..]), Sniffed::Xpra);
}

#[test]
fn trusted_fronts() {
    let list = Cidr::parse_list("10.0.0.0/8,fd00::/8, 127.0.0.1").unwrap();
    assert!(Cidr::any_contains(&list, "10.9.8.7".parse().unwrap()));
    assert!(Cidr::any_contains(&list, "fd00::5".parse().unwrap()));
    assert!(Cidr::any_contains(&list, "127.0.0.1".parse().unwrap()));
    assert!(!Cidr::any_contains(&list, "127.0.0.2".parse().unwrap()));
    assert!(!Cidr::any_contains(&list, "192.168.1.1".parse().unwrap()));
    let e = Cidr::parse("10.0.0.0/40").unwrap_err();
    assert!(e.to_string().contains("0..=32"), "{e}");
}
