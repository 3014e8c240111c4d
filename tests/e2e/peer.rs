//! The peer transport over real loopback sockets: the secret is proven both ways, bad frames
//! and strangers are refused with clear errors, large transfers arrive intact, and the accept
//! loop survives bad peers.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tandem::peer::{self, Acceptor, ClusterSecret, Frame, PeerConnection, PeerError, PeerIdentity};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

const MAX_FRAME: u64 = 64 << 20;

fn secret(text: &str) -> ClusterSecret {
    ClusterSecret::from_text(text).unwrap()
}

fn good() -> ClusterSecret {
    secret("the cluster secret, shared by every host")
}

/// Accepts one connection on a fresh listener with `server_secret`; the accept result.
async fn accept_one(
    server_secret: ClusterSecret,
    max_frame: u64,
) -> (SocketAddr, tokio::task::JoinHandle<Result<PeerConnection, PeerError>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let (stream, _) = listener.accept().await.unwrap();
        PeerConnection::accept(stream, &server_secret, &PeerIdentity::new("server"), max_frame).await
    });
    (addr, task)
}

/// The accept loop answering pings as the daemon does: its address, its shutdown, its task.
async fn serve_pings(
    handshake_timeout: Duration,
    max_connections: usize,
) -> (SocketAddr, CancellationToken, tokio::task::JoinHandle<()>) {
    serve_pings_with(handshake_timeout, peer::PeerConfig::default().max_handshakes, max_connections).await
}

/// [`serve_pings`] with a number of handshake slots.
async fn serve_pings_with(
    handshake_timeout: Duration,
    max_handshakes: usize,
    max_connections: usize,
) -> (SocketAddr, CancellationToken, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let acceptor = Acceptor {
        secret: good(),
        me: Arc::new(PeerIdentity::new("daemon")),
        max_frame: MAX_FRAME,
        handshake_timeout,
        max_handshakes,
        max_connections,
    };
    let shutdown = CancellationToken::new();
    let server = tokio::spawn(peer::serve(listener, acceptor, peer::ping::answer, shutdown.clone()));
    (addr, shutdown, server)
}

async fn connect(addr: SocketAddr, secret: &ClusterSecret) -> Result<PeerConnection, PeerError> {
    PeerConnection::connect(addr, secret, &PeerIdentity::new("client"), MAX_FRAME).await
}

#[tokio::test]
async fn peers_with_the_same_secret_learn_each_others_names() {
    let (addr, server) = accept_one(good(), MAX_FRAME).await;
    let client = connect(addr, &good()).await.unwrap();
    let server = server.await.unwrap().unwrap();
    assert_eq!(client.peer.node, "server");
    assert_eq!(server.peer.node, "client");
}

#[tokio::test]
async fn a_client_with_a_wrong_secret_is_refused_and_told_why() {
    let (addr, server) = accept_one(good(), MAX_FRAME).await;
    let client = connect(addr, &secret("a different secret entirely")).await;
    assert!(matches!(client, Err(PeerError::RefusedBySecret)), "{:?}", client.err());
    assert!(matches!(server.await.unwrap(), Err(PeerError::BadSecret)));
}

#[tokio::test]
async fn a_server_with_a_wrong_secret_is_refused_by_the_client() {
    // The impostor listens where the client expects its peer; it does not know the secret.
    let (addr, impostor) = accept_one(secret("an impostor's guess at it"), MAX_FRAME).await;
    let client = connect(addr, &good()).await;
    assert!(client.is_err(), "the client must not talk to an impostor");
    assert!(matches!(impostor.await.unwrap(), Err(PeerError::BadSecret)), "no payload reached the impostor");
}

#[tokio::test]
async fn a_stranger_speaking_another_protocol_is_refused() {
    let (addr, server) = accept_one(good(), MAX_FRAME).await;
    let mut raw = TcpStream::connect(addr).await.unwrap();
    raw.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    assert!(matches!(server.await.unwrap(), Err(PeerError::NotTandem)));
}

