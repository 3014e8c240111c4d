//! File metadata beyond mode and mtime, on both sides of a pass: which parts a pass keeps
//! ([`Keep`]), owner ids, and extended attributes (POSIX ACLs among them), read without
//! following links and set on the applier's temporary before it is renamed into place.
//!
//! Must never: follow a symlink (the `l*` calls act on a link itself, the `f*` calls on an open
//! descriptor), touch an attribute outside the namespaces the tree keeps (a standby's own
//! `security.selinux` label, say), or accept more attribute bytes than [`MAX_XATTR_BYTES`].

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use crate::sync::config::TreeMeta;
use crate::sync::entry::{Entry, NO_ID, Xattr};

/// Most bytes of attribute names and values one entry may carry (Linux's own cap on one
/// value, and far above what ext4 stores in an inode): more is refused where it is read, so
/// every message that carries entries stays far below a frame.
pub const MAX_XATTR_BYTES: usize = 64 << 10;
/// Longest attribute name Linux accepts (XATTR_NAME_MAX).
const MAX_XATTR_NAME: usize = 255;
/// Times a listing that changes size between two calls is read again.
const XATTR_ATTEMPTS: u32 = 4;
/// A first read of a list or value goes into a buffer this large, so the common small one
/// costs one system call instead of a size query and a read.
const FIRST_TRY: usize = 1024;

/// The ACL attributes (`acls`).
const ACL_NAMES: [&[u8]; 2] = [b"system.posix_acl_access", b"system.posix_acl_default"];
/// A host's own security label: set by its policy, never copied.
const SELINUX: &[u8] = b"security.selinux";

/// What one pass keeps of each entry besides kind, size, mode, mtime, links and content.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Keep {
    /// Owner and group ids (recorded at the source, applied by a standby that is root).
    pub owner: bool,
    /// `user.*` attributes, and `trusted.*`/`security.*` when `privileged`.
    pub xattrs: bool,
    /// The POSIX ACL attributes.
    pub acls: bool,
    /// The standby runs as root: it can set owners and the privileged namespaces.
    pub privileged: bool,
}

impl Keep {
    /// What a pass of a tree with `meta` keeps when the standby is root (`standby_root`) or not.
    pub fn for_pass(meta: TreeMeta, standby_root: bool) -> Keep {
        Keep {
            owner: meta.owner && standby_root,
            xattrs: meta.xattrs,
            acls: meta.acls,
            privileged: standby_root,
        }
    }

    /// What `rsync -a` keeps run by this process: owners when root, no attributes.
    pub fn rsync_a() -> Keep {
        Keep::for_pass(TreeMeta::default(), is_root())
    }

    /// True when attributes are read and applied at all.
    pub fn any_xattrs(&self) -> bool {
        self.xattrs || self.acls
    }

    /// True when attribute `name` is one this pass keeps.
    pub fn wants(&self, name: &[u8]) -> bool {
        if ACL_NAMES.contains(&name) {
            return self.acls;
        }
        if !self.xattrs {
            return false;
        }
        if name.starts_with(b"user.") {
            return true;
        }
        self.privileged
            && name != SELINUX
            && (name.starts_with(b"trusted.") || name.starts_with(b"security."))
    }

    /// Brings a freshly scanned entry to what this pass keeps: owner ids forgotten when owners
    /// are not kept.
    pub fn trim(&self, e: &mut Entry) {
        if !self.owner {
            e.clear_owner();
        }
    }
}

/// True when this process runs as root (and so may chown and set privileged attributes).
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

fn c_path(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes()).map_err(|_| io::ErrorKind::InvalidInput.into())
}

