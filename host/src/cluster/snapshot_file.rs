//! The snapshot data openraft moves between the state machine and the network: a file on
//! disk, never the snapshot in memory. The captain's current snapshot is read from its file
//! chunk by chunk; a member receiving one writes the chunks into a file of its own, and the
//! file refuses what a peer could use to make it large: a write past the member's limit, or a
//! seek past what was received (a gap a later write would fill with zeros).
//!
//! Must never: grow past its limit, or report an end other than that of the last chunk written
//! (a stream restarted at offset 0 over a longer earlier attempt ends where the new one does).

use std::io::{self, SeekFrom};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncSeek, AsyncWrite, ReadBuf};

/// A snapshot file being read (the captain's) or written (one being received).
pub struct SnapshotFile {
    file: tokio::fs::File,
    path: PathBuf,
    /// Bytes a writer may put in it.
    limit: u64,
    pos: u64,
    /// Bytes in the file (received so far, or the whole file being read).
    len: u64,
    /// One past the last byte of the most recent write: where a received snapshot ends.
    end: u64,
}

impl SnapshotFile {
    /// The snapshot in `file` (opened from `path`), for reading from its current position.
    pub fn from_std(mut file: std::fs::File, path: &Path) -> io::Result<Self> {
        use std::io::Seek;
        let len = file.metadata()?.len();
        let pos = file.stream_position()?;
        Ok(Self {
            file: tokio::fs::File::from_std(file),
            path: path.to_path_buf(),
            limit: 0,
            pos,
            len,
            end: len,
        })
    }

    /// Creates (or empties) `path` (mode 0600) to receive a snapshot of at most `limit` bytes.
    pub async fn create(path: &Path, limit: u64) -> io::Result<Self> {
        let file = tokio::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(path)
            .await?;
        Ok(Self { file, path: path.to_path_buf(), limit, pos: 0, len: 0, end: 0 })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Bytes in the file.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Makes what was received durable, cut at the end of the last write; returns the path.
    pub async fn finish(mut self) -> io::Result<PathBuf> {
        use tokio::io::AsyncWriteExt;
        self.file.flush().await?;
        self.file.set_len(self.end).await?;
        self.file.sync_all().await?;
        Ok(self.path)
    }

    fn too_large(&self) -> io::Error {
        io::Error::other(format!(
            "the snapshot being received is over this member's limit of {} packed bytes (cluster.max_snapshot_bytes)",
            self.limit
        ))
    }
}

impl AsyncRead for SnapshotFile {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        ready!(Pin::new(&mut self.file).poll_read(cx, buf))?;
        self.pos += (buf.filled().len() - before) as u64;
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for SnapshotFile {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        if self.pos.saturating_add(buf.len() as u64) > self.limit {
            return Poll::Ready(Err(self.too_large()));
        }
        let n = ready!(Pin::new(&mut self.file).poll_write(cx, buf))?;
        self.pos += n as u64;
        self.len = self.len.max(self.pos);
        self.end = self.pos;
        Poll::Ready(Ok(n))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.file).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.file).poll_shutdown(cx)
    }
}

impl AsyncSeek for SnapshotFile {
    fn start_seek(mut self: Pin<&mut Self>, position: SeekFrom) -> io::Result<()> {
        let target = match position {
            SeekFrom::Start(at) => Some(at),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
            SeekFrom::End(d) => self.len.checked_add_signed(d),
        };
        match target {
            Some(at) if at <= self.len => Pin::new(&mut self.file).start_seek(SeekFrom::Start(at)),
            _ => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("snapshot seek to {position:?} is past the {} bytes received", self.len),
            )),
        }
    }

    fn poll_complete(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<u64>> {
        let at = ready!(Pin::new(&mut self.file).poll_complete(cx))?;
        self.pos = at;
        Poll::Ready(Ok(at))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};

    #[tokio::test]
    async fn a_received_file_refuses_gaps_and_growth_and_ends_at_the_last_write() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("in");
        let mut f = SnapshotFile::create(&path, 10).await.unwrap();
        f.write_all(b"abcdefgh").await.unwrap();
        assert!(f.seek(SeekFrom::Start(9)).await.is_err(), "a gap past what was received");
        f.seek(SeekFrom::Start(6)).await.unwrap();
        assert!(f.write_all(b"12345").await.is_err(), "past the limit");
        // A stream that starts again at 0 with fewer bytes ends where it ends.
        f.seek(SeekFrom::Start(0)).await.unwrap();
        f.write_all(b"xyz").await.unwrap();
        assert_eq!(f.finish().await.unwrap(), path);
        assert_eq!(std::fs::read(&path).unwrap(), b"xyz");
        let mut r = SnapshotFile::from_std(std::fs::File::open(&path).unwrap(), &path).unwrap();
        assert_eq!(r.seek(SeekFrom::End(0)).await.unwrap(), 3);
        r.seek(SeekFrom::Start(1)).await.unwrap();
        let mut s = String::new();
        r.read_to_string(&mut s).await.unwrap();
        assert_eq!(s, "yz");
        assert!(r.write_all(b"x").await.is_err(), "a snapshot being read is not written");
    }
}
