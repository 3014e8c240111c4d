//! Backend messages onto the wire, pure: each encoder appends one message (type byte, length
//! word, body) to an output buffer. Only what a walsender sends: authentication requests,
//! ParameterStatus, BackendKeyData, ReadyForQuery, ErrorResponse, the result-set messages,
//! CopyBothResponse and the copy messages.
//!
//! Must never: write a length word that disagrees with the body (the client would lose step).

use bytes::{BufMut, BytesMut};

/// Type OIDs PostgreSQL labels replication result columns with.
pub mod oid {
    /// `int4`
    pub const INT4: u32 = 23;
    /// `int8`
    pub const INT8: u32 = 20;
    /// `text`
    pub const TEXT: u32 = 25;
    /// `bytea` (TIMELINE_HISTORY's content column up to PostgreSQL 15, sent unescaped)
    pub const BYTEA: u32 = 17;
}

/// Authentication request codes ('R').
const AUTH_OK: i32 = 0;
const AUTH_SASL: i32 = 10;
const AUTH_SASL_CONTINUE: i32 = 11;
const AUTH_SASL_FINAL: i32 = 12;

/// Appends one message: `tag`, then a length word covering what `body` writes.
fn message(out: &mut BytesMut, tag: u8, body: impl FnOnce(&mut BytesMut)) {
    out.put_u8(tag);
    let at = out.len();
    out.put_u32(0);
    body(out);
    let len = (out.len() - at) as u32;
    out[at..at + 4].copy_from_slice(&len.to_be_bytes());
}

fn put_cstr(out: &mut BytesMut, s: &str) {
    // A NUL inside would end the string early on the client: cut it there instead.
    out.put_slice(s.split('\0').next().unwrap_or_default().as_bytes());
    out.put_u8(0);
}

/// AuthenticationOk.
pub fn auth_ok(out: &mut BytesMut) {
    message(out, b'R', |b| b.put_i32(AUTH_OK));
}

/// AuthenticationSASL with the mechanisms offered.
pub fn auth_sasl(out: &mut BytesMut, mechanisms: &[&str]) {
    message(out, b'R', |b| {
        b.put_i32(AUTH_SASL);
        for m in mechanisms {
            put_cstr(b, m);
        }
        b.put_u8(0);
    });
}

/// AuthenticationSASLContinue with the server-first message.
pub fn auth_sasl_continue(out: &mut BytesMut, data: &[u8]) {
    message(out, b'R', |b| {
        b.put_i32(AUTH_SASL_CONTINUE);
        b.put_slice(data);
    });
}

/// AuthenticationSASLFinal with the server-final message.
pub fn auth_sasl_final(out: &mut BytesMut, data: &[u8]) {
    message(out, b'R', |b| {
        b.put_i32(AUTH_SASL_FINAL);
        b.put_slice(data);
    });
}

/// ParameterStatus.
pub fn parameter_status(out: &mut BytesMut, name: &str, value: &str) {
    message(out, b'S', |b| {
        put_cstr(b, name);
        put_cstr(b, value);
    });
}

/// BackendKeyData.
pub fn backend_key_data(out: &mut BytesMut, process_id: i32, secret_key: i32) {
    message(out, b'K', |b| {
        b.put_i32(process_id);
        b.put_i32(secret_key);
    });
}

/// ReadyForQuery, idle.
pub fn ready_for_query(out: &mut BytesMut) {
    message(out, b'Z', |b| b.put_u8(b'I'));
}

/// How bad an error is: ERROR leaves the connection usable, FATAL closes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    /// The command failed; the session goes on.
    Error,
    /// The session ends.
    Fatal,
}

/// An error as the client will see it, with its SQLSTATE.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code} {message}")]
pub struct SqlError {
    /// ERROR or FATAL.
    pub severity: Severity,
    /// The five-character SQLSTATE.
    pub code: &'static str,
    /// The primary message, worded as PostgreSQL words it where it has one.
    pub message: String,
    /// Optional detail line.
    pub detail: Option<String>,
}

impl SqlError {
    /// An ERROR.
    pub fn error(code: &'static str, message: impl Into<String>) -> Self {
        SqlError { severity: Severity::Error, code, message: message.into(), detail: None }
    }

    /// A FATAL error.
    pub fn fatal(code: &'static str, message: impl Into<String>) -> Self {
        SqlError { severity: Severity::Fatal, code, message: message.into(), detail: None }
    }

    /// With a detail line.
    pub fn with_detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }
}

