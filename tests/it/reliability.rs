//! Resume across runs and its fallbacks, measured with the fault proxy's byte counter, and a
//! full disk.
//!
//! * SIGKILL and a dropped connection: the interrupted pull plus its re-run fetch no more
//!   than the image's size plus one proxy chunk (64 KiB);
//! * a server that ignores `Range`, or a partial file that went bad: a clean restart from 0;
//! * partial downloads carry a sidecar naming their digest and size;
//! * a full disk (a 2 MiB tmpfs, root only): a clear error, exit 1, nothing half-written.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::support::fault_proxy::{Fault, Rule};
use crate::support::setups::{proxied_image, ProxiedImage};
use crate::support::*;

const LAYER_BYTES: usize = 1_500_000;
/// The proxy's read/write buffer: what may be in flight when a client dies.
const CHUNK: u64 = 64 * 1024;

fn setup(repo: &str) -> ProxiedImage {
    proxied_image(
        repo,
        vec![Layer::random("big.bin", LAYER_BYTES, 7, Compression::Gzip)],
    )
}

/// What these tests measure of their image.
impl ProxiedImage {
    /// The layer blob is in the store with the right content, and `rpull check` passes.
    fn assert_layer_stored(&self, sandbox: &Rpull) {
        let blob = sandbox.blob_path(self.layer());
        assert_eq!(sha256_digest(&fs::read(blob).unwrap()), self.layer());
        sandbox.assert_store_intact("");
    }

    fn layer_size(&self) -> u64 {
        let manifest: serde_json::Value = serde_json::from_slice(&self.pushed.manifest_bytes).unwrap();
        manifest["layers"][0]["size"].as_u64().unwrap()
    }

    /// Config plus layers: what a pull must download.
    fn image_size(&self) -> u64 {
        self.layer_size() + self.pushed.config_bytes.len() as u64
    }

    fn blob_bytes_served(&self) -> u64 {
        self.proxy.body_bytes_sent("/blobs/")
    }

    /// Starts a throttled pull and stops it with `signal` once `at_least` bytes are on disk.
    fn interrupt(&self, sandbox: &Rpull, signal: libc::c_int, at_least: u64) -> u64 {
        self.proxy
            .add_rule(Rule::get("/blobs/", Fault::Throttle(600_000)));
        let mut running = sandbox.spawn([&self.reference]);
        let partial = sandbox.partial_path(self.layer());
        let deadline = Instant::now() + Duration::from_secs(20);
        while fs::metadata(&partial).map(|m| m.len()).unwrap_or(0) < at_least {
            assert!(Instant::now() < deadline, "download never started");
            std::thread::sleep(Duration::from_millis(10));
        }
        running.signal(signal);
        let out = running.wait();
        assert!(!out.success(), "the pull finished before it was stopped");
        self.proxy.clear_rules();
        fs::metadata(&partial).unwrap().len()
    }
}

fn sidecar(partial: &Path) -> serde_json::Value {
    serde_json::from_slice(&fs::read(partial.with_extension("json")).expect("sidecar")).unwrap()
}

#[test]
fn sigkill_then_rerun_fetches_the_image_once() {
    let s = setup("rel/kill");
    let sandbox = rpull();
    let kept = s.interrupt(&sandbox, libc::SIGKILL, 400_000);
    assert!(kept > 0 && kept < s.layer_size());
    // The partial is identified by its name (digest) and its sidecar (digest and size).
    let info = sidecar(&sandbox.partial_path(s.layer()));
    assert_eq!(info["digest"], s.layer());
    assert_eq!(info["size"], s.layer_size());
    sandbox.assert_store_intact("");

    sandbox.run([&s.reference]).assert_success();
    let ranged: Vec<_> = s.layer_gets().into_iter().filter(|r| r.range.is_some()).collect();
    assert_eq!(ranged.len(), 1, "{:?}", s.proxy.requests());
    let served = s.blob_bytes_served();
    assert!(
        // The config is fetched again (it is stored only once the image is complete).
        served <= s.image_size() + s.pushed.config_bytes.len() as u64 + CHUNK,
        "interrupted pull + re-run fetched {served} bytes; the image is {}",
        s.image_size()
    );
    assert!(!sandbox.partial_path(s.layer()).exists());
    assert!(!sandbox.partial_path(s.layer()).with_extension("json").exists());
    sandbox.assert_store_intact("");
}

