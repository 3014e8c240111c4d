//! PostgreSQL's own `pg_receivewal` (libpq: SSLRequest, SCRAM, READ_REPLICATION_SLOT, `SHOW
//! wal_segment_size`, the copy ended at `--endpos`) against the walsender: the segment files it
//! writes hold exactly the archive's bytes.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use super::super::{SenderAuth, StandbyFeedback, WalSenderConfig};
use super::{Harness, SEG, append, wal};
use crate::wal::client::PgTime;
use crate::wal::client::tests::pg::{bin_dir, unavailable};
use crate::wal::lsn::Lsn;

const RUN_TIMEOUT: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pg_receivewal_writes_the_archives_bytes() {
    let _ = tracing_subscriber::fmt().with_test_writer().with_env_filter("tandem=debug").try_init();
    let Some(bin) = bin_dir().filter(|b| b.join("pg_receivewal").exists()) else {
        unavailable("no pg_receivewal");
        return;
    };
    let auth = SenderAuth::ScramSha256 { user: "receiver".into(), password: "pw".into() };
    let mut h = Harness::start(WalSenderConfig { auth, ..WalSenderConfig::for_test() }).await;
    let end = 3 * SEG + SEG / 2;
    append(&mut h.writer, 1, 0, SEG, end);
    // A standby reported WAL up to the first segment's start flushed: READ_REPLICATION_SLOT
    // gives pg_receivewal that as its start (with an empty folder it would start at the flush).
    h.ctx.feedback.send_replace(Some(StandbyFeedback {
        write: Lsn(SEG),
        flush: Lsn(SEG),
        apply: Lsn(SEG),
        reply_time: PgTime::now(),
        received_at: SystemTime::now(),
        application_name: "earlier".into(),
        streaming: false,
    }));

    let out = tempfile::tempdir().unwrap();
    let conninfo =
        format!("host=127.0.0.1 port={} user=receiver application_name=receivewal_test", h.addr.port());
    let mut child = Command::new(bin.join("pg_receivewal"))
        .args(["-d", &conninfo, "-D"])
        .arg(out.path())
        .args(["--slot=tandem", "--no-loop", "-w", "-v", &format!("--endpos={}", Lsn(end - 1))])
        .env("PGPASSWORD", "pw")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start pg_receivewal");
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > RUN_TIMEOUT {
            let _ = child.kill();
            let output = child.wait_with_output().unwrap();
            panic!(
                "pg_receivewal did not finish within {RUN_TIMEOUT:?}: {}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let output = child.wait_with_output().unwrap();
    let log = String::from_utf8_lossy(&output.stderr);
    assert!(status.success(), "pg_receivewal failed: {status}\n{log}");

    let read =
        |name: &str| std::fs::read(out.path().join(name)).unwrap_or_else(|e| panic!("{name}: {e}\n{log}"));
    for segno in 1..3u64 {
        let file = read(&format!("0000000100000000000000{segno:02X}"));
        assert!(file == wal(0, segno * SEG, SEG), "segment {segno} differs from the archive");
    }
    // pg_receivewal stops once past --endpos (it compares strictly), mid-segment: the last
    // segment is kept as .partial, zero-padded.
    let partial = read("000000010000000000000003.partial");
    assert_eq!(partial.len() as u64, SEG);
    assert!(partial[..(SEG / 2) as usize] == wal(0, 3 * SEG, SEG / 2)[..], "partial segment differs");
    assert!(partial[(SEG / 2) as usize..].iter().all(|&b| b == 0), "nothing past --endpos");
    h.stop().await;
}
