//! The messages of one sync pass between the standby (which pulls) and the primary (which
//! sends), as frames on the peer transport. File data travels in chunks, zstd-compressed when
//! that makes them smaller; changed large files travel as delta ops against the standby's copy.
//!
//! Must never: trust a decoded length or name (every `Entry` and `RelName` is validated again
//! on decode, and the applier re-checks confinement).

use serde::{Deserialize, Serialize};

use super::config::TreeMeta;
use super::delta::DeltaOp;
use super::entry::Entry;
use super::names::RelName;
use super::signature::Signature;
use crate::clip::clip_message;
use crate::peer::Frame;

/// Frame kind of sync messages (cluster RPCs use 16/17, pings 1/2).
pub const SYNC_FRAME: u16 = 32;
/// File data per chunk message.
pub const CHUNK_BYTES: usize = 1 << 20;
/// Entries per `Have` or `Delete` message.
pub const HAVE_BATCH: usize = 2_000;
/// Encoded bytes of entries gathered into one `Have` at most (entries with attributes are
/// large: up to [`crate::sync::meta::MAX_XATTR_BYTES`] each), far below a frame.
pub const HAVE_BYTES: usize = 4 << 20;
/// Encoded bytes of an entry besides its path, link target and attributes, rounded up (kind,
/// size, mtime, mode, ids, hash, link group).
pub const ENTRY_OVERHEAD: usize = 96;
/// Files at least this large (on both sides) travel as a delta; smaller ones whole (a delta's
/// signature round trip costs more than sending them).
pub const DELTA_MIN_BYTES: u64 = 64 << 10;
/// Files smaller than this travel packed together in [`SyncMsg::Files`]; larger ones in chunks.
pub const SMALL_FILE_BYTES: u64 = 256 << 10;
/// Content bytes gathered into one [`SyncMsg::Files`] before it is compressed and sent.
pub const FILES_BATCH_BYTES: usize = 1 << 20;
/// The most a [`SyncMsg::Files`] payload may inflate to (a batch plus one small file, with room).
pub const FILES_MAX_BYTES: usize = 4 << 20;

/// Where a standby stands with the primary: the primary's watch epoch and the generation of
/// its change journal the standby's tree reflects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Since {
    pub epoch: u64,
    pub generation: u64,
}

/// How the primary runs a pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PassMode {
    /// The standby's `since` is current: nothing changed, the pass ends here.
    Current,
    /// The primary knows what changed since the standby's `since`: no index needed.
    Incremental,
    /// Send your whole index (`Have` ... `HaveEnd`).
    Full,
}

/// One small file of a [`SyncMsg::Files`] batch.
#[derive(Debug, Serialize, Deserialize)]
pub struct SmallFile {
    pub entry: Entry,
    #[serde(with = "serde_bytes")]
    pub data: Vec<u8>,
}

