//! The CopyBoth stream of START_REPLICATION: WAL and keepalives in, status updates out, and
//! the end-of-timeline handshake.
//!
//! ```text
//! client                                server
//! START_REPLICATION ...          ->
//!                                <-     CopyBothResponse
//!                                <-     CopyData('w' WAL) / CopyData('k' keepalive) ...
//! CopyData('r' status)           ->
//!        ... on a historic timeline, once its WAL is all sent:
//!                                <-     CopyDone
//! CopyDone                       ->
//!                                <-     RowDescription, DataRow(next_tli, next_tli_startpos)
//!                                <-     CommandComplete, ReadyForQuery
//! ```
//! A client may end the copy first (CopyDone); the server answers the same way. A primary that
//! shuts down sends CommandComplete inside the copy (no CopyDone) and closes.
//!
//! Owns: the stream's state machine. Must never: report a flush position past the WAL it
//! received or behind one it already reported (the slot would move backwards or past WAL
//! that is not safe), or panic on anything the server sends.

use bytes::{Bytes, BytesMut};
use postgres_protocol::message::frontend;

use super::codec::BackendMessage;
use super::conn::{ReplicationConn, unexpected};
use super::error::WalClientError;
use super::query::{Fed, QueryCollector, ResultSet};
use super::xlog::{self, PgTime, ServerCopyData, StandbyStatus};
use crate::wal::lsn::{Lsn, TimeLineId};

/// Column names of the result set that ends a historic timeline.
const NEXT_TLI: &str = "next_tli";
const NEXT_TLI_START: &str = "next_tli_startpos";

/// What the server sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// WAL bytes for `start .. start + data.len()`.
    XLogData { start: Lsn, end_of_server_wal: Lsn, server_time: PgTime, data: Bytes },
    /// The server is alive and its WAL ends at `end`. Answer with
    /// [`send_status`](WalStream::send_status) at once if `reply_requested`, or the server
    /// drops the connection after `wal_sender_timeout`.
    Keepalive { end: Lsn, time: PgTime, reply_requested: bool },
    /// All WAL of the streamed timeline was sent: the server's history continues on `next_tli`
    /// from `next_tli_start`. The copy is over and the connection takes commands again.
    EndOfTimeline { next_tli: TimeLineId, next_tli_start: Lsn },
    /// The server ended streaming without a timeline switch: a primary shutting down does this
    /// once every WAL byte it sent is reported flushed. The connection closes next.
    EndOfStream,
}

/// Where a timeline ends and which one follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimelineSwitch {
    pub next_tli: TimeLineId,
    pub next_tli_start: Lsn,
}

/// Streaming WAL from the primary. Borrows the connection; once the copy has ended cleanly
/// ([`Event::EndOfTimeline`] or [`finish`](Self::finish)) the connection takes commands again.
/// Dropped mid-copy, it leaves the connection unusable (reconnect).
#[derive(Debug)]
pub struct WalStream<'c> {
    conn: &'c mut ReplicationConn,
    timeline: TimeLineId,
    /// Where streaming started.
    start: Lsn,
    /// End of the WAL received so far (starts at the requested start).
    received_upto: Lsn,
    /// Highest flush position reported.
    reported_flush: Lsn,
    server_copy_done: bool,
    client_copy_done: bool,
    /// Collects the result set after both sides ended the copy.
    after_copy: QueryCollector,
    finished: bool,
    /// An error ended the stream.
    failed: bool,
    pending: Option<Event>,
}

