//! An established peer connection: frames in, frames out, each direction its own half with
//! its own nonce counter, so a reader task and a writer task can run side by side.
//!
//! Framing: a frame is a header and a body, sealed into records of at most 64 KiB; a frame
//! always starts a new record. Any error ends the connection.

use std::net::SocketAddr;
use std::sync::Arc;

use snow::StatelessTransportState;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

use super::codec::{
    FRAME_HEADER_LEN, FrameHeader, MAX_RECORD, MAX_RECORD_PLAINTEXT, RECORD_PREFIX, TAG_LEN, record_prefix,
};
use super::error::PeerError;
use super::handshake::{self, Established, PeerIdentity};
use super::secret::ClusterSecret;

/// Read buffer size: several records per read system call.
const READ_BUFFER: usize = 256 * 1024;
/// A frame's body is reserved up to this much from its header, then grows as records arrive,
/// so a header alone cannot make us reserve `max_frame` bytes.
const INITIAL_BODY: usize = 1 << 20;
/// The writer keeps its buffer between frames unless a frame made it larger than this.
const KEEP_WRITE_BUFFER: usize = 4 << 20;

/// One message between hosts: a kind (assigned by the subsystem that owns it) and a body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub kind: u16,
    pub body: Vec<u8>,
}

impl Frame {
    pub fn new(kind: u16, body: impl Into<Vec<u8>>) -> Self {
        Self { kind, body: body.into() }
    }
}

/// Both halves of an established connection.
pub struct PeerConnection {
    pub reader: PeerReader,
    pub writer: PeerWriter,
    pub peer: PeerIdentity,
    pub remote: SocketAddr,
}

impl PeerConnection {
    /// Dials `addr` and authenticates with the cluster secret.
    pub async fn connect(
        addr: SocketAddr,
        secret: &ClusterSecret,
        me: &PeerIdentity,
        max_frame: u64,
    ) -> Result<Self, PeerError> {
        let mut stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        let established = handshake::initiate(&mut stream, secret, me).await?;
        Ok(Self::new(stream, established, addr, max_frame))
    }

    /// Authenticates an accepted stream.
    pub async fn accept(
        stream: TcpStream,
        secret: &ClusterSecret,
        me: &PeerIdentity,
        max_frame: u64,
    ) -> Result<Self, PeerError> {
        Self::accept_reporting(stream, secret, me, max_frame, &|_| {}).await
    }

    /// [`PeerConnection::accept`], telling `progress` when the handshake has
    /// [`super::handshake::PROVED`] the secret.
    pub async fn accept_reporting(
        mut stream: TcpStream,
        secret: &ClusterSecret,
        me: &PeerIdentity,
        max_frame: u64,
        progress: &(dyn Fn(u8) + Sync),
    ) -> Result<Self, PeerError> {
        stream.set_nodelay(true)?;
        let remote = stream.peer_addr()?;
        let established = handshake::respond(&mut stream, secret, me, progress).await?;
        Ok(Self::new(stream, established, remote, max_frame))
    }

    fn new(stream: TcpStream, established: Established, remote: SocketAddr, max_frame: u64) -> Self {
        let Established { transport, peer, send_nonce, recv_nonce } = established;
        let keys = Arc::new(transport);
        let (read, write) = stream.into_split();
        Self {
            reader: PeerReader {
                stream: BufReader::with_capacity(READ_BUFFER, read),
                keys: keys.clone(),
                nonce: recv_nonce,
                record: vec![0; MAX_RECORD],
                plain: vec![0; MAX_RECORD],
                max_frame,
            },
            writer: PeerWriter { stream: write, keys, nonce: send_nonce, out: Vec::new() },
            peer,
            remote,
        }
    }

    pub async fn read_frame(&mut self) -> Result<Option<Frame>, PeerError> {
        self.reader.read_frame().await
    }

    pub async fn write_frame(&mut self, frame: &Frame) -> Result<(), PeerError> {
        self.writer.write_frame(frame).await
    }
}

/// The receiving half.
pub struct PeerReader {
    stream: BufReader<OwnedReadHalf>,
    keys: Arc<StatelessTransportState>,
    nonce: u64,
    record: Vec<u8>,
    plain: Vec<u8>,
    max_frame: u64,
}

