//! The messages of one sync pass between the standby (which pulls) and the primary (which
//! sends), as frames on the peer transport. File data travels in chunks, zstd-compressed when
//! that makes them smaller; changed large files travel as delta ops against the standby's copy.
//!
//! Must never: trust a decoded length or name (every `Entry` and `RelName` is validated again
//! on decode, and the applier re-checks confinement).

use serde::{Deserialize, Serialize};

use super::delta::DeltaOp;
use super::entry::Entry;
use super::names::RelName;
use super::signature::Signature;
use crate::peer::Frame;

/// Frame kind of sync messages (cluster RPCs use 16/17, pings 1/2).
pub const SYNC_FRAME: u16 = 32;
/// File data per chunk message.
pub const CHUNK_BYTES: usize = 1 << 20;
/// Entries per `Have` message.
pub const HAVE_BATCH: usize = 2_000;
/// Files at least this large (on both sides) travel as a delta; smaller ones whole (a delta's
/// signature round trip costs more than sending them).
pub const DELTA_MIN_BYTES: u64 = 64 << 10;

#[derive(Debug, Serialize, Deserialize)]
pub enum SyncMsg {
    /// Standby: start a pass of `tree`.
    Open {
        tree: String,
    },
    /// Standby: what it holds (its refreshed index), in batches, then `HaveEnd`.
    Have {
        entries: Vec<Entry>,
    },
    HaveEnd,
    /// Primary: remove these paths (files, links, or folders with everything below).
    Delete {
        paths: Vec<RelName>,
    },
    Dir(Entry),
    Symlink(Entry),
    /// Primary: a whole file follows as `Chunk`s, then `FileEnd`.
    File {
        entry: Entry,
    },
    Chunk {
        data: Vec<u8>,
        compressed: bool,
    },
    FileEnd,
    /// Primary: send the signature of your copy of `path`.
    WantSignature {
        path: RelName,
    },
    /// Standby: the signature, or none (no usable base: send the file whole).
    Signature {
        sig: Option<Signature>,
    },
    /// Primary: `entry` as delta ops against the signed copy, then `DeltaEnd`.
    DeltaFile {
        entry: Entry,
        block_len: u32,
    },
    Ops {
        ops: Vec<DeltaOp>,
    },
    DeltaEnd {
        new_len: u64,
        new_hash: [u8; 32],
    },
    /// Primary: the pass is complete.
    End,
    /// Standby: everything is applied and durable.
    Done {
        files: u64,
        bytes: u64,
        failed: u64,
    },
    /// Either side: the pass cannot go on.
    Error {
        message: String,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum ProtocolError {
    #[error("sync message: {0}")]
    Codec(#[from] postcard::Error),
    #[error("unexpected frame kind {0} in a sync pass")]
    Kind(u16),
    #[error("the peer closed the sync pass midway")]
    Closed,
    #[error("unexpected {got} (wanted {wanted})")]
    Unexpected { got: String, wanted: &'static str },
    #[error("the peer failed: {0}")]
    Remote(String),
    #[error("chunk decompression: {0}")]
    Decompress(std::io::Error),
}

pub fn encode(msg: &SyncMsg) -> Result<Frame, ProtocolError> {
    Ok(Frame::new(SYNC_FRAME, postcard::to_stdvec(msg)?))
}

pub fn decode(frame: Option<Frame>) -> Result<SyncMsg, ProtocolError> {
    let frame = frame.ok_or(ProtocolError::Closed)?;
    if frame.kind != SYNC_FRAME {
        return Err(ProtocolError::Kind(frame.kind));
    }
    match postcard::from_bytes(&frame.body)? {
        SyncMsg::Error { message } => Err(ProtocolError::Remote(message)),
        msg => Ok(msg),
    }
}

/// A chunk of file data, compressed when that pays.
pub fn chunk(data: &[u8]) -> SyncMsg {
    match zstd::bulk::compress(data, 1) {
        Ok(z) if z.len() + z.len() / 16 < data.len() => SyncMsg::Chunk { data: z, compressed: true },
        _ => SyncMsg::Chunk { data: data.to_vec(), compressed: false },
    }
}

/// The bytes of a chunk.
pub fn unchunk(data: Vec<u8>, compressed: bool) -> Result<Vec<u8>, ProtocolError> {
    if !compressed {
        return Ok(data);
    }
    zstd::bulk::decompress(&data, CHUNK_BYTES).map_err(ProtocolError::Decompress)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_round_trip_compressed_or_not_and_bombs_are_refused() {
        let text = b"the same line again\n".repeat(1000);
        let SyncMsg::Chunk { data, compressed } = chunk(&text) else { panic!() };
        assert!(compressed && data.len() < text.len() / 10);
        assert_eq!(unchunk(data, true).unwrap(), text);
        let mut x = 0x9e37_79b9_u32;
        let random: Vec<u8> = (0..4096)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                x as u8
            })
            .collect();
        let SyncMsg::Chunk { data, compressed } = chunk(&random) else { panic!() };
        assert!(!compressed);
        assert_eq!(unchunk(data, false).unwrap(), random);
        // A chunk that inflates past the chunk size is refused, not allocated.
        let bomb = zstd::bulk::compress(&vec![0u8; CHUNK_BYTES * 4], 1).unwrap();
        assert!(unchunk(bomb, true).is_err());
        let frame = encode(&SyncMsg::Open { tree: "vault".into() }).unwrap();
        assert!(matches!(decode(Some(frame)).unwrap(), SyncMsg::Open { tree } if tree == "vault"));
        assert!(matches!(decode(None), Err(ProtocolError::Closed)));
        assert!(decode(Some(Frame::new(SYNC_FRAME, vec![0xff; 3]))).is_err());
    }
}
