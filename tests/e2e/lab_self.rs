//! The network lab itself: hosts reach each other by address, a rate limit limits, a cut cuts
//! and a heal heals, the delay relay delays, and everything is gone after the drop.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

use crate::lab::{Lab, in_netns};

/// Sends `bytes` from host `from` to a listener on host `to`; how long until all arrived.
fn transfer(lab: &Lab, from: &str, to: &str, bytes: usize) -> Result<Duration, String> {
    let ip = lab.host(to).ip.clone();
    let listener = in_netns(&lab.host(to).ns, move || TcpListener::bind((ip.as_str(), 0)).unwrap());
    let addr = listener.local_addr().unwrap();
    let reader = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let mut buf = vec![0u8; 1 << 16];
        let mut got = 0;
        while got < bytes {
            match s.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => got += n,
            }
        }
        got
    });
    let started = Instant::now();
    in_netns(&lab.host(from).ns, move || {
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).map_err(|e| e.to_string())?;
        s.set_write_timeout(Some(Duration::from_secs(3))).unwrap();
        s.write_all(&vec![7u8; bytes]).map_err(|e| e.to_string())
    })?;
    let got = reader.join().unwrap();
    if got < bytes {
        return Err(format!("{got} of {bytes} bytes arrived"));
    }
    Ok(started.elapsed())
}

#[test]
fn the_lab_links_limits_cuts_heals_and_delays() {
    let Some(mut lab) = Lab::new(&["x", "y"]) else { return };
    let names = [lab.host("x").ns.clone(), lab.host("y").ns.clone()];
    let fast = transfer(&lab, "x", "y", 4 << 20).expect("hosts reach each other");

    // 20 Mbit/s: 4 MiB take at least ~1.6 s.
    lab.limit("x", 20);
    let slow = transfer(&lab, "x", "y", 4 << 20).unwrap();
    assert!(slow > Duration::from_millis(1_300) && slow > fast * 2, "limited: {slow:?}, unlimited {fast:?}");

    lab.cut("y");
    assert!(transfer(&lab, "x", "y", 1 << 10).is_err(), "nothing crosses a cut link");
    lab.heal("y");
    transfer(&lab, "x", "y", 1 << 10).expect("healed");

    let old = lab.host("y").ip.clone();
    let new = lab.readdress("y");
    assert_ne!(old, new);
    transfer(&lab, "x", "y", 1 << 10).expect("reachable at the new address");

    // The delay relay: a round trip through it takes at least twice its delay.
    let echo_ip = lab.host("y").ip.clone();
    let echo = in_netns(&lab.host("y").ns, move || TcpListener::bind((echo_ip.as_str(), 0)).unwrap());
    let target = echo.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        let (mut s, _) = echo.accept().unwrap();
        let mut b = [0u8; 4];
        s.read_exact(&mut b).unwrap();
        s.write_all(&b).unwrap();
    });
    let relay = lab.delay_relay("x", "127.0.0.1:0", &target, Duration::from_millis(100));
    let addr = relay.addr.clone();
    let took = in_netns(&lab.host("x").ns, move || {
        let started = Instant::now();
        let mut s = TcpStream::connect(&addr).unwrap();
        s.write_all(b"ping").unwrap();
        let mut b = [0u8; 4];
        s.read_exact(&mut b).unwrap();
        assert_eq!(&b, b"ping");
        started.elapsed()
    });
    assert!(took >= Duration::from_millis(200), "{took:?}");

    drop(lab);
    let list =
        String::from_utf8(std::process::Command::new("ip").args(["netns", "list"]).output().unwrap().stdout)
            .unwrap();
    for ns in names {
        assert!(!list.contains(&ns), "{ns} left behind");
    }
}
