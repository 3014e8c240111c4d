//! Property tests: every parser of what the server sends returns a value or a typed error on
//! arbitrary, truncated and oversized input, and never panics or over-allocates.

use bytes::{BufMut, Bytes, BytesMut};
use proptest::prelude::*;

use super::auth::Authenticator;
use super::codec::{self, AuthRequest, BackendMessage, Column};
use super::error::WalClientError;
use super::query::{QueryCollector, ResultSet};
use super::stream::parse_timeline_switch;
use super::xlog::{self, ServerCopyData};

const MAX: usize = 64 * 1024;

/// Type bytes of every backend message PostgreSQL sends, plus strangers.
fn tag() -> impl Strategy<Value = u8> {
    prop_oneof![proptest::sample::select(b"RSKZETDCIWdcNAGHnstv123".to_vec()), any::<u8>(),]
}

/// A message with a correct length word around an arbitrary body.
fn framed() -> impl Strategy<Value = Vec<u8>> {
    (tag(), proptest::collection::vec(any::<u8>(), 0..200)).prop_map(|(tag, body)| {
        let mut b = vec![tag];
        b.extend_from_slice(&(body.len() as u32 + 4).to_be_bytes());
        b.extend_from_slice(&body);
        b
    })
}

/// Decodes everything in `wire` until it runs out or fails; returns what decoded.
fn decode_all(wire: &[u8]) -> Vec<BackendMessage> {
    let mut buf = BytesMut::from(wire);
    let mut out = Vec::new();
    while let Ok(Some(m)) = codec::decode(&mut buf, MAX) {
        out.push(m);
    }
    out
}

/// Feeds decoded messages to every consumer of them.
fn consume(messages: Vec<BackendMessage>) {
    let mut collector = QueryCollector::new("PROP");
    let mut auth = Authenticator::new("u", Some("p"));
    let mut out = BytesMut::new();
    for m in messages {
        match &m {
            BackendMessage::Authentication(r) => {
                let _ = auth.respond(r.clone(), &mut out);
            }
            BackendMessage::CopyData(p) => {
                let _ = xlog::parse_server_copy_data(p.clone());
            }
            _ => {}
        }
        let _ = collector.feed(m);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2048, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(wire in proptest::collection::vec(any::<u8>(), 0..512)) {
        consume(decode_all(&wire));
    }

    #[test]
    fn framed_messages_and_their_truncations_never_panic(
        messages in proptest::collection::vec(framed(), 1..8),
        cut in any::<prop::sample::Index>(),
    ) {
        let wire: Vec<u8> = messages.concat();
        consume(decode_all(&wire));
        let truncated = &wire[..cut.index(wire.len() + 1)];
        let mut buf = BytesMut::from(truncated);
        // A truncated stream yields whole messages, then "incomplete" or an error: never more.
        while let Ok(Some(_)) = codec::decode(&mut buf, MAX) {}
    }

    #[test]
    fn claimed_lengths_are_capped_before_buffering(tag in tag(), len in (MAX as u32)..=u32::MAX) {
        let mut buf = BytesMut::new();
        buf.put_u8(tag);
        buf.put_u32(len);
        let got = codec::decode(&mut buf, MAX);
        let oversized = matches!(got, Err(WalClientError::Oversized { .. }));
        prop_assert!(oversized, "a claim of {} bytes was not refused", len);
        prop_assert!(buf.capacity() < MAX, "reserved {} bytes on a claim", buf.capacity());
    }

    #[test]
    fn copy_data_payloads_never_panic(
        kind in proptest::sample::select(b"wkrx".to_vec()),
        body in proptest::collection::vec(any::<u8>(), 0..64),
    ) {
        let mut p = vec![kind];
        p.extend_from_slice(&body);
        let _ = xlog::parse_server_copy_data(Bytes::from(p));
    }

    #[test]
    fn xlog_data_round_trips(start in 0u64..u64::MAX / 2, end: u64, time: i64, wal in proptest::collection::vec(any::<u8>(), 0..300)) {
        let parsed = xlog::parse_server_copy_data(xlog::tests::xlog_data(start, end, time, &wal)).unwrap();
        let ServerCopyData::XLogData { start: s, end_of_server_wal: e, server_time: t, data } = parsed else {
            panic!("not XLogData")
        };
        prop_assert_eq!((s.0, e.0, t.0), (start, end, time));
        prop_assert_eq!(&data[..], &wal[..]);
    }

    #[test]
    fn end_of_timeline_results_never_panic(
        names in proptest::collection::vec(
            proptest::sample::select(vec!["next_tli", "next_tli_startpos", "x"]), 0..4),
        rows in proptest::collection::vec(
            proptest::collection::vec(proptest::option::of(proptest::collection::vec(any::<u8>(), 0..24)), 0..4),
            0..3),
    ) {
        let set = ResultSet {
            command: "PROP",
            columns: names.iter().map(|n| Column { name: (*n).into(), type_oid: 25 }).collect(),
            rows: rows.into_iter().map(|r| r.into_iter().map(|v| v.map(Bytes::from)).collect()).collect(),
            tag: String::new(),
        };
        let _ = parse_timeline_switch(&set);
    }

    #[test]
    fn scram_never_panics_on_server_messages(first: Vec<u8>, last: Vec<u8>) {
        let mut out = BytesMut::new();
        let mut auth = Authenticator::new("u", Some("p"));
        let mechanisms = vec!["SCRAM-SHA-256".to_owned()];
        auth.respond(AuthRequest::Sasl { mechanisms }, &mut out).unwrap();
        let _ = auth.respond(AuthRequest::SaslContinue(Bytes::from(first)), &mut out);
        let _ = auth.respond(AuthRequest::SaslFinal(Bytes::from(last)), &mut out);
        let _ = auth.respond(AuthRequest::Ok, &mut out);
    }
}
