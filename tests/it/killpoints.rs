//! Crash safety: rpull is killed (SIGKILL) or interrupted (SIGINT) at random instants while
//! pulling multi-layer images through a throttled proxy; after each stop `rpull check` must
//! find an intact store (an independent check here agrees: every visible blob hashes to its
//! name, every visible layer has its marker), and a re-pull must complete.
//!
//! The same runs again with every layer fetched as concurrent ranges (a config file with a small
//! threshold): a kill then leaves a partial whose sidecar lists completed ranges with holes
//! between them, which `rpull check` must accept and the re-pull must complete. (How many kill
//! points leave one is printed; tests/it/ranges.rs makes that state on purpose and checks it.)
//!
//! `RPULL_KILLPOINTS` sets the number of kill points per signal (default 25, so 50 in all);
//! `RPULL_KILLPOINTS_SEED` replays a run. `bench/killpoints` runs 200.

use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::support::fault_proxy::{Fault, FaultProxy, Rule};
use crate::support::store_check::assert_visible_content_intact;
use crate::support::*;

struct Setup {
    _registry: Registry,
    proxy: FaultProxy,
    refs: [String; 2],
}

/// Two 4-layer images sharing two layers, behind a proxy throttling blobs.
fn setup() -> Setup {
    let registry = Registry::start();
    let layer = |seed: u64| {
        LayerBuilder::new()
            .dir("data", 0o755)
            .random_file(&format!("data/f{seed}"), 96_000, seed)
            .file(&format!("data/small{seed}"), b"x", 0o644)
            .build(if seed.is_multiple_of(2) {
                Compression::Gzip
            } else {
                Compression::Zstd
            })
    };
    let (l1, l2, l3, l4, l5) = (layer(1), layer(2), layer(3), layer(4), layer(5));
    registry.push_image(
        "kill/a",
        "v1",
        &Image::new(Platform::host(), vec![l1, l2.clone(), l3.clone(), l4]),
        ManifestFormat::Oci,
    );
    registry.push_image(
        "kill/b",
        "v1",
        &Image::new(Platform::host(), vec![l2, l3, l5]),
        ManifestFormat::Docker,
    );
    let proxy = FaultProxy::start(&registry.host());
    let refs = [
        format!("{}/kill/a:v1", proxy.host()),
        format!("{}/kill/b:v1", proxy.host()),
    ];
    Setup {
        _registry: registry,
        proxy,
        refs,
    }
}

fn count() -> usize {
    std::env::var("RPULL_KILLPOINTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(25)
}

/// xorshift64*, seeded from the clock unless `RPULL_KILLPOINTS_SEED` is set.
struct Rng(u64);

impl Rng {
    fn new(salt: u64) -> Rng {
        let seed = std::env::var("RPULL_KILLPOINTS_SEED")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_nanos() as u64
            });
        eprintln!("kill points seed {seed} (salt {salt})");
        Rng((seed ^ salt.wrapping_mul(0x9e37_79b9_7f4a_7c15)) | 1)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n.max(1)
    }
}

const THROTTLE: u64 = 1_000_000;
/// Per connection when layers come in ranges: 4 connections share about the same rate, so
/// that kills land while ranges are in flight.
const RANGED_THROTTLE: u64 = 250_000;

impl Setup {
    /// Throttled, most kill points land in downloads; unthrottled, in unpacking, publishing
    /// and the index update.
    fn throttle(&self, on: bool, ranged: bool) {
        self.proxy.clear_rules();
        if on {
            let rate = if ranged { RANGED_THROTTLE } else { THROTTLE };
            self.proxy.add_rule(Rule::get("/blobs/", Fault::Throttle(rate)));
        }
    }
}

/// Measures an uninterrupted pull of both images, to spread the kill points over it.
fn full_pull_time(s: &Setup, ranged: bool) -> Duration {
    let sandbox = sandbox(ranged);
    let start = Instant::now();
    for r in &s.refs {
        sandbox.run([r]).assert_success();
    }
    sandbox.assert_store_intact("clean pull");
    start.elapsed() / 2
}

