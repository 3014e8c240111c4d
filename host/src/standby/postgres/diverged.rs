//! Keeping what an old primary wrote after its pair moved on. Before `pg_rewind` turns the old
//! primary's data folder into a copy of the new primary's, the WAL it wrote past the point
//! where the new primary's timeline forked off is copied aside. Transactions that only the old
//! primary saw (a forced convert, a split brain) can then still be read with `pg_waldump` or
//! replayed into a copy of the old database.
//!
//! Must never: let a rewind run after that WAL could not be kept (the rewind destroys the only
//! copy), write into the data folder other than by PostgreSQL's own crash recovery, or start
//! the old primary where clients could reach it (crash recovery runs in single-user mode).

use std::fs::{self, File};
use std::io;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use super::{LocalPg, PgError};
use crate::wal::base_backup::Endpoint;
use crate::wal::lsn::{Lsn, TimeLineId, WalFileName, WalSegmentSize};

/// Where the old primary's history left the new primary's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Divergence {
    pub lsn: Lsn,
    /// The old primary's timeline at that point.
    pub timeline: TimeLineId,
}

/// The WAL kept aside before a rewind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeptWal {
    pub dir: PathBuf,
    pub files: usize,
    pub bytes: u64,
    pub divergence: Divergence,
}

/// What `pg_rewind --dry-run` said: `None` when no rewind is needed, else where the servers
/// diverged. Pure, for tests.
pub fn parse_dry_run(output: &str) -> Result<Option<Divergence>, String> {
    const DIVERGED: &str = "servers diverged at WAL location ";
    if output.contains("no rewind required") {
        return Ok(None);
    }
    let Some(at) = output.find(DIVERGED) else {
        return Err(format!("pg_rewind --dry-run did not say where the servers diverged: {}", output.trim()));
    };
    let rest = &output[at + DIVERGED.len()..];
    let mut words = rest.split_whitespace();
    let bad = || format!("unexpected pg_rewind output: {}", rest.lines().next().unwrap_or("").trim());
    let lsn: Lsn = words.next().ok_or_else(bad)?.parse().map_err(|_| bad())?;
    if (words.next(), words.next()) != (Some("on"), Some("timeline")) {
        return Err(bad());
    }
    let timeline = words.next().ok_or_else(bad)?.trim_end_matches('.').parse().map_err(|_| bad())?;
    Ok(Some(Divergence { lsn, timeline }))
}

impl LocalPg {
    /// Where this stopped cluster's history left `source`'s (the new primary), as
    /// `pg_rewind --dry-run` finds it; `None` when no rewind is needed. A cluster that was not
    /// shut down cleanly first finishes its crash recovery in single-user mode, as pg_rewind
    /// itself would (its dry run skips that step and then refuses the cluster).
    pub fn divergence(&self, source: &Endpoint) -> Result<Option<Divergence>, PgError> {
        if !self.cleanly_shut_down()? {
            self.finish_crash_recovery()?;
        }
        let cmd = self.rewind_command(source, true)?;
        let out = self.run("pg_rewind", "dry run", cmd)?;
        let text =
            format!("{}{}", String::from_utf8_lossy(&out.stderr), String::from_utf8_lossy(&out.stdout));
        parse_dry_run(&text).map_err(|detail| PgError::Failed {
            program: "pg_rewind",
            action: "dry run",
            status: out.status.to_string(),
            detail,
        })
    }

