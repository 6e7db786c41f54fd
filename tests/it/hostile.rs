//! Hostile and broken input, end to end through the real registry: each hostile layer or
//! registry answer is refused with a clear error and a non-zero exit (or, where docker's rule
//! is to contain rather than refuse, contained inside the layer's own directory); in every
//! case nothing is written outside the store, `rpull check` passes, and the reference is not
//! recorded when the pull failed.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use crate::support::fault_proxy::{assert_no_authorization, Fault, FaultProxy, Rule};
use crate::support::setups::{public_token_image, token_auth, TokenAuth};
use crate::support::*;
use tempfile::TempDir;

fn registry() -> &'static Registry {
    static REGISTRY: OnceLock<Registry> = OnceLock::new();
    REGISTRY.get_or_init(Registry::start)
}

/// A directory outside the store that hostile entries aim at, holding a victim file.
struct Outside {
    dir: TempDir,
}

impl Outside {
    fn new() -> Outside {
        let dir = temp_dir("hostile-outside-");
        fs::write(dir.path().join("victim"), b"untouched").unwrap();
        Outside { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// `../` enough times to reach `/`, then this directory.
    fn traversal(&self, leaf: &str) -> String {
        format!("{}{}/{leaf}", "../".repeat(24), self.path().display())
    }

    fn absolute(&self, leaf: &str) -> String {
        format!("{}/{leaf}", self.path().display())
    }

    fn assert_untouched(&self) {
        let names: Vec<_> = fs::read_dir(self.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec!["victim"], "something was written outside the store");
        assert_eq!(fs::read(self.path().join("victim")).unwrap(), b"untouched");
    }
}

struct Pulled {
    sandbox: Rpull,
    out: RpullOutput,
    reference: String,
}

impl Pulled {
    /// Runs `rpull <args…> <reference>` in `sandbox`.
    fn run(sandbox: Rpull, args: &[&str], reference: String) -> Pulled {
        let mut all = args.to_vec();
        all.push(&reference);
        let out = sandbox.run(all);
        Pulled {
            sandbox,
            out,
            reference,
        }
    }

    fn layer_root(&self, diff_id: &str) -> PathBuf {
        self.sandbox
            .root()
            .join("layers/sha256")
            .join(&diff_id[7..])
            .join("rootfs")
    }

    fn assert_store_intact(&self) {
        self.sandbox.assert_store_intact("");
    }

    /// Exit 1, `needle` in the error, the store intact, the reference not recorded.
    fn assert_refused(&self, needle: &str) {
        assert_eq!(
            self.out.code(),
            Some(1),
            "expected a refusal\nstdout:\n{}\nstderr:\n{}",
            self.out.stdout,
            self.out.stderr
        );
        assert!(
            self.out.stderr.to_lowercase().contains(&needle.to_lowercase()),
            "expected {needle:?} in the error, got:\n{}",
            self.out.stderr
        );
        self.assert_store_intact();
        let index = fs::read_to_string(self.sandbox.root().join("index.json")).unwrap();
        assert!(!index.contains("hostile/"), "reference recorded: {index}");
        // Nothing of a refused layer is visible.
        assert_eq!(
            fs::read_dir(self.sandbox.root().join("layers/tmp"))
                .unwrap()
                .count(),
            0,
            "unpack directory left behind"
        );
    }
}

fn pull_image(repo: &str, layers: Vec<Layer>) -> Pulled {
    let registry = registry();
    registry.push_layers(repo, "v1", layers);
    Pulled::run(
        rpull(),
        &["--retry-delay", "10ms"],
        registry.image_ref(repo, "v1"),
    )
}

fn pull(repo: &str, layer: LayerBuilder) -> Pulled {
    pull_image(repo, vec![layer.build(Compression::Gzip)])
}

/// Pulls the layer `build` aims at a fresh [`Outside`]: refused with `needle`, nothing
/// written outside.
fn assert_escape_refused(repo: &str, build: impl FnOnce(&Outside) -> LayerBuilder, needle: &str) {
    let o = Outside::new();
    let p = pull(repo, build(&o));
    p.assert_refused(needle);
    o.assert_untouched();
}

/// One `#[test]` per case `name: repo, needle, |o| layer`, each calling
/// [`assert_escape_refused`].
macro_rules! escape_refused_tests {
    ($($name:ident: $repo:literal, $needle:literal, |$o:ident| $build:expr;)+) => {
        $(
            #[test]
            fn $name() {
                assert_escape_refused($repo, |$o| $build, $needle);
            }
        )+
    };
}

/// Pulls the layer `build` aims at a fresh [`Outside`]: it succeeds and nothing is written
/// outside. Returns the pull, the layer's root directory and the [`Outside`].
fn pull_contained(repo: &str, build: impl FnOnce(&Outside) -> LayerBuilder) -> (Pulled, PathBuf, Outside) {
    let o = Outside::new();
    let layer = build(&o).build(Compression::Gzip);
    let diff = layer.diff_id.clone();
    let p = pull_image(repo, vec![layer]);
    p.out.assert_success();
    o.assert_untouched();
    let root = p.layer_root(&diff);
    (p, root, o)
}

/// Pulls a layer with one entry at the absolute path of `leaf` in a fresh [`Outside`]: it
/// succeeds and nothing is written outside. Returns the pull and where the entry landed, inside
/// the layer's own directory (docker's rule: a leading `/` names the layer's root).
fn pull_an_absolute_entry(repo: &str, leaf: &str, data: &[u8]) -> (Pulled, PathBuf) {
    let (p, root, o) = pull_contained(repo, |o| LayerBuilder::new().raw_file(o.absolute(leaf), data));
    let inside = root.join(o.absolute(leaf).trim_start_matches('/'));
    (p, inside)
}

/// Pushes `layers` as `<repo>:v1` and pulls it with `RPULL_MAX_LAYER_BYTES=1000000`.
fn pull_with_a_layer_bound(repo: &str, layers: Vec<Layer>) -> Pulled {
    let registry = registry();
    registry.push_layers(repo, "v1", layers);
    let mut sandbox = rpull();
    // The default bound (100 × compressed + 1 GiB) would take a minute to reach in a test.
    sandbox.env("RPULL_MAX_LAYER_BYTES", "1000000");
    Pulled::run(sandbox, &[], registry.image_ref(repo, "v1"))
}

// ---- hostile layers ----

// Each case is a test of its own: the layer built by the closure, aimed at a fresh
// [`Outside`], is refused with the message given and nothing is written outside.
escape_refused_tests! {
    path_traversal_is_refused: "hostile/traversal", "invalid entry name",
        |o| LayerBuilder::new().raw_file(o.traversal("pwned"), b"x");
    writing_through_a_symlink_in_the_same_layer_is_refused: "hostile/symlink", "is a symlink",
        |o| LayerBuilder::new()
            .symlink("evil", &o.absolute(""))
            .raw_file("evil/pwned", b"x");
    a_relative_symlink_climbing_out_is_refused_as_a_parent: "hostile/symlink-rel", "is a symlink",
        |o| LayerBuilder::new()
            .symlink("evil", &o.traversal(""))
            .raw_file("evil/pwned", b"x");
    a_hardlink_climbing_out_is_refused: "hostile/hardlink", "invalid hardlink target",
        |o| LayerBuilder::new().raw_hardlink("link", o.traversal("victim"));
    a_hardlink_through_a_symlink_is_refused: "hostile/hardlink-sym", "symlink",
        |o| LayerBuilder::new()
            .symlink("evil", &o.absolute(""))
            .raw_hardlink("link", "evil/victim");
    a_duplicate_replacing_a_directory_with_a_symlink_cannot_escape: "hostile/dup-dir", "symlink",
        |o| LayerBuilder::new()
            .dir("d", 0o755)
            .symlink("d", &o.absolute(""))
            .raw_file("d/pwned", b"x");
    a_whiteout_outside_the_layer_is_refused: "hostile/whiteout", "invalid entry name",
        |o| LayerBuilder::new().raw_file(o.traversal(".wh.victim"), b"");
    // No lower layer holds the absolute path: as containerd's link(2) over the parents, ENOENT.
    a_hardlink_to_a_host_path_no_layer_holds_is_refused:
        "hostile/hardlink-abs-none", "no lower layer holds the target (link: no such file or directory)",
        |o| LayerBuilder::new().raw_hardlink("link", o.absolute("victim"));
}

#[test]
fn absolute_paths_stay_inside_the_layer() {
    // docker's rule: a leading `/` names the layer's root, not the host's.
    let (p, inside) = pull_an_absolute_entry("hostile/absolute", "pwned", b"x");
    assert_eq!(fs::read(inside).unwrap(), b"x");
    p.assert_store_intact();
}

/// Layer 1 plants a symlink `evil` to a fresh [`Outside`]; layer 2 is `second`, which writes
/// `evil/victim`. Each layer unpacks into its own directory, so layer 2 never writes through the
/// symlink: the pull succeeds, nothing is written outside, and layer 2's `evil/victim` holds what
/// it wrote. Returns the pull and the two layers' directories.
fn pull_over_a_planted_symlink(repo: &str, second: LayerBuilder) -> (Pulled, PathBuf, PathBuf) {
    let o = Outside::new();
    let l1 = LayerBuilder::new()
        .symlink("evil", &o.absolute(""))
        .build(Compression::Gzip);
    let l2 = second
        .raw_file("evil/victim", b"overwritten")
        .build(Compression::Gzip);
    let (d1, d2) = (l1.diff_id.clone(), l2.diff_id.clone());
    let p = pull_image(repo, vec![l1, l2]);
    p.out.assert_success();
    o.assert_untouched();
    let (root1, root2) = (p.layer_root(&d1), p.layer_root(&d2));
    assert_eq!(fs::read(root2.join("evil/victim")).unwrap(), b"overwritten");
    (p, root1, root2)
}

#[test]
fn a_symlink_planted_by_an_earlier_layer_cannot_redirect_a_later_one() {
    // Layer 2's `evil/` is a plain directory.
    let (p, root1, _) =
        pull_over_a_planted_symlink("hostile/planted", LayerBuilder::new().dir("evil", 0o755));
    assert!(fs::symlink_metadata(root1.join("evil"))
        .unwrap()
        .file_type()
        .is_symlink());
    p.assert_store_intact();
}

#[test]
fn a_symlink_planted_by_an_earlier_layer_without_a_parent_entry() {
    pull_over_a_planted_symlink("hostile/planted2", LayerBuilder::new());
}

#[test]
fn a_hardlink_to_an_absolute_host_path_links_nothing_outside() {
    // An absolute target names the image's root: a file of a lower layer, never the host's.
    // Nothing is created at the link path; layer.json records it, and `rootfs` links the file
    // the lower layer holds at that path.
    let o = Outside::new();
    let lower = LayerBuilder::new()
        .raw_file(o.absolute("victim"), b"the image's")
        .build(Compression::Gzip);
    let top = LayerBuilder::new()
        .raw_hardlink("link", o.absolute("victim"))
        .build(Compression::Gzip);
    let diff = top.diff_id.clone();
    let p = pull_image("hostile/hardlink-abs", vec![lower, top]);
    p.out.assert_success();
    let root = p.layer_root(&diff);
    assert!(fs::symlink_metadata(root.join("link")).is_err());
    let meta = fs::read_to_string(root.with_file_name("layer.json")).unwrap();
    assert!(
        meta.contains("externalHardlinks") && meta.contains("victim"),
        "{meta}"
    );
    p.assert_store_intact();
    let flat = rootfs_of(&p);
    assert_eq!(fs::read(flat.join("link")).unwrap(), b"the image's");
    assert_eq!(
        ino(&flat.join("link")),
        ino(&flat.join(o.absolute("victim").trim_start_matches('/')))
    );
    o.assert_untouched();
}

#[test]
fn device_nodes_stay_inside_the_layer() {
    use std::os::unix::fs::FileTypeExt;
    let layer = LayerBuilder::new()
        .char_device("dev-null", 1, 3, 0o666)
        .block_device("dev-sda", 8, 0, 0o660)
        .build(Compression::Gzip);
    let diff = layer.diff_id.clone();
    let p = pull_image("hostile/devices", vec![layer]);
    p.out.assert_success();
    let root = p.layer_root(&diff);
    // As root a device node is created (inside the layer, as docker does) unless the system
    // refuses; without root it is skipped. Nothing else may appear in its place.
    for name in ["dev-null", "dev-sda"] {
        if let Ok(m) = fs::symlink_metadata(root.join(name)) {
            assert!(m.file_type().is_char_device() || m.file_type().is_block_device());
        }
    }
    p.assert_store_intact();
}

#[test]
fn fifos_are_created_inside_the_layer() {
    use std::os::unix::fs::FileTypeExt;
    // The harness writes the FIFO header with empty device fields, as many tars do.
    let layer = LayerBuilder::new().fifo("pipe", 0o644).build(Compression::Gzip);
    let diff = layer.diff_id.clone();
    let p = pull_image("hostile/fifo", vec![layer]);
    p.out.assert_success();
    let m = fs::symlink_metadata(p.layer_root(&diff).join("pipe")).unwrap();
    assert!(m.file_type().is_fifo());
    p.assert_store_intact();
}

#[test]
fn setuid_bits_are_dropped_when_not_root() {
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::process::CommandExt;
    // SAFETY: geteuid has no preconditions.
    assert!(
        unsafe { libc::geteuid() } == 0,
        "this test runs rpull as the unprivileged user 65534 and needs root to do so; CI runs as root"
    );
    let registry = registry();
    registry.push_image(
        "hostile/setuid",
        "v1",
        &Image::new(
            Platform::host(),
            vec![LayerBuilder::new()
                .entry(Entry::file("suid", b"#!/bin/sh\n").mode(0o6755))
                .build(Compression::Gzip)],
        ),
        ManifestFormat::Oci,
    );
    let sandbox = rpull();
    for dir in [sandbox.root(), sandbox.home(), sandbox.docker_config_dir()] {
        std::os::unix::fs::chown(dir, Some(65534), Some(65534)).unwrap();
    }
    let mut cmd = sandbox.command();
    cmd.arg(registry.image_ref("hostile/setuid", "v1"))
        .uid(65534)
        .gid(65534);
    let out = RunningRpull::start(cmd, std::time::Duration::from_secs(60)).wait();
    out.assert_success();
    let layers = sandbox.root().join("layers/sha256");
    let layer = fs::read_dir(&layers).unwrap().next().unwrap().unwrap().path();
    let mode = fs::metadata(layer.join("rootfs/suid"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o7777, 0o755, "mode {mode:o}");
}

#[test]
fn a_huge_size_in_a_header_is_a_tar_that_ends_early() {
    let mut e = Entry::file("big", b"tiny");
    e.size_override = Some(0o77_777_777_777);
    let p = pull("hostile/hugesize", LayerBuilder::new().entry(e));
    // Refused before a byte is written: the declared size is beyond the layer's bound.
    p.assert_refused("bytes of file data");
}

#[test]
fn a_huge_size_within_the_bound_is_a_tar_that_ends_early() {
    let mut e = Entry::file("big", b"tiny");
    e.size_override = Some(50_000_000);
    let p = pull("hostile/bigsize", LayerBuilder::new().entry(e));
    p.assert_refused("invalid tar archive");
}

#[test]
fn a_huge_pax_record_is_refused_as_go_refuses_it() {
    // The tar reader would hold the whole record in memory; Go's archive/tar refuses records
    // of 1 MiB or more with this text.
    let e = Entry::file("f", b"x").pax("comment", vec![b'c'; 16 << 20]);
    let p = pull("hostile/bigpax", LayerBuilder::new().entry(e));
    p.assert_refused("archive/tar: header field too long");
}

/// Rewrites the size field of the first header as base-256 `-1` and fixes its checksum.
fn with_negative_size(mut tar: Vec<u8>) -> Vec<u8> {
    for b in &mut tar[124..136] {
        *b = 0xff;
    }
    for b in &mut tar[148..156] {
        *b = b' ';
    }
    let sum: u32 = tar[..512].iter().map(|&b| u32::from(b)).sum();
    tar[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    tar
}

#[test]
fn a_negative_size_is_refused() {
    let tar = with_negative_size(LayerBuilder::new().file("neg", b"data", 0o644).tar());
    let blob = Compression::Gzip.compress(&tar);
    let p = pull_image(
        "hostile/negsize",
        vec![Layer::from_blob(tar, blob, Compression::Gzip)],
    );
    p.assert_refused("invalid tar archive");
}

#[test]
fn a_pax_negative_size_cannot_confuse_the_reader() {
    let p = pull(
        "hostile/negsize-pax",
        LayerBuilder::new().entry(Entry::file("neg", b"data").pax("size", "-1")),
    );
    // Either refused or read by the header's own size; never written outside, store intact.
    if p.out.success() {
        p.assert_store_intact();
    } else {
        p.assert_refused("invalid tar archive");
    }
}

#[test]
fn a_tar_that_ends_early_is_refused() {
    let tar = LayerBuilder::new().random_file("f", 20_000, 3).tar();
    let cut = tar[..5_000].to_vec();
    let blob = Compression::Gzip.compress(&cut);
    let p = pull_image(
        "hostile/short",
        vec![Layer::from_blob(cut, blob, Compression::Gzip)],
    );
    p.assert_refused("invalid tar archive");
}

fn corrupt(compression: Compression, repo: &str) -> Pulled {
    let tar = LayerBuilder::new().random_file("f", 50_000, 4).tar();
    let mut blob = compression.compress(&tar);
    let mid = blob.len() / 2;
    for b in &mut blob[mid..mid + 64] {
        *b ^= 0xa5;
    }
    // The registry serves these bytes under their own digest: only decompression can tell.
    pull_image(repo, vec![Layer::from_blob(tar, blob, compression)])
}

#[test]
fn corrupt_gzip_is_refused() {
    let p = corrupt(Compression::Gzip, "hostile/badgzip");
    p.assert_refused("layer");
}

#[test]
fn corrupt_zstd_is_refused() {
    // zstd frames without a checksum may decode to other bytes: the DiffID check refuses them.
    let p = corrupt(Compression::Zstd, "hostile/badzstd");
    p.assert_refused("layer");
}

/// A layer of one file of `len` zeros, compressed as tightly as the format allows.
fn bomb(len: usize, compression: Compression) -> Layer {
    use std::io::Write as _;
    let tar = LayerBuilder::new().file("zeros", vec![0u8; len], 0o644).tar();
    let blob = match compression {
        Compression::Zstd => zstd::encode_all(&tar[..], 19).unwrap(),
        _ => {
            let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
            enc.write_all(&tar).unwrap();
            enc.finish().unwrap()
        }
    };
    Layer::from_blob(tar, blob, compression)
}

fn bomb_is_stopped(compression: Compression, repo: &str) {
    let layer = bomb(16 << 20, compression);
    assert!(layer.size() * 500 < 16 << 20, "{} bytes", layer.size());
    pull_with_a_layer_bound(repo, vec![layer]).assert_refused("more than 1000000 bytes");
}

#[test]
fn a_gzip_decompression_bomb_is_stopped_at_the_bound() {
    bomb_is_stopped(Compression::Gzip, "hostile/bomb-gz");
}

#[test]
fn a_zstd_decompression_bomb_is_stopped_at_the_bound() {
    bomb_is_stopped(Compression::Zstd, "hostile/bomb-zst");
}

#[test]
fn a_bomb_of_trailing_zeros_after_the_archive_is_stopped_too() {
    let mut tar = LayerBuilder::new().file("a", b"x", 0o644).tar();
    tar.resize(tar.len() + (4 << 20), 0);
    let blob = Compression::Gzip.compress(&tar);
    let layer = Layer::from_blob(tar, blob, Compression::Gzip);
    pull_with_a_layer_bound("hostile/bomb2", vec![layer]).assert_refused("expands beyond 1000000 bytes");
}

#[test]
fn duplicate_entries_keep_the_last_one() {
    let layer = LayerBuilder::new()
        .file("dup", b"first", 0o644)
        .file("dup", b"second", 0o644)
        .build(Compression::Gzip);
    let diff = layer.diff_id.clone();
    let p = pull_image("hostile/dup", vec![layer]);
    p.out.assert_success();
    assert_eq!(fs::read(p.layer_root(&diff).join("dup")).unwrap(), b"second");
    p.assert_store_intact();
}

#[test]
fn an_absolute_whiteout_stays_a_marker_inside_the_layer() {
    let (p, marker) = pull_an_absolute_entry("hostile/whiteout-abs", ".wh.victim", b"");
    assert!(
        fs::symlink_metadata(marker).is_ok(),
        "the whiteout is kept as a marker"
    );
    p.assert_store_intact();
}

// ---- hardlinks into lower layers ----

/// The inode of `path` (not following a symlink).
fn ino(path: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    fs::symlink_metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .ino()
}

/// `rpull rootfs` of the pulled image into a fresh directory, which it returns.
fn rootfs_of(p: &Pulled) -> PathBuf {
    let dest = p.sandbox.home().join("flat");
    p.sandbox
        .run(["rootfs", &p.reference, dest.to_str().unwrap()])
        .assert_success();
    dest
}

/// A layer hardlinking `srv/link` to `srv/target`, which it does not hold itself: the link
/// goes into whatever the layers below it hold there.
fn linking_layer() -> Layer {
    LayerBuilder::new()
        .dir("srv", 0o755)
        .raw_hardlink("srv/link", "srv/target")
        .build(Compression::Gzip)
}

/// A base layer holding the file `srv/target`.
fn target_file_layer() -> Layer {
    LayerBuilder::new()
        .dir("srv", 0o755)
        .file("srv/target", b"payload", 0o644)
        .build(Compression::Gzip)
}

#[test]
fn a_hardlink_to_a_directory_of_a_lower_layer_is_refused_at_pull() {
    let dir_base = LayerBuilder::new()
        .dir("srv", 0o755)
        .dir("srv/target", 0o755)
        .file("srv/target/x", b"x", 0o644)
        .build(Compression::Gzip);
    let link = linking_layer();
    let (base_diff, link_diff) = (dir_base.diff_id.clone(), link.diff_id.clone());
    let link_id = link.digest[7..19].to_string();
    let p = pull_image("hostile/xlink-dir", vec![dir_base, link.clone()]);
    // As containerd's link(2) over the parents: EPERM.
    p.assert_refused(&format!(
        "failed to register layer: hardlink \"srv/link\" to \"srv/target\" in layer {link_diff}: \
         the target is a directory in the lower layers (link: operation not permitted)"
    ));
    // The refusal is the image's: both layers stay in the store, and the same linking layer
    // over a base holding a file there is an image that pulls, reusing it.
    assert!(p.layer_root(&base_diff).is_dir() && p.layer_root(&link_diff).is_dir());
    let registry = registry();
    registry.push_layers("hostile/xlink-file", "v1", vec![target_file_layer(), link]);
    let other = Pulled::run(
        p.sandbox,
        &["--retry-delay", "10ms"],
        registry.image_ref("hostile/xlink-file", "v1"),
    );
    other.out.assert_success();
    assert!(
        other.out.stdout.contains(&format!("{link_id}: Already exists")),
        "{}",
        other.out.stdout
    );
    let flat = rootfs_of(&other);
    assert_eq!(fs::read(flat.join("srv/link")).unwrap(), b"payload");
    assert_eq!(ino(&flat.join("srv/link")), ino(&flat.join("srv/target")));
    other.assert_store_intact();
}

#[test]
fn a_hardlink_to_a_file_a_middle_layer_whited_out_is_refused_at_pull() {
    // A whiteout of the file, and an opaque marker on its directory.
    let whiteout = LayerBuilder::new().dir("srv", 0o755).whiteout("srv/target");
    let opaque = LayerBuilder::new().dir("srv", 0o755).opaque("srv");
    for (repo, middle) in [
        ("hostile/xlink-whiteout", whiteout),
        ("hostile/xlink-opaque", opaque),
    ] {
        let middle = middle.build(Compression::Gzip);
        let middle_diff = middle.diff_id.clone();
        let p = pull_image(repo, vec![target_file_layer(), middle, linking_layer()]);
        // As containerd's link(2) over the parents: ENOENT.
        p.assert_refused(&format!(
            "the target is whited out by layer {middle_diff} (link: no such file or directory)"
        ));
    }
}

#[test]
fn hardlinks_to_files_of_lower_layers_still_pull_and_rootfs_makes_them() {
    let base = LayerBuilder::new()
        .dir("srv", 0o755)
        .dir("srv/data", 0o755)
        .file("srv/data/target", b"payload", 0o644)
        .dir("srv/opq", 0o755)
        .file("srv/opq/old", b"old", 0o644)
        .build(Compression::Gzip);
    // The middle layer merges `srv/data`, hides what `srv/opq` held, deletes a file the links
    // do not use, and links `srv/m` to the base's file.
    let middle = LayerBuilder::new()
        .dir("srv", 0o755)
        .dir("srv/data", 0o755)
        .file("srv/data/new", b"new", 0o644)
        .opaque("srv/opq")
        .whiteout("srv/opq/old")
        .raw_hardlink("srv/m", "srv/data/target")
        .build(Compression::Gzip);
    // The top links to the base's file through the merged directory, and to the middle
    // layer's link.
    let top = LayerBuilder::new()
        .dir("srv", 0o755)
        .raw_hardlink("srv/link", "srv/data/target")
        .raw_hardlink("srv/link2", "srv/m")
        .build(Compression::Gzip);
    let p = pull_image("hostile/xlink-valid", vec![base, middle, top]);
    p.out.assert_success();
    p.assert_store_intact();
    let flat = rootfs_of(&p);
    let target = ino(&flat.join("srv/data/target"));
    for link in ["srv/m", "srv/link", "srv/link2"] {
        assert_eq!(fs::read(flat.join(link)).unwrap(), b"payload", "{link}");
        assert_eq!(ino(&flat.join(link)), target, "{link}");
    }
    assert!(flat.join("srv/data/new").is_file());
    assert!(!flat.join("srv/opq/old").exists());
}

// ---- hostile registry answers (through the fault proxy) ----

struct Proxied {
    proxy: FaultProxy,
    pushed: PushedImage,
}

fn proxied(repo: &str, seed: u64) -> Proxied {
    let registry = registry();
    let layer = Layer::random("data.bin", 100_000, seed, Compression::Gzip);
    let pushed = registry.push_layers(repo, "v1", vec![layer]);
    Proxied {
        proxy: FaultProxy::start(&registry.host()),
        pushed,
    }
}

/// [`proxied`] with `rule` on the proxy.
fn proxied_with(repo: &str, seed: u64, rule: Rule) -> Proxied {
    let x = proxied(repo, seed);
    x.proxy.add_rule(rule);
    x
}

/// Pushes `<repo>:v1` (layer seed `seed`) behind a fault proxy with the rule `rule` makes, and
/// pulls it: refused with `needle`.
fn assert_answer_refused(repo: &str, seed: u64, rule: impl FnOnce(&Proxied) -> Rule, needle: &str) {
    let x = proxied(repo, seed);
    x.proxy.add_rule(rule(&x));
    x.pull(":v1").assert_refused(needle);
}

/// One `#[test]` per case `name: repo, seed, needle, |x| rule`, each calling
/// [`assert_answer_refused`].
macro_rules! answer_refused_tests {
    ($($name:ident: $repo:literal, $seed:literal, $needle:literal, |$x:ident| $rule:expr;)+) => {
        $(
            #[test]
            fn $name() {
                assert_answer_refused($repo, $seed, |$x| $rule, $needle);
            }
        )+
    };
}

impl Proxied {
    fn pull(&self, reference: &str) -> Pulled {
        self.pull_args(&["--retry-delay", "10ms"], reference)
    }

    /// `rpull <args…> <proxy>/<repo><reference>`.
    fn pull_args(&self, args: &[&str], reference: &str) -> Pulled {
        let reference = format!("{}/{}{reference}", self.proxy.host(), self.pushed.repo);
        Pulled::run(rpull(), args, reference)
    }

    fn layer(&self) -> &str {
        &self.pushed.layer_digests[0][7..]
    }

    /// Applies `fault` to every GET of the layer's blob.
    fn fault_layer_gets(&self, fault: Fault) {
        self.proxy.add_rule(Rule::get(self.layer(), fault));
    }
}

// Each case is a test of its own: `<repo>:v1` behind a fault proxy with the rule the closure
// makes, pulled: refused with the message given.
answer_refused_tests! {
    a_blob_not_matching_its_digest_is_refused: "hostile/r-flip", 11, "verification failed",
        |x| Rule::get(x.layer(), Fault::FlipByte(5000));
    a_blob_longer_than_declared_is_refused: "hostile/r-long", 13, "longer than",
        |x| Rule::get(x.layer(), Fault::AppendBytes(100));
    an_endless_blob_is_cut_at_its_declared_size: "hostile/r-endless", 15, "longer than",
        |x| Rule::get(x.layer(), Fault::AppendBytes(1 << 40));
    an_endless_manifest_is_refused: "hostile/r-endless-manifest", 16, "larger than",
        |_x| Rule::new("/manifests/", Fault::AppendBytes(1 << 40));
    an_invalid_json_manifest_is_refused: "hostile/r-json", 17, "invalid manifest",
        |_x| Rule::new(
            "/manifests/",
            Fault::oci_manifest("{\"schemaVersion\": 2, \"layers\": ["),
        );
}

#[test]
fn a_manifest_not_matching_its_digest_is_refused() {
    let x = proxied_with(
        "hostile/r-manifest",
        12,
        Rule::get("/manifests/", Fault::FlipByte(20)),
    );
    let digest = x.pushed.manifest_digest.clone();
    x.pull(&format!("@{digest}")).assert_refused("digest");
}

#[test]
fn a_blob_shorter_than_declared_is_refused() {
    let x = proxied("hostile/r-short", 14);
    x.fault_layer_gets(Fault::DropAfter(10_000));
    let p = x.pull(":v1");
    assert!(p.out.stderr.contains("blob"), "{}", p.out.stderr);
    p.assert_refused("");
}

#[test]
fn a_redirect_loop_is_refused() {
    let x = proxied("hostile/r-loop", 18);
    let path = format!("/v2/hostile/r-loop/blobs/sha256:{}", x.layer());
    x.proxy.add_rule(Rule::new(
        x.layer(),
        Fault::status(307, &[("Location", &path)], ""),
    ));
    x.pull(":v1").assert_refused("redirect");
}

#[test]
fn a_wrong_config_media_type_is_refused() {
    let layer = LayerBuilder::new()
        .file("a", b"a", 0o644)
        .build(Compression::Gzip);
    let image = Image::new(Platform::host(), vec![layer]);
    push_edited("hostile/mt-config", &image, |m| {
        m["config"]["mediaType"] = "application/vnd.oci.image.layer.v1.tar+gzip".into();
    });
    let reference = registry().image_ref("hostile/mt-config", "v2");
    Pulled::run(rpull(), &[], reference).assert_refused("media type");
}

#[test]
fn a_layer_of_an_unknown_media_type_is_refused() {
    let layer = LayerBuilder::new()
        .file("a", b"a", 0o644)
        .build(Compression::Gzip)
        .with_media_type("application/x-shockwave-flash");
    let p = pull_image("hostile/mt-layer", vec![layer]);
    p.assert_refused("media type");
}

// ---- special files as outputs ----

fn mkfifo(path: &Path) {
    use std::os::unix::ffi::OsStrExt as _;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
    // SAFETY: a NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0, "mkfifo");
}

#[test]
fn save_never_replaces_a_special_file() {
    use std::os::unix::fs::{symlink, FileTypeExt};
    let registry = registry();
    registry.push_small_image("hostile/save-special", "v1", 41);
    let reference = registry.image_ref("hostile/save-special", "v1");
    let sandbox = rpull();
    sandbox.run([&reference]).assert_success();
    let dir = temp_dir("hostile-save-");
    let at = |name: &str| dir.path().join(name);
    let save = |path: &Path| sandbox.run(["save", "-o", path.to_str().unwrap(), &reference]);

    // A regular file, for comparison; a symlink to it is followed and stays a symlink.
    save(&at("plain.tar")).assert_success();
    let archive = fs::read(at("plain.tar")).unwrap();
    fs::write(at("target.tar"), b"old").unwrap();
    symlink("target.tar", at("link.tar")).unwrap();
    save(&at("link.tar")).assert_success();
    assert!(fs::symlink_metadata(at("link.tar")).unwrap().is_symlink());
    assert_eq!(fs::read(at("target.tar")).unwrap(), archive);

    // A device (reached through a symlink, so that a broken rpull replaces only the link).
    symlink("/dev/null", at("null")).unwrap();
    save(&at("null")).assert_code(1).assert_stderr_lines(&[&format!(
        "failed to save image: invalid output path: {:?} must be a directory or a regular file: got a device",
        at("null").display().to_string()
    )]);
    assert_eq!(fs::read_link(at("null")).unwrap(), Path::new("/dev/null"));
    assert!(fs::metadata("/dev/null").unwrap().file_type().is_char_device());

    // A socket is refused and stays.
    let _listener = std::os::unix::net::UnixListener::bind(at("sock")).unwrap();
    let out = save(&at("sock"));
    out.assert_failed_with("got a socket");
    assert!(fs::symlink_metadata(at("sock")).unwrap().file_type().is_socket());

    // A FIFO is written through: the reader gets the archive, the FIFO stays.
    mkfifo(&at("fifo"));
    let (tx, rx) = std::sync::mpsc::channel();
    let fifo = at("fifo");
    std::thread::spawn(move || {
        let _ = tx.send(fs::read(fifo).unwrap());
    });
    save(&at("fifo")).assert_success();
    let got = rx
        .recv_timeout(std::time::Duration::from_secs(20))
        .expect("nothing was written into the FIFO");
    assert_eq!(got, archive);
    assert!(fs::symlink_metadata(at("fifo")).unwrap().file_type().is_fifo());
    let names: Vec<_> = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(names.is_empty(), "temporary files left: {names:?}");
}

// ---- hostile token services ----

#[test]
fn a_token_lifetime_past_any_clock_is_clamped() {
    let auth = public_token_image("hostile/token-life", 42);
    let TokenAuth { tokens, registry, .. } = &auth;
    for huge in [1u64 << 63, u64::MAX] {
        tokens.expires_in(huge);
        let sandbox = rpull();
        let out = sandbox.run([registry.image_ref("hostile/token-life", "v1")]);
        out.assert_success();
        assert!(!out.stderr.contains("panicked"), "{out}");
    }
}

// ---- origins: scheme, host and effective port ----

/// A loopback address of this test process's own (127.77.x.y), so a test can listen on a
/// default port (80, 443) without meeting another process there.
fn own_loopback(n: u8) -> String {
    let pid = std::process::id();
    format!("127.77.{}.{}", (pid % 250) as u8 + 1, n)
}

fn assert_root(why: &str) {
    // SAFETY: geteuid has no preconditions.
    assert!(
        unsafe { libc::geteuid() } == 0,
        "this test {why} and needs root to listen there; CI runs as root"
    );
}

#[test]
fn credentials_never_reach_another_port_of_the_same_host() {
    assert_root("serves a registry on port 80 (a name without a port)");
    let auth = token_auth(&["hostile/origin"], |t| {
        t.user("u", "TopSecret");
    });
    let TokenAuth { registry, .. } = &auth;
    let pushed = registry.push_small_image("hostile/origin", "v1", 43);
    let ip = own_loopback(1);
    // The registry as `<ip>` (port 80), redirecting blobs to another port of the same host.
    let front = FaultProxy::start_at(&format!("{ip}:80"), &registry.host());
    let other_port = FaultProxy::start_at(&format!("{ip}:0"), &registry.host());
    front.redirect_blob_gets(format!("http://{}", other_port.host()));
    let sandbox = rpull();
    sandbox.write_docker_config(
        &serde_json::json!({"auths": {ip.clone(): {"username": "u", "password": "TopSecret"}}}),
    );
    // The blobs are refused without credentials at the other port: the pull fails, and no
    // request there carried any.
    let out = sandbox.run(["--retry", "0", &format!("{ip}/hostile/origin:v1")]);
    let at_other = other_port.requests();
    assert!(
        at_other
            .iter()
            .any(|q| q.path.contains(&pushed.layer_digests[0][7..])
                || q.path.contains(&pushed.config_digest[7..])),
        "the blob requests were redirected: {at_other:?}\n{out}"
    );
    assert_no_authorization(&at_other, "to another port");
    assert!(
        front
            .requests_to("/manifests/")
            .iter()
            .any(|q| q.authorization.is_some()),
        "the registry itself gets the token"
    );
    assert!(
        !out.stdout.contains("TopSecret") && !out.stderr.contains("TopSecret"),
        "{out}"
    );
}

#[test]
fn the_plain_http_fallback_keeps_an_explicit_port_443() {
    assert_root("serves plain HTTP on port 443");
    let registry = registry();
    registry.push_small_image("hostile/port443", "v1", 44);
    let ip = own_loopback(2);
    let front = FaultProxy::start_at(&format!("{ip}:443"), &registry.host());
    let sandbox = rpull();
    let out = sandbox.run(["--tls-verify=false", &format!("{ip}:443/hostile/port443:v1")]);
    out.assert_success();
    assert!(
        front.requests().iter().any(|q| q.path.contains("/manifests/")),
        "the registry on :443 served the pull over plain HTTP"
    );
}

#[test]
fn a_large_ping_answer_is_not_read() {
    let registry = registry();
    registry.push_small_image("hostile/big-ping", "v1", 45);
    let proxy = FaultProxy::start(&registry.host());
    proxy.add_rule(
        Rule::get(
            "/v2/",
            Fault::status(
                200,
                &[("Content-Type", "text/html")],
                &"<p>welcome</p>".repeat(20_000),
            ),
        )
        .times(1),
    );
    let sandbox = rpull();
    let out = sandbox.run([format!("{}/hostile/big-ping:v1", proxy.host())]);
    out.assert_success();
    let first = &proxy.requests()[0];
    assert_eq!(
        (first.path.as_str(), first.status),
        ("/v2/", 200),
        "{:?}",
        proxy.requests()
    );
}

// ---- server text is shown scrubbed ----

#[test]
fn a_token_service_echoing_the_password_gets_it_scrubbed() {
    let auth = token_auth(&["hostile/echo"], |t| {
        t.user("u", "the-real-one").echo_authorization();
    });
    let TokenAuth { tokens, registry, .. } = &auth;
    registry.push_small_image("hostile/echo", "v1", 46);
    let image = registry.image_ref("hostile/echo", "v1");
    let sandbox = rpull();
    for format in ["plain", "json"] {
        let out = sandbox.run(["--format", format, "--creds", "u:TopSecret", &image]);
        out.assert_code(1);
        // The service did echo it: the scrubbed form is what is left.
        let shown = format!("{}{}", out.stdout, out.stderr);
        assert!(shown.contains("got Basic <redacted> = <redacted>"), "{out}");
        for secret in ["TopSecret", "dTpUb3BTZWNyZXQ="] {
            assert!(!shown.contains(secret), "{secret} shown ({format})\n{out}");
        }
    }
    assert!(
        tokens.requests().iter().any(|r| r.authorization.is_some()),
        "the credentials were sent to the token service"
    );
}

#[test]
fn terminal_control_sequences_from_a_registry_are_stripped() {
    let x = proxied_with(
        "hostile/ansi",
        47,
        Rule::new(
            "/manifests/",
            Fault::status(
                404,
                &[("Content-Type", "application/json")],
                r#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"\u001b]0;pwned\u0007\u001b[2J\u001b[31mgone\u009b0m\r"}]}"#,
            ),
        ),
    );
    let p = x.pull(":v1");
    p.assert_refused("manifest unknown: gone");
    assert!(
        !p.out.stderr.contains('\u{1b}') && !p.out.stderr.contains('\r'),
        "{:?}",
        p.out.stderr
    );
    let json = p.sandbox.run(["--format", "json", &p.reference]);
    json.assert_code(1);
    assert!(json.stdout.contains("manifest unknown: gone"), "{json}");
    for bad in ["\\u001b", "\\u009b", "\\r", "\u{1b}"] {
        assert!(!json.stdout.contains(bad), "{bad} in {json}");
    }
}

// ---- every blob against its descriptor ----

/// Pushes `image` as `<repo>:v1`, then `<repo>:v2` with the manifest changed by `edit`.
fn push_edited(repo: &str, image: &Image, edit: impl FnOnce(&mut serde_json::Value)) -> PushedImage {
    let registry = registry();
    let pushed = registry.push_image(repo, "v1", image, ManifestFormat::Oci);
    let mut manifest: serde_json::Value = serde_json::from_slice(&pushed.manifest_bytes).unwrap();
    edit(&mut manifest);
    registry.push_manifest_json(repo, "v2", &manifest);
    pushed
}

#[test]
fn a_config_of_the_wrong_size_is_refused() {
    let image = Image::new(
        Platform::host(),
        vec![LayerBuilder::new()
            .file("a", b"a", 0o644)
            .build(Compression::Gzip)],
    );
    let pushed = push_edited("hostile/config-size", &image, |m| {
        let size = m["config"]["size"].as_u64().unwrap();
        m["config"]["size"] = (size + 1).into();
    });
    let reference = registry().image_ref("hostile/config-size", "v2");
    let p = Pulled::run(rpull(), &[], reference);
    p.assert_refused(&format!(
        "image config verification failed for digest {}: {} bytes, its descriptor says {}",
        pushed.config_digest,
        image.config_bytes().len(),
        image.config_bytes().len() + 1
    ));
    // The store holds nothing of it, so check passes and a good pull is unaffected.
    p.sandbox
        .run([registry().image_ref("hostile/config-size", "v1")])
        .assert_success();
    p.assert_store_intact();

    // A size past any cap (2^64-1, which the registry refuses to store: a hostile one serves
    // it) is refused before a byte is read, and nothing wraps.
    let mut manifest: serde_json::Value = serde_json::from_slice(&pushed.manifest_bytes).unwrap();
    manifest["config"]["size"] = u64::MAX.into();
    let proxy = FaultProxy::start(&registry().host());
    proxy.add_rule(Rule::new(
        "/manifests/v3",
        Fault::oci_manifest(&manifest.to_string()),
    ));
    let out = p.sandbox.run([
        "--format",
        "json",
        &format!("{}/hostile/config-size:v3", proxy.host()),
    ]);
    out.assert_code(1);
    assert!(
        out.stdout.contains(&format!(
            "image config {} of 18446744073709551615 bytes is larger than the 8388608 bytes limit",
            pushed.config_digest
        )),
        "{out}"
    );
}

#[test]
fn caps_apply_to_blobs_already_in_the_store() {
    // A 9 MiB layer, pulled once, then named as a config and as a manifest.
    let layer = Layer::random("big.bin", 9 << 20, 48, Compression::Gzip);
    let (digest, size) = (layer.digest.clone(), layer.size());
    assert!(size > 8 << 20);
    let image = Image::new(Platform::host(), vec![layer]);
    push_edited("hostile/stored-cap", &image, |m| {
        m["config"]["digest"] = digest.clone().into();
        m["config"]["size"] = size.into();
    });
    let sandbox = rpull();
    sandbox
        .run([registry().image_ref("hostile/stored-cap", "v1")])
        .assert_success();
    let out = sandbox.run([registry().image_ref("hostile/stored-cap", "v2")]);
    out.assert_code(1);
    assert_lines(
        &out.stderr,
        &[&format!(
            "image config {digest} of {size} bytes is larger than the 8388608 bytes limit"
        )],
    );
    let out = sandbox.run([registry().digest_ref("hostile/stored-cap", &digest)]);
    out.assert_failed_with(&format!("manifest too large: {size} bytes"));
    let check = sandbox.run(["check"]);
    assert!(check.success(), "{check}");
}

#[test]
fn a_nested_index_is_refused() {
    let registry = registry();
    let image = registry.push_small_image("hostile/nested", "image", 49);
    let inner = registry.push_index(
        "hostile/nested",
        "inner",
        ManifestFormat::Oci,
        &[image.index_entry()],
    );
    let inner_entry = IndexEntry {
        media_type: inner.media_type.clone(),
        digest: inner.digest.clone(),
        size: inner.bytes.len() as u64,
        platform: Some(Platform::host()),
        annotations: Default::default(),
    };
    let outer = registry.push_index("hostile/nested", "v1", ManifestFormat::Oci, &[inner_entry]);
    let proxy = FaultProxy::start(&registry.host());
    let reference = format!("{}/hostile/nested:v1", proxy.host());
    let p = Pulled::run(rpull(), &[], reference);
    p.assert_refused(&format!(
        "unsupported manifest format: the index {} names another index ({}); nested indexes are not supported",
        outer.digest, inner.digest
    ));
    // One level is read, not more: the inner index is the last manifest fetched.
    let gets: Vec<String> = proxy.gets("/manifests/").into_iter().map(|q| q.path).collect();
    assert!(
        gets.iter().all(|g| !g.contains(&image.manifest_digest)),
        "{gets:?}"
    );
}

// ---- tag lists: cancellable and bounded ----

#[test]
fn an_interrupt_while_the_tag_list_stalls_stops_the_pull() {
    let x = proxied_with(
        "hostile/tags-stall",
        50,
        Rule::new(
            "/tags/list",
            Fault::StallAfter(0, std::time::Duration::from_secs(60)),
        ),
    );
    let sandbox = rpull();
    let mut running = sandbox.spawn(["-a", &format!("{}/{}", x.proxy.host(), x.pushed.repo)]);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !x.proxy.requests().iter().any(|q| q.path.contains("/tags/list")) {
        assert!(std::time::Instant::now() < deadline, "no tag list request");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    std::thread::sleep(std::time::Duration::from_millis(200));
    let interrupted = std::time::Instant::now();
    running.interrupt();
    let out = running.wait();
    assert!(
        interrupted.elapsed() < std::time::Duration::from_secs(10),
        "the first SIGINT took {:?}",
        interrupted.elapsed()
    );
    out.assert_code(130);
}

#[test]
fn an_endless_tag_list_is_cut_at_its_total_bound() {
    let x = proxied("hostile/tags-endless", 51);
    // Every page is 1 MiB of tags and names a next page: the list never ends.
    let tags: Vec<String> = (0..40_000).map(|i| format!("t{i:020}")).collect();
    let body = serde_json::json!({"name": x.pushed.repo, "tags": tags}).to_string();
    assert!(body.len() > (1 << 20) - 100_000, "{}", body.len());
    x.proxy.add_rule(Rule::new(
        "/tags/list",
        Fault::status(
            200,
            &[
                ("Content-Type", "application/json"),
                (
                    "Link",
                    &format!("</v2/{}/tags/list?n=40000&last=x>; rel=\"next\"", x.pushed.repo),
                ),
            ],
            &body,
        ),
    ));
    let p = x.pull_args(&["-a"], "");
    p.assert_refused(&format!(
        "the tag list of {} is larger than 33554432 bytes",
        x.pushed.repo
    ));
    let pages = x
        .proxy
        .requests()
        .iter()
        .filter(|q| q.path.contains("/tags/list"))
        .count();
    assert!((30..=40).contains(&pages), "{pages} pages read");
}

#[test]
fn a_tag_list_link_to_another_origin_is_refused_and_gets_no_credentials() {
    let auth = token_auth(&["hostile/taglink"], |t| {
        t.user("u", "TopSecret");
    });
    let TokenAuth { registry, .. } = &auth;
    registry.push_small_image("hostile/taglink", "v1", 44);
    let front = FaultProxy::start(&registry.host());
    let elsewhere = FaultProxy::start(&registry.host());
    let link = format!(
        "<http://{}/v2/hostile/taglink/tags/list?last=v1>; rel=\"next\"",
        elsewhere.host()
    );
    front.add_rule(Rule::get(
        "/tags/list",
        Fault::status(
            200,
            &[("Content-Type", "application/json"), ("Link", &link)],
            r#"{"name":"hostile/taglink","tags":["v1"]}"#,
        ),
    ));
    let sandbox = rpull();
    sandbox.write_docker_config(
        &serde_json::json!({"auths": {front.host(): {"username": "u", "password": "TopSecret"}}}),
    );
    let out = sandbox.run(["-a", &format!("{}/hostile/taglink", front.host())]);
    out.assert_failed_with(&format!(
        "the tag list of hostile/taglink names its next page on another origin: http://{}",
        elsewhere.host()
    ));
    assert!(
        front
            .requests_to("/tags/list")
            .iter()
            .any(|q| q.authorization.is_some()),
        "the registry itself gets the token"
    );
    assert_no_authorization(&elsewhere.requests(), "a tag list's Link");
    assert!(elsewhere.requests().is_empty(), "{:?}", elsewhere.requests());
}

// ---- a stdout that goes away ----

/// Runs `rpull --root … <args>` with stdout a pipe whose reader is gone (every write: EPIPE),
/// or, with `closed`, with file descriptor 1 closed (`>&-`).
fn run_with_broken_stdout(sandbox: &Rpull, args: &[&str], closed: bool) -> std::process::Output {
    use std::os::fd::{FromRawFd, OwnedFd};
    use std::os::unix::process::CommandExt;
    use std::process::Stdio;
    let mut cmd = sandbox.command();
    cmd.args(args).stderr(Stdio::piped());
    if closed {
        cmd.stdout(Stdio::null());
        // SAFETY: close is async-signal-safe.
        unsafe {
            cmd.pre_exec(|| {
                libc::close(1);
                Ok(())
            });
        }
    } else {
        let mut fds = [0; 2];
        // SAFETY: pipe2 fills the two descriptors it creates.
        assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
        // SAFETY: both descriptors were just created and are owned here only.
        let (reader, writer) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        drop(reader);
        cmd.stdout(Stdio::from(writer));
    }
    cmd.output().expect("running rpull")
}

#[test]
fn a_closed_stdout_never_leaves_a_command_half_done() {
    let registry = registry();
    registry.push_small_image("hostile/epipe", "v1", 52);
    registry.push_small_image("hostile/epipe", "v2", 53);
    let sandbox = rpull();
    for tag in ["v1", "v2"] {
        sandbox
            .run([registry.image_ref("hostile/epipe", tag)])
            .assert_success();
    }
    let blobs = |s: &Rpull| fs::read_dir(s.root().join("blobs/sha256")).unwrap().count();
    let quiet = |out: &std::process::Output, what: &str| {
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{what}: {:?}\n{stderr}", out.status);
        assert!(stderr.is_empty(), "{what}: {stderr}");
    };
    quiet(&run_with_broken_stdout(&sandbox, &["check"], false), "check");
    // rmi untags, then collects: both happen although nothing can be printed.
    let before = blobs(&sandbox);
    let v1 = registry.image_ref("hostile/epipe", "v1");
    quiet(&run_with_broken_stdout(&sandbox, &["rmi", &v1], false), "rmi");
    assert_eq!(
        blobs(&sandbox),
        before - 3,
        "rmi's collection ran (manifest, config, layer)"
    );
    let images = sandbox.run(["images", "-q"]);
    assert_eq!(images.stdout.lines().count(), 1, "{images}");
    // prune finds nothing left to do, and says so quietly too.
    quiet(&run_with_broken_stdout(&sandbox, &["prune"], false), "prune");
    sandbox.run(["check"]).assert_success();

    // save's output is its result: a closed stdout is an error, not a silent success.
    let v2 = registry.image_ref("hostile/epipe", "v2");
    let out = run_with_broken_stdout(&sandbox, &["save", &v2], true);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert_lines(
        &String::from_utf8_lossy(&out.stderr),
        &["failed to save image: standard output is closed. Use the -o flag or redirect"],
    );
    let out = run_with_broken_stdout(&sandbox, &["save", &v2], false);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Broken pipe"),
        "{out:?}"
    );
}

// ---- platforms: containerd's matcher, docker's no-match text ----

/// Pushes one small image per platform and an index over them as `<repo>:v1`.
fn push_platforms(repo: &str, platforms: &[Platform]) -> String {
    let registry = registry();
    let images: Vec<Image> = platforms
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let layer = LayerBuilder::new()
                .file(&format!("p{i}"), format!("{p}").as_bytes(), 0o644)
                .build(Compression::Gzip);
            Image::new(p.clone(), vec![layer])
        })
        .collect();
    registry.push_multi_platform(repo, "v1", ManifestFormat::Oci, &images, false);
    registry.image_ref(repo, "v1")
}

/// `rpull --platform <platform> <reference>` fails with docker's no-match line, exit 1.
fn assert_no_match(sandbox: &Rpull, platform: &str, reference: &str) {
    sandbox
        .run(["--platform", platform, reference])
        .assert_code(1)
        .assert_stderr_lines(&[&format!(
            "no matching manifest for {platform} in the manifest list entries"
        )]);
}

#[test]
fn arm64_variants_fall_back_exactly_as_containerd_does() {
    let reference = push_platforms(
        "hostile/arm64-variants",
        &[Platform::parse("linux/amd64"), Platform::parse("linux/arm/v7")],
    );
    // v8.10 is outside containerd's arm64 table: nothing matches, not even arm/v7.
    let sandbox = rpull();
    assert_no_match(&sandbox, "linux/arm64/v8.10", &reference);
    // arm64/v9.6 runs v8.0…v8.9, not an entry that says v8.10.
    let reference = push_platforms(
        "hostile/arm64-v810",
        &[
            Platform::parse("linux/amd64"),
            Platform::parse("linux/arm64/v8.10"),
        ],
    );
    assert_no_match(&sandbox, "linux/arm64/v9.6", &reference);
    // …while a v8.9 entry is taken.
    let reference = push_platforms(
        "hostile/arm64-v89",
        &[
            Platform::parse("linux/amd64"),
            Platform::parse("linux/arm64/v8.9"),
        ],
    );
    sandbox
        .run(["--platform", "linux/arm64/v9.6", &reference])
        .assert_success();
}

#[test]
fn the_no_match_error_keeps_the_os_version() {
    let mut windows = Platform::parse("windows/amd64");
    windows.os_version = Some("10.0.20348.2000".into());
    let reference = push_platforms(
        "hostile/windows-version",
        &[Platform::parse("linux/amd64"), windows],
    );
    assert_no_match(&rpull(), "windows(10.0.17763)/amd64", &reference);
}

#[test]
fn sha512_digests_are_refused_before_anything_is_fetched() {
    let x = proxied("hostile/sha512", 54);
    let sha512 = format!("sha512:{}", "ab".repeat(64));
    let mut manifest: serde_json::Value = serde_json::from_slice(&x.pushed.manifest_bytes).unwrap();
    manifest["layers"][0]["digest"] = sha512.clone().into();
    x.proxy.add_rule(Rule::new(
        "/manifests/v2",
        Fault::oci_manifest(&manifest.to_string()),
    ));
    x.pull(":v2")
        .assert_refused(&format!("{sha512}: unsupported digest algorithm"));
    // A digest reference of that algorithm: refused before the registry is asked for it.
    x.pull(&format!("@{sha512}"))
        .assert_refused(&format!("{sha512}: unsupported digest algorithm"));
    let fetched: Vec<String> = x
        .proxy
        .requests()
        .into_iter()
        .map(|q| q.path)
        .filter(|p| p.contains("/blobs/") || p.contains("sha512:"))
        .collect();
    assert!(fetched.is_empty(), "fetched: {fetched:?}");
}

// ---- PAX sparse files, as Go's archive/tar reads them ----

/// "hello" at 0 and "world" at 10000 in a 20000-byte file.
fn sparse_expected() -> Vec<u8> {
    let mut want = vec![0u8; 20_000];
    want[..5].copy_from_slice(b"hello");
    want[10_000..10_005].copy_from_slice(b"world");
    want
}

#[test]
fn pax_sparse_files_unpack_as_docker_does() {
    let map_1x0 = {
        let mut m = b"2\n0\n5\n10000\n5\n".to_vec();
        m.resize(512, 0);
        m.extend_from_slice(b"helloworld");
        m
    };
    let layer = LayerBuilder::new()
        // Format 0.0: repeated offset/numbytes records, the name as is.
        .entry(
            Entry::file("sparse00", b"helloworld")
                .pax("GNU.sparse.size", "20000")
                .pax("GNU.sparse.numblocks", "2")
                .pax("GNU.sparse.offset", "0")
                .pax("GNU.sparse.numbytes", "5")
                .pax("GNU.sparse.offset", "10000")
                .pax("GNU.sparse.numbytes", "5"),
        )
        // Format 0.1: one map record, the real name in GNU.sparse.name.
        .entry(
            Entry::file("GNUSparseFile.0/sparse01", b"helloworld")
                .pax("GNU.sparse.major", "0")
                .pax("GNU.sparse.minor", "1")
                .pax("GNU.sparse.name", "sparse01")
                .pax("GNU.sparse.size", "20000")
                .pax("GNU.sparse.numblocks", "2")
                .pax("GNU.sparse.map", "0,5,10000,5"),
        )
        // Format 1.0: the map opens the data.
        .entry(
            Entry::file("GNUSparseFile.0/sparse10", map_1x0)
                .pax("GNU.sparse.major", "1")
                .pax("GNU.sparse.minor", "0")
                .pax("GNU.sparse.name", "sparse10")
                .pax("GNU.sparse.realsize", "20000"),
        )
        .build(Compression::Gzip);
    let diff = layer.diff_id.clone();
    let p = pull_image("hostile/pax-sparse", vec![layer]);
    p.out.assert_success();
    let root = p.layer_root(&diff);
    for name in ["sparse00", "sparse01", "sparse10"] {
        assert_eq!(fs::read(root.join(name)).unwrap(), sparse_expected(), "{name}");
    }
    assert!(
        !root.join("GNUSparseFile.0").exists(),
        "the placeholder name was used"
    );
    p.assert_store_intact();
}

#[test]
fn a_pax_sparse_map_past_its_size_is_refused() {
    let p = pull(
        "hostile/pax-sparse-bad",
        LayerBuilder::new().entry(
            Entry::file("GNUSparseFile.0/bad", b"helloworld")
                .pax("GNU.sparse.major", "0")
                .pax("GNU.sparse.minor", "1")
                .pax("GNU.sparse.name", "bad")
                .pax("GNU.sparse.size", "100")
                .pax("GNU.sparse.numblocks", "2")
                .pax("GNU.sparse.map", "0,5,10000,5"),
        ),
    );
    p.assert_refused("its sparse map does not fit its size");
}

#[test]
fn a_path_past_path_max_once_published_is_refused_at_pull() {
    // 20 directories of 200 bytes: it fits a tar (a PAX path) and the unpack directory, but
    // not PATH_MAX under layers/sha256/<hex>/rootfs/.
    let deep: Vec<String> = (0..20).map(|i| format!("{i:02}{}", "d".repeat(198))).collect();
    let name = format!("{}/file", deep.join("/"));
    let p = pull(
        "hostile/path-max",
        LayerBuilder::new().raw_file(name.clone(), b"x"),
    );
    p.assert_refused("is too long");
    assert!(p.out.stderr.contains("fit in PATH_MAX"), "{}", p.out.stderr);
    // Within the bound it pulls, and the commands that read layers handle it.
    let limit = 4096
        - 1
        - (p.sandbox
            .root()
            .join("layers/sha256")
            .canonicalize()
            .unwrap()
            .as_os_str()
            .len()
            + 1
            + 64
            + 8);
    let n = (limit - 1) / 201;
    let ok_name = format!("{}/f", deep[..n].join("/"));
    assert!(ok_name.len() <= limit, "{} > {limit}", ok_name.len());
    let layer = LayerBuilder::new()
        .raw_file(ok_name, b"x")
        .build(Compression::Gzip);
    registry().push_layers("hostile/path-max-ok", "v1", vec![layer]);
    let reference = registry().image_ref("hostile/path-max-ok", "v1");
    p.sandbox.run([&reference]).assert_success();
    let out_dir = temp_dir("hostile-rootfs-");
    p.sandbox
        .run(["rootfs", &reference, out_dir.path().join("r").to_str().unwrap()])
        .assert_success();
    let images = p.sandbox.run(["images", &reference]);
    images.assert_success();
    assert_eq!(images.stdout.lines().count(), 2, "{images}");
    assert!(!images.stdout.contains(" 0B"), "{images}");
    p.assert_store_intact();
}

// ---- --format json: one error shape for every failure ----

/// Asserts `out` is exactly the JSON failure shape: an errorDetail line, then a result whose
/// error is the same message; nothing on stderr. Returns the message.
fn assert_json_failure(out: &RpullOutput, code: i32, reference: &str) -> String {
    out.assert_code(code);
    assert_eq!(out.stderr, "", "{out}");
    let lines: Vec<serde_json::Value> = out
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l:?}\n{out}")))
        .collect();
    assert_eq!(lines.len(), 2, "{out}");
    let message = lines[0]["errorDetail"]["message"]
        .as_str()
        .expect("errorDetail")
        .to_string();
    assert_eq!(lines[0]["error"], message.as_str(), "{out}");
    assert_eq!(lines[1]["result"]["error"], message.as_str(), "{out}");
    assert_eq!(lines[1]["result"]["reference"], reference, "{out}");
    message
}

#[test]
fn json_output_reports_usage_and_reference_errors_like_any_failure() {
    let mut sandbox = rpull();
    let out = sandbox.run(["--format", "json", "INVALID::ref"]);
    let message = assert_json_failure(&out, 1, "INVALID::ref");
    assert!(message.starts_with("invalid reference format"), "{message}");

    let out = sandbox.run(["--format", "json", "-a", "busybox:1"]);
    assert_eq!(
        assert_json_failure(&out, 1, "busybox:1"),
        "tag can't be used with --all-tags/-a"
    );

    let out = sandbox.run(["pull", "--format=json", "--bogus", "x"]);
    let message = assert_json_failure(&out, 125, "");
    assert!(message.contains("unexpected argument '--bogus'"), "{message}");

    let out = sandbox.run(["--format", "json"]);
    let message = assert_json_failure(&out, 1, "");
    assert!(
        message.starts_with("rpull: 'rpull pull' requires 1 argument"),
        "{message}"
    );

    sandbox.env("DOCKER_CONTENT_TRUST", "1");
    let out = sandbox.run(["--format", "json", "busybox"]);
    let message = assert_json_failure(&out, 1, "busybox");
    assert!(message.starts_with("content trust is enabled"), "{message}");
}

/// A layer, a copy of it claiming another layer's DiffID (the manifest lists one blob twice,
/// the config gives it two DiffIDs), and that other layer; `seed` makes them unique.
fn one_blob_two_diff_ids(seed: &[u8]) -> (Layer, Layer, Layer) {
    let [layer, other] = ["twice", "other"].map(|name| {
        LayerBuilder::new()
            .file(name, seed, 0o644)
            .build(Compression::Gzip)
    });
    let mut twin = layer.clone();
    twin.diff_id = other.diff_id.clone();
    (layer, twin, other)
}

#[test]
fn one_blob_listed_twice_with_two_diff_ids_is_refused_before_downloading() {
    let (layer, twin, _) = one_blob_two_diff_ids(b"fresh store");
    let blob = layer.digest.clone();
    let p = pull_image("hostile/one-blob-two-diffids", vec![layer, twin]);
    // docker's refusal of a config that does not describe the manifest's layers.
    p.assert_refused("layers from manifest don't match image configuration");
    assert!(
        !p.sandbox.root().join("blobs/sha256").join(&blob[7..]).exists(),
        "the blob was downloaded before the refusal"
    );
}

#[test]
fn one_blob_listed_twice_with_two_diff_ids_is_refused_when_both_layers_are_stored() {
    // The store already holds the blob with its own DiffID A, and a layer B from another
    // image: the image [blob→A, blob→B] would need nothing fetched, and its root filesystem
    // would not be what its blobs hold.
    let (layer, twin, other) = one_blob_two_diff_ids(b"both stored");
    let registry = registry();
    let sandbox = rpull();
    for (repo, layers) in [
        ("dupdiff/holds-the-blob", vec![layer.clone()]),
        ("dupdiff/holds-b", vec![other]),
    ] {
        registry.push_layers(repo, "v1", layers);
        sandbox
            .run(["pull", &registry.image_ref(repo, "v1")])
            .assert_success();
    }
    registry.push_layers("hostile/one-blob-two-diffids-stored", "v1", vec![layer, twin]);
    let p = Pulled::run(
        sandbox,
        &["--retry-delay", "10ms"],
        registry.image_ref("hostile/one-blob-two-diffids-stored", "v1"),
    );
    p.assert_refused("layers from manifest don't match image configuration");
}

#[test]
fn one_blob_listed_twice_with_the_same_diff_id_pulls() {
    let layer = LayerBuilder::new()
        .file("twice", b"same layer twice", 0o644)
        .build(Compression::Gzip);
    let (blob, diff_id) = (layer.digest.clone(), layer.diff_id.clone());
    let p = pull_image("dupdiff/same-twice", vec![layer.clone(), layer]);
    p.out.assert_success();
    // Fetched once; the layer holds its file.
    let short = &blob[7..19];
    assert_eq!(
        p.out.stdout.matches(&format!("{short}: Pull complete")).count(),
        1,
        "{}",
        p.out.stdout
    );
    assert_eq!(
        fs::read(p.layer_root(&diff_id).join("twice")).unwrap(),
        b"same layer twice"
    );
    let index = fs::read_to_string(p.sandbox.root().join("index.json")).unwrap();
    assert!(index.contains("dupdiff/same-twice"), "{index}");
    p.assert_store_intact();
}
