//! Parallel range downloads of one large blob (issue 15), end to end through the fault proxy:
//! a blob over the threshold (1 MiB here) comes as concurrent 256 KiB ranges written at their
//! offsets and is unpacked as its prefix grows; a server that ignores ranges, answers another
//! range, or cuts ranges falls back to one stream or fails clearly, never committing bad data;
//! a SIGKILL with ranges in flight is resumed fetching only the missing ranges.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::support::fault_proxy::{Fault, RequestLog};
use crate::support::setups::{proxied_image, ProxiedImage};
use crate::support::*;

const LAYER_BYTES: usize = 3_000_000;
const CHUNK: u64 = 256 * 1024;
const CONNECTIONS: u64 = 4;
/// The proxy's copy buffer: what one connection may have had in flight when a client died.
const PROXY_BUF: u64 = 64 * 1024;

/// Ranged downloads for blobs of 1 MiB and more, in 256 KiB ranges over 4 connections.
const RANGE_FLAGS: [&str; 6] = [
    "--parallel-download-threshold",
    "1MiB",
    "--parallel-chunk-size",
    "256KiB",
    "--connections-per-blob",
    "4",
];

struct Setup {
    image: ProxiedImage,
    layer: Layer,
}

fn setup(repo: &str) -> Setup {
    // Random content: the gzip blob is about as large as the file.
    let layer = LayerBuilder::new()
        .dir("data", 0o755)
        .random_file("data/big.bin", LAYER_BYTES, 15)
        .file("data/last.txt", b"the end\n", 0o644)
        .build(Compression::Gzip);
    let image = proxied_image(repo, vec![layer.clone()]);
    Setup { image, layer }
}

impl Setup {
    fn size(&self) -> u64 {
        self.layer.blob.len() as u64
    }

    fn gets(&self) -> Vec<RequestLog> {
        self.image.layer_gets()
    }

    /// `pull`, [`RANGE_FLAGS`], `extra`, the reference.
    fn args(&self, extra: &[&str]) -> Vec<String> {
        let mut args: Vec<String> = vec!["pull".into()];
        args.extend(RANGE_FLAGS.iter().map(|s| s.to_string()));
        args.extend(extra.iter().map(|s| s.to_string()));
        args.push(self.image.reference.clone());
        args
    }

    fn pull(&self, sandbox: &Rpull, extra: &[&str]) -> RpullOutput {
        sandbox.run(self.args(extra))
    }

    /// What the layer's `layer.json` says it was unpacked from (`stream` or `blob`).
    fn unpacked_from(&self, sandbox: &Rpull) -> String {
        let marker = sandbox.layer_dir(&self.layer.diff_id).join("layer.json");
        let marker: serde_json::Value = serde_json::from_slice(&fs::read(marker).unwrap()).unwrap();
        marker["unpackedFrom"]
            .as_str()
            .unwrap_or_else(|| panic!("no unpackedFrom: {marker}"))
            .to_string()
    }

    fn partial(&self, sandbox: &Rpull) -> PathBuf {
        sandbox.partial_path(&self.layer.digest)
    }

    /// The blob is stored with the right bytes, the layer is unpacked (`from` the stream or the
    /// blob), and `rpull check` passes.
    fn assert_stored(&self, sandbox: &Rpull, from: &str) {
        let blob = sandbox.blob_path(&self.layer.digest);
        assert_eq!(sha256_digest(&fs::read(blob).unwrap()), self.layer.digest);
        assert_eq!(self.unpacked_from(sandbox), from, "how the layer was unpacked");
        let dir = sandbox.layer_dir(&self.layer.diff_id);
        assert_eq!(fs::read(dir.join("rootfs/data/last.txt")).unwrap(), b"the end\n");
        assert_eq!(
            fs::metadata(dir.join("rootfs/data/big.bin")).unwrap().len(),
            LAYER_BYTES as u64
        );
        sandbox.assert_store_intact("");
    }