/// A sandbox; `ranged`: its config file makes every layer (about 96 kB) a ranged download of
/// 16 KiB ranges over 4 connections, so kills land with ranges in flight.
fn sandbox(ranged: bool) -> Rpull {
    let mut r = rpull();
    if ranged {
        let path = r.home().join("rpull-ranged.json");
        fs::write(
            &path,
            r#"{"parallel-download-threshold": 65536, "parallel-chunk-size": 16384,
                "connections-per-blob": 4}"#,
        )
        .unwrap();
        r.env("RPULL_CONFIG", &path);
    }
    r
}

/// Whether `root` holds a partial download whose sidecar lists completed ranges.
fn has_ranged_partial(root: &Path) -> bool {
    fs::read_dir(root.join("ingest"))
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".json"))
        .filter_map(|e| fs::read(e.path()).ok())
        .filter_map(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .any(|v| v["ranges"].is_array())
}

fn kill_points(signal: libc::c_int, salt: u64, ranged: bool) {
    let s = setup();
    s.throttle(false, ranged);
    let fast_ms = (full_pull_time(&s, ranged).as_millis() as u64).max(20) * 6 / 5;
    s.throttle(true, ranged);
    let slow_ms = (full_pull_time(&s, ranged).as_millis() as u64).max(50) * 6 / 5;
    let mut holes = 0;
    let mut rng = Rng::new(salt);
    let n = count();
    let started = Instant::now();
    let mut sandbox = sandbox(ranged);
    let mut stopped_mid_pull = 0;
    for i in 0..n {
        // Pull a, then b (which shares layers with a) into the same store; a fresh store
        // every other pair.
        let which = i % 2;
        if i % 4 == 0 {
            sandbox = self::sandbox(ranged);
        }
        let reference = &s.refs[which];
        // Every third kill point without the throttle.
        let throttled = i % 3 != 2;
        s.throttle(throttled, ranged);
        let span_ms = if throttled { slow_ms } else { fast_ms };
        let delay = Duration::from_millis(rng.below(span_ms));
        let mut running = sandbox.spawn([reference]);
        std::thread::sleep(delay);
        running.signal(signal);
        let out = running.wait();
        s.throttle(false, ranged); // the checks and the re-pull need no throttle
        let context =
            format!("kill point {i} ({reference}, signal {signal}, after {delay:?}, throttled: {throttled})");
        if !out.success() {
            stopped_mid_pull += 1;
            if signal == libc::SIGINT {
                use std::os::unix::process::ExitStatusExt;
                // 130 once the handler is installed; killed by the signal itself before that.
                assert!(
                    out.code() == Some(130) || out.status.signal() == Some(libc::SIGINT),
                    "{context}: expected exit 130, got {:?}\n{}",
                    out.status,
                    out.stderr
                );
            }
        }
        // Before rpull looks at it: what a kill left must already be sound.
        assert_visible_content_intact(sandbox.root(), &context);
        if has_ranged_partial(sandbox.root()) {
            holes += 1;
        }
        sandbox.assert_store_intact(&context);
        let again = sandbox.run([reference]);
        assert!(
            again.success(),
            "{context}: re-pull failed\nstdout:\n{}\nstderr:\n{}",
            again.stdout,
            again.stderr
        );
        sandbox.assert_store_intact(&format!("{context}, after the re-pull"));
    }
    eprintln!(
        "{n} kill points with signal {signal} (ranged: {ranged}): {stopped_mid_pull} stopped a pull, \
         {holes} left completed ranges, 0 corrupt stores, {:?}",
        started.elapsed()
    );
    assert!(
        stopped_mid_pull * 3 >= n,
        "only {stopped_mid_pull} of {n} kill points landed inside a pull"
    );
    drop(s.proxy);
}

/// One test per signal and download mode, each with its own seed for the kill points.
macro_rules! kill_point_tests {
    ($($name:ident: $signal:ident, $seed:literal, ranged: $ranged:literal;)+) => {
        $(
            #[test]
            fn $name() {
                kill_points(libc::$signal, $seed, $ranged);
            }
        )+
    };
}

kill_point_tests! {
    sigkill_at_random_points_leaves_an_intact_store: SIGKILL, 1, ranged: false;
    sigint_at_random_points_leaves_an_intact_store: SIGINT, 2, ranged: false;
    sigkill_with_ranges_in_flight_leaves_an_intact_store: SIGKILL, 3, ranged: true;
    sigint_with_ranges_in_flight_leaves_an_intact_store: SIGINT, 4, ranged: true;
}