/// ErrorResponse.
pub fn error_response(out: &mut BytesMut, e: &SqlError) {
    let severity = match e.severity {
        Severity::Error => "ERROR",
        Severity::Fatal => "FATAL",
    };
    message(out, b'E', |b| {
        for (field, value) in [(b'S', severity), (b'V', severity), (b'C', e.code), (b'M', &e.message)] {
            b.put_u8(field);
            put_cstr(b, value);
        }
        if let Some(detail) = &e.detail {
            b.put_u8(b'D');
            put_cstr(b, detail);
        }
        b.put_u8(0);
    });
}

/// RowDescription for text-format columns `(name, type oid)`.
pub fn row_description(out: &mut BytesMut, columns: &[(&str, u32)]) {
    message(out, b'T', |b| {
        b.put_i16(columns.len() as i16);
        for (name, type_oid) in columns {
            put_cstr(b, name);
            b.put_u32(0); // table oid
            b.put_i16(0); // attribute number
            b.put_u32(*type_oid);
            // typlen as PostgreSQL reports it: 4 and 8 for the integers, -1 (varlena) otherwise.
            b.put_i16(match *type_oid {
                oid::INT4 => 4,
                oid::INT8 => 8,
                _ => -1,
            });
            b.put_i32(-1); // typmod
            b.put_i16(0); // text format
        }
    });
}

/// DataRow; `None` is NULL.
pub fn data_row(out: &mut BytesMut, values: &[Option<&[u8]>]) {
    message(out, b'D', |b| {
        b.put_i16(values.len() as i16);
        for v in values {
            match v {
                Some(v) => {
                    b.put_i32(v.len() as i32);
                    b.put_slice(v);
                }
                None => b.put_i32(-1),
            }
        }
    });
}

/// CommandComplete with `tag`.
pub fn command_complete(out: &mut BytesMut, tag: &str) {
    message(out, b'C', |b| put_cstr(b, tag));
}

/// EmptyQueryResponse.
pub fn empty_query_response(out: &mut BytesMut) {
    message(out, b'I', |_| {});
}

/// CopyBothResponse: binary overall format, no columns (as walsender sends it).
pub fn copy_both_response(out: &mut BytesMut) {
    message(out, b'W', |b| {
        b.put_u8(0);
        b.put_i16(0);
    });
}

/// CopyData around a payload written by `payload`.
pub fn copy_data(out: &mut BytesMut, payload: impl FnOnce(&mut BytesMut)) {
    message(out, b'd', payload);
}

/// CopyDone.
pub fn copy_done(out: &mut BytesMut) {
    message(out, b'c', |_| {});
}

#[cfg(test)]
mod tests {
    use fallible_iterator::FallibleIterator;
    use postgres_protocol::message::backend::Message;

    use super::*;

    #[test]
    fn postgres_protocol_reads_what_we_write() {
        let mut out = BytesMut::new();
        auth_sasl(&mut out, &["SCRAM-SHA-256"]);
        row_description(&mut out, &[("systemid", oid::TEXT), ("timeline", oid::INT4)]);
        data_row(&mut out, &[Some(b"7"), None]);
        error_response(&mut out, &SqlError::fatal("28P01", "no").with_detail("d"));
        copy_both_response(&mut out);
        let Some(Message::AuthenticationSasl(body)) = Message::parse(&mut out).unwrap() else { panic!() };
        assert_eq!(body.mechanisms().collect::<Vec<_>>().unwrap(), ["SCRAM-SHA-256"]);
        let Some(Message::RowDescription(body)) = Message::parse(&mut out).unwrap() else { panic!() };
        let names: Vec<(String, u32)> =
            body.fields().map(|f| Ok((f.name().to_owned(), f.type_oid()))).collect().unwrap();
        assert_eq!(names, [("systemid".to_owned(), oid::TEXT), ("timeline".to_owned(), oid::INT4)]);
        let Some(Message::DataRow(body)) = Message::parse(&mut out).unwrap() else { panic!() };
        assert_eq!(body.ranges().collect::<Vec<_>>().unwrap().len(), 2);
        let Some(Message::ErrorResponse(body)) = Message::parse(&mut out).unwrap() else { panic!() };
        let fields: Vec<(u8, String)> = body
            .fields()
            .map(|f| Ok((f.type_(), String::from_utf8_lossy(f.value_bytes()).into_owned())))
            .collect()
            .unwrap();
        assert!(fields.contains(&(b'C', "28P01".to_owned())) && fields.contains(&(b'D', "d".to_owned())));
        // CopyBothResponse is unknown to postgres-protocol: check its bytes.
        assert_eq!(&out[..], &[b'W', 0, 0, 0, 7, 0, 0, 0]);
    }
}