    fn assert_nothing_committed(&self, sandbox: &Rpull) {
        let blob = sandbox.blob_path(&self.layer.digest);
        assert!(!blob.exists(), "a blob was committed");
        assert!(!sandbox.layer_dir(&self.layer.diff_id).exists());
        sandbox.assert_store_intact("");
    }
}

/// A fresh [`setup`] whose layer GETs get `fault` (the first `times` of them; all: `None`),
/// pulled with [`RANGE_FLAGS`]: the pull succeeds. Returns the setup, the sandbox and the output.
fn pull_with_a_fault(repo: &str, fault: Fault, times: Option<u32>) -> (Setup, Rpull, RpullOutput) {
    let s = setup(repo);
    s.image.fault_layer(fault, times);
    let sandbox = rpull();
    let out = s.pull(&sandbox, &[]);
    out.assert_success();
    (s, sandbox, out)
}

/// `bytes=a-b` as `(a, b + 1)`.
fn range_of(r: &RequestLog) -> Option<(u64, u64)> {
    let (a, b) = r.range.as_deref()?.strip_prefix("bytes=")?.split_once('-')?;
    Some((a.parse().ok()?, b.parse::<u64>().ok()? + 1))
}

fn sidecar_ranges(partial: &Path) -> Vec<(u64, u64)> {
    let Ok(bytes) = fs::read(partial.with_extension("json")) else {
        return Vec::new();
    };
    let Ok(info) = serde_json::from_slice::<serde_json::Value>(&bytes) else {
        return Vec::new();
    };
    info["ranges"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|r| (r[0].as_u64().unwrap(), r[1].as_u64().unwrap()))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn a_large_blob_comes_as_concurrent_ranges_and_is_unpacked_as_it_streams() {
    let s = setup("ranges/plain");
    // Slow enough that the ranges overlap in time.
    s.image.fault_layer(Fault::Throttle(3_000_000), None);
    let sandbox = rpull();
    let out = s.pull(&sandbox, &[]);
    out.assert_success();
    let gets = s.gets();
    let chunks = s.size().div_ceil(CHUNK);
    assert_eq!(gets.len() as u64, chunks, "one request per range: {gets:#?}");
    let mut ranges: Vec<_> = gets
        .iter()
        .map(|r| range_of(r).expect("a closed range"))
        .collect();
    ranges.sort();
    let mut at = 0;
    for (a, b) in &ranges {
        assert_eq!(*a, at, "ranges tile the blob: {ranges:?}");
        at = *b;
    }
    assert_eq!(at, s.size());
    assert!(gets.iter().all(|r| r.status == 206), "{gets:#?}");
    let peak = s.image.proxy.max_concurrent(&s.layer.digest);
    assert!(
        (2..=CONNECTIONS as usize).contains(&peak),
        "{peak} ranges at once, expected 2..=4"
    );
    assert_eq!(s.image.proxy.body_bytes_sent(&s.layer.digest), s.size());
    s.assert_stored(&sandbox, "stream");
}

/// A first connection at least as fast as `RPULL_FAST_CONNECTION` (here any connection that
/// delivers anything) opens no other: once it has been timed (100 ms, under 4 MiB here) the
/// rest of the blob comes as one open-ended stream from the completed prefix. The slow side of
/// the same rule is the throttled test above (3 MB/s against the default 64 MB/s).
#[test]
fn a_fast_first_connection_opens_no_other_and_the_rest_comes_as_one_stream() {
    let s = setup("ranges/fast");
    // Throttled as above, where the ranges overlap: here they must not.
    s.image.fault_layer(Fault::Throttle(3_000_000), None);
    let mut sandbox = rpull();
    sandbox.env("RPULL_FAST_CONNECTION", "1");
    let out = s.pull(&sandbox, &[]);
    out.assert_success();
    let gets = s.gets();
    let chunks = s.size().div_ceil(CHUNK);
    assert!(
        gets.len() >= 2 && (gets.len() as u64) < chunks / 2,
        "a few ranges, then one stream, not {chunks} ranges: {gets:#?}"
    );
    assert!(gets.iter().all(|r| r.status == 206), "{gets:#?}");
    let (last, ranges) = gets.split_last().unwrap();
    for (i, r) in ranges.iter().enumerate() {
        // The last closed range may have been cut when the stream took over.
        let (a, b) = range_of(r).expect("a closed range");
        assert_eq!((a, b), (i as u64 * CHUNK, (i as u64 + 1) * CHUNK), "{gets:#?}");
    }
    let rest = last.range.as_deref().expect("the stream asks for the rest");
    let from: u64 = rest
        .strip_prefix("bytes=")
        .and_then(|r| r.strip_suffix('-'))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("an open-ended range, not {rest:?}"));
    assert!(
        from > 0 && from.is_multiple_of(CHUNK),
        "the stream starts at a range boundary: {rest}"
    );
    let sent = s.image.proxy.body_bytes_sent(&s.layer.digest);
    assert!(sent <= s.size() + CHUNK, "{sent} bytes sent for {}", s.size());
    s.assert_stored(&sandbox, "stream");
}

