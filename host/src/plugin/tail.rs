//! A guest's stderr: the latest few KiB, kept for error messages. Older output falls off the
//! front, so a plugin that writes a lot never fills it (a full stream would make the guest's
//! next write fail, and Rust's `eprintln!` panic).

use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};

use bytes::Bytes;
use tokio::io::AsyncWrite;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamError};

#[derive(Debug, Clone)]
pub struct TailPipe {
    keep: usize,
    buffer: Arc<Mutex<VecDeque<u8>>>,
}

impl TailPipe {
    pub fn new(keep: usize) -> Self {
        Self { keep, buffer: Arc::new(Mutex::new(VecDeque::with_capacity(keep))) }
    }

    pub fn contents(&self) -> Vec<u8> {
        self.lock().iter().copied().collect()
    }

    pub fn clear(&self) {
        self.lock().clear();
    }

    fn push(&self, bytes: &[u8]) {
        let mut buffer = self.lock();
        let bytes = &bytes[bytes.len().saturating_sub(self.keep)..];
        let overflow = (buffer.len() + bytes.len()).saturating_sub(self.keep);
        buffer.drain(..overflow);
        buffer.extend(bytes);
    }

    fn lock(&self) -> MutexGuard<'_, VecDeque<u8>> {
        self.buffer.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl IsTerminal for TailPipe {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for TailPipe {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

#[wasmtime_wasi::async_trait]
impl OutputStream for TailPipe {
    fn write(&mut self, bytes: Bytes) -> Result<(), StreamError> {
        self.push(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> Result<(), StreamError> {
        Ok(())
    }

    fn check_write(&mut self) -> Result<usize, StreamError> {
        Ok(64 * 1024)
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for TailPipe {
    async fn ready(&mut self) {}
}

impl AsyncWrite for TailPipe {
    fn poll_write(self: Pin<&mut Self>, _cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        self.push(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_only_the_latest_bytes() {
        let t = TailPipe::new(8);
        t.push(b"hello ");
        t.push(b"world");
        assert_eq!(t.contents(), b"lo world");
        t.push(b"0123456789abc");
        assert_eq!(t.contents(), b"56789abc", "a write longer than the buffer keeps its end");
        t.clear();
        assert!(t.contents().is_empty());
    }
}