    /// Copies the WAL segments of `d.timeline` from the one holding `d.lsn` on into a new
    /// folder under `under` (named after the time, the timeline and the LSN), each file and
    /// the folder made durable, with a `README.txt` saying what they are.
    pub fn keep_wal_after(&self, d: Divergence, under: &Path, now_secs: u64) -> Result<KeptWal, PgError> {
        let wal_dir = self.data_dir.join("pg_wal");
        let io = |what: &'static str, path: &Path| {
            let path = path.to_path_buf();
            move |source: io::Error| PgError::Io { what, path, source }
        };
        let mut kept: Vec<(PathBuf, String)> = Vec::new();
        for item in fs::read_dir(&wal_dir).map_err(io("listing", &wal_dir))? {
            let item = item.map_err(io("listing", &wal_dir))?;
            let Some(name) = item.file_name().to_str().map(str::to_owned) else { continue };
            let meta = item.metadata().map_err(io("reading", &item.path()))?;
            if !meta.is_file() {
                continue;
            }
            // Timeline histories, whatever their size; segments are exactly the segment size.
            if name.ends_with(".history") {
                kept.push((item.path(), name));
                continue;
            }
            let Ok(size) = WalSegmentSize::new(meta.len()) else { continue };
            if let Some(WalFileName::Segment { timeline, segno, .. }) = size.parse_name(&name)
                && timeline == d.timeline
                && segno >= size.segno(d.lsn)
                && holds_its_own_wal(&item.path(), size.start(segno))
            {
                kept.push((item.path(), name));
            }
        }
        kept.sort_by(|a, b| a.1.cmp(&b.1));
        let lsn = d.lsn.to_string().replace('/', "-");
        let dir = under.join(format!("{now_secs}-timeline-{}-from-{lsn}", d.timeline));
        fs::DirBuilder::new().recursive(true).mode(0o700).create(&dir).map_err(io("creating", &dir))?;
        let mut bytes = 0;
        for (from, name) in &kept {
            let to = dir.join(name);
            bytes += fs::copy(from, &to).map_err(io("copying WAL to", &to))?;
            File::open(&to).and_then(|f| f.sync_all()).map_err(io("syncing", &to))?;
        }
        let readme = dir.join("README.txt");
        fs::write(&readme, readme_text(d, &self.data_dir)).map_err(io("writing", &readme))?;
        File::open(&readme).and_then(|f| f.sync_all()).map_err(io("syncing", &readme))?;
        for folder in [dir.as_path(), under] {
            File::open(folder).and_then(|f| f.sync_all()).map_err(io("syncing", folder))?;
        }
        let files = kept.iter().filter(|(_, n)| !n.ends_with(".history")).count();
        tracing::warn!(dir = %dir.display(), files, bytes, divergence = %d.lsn, timeline = d.timeline,
            "kept the WAL the old primary wrote after the new primary's timeline forked off");
        Ok(KeptWal { dir, files, bytes, divergence: d })
    }

    /// `pg_controldata` says "shut down" or "shut down in recovery".
    fn cleanly_shut_down(&self) -> Result<bool, PgError> {
        let text = self.controldata()?;
        let state = super::fence::field(&text, "Database cluster state:");
        Ok(state == "shut down" || state == "shut down in recovery")
    }

    /// `postgres --single`: crash recovery to the end of the local WAL, then a clean shutdown,
    /// with no listener (nobody can connect meanwhile).
    ///
    /// A fenced old primary's `standby.signal` (single-user mode refuses standby mode) is set
    /// aside for that run and put back after it, whatever it did: nobody can connect meanwhile.
    fn finish_crash_recovery(&self) -> Result<(), PgError> {
        let signal = self.data_dir.join("standby.signal");
        let aside = self.data_dir.join("standby.signal.tandem-crash-recovery");
        let moved = signal.exists();
        if moved {
            fs::rename(&signal, &aside).map_err(|source| PgError::Io {
                what: "setting aside for single-user crash recovery",
                path: signal.clone(),
                source,
            })?;
        }
        let mut cmd = self.command("postgres")?;
        cmd.arg("--single").arg("-D").arg(&self.data_dir).arg("template1").stdin(Stdio::null());
        tracing::info!(data = %self.data_dir.display(), "crash recovery in single-user mode before pg_rewind");
        let ran = self.run("postgres", "single-user crash recovery", cmd).map(drop);
        if moved {
            fs::rename(&aside, &signal).map_err(|source| PgError::Io {
                what: "putting back after single-user crash recovery",
                path: signal,
                source,
            })?;
        }
        ran
    }
}

/// Whether the segment file at `path` was written as the segment starting at `start`: its
/// first page header's address says so. PostgreSQL renames old segments to future names for
/// reuse ("recycled"); those still carry their old address (or zeros) and hold nothing of the
/// fork, so they are not worth a copy.
fn holds_its_own_wal(path: &Path, start: Lsn) -> bool {
    use std::io::Read;
    // XLogPageHeaderData: magic u16, info u16, timeline u32, page address u64 (host order).
    let mut header = [0u8; 16];
    let read = File::open(path).and_then(|mut f| f.read_exact(&mut header));
    read.is_ok() && u64::from_ne_bytes(header[8..16].try_into().expect("8 bytes")) == start.0
}

