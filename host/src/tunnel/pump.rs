//! One PostgreSQL connection's bytes over one peer connection, both ways: a [`Tunnel`] is the
//! peer connection split in an [`Inbound`] half (frames in, decompressed, keepalives skipped,
//! an idle limit) and an [`Outbound`] half (chunks out, compressed when the policy says so)
//! whose frames a writer task sends, with a keepalive when there is nothing else to send.
//!
//! Backpressure end to end: the outbound queue holds [`QUEUE`] frames, a reader reads the
//! next chunk only once the last one is queued, and a full queue is how the compression policy
//! learns that the link is what limits the stream.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::codec::{DATA, EOF, KEEPALIVE, ZDATA};
use super::compress::{Decoder, Encoder, Policy};
use super::config::TunnelConfig;
use super::error::TunnelError;
use super::stats::{LinkStats, StreamKind};
use crate::peer::{Frame, PeerConnection, PeerError, PeerReader, PeerWriter};

/// Largest chunk read from a local socket and sent as one frame (a walsender's `XLogData`
/// carries at most 128 KiB of WAL); also the most one compressed frame may decode to.
pub const CHUNK: usize = 128 << 10;
/// Frames queued for the writer.
pub const QUEUE: usize = 2;
/// How long the writer may take to send what is queued once both directions ended.
const DRAIN: Duration = Duration::from_secs(5);

/// The receiving half.
pub struct Inbound {
    reader: PeerReader,
    decoder: Option<Decoder>,
    out: Vec<u8>,
    idle: Duration,
    stats: Arc<LinkStats>,
    pub kind: StreamKind,
}

impl Inbound {
    /// The next bytes of the stream; `None` once the peer sent EOF. Not cancel-safe (a frame
    /// read halfway is lost): a tunnel whose read is cancelled is dropped.
    pub async fn next(&mut self) -> Result<Option<&[u8]>, TunnelError> {
        loop {
            let frame = tokio::time::timeout(self.idle, self.reader.read_frame())
                .await
                .map_err(|_| TunnelError::Idle(self.idle.as_millis() as u64))??
                .ok_or(TunnelError::Peer(PeerError::Truncated("the tunnel closed before its EOF")))?;
            let counters = self.stats.kind(self.kind);
            counters.received_link.fetch_add(frame.body.len() as u64, Ordering::Relaxed);
            match frame.kind {
                KEEPALIVE => continue,
                EOF => return Ok(None),
                DATA if frame.body.len() > CHUNK => {
                    return Err(TunnelError::Malformed("a chunk over 128 KiB"));
                }
                DATA => self.out = frame.body,
                ZDATA => {
                    let decoder = match &mut self.decoder {
                        Some(d) => d,
                        None => self.decoder.insert(Decoder::new()?),
                    };
                    decoder.decode(&frame.body, &mut self.out, CHUNK).map_err(TunnelError::Decompress)?;
                }
                _ => return Err(TunnelError::Malformed("an unknown frame kind inside a tunnel")),
            }
            counters.received_raw.fetch_add(self.out.len() as u64, Ordering::Relaxed);
            return Ok(Some(&self.out));
        }
    }
}

/// The sending half.
pub struct Outbound {
    tx: mpsc::Sender<Frame>,
    encoder: Option<Encoder>,
    level: i32,
    policy: Policy,
    stats: Arc<LinkStats>,
    pub kind: StreamKind,
}

impl Outbound {
    /// Queues `chunk` (at most [`CHUNK`] bytes), compressed when the policy says so.
    pub async fn send(&mut self, chunk: &[u8]) -> Result<(), TunnelError> {
        debug_assert!(chunk.len() <= CHUNK);
        let counters = self.stats.kind(self.kind);
        counters.sent_raw.fetch_add(chunk.len() as u64, Ordering::Relaxed);
        if !self.policy.compress(Instant::now()) {
            counters.chunks_raw.fetch_add(1, Ordering::Relaxed);
            counters.sent_link.fetch_add(chunk.len() as u64, Ordering::Relaxed);
            let waited = self.queue(Frame::new(DATA, chunk)).await?;
            self.policy.sent_raw(chunk.len(), waited, Instant::now());
            return Ok(());
        }
        let started = Instant::now();
        let encoder = match &mut self.encoder {
            Some(e) => e,
            None => self.encoder.insert(Encoder::new(self.level)?),
        };
        let mut packed = Vec::new();
        encoder.encode(chunk, &mut packed)?;
        let cpu = started.elapsed();
        let len = packed.len();
        counters.chunks_compressed.fetch_add(1, Ordering::Relaxed);
        counters.sent_link.fetch_add(len as u64, Ordering::Relaxed);
        let waited = self.queue(Frame::new(ZDATA, packed)).await?;
        self.policy.compressed(chunk.len(), len, cpu, waited, Instant::now());
        Ok(())
    }

    /// Says this direction ended.
    pub async fn eof(&mut self) -> Result<(), TunnelError> {
        self.queue(Frame::new(EOF, Vec::new())).await.map(drop)
    }

