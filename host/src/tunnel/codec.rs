//! The tunnel's frames on the peer link (kinds 64-68; the transport's ping uses 1-2, the
//! cluster 16-17, tree sync 32, the pair 48). A tunnel is one peer connection:
//!
//! ```text
//! entry -> exit   OPEN  version u8                      (first frame, once)
//! both ways       DATA  raw bytes of the stream
//!                 ZDATA the next piece of one zstd stream per direction (flushed: it decodes
//!                       to exactly the bytes the sender read)
//!                 EOF   this direction ends (the other may go on)
//!                 KEEPALIVE                             (nothing to send for a while)
//! ```
//! A refusal is a PostgreSQL `ErrorResponse` in DATA, then EOF: the client prints it.

use crate::peer::Frame;

pub const OPEN: u16 = 64;
pub const DATA: u16 = 65;
pub const ZDATA: u16 = 66;
pub const EOF: u16 = 67;
pub const KEEPALIVE: u16 = 68;

/// The tunnel protocol this build speaks.
pub const VERSION: u8 = 1;

/// Whether a first frame opens a tunnel (the daemon's dispatch).
pub fn is_open(frame: &Frame) -> bool {
    frame.kind == OPEN
}

pub fn open() -> Frame {
    Frame::new(OPEN, vec![VERSION])
}

/// Checks an OPEN frame's version.
pub fn check_open(frame: &Frame) -> Result<(), String> {
    match frame.body.as_slice() {
        [VERSION] => Ok(()),
        [v] => Err(format!("tunnel protocol version {v}; this host speaks {VERSION}: upgrade both hosts")),
        _ => Err("a malformed tunnel request".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_frames_carry_the_version() {
        assert!(is_open(&open()));
        check_open(&open()).unwrap();
        assert!(check_open(&Frame::new(OPEN, vec![9])).unwrap_err().contains("version 9"));
        assert!(check_open(&Frame::new(OPEN, vec![])).is_err());
    }
}
