//! One connection to the primary: check its identity, ensure the slot, compare the primary's
//! timeline history with the archive's and fetch the ancestors it lacks, pick where to start,
//! then stream until the connection ends, following timeline switches on the same connection.
//!
//! Where to start: the start of the WAL page holding the archive's flushed end, on its timeline
//! (the bytes already durable are sent again and the archive compares them); with an empty
//! archive, the start of the segment holding the slot's `restart_lsn`. If the primary is on a newer timeline, its history says where the
//! archive's timeline ended; streaming the old timeline up to there, the primary then switches
//! us over (end-of-timeline handshake).

use std::time::SystemTime;

use tokio_util::sync::CancellationToken;

use super::disk::DiskCmd;
use super::state::Phase;
use super::{Receiver, ReceiverError, SessionEnd};
use crate::wal::client::{Event, ReplicationConn, SlotInfo, StandbyStatus, SystemIdentity, WalStream};
use crate::wal::lsn::{Lsn, TimeLineId, WalSegmentSize};
use crate::wal::timeline_history::{self, successor};
use crate::wal::upstream::UpstreamIdentity;

/// PostgreSQL's WAL page size (XLOG_BLCKSZ).
const WAL_PAGE: u64 = 8192;

/// How one START_REPLICATION ended.
enum StreamEnd {
    Switch { next_tli: TimeLineId, next_start: Lsn },
    Done(SessionEnd),
}

impl Receiver {
    /// Connects and streams until the connection ends. Cancel-safe only before streaming
    /// starts; while streaming, `shutdown` is handled inside (the final flush is reported).
    pub(super) async fn session(&self, shutdown: &CancellationToken) -> Result<SessionEnd, ReceiverError> {
        let setup = async {
            let mut conn = ReplicationConn::connect(&self.conn).await?;
            let (ident, upstream) = conn.upstream_identity().await?;
            let seg = upstream.segment_size().map_err(ReceiverError::Refused)?;
            self.check_upstream(upstream).await?;
            let slot = conn.create_physical_slot(&self.slot, true).await?;
            // Appends a capped session left queued are dropped before this session's go in.
            self.disk.resume().await.map_err(ReceiverError::Disk)?;
            self.sync_histories(&mut conn, ident.timeline).await?;
            let (tli, start) = self.start_point(&ident, &slot.slot, seg)?;
            Ok::<_, ReceiverError>((conn, tli, start))
        };
        let (mut conn, mut tli, mut start) = tokio::select! {
            _ = shutdown.cancelled() => return Ok(SessionEnd::Shutdown),
            r = setup => r?,
        };
        loop {
            let stream = tokio::select! {
                _ = shutdown.cancelled() => return Ok(SessionEnd::Shutdown),
                s = conn.start_replication(Some(&self.slot), start, tli) => s?,
            };
            match self.stream(stream, start, shutdown).await? {
                StreamEnd::Switch { next_tli, next_start } => {
                    tracing::info!(from = tli, to = next_tli, at = %next_start, "following the primary's timeline switch");
                    tokio::select! {
                        _ = shutdown.cancelled() => return Ok(SessionEnd::Shutdown),
                        r = self.sync_histories(&mut conn, next_tli) => r?,
                    }
                    (tli, start) = (next_tli, next_start);
                }
                StreamEnd::Done(end) => {
                    if end == SessionEnd::Shutdown {
                        let _ = conn.close().await;
                    }
                    return Ok(end);
                }
            }
        }
    }

    /// Records the primary's identity; refuses another cluster's or another segment size.
    async fn check_upstream(&self, id: UpstreamIdentity) -> Result<(), ReceiverError> {
        let dir = self.state_dir.clone();
        let archive_seg = self.reader.segment_size().bytes();
        if id.segment_size != archive_seg {
            return Err(ReceiverError::Refused(format!(
                "the primary's WAL segments are {} bytes, the archive's {archive_seg}",
                id.segment_size
            )));
        }
        tokio::task::spawn_blocking(move || id.store(&dir))
            .await
            .map_err(|e| ReceiverError::Disk(format!("identity check: {e}")))??;
        Ok(())
    }

