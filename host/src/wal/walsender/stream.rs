//! START_REPLICATION: the CopyBoth stream of WAL from the archive to a standby.
//!
//! ```text
//! standby                               walsender
//! START_REPLICATION X/X TIMELINE n ->
//!                                   <-  CopyBothResponse
//!                                   <-  CopyData('w' WAL, as soon as it is durable) / ('k')
//! CopyData('r' status, 'h')        ->
//!     on a historic timeline, once all of it up to the switch point is sent:
//!                                   <-  CopyDone
//! CopyDone                         ->
//!                                   <-  RowDescription, DataRow(next_tli, next_tli_startpos)
//!                                   <-  CommandComplete START_STREAMING (the session adds
//!                                       CommandComplete START_REPLICATION, ReadyForQuery)
//! ```
//! Either side may end the copy first. On shutdown the rest of the durable WAL is sent, then
//! CommandComplete inside the copy (no CopyDone), as a PostgreSQL primary's fast shutdown does.
//!
//! Must never: send a byte past the archive's flushed LSN or past a historic timeline's switch
//! point, or send CopyData after CopyDone.

use std::time::{Instant, SystemTime};

use bytes::BytesMut;
use tokio_util::sync::CancellationToken;

use super::answer::{self, sqlstate};
use super::backend::{self, SqlError, oid};
use super::codec::FrontendMessage;
use super::config::{MAX_SEND_SIZE, WalSenderConfig};
use super::conn::Conn;
use super::error::{Failure, WalSenderError};
use super::startup::Client;
use super::timeline::{TimelineEnd, timeline_end};
use super::xlog::{self, StandbyMessage};
use super::{SenderContext, StandbyFeedback};
use crate::wal::archive::{ArchiveError, ArchiveReader};
use crate::wal::client::PgTime;
use crate::wal::lsn::{Lsn, TimeLineId, WalSegmentSize};

/// How a START_REPLICATION ended without an error.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Both sides ended the copy; its result was written. The session goes on.
    Done,
    /// Shutdown: the copy was ended with CommandComplete; close the connection.
    Shutdown,
    /// The standby sent Terminate.
    Terminated,
}

/// What the standby asked for, and where the session stands.
pub struct Request<'a> {
    /// The context the session serves.
    pub ctx: &'a SenderContext,
    /// Timers and limits.
    pub config: &'a WalSenderConfig,
    /// Who asked.
    pub client: &'a Client,
    /// The upstream's segment size, for file names in errors.
    pub seg: WalSegmentSize,
    /// Start position.
    pub start: Lsn,
    /// Timeline, `None` for the current one.
    pub timeline: Option<TimeLineId>,
}

/// Runs START_REPLICATION to its end. Not cancel-safe: `shutdown` is how it stops.
pub async fn start_replication(
    conn: &mut Conn,
    req: Request<'_>,
    shutdown: &CancellationToken,
) -> Result<Outcome, Failure> {
    let (current, flushed) = answer::current_position(req.ctx).map_err(Failure::Command)?;
    let timeline = req.timeline.unwrap_or(current);
    let end = if timeline == current {
        None
    } else {
        Some(historic_end(&req.ctx.reader, current, timeline).await?)
    };
    if let Some(end) = end {
        if req.start > end.switch_point {
            let e = SqlError::error(
                sqlstate::INTERNAL_ERROR,
                format!(
                    "requested starting point {} on timeline {timeline} is not in this server's history",
                    req.start
                ),
            )
            .with_detail(format!(
                "This server's history forked from timeline {timeline} at {}.",
                end.switch_point
            ));
            return Err(Failure::Command(e));
        }
        if req.start == end.switch_point {
            // Nothing to stream: no copy at all, only where the history goes on.
            timeline_switch_result(&mut conn.out, end);
            return Ok(Outcome::Done);
        }
    }
    backend::copy_both_response(&mut conn.out);
    conn.flush().await?;
    // After CopyBothResponse, as PostgreSQL checks it.
    if end.is_none() && req.start > flushed {
        return Err(Failure::Command(SqlError::error(
            sqlstate::INTERNAL_ERROR,
            format!(
                "requested starting point {} is ahead of the WAL flush position of this server {flushed}",
                req.start
            ),
        )));
    }
    tracing::info!(peer = %conn.peer, start = %req.start, timeline, historic = end.is_some(), "walsender: streaming WAL");
    let now = Instant::now();
    let start = req.start;
    let mut s = Streamer {
        reader: req.ctx.reader.clone(),
        req,
        timeline,
        sent: start,
        end,
        done_sending: false,
        done_receiving: false,
        last_reply: now,
        last_send: now,
        ping_pending: false,
        writer_gone: false,
        feedback: None,
    };
    let result = s.run(conn, shutdown).await;
    if let Some(last) = s.feedback.take() {
        s.req.ctx.feedback.send_replace(Some(StandbyFeedback { streaming: false, ..last }));
    }
    result
}