#[test]
fn dropped_connection_then_rerun_fetches_the_image_once() {
    let s = setup("rel/drop");
    let sandbox = rpull();
    s.fault_layer(Fault::DropAfter(600_000), Some(1));
    // A wait long enough that the run is still counting down when it is stopped.
    let mut running = sandbox.spawn(["--retry-delay", "30s", &s.reference]);
    running.wait_for_stdout("Retrying in", Duration::from_secs(30));
    running.signal(libc::SIGKILL);
    running.wait();
    let kept = fs::metadata(sandbox.partial_path(s.layer())).unwrap().len();
    assert!(kept > 0 && kept <= 600_000, "kept {kept}");
    sandbox.assert_store_intact("");

    let rerun = rpull_in(&sandbox);
    rerun.run([&s.reference]).assert_success();
    let requests = s.layer_gets();
    assert_eq!(requests.len(), 2, "{requests:?}");
    assert_eq!(
        requests[1].range.as_deref(),
        Some(format!("bytes={kept}-").as_str())
    );
    let served = s.blob_bytes_served();
    assert!(
        served <= s.image_size() + s.pushed.config_bytes.len() as u64 + CHUNK,
        "dropped pull + re-run fetched {served} bytes; the image is {}",
        s.image_size()
    );
    sandbox.assert_store_intact("");
}

/// The same store, without the long retry delay.
fn rpull_in(sandbox: &Rpull) -> RerunIn<'_> {
    RerunIn(sandbox)
}

struct RerunIn<'a>(&'a Rpull);

impl RerunIn<'_> {
    fn run(&self, args: [&String; 1]) -> RpullOutput {
        let mut cmd = self.0.command();
        cmd.args(args);
        RunningRpull::start(cmd, Duration::from_secs(60)).wait()
    }
}

#[test]
fn a_server_ignoring_range_means_a_clean_restart() {
    let s = setup("rel/norange");
    let sandbox = rpull();
    let kept = s.interrupt(&sandbox, libc::SIGINT, 300_000);
    s.proxy.add_rule(Rule::new("/blobs/", Fault::IgnoreRange));
    let before = s.layer_gets().len();
    sandbox.run([&s.reference]).assert_success();
    let after: Vec<_> = s.layer_gets().split_off(before);
    assert_eq!(after.len(), 1, "{after:?}");
    assert!(after[0].range.is_some(), "rpull asked for a range");
    assert_eq!(after[0].status, 200);
    assert_eq!(after[0].body_bytes, s.layer_size(), "the whole layer, once");
    assert!(kept > 0);
    s.assert_layer_stored(&sandbox);
}

#[test]
fn a_bad_partial_is_detected_after_resuming_and_fetched_again_from_zero() {
    let s = setup("rel/badpartial");
    let sandbox = rpull();
    let kept = s.interrupt(&sandbox, libc::SIGKILL, 300_000);
    // Damage the kept bytes without changing their length: the resumed download cannot match.
    let partial = sandbox.partial_path(s.layer());
    let mut bytes = fs::read(&partial).unwrap();
    for b in bytes.iter_mut().take(1000) {
        *b ^= 0x5a;
    }
    fs::write(&partial, &bytes).unwrap();
    let before = s.layer_gets().len();
    sandbox
        .run(["--retry-delay", "10ms", &s.reference])
        .assert_success();
    let after: Vec<_> = s.layer_gets().split_off(before);
    assert_eq!(after.len(), 2, "{after:?}");
    assert_eq!(after[0].range.as_deref(), Some(format!("bytes={kept}-").as_str()));
    assert_eq!(after[1].range, None, "the second attempt starts from 0");
    assert_eq!(after[1].body_bytes, s.layer_size());
    s.assert_layer_stored(&sandbox);
}

