//! Benchmark: the peer transport's loopback throughput (authenticated, AES-GCM records) beside
//! plain TCP on the same loopback, with the process CPU time per GiB. Run with
//! `cargo bench -p tandem --bench peer_throughput`.

use std::time::{Duration, Instant};

use tandem::peer::{ClusterSecret, Frame, PeerConnection, PeerIdentity};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const TOTAL: usize = 4 << 30;
const RUNS: usize = 3;

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    println!("loopback transfer of {} GiB, best of {RUNS} runs, A and B interleaved\n", TOTAL >> 30);
    println!("{:<36} {:>10} {:>14}", "", "MB/s", "CPU s per GiB");
    for frame in [64 << 10, 1 << 20] {
        let mut tcp = Vec::new();
        let mut peer = Vec::new();
        for _ in 0..RUNS {
            tcp.push(measure(|| runtime.block_on(plain_tcp(frame))));
            peer.push(measure(|| runtime.block_on(peer_transport(frame))));
        }
        let best = |v: &[(Duration, Duration)]| *v.iter().min_by_key(|(wall, _)| *wall).unwrap();
        for (name, (wall, cpu)) in [
            (format!("plain TCP, {} KiB writes", frame >> 10), best(&tcp)),
            (format!("tandem peer, {} KiB frames", frame >> 10), best(&peer)),
        ] {
            let mbs = TOTAL as f64 / 1e6 / wall.as_secs_f64();
            let cpu_per_gib = cpu.as_secs_f64() / (TOTAL as f64 / (1u64 << 30) as f64);
            println!("{name:<36} {mbs:>10.0} {cpu_per_gib:>14.2}");
        }
    }
}

/// Wall time and process CPU time (user + system) of `f`.
fn measure(f: impl FnOnce()) -> (Duration, Duration) {
    let cpu0 = cpu_time();
    let start = Instant::now();
    f();
    (start.elapsed(), cpu_time() - cpu0)
}

fn cpu_time() -> Duration {
    // /proc/self/stat fields 14 and 15: utime and stime in clock ticks (100 per second here).
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    let fields: Vec<&str> = stat.rsplit(')').next().unwrap().split_whitespace().collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    Duration::from_millis(ticks * 10)
}

async fn plain_tcp(chunk: usize) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let reader = tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        let mut buf = vec![0u8; 256 << 10];
        let mut got = 0;
        while got < TOTAL {
            got += s.read(&mut buf).await.unwrap();
        }
    });
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.set_nodelay(true).unwrap();
    let data = vec![7u8; chunk];
    for _ in 0..TOTAL / chunk {
        s.write_all(&data).await.unwrap();
    }
    reader.await.unwrap();
}

async fn peer_transport(frame: usize) {
    let secret = ClusterSecret::from_text("benchmark cluster secret 0123456789").unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server_secret = secret.clone();
    let reader = tokio::spawn(async move {
        let (s, _) = listener.accept().await.unwrap();
        let mut conn =
            PeerConnection::accept(s, &server_secret, &PeerIdentity::new("rx"), 64 << 20).await.unwrap();
        let mut got = 0;
        while got < TOTAL {
            got += conn.read_frame().await.unwrap().unwrap().body.len();
        }
    });
    let mut conn = PeerConnection::connect(addr, &secret, &PeerIdentity::new("tx"), 64 << 20).await.unwrap();
    let data = Frame::new(3, vec![7u8; frame]);
    for _ in 0..TOTAL / frame {
        conn.write_frame(&data).await.unwrap();
    }
    reader.await.unwrap();
}
