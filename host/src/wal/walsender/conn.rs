//! One client socket with its buffers: startup packets and typed messages in (through the
//! codec, capped), encoded backend messages out.
//!
//! Owns: the socket. Must never: hand out a message before it is whole, or buffer more than
//! `max_message_len` for one message.

use std::net::SocketAddr;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::backend::{self, SqlError};
use super::codec::{self, Decoded, FrontendMessage, StartupPacket};
use super::error::WalSenderError;

/// Read at least this much per read system call.
const READ_CHUNK: usize = 16 * 1024;

/// A client connection.
#[derive(Debug)]
pub struct Conn {
    stream: TcpStream,
    rbuf: BytesMut,
    /// Encode messages here, then [`flush`](Self::flush).
    pub out: BytesMut,
    max_message_len: usize,
    /// Who is on the other end, for logs.
    pub peer: SocketAddr,
}

impl Conn {
    /// Wraps an accepted socket.
    pub fn new(stream: TcpStream, peer: SocketAddr, max_message_len: usize) -> Self {
        Conn {
            stream,
            rbuf: BytesMut::with_capacity(READ_CHUNK),
            out: BytesMut::new(),
            max_message_len,
            peer,
        }
    }

    /// The next startup packet. Cancel-safe.
    pub async fn read_startup(&mut self) -> Result<StartupPacket, WalSenderError> {
        loop {
            if let Decoded::Message(packet) = codec::decode_startup(&mut self.rbuf)? {
                return Ok(packet);
            }
            self.fill().await?;
        }
    }

    /// The next typed message. Cancel-safe: bytes read stay buffered for the next call.
    pub async fn read_message(&mut self) -> Result<FrontendMessage, WalSenderError> {
        loop {
            if let Decoded::Message(m) = codec::decode(&mut self.rbuf, self.max_message_len)? {
                return Ok(m);
            }
            self.fill().await?;
        }
    }

    /// A message if one is buffered or readable without waiting.
    pub fn try_message(&mut self) -> Result<Option<FrontendMessage>, WalSenderError> {
        if let Decoded::Message(m) = codec::decode(&mut self.rbuf, self.max_message_len)? {
            return Ok(Some(m));
        }
        self.reserve()?;
        match self.stream.try_read_buf(&mut self.rbuf) {
            Ok(0) => Err(self.closed()),
            Ok(_) => match codec::decode(&mut self.rbuf, self.max_message_len)? {
                Decoded::Message(m) => Ok(Some(m)),
                Decoded::Incomplete => Ok(None),
            },
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Writes everything queued. Cancel-safe: what was not written stays queued.
    pub async fn flush(&mut self) -> Result<(), WalSenderError> {
        while self.out.has_remaining() {
            self.stream.write_buf(&mut self.out).await?;
        }
        self.stream.flush().await?;
        Ok(())
    }

    /// Sends `e` (an ERROR or FATAL), flushing.
    pub async fn send_error(&mut self, e: &SqlError) -> Result<(), WalSenderError> {
        backend::error_response(&mut self.out, e);
        self.flush().await
    }

    /// Sends a FATAL error and returns it as the connection's end.
    pub async fn fatal(&mut self, e: SqlError) -> WalSenderError {
        // The client may be gone already; the error is what matters.
        let _ = self.send_error(&e).await;
        WalSenderError::Fatal(e)
    }

    /// Closes the sending side after flushing what is queued.
    pub async fn close(mut self) {
        if self.flush().await.is_ok() {
            let _ = self.stream.shutdown().await;
        }
    }

    fn reserve(&mut self) -> Result<(), WalSenderError> {
        let want = codec::peek_len(&self.rbuf, self.max_message_len)?.unwrap_or(0);
        self.rbuf.reserve(want.saturating_sub(self.rbuf.len()).max(READ_CHUNK));
        Ok(())
    }

    fn closed(&self) -> WalSenderError {
        WalSenderError::Closed(if self.rbuf.is_empty() {
            "between messages"
        } else {
            "in the middle of a message"
        })
    }

    async fn fill(&mut self) -> Result<(), WalSenderError> {
        // Startup packets have no type byte: peek_len would misread them, so reserve plainly.
        if self.rbuf.capacity() - self.rbuf.len() < READ_CHUNK {
            self.rbuf.reserve(READ_CHUNK);
        }
        if self.stream.read_buf(&mut self.rbuf).await? == 0 {
            return Err(self.closed());
        }
        Ok(())
    }
}