#[tokio::test]
async fn another_protocol_version_is_refused_naming_both() {
    let (addr, server) = accept_one(good(), MAX_FRAME).await;
    let mut raw = TcpStream::connect(addr).await.unwrap();
    raw.write_all(b"TNDM\x00\x09\x00\x00").await.unwrap();
    let got = server.await.unwrap();
    assert!(matches!(got, Err(PeerError::Version { ours: 1, theirs: 9 })), "{:?}", got.err());
}

#[tokio::test]
async fn garbage_after_the_greeting_fails_authentication() {
    let (addr, server) = accept_one(good(), MAX_FRAME).await;
    let mut raw = TcpStream::connect(addr).await.unwrap();
    raw.write_all(b"TNDM\x00\x01\x00\x00\x00\x30").await.unwrap();
    raw.write_all(&[0x5a; 0x30]).await.unwrap();
    assert!(matches!(server.await.unwrap(), Err(PeerError::BadSecret)));
    // and the server told us so with an empty record after its greeting
    let mut reply = Vec::new();
    raw.read_to_end(&mut reply).await.unwrap();
    assert_eq!(&reply[8..], [0, 0]);
}

#[tokio::test]
async fn a_process_never_talks_to_itself() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let me = Arc::new(PeerIdentity::new("same"));
    let me2 = me.clone();
    let server = tokio::spawn(async move {
        let (stream, _) = listener.accept().await.unwrap();
        PeerConnection::accept(stream, &good(), &me2, MAX_FRAME).await
    });
    let client = PeerConnection::connect(addr, &good(), &me, MAX_FRAME).await;
    assert!(matches!(server.await.unwrap(), Err(PeerError::SelfConnection)));
    assert!(client.is_err());
}

#[tokio::test]
async fn a_large_transfer_round_trips_intact() {
    let (addr, server) = accept_one(good(), MAX_FRAME).await;
    let mut client = connect(addr, &good()).await.unwrap();
    let mut server = server.await.unwrap().unwrap();
    // Bodies from empty to 48 MiB, none a multiple of the record size.
    let sizes = [0usize, 1, 65_511, 65_519, 65_520, 1 << 20, 48 << 20];
    let bodies: Vec<Vec<u8>> = sizes
        .iter()
        .enumerate()
        .map(|(i, &n)| (0..n).map(|j| (j.wrapping_mul(31) ^ i) as u8).collect())
        .collect();
    let expected: Vec<_> = bodies.iter().map(|b| blake3::hash(b)).collect();
    let sender = tokio::spawn(async move {
        for (i, body) in bodies.into_iter().enumerate() {
            client.write_frame(&Frame::new(i as u16 + 100, body)).await.unwrap();
        }
        client.writer.shutdown().await.unwrap();
    });
    for (i, hash) in expected.iter().enumerate() {
        let frame = server.read_frame().await.unwrap().expect("a frame");
        assert_eq!(frame.kind, i as u16 + 100);
        assert_eq!(frame.body.len(), sizes[i]);
        assert_eq!(blake3::hash(&frame.body), *hash, "frame {i} arrived altered");
    }
    assert!(server.read_frame().await.unwrap().is_none(), "clean end after the last frame");
    sender.await.unwrap();
}

#[tokio::test]
async fn an_oversized_frame_is_refused_before_it_is_read() {
    let (addr, server) = accept_one(good(), 4096).await;
    let mut client = connect(addr, &good()).await.unwrap();
    let mut server = server.await.unwrap().unwrap();
    client.write_frame(&Frame::new(7, vec![1u8; 4096])).await.unwrap();
    client.write_frame(&Frame::new(7, vec![1u8; 4097])).await.unwrap();
    assert_eq!(server.read_frame().await.unwrap().unwrap().body.len(), 4096, "at the limit is fine");
    let got = server.read_frame().await;
    assert!(matches!(got, Err(PeerError::Oversized { len: 4097, max: 4096 })), "{got:?}");
}

