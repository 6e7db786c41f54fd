//! `rpull-shaper LISTEN BACKEND RTT_MS BYTES_PER_SEC STATS_FILE`: a TCP proxy in front of
//! `BACKEND` that makes each connection behave like one to a far server. Every piece of data is
//! delivered `RTT_MS / 2` after it was read, in both directions (so a request and its answer
//! take one added RTT, and so does the TCP handshake's first exchange), and each direction of
//! each connection is capped at `BYTES_PER_SEC` (a token bucket refilled continuously, as a
//! bottleneck link or a TCP window over a long path would cap it). One thread per direction
//! reads as fast as the bucket allows, a second delivers after the delay, so the delay does not
//! cut the rate. After each connection, the bytes sent back to the client are appended to
//! `STATS_FILE` (one number per line) for the benchmark's byte counts.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

const PIECE: usize = 16 * 1024;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 6 {
        eprintln!("usage: rpull-shaper LISTEN BACKEND RTT_MS BYTES_PER_SEC STATS_FILE");
        std::process::exit(2);
    }
    let listener = TcpListener::bind(&args[1]).expect("bind");
    let backend = args[2].clone();
    let half = Duration::from_micros(args[3].parse::<u64>().expect("RTT_MS") * 500);
    let rate: u64 = args[4].parse().expect("BYTES_PER_SEC");
    let stats = Arc::new(Mutex::new(
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&args[5])
            .expect("stats file"),
    ));
    println!("{}", listener.local_addr().expect("addr"));
    std::io::stdout().flush().ok();
    for client in listener.incoming().flatten() {
        let backend = backend.clone();
        let stats = stats.clone();
        thread::spawn(move || {
            // The connection to the far server takes one added round trip.
            thread::sleep(half * 2);
            let Ok(server) = TcpStream::connect(&backend) else {
                return;
            };
            let _ = client.set_nodelay(true);
            let _ = server.set_nodelay(true);
            let (c2, s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
            let up = thread::spawn(move || pipe(c2, s2, half, rate));
            let down = pipe(server, client, half, rate);
            let _ = up.join();
            let _ = writeln!(stats.lock().unwrap(), "{down}");
        });
    }
}

/// Copies `from` to `to` with the delay and the cap; returns the bytes delivered.
fn pipe(mut from: TcpStream, to: TcpStream, delay: Duration, rate: u64) -> u64 {
    let (tx, rx) = mpsc::channel::<(Instant, Vec<u8>)>();
    let mut out = to.try_clone().unwrap();
    let writer = thread::spawn(move || {
        let mut sent = 0u64;
        for (at, data) in rx {
            let now = Instant::now();
            if at + delay > now {
                thread::sleep(at + delay - now);
            }
            if out.write_all(&data).is_err() {
                break;
            }
            sent += data.len() as u64;
        }
        let _ = out.shutdown(Shutdown::Write);
        sent
    });
    // The earliest instant the next piece may be read: `rate` is never exceeded, and an idle
    // keep-alive connection earns no credit for a later burst.
    let mut next = Instant::now();
    let mut buf = vec![0u8; PIECE];
    loop {
        let now = Instant::now();
        if next > now {
            thread::sleep(next - now);
        }
        match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                let at = Instant::now();
                next = next.max(at) + Duration::from_secs_f64(n as f64 / rate as f64);
                if tx.send((at, buf[..n].to_vec())).is_err() {
                    break;
                }
            }
        }
    }
    drop(tx);
    let sent = writer.join().unwrap_or(0);
    let _ = to.shutdown(Shutdown::Write);
    let _ = from.shutdown(Shutdown::Read);
    sent
}
