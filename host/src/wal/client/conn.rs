//! A replication connection to the primary: TCP or Unix socket, the startup message with
//! `replication=true` (physical replication), authentication, the server's parameters, and
//! reading and writing messages.
//!
//! Owns: the socket and its buffers. Must never: hand out a message before it is whole, buffer
//! more than `max_message_len` for one message, or be used again after a multi-message
//! exchange was cut short (it answers [`WalClientError::Desynchronized`] instead).

use std::collections::HashMap;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, BytesMut};
use postgres_protocol::message::frontend;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpStream, UnixStream};
use tracing::Instrument;

use super::auth::{AuthProgress, Authenticator};
use super::codec::{self, BackendMessage};
use super::config::ConnConfig;
use super::error::WalClientError;

/// Read at least this much per read system call.
const READ_CHUNK: usize = 64 * 1024;

/// The byte stream to the server.
#[derive(Debug)]
enum Transport {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl AsyncRead for Transport {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Transport::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            Transport::Unix(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Transport {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Transport::Tcp(s) => Pin::new(s).poll_write(cx, buf),
            Transport::Unix(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Transport::Tcp(s) => Pin::new(s).poll_flush(cx),
            Transport::Unix(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Transport::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            Transport::Unix(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}

/// An authenticated physical replication connection, ready for replication commands.
pub struct ReplicationConn {
    io: Transport,
    rbuf: BytesMut,
    wbuf: BytesMut,
    max_message_len: usize,
    params: HashMap<String, String>,
    backend_pid: Option<i32>,
    address: String,
    /// Set while an exchange of several messages is under way; still set afterwards only if
    /// that exchange was dropped or failed half-way.
    busy: bool,
}

impl ReplicationConn {
    /// Connects, starts a physical replication session and authenticates, all within
    /// `config.connect_timeout`. Dropping the future abandons the connection.
    pub async fn connect(config: &ConnConfig) -> Result<Self, WalClientError> {
        config.validate()?;
        let address = config.address();
        let span = tracing::debug_span!("pg_connect", %address, user = %config.user);
        let attempt = Self::connect_inner(config, address.clone()).instrument(span);
        match tokio::time::timeout(config.connect_timeout, attempt).await {
            Ok(result) => result,
            Err(_) => Err(WalClientError::ConnectTimeout {
                addr: address,
                ms: config.connect_timeout.as_millis() as u64,
            }),
        }
    }

    async fn connect_inner(config: &ConnConfig, address: String) -> Result<Self, WalClientError> {
        let io = match &config.socket_dir {
            Some(dir) => {
                Transport::Unix(UnixStream::connect(dir.join(format!(".s.PGSQL.{}", config.port))).await?)
            }
            None => {
                let stream = TcpStream::connect((config.host.as_str(), config.port)).await?;
                // Status updates are small and latency-sensitive: the slot advances on them.
                stream.set_nodelay(true)?;
                Transport::Tcp(stream)
            }
        };
        let mut conn = Self {
            io,
            rbuf: BytesMut::with_capacity(READ_CHUNK),
            wbuf: BytesMut::new(),
            max_message_len: config.max_message_len,
            params: HashMap::new(),
            backend_pid: None,
            address,
            busy: true,
        };
        conn.startup(config).await?;
        conn.busy = false;
        Ok(conn)
    }

    async fn startup(&mut self, config: &ConnConfig) -> Result<(), WalClientError> {
        let mut params = vec![
            ("user", config.user.as_str()),
            ("replication", "true"),
            ("application_name", config.application_name.as_str()),
        ];
        if let Some(db) = &config.dbname {
            params.push(("database", db.as_str()));
        }
        frontend::startup_message(params, &mut self.wbuf)
            .map_err(|e| WalClientError::Config(format!("startup parameters: {e}")))?;
        self.flush().await?;

        let mut auth = Authenticator::new(&config.user, config.password.as_deref());
        loop {
            match self.read_message().await? {
                BackendMessage::Authentication(request) => {
                    let progress = auth.respond(request, &mut self.wbuf)?;
                    self.flush().await?;
                    if progress == AuthProgress::Done {
                        tracing::debug!(method = auth.method(), "authenticated");
                        break;
                    }
                }
                BackendMessage::ErrorResponse(e) => return Err(e.into()),
                other => return Err(unexpected(&other, "during authentication")),
            }
        }
        loop {
            match self.read_message().await? {
                BackendMessage::BackendKeyData { process_id, .. } => self.backend_pid = Some(process_id),
                BackendMessage::ReadyForQuery { .. } => break,
                BackendMessage::ErrorResponse(e) => return Err(e.into()),
                other => return Err(unexpected(&other, "after authentication")),
            }
        }
        tracing::info!(
            address = %self.address,
            pid = ?self.backend_pid,
            server_version = self.parameter("server_version").unwrap_or("?"),
            "connected to the primary for physical replication"
        );
        Ok(())
    }

    /// A parameter the server reported (`server_version`, `integer_datetimes`, ...).
    pub fn parameter(&self, name: &str) -> Option<&str> {
        self.params.get(name).map(String::as_str)
    }

    /// The walsender's process id on the primary, if it said.
    pub fn backend_pid(&self) -> Option<i32> {
        self.backend_pid
    }

    /// Where this connection goes, for logs.
    pub fn address(&self) -> &str {
        &self.address
    }

    /// Says goodbye politely (`Terminate`) and closes the socket.
    pub async fn close(mut self) -> Result<(), WalClientError> {
        frontend::terminate(&mut self.wbuf);
        self.flush().await?;
        self.io.shutdown().await?;
        Ok(())
    }

    /// Marks the start of an exchange of several messages; refuses if an earlier one never
    /// finished.
    pub(super) fn begin_exchange(&mut self) -> Result<(), WalClientError> {
        if self.busy {
            return Err(WalClientError::Desynchronized);
        }
        self.busy = true;
        Ok(())
    }

    /// Marks the end of an exchange: the server is ready for the next command.
    pub(super) fn end_exchange(&mut self) {
        self.busy = false;
    }

    /// The outgoing buffer: encode messages into it, then [`flush`](Self::flush).
    pub(super) fn out(&mut self) -> &mut BytesMut {
        &mut self.wbuf
    }

    /// Writes everything queued. Cancel-safe: what was not written stays queued for the next
    /// call.
    pub(super) async fn flush(&mut self) -> Result<(), WalClientError> {
        while self.wbuf.has_remaining() {
            self.io.write_buf(&mut self.wbuf).await?;
        }
        self.io.flush().await?;
        Ok(())
    }

    /// The next message, with notices logged and parameter changes recorded on the way.
    /// Cancel-safe: bytes read stay buffered for the next call.
    pub(super) async fn read_message(&mut self) -> Result<BackendMessage, WalClientError> {
        loop {
            match codec::decode(&mut self.rbuf, self.max_message_len)? {
                Some(BackendMessage::NoticeResponse(n)) => {
                    tracing::info!(address = %self.address, severity = %n.severity, code = %n.code, "{}", n.message)
                }
                Some(BackendMessage::ParameterStatus { name, value }) => {
                    self.params.insert(name, value);
                }
                Some(message) => return Ok(message),
                None => self.fill().await?,
            }
        }
    }

    /// Reads more bytes, reserving room for the whole of a message whose header is buffered.
    async fn fill(&mut self) -> Result<(), WalClientError> {
        let want = codec::peek_len(&self.rbuf, self.max_message_len)?.unwrap_or(0);
        let missing = want.saturating_sub(self.rbuf.len()).max(READ_CHUNK);
        self.rbuf.reserve(missing);
        if self.io.read_buf(&mut self.rbuf).await? == 0 {
            return Err(WalClientError::Closed(if self.rbuf.is_empty() {
                "between messages"
            } else {
                "in the middle of a message"
            }));
        }
        Ok(())
    }
}

impl std::fmt::Debug for ReplicationConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplicationConn")
            .field("address", &self.address)
            .field("backend_pid", &self.backend_pid)
            .field("busy", &self.busy)
            .finish_non_exhaustive()
    }
}

/// The error for a message that has no business arriving now.
pub(super) fn unexpected(message: &BackendMessage, during: &'static str) -> WalClientError {
    WalClientError::Unexpected { got: message.describe(), during }
}