#[test]
fn the_config_file_sets_ranged_downloads_and_one_connection_turns_them_off() {
    let s = setup("ranges/config");
    let sandbox = rpull();
    let config = sandbox.home().join("rpull-config.json");
    fs::write(
        &config,
        r#"{"parallel-download-threshold": 1048576, "parallel-chunk-size": 524288,
            "connections-per-blob": 3, "max-connections": 2}"#,
    )
    .unwrap();
    let config = config.to_str().unwrap().to_string();
    sandbox
        .run(["pull", "--config", &config, &s.image.reference])
        .assert_success();
    let gets = s.gets();
    assert_eq!(gets.len() as u64, s.size().div_ceil(524_288), "{gets:#?}");
    assert!(gets.iter().all(|r| range_of(r).is_some()), "{gets:#?}");
    // max-connections caps the connections of the pull, whatever the per-blob count.
    assert!(s.image.proxy.max_concurrent(&s.layer.digest) <= 2);
    s.assert_stored(&sandbox, "stream");

    let again = rpull();
    again
        .run([
            "pull",
            "--config",
            &config,
            "--connections-per-blob",
            "1",
            &s.image.reference,
        ])
        .assert_success();
    let last = s.gets().pop().unwrap();
    assert_eq!(last.range, None, "one stream: {last:?}");
}

#[test]
fn a_server_ignoring_range_falls_back_to_one_stream() {
    let (s, sandbox, out) = pull_with_a_fault("ranges/ignored", Fault::IgnoreRange, None);
    let gets = s.gets();
    // The first range alone probes the server: no other connection starts.
    assert_eq!(gets.len(), 2, "{gets:#?}");
    assert_eq!(range_of(&gets[0]), Some((0, CHUNK)));
    assert_eq!(gets[0].status, 200);
    assert_eq!(gets[1].range, None);
    assert!(!out.stdout.contains("Retrying"), "{out}");
    s.assert_stored(&sandbox, "stream");
}

#[test]
fn a_wrong_content_range_falls_back_and_is_never_committed() {
    let (s, sandbox, _out) = pull_with_a_fault("ranges/wrong", Fault::WrongContentRange, None);
    let gets = s.gets();
    assert_eq!(gets.len(), 2, "{gets:#?}");
    assert_eq!(gets[0].status, 206);
    assert_eq!(gets[1].range, None, "then one stream from byte 0");
    s.assert_stored(&sandbox, "stream");
}