impl<'c> WalStream<'c> {
    /// Sends START_REPLICATION and waits for the server to enter CopyBoth (or to answer at once
    /// that the timeline ends exactly at `start`). The server's refusal comes back as
    /// [`WalClientError::Server`] with the connection still usable.
    pub(super) async fn start(
        conn: &'c mut ReplicationConn,
        slot: Option<&str>,
        start: Lsn,
        timeline: TimeLineId,
    ) -> Result<WalStream<'c>, WalClientError> {
        let sql = match slot {
            Some(slot) => format!("START_REPLICATION SLOT \"{slot}\" PHYSICAL {start} TIMELINE {timeline}"),
            None => format!("START_REPLICATION PHYSICAL {start} TIMELINE {timeline}"),
        };
        conn.begin_exchange()?;
        frontend::query(&sql, conn.out())
            .map_err(|e| WalClientError::Config(format!("START_REPLICATION: {e}")))?;
        conn.flush().await?;
        let mut stream = WalStream {
            conn,
            timeline,
            start,
            received_upto: start,
            reported_flush: Lsn::INVALID,
            server_copy_done: false,
            client_copy_done: false,
            after_copy: QueryCollector::new("START_REPLICATION"),
            finished: false,
            failed: false,
            pending: None,
        };
        match stream.conn.read_message().await? {
            BackendMessage::CopyBothResponse => {
                tracing::info!(address = stream.conn.address(), %start, timeline, ?slot, "streaming WAL");
                Ok(stream)
            }
            first => {
                // No copy: an error, or a historic timeline that ends exactly at `start`.
                stream.server_copy_done = true;
                stream.client_copy_done = true;
                let mut message = first;
                loop {
                    if let Some(event) = stream.handle(message)? {
                        stream.pending = Some(event);
                        return Ok(stream);
                    }
                    message = match stream.conn.read_message().await {
                        Ok(message) => message,
                        Err(e) => return Err(stream.after_copy.take_error().map_or(e, WalClientError::from)),
                    };
                }
            }
        }
    }

    /// The timeline being streamed.
    pub fn timeline(&self) -> TimeLineId {
        self.timeline
    }

    /// The end of the WAL received so far.
    pub fn received_upto(&self) -> Lsn {
        self.received_upto
    }

    /// The next thing the server sent. Cancel-safe: it may be dropped in a `select!` (e.g. on
    /// shutdown) without losing or tearing a message. After an error, or after
    /// [`Event::EndOfTimeline`] / [`Event::EndOfStream`], it answers
    /// [`WalClientError::StreamEnded`].
    pub async fn next(&mut self) -> Result<Event, WalClientError> {
        if let Some(event) = self.pending.take() {
            return Ok(event);
        }
        if self.finished {
            return Err(WalClientError::StreamEnded);
        }
        let result = self.next_inner().await;
        if result.is_err() {
            self.finished = true;
            self.failed = true;
        }
        result
    }

    async fn next_inner(&mut self) -> Result<Event, WalClientError> {
        loop {
            // Our CopyDone (or a status update) may still be queued from a cancelled call.
            self.conn.flush().await?;
            let message = self.conn.read_message().await?;
            if let Some(event) = self.handle(message)? {
                return Ok(event);
            }
        }
    }

    /// Sends a Standby Status Update. A physical slot's `restart_lsn` moves to `flush` (even
    /// backwards), so `flush` must lie between the stream's start and the WAL received, and
    /// never go back; `Lsn::INVALID` (before any flush is reported) leaves the slot where it
    /// is. The update is queued before the first await: if the call is cancelled it is still
    /// sent, by the next call on this stream.
    pub async fn send_status(&mut self, status: StandbyStatus) -> Result<(), WalClientError> {
        if self.finished || self.client_copy_done {
            return Err(WalClientError::StreamEnded);
        }
        for (field, lsn) in [("write", status.write), ("flush", status.flush)] {
            if lsn > self.received_upto {
                let why = format!("only WAL up to {} was received", self.received_upto);
                return Err(WalClientError::BadStatus { field, reported: lsn, why });
            }
        }
        // PostgreSQL moves a physical slot to whatever flush we report, backwards too.
        if status.flush.is_valid() && status.flush < self.start {
            let why = format!("streaming started at {}; WAL before it may be gone on the server", self.start);
            return Err(WalClientError::BadStatus { field: "flush", reported: status.flush, why });
        }
        if status.flush < self.reported_flush {
            let why = format!("flush {} was already reported", self.reported_flush);
            return Err(WalClientError::BadStatus { field: "flush", reported: status.flush, why });
        }
        let mut payload = BytesMut::with_capacity(xlog::STATUS_UPDATE_LEN);
        xlog::encode_status_update(status, PgTime::now(), &mut payload);
        frontend::CopyData::new(payload.freeze()).map_err(WalClientError::Io)?.write(self.conn.out());
        self.reported_flush = status.flush;
        tracing::trace!(write = %status.write, flush = %status.flush, apply = %status.apply, "status sent");
        self.conn.flush().await
    }

    /// Ends the copy from our side and waits for the server to finish, discarding WAL still in
    /// flight. Returns the timeline switch if the server announced one (streaming a historic
    /// timeline). Afterwards the connection takes commands again, unless the server was
    /// shutting down. After an error it answers [`WalClientError::StreamEnded`].
    pub async fn finish(mut self) -> Result<Option<TimelineSwitch>, WalClientError> {
        if self.failed {
            return Err(WalClientError::StreamEnded);
        }
        loop {
            if let Some(event) = self.pending.take() {
                return Ok(match event {
                    Event::EndOfTimeline { next_tli, next_tli_start } => {
                        Some(TimelineSwitch { next_tli, next_tli_start })
                    }
                    _ => None,
                });
            }
            if self.finished {
                return Ok(None);
            }
            if !self.client_copy_done {
                frontend::copy_done(self.conn.out());
                self.client_copy_done = true;
            }
            self.conn.flush().await?;
            let message = self.conn.read_message().await?;
            self.pending = self.handle(message)?;
        }
    }

    /// Applies one message to the state machine; `Some` when it is worth telling the caller.
    fn handle(&mut self, message: BackendMessage) -> Result<Option<Event>, WalClientError> {
        let result = self.handle_inner(message);
        if result.is_err() {
            self.finished = true;
            self.failed = true;
        }
        result
    }

    fn handle_inner(&mut self, message: BackendMessage) -> Result<Option<Event>, WalClientError> {
        if self.server_copy_done && self.client_copy_done {
            return match self.after_copy.feed(message)? {
                Fed::More => Ok(None),
                Fed::Done(result) => {
                    self.finished = true;
                    self.conn.end_exchange();
                    let set = result?;
                    Ok(Some(match parse_timeline_switch(&set)? {
                        Some(TimelineSwitch { next_tli, next_tli_start }) => {
                            tracing::info!(timeline = self.timeline, next_tli, %next_tli_start, "end of timeline");
                            Event::EndOfTimeline { next_tli, next_tli_start }
                        }
                        None => Event::EndOfStream,
                    }))
                }
            };
        }
        match message {
            BackendMessage::CopyData(payload) if !self.server_copy_done => {
                let parsed = xlog::parse_server_copy_data(payload)?;
                if self.client_copy_done {
                    return Ok(None); // In flight when we ended the copy.
                }
                Ok(Some(match parsed {
                    ServerCopyData::XLogData { start, end_of_server_wal, server_time, data } => {
                        // The parser checked that this cannot overflow.
                        let end = Lsn(start.0 + data.len() as u64);
                        self.received_upto = self.received_upto.max(end);
                        Event::XLogData { start, end_of_server_wal, server_time, data }
                    }
                    ServerCopyData::Keepalive { end, time, reply_requested } => {
                        Event::Keepalive { end, time, reply_requested }
                    }
                }))
            }
            BackendMessage::CopyDone if !self.server_copy_done => {
                self.server_copy_done = true;
                if !self.client_copy_done {
                    frontend::copy_done(self.conn.out());
                    self.client_copy_done = true;
                }
                Ok(None)
            }
            BackendMessage::CommandComplete(tag) => {
                // A primary shutting down ends the copy this way, then closes the connection.
                tracing::info!(timeline = self.timeline, %tag, "the server ended streaming");
                self.finished = true;
                Ok(Some(Event::EndOfStream))
            }
            BackendMessage::ErrorResponse(e) => Err(e.into()),
            other => Err(unexpected(&other, "while streaming WAL")),
        }
    }
}