    /// The primary's history for timeline `current`: fetched every time and compared with the
    /// archive's copy (a different history means another branch of the cluster: refused), then
    /// the ancestors it lists that the archive lacks (a missing one is only warned about).
    async fn sync_histories(
        &self,
        conn: &mut ReplicationConn,
        current: TimeLineId,
    ) -> Result<(), ReceiverError> {
        if current < 2 {
            return Ok(());
        }
        let history = conn.timeline_history(current).await?;
        let entries = timeline_history::parse(&history.content)?;
        match self.reader.read_history(current).map_err(|e| ReceiverError::Disk(e.to_string()))? {
            Some(have) if have != history.content => {
                return Err(ReceiverError::Refused(format!(
                    "the primary's history of timeline {current} differs from the archive's: it is another \
                     branch of the cluster (promoted separately); remove the archive and rebuild the standby"
                )));
            }
            Some(_) => {}
            None => self.disk.history(current, history.content).await.map_err(ReceiverError::Disk)?,
        }
        for tli in entries.iter().map(|e| e.timeline).filter(|&t| t >= 2) {
            if self.reader.read_history(tli).map_err(|e| ReceiverError::Disk(e.to_string()))?.is_some() {
                continue;
            }
            match conn.timeline_history(tli).await {
                Ok(h) if timeline_history::parse(&h.content).is_ok() => {
                    self.disk.history(tli, h.content).await.map_err(ReceiverError::Disk)?
                }
                Ok(_) => tracing::warn!(
                    timeline = tli,
                    "the primary's history file for it does not parse; not archived"
                ),
                Err(e) if e.sqlstate().is_some() => {
                    tracing::warn!(timeline = tli, error = %e, "the primary has no history file for an ancestor timeline")
                }
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    /// Where to start streaming (see the module doc).
    fn start_point(
        &self,
        ident: &SystemIdentity,
        slot: &SlotInfo,
        seg: WalSegmentSize,
    ) -> Result<(TimeLineId, Lsn), ReceiverError> {
        let flushed = self.reader.flush_point();
        let (mut tli, mut start) = if flushed.lsn.is_valid() {
            // From the start of the WAL page holding the flushed end, within the timeline's
            // extent: the archive compares the overlap, so a primary whose WAL differs (a
            // rolled-back primary on the same timeline) is caught instead of appended to.
            let extent_start = self
                .reader
                .timelines()
                .last()
                .filter(|t| t.timeline == flushed.timeline)
                .map_or(flushed.lsn, |t| t.start);
            let page_start = Lsn(flushed.lsn.0 - flushed.lsn.0 % WAL_PAGE);
            (flushed.timeline, page_start.max(extent_start))
        } else {
            let at = slot.restart_lsn.unwrap_or(ident.xlogpos);
            (slot.restart_tli.unwrap_or(ident.timeline), seg.start(seg.segno(at)))
        };
        if tli > ident.timeline {
            return Err(ReceiverError::Timeline(format!(
                "the archive is on timeline {tli}, the primary on older timeline {}: is this the right primary?",
                ident.timeline
            )));
        }
        if tli == ident.timeline {
            return Ok((tli, start));
        }
        let content = self
            .reader
            .read_history(ident.timeline)
            .map_err(|e| ReceiverError::Disk(e.to_string()))?
            .ok_or_else(|| {
                ReceiverError::Timeline(format!("no history file for timeline {}", ident.timeline))
            })?;
        let entries = timeline_history::parse(&content)?;
        while tli < ident.timeline {
            let (next, switch) = successor(&entries, tli, ident.timeline).ok_or_else(|| {
                ReceiverError::Timeline(format!(
                    "the primary's history (timeline {}) does not pass through timeline {tli}, which the \
                     archive holds: this is not the archive's primary",
                    ident.timeline
                ))
            })?;
            if start < switch {
                break;
            }
            if start > switch {
                tracing::warn!(
                    timeline = tli, %switch, archive_end = %start,
                    "the archive holds WAL past where the primary's history left this timeline; a standby \
                     that replayed it needs pg_rewind"
                );
            }
            (tli, start) = (next, switch);
        }
        Ok((tli, start))
    }

    /// The stream loop: WAL to the disk thread, durable positions back to the primary.
    async fn stream(
        &self,
        mut stream: WalStream<'_>,
        start: Lsn,
        shutdown: &CancellationToken,
    ) -> Result<StreamEnd, ReceiverError> {
        let tli = stream.timeline();
        self.state.send_modify(|s| {
            s.phase = Phase::Streaming;
            s.timeline = tli;
            s.connected_since = Some(SystemTime::now());
            s.connections += 1;
            s.resolve_error();
        });
        let mut flushed = self.reader.subscribe();
        let mut tick = tokio::time::interval(self.status_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut reported = Lsn::INVALID;
        let mut heard = tokio::time::Instant::now();
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => {
                    // What is durable is told before leaving; WAL still in flight is dropped.
                    let _ = self.report(&mut stream, start, &mut reported, true).await;
                    let _ = tokio::time::timeout(super::FINISH_TIMEOUT, stream.finish()).await;
                    return Ok(StreamEnd::Done(SessionEnd::Shutdown));
                }
                _ = tokio::time::sleep_until(heard + super::RECEIVE_TIMEOUT) => {
                    return Err(ReceiverError::Silent(super::RECEIVE_TIMEOUT.as_secs()));
                }
                event = stream.next() => {
                    heard = tokio::time::Instant::now();
                    match event? {
                    Event::XLogData { start: at, end_of_server_wal, server_time, data } => {
                        let end = Lsn(at.0 + data.len() as u64);
                        self.disk.send(DiskCmd::Append { timeline: tli, start: at, data }).await.map_err(ReceiverError::Disk)?;
                        let now = SystemTime::now();
                        self.arrivals.lock().unwrap_or_else(|p| p.into_inner()).record(end, now);
                        self.state.send_modify(|s| {
                            s.received = end;
                            s.primary_end = s.primary_end.max(end_of_server_wal).max(end);
                            s.last_message_at = Some(now);
                            s.last_wal_at = Some(now);
                            s.last_wal_sent_at = server_time.to_system_time();
                        });
                        if self.disk.capped() {
                            return Ok(StreamEnd::Done(SessionEnd::NoRoom));
                        }
                    }
                    Event::Keepalive { end, reply_requested, .. } => {
                        self.state.send_modify(|s| {
                            s.primary_end = s.primary_end.max(end);
                            s.last_message_at = Some(SystemTime::now());
                        });
                        if reply_requested {
                            self.report(&mut stream, start, &mut reported, true).await?;
                        }
                    }
                    Event::EndOfTimeline { next_tli, next_tli_start } => {
                        if next_tli <= tli || next_tli_start > stream.received_upto() {
                            return Err(ReceiverError::Refused(format!(
                                "the primary ended timeline {tli} naming timeline {next_tli} from {next_tli_start}, \
                                 after WAL up to {}: not a valid switch", stream.received_upto()
                            )));
                        }
                        return Ok(StreamEnd::Switch { next_tli, next_start: next_tli_start });
                    }
                    Event::EndOfStream => return Ok(StreamEnd::Done(SessionEnd::PrimaryEnded)),
                    }
                }
                changed = flushed.changed() => {
                    if changed.is_err() {
                        return Err(ReceiverError::Disk(self.disk.failure()));
                    }
                    self.report(&mut stream, start, &mut reported, false).await?;
                }
                _ = tick.tick() => self.report(&mut stream, start, &mut reported, true).await?,
            }
        }
    }

    /// Sends a status update with the archive's durable position (unless nothing moved and
    /// `always` is false).
    async fn report(
        &self,
        stream: &mut WalStream<'_>,
        start: Lsn,
        reported: &mut Lsn,
        always: bool,
    ) -> Result<(), ReceiverError> {
        let point = self.reader.flush_point();
        let received = stream.received_upto();
        let mut flush = *reported;
        if point.timeline == stream.timeline() && point.lsn >= start {
            flush = flush.max(point.lsn.min(received));
        }
        if flush == *reported && !always {
            return Ok(());
        }
        let apply = if flush.is_valid() { (*self.applied.borrow()).min(flush) } else { Lsn::INVALID };
        stream.send_status(StandbyStatus { write: received, flush, apply, reply_requested: false }).await?;
        *reported = flush;
        Ok(())
    }
}