#[derive(Debug, Serialize, Deserialize)]
pub enum SyncMsg {
    /// Standby: start a pass of `tree`; `since` when it has completed one before.
    Open {
        tree: String,
        since: Option<Since>,
        /// When the standby is current, hold the answer until something changes (or a few
        /// seconds pass): the follow mode's long poll.
        wait: bool,
        /// The standby runs as root: it applies owners and privileged attributes.
        privileged: bool,
    },
    /// Primary: how this pass runs, and what metadata the tree keeps.
    Mode {
        mode: PassMode,
        meta: TreeMeta,
    },
    /// Standby: what it holds (its refreshed index), in batches, then `HaveEnd`.
    Have {
        entries: Vec<Entry>,
    },
    HaveEnd,
    /// Primary: what this pass will send (for progress), and the sockets, FIFOs and devices
    /// its scan skipped.
    Plan {
        files: u64,
        bytes: u64,
        special: u64,
    },
    /// Primary: your file `from` (a path this pass deletes, or `entry`'s own path when only
    /// its metadata changed) holds `entry`'s content: take it as `entry` instead of receiving
    /// the bytes (a rename). Sent before any `Delete`.
    Move {
        from: RelName,
        entry: Entry,
    },
    /// Primary: remove these paths (files, links, or folders with everything below).
    Delete {
        paths: Vec<RelName>,
    },
    Dir(Entry),
    Symlink(Entry),
    /// Primary: small files whole, packed: postcard of `Vec<SmallFile>`, zstd-compressed when
    /// `compressed`. Each entry carries its content hash.
    Files {
        #[serde(with = "serde_bytes")]
        packed: Vec<u8>,
        compressed: bool,
    },
    /// Primary: a large file follows as `Chunk`s with the same `id`, then `FileEnd`. Chunks of
    /// different files may interleave.
    FileStart {
        id: u32,
        entry: Entry,
    },
    Chunk {
        id: u32,
        #[serde(with = "serde_bytes")]
        data: Vec<u8>,
        compressed: bool,
    },
    /// The file's content hash; the standby checks it before the file may land.
    FileEnd {
        id: u32,
        hash: [u8; 32],
    },
    /// Primary: the next `len` bytes of file `id` are a hole (no data sent, none written).
    Hole {
        id: u32,
        len: u64,
    },
    /// Primary: the file changed while it was read; drop it (the next pass sends it).
    FileAbort {
        id: u32,
    },
    /// Primary: the holes of the file that follows as delta `id` (sent before its
    /// `DeltaStart`): zeros the delta produces inside them are not written.
    Holes {
        id: u32,
        holes: Vec<(u64, u64)>,
    },
    /// Primary: send the signature of your copy of `path`.
    WantSignature {
        id: u32,
        path: RelName,
    },
    /// Standby: the signature, or none (no usable base: the file comes whole).
    Signature {
        id: u32,
        sig: Option<Signature>,
    },
    /// Primary: `entry` as delta ops against the signed copy, then `DeltaEnd`.
    DeltaStart {
        id: u32,
        entry: Entry,
        block_len: u32,
    },
    Ops {
        id: u32,
        ops: Vec<DeltaOp>,
    },
    DeltaEnd {
        id: u32,
        new_len: u64,
        new_hash: [u8; 32],
    },
    /// Primary: `entry` is a hard-link member: make it a link to its leader (sent after every
    /// file's content).
    HardLink(Entry),
    /// Primary: the pass is complete; on success the standby stands at `since`. `unreadable`:
    /// what the primary could not read (left as the standby has it, tried again next pass).
    End {
        since: Option<Since>,
        unreadable: Unreadable,
    },
    /// Standby: everything is applied and durable; `failed` paths did not land.
    Done {
        files: u64,
        bytes: u64,
        failed: Vec<RelName>,
    },
    /// Either side: the pass cannot go on.
    Error {
        message: String,
    },
}

/// Paths the primary could not read in a pass: how many, and the first
/// [`UNREADABLE_LISTED`] with the reason (each as [`clip_message`] shows a text).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Unreadable {
    pub count: u64,
    pub listed: Vec<UnreadablePath>,
}

/// One path the primary could not read, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnreadablePath {
    pub path: String,
    pub reason: String,
}

/// Unreadable paths named one by one in a pass's result and in the status; beyond, counted.
pub const UNREADABLE_LISTED: usize = 100;

impl Unreadable {
    /// Counts `path` and names it while there is room.
    pub fn add(&mut self, path: &RelName, reason: &str) {
        self.count += 1;
        if self.listed.len() < UNREADABLE_LISTED {
            self.listed.push(UnreadablePath::new(&path.display(), reason));
        }
    }

    /// The same within this side's bounds, whatever the other side sent.
    pub fn bounded(mut self) -> Unreadable {
        self.listed.truncate(UNREADABLE_LISTED);
        // Room for what this side's own clipping adds: a text it clipped stays as it is.
        let room = crate::clip::MAX_MESSAGE + 32;
        for p in self.listed.iter_mut().filter(|p| p.path.len() > room || p.reason.len() > room) {
            *p = UnreadablePath::new(&p.path, &p.reason);
        }
        self
    }
}