/// Where attribute calls act: a path's own entry (never followed) or an open descriptor.
#[derive(Clone, Copy)]
enum Target<'a> {
    Link(&'a CString),
    Fd(BorrowedFd<'a>),
}

impl Target<'_> {
    fn list(&self, buf: &mut [u8]) -> isize {
        let (ptr, len) = (buf.as_mut_ptr().cast::<libc::c_char>(), buf.len());
        // SAFETY: the path is NUL-terminated and the buffer valid for `len` bytes (a null
        // pointer with 0 asks for the size); the descriptor is open for the call.
        unsafe {
            match self {
                Target::Link(p) => libc::llistxattr(p.as_ptr(), ptr, len),
                Target::Fd(fd) => libc::flistxattr(fd.as_raw_fd(), ptr, len),
            }
        }
    }

    fn get(&self, name: &CString, buf: &mut [u8]) -> isize {
        let (ptr, len) = (buf.as_mut_ptr().cast::<libc::c_void>(), buf.len());
        // SAFETY: as in `list`; `name` is NUL-terminated.
        unsafe {
            match self {
                Target::Link(p) => libc::lgetxattr(p.as_ptr(), name.as_ptr(), ptr, len),
                Target::Fd(fd) => libc::fgetxattr(fd.as_raw_fd(), name.as_ptr(), ptr, len),
            }
        }
    }

    fn set(&self, name: &CString, value: &[u8]) -> io::Result<()> {
        let (ptr, len) = (value.as_ptr().cast::<libc::c_void>(), value.len());
        // SAFETY: as in `get`; the value is valid for `len` bytes.
        let rc = unsafe {
            match self {
                Target::Link(p) => libc::lsetxattr(p.as_ptr(), name.as_ptr(), ptr, len, 0),
                Target::Fd(fd) => libc::fsetxattr(fd.as_raw_fd(), name.as_ptr(), ptr, len, 0),
            }
        };
        if rc != 0 { Err(io::Error::last_os_error()) } else { Ok(()) }
    }

    fn remove(&self, name: &CString) -> io::Result<()> {
        // SAFETY: as in `get`.
        let rc = unsafe {
            match self {
                Target::Link(p) => libc::lremovexattr(p.as_ptr(), name.as_ptr()),
                Target::Fd(fd) => libc::fremovexattr(fd.as_raw_fd(), name.as_ptr()),
            }
        };
        match rc {
            0 => Ok(()),
            _ => match io::Error::last_os_error() {
                // Gone already: what was wanted.
                e if e.raw_os_error() == Some(libc::ENODATA) => Ok(()),
                e => Err(e),
            },
        }
    }

    /// The names of every attribute (empty when the filesystem has none or no support).
    fn names(&self) -> io::Result<Vec<Vec<u8>>> {
        let split =
            |buf: &[u8]| buf.split(|&b| b == 0).filter(|n| !n.is_empty()).map(<[u8]>::to_vec).collect();
        let mut first = [0u8; FIRST_TRY];
        let got = self.list(&mut first);
        if got >= 0 {
            return Ok(split(&first[..got as usize]));
        }
        match io::Error::last_os_error() {
            e if e.raw_os_error() == Some(libc::ENOTSUP) => return Ok(Vec::new()),
            e if e.raw_os_error() == Some(libc::ERANGE) => {}
            e => return Err(e),
        }
        for _ in 0..XATTR_ATTEMPTS {
            let size = self.list(&mut []);
            if size < 0 {
                return match io::Error::last_os_error() {
                    e if e.raw_os_error() == Some(libc::ENOTSUP) => Ok(Vec::new()),
                    e => Err(e),
                };
            }
            if size == 0 {
                return Ok(Vec::new());
            }
            let mut buf = vec![0u8; size as usize];
            let got = self.list(&mut buf);
            if got < 0 {
                match io::Error::last_os_error() {
                    // Grew between the two calls: ask again.
                    e if e.raw_os_error() == Some(libc::ERANGE) => continue,
                    e => return Err(e),
                }
            }
            buf.truncate(got as usize);
            return Ok(split(&buf));
        }
        Err(io::Error::other("the attribute list kept changing while read"))
    }

    /// One attribute's value; `None` when it went away since it was listed.
    fn value(&self, name: &[u8]) -> io::Result<Option<Vec<u8>>> {
        let c_name = CString::new(name).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        let mut first = [0u8; FIRST_TRY];
        let got = self.get(&c_name, &mut first);
        if got >= 0 {
            return Ok(Some(first[..got as usize].to_vec()));
        }
        match io::Error::last_os_error() {
            e if e.raw_os_error() == Some(libc::ENODATA) => return Ok(None),
            e if e.raw_os_error() == Some(libc::ERANGE) => {}
            e => return Err(e),
        }
        for _ in 0..XATTR_ATTEMPTS {
            let size = self.get(&c_name, &mut []);
            if size < 0 {
                return match io::Error::last_os_error() {
                    e if e.raw_os_error() == Some(libc::ENODATA) => Ok(None),
                    e => Err(e),
                };
            }
            let mut buf = vec![0u8; size as usize];
            let got = self.get(&c_name, &mut buf);
            if got < 0 {
                match io::Error::last_os_error() {
                    e if e.raw_os_error() == Some(libc::ERANGE) => continue,
                    e if e.raw_os_error() == Some(libc::ENODATA) => return Ok(None),
                    e => return Err(e),
                }
            }
            buf.truncate(got as usize);
            return Ok(Some(buf));
        }
        Err(io::Error::other("an attribute kept changing while read"))
    }

    /// The attributes `keep` wants, sorted by name, refused past [`MAX_XATTR_BYTES`].
    fn read(&self, keep: &Keep) -> io::Result<Vec<Xattr>> {
        let mut out = Vec::new();
        let mut total = 0usize;
        for name in self.names()?.into_iter().filter(|n| keep.wants(n)) {
            let Some(value) = self.value(&name)? else { continue };
            total += name.len() + value.len();
            if total > MAX_XATTR_BYTES {
                return Err(io::Error::other(format!(
                    "extended attributes larger than the {MAX_XATTR_BYTES}-byte limit per entry"
                )));
            }
            out.push(Xattr { name, value });
        }
        out.sort();
        Ok(out)
    }

    /// Makes the kept attributes exactly `wanted`: the others in kept namespaces are removed
    /// (an ACL inherited from the folder's default, an attribute removed at the source).
    fn apply(&self, wanted: &[Xattr], keep: &Keep) -> io::Result<()> {
        for name in self.names()? {
            if keep.wants(&name) && !wanted.iter().any(|x| x.name == name) {
                let c_name = CString::new(name).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
                self.remove(&c_name)?;
            }
        }
        for x in wanted {
            let c_name =
                CString::new(x.name.as_slice()).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
            self.set(&c_name, &x.value)?;
        }
        Ok(())
    }
}

