//! PostgreSQL's first client message, read at both ends of the tunnel (pure): an `SSLRequest`
//! or `GSSENCRequest` (answered `N`: the tunnel is the encryption, and over a Unix socket libpq
//! asks for neither), a `CancelRequest`, or the startup packet whose `user` and
//! `application_name` the tunnel checks and counts by. Also the `ErrorResponse` a refusal is
//! told with.
//!
//! ```text
//! length i32 (itself included) | code i32 | body
//! code 196608 (3.0): body = (key NUL value NUL)* NUL
//! ```

use std::collections::HashMap;

/// PostgreSQL's own limit on a startup packet (`MAX_STARTUP_PACKET_LENGTH`).
pub const MAX_STARTUP_LEN: usize = 10_000;
const PROTOCOL_3: u32 = 196_608;
/// The code of an `SSLRequest` (a length of 8, then this).
pub const SSL_REQUEST: u32 = 80_877_103;
const GSSENC_REQUEST: u32 = 80_877_104;
const CANCEL_REQUEST: u32 = 80_877_102;
/// The answer to an encryption request: not here.
pub const NO_ENCRYPTION: &[u8] = b"N";

/// One first message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum First {
    /// An SSL or GSS encryption request (answer [`NO_ENCRYPTION`], then read again).
    EncryptionRequest,
    Cancel,
    /// The startup packet's parameters.
    Startup(HashMap<String, String>),
}

/// The first message at the start of `buf`, and its length; `Ok(None)` while incomplete.
pub fn parse(buf: &[u8]) -> Result<Option<(First, usize)>, String> {
    let Some(head) = buf.get(..8) else { return Ok(None) };
    let len = u32::from_be_bytes([head[0], head[1], head[2], head[3]]) as usize;
    if !(8..=MAX_STARTUP_LEN).contains(&len) {
        return Err(format!("a first message of {len} bytes (PostgreSQL's limit is 8 to {MAX_STARTUP_LEN})"));
    }
    let Some(message) = buf.get(..len) else { return Ok(None) };
    let code = u32::from_be_bytes([head[4], head[5], head[6], head[7]]);
    let first = match code {
        SSL_REQUEST | GSSENC_REQUEST if len == 8 => First::EncryptionRequest,
        CANCEL_REQUEST if len == 16 => First::Cancel,
        PROTOCOL_3 => First::Startup(parameters(&message[8..])?),
        other => return Err(format!("protocol code {other} (only 3.0 is spoken)")),
    };
    Ok(Some((first, len)))
}

fn parameters(body: &[u8]) -> Result<HashMap<String, String>, String> {
    let Some((&0, pairs)) = body.split_last() else {
        return Err("a startup packet not ending in NUL".into());
    };
    let mut fields = pairs.split(|b| *b == 0);
    let mut out = HashMap::new();
    if pairs.is_empty() {
        return Ok(out);
    }
    // `pairs` ends with the last value's NUL: the split's last piece is empty.
    while let Some(key) = fields.next() {
        if key.is_empty() {
            break;
        }
        let value = fields.next().ok_or("a startup parameter without a value")?;
        let text =
            |b: &[u8]| String::from_utf8(b.to_vec()).map_err(|_| "a startup parameter that is not UTF-8");
        out.insert(text(key)?, text(value)?);
    }
    Ok(out)
}

/// A PostgreSQL `ErrorResponse` (severity FATAL, SQLSTATE 28000: invalid authorization)
/// carrying `message`.
pub fn error_response(message: &str) -> Vec<u8> {
    let mut body = Vec::new();
    for (field, value) in [(b'S', "FATAL"), (b'V', "FATAL"), (b'C', "28000"), (b'M', message)] {
        body.push(field);
        body.extend(value.bytes().filter(|b| *b != 0));
        body.push(0);
    }
    body.push(0);
    let mut out = vec![b'E'];
    out.extend_from_slice(&((body.len() + 4) as u32).to_be_bytes());
    out.extend_from_slice(&body);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use postgres_protocol::message::frontend;

    fn startup(params: &[(&str, &str)]) -> Vec<u8> {
        let mut buf = bytes::BytesMut::new();
        frontend::startup_message(params.iter().copied(), &mut buf).unwrap();
        buf.to_vec()
    }

    #[test]
    fn a_startup_packet_is_read_whole_or_not_at_all() {
        let bytes = startup(&[("user", "rep"), ("replication", "true"), ("application_name", "tandem")]);
        for cut in 0..bytes.len() {
            assert_eq!(parse(&bytes[..cut]).unwrap(), None, "incomplete at {cut}");
        }
        let mut more = bytes.clone();
        more.extend_from_slice(b"next");
        let (first, len) = parse(&more).unwrap().unwrap();
        assert_eq!(len, bytes.len());
        let First::Startup(p) = first else { panic!("{first:?}") };
        assert_eq!((p["user"].as_str(), p["application_name"].as_str()), ("rep", "tandem"));
    }

    #[test]
    fn encryption_and_cancel_requests_and_garbage() {
        let mut ssl = 8u32.to_be_bytes().to_vec();
        ssl.extend_from_slice(&SSL_REQUEST.to_be_bytes());
        assert_eq!(parse(&ssl).unwrap(), Some((First::EncryptionRequest, 8)));
        let mut cancel = 16u32.to_be_bytes().to_vec();
        cancel.extend_from_slice(&CANCEL_REQUEST.to_be_bytes());
        cancel.extend_from_slice(&[0; 8]);
        assert_eq!(parse(&cancel).unwrap(), Some((First::Cancel, 16)));
        assert!(parse(b"GET / HTTP/1.1\r\n").unwrap_err().contains("bytes"));
        let mut huge = (MAX_STARTUP_LEN as u32 + 1).to_be_bytes().to_vec();
        huge.extend_from_slice(&PROTOCOL_3.to_be_bytes());
        assert!(parse(&huge).unwrap_err().contains("limit"));
        let mut v2 = 8u32.to_be_bytes().to_vec();
        v2.extend_from_slice(&131_072u32.to_be_bytes());
        assert!(parse(&v2).unwrap_err().contains("3.0"));
        let mut odd = 12u32.to_be_bytes().to_vec();
        odd.extend_from_slice(&PROTOCOL_3.to_be_bytes());
        odd.extend_from_slice(b"abcd");
        assert!(parse(&odd).unwrap_err().contains("NUL"));
    }

    #[test]
    fn an_error_response_is_a_well_formed_message() {
        let e = error_response("tandem: no\0pe");
        assert_eq!(e[0], b'E');
        assert_eq!(u32::from_be_bytes([e[1], e[2], e[3], e[4]]) as usize, e.len() - 1);
        assert!(e.windows(7).any(|w| w == b"Mtandem"));
        assert!(e.ends_with(b"pe\0\0"), "NUL inside a value is dropped, the message ends the body");
    }
}