#[test]
fn a_range_cut_midway_is_asked_for_again_from_where_it_stopped() {
    let (s, sandbox, out) = pull_with_a_fault("ranges/cut", Fault::DropAfter(100_000), Some(1));
    assert!(!out.stdout.contains("Retrying"), "silent: {out}");
    let gets = s.gets();
    assert_eq!(range_of(&gets[0]), Some((0, CHUNK)));
    assert!(
        gets.iter().any(|r| range_of(r) == Some((100_000, CHUNK))),
        "the cut range resumed at its cut: {gets:#?}"
    );
    assert!(gets.iter().all(|r| r.range.is_some()), "no fallback: {gets:#?}");
    assert!(s.image.proxy.body_bytes_sent(&s.layer.digest) <= s.size() + PROXY_BUF);
    s.assert_stored(&sandbox, "stream");
}

#[test]
fn ranges_that_are_always_cut_fail_clearly_and_commit_nothing() {
    let s = setup("ranges/broken");
    s.image.fault_layer(Fault::DropAfter(50_000), None);
    let sandbox = rpull();
    let out = s.pull(&sandbox, &["--retry", "1", "--retry-delay", "10ms"]);
    out.assert_code(1);
    assert!(
        out.stderr.contains("short read") || out.stderr.contains("error reading blob"),
        "{out}"
    );
    let gets = s.gets();
    assert!(
        gets.iter().any(|r| r.range.is_none()),
        "fell back to one stream: {gets:#?}"
    );
    s.assert_nothing_committed(&sandbox);
}

#[test]
fn sigkill_with_ranges_in_flight_then_a_rerun_fetches_only_the_missing_ranges() {
    let s = setup("ranges/kill");
    s.image.fault_layer(Fault::Throttle(400_000), None);
    let sandbox = rpull();
    let mut running = sandbox.spawn(s.args(&[]));
    let partial = s.partial(&sandbox);
    let deadline = Instant::now() + Duration::from_secs(30);
    // Some ranges complete (not necessarily from byte 0), others in flight.
    while sidecar_ranges(&partial).iter().map(|(a, b)| b - a).sum::<u64>() < 3 * CHUNK {
        assert!(Instant::now() < deadline, "no ranges completed");
        std::thread::sleep(Duration::from_millis(10));
    }
    running.signal(libc::SIGKILL);
    assert!(!running.wait().success());
    let kept = sidecar_ranges(&partial);
    let kept_bytes: u64 = kept.iter().map(|(a, b)| b - a).sum();
    assert!(kept_bytes < s.size(), "{kept:?}");
    // The partial with its ranges is a valid state for check.
    let out = sandbox.run(["check"]);
    assert!(out.success(), "{out}");
    // The proxy notices the dead connections when its writes fail: wait for that.
    let deadline = Instant::now() + Duration::from_secs(30);
    while s.gets().iter().any(|r| r.ended.is_none()) {
        assert!(Instant::now() < deadline, "the killed requests never ended");
        std::thread::sleep(Duration::from_millis(10));
    }
    let first_run = s.gets().len();
    let first_bytes = s.image.proxy.body_bytes_sent(&s.layer.digest);

    s.image.proxy.clear_rules();
    s.pull(&sandbox, &[]).assert_success();
    let rerun = &s.gets()[first_run..];
    for r in rerun {
        let (a, b) = range_of(r).expect("ranged");
        assert!(
            kept.iter().all(|&(ka, kb)| b <= ka || a >= kb),
            "{a}-{b} was already complete: {kept:?}"
        );
    }
    let total = s.image.proxy.body_bytes_sent(&s.layer.digest);
    assert_eq!(
        total - first_bytes,
        s.size() - kept_bytes,
        "only the missing bytes"
    );
    // Lost at the kill: what was in flight on each connection, at most.
    assert!(
        total <= s.size() + CONNECTIONS * CHUNK,
        "{total} bytes fetched for a {} byte blob",
        s.size()
    );
    // The head was not kept by the first run when ranges completed out of order, so the
    // layer may be unpacked from the stored blob; either way it is intact.
    let from = s.unpacked_from(&sandbox);
    s.assert_stored(&sandbox, &from);
}