/// Reads the result set that ends a historic timeline: `None` if the server sent none (a copy
/// of the current timeline ended by us).
pub fn parse_timeline_switch(set: &ResultSet) -> Result<Option<TimelineSwitch>, WalClientError> {
    if set.columns.is_empty() && set.rows.is_empty() {
        return Ok(None);
    }
    let row = set.single_row()?;
    let next_tli = row.parse::<u64>(NEXT_TLI)?.ok_or_else(|| set.bad("next_tli is NULL"))?;
    let next_tli = match TimeLineId::try_from(next_tli) {
        Ok(tli) if tli != 0 => tli,
        _ => return Err(set.bad(format!("next_tli {next_tli} is not a timeline id"))),
    };
    let next_tli_start: Lsn = row.required(NEXT_TLI_START)?.parse()?;
    Ok(Some(TimelineSwitch { next_tli, next_tli_start }))
}

#[cfg(test)]
mod tests {
    use super::super::codec::Column;
    use super::*;

    fn switch_set(tli: &'static [u8], start: &'static [u8]) -> ResultSet {
        ResultSet {
            command: "START_REPLICATION",
            columns: vec![
                Column { name: NEXT_TLI.into(), type_oid: 20 },
                Column { name: NEXT_TLI_START.into(), type_oid: 25 },
            ],
            rows: vec![vec![Some(Bytes::from_static(tli)), Some(Bytes::from_static(start))]],
            tag: "START_STREAMING".into(),
        }
    }

    #[test]
    fn timeline_switch_rows_parse_and_bad_ones_are_refused() {
        assert_eq!(
            parse_timeline_switch(&switch_set(b"2", b"0/3000148")).unwrap(),
            Some(TimelineSwitch { next_tli: 2, next_tli_start: Lsn(0x300_0148) })
        );
        assert_eq!(parse_timeline_switch(&ResultSet::default()).unwrap(), None);
        for (tli, start) in
            [(&b"0"[..], &b"0/1"[..]), (b"4294967296", b"0/1"), (b"-1", b"0/1"), (b"2", b"zz")]
        {
            assert!(parse_timeline_switch(&switch_set(tli, start)).is_err(), "{tli:?} {start:?}");
        }
    }
}
