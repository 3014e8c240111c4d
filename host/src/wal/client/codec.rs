//! Backend messages off the wire, pure (no I/O): split one message off a read buffer, check its
//! length against a cap *before* buffering it, and turn it into a [`BackendMessage`] that owns
//! its fields. postgres-protocol does the per-message parsing; this layer adds the cap, the
//! `CopyBothResponse` it does not know, and conversion into types that cannot be misread.
//!
//! Must never: panic or allocate by a length the server claims before checking it.

use bytes::{Buf, Bytes, BytesMut};
use fallible_iterator::FallibleIterator;
use postgres_protocol::message::backend::{self, ErrorFields, Message};

use super::error::{ServerError, WalClientError};

/// Type byte and length word.
pub const HEADER_LEN: usize = 5;
/// `CopyBothResponse`: the server entered COPY both ways (START_REPLICATION).
const COPY_BOTH_RESPONSE_TAG: u8 = b'W';
/// `NegotiateProtocolVersion`: only sent for protocol options we never request.
const NEGOTIATE_PROTOCOL_VERSION_TAG: u8 = b'v';

/// What the server asks of us during authentication.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthRequest {
    Ok,
    CleartextPassword,
    Md5Password {
        salt: [u8; 4],
    },
    Sasl {
        mechanisms: Vec<String>,
    },
    SaslContinue(Bytes),
    SaslFinal(Bytes),
    /// A method this client does not speak (Kerberos, GSS, SSPI, SCM credentials).
    Unsupported(&'static str),
}

/// A column of a `RowDescription`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    pub name: String,
    pub type_oid: u32,
}

/// One message from the server, with everything this client reads out of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BackendMessage {
    Authentication(AuthRequest),
    ParameterStatus {
        name: String,
        value: String,
    },
    BackendKeyData {
        process_id: i32,
        secret_key: i32,
    },
    ReadyForQuery {
        status: u8,
    },
    ErrorResponse(ServerError),
    NoticeResponse(ServerError),
    RowDescription(Vec<Column>),
    /// Column values in text format; `None` is SQL NULL.
    DataRow(Vec<Option<Bytes>>),
    CommandComplete(String),
    EmptyQueryResponse,
    CopyBothResponse,
    CopyData(Bytes),
    CopyDone,
    /// A well-formed message this client never expects here (named by its type byte).
    Other(u8),
}

impl BackendMessage {
    /// A short name for "unexpected ..." errors and logs.
    pub fn describe(&self) -> String {
        match self {
            BackendMessage::Authentication(r) => format!("authentication request {r:?}"),
            BackendMessage::ParameterStatus { .. } => "ParameterStatus".into(),
            BackendMessage::BackendKeyData { .. } => "BackendKeyData".into(),
            BackendMessage::ReadyForQuery { .. } => "ReadyForQuery".into(),
            BackendMessage::ErrorResponse(e) => format!("ErrorResponse ({e})"),
            BackendMessage::NoticeResponse(_) => "NoticeResponse".into(),
            BackendMessage::RowDescription(_) => "RowDescription".into(),
            BackendMessage::DataRow(_) => "DataRow".into(),
            BackendMessage::CommandComplete(tag) => format!("CommandComplete {tag:?}"),
            BackendMessage::EmptyQueryResponse => "EmptyQueryResponse".into(),
            BackendMessage::CopyBothResponse => "CopyBothResponse".into(),
            BackendMessage::CopyData(_) => "CopyData".into(),
            BackendMessage::CopyDone => "CopyDone".into(),
            BackendMessage::Other(tag) => format!("message of type {:?}", char::from(*tag)),
        }
    }
}

/// The length of the next message if its header is buffered: type byte plus the length word's
/// value. Refuses lengths below the length word itself or above `max`.
pub fn peek_len(buf: &[u8], max: usize) -> Result<Option<usize>, WalClientError> {
    let Some(header) = buf.get(..HEADER_LEN) else { return Ok(None) };
    let len = u32::from_be_bytes([header[1], header[2], header[3], header[4]]);
    if len < 4 {
        return Err(WalClientError::malformed(format!("message length {len} is below 4")));
    }
    let total = u64::from(len) + 1;
    if total > max as u64 {
        return Err(WalClientError::Oversized { len: total, max: max as u64 });
    }
    Ok(Some(total as usize))
}

