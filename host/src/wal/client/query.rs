//! Simple-query exchanges on a replication connection: send one command, collect its result
//! set (text format) up to `ReadyForQuery`, and read typed values out of it by column name.
//!
//! Owns: the collector (pure: messages in, a [`ResultSet`] or the server's error out) and the
//! short async loop that feeds it. Must never: return before `ReadyForQuery` (the connection
//! would be out of step), or keep an unbounded number of rows.

use bytes::Bytes;
use postgres_protocol::message::frontend;

use super::codec::{BackendMessage, Column};
use super::conn::{ReplicationConn, unexpected};
use super::error::{ServerError, WalClientError};

/// Replication commands answer with a row or a few; anything past this is not PostgreSQL.
const MAX_ROWS: usize = 1024;

/// One command's result: columns, rows (text format, `None` = NULL) and the completion tag.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResultSet {
    /// The command, for errors about its result.
    pub command: &'static str,
    pub columns: Vec<Column>,
    pub rows: Vec<Vec<Option<Bytes>>>,
    pub tag: String,
}

impl ResultSet {
    /// The only row, or an error naming the command.
    pub fn single_row(&self) -> Result<Row<'_>, WalClientError> {
        match self.rows.as_slice() {
            [values] => Ok(Row { set: self, values }),
            rows => Err(self.bad(format!("{} rows instead of 1", rows.len()))),
        }
    }

    pub(super) fn bad(&self, why: impl Into<String>) -> WalClientError {
        WalClientError::BadResult { command: self.command, why: why.into() }
    }
}

/// One row of a [`ResultSet`].
#[derive(Debug, Clone, Copy)]
pub struct Row<'a> {
    set: &'a ResultSet,
    values: &'a [Option<Bytes>],
}

impl<'a> Row<'a> {
    /// The raw value of column `name`; `None` for NULL.
    pub fn bytes(&self, name: &str) -> Result<Option<&'a Bytes>, WalClientError> {
        let index = self
            .set
            .columns
            .iter()
            .position(|c| c.name == name)
            .ok_or_else(|| self.set.bad(format!("no column {name:?}")))?;
        Ok(self.values.get(index).and_then(Option::as_ref))
    }

    /// The value of column `name` as UTF-8 text; `None` for NULL.
    pub fn text(&self, name: &str) -> Result<Option<&'a str>, WalClientError> {
        match self.bytes(name)? {
            None => Ok(None),
            Some(b) => {
                std::str::from_utf8(b).map(Some).map_err(|_| self.set.bad(format!("{name} is not UTF-8")))
            }
        }
    }

    /// The value of column `name`, which must not be NULL.
    pub fn required(&self, name: &str) -> Result<&'a str, WalClientError> {
        self.text(name)?.ok_or_else(|| self.set.bad(format!("{name} is NULL")))
    }

    /// The value of column `name` parsed as `T`; `None` for NULL.
    pub fn parse<T: std::str::FromStr>(&self, name: &str) -> Result<Option<T>, WalClientError> {
        match self.text(name)? {
            None => Ok(None),
            Some(t) => t.parse().map(Some).map_err(|_| self.set.bad(format!("{name} is not valid: {t:?}"))),
        }
    }
}

/// What feeding the collector one message led to.
#[derive(Debug)]
pub enum Fed {
    More,
    /// `ReadyForQuery` came: the result, or the server's error for the command.
    Done(Result<ResultSet, ServerError>),
}

/// Collects one simple query's answer, message by message.
#[derive(Debug)]
pub struct QueryCollector {
    set: ResultSet,
    described: bool,
    error: Option<ServerError>,
}

impl QueryCollector {
    pub fn new(command: &'static str) -> Self {
        Self { set: ResultSet { command, ..ResultSet::default() }, described: false, error: None }
    }

