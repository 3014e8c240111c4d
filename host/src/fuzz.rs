//! Entry points for the decoders under fuzzing (the `fuzz/` crate, `cargo fuzz`): each takes
//! arbitrary bytes and runs one decoder the way its caller in tandem does, with the caller's
//! limits. Built only with the `fuzz` feature; nothing in the product calls it.
//!
//! Must never: panic itself, or check anything a decoder does not promise. The round trips
//! asserted here (a parsed `.conf` file renders to text that parses to the same meaning) are
//! promises the product relies on.

use bytes::{Bytes, BytesMut};

use crate::peer::Frame;

/// The largest frame a peer link accepts by default (the codec's callers pass the config's).
const PEER_MAX_FRAME: u64 = 64 << 20;

/// A peer link's greeting and frame header, as the connection reads them.
pub fn peer_frame(data: &[u8]) {
    if let Some(greeting) = data.get(..crate::peer::codec::GREETING_LEN) {
        let mut g = [0u8; crate::peer::codec::GREETING_LEN];
        g.copy_from_slice(greeting);
        let _ = crate::peer::codec::decode_greeting(&g);
    }
    let _ = crate::peer::codec::FrameHeader::decode(data, PEER_MAX_FRAME);
}

/// What PostgreSQL sends tandem's WAL client: backend messages split off a buffer until it is
/// incomplete or refused, then the replication stream's CopyData payloads.
pub fn pg_backend(data: &[u8]) {
    let max = crate::wal::client::DEFAULT_MAX_MESSAGE_LEN;
    let mut buf = BytesMut::from(data);
    while let Ok(Some(_)) = crate::wal::client::codec::decode(&mut buf, max) {}
    let _ = crate::wal::client::xlog::parse_server_copy_data(Bytes::copy_from_slice(data));
}

/// What a standby PostgreSQL sends tandem's walsender: the startup packet, then frontend
/// messages, standby status messages and replication commands.
pub fn pg_frontend(data: &[u8]) {
    use crate::wal::walsender::codec::{Decoded, decode, decode_startup};
    let max = crate::wal::client::DEFAULT_MAX_MESSAGE_LEN;
    let mut buf = BytesMut::from(data);
    if let Ok(Decoded::Message(_)) = decode_startup(&mut buf) {
        while let Ok(Decoded::Message(_)) = decode(&mut buf, max) {}
    }
    let _ = crate::wal::walsender::xlog::parse_standby_message(data);
    let _ = crate::wal::walsender::command::parse(&String::from_utf8_lossy(data));
}

/// A `.conf` file: parsed, and if it parses, rendered and parsed again to the same meaning.
pub fn conf(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(doc) = crate::conf::ConfDoc::parse(text) else { return };
    let rendered = doc.render();
    let again = crate::conf::ConfDoc::parse(&rendered)
        .unwrap_or_else(|e| panic!("a rendered file does not parse: {e}\n{rendered:?}"));
    assert_eq!(doc.semantic(), again.semantic(), "rendering changed the meaning: {rendered:?}");
}

/// Tree-sync messages and cluster RPCs, as a peer frame's body.
pub fn sync_msg(data: &[u8]) {
    let _ = crate::sync::protocol::decode(Some(Frame::new(crate::sync::protocol::SYNC_FRAME, data)));
    let _ = crate::cluster::rpc::decode_request(data);
    let _ = crate::cluster::rpc::decode_response(data);
}

/// `tandem.toml`: parsed and validated (validation reads no file).
pub fn toml(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(config) = crate::config::Config::parse(text) {
        let _ = config.resolved();
    }
}

/// A configuration snapshot (tar + zstd) as a member installing it unpacks it.
pub fn snapshot(data: &[u8]) {
    // A small cap: what is checked is that no input gets past the checks or the cut-off, and
    // a bomb stopped at 64 MiB keeps each run fast.
    const FUZZ_CAP: u64 = 64 << 20;
    let _ = crate::conf::snapshot::validate(data, FUZZ_CAP);
    let _ = crate::conf::snapshot::read_meta(data, FUZZ_CAP);
}