impl UnreadablePath {
    fn new(path: &str, reason: &str) -> UnreadablePath {
        UnreadablePath { path: clip_message(path).to_string(), reason: clip_message(reason).to_string() }
    }
}

impl SyncMsg {
    /// The message's name, for errors (never its content, which may be large).
    pub fn name(&self) -> &'static str {
        match self {
            SyncMsg::Open { .. } => "Open",
            SyncMsg::Mode { .. } => "Mode",
            SyncMsg::Have { .. } => "Have",
            SyncMsg::HaveEnd => "HaveEnd",
            SyncMsg::Plan { .. } => "Plan",
            SyncMsg::Move { .. } => "Move",
            SyncMsg::Delete { .. } => "Delete",
            SyncMsg::Dir(_) => "Dir",
            SyncMsg::Symlink(_) => "Symlink",
            SyncMsg::Files { .. } => "Files",
            SyncMsg::FileStart { .. } => "FileStart",
            SyncMsg::Chunk { .. } => "Chunk",
            SyncMsg::FileEnd { .. } => "FileEnd",
            SyncMsg::Hole { .. } => "Hole",
            SyncMsg::FileAbort { .. } => "FileAbort",
            SyncMsg::Holes { .. } => "Holes",
            SyncMsg::WantSignature { .. } => "WantSignature",
            SyncMsg::Signature { .. } => "Signature",
            SyncMsg::DeltaStart { .. } => "DeltaStart",
            SyncMsg::Ops { .. } => "Ops",
            SyncMsg::DeltaEnd { .. } => "DeltaEnd",
            SyncMsg::HardLink(_) => "HardLink",
            SyncMsg::End { .. } => "End",
            SyncMsg::Done { .. } => "Done",
            SyncMsg::Error { .. } => "Error",
        }
    }
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

/// About how many bytes `e` takes in a message.
pub fn entry_bytes(e: &Entry) -> usize {
    ENTRY_OVERHEAD + e.path.as_bytes().len() + e.link.as_ref().map_or(0, String::len) + e.xattr_bytes()
}

/// `entries` cut into `Have` batches: at most [`HAVE_BATCH`] entries and about
/// [`HAVE_BYTES`] each (an entry larger than that alone).
pub fn have_batches(entries: &[Entry]) -> Vec<&[Entry]> {
    let mut out = Vec::new();
    let (mut start, mut bytes) = (0, 0);
    for (i, e) in entries.iter().enumerate() {
        let size = entry_bytes(e);
        if i > start && (i - start >= HAVE_BATCH || bytes + size > HAVE_BYTES) {
            out.push(&entries[start..i]);
            (start, bytes) = (i, 0);
        }
        bytes += size;
    }
    if start < entries.len() {
        out.push(&entries[start..]);
    }
    out
}

/// Bytes probed before compressing a whole buffer: data that does not shrink here (media,
/// archives, encrypted files) goes as it is, at a fraction of the cost of compressing it all.
const PROBE_BYTES: usize = 16 << 10;

/// `data` compressed when that pays: `(bytes, compressed)`.
pub fn compress(data: &[u8]) -> (Vec<u8>, bool) {
    if data.len() > 4 * PROBE_BYTES {
        let probe = &data[..PROBE_BYTES];
        match zstd::bulk::compress(probe, 1) {
            Ok(z) if z.len() + z.len() / 8 < probe.len() => {}
            _ => return (data.to_vec(), false),
        }
    }
    match zstd::bulk::compress(data, 1) {
        Ok(z) if z.len() + z.len() / 16 < data.len() => (z, true),
        _ => (data.to_vec(), false),
    }
}

/// A chunk of file `id`'s data, compressed when that pays.
pub fn chunk(id: u32, data: &[u8]) -> SyncMsg {
    let (data, compressed) = compress(data);
    SyncMsg::Chunk { id, data, compressed }
}