    /// Takes the next message. An `Err` is a protocol violation: the connection is done for.
    pub fn feed(&mut self, message: BackendMessage) -> Result<Fed, WalClientError> {
        match message {
            BackendMessage::RowDescription(columns) if !self.described => {
                self.set.columns = columns;
                self.described = true;
            }
            BackendMessage::DataRow(values) if self.described && values.len() == self.set.columns.len() => {
                if self.set.rows.len() == MAX_ROWS {
                    return Err(self.set.bad(format!("more than {MAX_ROWS} rows")));
                }
                self.set.rows.push(values);
            }
            BackendMessage::CommandComplete(tag) => self.set.tag = tag,
            BackendMessage::EmptyQueryResponse => {}
            BackendMessage::ErrorResponse(e) => self.error = Some(e),
            BackendMessage::ReadyForQuery { .. } => {
                let set = std::mem::take(&mut self.set);
                return Ok(Fed::Done(match self.error.take() {
                    Some(e) => Err(e),
                    None => Ok(set),
                }));
            }
            other => return Err(unexpected(&other, "in a command's result")),
        }
        Ok(Fed::More)
    }

    /// The server's error, if one arrived: worth more than the closed connection that often
    /// follows a FATAL one.
    pub fn take_error(&mut self) -> Option<ServerError> {
        self.error.take()
    }
}

impl ReplicationConn {
    /// Runs one command with the simple query protocol and returns its result set; the
    /// server's refusal comes back as [`WalClientError::Server`] with the connection still
    /// usable. Not cancel-safe: a dropped call leaves the connection out of step.
    pub async fn simple_query(
        &mut self,
        command: &'static str,
        sql: &str,
    ) -> Result<ResultSet, WalClientError> {
        self.begin_exchange()?;
        frontend::query(sql, self.out()).map_err(|e| WalClientError::Config(format!("{command}: {e}")))?;
        self.flush().await?;
        tracing::debug!(sql, "sent");
        let mut collector = QueryCollector::new(command);
        loop {
            let message = match self.read_message().await {
                Ok(message) => message,
                Err(e) => return Err(collector.take_error().map_or(e, WalClientError::from)),
            };
            if let Fed::Done(result) = collector.feed(message)? {
                self.end_exchange();
                return result.map_err(WalClientError::from);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn column(name: &str) -> Column {
        Column { name: name.into(), type_oid: 25 }
    }

    #[test]
    fn collects_a_row_then_finishes_at_ready_for_query() {
        let mut c = QueryCollector::new("TEST");
        let feed = [
            BackendMessage::RowDescription(vec![column("a"), column("b")]),
            BackendMessage::DataRow(vec![Some(Bytes::from_static(b"12")), None]),
            BackendMessage::CommandComplete("SELECT".into()),
        ];
        for m in feed {
            assert!(matches!(c.feed(m).unwrap(), Fed::More));
        }
        let Fed::Done(Ok(set)) = c.feed(BackendMessage::ReadyForQuery { status: b'I' }).unwrap() else {
            panic!()
        };
        let row = set.single_row().unwrap();
        assert_eq!(row.parse::<u32>("a").unwrap(), Some(12));
        assert_eq!(row.text("b").unwrap(), None);
        assert!(row.required("b").is_err());
        assert!(row.text("c").is_err());
    }

    #[test]
    fn server_errors_wait_for_ready_and_strangers_are_refused() {
        let mut c = QueryCollector::new("TEST");
        let e = ServerError { code: "42710".into(), ..ServerError::default() };
        assert!(matches!(c.feed(BackendMessage::ErrorResponse(e)).unwrap(), Fed::More));
        let Fed::Done(Err(e)) = c.feed(BackendMessage::ReadyForQuery { status: b'I' }).unwrap() else {
            panic!()
        };
        assert_eq!(e.code, "42710");

        let mut c = QueryCollector::new("TEST");
        assert!(c.feed(BackendMessage::CopyBothResponse).is_err());
        assert!(c.feed(BackendMessage::DataRow(vec![])).is_err(), "a row before its description");
        c.feed(BackendMessage::RowDescription(vec![column("a")])).unwrap();
        assert!(c.feed(BackendMessage::DataRow(vec![None, None])).is_err(), "a row of the wrong width");
    }
}