#[tokio::test]
async fn a_truncated_frame_is_an_error_not_a_short_frame() {
    let (addr, server) = accept_one(good(), MAX_FRAME).await;
    let mut client = connect(addr, &good()).await.unwrap();
    let mut server = server.await.unwrap().unwrap();
    let mut sealed = Vec::new();
    client.writer.seal(&Frame::new(9, vec![3u8; 200_000]), &mut sealed).unwrap();
    client.writer.write_raw(&sealed[..sealed.len() / 2]).await.unwrap();
    client.writer.shutdown().await.unwrap();
    let got = server.read_frame().await;
    assert!(matches!(got, Err(PeerError::Truncated(_))), "{got:?}");
}

#[tokio::test]
async fn an_altered_record_fails_the_integrity_check() {
    let (addr, server) = accept_one(good(), MAX_FRAME).await;
    let mut client = connect(addr, &good()).await.unwrap();
    let mut server = server.await.unwrap().unwrap();
    let mut sealed = Vec::new();
    client.writer.seal(&Frame::new(9, b"transfer 10 to alice".to_vec()), &mut sealed).unwrap();
    sealed[12] ^= 0x01;
    client.writer.write_raw(&sealed).await.unwrap();
    let got = server.read_frame().await;
    assert!(matches!(got, Err(PeerError::Integrity)), "{got:?}");
}

/// Relays an honest connection to `addr` and returns what the initiator sent first: its
/// greeting and first handshake message, as someone on the path without the secret sees them.
async fn record_first_message(addr: SocketAddr) -> Vec<u8> {
    let relay = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let relay_addr = relay.local_addr().unwrap();
    let honest = tokio::spawn(async move { connect(relay_addr, &good()).await });
    let (from_client, _) = relay.accept().await.unwrap();
    let to_server = TcpStream::connect(addr).await.unwrap();
    let (mut cr, mut cw) = from_client.into_split();
    let (mut sr, mut sw) = to_server.into_split();
    // The copies run until the sockets close; they are never cut short mid-handshake.
    tokio::spawn(async move { tokio::io::copy(&mut sr, &mut cw).await });
    let mut first = vec![0u8; 8 + 2];
    cr.read_exact(&mut first).await.unwrap();
    let len = u16::from_be_bytes([first[8], first[9]]) as usize;
    first.resize(10 + len, 0);
    cr.read_exact(&mut first[10..]).await.unwrap();
    sw.write_all(&first).await.unwrap();
    tokio::spawn(async move { tokio::io::copy(&mut cr, &mut sw).await });
    honest.await.unwrap().unwrap();
    first
}

#[tokio::test]
async fn a_replayed_first_message_is_not_a_connection() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        let mut results = Vec::new();
        for _ in 0..2 {
            let (stream, _) = listener.accept().await.unwrap();
            results
                .push(PeerConnection::accept(stream, &good(), &PeerIdentity::new("server"), MAX_FRAME).await);
        }
        results
    });
    // An honest connection, recorded on the wire by someone without the secret...
    let recorded = record_first_message(addr).await;
    // ... who then replays the greeting and first message, and cannot go on.
    let mut replay = TcpStream::connect(addr).await.unwrap();
    replay.write_all(&recorded).await.unwrap();
    let mut reply = vec![0u8; 8 + 2];
    replay.read_exact(&mut reply).await.unwrap();
    let len = u16::from_be_bytes([reply[8], reply[9]]) as usize;
    let mut second = vec![0u8; len];
    replay.read_exact(&mut second).await.unwrap();
    // A guess at the confirmation record fails.
    replay.write_all(&[0, 40]).await.unwrap();
    replay.write_all(&[0x11; 40]).await.unwrap();
    let results = server.await.unwrap();
    assert!(results[0].is_ok(), "the honest connection");
    assert!(matches!(results[1], Err(PeerError::BadSecret)), "the replay: {:?}", results[1].as_ref().err());
}