impl PeerReader {
    /// The next frame, or `None` when the peer closed the connection between frames.
    /// Not cancel-safe: a frame read halfway is lost, and the connection must be dropped
    /// (a later read fails cleanly, it does not panic).
    pub async fn read_frame(&mut self) -> Result<Option<Frame>, PeerError> {
        let Some(n) = self.read_record(true).await? else {
            return Ok(None);
        };
        let header = FrameHeader::decode(&self.plain[..n], self.max_frame)?;
        let len = header.len as usize;
        let mut body = Vec::with_capacity(len.min(INITIAL_BODY));
        body.extend_from_slice(&self.plain[FRAME_HEADER_LEN..n]);
        while body.len() < len {
            let n = self.read_record(false).await?.expect("EOF inside a frame is an error");
            body.extend_from_slice(&self.plain[..n]);
        }
        if body.len() != len {
            return Err(PeerError::Malformed("frame body longer than its header says"));
        }
        Ok(Some(Frame { kind: header.kind, body }))
    }

    /// Reads and opens one record into `self.plain`; its plaintext length.
    async fn read_record(&mut self, at_boundary: bool) -> Result<Option<usize>, PeerError> {
        let Self { stream, keys, nonce, record, plain, .. } = self;
        let mut prefix = [0u8; RECORD_PREFIX];
        match stream.read(&mut prefix[..1]).await? {
            0 if at_boundary => return Ok(None),
            0 => return Err(PeerError::Truncated("inside a frame")),
            _ => {}
        }
        read_exact_or(stream, &mut prefix[1..], PeerError::Truncated("inside a record header")).await?;
        let len = usize::from(u16::from_be_bytes(prefix));
        if len < TAG_LEN {
            return Err(PeerError::Malformed("record shorter than its authentication tag"));
        }
        read_exact_or(stream, &mut record[..len], PeerError::Truncated("inside a record")).await?;
        let n = keys.read_message(*nonce, &record[..len], plain).map_err(|_| PeerError::Integrity)?;
        *nonce += 1;
        Ok(Some(n))
    }
}

/// Fills `buf`, or fails with `at_eof` when the peer closes first.
pub(super) async fn read_exact_or<R: AsyncRead + Unpin>(
    stream: &mut R,
    buf: &mut [u8],
    at_eof: PeerError,
) -> Result<(), PeerError> {
    match stream.read_exact(buf).await {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Err(at_eof),
        Err(e) => Err(e.into()),
    }
}

/// The sending half.
pub struct PeerWriter {
    stream: OwnedWriteHalf,
    keys: Arc<StatelessTransportState>,
    nonce: u64,
    out: Vec<u8>,
}

impl PeerWriter {
    /// Sends one frame. Not cancel-safe: a frame cancelled halfway breaks the stream.
    pub async fn write_frame(&mut self, frame: &Frame) -> Result<(), PeerError> {
        let mut out = std::mem::take(&mut self.out);
        out.clear();
        let sealed = self.seal(frame, &mut out);
        let written = match sealed {
            Ok(()) => self.stream.write_all(&out).await.map_err(PeerError::from),
            Err(e) => Err(e),
        };
        if out.capacity() <= KEEP_WRITE_BUFFER {
            self.out = out;
        }
        written
    }

    /// Encrypts `frame` as records appended to `out`.
    pub fn seal(&mut self, frame: &Frame, out: &mut Vec<u8>) -> Result<(), PeerError> {
        let len = u32::try_from(frame.body.len())
            .map_err(|_| PeerError::Oversized { len: frame.body.len() as u64, max: u32::MAX.into() })?;
        let header = FrameHeader { len, kind: frame.kind }.encode();
        let first = frame.body.len().min(MAX_RECORD_PLAINTEXT - FRAME_HEADER_LEN);
        let mut plain = Vec::with_capacity(FRAME_HEADER_LEN + first);
        plain.extend_from_slice(&header);
        plain.extend_from_slice(&frame.body[..first]);
        self.seal_record(&plain, out)?;
        for chunk in frame.body[first..].chunks(MAX_RECORD_PLAINTEXT) {
            self.seal_record(chunk, out)?;
        }
        Ok(())
    }

    fn seal_record(&mut self, plain: &[u8], out: &mut Vec<u8>) -> Result<(), PeerError> {
        let start = out.len();
        out.resize(start + RECORD_PREFIX + plain.len() + TAG_LEN, 0);
        let n = self.keys.write_message(self.nonce, plain, &mut out[start + RECORD_PREFIX..])?;
        out[start..start + RECORD_PREFIX].copy_from_slice(&record_prefix(n));
        out.truncate(start + RECORD_PREFIX + n);
        self.nonce += 1;
        Ok(())
    }

    /// Writes bytes as they are, outside the framing. For tests that cut a frame short.
    #[doc(hidden)]
    pub async fn write_raw(&mut self, bytes: &[u8]) -> Result<(), PeerError> {
        self.stream.write_all(bytes).await?;
        Ok(())
    }

    /// Closes the sending direction; the peer reads the end after the last frame.
    pub async fn shutdown(&mut self) -> Result<(), PeerError> {
        self.stream.shutdown().await?;
        Ok(())
    }
}