/// The attributes `keep` wants of the entry at `path` itself (a symlink's own), sorted.
pub fn read_xattrs(path: &Path, keep: &Keep) -> io::Result<Vec<Xattr>> {
    if !keep.any_xattrs() {
        return Ok(Vec::new());
    }
    let c = c_path(path)?;
    Target::Link(&c).read(keep)
}

/// Gives the open file or folder `fd` exactly the kept attributes `wanted`.
pub fn apply_xattrs_fd(fd: BorrowedFd<'_>, wanted: &[Xattr], keep: &Keep) -> io::Result<()> {
    if !keep.any_xattrs() {
        return Ok(());
    }
    Target::Fd(fd).apply(wanted, keep)
}

/// Gives the entry at `path` itself (a symlink, never followed) exactly the kept attributes.
pub fn apply_xattrs_link(path: &Path, wanted: &[Xattr], keep: &Keep) -> io::Result<()> {
    if !keep.any_xattrs() {
        return Ok(());
    }
    let c = c_path(path)?;
    Target::Link(&c).apply(wanted, keep)
}

/// The check an applier makes of received attributes before it sets any: only kept
/// namespaces, names Linux accepts, and at most [`MAX_XATTR_BYTES`] in all.
pub fn check_xattrs(e: &Entry, keep: &Keep) -> Result<(), String> {
    if e.xattr_bytes() > MAX_XATTR_BYTES {
        return Err(format!("extended attributes larger than the {MAX_XATTR_BYTES}-byte limit per entry"));
    }
    for x in e.xattrs() {
        if x.name.is_empty() || x.name.len() > MAX_XATTR_NAME || x.name.contains(&0) {
            return Err("an extended attribute name Linux does not accept".into());
        }
        if !keep.wants(&x.name) {
            return Err(format!(
                "extended attribute {:?} is not one this tree keeps here",
                String::from_utf8_lossy(&x.name)
            ));
        }
    }
    Ok(())
}

/// Gives open file or folder `fd` the entry's owner and group, when `keep` says so.
pub fn chown_fd(fd: BorrowedFd<'_>, e: &Entry, keep: &Keep) -> io::Result<()> {
    if !keep.owner || e.owner_unknown() {
        return Ok(());
    }
    // SAFETY: the descriptor is open for the call; NO_ID is (uid_t)-1, "leave as is".
    let rc = unsafe { libc::fchown(fd.as_raw_fd(), e.uid, e.gid) };
    if rc != 0 { Err(io::Error::last_os_error()) } else { Ok(()) }
}

/// Gives the entry at `path` itself (a symlink, never followed) the entry's owner and group.
pub fn chown_link(path: &Path, e: &Entry, keep: &Keep) -> io::Result<()> {
    if !keep.owner || e.owner_unknown() {
        return Ok(());
    }
    let c = c_path(path)?;
    // SAFETY: `c` is NUL-terminated and alive for the call; lchown acts on the link itself.
    let rc = unsafe { libc::lchown(c.as_ptr(), e.uid, e.gid) };
    if rc != 0 { Err(io::Error::last_os_error()) } else { Ok(()) }
}

/// Gives the folder at `path` (opened without following a link) the owner and attributes of
/// entry `e`, as `keep` says; its mode and mtime are the caller's to set after.
pub fn set_dir_owner_xattrs(
    path: &Path,
    e: &Entry,
    keep: &Keep,
) -> Result<(), crate::sync::tree_error::TreeError> {
    use crate::sync::tree_error::TreeError;
    use std::os::fd::AsFd;
    use std::os::unix::fs::OpenOptionsExt;
    let dir = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_DIRECTORY)
        .open(path)
        .map_err(TreeError::io("open directory", path))?;
    chown_fd(dir.as_fd(), e, keep).map_err(TreeError::io("chown", path))?;
    apply_xattrs_fd(dir.as_fd(), e.xattrs(), keep).map_err(TreeError::io("set extended attributes", path))
}