#[tokio::test]
async fn a_read_cancelled_midway_fails_cleanly_afterwards() {
    let (addr, server) = accept_one(good(), MAX_FRAME).await;
    let mut client = connect(addr, &good()).await.unwrap();
    let mut server = server.await.unwrap().unwrap();
    let mut sealed = Vec::new();
    client.writer.seal(&Frame::new(9, vec![5u8; 100_000]), &mut sealed).unwrap();
    client.writer.write_raw(&sealed[..50_000]).await.unwrap();
    let cancelled = tokio::time::timeout(Duration::from_millis(200), server.read_frame()).await;
    assert!(cancelled.is_err(), "the read was waiting for the rest");
    client.writer.write_raw(&sealed[50_000..]).await.unwrap();
    // The stream is now mid-frame from the reader's view. Depending on how much the cancelled
    // read had taken in, the reader either fails at once or waits for bytes that never come;
    // once the peer hangs up, it must fail: never a panic, never a frame made of the pieces.
    drop(client);
    let again =
        tokio::time::timeout(Duration::from_secs(5), server.read_frame()).await.expect("the read ended");
    assert!(again.is_err(), "{again:?}");
}

#[tokio::test]
async fn shutdown_is_not_held_up_by_a_peer_that_stops_reading() {
    let (addr, shutdown, server) = serve_pings(Duration::from_millis(300), 16).await;
    let mut client = connect(addr, &good()).await.unwrap();
    // Big pings, never reading a pong: the daemon's pong writes fill the socket buffers, and
    // then our own writes block too, so they run in a task of their own.
    let pinger = tokio::spawn(async move {
        for _ in 0..8 {
            if client.write_frame(&Frame::new(peer::ping::PING, vec![0u8; 8 << 20])).await.is_err() {
                break;
            }
        }
        client
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(5), server).await.expect("serve stopped").unwrap();
    pinger.abort();
}

#[tokio::test]
async fn connections_past_the_limit_are_closed_on_arrival() {
    let (addr, shutdown, server) = serve_pings(Duration::from_secs(5), 2).await;
    let _held_a = connect(addr, &good()).await.unwrap();
    let _held_b = connect(addr, &good()).await.unwrap();
    let third = connect(addr, &good()).await;
    assert!(third.is_err(), "a third connection must be refused while two are held");
    drop(_held_a);
    let mut fourth = false;
    for _ in 0..50 {
        if connect(addr, &good()).await.is_ok() {
            fourth = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(fourth, "a slot frees up when a connection ends");
    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(5), server).await.expect("serve stopped").unwrap();
}

#[tokio::test]
async fn handshake_slots_go_to_the_connection_that_showed_most() {
    let (addr, shutdown, server) = serve_pings_with(Duration::from_secs(30), 2, 16).await;
    // Two silent sockets take both handshake slots...
    let mut silent_a = TcpStream::connect(addr).await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let mut silent_b = TcpStream::connect(addr).await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    // ... a genuine peer evicts the older one and is served.
    let mut peer_conn = connect(addr, &good()).await.unwrap();
    // (each got the daemon's greeting, then the end of the stream)
    let mut seen = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(5), silent_a.read_to_end(&mut seen)).await;
    assert!(closed.is_ok(), "the oldest silent socket was not closed");
    // The peer left the handshake slots; two more silent sockets fill them again, and the
    // second evicts the oldest, while the peer's authenticated connection is not touched.
    let _silent_c = TcpStream::connect(addr).await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let _silent_d = TcpStream::connect(addr).await.unwrap();
    let closed = tokio::time::timeout(Duration::from_secs(5), silent_b.read_to_end(&mut seen)).await;
    assert!(closed.is_ok(), "the other silent socket was not closed");
    peer_conn.write_frame(&Frame::new(peer::ping::PING, b"still here".to_vec())).await.unwrap();
    assert_eq!(peer_conn.read_frame().await.unwrap().unwrap().body, b"still here");
    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(5), server).await.expect("serve stopped").unwrap();
}