/// Splits the next whole message off `buf`; `Ok(None)` until all of it is buffered.
pub fn decode(buf: &mut BytesMut, max: usize) -> Result<Option<BackendMessage>, WalClientError> {
    let Some(total) = peek_len(buf, max)? else { return Ok(None) };
    if buf.len() < total {
        return Ok(None);
    }
    let mut frame = buf.split_to(total);
    match frame[0] {
        COPY_BOTH_RESPONSE_TAG => {
            // Overall format, then a format per column: only the length rules matter to us.
            frame.advance(HEADER_LEN);
            if frame.len() < 3 || frame.len() != 3 + 2 * usize::from(u16::from_be_bytes([frame[1], frame[2]]))
            {
                return Err(WalClientError::malformed("CopyBothResponse of the wrong length"));
            }
            Ok(Some(BackendMessage::CopyBothResponse))
        }
        NEGOTIATE_PROTOCOL_VERSION_TAG => Ok(Some(BackendMessage::Other(NEGOTIATE_PROTOCOL_VERSION_TAG))),
        _ => match Message::parse(&mut frame) {
            Ok(Some(message)) => convert(message).map(Some),
            Ok(None) => Err(WalClientError::malformed("message shorter than its length word")),
            Err(e) => Err(WalClientError::malformed(e)),
        },
    }
}

fn convert(message: Message) -> Result<BackendMessage, WalClientError> {
    Ok(match message {
        Message::AuthenticationOk => BackendMessage::Authentication(AuthRequest::Ok),
        Message::AuthenticationCleartextPassword => {
            BackendMessage::Authentication(AuthRequest::CleartextPassword)
        }
        Message::AuthenticationMd5Password(body) => {
            BackendMessage::Authentication(AuthRequest::Md5Password { salt: body.salt() })
        }
        Message::AuthenticationSasl(body) => {
            let mechanisms =
                body.mechanisms().map(|m| Ok(m.to_owned())).collect().map_err(WalClientError::malformed)?;
            BackendMessage::Authentication(AuthRequest::Sasl { mechanisms })
        }
        Message::AuthenticationSaslContinue(body) => {
            BackendMessage::Authentication(AuthRequest::SaslContinue(Bytes::copy_from_slice(body.data())))
        }
        Message::AuthenticationSaslFinal(body) => {
            BackendMessage::Authentication(AuthRequest::SaslFinal(Bytes::copy_from_slice(body.data())))
        }
        Message::AuthenticationKerberosV5 => {
            BackendMessage::Authentication(AuthRequest::Unsupported("Kerberos V5"))
        }
        Message::AuthenticationScmCredential => {
            BackendMessage::Authentication(AuthRequest::Unsupported("SCM credential"))
        }
        Message::AuthenticationGss | Message::AuthenticationGssContinue(_) => {
            BackendMessage::Authentication(AuthRequest::Unsupported("GSSAPI"))
        }
        Message::AuthenticationSspi => BackendMessage::Authentication(AuthRequest::Unsupported("SSPI")),
        Message::ParameterStatus(body) => BackendMessage::ParameterStatus {
            name: body.name().map_err(WalClientError::malformed)?.to_owned(),
            value: body.value().map_err(WalClientError::malformed)?.to_owned(),
        },
        Message::BackendKeyData(body) => {
            BackendMessage::BackendKeyData { process_id: body.process_id(), secret_key: body.secret_key() }
        }
        Message::ReadyForQuery(body) => BackendMessage::ReadyForQuery { status: body.status() },
        Message::ErrorResponse(body) => BackendMessage::ErrorResponse(server_error(body.fields())?),
        Message::NoticeResponse(body) => BackendMessage::NoticeResponse(server_error(body.fields())?),
        Message::RowDescription(body) => {
            let columns = body
                .fields()
                .map(|f| Ok(Column { name: f.name().to_owned(), type_oid: f.type_oid() }))
                .collect()
                .map_err(WalClientError::malformed)?;
            BackendMessage::RowDescription(columns)
        }
        Message::DataRow(body) => {
            let storage = body.buffer_bytes().clone();
            let values = body
                .ranges()
                .map(|r| Ok(r.map(|r| storage.slice(r))))
                .collect()
                .map_err(WalClientError::malformed)?;
            BackendMessage::DataRow(values)
        }
        Message::CommandComplete(body) => {
            BackendMessage::CommandComplete(body.tag().map_err(WalClientError::malformed)?.to_owned())
        }
        Message::EmptyQueryResponse => BackendMessage::EmptyQueryResponse,
        Message::CopyData(body) => BackendMessage::CopyData(body.into_bytes()),
        Message::CopyDone => BackendMessage::CopyDone,
        Message::CopyInResponse(_) => BackendMessage::Other(backend::COPY_IN_RESPONSE_TAG),
        Message::CopyOutResponse(_) => BackendMessage::Other(backend::COPY_OUT_RESPONSE_TAG),
        Message::NotificationResponse(_) => BackendMessage::Other(backend::NOTIFICATION_RESPONSE_TAG),
        Message::ParameterDescription(_) => BackendMessage::Other(backend::PARAMETER_DESCRIPTION_TAG),
        Message::ParseComplete => BackendMessage::Other(backend::PARSE_COMPLETE_TAG),
        Message::BindComplete => BackendMessage::Other(backend::BIND_COMPLETE_TAG),
        Message::CloseComplete => BackendMessage::Other(backend::CLOSE_COMPLETE_TAG),
        Message::NoData => BackendMessage::Other(backend::NO_DATA_TAG),
        Message::PortalSuspended => BackendMessage::Other(backend::PORTAL_SUSPENDED_TAG),
        _ => return Err(WalClientError::malformed("a message type this client cannot read")),
    })
}

