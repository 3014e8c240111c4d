//! Frontend messages off the wire, pure (no I/O): the untyped startup packets (SSLRequest,
//! GSSENCRequest, CancelRequest, StartupMessage v3) and the typed messages after them ('p',
//! 'Q', 'd', 'c', 'f', 'X', ...). A length is checked against its cap *before* anything is
//! buffered for it; a message not yet whole is [`Decoded::Incomplete`], not an error.
//!
//! postgres-protocol only decodes backend messages, so this is ours. Must never: panic on any
//! bytes a client sends, or allocate by a length the client claims.

use bytes::{Buf, Bytes, BytesMut};

/// Type byte and length word.
pub const HEADER_LEN: usize = 5;
/// PostgreSQL's `MAX_STARTUP_PACKET_LENGTH`: a startup packet larger than this is refused.
pub const MAX_STARTUP_LEN: usize = 10_000;
/// Length word and request code: the smallest startup packet.
const STARTUP_MIN_LEN: usize = 8;
const PROTOCOL_3_0: u32 = 3 << 16;
const SSL_REQUEST_CODE: u32 = 80_877_103;
const GSSENC_REQUEST_CODE: u32 = 80_877_104;
const CANCEL_REQUEST_CODE: u32 = 80_877_102;

/// A decode result: a whole message, or not enough bytes buffered yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decoded<T> {
    /// Read more and try again; nothing was consumed.
    Incomplete,
    /// One whole message, consumed from the buffer.
    Message(T),
}

/// Bytes that are not a valid frontend message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    /// A length word past the cap.
    #[error("a client message of {len} bytes is over the {max} byte limit")]
    Oversized {
        /// The length the client claimed.
        len: u64,
        /// The cap.
        max: u64,
    },
    /// Anything else that does not parse.
    #[error("malformed client message: {0}")]
    Malformed(String),
}

fn malformed(what: impl Into<String>) -> CodecError {
    CodecError::Malformed(what.into())
}

/// The first packet of a connection (no type byte).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartupPacket {
    /// The client asks for TLS; answered 'N'.
    SslRequest,
    /// The client asks for GSSAPI encryption; answered 'N'.
    GssEncRequest,
    /// Cancel a query on another connection: nothing to cancel here, the connection closes.
    CancelRequest,
    /// Protocol 3.0 startup with its parameters, in order.
    Startup(Vec<(String, String)>),
    /// A protocol version this server does not speak (major.minor in one word).
    UnsupportedVersion(u32),
}

/// Splits the next startup packet off `buf`.
pub fn decode_startup(buf: &mut BytesMut) -> Result<Decoded<StartupPacket>, CodecError> {
    let Some(header) = buf.get(..4) else { return Ok(Decoded::Incomplete) };
    let len = u32::from_be_bytes([header[0], header[1], header[2], header[3]]) as usize;
    if len < STARTUP_MIN_LEN {
        return Err(malformed(format!("startup packet length {len} is below {STARTUP_MIN_LEN}")));
    }
    if len > MAX_STARTUP_LEN {
        return Err(CodecError::Oversized { len: len as u64, max: MAX_STARTUP_LEN as u64 });
    }
    if buf.len() < len {
        return Ok(Decoded::Incomplete);
    }
    let mut packet = buf.split_to(len).freeze();
    packet.advance(4);
    let code = packet.get_u32();
    let decoded = match code {
        SSL_REQUEST_CODE | GSSENC_REQUEST_CODE | CANCEL_REQUEST_CODE => {
            let expected = if code == CANCEL_REQUEST_CODE { 8 } else { 0 };
            if packet.len() != expected {
                return Err(malformed(format!("request code {code} with {} trailing bytes", packet.len())));
            }
            match code {
                SSL_REQUEST_CODE => StartupPacket::SslRequest,
                GSSENC_REQUEST_CODE => StartupPacket::GssEncRequest,
                _ => StartupPacket::CancelRequest,
            }
        }
        PROTOCOL_3_0 => StartupPacket::Startup(startup_params(packet)?),
        other => StartupPacket::UnsupportedVersion(other),
    };
    Ok(Decoded::Message(decoded))
}