#[tokio::test]
async fn a_dialler_gives_up_on_a_silent_listener() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let me = PeerIdentity::new("client");
    let got = peer::ping::ping(addr, &good(), &me, MAX_FRAME, Duration::from_millis(200)).await;
    assert!(matches!(got, Err(PeerError::HandshakeTimeout(200))), "{got:?}");
    drop(listener);
}

#[tokio::test]
async fn the_accept_loop_survives_bad_peers_and_answers_pings() {
    let (addr, shutdown, server) = serve_pings(Duration::from_millis(300), 16).await;
    // A silent peer (times out), a stranger, a wrong secret...
    let _silent = TcpStream::connect(addr).await.unwrap();
    let mut stranger = TcpStream::connect(addr).await.unwrap();
    stranger.write_all(b"\x16\x03\x01 hello").await.unwrap();
    assert!(connect(addr, &secret("not the right secret at all")).await.is_err());
    // ... and the loop still serves a good peer.
    let me = PeerIdentity::new("client");
    let report = peer::ping::ping(addr, &good(), &me, MAX_FRAME, Duration::from_secs(5)).await.unwrap();
    assert_eq!(report.node, "daemon");
    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(5), server).await.expect("serve stops on shutdown").unwrap();
}

mod properties {
    //! Framing under arbitrary input: frames written in arbitrary pieces arrive whole, and
    //! arbitrary bytes from an authenticated peer end in an error, never a panic or a hang.

    use proptest::prelude::*;

    use super::*;

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
    }

    async fn pair() -> (PeerConnection, PeerConnection) {
        let (addr, server) = accept_one(good(), MAX_FRAME).await;
        let client = connect(addr, &good()).await.unwrap();
        (client, server.await.unwrap().unwrap())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        #[test]
        fn frames_cut_into_arbitrary_pieces_arrive_whole(
            sizes in prop::collection::vec(0usize..200_000, 1..6),
            cuts in prop::collection::vec(1usize..70_000, 1..20),
        ) {
            runtime().block_on(async {
                let (mut client, mut server) = pair().await;
                let frames: Vec<Frame> = sizes
                    .iter()
                    .enumerate()
                    .map(|(i, &n)| Frame::new(i as u16, (0..n).map(|j| (j * 7 + i) as u8).collect::<Vec<u8>>()))
                    .collect();
                let mut wire = Vec::new();
                for f in &frames {
                    client.writer.seal(f, &mut wire).unwrap();
                }
                let writer = tokio::spawn(async move {
                    let mut rest = &wire[..];
                    for cut in cuts.iter().cycle() {
                        if rest.is_empty() {
                            break;
                        }
                        let n = (*cut).min(rest.len());
                        client.writer.write_raw(&rest[..n]).await.unwrap();
                        tokio::task::yield_now().await;
                        rest = &rest[n..];
                    }
                    client.writer.shutdown().await.unwrap();
                });
                for f in &frames {
                    assert_eq!(server.read_frame().await.unwrap().as_ref(), Some(f));
                }
                assert!(server.read_frame().await.unwrap().is_none());
                writer.await.unwrap();
            });
        }

        #[test]
        fn arbitrary_bytes_from_a_peer_are_an_error_not_a_panic(
            junk in prop::collection::vec(any::<u8>(), 0..300_000),
        ) {
            runtime().block_on(async {
                let (mut client, mut server) = pair().await;
                client.writer.write_raw(&junk).await.unwrap();
                client.writer.shutdown().await.unwrap();
                let got = tokio::time::timeout(Duration::from_secs(10), server.read_frame())
                    .await
                    .expect("the reader must not hang on a closed stream");
                match got {
                    Ok(None) => assert!(junk.is_empty(), "only an empty stream ends cleanly"),
                    Ok(Some(_)) => panic!("random bytes passed the integrity check"),
                    Err(PeerError::Integrity | PeerError::Truncated(_) | PeerError::Malformed(_)) => {}
                    Err(other) => panic!("unexpected error {other}"),
                }
            });
        }
    }
}