fn readme_text(d: Divergence, data_dir: &Path) -> String {
    format!(
        "WAL written by the PostgreSQL in {data} after its pair's new primary took over.\n\
         \n\
         tandem copied these files before `pg_rewind` made that data folder a copy of the new\n\
         primary's. The two histories forked at {lsn} on timeline {tli}: records from there on\n\
         exist only here. Read them with\n\
         \n\
         pg_waldump --path . --timeline {tli} --start {lsn}\n\
         \n\
         or replay them into a copy of the old database (restore a backup from before the fork,\n\
         then recover with restore_command copying from this folder, recovery_target_timeline =\n\
         {tli}). pg_waldump stops at the end of valid WAL; PostgreSQL's recycled segment files\n\
         (old WAL under future names) were left out.\n",
        data = data_dir.display(),
        lsn = d.lsn,
        tli = d.timeline,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_dry_run_says_where_the_servers_diverged() {
        let out = "pg_rewind: servers diverged at WAL location 0/3000060 on timeline 1\n\
                   pg_rewind: rewinding from last common checkpoint at 0/2000060 on timeline 1\n\
                   pg_rewind: Done!\n";
        assert_eq!(parse_dry_run(out), Ok(Some(Divergence { lsn: Lsn(0x300_0060), timeline: 1 })));
        let out = "pg_rewind: servers diverged at WAL location 1A/FF000028 on timeline 12\n\
                   pg_rewind: no rewind required\n";
        assert_eq!(parse_dry_run(out), Ok(None));
    }

    /// A 1 MiB segment file whose first page header names `addr`.
    fn segment(dir: &Path, name: &str, addr: u64) {
        let mut data = vec![0u8; 1 << 20];
        data[8..16].copy_from_slice(&addr.to_ne_bytes());
        fs::write(dir.join(name), data).unwrap();
    }

    #[test]
    fn only_the_old_timelines_written_segments_from_the_fork_on_are_kept() {
        let data = tempfile::tempdir().unwrap();
        let wal = data.path().join("pg_wal");
        fs::create_dir_all(wal.join("archive_status")).unwrap();
        let mib = 1u64 << 20;
        segment(&wal, "000000010000000000000002", 2 * mib); // before the fork
        segment(&wal, "000000010000000000000003", 3 * mib); // holds the fork
        segment(&wal, "000000010000000000000004", 4 * mib); // after it
        segment(&wal, "000000010000000000000005", 2 * mib); // recycled: an old segment renamed
        segment(&wal, "000000010000000000000006", 0); // preallocated, never written
        segment(&wal, "000000020000000000000004", 4 * mib); // another timeline
        let history = "1\t0/300100\tno recovery target specified\n";
        fs::write(wal.join("00000002.history"), history).unwrap();
        fs::write(wal.join("000000010000000000000007"), b"short").unwrap(); // not a segment
        let pg = LocalPg {
            bin_dir: PathBuf::from("/nonexistent"),
            data_dir: data.path().to_path_buf(),
            port: 5432,
            socket_dir: PathBuf::from("/tmp"),
            os_user: None,
            superuser: "postgres".into(),
            log_file: PathBuf::from("/dev/null"),
        };
        let aside = tempfile::tempdir().unwrap();
        let fork = Divergence { lsn: Lsn(3 * mib + 0x100), timeline: 1 };
        let kept = pg.keep_wal_after(fork, aside.path(), 42).unwrap();
        assert_eq!(kept.dir, aside.path().join("42-timeline-1-from-0-300100"));
        let mut names: Vec<String> =
            fs::read_dir(&kept.dir).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
        names.sort();
        assert_eq!(
            names,
            ["000000010000000000000003", "000000010000000000000004", "00000002.history", "README.txt"]
        );
        assert_eq!((kept.files, kept.bytes), (2, 2 * mib + history.len() as u64), "{kept:?}");
        assert_eq!(
            fs::read(kept.dir.join("000000010000000000000004")).unwrap(),
            fs::read(wal.join("000000010000000000000004")).unwrap()
        );
        let readme = fs::read_to_string(kept.dir.join("README.txt")).unwrap();
        assert!(readme.contains("--timeline 1 --start 0/300100"), "{readme}");
    }

    #[test]
    fn anything_else_is_an_error_not_a_guess() {
        for out in [
            "",
            "pg_rewind: fatal: could not connect to server",
            "pg_rewind: servers diverged at WAL location zzz on timeline 1",
            "pg_rewind: servers diverged at WAL location 0/3000060 in timeline 1",
            "pg_rewind: servers diverged at WAL location 0/3000060 on timeline x",
            "pg_rewind: servers diverged at WAL location 0/3000060",
        ] {
            assert!(parse_dry_run(out).is_err(), "{out:?}");
        }
    }
}