/// Reads the fields of an `ErrorResponse`/`NoticeResponse`. Non-UTF-8 text is replaced, not
/// refused: a server's message in another encoding is still worth showing.
fn server_error(mut fields: ErrorFields<'_>) -> Result<ServerError, WalClientError> {
    let mut e = ServerError::default();
    let mut localized_severity = None;
    while let Some(field) = fields.next().map_err(WalClientError::malformed)? {
        let value = String::from_utf8_lossy(field.value_bytes()).into_owned();
        match field.type_() {
            b'S' => localized_severity = Some(value),
            b'V' => e.severity = value,
            b'C' => e.code = value,
            b'M' => e.message = value,
            b'D' => e.detail = Some(value),
            b'H' => e.hint = Some(value),
            _ => {}
        }
    }
    if e.severity.is_empty() {
        e.severity = localized_severity.unwrap_or_default();
    }
    Ok(e)
}

#[cfg(test)]
pub(super) mod tests {
    use bytes::BufMut;

    use super::*;

    /// A backend message: type byte, length word, body.
    pub fn frame(tag: u8, body: &[u8]) -> BytesMut {
        let mut b = BytesMut::new();
        b.put_u8(tag);
        b.put_u32(body.len() as u32 + 4);
        b.put_slice(body);
        b
    }

    #[test]
    fn messages_decode_only_when_whole() {
        let mut wire = frame(b'Z', b"I");
        wire.extend_from_slice(&frame(b'c', b""));
        let mut buf = BytesMut::new();
        for (i, byte) in wire.iter().enumerate() {
            buf.put_u8(*byte);
            let got = decode(&mut buf, 1 << 20).unwrap();
            match i {
                5 => assert_eq!(got, Some(BackendMessage::ReadyForQuery { status: b'I' })),
                10 => assert_eq!(got, Some(BackendMessage::CopyDone)),
                _ => assert_eq!(got, None, "at byte {i}"),
            }
        }
        assert!(buf.is_empty());
    }

    #[test]
    fn lengths_are_checked_before_buffering() {
        let mut buf = BytesMut::from(&[b'd', 0xFF, 0xFF, 0xFF, 0xFF][..]);
        assert!(matches!(decode(&mut buf, 1 << 20), Err(WalClientError::Oversized { .. })));
        let mut buf = BytesMut::from(&[b'd', 0, 0, 0, 3][..]);
        assert!(matches!(decode(&mut buf, 1 << 20), Err(WalClientError::Malformed(_))));
    }

    #[test]
    fn errors_keep_their_sqlstate_and_text() {
        let mut buf = frame(b'E', b"SERROR\0VERROR\0C42710\0Mreplication slot \"s\" already exists\0Dd\0\0");
        let Some(BackendMessage::ErrorResponse(e)) = decode(&mut buf, 1 << 20).unwrap() else { panic!() };
        assert_eq!(e.code, "42710");
        assert_eq!(e.severity, "ERROR");
        assert_eq!(e.detail.as_deref(), Some("d"));
        assert!(e.to_string().contains("already exists"));
    }

    #[test]
    fn copy_both_and_data_rows_decode() {
        let mut buf = frame(b'W', &[0, 0, 0]);
        assert_eq!(decode(&mut buf, 1 << 20).unwrap(), Some(BackendMessage::CopyBothResponse));
        let mut buf = frame(b'W', &[0, 0, 1]);
        assert!(decode(&mut buf, 1 << 20).is_err());
        let mut buf = frame(b'D', &[0, 2, 0, 0, 0, 1, b'2', 0xFF, 0xFF, 0xFF, 0xFF]);
        assert_eq!(
            decode(&mut buf, 1 << 20).unwrap(),
            Some(BackendMessage::DataRow(vec![Some(Bytes::from_static(b"2")), None]))
        );
    }
}