/// The end of `timeline`, an ancestor of `current`, from `current`'s history file.
async fn historic_end(
    reader: &ArchiveReader,
    current: TimeLineId,
    timeline: TimeLineId,
) -> Result<TimelineEnd, Failure> {
    let not_ours = || {
        Failure::Command(SqlError::error(
            sqlstate::INTERNAL_ERROR,
            format!("requested timeline {timeline} is not in this server's history"),
        ))
    };
    let r = reader.clone();
    let history = tokio::task::spawn_blocking(move || r.read_history(current)).await??;
    let Some(history) = history else { return Err(not_ours()) };
    match timeline_end(&history, current, timeline) {
        Ok(Some(end)) => Ok(end),
        Ok(None) => Err(not_ours()),
        Err(why) => Err(Failure::Command(SqlError::error(
            sqlstate::INTERNAL_ERROR,
            format!("timeline {current}: {why}"),
        ))),
    }
}

/// The one-row result after a historic timeline's copy, and START_STREAMING.
fn timeline_switch_result(out: &mut BytesMut, end: TimelineEnd) {
    backend::row_description(out, &[("next_tli", oid::INT8), ("next_tli_startpos", oid::TEXT)]);
    let (tli, pos) = (end.next_tli.to_string(), end.switch_point.to_string());
    backend::data_row(out, &[Some(tli.as_bytes()), Some(pos.as_bytes())]);
    backend::command_complete(out, "START_STREAMING");
}

struct Streamer<'a> {
    req: Request<'a>,
    /// For `wait_past` (which needs its own watch).
    reader: ArchiveReader,
    timeline: TimeLineId,
    /// Everything before this was sent.
    sent: Lsn,
    /// Set once the timeline is historic.
    end: Option<TimelineEnd>,
    done_sending: bool,
    done_receiving: bool,
    last_reply: Instant,
    last_send: Instant,
    /// A keepalive asking for a reply is out.
    ping_pending: bool,
    /// The archive writer is gone: no WAL will come.
    writer_gone: bool,
    feedback: Option<StandbyFeedback>,
}