    /// Queues a frame as it is (the OPEN frame); how long the queue made us wait.
    pub async fn queue(&mut self, frame: Frame) -> Result<Duration, TunnelError> {
        let started = Instant::now();
        self.tx
            .send(frame)
            .await
            .map_err(|_| TunnelError::Peer(PeerError::Truncated("the tunnel's writer stopped")))?;
        Ok(started.elapsed())
    }
}

/// A peer connection turned into a tunnel.
pub struct Tunnel {
    pub inbound: Inbound,
    pub outbound: Outbound,
    writer: WriterTask,
}

impl Tunnel {
    /// Starts the writer task; must be called inside a runtime.
    pub fn new(conn: PeerConnection, config: &TunnelConfig, stats: Arc<LinkStats>) -> Self {
        let PeerConnection { reader, writer, .. } = conn;
        let (tx, rx) = mpsc::channel(QUEUE);
        let writer = WriterTask(Some(tokio::spawn(write_loop(writer, rx, config.keepalive()))));
        let now = Instant::now();
        Tunnel {
            inbound: Inbound {
                reader,
                decoder: None,
                out: Vec::new(),
                idle: config.idle_timeout(),
                stats: stats.clone(),
                kind: StreamKind::Other,
            },
            outbound: Outbound {
                tx,
                encoder: None,
                level: config.level,
                policy: Policy::new(config.compression, config.cpu_budget_percent, now),
                stats,
                kind: StreamKind::Other,
            },
            writer,
        }
    }

    /// Counts what follows as `kind`.
    pub fn set_kind(&mut self, kind: StreamKind) {
        self.inbound.kind = kind;
        self.outbound.kind = kind;
    }

    /// Moves bytes between `local` and the peer until both directions ended (or one failed, or
    /// `shutdown`): `to_peer_first` and `to_local_first` are bytes read ahead (the startup
    /// packet) that go before anything else.
    pub async fn run<S>(
        self,
        local: S,
        to_peer_first: &[u8],
        to_local_first: &[u8],
        shutdown: &CancellationToken,
    ) -> Result<(), TunnelError>
    where
        S: AsyncRead + AsyncWrite + Send,
    {
        let Tunnel { mut inbound, mut outbound, writer } = self;
        let (mut lr, mut lw) = tokio::io::split(local);
        let up = async {
            if !to_peer_first.is_empty() {
                outbound.send(to_peer_first).await?;
            }
            let mut buf = vec![0u8; CHUNK];
            loop {
                let n = lr.read(&mut buf).await?;
                if n == 0 {
                    return outbound.eof().await;
                }
                outbound.send(&buf[..n]).await?;
            }
        };
        let down = async {
            if !to_local_first.is_empty() {
                lw.write_all(to_local_first).await?;
            }
            while let Some(bytes) = inbound.next().await? {
                lw.write_all(bytes).await?;
            }
            lw.shutdown().await?;
            Ok::<_, TunnelError>(())
        };
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            both = async { tokio::try_join!(up, down) } => { both?; }
        }
        // Both directions ended: let the writer send the last frames (the EOF), then stop.
        drop(outbound);
        writer.finish().await
    }

    /// Refuses the client: `message` as a PostgreSQL error, then EOF, sent before returning.
    pub async fn refuse(self, message: &str) -> Result<(), TunnelError> {
        let Tunnel { mut outbound, writer, .. } = self;
        outbound.send(&super::startup::error_response(message)).await?;
        outbound.eof().await?;
        drop(outbound);
        writer.finish().await
    }
}

/// The writer task, aborted when the tunnel ends early (a failure, a shutdown).
struct WriterTask(Option<JoinHandle<Result<(), PeerError>>>);

impl WriterTask {
    /// Waits (at most [`DRAIN`]) for the writer to send what is queued; the queue's sender
    /// must be gone.
    async fn finish(mut self) -> Result<(), TunnelError> {
        let Some(handle) = self.0.as_mut() else { return Ok(()) };
        let result = match tokio::time::timeout(DRAIN, handle).await {
            Ok(Ok(result)) => result.map_err(TunnelError::from),
            Ok(Err(_)) => Err(TunnelError::Malformed("the tunnel's writer panicked")),
            // Still running: dropped here, and aborted.
            Err(_) => return Err(TunnelError::Idle(DRAIN.as_millis() as u64)),
        };
        self.0 = None;
        result
    }
}

impl Drop for WriterTask {
    fn drop(&mut self) {
        if let Some(handle) = self.0.take() {
            handle.abort();
        }
    }
}

/// Sends queued frames, a keepalive after `keepalive` without one; ends when the queue closes.
async fn write_loop(
    mut writer: PeerWriter,
    mut rx: mpsc::Receiver<Frame>,
    keepalive: Duration,
) -> Result<(), PeerError> {
    loop {
        let frame = match tokio::time::timeout(keepalive, rx.recv()).await {
            Ok(Some(frame)) => frame,
            Ok(None) => return Ok(()),
            Err(_) => Frame::new(KEEPALIVE, Vec::new()),
        };
        writer.write_frame(&frame).await?;
    }
}