/// The bytes of a chunk.
pub fn unchunk(data: Vec<u8>, compressed: bool) -> Result<Vec<u8>, ProtocolError> {
    inflate(data, compressed, CHUNK_BYTES)
}

/// A packed batch of small files.
pub fn pack(files: &[SmallFile]) -> Result<SyncMsg, ProtocolError> {
    let raw = postcard::to_stdvec(files)?;
    let (packed, compressed) = compress(&raw);
    Ok(SyncMsg::Files { packed, compressed })
}

/// The files of a packed batch.
pub fn unpack(packed: Vec<u8>, compressed: bool) -> Result<Vec<SmallFile>, ProtocolError> {
    let raw = inflate(packed, compressed, FILES_MAX_BYTES)?;
    Ok(postcard::from_bytes(&raw)?)
}

/// A packed batch's payload, decompressed (for [`unpack`] with `compressed: false`).
pub fn inflate_files(packed: Vec<u8>) -> Result<Vec<u8>, ProtocolError> {
    inflate(packed, true, FILES_MAX_BYTES)
}

fn inflate(data: Vec<u8>, compressed: bool, max: usize) -> Result<Vec<u8>, ProtocolError> {
    if !compressed {
        return Ok(data);
    }
    zstd::bulk::decompress(&data, max).map_err(ProtocolError::Decompress)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_round_trip_compressed_or_not_and_bombs_are_refused() {
        let text = b"the same line again\n".repeat(1000);
        let SyncMsg::Chunk { data, compressed, .. } = chunk(1, &text) else { panic!() };
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
        let SyncMsg::Chunk { data, compressed, .. } = chunk(1, &random) else { panic!() };
        assert!(!compressed);
        assert_eq!(unchunk(data, false).unwrap(), random);
        // A chunk that inflates past the chunk size is refused, not allocated.
        let bomb = zstd::bulk::compress(&vec![0u8; CHUNK_BYTES * 4], 1).unwrap();
        assert!(unchunk(bomb, true).is_err());
        let frame =
            encode(&SyncMsg::Open { tree: "vault".into(), since: None, wait: false, privileged: true })
                .unwrap();
        assert!(matches!(decode(Some(frame)).unwrap(), SyncMsg::Open { tree, .. } if tree == "vault"));
        assert!(matches!(decode(None), Err(ProtocolError::Closed)));
        assert!(decode(Some(Frame::new(SYNC_FRAME, vec![0xff; 3]))).is_err());
    }

    #[test]
    fn have_batches_are_bounded_by_count_and_bytes() {
        use crate::sync::entry::{EntryKind, Xattr};
        let plain = |i: usize| {
            Entry::new(RelName::new(format!("f{i}").as_bytes()).unwrap(), EntryKind::File, 1, 0, 0o644)
        };
        let many: Vec<Entry> = (0..HAVE_BATCH * 2 + 1).map(plain).collect();
        let sizes: Vec<usize> = have_batches(&many).iter().map(|b| b.len()).collect();
        assert_eq!(sizes, [HAVE_BATCH, HAVE_BATCH, 1]);
        let attrs = vec![Xattr { name: b"user.big".to_vec(), value: vec![0; 60_000] }];
        let heavy: Vec<Entry> = (0..200)
            .map(|i| {
                let mut e = plain(i);
                e.set_xattrs(attrs.clone());
                e
            })
            .collect();
        let batches = have_batches(&heavy);
        assert!(batches.len() >= 3, "{}", batches.len());
        for b in &batches {
            let bytes: usize = b.iter().map(entry_bytes).sum();
            assert!(bytes <= HAVE_BYTES, "{bytes}");
            let frame = encode(&SyncMsg::Have { entries: b.to_vec() }).unwrap();
            assert!(frame.body.len() <= HAVE_BYTES, "the estimate holds: {}", frame.body.len());
        }
        assert_eq!(batches.iter().map(|b| b.len()).sum::<usize>(), heavy.len());
        assert!(have_batches(&[]).is_empty());
    }
}