/// True when the ids agree: equal, or either is not kept ([`NO_ID`]).
pub fn ids_agree(a: u32, b: u32) -> bool {
    a == b || a == NO_ID || b == NO_ID
}

#[cfg(test)]
mod tests {
    use std::os::fd::AsFd;

    use super::*;

    fn all() -> Keep {
        Keep { owner: true, xattrs: true, acls: true, privileged: true }
    }

    #[test]
    fn namespaces_follow_the_options() {
        let user_only = Keep { xattrs: true, ..Keep::default() };
        assert!(user_only.wants(b"user.a") && !user_only.wants(b"trusted.a"));
        assert!(!user_only.wants(b"system.posix_acl_access"));
        let acls = Keep { acls: true, ..Keep::default() };
        assert!(acls.wants(b"system.posix_acl_default") && !acls.wants(b"user.a"));
        assert!(all().wants(b"trusted.a") && all().wants(b"security.capability"));
        assert!(!all().wants(b"security.selinux"), "a host's own label is never copied");
        assert!(!all().wants(b"system.nfs4_acl"));
        let none = Keep::default();
        assert!(!none.any_xattrs() && !none.wants(b"user.a"));
    }

    #[test]
    fn attributes_round_trip_and_apply_sets_exactly_the_wanted_ones() {
        let t = tempfile::tempdir().unwrap();
        let (src, dst) = (t.path().join("src"), t.path().join("dst"));
        std::fs::write(&src, b"x").unwrap();
        std::fs::write(&dst, b"x").unwrap();
        let keep = Keep { xattrs: true, ..Keep::default() };
        let fd = std::fs::File::open(&src).unwrap();
        let wanted = vec![
            Xattr { name: b"user.b".to_vec(), value: b"".to_vec() },
            Xattr { name: b"user.a".to_vec(), value: vec![0, 1, 2, 255] },
        ];
        apply_xattrs_fd(fd.as_fd(), &wanted, &keep).unwrap();
        let read = read_xattrs(&src, &keep).unwrap();
        assert_eq!(read.iter().map(|x| x.name.as_slice()).collect::<Vec<_>>(), [&b"user.a"[..], b"user.b"]);
        assert_eq!(read[0].value, [0, 1, 2, 255]);
        // Applying a smaller set removes the rest.
        apply_xattrs_fd(fd.as_fd(), &read[1..], &keep).unwrap();
        assert_eq!(read_xattrs(&src, &keep).unwrap(), &read[1..]);
        assert!(read_xattrs(&src, &Keep::default()).unwrap().is_empty(), "not kept: not read");
        assert!(read_xattrs(&dst, &keep).unwrap().is_empty());
    }

    #[test]
    fn more_than_the_limit_is_refused_where_it_is_read_and_where_it_arrives() {
        // ext4 keeps an inode's attributes in one block (unless ea_inode is on); tmpfs (Linux
        // 6.6 on) holds more than the limit.
        let t = tempfile::tempdir_in("/dev/shm").unwrap();
        let f = t.path().join("f");
        std::fs::write(&f, b"x").unwrap();
        let keep = Keep { xattrs: true, ..Keep::default() };
        let big = vec![7u8; 4000];
        let fd = std::fs::File::open(&f).unwrap();
        for i in 0..20 {
            let c = CString::new(format!("user.k{i:02}")).unwrap();
            Target::Fd(fd.as_fd()).set(&c, &big).expect("tmpfs takes 80 KB of user attributes");
        }
        let err = read_xattrs(&f, &keep).unwrap_err().to_string();
        assert!(err.contains("65536-byte limit"), "{err}");
        let mut e = Entry::new(
            crate::sync::names::RelName::new(b"f").unwrap(),
            crate::sync::entry::EntryKind::File,
            1,
            0,
            0o644,
        );
        e.set_xattrs(
            (0..17).map(|i| Xattr { name: format!("user.{i}").into_bytes(), value: big.clone() }).collect(),
        );
        assert!(check_xattrs(&e, &keep).unwrap_err().contains("65536-byte limit"));
        e.set_xattrs(vec![Xattr { name: b"trusted.x".to_vec(), value: Vec::new() }]);
        assert!(check_xattrs(&e, &keep).unwrap_err().contains("not one this tree keeps"));
        e.set_xattrs(vec![Xattr { name: b"user.ok".to_vec(), value: Vec::new() }]);
        check_xattrs(&e, &keep).unwrap();
    }

    #[test]
    fn ids_not_kept_agree_with_any() {
        assert!(ids_agree(5, 5) && ids_agree(NO_ID, 5) && ids_agree(5, NO_ID));
        assert!(!ids_agree(5, 6));
    }
}