#[test]
fn check_repair_removes_corrupt_content_and_a_repull_restores_it() {
    let s = setup("rel/repair");
    let sandbox = rpull();
    sandbox.run([&s.reference]).assert_success();
    sandbox.assert_store_intact("");
    let blob = sandbox.blob_path(s.layer());
    let mut bytes = fs::read(&blob).unwrap();
    bytes[10] ^= 1;
    fs::write(&blob, &bytes).unwrap();
    let layer_json = sandbox.layer_dir(&s.pushed.diff_ids[0]).join("layer.json");
    fs::remove_file(&layer_json).unwrap();

    let out = sandbox.run(["check"]);
    out.assert_code(1);
    assert!(out.stdout.contains("is corrupt"), "{}", out.stdout);
    assert!(out.stdout.contains("has no layer.json"), "{}", out.stdout);
    let out = sandbox.run(["check", "--repair"]);
    assert!(out.stdout.contains("(repaired)"), "{}", out.stdout);
    assert!(out.stdout.contains("pull it again"), "{}", out.stdout);
    assert!(!blob.exists());
    sandbox.run([&s.reference]).assert_success();
    sandbox.assert_store_intact("");
    assert_eq!(sha256_digest(&fs::read(&blob).unwrap()), s.layer());
}

/// Unmounts on drop, so a failing test does not leave the tmpfs behind.
struct Mount(PathBuf);

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn disk_full_is_a_clear_error_and_leaves_nothing_half_written() {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    assert!(
        root,
        "this test mounts a 2 MiB tmpfs as the store and needs root; CI runs as root. \
         It is never skipped: run it as root (e.g. in a container)."
    );
    let s = setup("rel/full");
    let sandbox = rpull();
    let store = sandbox.root().join("store");
    fs::create_dir(&store).unwrap();
    let status = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=2m", "tmpfs"])
        .arg(&store)
        .status()
        .expect("running mount");
    assert!(status.success(), "mount -t tmpfs failed");
    let _mount = Mount(store.clone());

    // `rpull --root <store> <arg>`: the sandbox's own root is not on the small disk.
    let run_on_store = |arg: &str| {
        let mut cmd = sandbox.bare_command();
        cmd.arg("--root").arg(&store).arg(arg);
        RunningRpull::start(cmd, Duration::from_secs(60)).wait()
    };
    let assert_disk_full = |out: &RpullOutput| {
        out.assert_code(1);
        assert!(
            out.stderr.to_lowercase().contains("no space left on device"),
            "stderr: {}",
            out.stderr
        );
    };
    let assert_check_passes = || {
        let out = run_on_store("check");
        assert!(
            out.success(),
            "check on the full store:\n{}\n{}",
            out.stdout,
            out.stderr
        );
    };

    // The layer (1.5 MB) fits, its unpacked copy does not.
    assert_disk_full(&run_on_store(&s.reference));
    // Nothing half-written is visible: no layer without its marker, the reference not recorded.
    for e in fs::read_dir(store.join("layers/sha256")).unwrap() {
        assert!(e.unwrap().path().join("layer.json").is_file());
    }
    let index = fs::read_to_string(store.join("index.json")).unwrap();
    assert!(!index.contains("rel/full"), "{index}");
    assert_check_passes();

    // A bigger layer than the disk: the download itself fails.
    let big = Layer::random("huge.bin", 3_000_000, 8, Compression::Gzip);
    let reg = Registry::start();
    reg.push_layers("rel/full2", "v1", vec![big]);
    assert_disk_full(&run_on_store(&reg.image_ref("rel/full2", "v1")));
    assert_check_passes();
}