impl Streamer<'_> {
    async fn run(&mut self, conn: &mut Conn, shutdown: &CancellationToken) -> Result<Outcome, Failure> {
        loop {
            while let Some(m) = conn.try_message()? {
                if let Some(outcome) = self.on_message(conn, m).await? {
                    return Ok(outcome);
                }
            }
            if self.done_sending && self.done_receiving {
                break;
            }
            if shutdown.is_cancelled() {
                return self.shut_down(conn).await;
            }
            self.timers(conn).await?;
            if !self.done_sending {
                if self.send_some(conn).await? {
                    continue;
                }
                if self.end.is_some_and(|e| self.sent >= e.switch_point) {
                    backend::copy_done(&mut conn.out);
                    self.done_sending = true;
                    self.flush(conn).await?;
                    continue;
                }
            }
            let can_wait = !self.done_sending && self.end.is_none() && !self.writer_gone;
            let deadline = tokio::time::Instant::from_std(self.next_deadline());
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => return self.shut_down(conn).await,
                m = conn.read_message() => {
                    if let Some(outcome) = self.on_message(conn, m?).await? {
                        return Ok(outcome);
                    }
                }
                p = self.reader.wait_past(self.timeline, self.sent), if can_wait => {
                    self.writer_gone = p.is_none();
                }
                _ = tokio::time::sleep_until(deadline) => {}
            }
        }
        if let Some(end) = self.end {
            timeline_switch_result(&mut conn.out, end);
            tracing::info!(peer = %conn.peer, timeline = self.timeline, next = end.next_tli, at = %end.switch_point, "walsender: end of timeline");
        } else {
            backend::command_complete(&mut conn.out, "START_STREAMING");
        }
        Ok(Outcome::Done)
    }

    /// Where WAL may be sent up to now: the switch point of a historic timeline, else the
    /// flushed LSN. Notices the archive moving to a newer timeline.
    async fn limit(&mut self) -> Result<Lsn, Failure> {
        if let Some(end) = self.end {
            return Ok(end.switch_point);
        }
        let point = self.req.ctx.reader.flush_point();
        if point.timeline == self.timeline {
            return Ok(point.lsn);
        }
        // The primary moved to a newer timeline: ours ends at its switch point.
        let end = historic_end(&self.req.ctx.reader, point.timeline, self.timeline).await?;
        tracing::info!(timeline = self.timeline, next = end.next_tli, at = %end.switch_point, "walsender: the streamed timeline became historic");
        self.end = Some(end);
        Ok(end.switch_point)
    }

    /// Sends the next piece of WAL if there is one; `false` if there is nothing to send.
    async fn send_some(&mut self, conn: &mut Conn) -> Result<bool, Failure> {
        let limit = self.limit().await?;
        if self.sent >= limit {
            return Ok(false);
        }
        let max = (limit.bytes_since(self.sent) as usize).min(MAX_SEND_SIZE);
        let (reader, tli, at) = (self.req.ctx.reader.clone(), self.timeline, self.sent);
        let read = tokio::task::spawn_blocking(move || reader.read(tli, at, max)).await?;
        let wal = match read {
            Ok(wal) => wal,
            Err(ArchiveError::Removed { .. } | ArchiveError::UnknownTimeline(_)) => {
                return Err(Failure::Command(answer::removed(self.req.seg, tli, at)));
            }
            Err(e) => return Err(e.into()),
        };
        if wal.is_empty() {
            if self.end.is_some() {
                let why = format!(
                    "the archive's WAL of timeline {tli} ends at {at}, before its switch point {limit}"
                );
                return Err(Failure::Command(SqlError::error(sqlstate::INTERNAL_ERROR, why)));
            }
            return Ok(false);
        }
        backend::copy_data(&mut conn.out, |b| xlog::put_xlog_data(b, at, limit, PgTime::now(), &wal));
        self.sent = Lsn(at.0 + wal.len() as u64);
        self.flush(conn).await?;
        Ok(true)
    }

    async fn on_message(&mut self, conn: &mut Conn, m: FrontendMessage) -> Result<Option<Outcome>, Failure> {
        self.last_reply = Instant::now();
        match m {
            FrontendMessage::CopyData(payload) => match xlog::parse_standby_message(&payload) {
                Ok(StandbyMessage::Status { write, flush, apply, sent_at, reply_requested }) => {
                    self.ping_pending = false;
                    let feedback = StandbyFeedback {
                        write,
                        flush,
                        apply,
                        reply_time: sent_at,
                        received_at: SystemTime::now(),
                        application_name: self.req.client.application_name.clone(),
                        streaming: true,
                    };
                    tracing::trace!(%write, %flush, %apply, "walsender: standby status");
                    self.req.ctx.feedback.send_replace(Some(feedback.clone()));
                    self.feedback = Some(feedback);
                    if reply_requested && !self.done_sending {
                        self.keepalive(conn, false).await?;
                    }
                }
                Ok(StandbyMessage::HotStandbyFeedback) => {}
                Err(why) => return Err(Failure::Connection(conn.fatal(SqlError::fatal("08P01", why)).await)),
            },
            FrontendMessage::CopyDone => {
                self.done_receiving = true;
                if !self.done_sending {
                    backend::copy_done(&mut conn.out);
                    self.done_sending = true;
                    self.flush(conn).await?;
                }
            }
            FrontendMessage::Terminate => return Ok(Some(Outcome::Terminated)),
            FrontendMessage::CopyFail(reason) => {
                return Err(Failure::Command(SqlError::error(
                    "57014",
                    format!("COPY from stdin failed: {reason}"),
                )));
            }
            other => {
                let e = SqlError::fatal("08P01", format!("unexpected message {other:?} during COPY"));
                return Err(Failure::Connection(conn.fatal(e).await));
            }
        }
        Ok(None)
    }

    /// Keepalives when idle, a reply request at half the timeout, the drop at the timeout.
    async fn timers(&mut self, conn: &mut Conn) -> Result<(), Failure> {
        let silent = self.last_reply.elapsed();
        let timeout = self.req.config.standby_timeout;
        if silent >= timeout {
            tracing::warn!(peer = %conn.peer, "walsender: terminating due to replication timeout");
            return Err(WalSenderError::Timeout(timeout).into());
        }
        if self.done_sending {
            return Ok(());
        }
        if !self.ping_pending && silent >= timeout / 2 {
            self.ping_pending = true;
            self.keepalive(conn, true).await?;
        } else if self.last_send.elapsed() >= self.req.config.keepalive_interval {
            self.keepalive(conn, false).await?;
        }
        Ok(())
    }

    fn next_deadline(&self) -> Instant {
        let timeout = self.req.config.standby_timeout;
        let mut at = self.last_reply + timeout;
        if !self.done_sending {
            if !self.ping_pending {
                at = at.min(self.last_reply + timeout / 2);
            }
            at = at.min(self.last_send + self.req.config.keepalive_interval);
        }
        at
    }

    async fn keepalive(&mut self, conn: &mut Conn, reply_requested: bool) -> Result<(), Failure> {
        let end = self.limit().await?;
        backend::copy_data(&mut conn.out, |b| xlog::put_keepalive(b, end, PgTime::now(), reply_requested));
        self.flush(conn).await
    }

    /// Writes what is queued, giving up after the standby timeout.
    async fn flush(&mut self, conn: &mut Conn) -> Result<(), Failure> {
        let timeout = self.req.config.standby_timeout;
        match tokio::time::timeout(timeout, conn.flush()).await {
            Ok(result) => result?,
            Err(_) => return Err(WalSenderError::Timeout(timeout).into()),
        }
        self.last_send = Instant::now();
        Ok(())
    }

    /// Sends the rest of the durable WAL, then ends the copy as a shutting-down primary does.
    async fn shut_down(&mut self, conn: &mut Conn) -> Result<Outcome, Failure> {
        if !self.done_sending {
            while self.send_some(conn).await? {}
            backend::command_complete(&mut conn.out, "COPY 0");
            self.flush(conn).await?;
        }
        tracing::info!(peer = %conn.peer, sent = %self.sent, "walsender: shutting down the stream");
        Ok(Outcome::Shutdown)
    }
}