/// `name\0value\0 ... \0`: pairs of C strings ending with an empty name.
fn startup_params(mut body: Bytes) -> Result<Vec<(String, String)>, CodecError> {
    let mut params = Vec::new();
    loop {
        let name = cstring(&mut body, "startup parameter name")?;
        if name.is_empty() {
            break;
        }
        let value = cstring(&mut body, "startup parameter value")?;
        params.push((name, value));
    }
    if !body.is_empty() {
        return Err(malformed("bytes after the startup parameters' terminator"));
    }
    Ok(params)
}

/// Takes one NUL-terminated UTF-8 string off the front of `body`.
pub fn cstring(body: &mut Bytes, what: &str) -> Result<String, CodecError> {
    let end = body.iter().position(|&b| b == 0).ok_or_else(|| malformed(format!("{what} has no NUL")))?;
    let text =
        String::from_utf8(body[..end].to_vec()).map_err(|_| malformed(format!("{what} is not UTF-8")))?;
    body.advance(end + 1);
    Ok(text)
}

/// A typed frontend message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FrontendMessage {
    /// 'p': PasswordMessage, SASLInitialResponse or SASLResponse: which one depends on the
    /// authentication state, so the body is left to `auth`.
    Password(Bytes),
    /// 'Q': a simple query (a replication command here).
    Query(String),
    /// 'd'
    CopyData(Bytes),
    /// 'c'
    CopyDone,
    /// 'f', with the client's reason.
    CopyFail(String),
    /// 'X'
    Terminate,
    /// 'S' or 'H': no meaning outside the extended protocol.
    SyncOrFlush,
    /// A well-formed message of another type (extended-protocol messages, ...).
    Other(u8),
}

/// The length of the next typed message if its header is buffered (type byte included).
pub fn peek_len(buf: &[u8], max: usize) -> Result<Option<usize>, CodecError> {
    let Some(header) = buf.get(..HEADER_LEN) else { return Ok(None) };
    let len = u32::from_be_bytes([header[1], header[2], header[3], header[4]]);
    if len < 4 {
        return Err(malformed(format!("message length {len} is below 4")));
    }
    let total = u64::from(len) + 1;
    if total > max as u64 {
        return Err(CodecError::Oversized { len: total, max: max as u64 });
    }
    Ok(Some(total as usize))
}

/// Splits the next typed message off `buf`.
pub fn decode(buf: &mut BytesMut, max: usize) -> Result<Decoded<FrontendMessage>, CodecError> {
    let Some(total) = peek_len(buf, max)? else { return Ok(Decoded::Incomplete) };
    if buf.len() < total {
        return Ok(Decoded::Incomplete);
    }
    let mut frame = buf.split_to(total).freeze();
    let tag = frame[0];
    frame.advance(HEADER_LEN);
    let message = match tag {
        b'p' => FrontendMessage::Password(frame),
        b'Q' => {
            let text = cstring(&mut frame, "query")?;
            if !frame.is_empty() {
                return Err(malformed("bytes after the query string"));
            }
            FrontendMessage::Query(text)
        }
        b'd' => FrontendMessage::CopyData(frame),
        b'c' | b'X' | b'S' | b'H' if !frame.is_empty() => {
            return Err(malformed(format!("message {:?} with a body", char::from(tag))));
        }
        b'c' => FrontendMessage::CopyDone,
        b'X' => FrontendMessage::Terminate,
        b'S' | b'H' => FrontendMessage::SyncOrFlush,
        b'f' => FrontendMessage::CopyFail(
            String::from_utf8_lossy(frame.strip_suffix(b"\0").unwrap_or(&frame)).into_owned(),
        ),
        other => FrontendMessage::Other(other),
    };
    Ok(Decoded::Message(message))
}

#[cfg(test)]
mod tests {
    use bytes::BufMut;
    use proptest::prelude::*;

    use super::*;

    fn startup(params: &[(&str, &str)]) -> BytesMut {
        let mut out = BytesMut::new();
        postgres_protocol::message::frontend::startup_message(params.iter().copied(), &mut out).unwrap();
        out
    }

    #[test]
    fn startup_packets_decode_only_when_whole() {
        let wire = startup(&[("user", "u"), ("replication", "true")]);
        for cut in 0..wire.len() {
            let mut buf = BytesMut::from(&wire[..cut]);
            assert_eq!(decode_startup(&mut buf).unwrap(), Decoded::Incomplete, "at {cut}");
            assert_eq!(buf.len(), cut, "nothing consumed");
        }
        let mut buf = wire.clone();
        let Decoded::Message(StartupPacket::Startup(params)) = decode_startup(&mut buf).unwrap() else {
            panic!()
        };
        assert_eq!(params, [("user".to_owned(), "u".to_owned()), ("replication".into(), "true".into())]);
        assert!(buf.is_empty());
    }

    #[test]
    fn requests_and_bad_startups() {
        let mut ssl = BytesMut::new();
        postgres_protocol::message::frontend::ssl_request(&mut ssl);
        assert_eq!(decode_startup(&mut ssl).unwrap(), Decoded::Message(StartupPacket::SslRequest));
        let mut cancel = BytesMut::new();
        postgres_protocol::message::frontend::cancel_request(1, 2, &mut cancel);
        assert_eq!(decode_startup(&mut cancel).unwrap(), Decoded::Message(StartupPacket::CancelRequest));
        let mut huge = BytesMut::from(&[0, 1, 0, 0][..]);
        assert!(matches!(decode_startup(&mut huge), Err(CodecError::Oversized { .. })));
        let mut tiny = BytesMut::from(&[0, 0, 0, 3][..]);
        assert!(matches!(decode_startup(&mut tiny), Err(CodecError::Malformed(_))));
        // A parameter list without its terminator.
        let mut wire = startup(&[("user", "u")]);
        let len = wire.len();
        wire.truncate(len - 1);
        wire[..4].copy_from_slice(&((len - 1) as u32).to_be_bytes());
        assert!(decode_startup(&mut wire).is_err());
        let mut v2 = BytesMut::new();
        v2.put_u32(8);
        v2.put_u32(2 << 16);
        assert_eq!(
            decode_startup(&mut v2).unwrap(),
            Decoded::Message(StartupPacket::UnsupportedVersion(2 << 16))
        );
    }

    #[test]
    fn typed_messages_decode() {
        let mut buf = BytesMut::new();
        postgres_protocol::message::frontend::query("IDENTIFY_SYSTEM", &mut buf).unwrap();
        postgres_protocol::message::frontend::copy_done(&mut buf);
        postgres_protocol::message::frontend::terminate(&mut buf);
        assert_eq!(
            decode(&mut buf, 1 << 20).unwrap(),
            Decoded::Message(FrontendMessage::Query("IDENTIFY_SYSTEM".into()))
        );
        assert_eq!(decode(&mut buf, 1 << 20).unwrap(), Decoded::Message(FrontendMessage::CopyDone));
        assert_eq!(decode(&mut buf, 1 << 20).unwrap(), Decoded::Message(FrontendMessage::Terminate));
        assert_eq!(decode(&mut buf, 1 << 20).unwrap(), Decoded::Incomplete);
        let mut big = BytesMut::from(&[b'd', 0xFF, 0xFF, 0xFF, 0xFF][..]);
        assert!(matches!(decode(&mut big, 1 << 20), Err(CodecError::Oversized { .. })));
        let mut bad = BytesMut::from(&[b'Q', 0, 0, 0, 6, b'x', b'y'][..]);
        assert!(matches!(decode(&mut bad, 1 << 20), Err(CodecError::Malformed(_))));
    }

    proptest! {
        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..64), max in 0usize..100) {
            let mut buf = BytesMut::from(&bytes[..]);
            let _ = decode(&mut buf, max);
            let mut buf = BytesMut::from(&bytes[..]);
            let _ = decode_startup(&mut buf);
        }

        #[test]
        fn random_bodies_with_valid_lengths_never_panic(
            tag in any::<u8>(),
            body in proptest::collection::vec(any::<u8>(), 0..64),
            cut in 0usize..80,
        ) {
            let mut wire = BytesMut::new();
            wire.put_u8(tag);
            wire.put_u32(body.len() as u32 + 4);
            wire.put_slice(&body);
            let whole = wire.len();
            wire.truncate(cut.min(whole));
            let mut buf = wire.clone();
            match decode(&mut buf, 1 << 20) {
                Ok(Decoded::Incomplete) => prop_assert!(cut < whole && buf.len() == wire.len()),
                Ok(Decoded::Message(_)) => prop_assert!(buf.is_empty()),
                Err(_) => {}
            }
            let mut start = BytesMut::new();
            start.put_u32(body.len() as u32 + 8);
            start.put_u32(PROTOCOL_3_0);
            start.put_slice(&body);
            let whole = start.len();
            start.truncate(cut.min(whole));
            let _ = decode_startup(&mut start);
        }
    }
}
