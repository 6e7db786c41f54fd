//! End-to-end tests of the store commands: `images`, `rmi`, `prune`, `save` and `rootfs`,
//! with images pulled by the real `rpull` binary from the real distribution registry; and of
//! the store and the saved archives as other tools read them (`skopeo`, which must be
//! installed: these tests fail rather than skip without it; `podman load` when present).

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::SystemTime;

use crate::support::image::FIXED_CREATED;
use crate::support::*;
use serde_json::Value;

// ---------------------------------------------------------------------------------------------
// Helpers

/// Runs `skopeo args…`; panics (never skips) when skopeo is not installed.
fn skopeo(args: &[&str]) -> Output {
    Command::new("skopeo")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "running skopeo: {e}\nthese tests need skopeo: install the Debian package `skopeo` (scripts/test does when root)"
            )
        })
}

/// Runs `skopeo args…` and returns its stdout; panics with its output unless it succeeds.
fn skopeo_ok(args: &[&str]) -> Vec<u8> {
    let out = skopeo(args);
    assert!(
        out.status.success(),
        "skopeo {args:?} failed ({})\n--- stdout:\n{}\n--- stderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// `skopeo copy` of `source` into the directory `dest` (skopeo's `dir:` layout).
fn skopeo_copy_to_dir(source: &str, dest: &Path) {
    skopeo_ok(&[
        "--insecure-policy",
        "copy",
        source,
        &format!("dir:{}", dest.display()),
    ]);
}

fn skopeo_json(args: &[&str]) -> Value {
    serde_json::from_slice(&skopeo_ok(args)).expect("skopeo printed JSON")
}

/// The familiar name docker prints for `repo` on `registry` (`127.0.0.1:PORT/bench/a`).
fn repo_name(registry: &Registry, repo: &str) -> String {
    format!("{}/{repo}", registry.host())
}

fn hex_of(digest: &str) -> &str {
    &digest["sha256:".len()..]
}

fn blob_path(root: &Path, digest: &str) -> PathBuf {
    root.join("blobs/sha256").join(hex_of(digest))
}

fn layer_path(root: &Path, diff_id: &str) -> PathBuf {
    root.join("layers/sha256").join(hex_of(diff_id))
}

/// What the store holds of the one-layer `image`: its manifest, config and layer blobs and its
/// unpacked layer.
fn stored_files(root: &Path, image: &PushedImage) -> [PathBuf; 4] {
    [
        blob_path(root, &image.manifest_digest),
        blob_path(root, &image.config_digest),
        blob_path(root, &image.layer_digests[0]),
        layer_path(root, &image.diff_ids[0]),
    ]
}

/// The lines `rmi` begins with when it removes `image`, docker's order: `Untagged:` for each of
/// `tags`, then for its digest reference in `repo`, then `Deleted:` its ID.
fn removal_head(tags: &[&str], repo: &str, image: &PushedImage) -> Vec<String> {
    let mut lines: Vec<String> = tags.iter().map(|t| format!("Untagged: {t}")).collect();
    lines.push(format!("Untagged: {repo}@{}", image.manifest_digest));
    lines.push(format!("Deleted: {}", image.config_digest));
    lines
}

/// Renders `rows` the way Go's tabwriter does for docker (cells padded to the column's widest
/// cell plus 3, at least 10 wide; the last column unpadded): an independent check of rpull's.
fn tabwrite(rows: &[Vec<String>]) -> Vec<String> {
    let cols = rows[0].len();
    let widths: Vec<usize> = (0..cols)
        .map(|c| rows.iter().map(|r| r[c].len() + 3).max().unwrap().max(10))
        .collect();
    rows.iter()
        .map(|r| {
            let mut line = String::new();
            for (c, cell) in r.iter().enumerate() {
                if c + 1 == cols {
                    line.push_str(cell);
                } else {
                    line.push_str(&format!("{cell:<w$}", w = widths[c]));
                }
            }
            line
        })
        .collect()
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

/// A small single-file image (the file is `size` bytes), distinct per `seed`.
fn small_image(size: usize, seed: u64) -> Image {
    let layer = LayerBuilder::new()
        .random_file(&format!("data-{seed}.bin"), size, seed)
        .build(Compression::Gzip);
    Image::new(Platform::host(), vec![layer])
}

/// docker's CREATED column for an image created at [`FIXED_CREATED`] (2024-01-01T00:00:00Z),
/// computed here from go-units' `HumanDuration` rules for durations of weeks and more.
fn docker_created_since_fixed() -> String {
    const FIXED_CREATED_UNIX: u64 = 1_704_067_200;
    assert_eq!(FIXED_CREATED, "2024-01-01T00:00:00Z");
    let now = SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let hours = (now - FIXED_CREATED_UNIX) / 3600;
    let ago = if hours < 24 * 30 * 2 {
        format!("{} weeks", hours / 24 / 7)
    } else if hours < 24 * 365 * 2 {
        format!("{} months", hours / 24 / 30)
    } else {
        format!("{} years", hours / 24 / 365)
    };
    format!("{ago} ago")
}

/// Bytes of the regular files and symlinks under `path` (a hard-linked file once), the sizes
/// that `rpull prune` reclaims when it deletes an unpacked layer.
fn apparent_file_bytes(path: &Path) -> u64 {
    let mut inodes = std::collections::HashSet::new();
    let mut pending = vec![path.to_path_buf()];
    let mut bytes = 0;
    while let Some(dir) = pending.pop() {
        for entry in fs::read_dir(&dir).unwrap().map(Result::unwrap) {
            let meta = fs::symlink_metadata(entry.path()).unwrap();
            if meta.is_dir() {
                pending.push(entry.path());
            } else if inodes.insert(meta.ino()) {
                bytes += meta.len();
            }
        }
    }
    bytes
}

/// Checks that `shown` is go-units' `HumanSizeWithPrecision(bytes, 4)`: at most four
/// significant digits of `bytes` in decimal units (B, kB, MB, GB).
fn assert_go_units_size(shown: &str, bytes: u64) {
    let unit_at = shown.find(|c: char| c.is_ascii_alphabetic()).expect(shown);
    let (number, unit) = shown.split_at(unit_at);
    let scale = match unit {
        "B" => 1.0,
        "kB" => 1e3,
        "MB" => 1e6,
        "GB" => 1e9,
        _ => panic!("unit of {shown:?}"),
    };
    let value: f64 = number.parse().expect(shown);
    assert!(
        (1.0..1000.0).contains(&value) || bytes == 0,
        "{shown:?} for {bytes}"
    );
    let digits = number.chars().filter(char::is_ascii_digit).count();
    assert!(digits <= 4, "{shown:?} has more than 4 significant digits");
    let relative = (value * scale - bytes as f64).abs() / bytes.max(1) as f64;
    assert!(relative < 5e-4, "{shown:?} is not {bytes} bytes");
}

/// A registry holding image `a` as `bench/a:v1` and `bench/a:v2` (OCI) and `b` as
/// `bench/b:latest` in `b_format`: one image under two tags, and another. Each is a
/// [`small_image`] of the given `(size, seed)`.
fn push_a_twice_and_b(
    a: (usize, u64),
    b: (usize, u64),
    b_format: ManifestFormat,
) -> (Registry, PushedImage, PushedImage) {
    let (a, b) = (small_image(a.0, a.1), small_image(b.0, b.1));
    let registry = Registry::start();
    let pushed_a = registry.push_image("bench/a", "v1", &a, ManifestFormat::Oci);
    registry.push_image("bench/a", "v2", &a, ManifestFormat::Oci);
    let pushed_b = registry.push_image("bench/b", "latest", &b, b_format);
    (registry, pushed_a, pushed_b)
}

/// Pulls what [`push_a_twice_and_b`] pushed, in that order; its three references.
fn pull_a_twice_and_b(sandbox: &Rpull, registry: &Registry) -> [String; 3] {
    let refs = [
        registry.image_ref("bench/a", "v1"),
        registry.image_ref("bench/a", "v2"),
        registry.image_ref("bench/b", "latest"),
    ];
    for r in &refs {
        pull(sandbox, r);
    }
    refs
}

fn pull(sandbox: &Rpull, reference: &str) {
    sandbox.run(["pull", "-q", reference]).assert_success();
}

// ---------------------------------------------------------------------------------------------
// images

#[test]
fn images_lists_pulled_images_like_docker() {
    let (registry, a, b) = push_a_twice_and_b((1500, 1), (640, 2), ManifestFormat::Docker);
    let sandbox = rpull();

    // An empty store: just the header.
    sandbox
        .run(["images"])
        .assert_success()
        .assert_stdout_lines(&["REPOSITORY   TAG       IMAGE ID   CREATED   SIZE"]);

    pull_a_twice_and_b(&sandbox, &registry);
    let (ra, rb) = (repo_name(&registry, "bench/a"), repo_name(&registry, "bench/b"));
    let created = docker_created_since_fixed();
    // Every image was created at FIXED_CREATED, so they keep the order they were pulled in.
    let rows = [
        (ra.as_str(), "v1", &a, "1.5kB"),
        (ra.as_str(), "v2", &a, "1.5kB"),
        (rb.as_str(), "latest", &b, "640B"),
    ];
    // The table `images` should print: REPOSITORY, TAG, the `ids` columns, CREATED, SIZE.
    let table = |id_headers: &[&str], ids: &dyn Fn(&PushedImage) -> Vec<String>| -> Vec<String> {
        let mut header = strings(&["REPOSITORY", "TAG"]);
        header.extend(strings(id_headers));
        header.extend(strings(&["CREATED", "SIZE"]));
        let mut table = vec![header];
        for (repo, tag, img, size) in &rows {
            let mut row = vec![repo.to_string(), tag.to_string()];
            row.extend(ids(img));
            row.extend([created.clone(), size.to_string()]);
            table.push(row);
        }
        tabwrite(&table)
    };
    let expected = table(&["IMAGE ID"], &|img| vec![img.short_id().to_string()]);
    let expected: Vec<&str> = expected.iter().map(String::as_str).collect();
    let out = sandbox.run(["images"]);
    out.assert_success().assert_stdout_lines(&expected);
    assert!(out.stderr.is_empty(), "{out}");

    // -q: one ID per row, as docker repeats an image's ID for each of its tags.
    sandbox
        .run(["images", "-q"])
        .assert_success()
        .assert_stdout_lines(&[a.short_id(), a.short_id(), b.short_id()]);
    sandbox
        .run(["images", "-q", "--no-trunc"])
        .assert_success()
        .assert_stdout_lines(&[&a.config_digest, &a.config_digest, &b.config_digest]);

    // A filter: the repository, or repository:tag.
    sandbox
        .run(["images", "-q", &ra])
        .assert_success()
        .assert_stdout_lines(&[a.short_id(), a.short_id()]);
    sandbox
        .run(["images", "-q", &format!("{rb}:latest")])
        .assert_success()
        .assert_stdout_lines(&[b.short_id()]);
    sandbox
        .run(["images", "-q", &format!("{ra}:v*")])
        .assert_success()
        .assert_stdout_lines(&[a.short_id(), a.short_id()]);
    sandbox
        .run(["images", "nothing-like-this"])
        .assert_success()
        .assert_stdout_lines(&["REPOSITORY   TAG       IMAGE ID   CREATED   SIZE"]);

    // --digests: the digest each tag resolved to at the registry.
    let expected = table(&["DIGEST", "IMAGE ID"], &|img| {
        vec![img.manifest_digest.clone(), img.short_id().to_string()]
    });
    let expected: Vec<&str> = expected.iter().map(String::as_str).collect();
    sandbox
        .run(["images", "--digests"])
        .assert_success()
        .assert_stdout_lines(&expected);

    // --no-trunc: full image IDs.
    let expected = table(&["IMAGE ID"], &|img| vec![img.config_digest.clone()]);
    let expected: Vec<&str> = expected.iter().map(String::as_str).collect();
    sandbox
        .run(["images", "--no-trunc"])
        .assert_success()
        .assert_stdout_lines(&expected);

    // --format json: docker's keys, one object per line.
    let out = sandbox.run(["images", "--format", "json"]);
    out.assert_success();
    let lines: Vec<Value> = out
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert_eq!(lines.len(), 3, "{out}");
    for (v, (repo, tag, img, size)) in lines.iter().zip(&rows) {
        assert_eq!(v["Repository"], *repo);
        assert_eq!(v["Tag"], *tag);
        assert_eq!(v["ID"], img.short_id());
        assert_eq!(v["Size"], *size);
        assert_eq!(v["Digest"], "<none>");
        assert_eq!(v["CreatedSince"], created);
        assert_eq!(v["Containers"], "N/A");
        let keys: Vec<&String> = v.as_object().unwrap().keys().collect();
        assert_eq!(
            keys,
            [
                "Containers",
                "CreatedAt",
                "CreatedSince",
                "Digest",
                "ID",
                "Repository",
                "SharedSize",
                "Size",
                "Tag",
                "UniqueSize",
                "VirtualSize"
            ]
        );
    }
    let out = sandbox.run(["images", "--format", "json", "--digests", "--no-trunc", &rb]);
    out.assert_success();
    let v: Value = serde_json::from_str(out.stdout.trim()).unwrap();
    assert_eq!(v["Digest"], b.manifest_digest.as_str());
    assert_eq!(v["ID"], b.config_digest.as_str());

    // A bad pattern is an error.
    let out = sandbox.run(["images", "["]);
    out.assert_failed_with("syntax error in pattern");
}

// ---------------------------------------------------------------------------------------------
// rmi and prune

#[test]
fn rmi_untags_refuses_shared_ids_and_frees_space() {
    let (registry, a, b) = push_a_twice_and_b((3000, 11), (2000, 12), ManifestFormat::Oci);
    let sandbox = rpull();
    let root = sandbox.root();
    let [a1, a2, bl] = pull_a_twice_and_b(&sandbox, &registry);
    let a_files = stored_files(root, &a);
    let b_files = stored_files(root, &b);
    assert!(a_files.iter().chain(&b_files).all(|p| p.exists()));

    // An ID two tags share is refused without -f, with docker's text.
    let out = sandbox.run(["rmi", a.short_id()]);
    out.assert_code(1).assert_stderr_lines(&[&format!(
        "Error response from daemon: conflict: unable to delete {} (must be forced) - image is referenced in multiple repositories",
        a.short_id()
    )]);
    assert!(out.stdout.is_empty(), "{out}");

    // Untagging one tag keeps the image and its blobs.
    sandbox
        .run(["rmi", &a1])
        .assert_success()
        .assert_stdout_lines(&[&format!("Untagged: {a1}")]);
    assert!(a_files.iter().all(|p| p.exists()));

    // Unknown names fail one by one; the others are still removed. The last tag of `a` takes
    // its repo digest along, the image is deleted, and its blobs and layer with it.
    let out = sandbox.run(["rmi", "nope", &a2, "ffffffffffff"]);
    out.assert_code(1);
    assert_lines(
        &out.stderr,
        &[
            "Error response from daemon: No such image: nope:latest",
            "Error response from daemon: No such image: ffffffffffff:latest",
        ],
    );
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(
        lines[..3],
        removal_head(&[&a2], &repo_name(&registry, "bench/a"), &a),
        "{out}"
    );
    let mut rest: Vec<&str> = lines[3..].to_vec();
    rest.sort();
    let mut want = vec![
        format!("Deleted: {}", a.manifest_digest),
        format!("Deleted: {}", a.layer_digests[0]),
        format!("Deleted: {}", a.diff_ids[0]),
    ];
    want.sort();
    assert_eq!(rest, want, "{out}");
    for p in &a_files {
        assert!(!p.exists(), "{} should be gone", p.display());
    }
    assert!(b_files.iter().all(|p| p.exists()));
    sandbox
        .run(["images", "-q"])
        .assert_success()
        .assert_stdout_lines(&[b.short_id()]);

    // -f removes an ID with several tags, by a full ID too.
    pull(&sandbox, &a1);
    pull(&sandbox, &a2);
    let out = sandbox.run(["rmi", "-f", &a.config_digest]);
    out.assert_success();
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(
        lines[..4],
        removal_head(&[&a1, &a2], &repo_name(&registry, "bench/a"), &a),
        "{out}"
    );
    assert!(a_files.iter().all(|p| !p.exists()));

    // --no-prune only edits the index; prune frees the space afterwards.
    let out = sandbox.run(["rmi", "--no-prune", &bl]);
    let head = removal_head(&[&bl], &repo_name(&registry, "bench/b"), &b);
    out.assert_success()
        .assert_stdout_lines(&head.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(b_files.iter().all(|p| p.exists()));
    let reclaimed: u64 = b_files
        .iter()
        .map(|p| {
            if p.is_dir() {
                apparent_file_bytes(p)
            } else {
                fs::metadata(p).unwrap().len()
            }
        })
        .sum();
    let out = sandbox.run(["prune"]);
    out.assert_success();
    let mut lines: Vec<&str> = out.stdout.lines().collect();
    let total = lines.pop().unwrap();
    assert_go_units_size(
        total.strip_prefix("Total reclaimed space: ").expect(total),
        reclaimed,
    );
    lines.sort();
    let mut want = vec![
        format!("Deleted: {}", b.manifest_digest),
        format!("Deleted: {}", b.config_digest),
        format!("Deleted: {}", b.layer_digests[0]),
        format!("Deleted: {}", b.diff_ids[0]),
    ];
    want.sort();
    assert_eq!(lines, want, "{out}");
    assert!(b_files.iter().all(|p| !p.exists()));
    sandbox
        .run(["images"])
        .assert_success()
        .assert_stdout_lines(&["REPOSITORY   TAG       IMAGE ID   CREATED   SIZE"]);
    // Nothing left to do.
    sandbox
        .run(["prune"])
        .assert_success()
        .assert_stdout_lines(&["Total reclaimed space: 0B"]);
}

#[test]
fn prune_removes_partial_downloads_and_orphans_but_not_images() {
    let registry = Registry::start();
    let img = registry.push_image("bench/keep", "v1", &small_image(700, 21), ManifestFormat::Oci);
    let sandbox = rpull();
    let root = sandbox.root();
    let reference = registry.image_ref("bench/keep", "v1");
    pull(&sandbox, &reference);

    // An orphan blob, an orphan unpacked layer, a partial download and an abandoned unpack.
    let orphan = vec![7u8; 100];
    let orphan_digest = sha256_digest(&orphan);
    fs::write(blob_path(root, &orphan_digest), &orphan).unwrap();
    let orphan_layer = sha256_digest(b"an orphan layer");
    fs::create_dir_all(layer_path(root, &orphan_layer).join("rootfs")).unwrap();
    fs::write(layer_path(root, &orphan_layer).join("rootfs/f"), vec![1u8; 200]).unwrap();
    fs::create_dir_all(root.join("ingest")).unwrap();
    let partial = root
        .join("ingest")
        .join(format!("sha256-{}.partial", hex_of(&sha256_digest(b"partial"))));
    fs::write(&partial, vec![2u8; 300]).unwrap();
    let tmp = root.join("layers/tmp/unpack-123");
    fs::create_dir_all(tmp.join("rootfs")).unwrap();
    fs::write(tmp.join("rootfs/g"), vec![3u8; 400]).unwrap();

    // While another command holds the store guard, prune refuses.
    let guard = sandbox.hold_store_guard(false);
    let out = sandbox.run(["prune"]);
    out.assert_failed_with("another rpull command is using the store");
    assert!(blob_path(root, &orphan_digest).exists() && partial.exists());
    drop(guard);

    let out = sandbox.run(["prune"]);
    out.assert_success().assert_stdout_lines(&[
        &format!("Deleted: {orphan_digest}"),
        &format!("Deleted: {orphan_layer}"),
        "Total reclaimed space: 1kB",
    ]);
    assert!(!blob_path(root, &orphan_digest).exists());
    assert!(!layer_path(root, &orphan_layer).exists());
    assert!(!partial.exists());
    assert!(!tmp.exists());
    // The pulled image is untouched and still usable.
    for d in [&img.manifest_digest, &img.config_digest, &img.layer_digests[0]] {
        assert!(blob_path(root, d).exists());
    }
    assert!(layer_path(root, &img.diff_ids[0]).exists());
    let dest = sandbox.home().join("rootfs");
    sandbox
        .run(["rootfs", &reference, dest.to_str().unwrap()])
        .assert_success();
    assert_eq!(
        fs::read(dest.join("data-21.bin")).unwrap(),
        pseudo_random_bytes(700, 21)
    );
    sandbox.run(["pull", &reference]).assert_success();

    // While another command (a pull) uses the store, rmi still untags but leaves the space to
    // a later prune, and says so.
    let guard = sandbox.hold_store_guard(false);
    let out = sandbox.run(["rmi", &reference]);
    out.assert_success();
    assert_eq!(
        out.stdout.lines().last(),
        Some(format!("Deleted: {}", img.config_digest).as_str()),
        "{out}"
    );
    assert!(out.stderr.contains("run `rpull prune` later"), "{out}");
    let files = [
        blob_path(root, &img.manifest_digest),
        blob_path(root, &img.layer_digests[0]),
        layer_path(root, &img.diff_ids[0]),
    ];
    assert!(files.iter().all(|p| p.exists()));
    drop(guard);
    let out = sandbox.run(["prune"]);
    out.assert_success();
    assert!(files.iter().all(|p| !p.exists()), "{out}");
}

// ---------------------------------------------------------------------------------------------
// save

/// A three-layer image whose layers use gzip, zstd and no compression.
fn three_layer_image() -> Image {
    let layers = layer::three_layers(
        [Compression::Gzip, Compression::Zstd, Compression::None],
        50_000,
        31,
    );
    Image::new(Platform::host(), layers).with_config(serde_json::json!({"Env": ["A=1"]}))
}

/// `rpull --root … save args…` with stdout captured as bytes.
fn save_to_stdout(sandbox: &Rpull, args: &[&str]) -> Output {
    sandbox
        .command()
        .arg("save")
        .args(args)
        .output()
        .expect("running rpull save")
}

/// [`three_layer_image`] as `<repo>:v1` (OCI) and a [`small_image`] of `other`'s
/// `(size, seed)` as `bench/other:v2` in `format`, both pulled into a fresh sandbox.
fn two_pulled(
    repo: &str,
    other: (usize, u64),
    format: ManifestFormat,
) -> (Registry, Rpull, PushedImage, PushedImage) {
    let registry = Registry::start();
    let image = registry.push_image(repo, "v1", &three_layer_image(), ManifestFormat::Oci);
    let other = registry.push_image("bench/other", "v2", &small_image(other.0, other.1), format);
    let sandbox = rpull();
    pull(&sandbox, &registry.image_ref(repo, "v1"));
    pull(&sandbox, &registry.image_ref("bench/other", "v2"));
    (registry, sandbox, image, other)
}

#[test]
fn save_writes_archives_skopeo_and_podman_load() {
    let (registry, sandbox, img, other) = two_pulled("bench/save", (900, 41), ManifestFormat::Docker);
    let reference = registry.image_ref("bench/save", "v1");
    let work = temp_dir("rpull-save-");
    let diff_ids: Vec<&str> = img.diff_ids.iter().map(String::as_str).collect();

    // docker archive to a file.
    let file = work.path().join("img.tar");
    let out = sandbox.run(["save", "-o", file.to_str().unwrap(), &reference]);
    out.assert_success();
    assert!(out.stdout.is_empty() && out.stderr.is_empty(), "{out}");
    let archive = format!("docker-archive:{}", file.display());
    let v = skopeo_json(&["inspect", &archive]);
    assert_eq!(v["RepoTags"], serde_json::json!([]), "{v}");
    assert_eq!(v["Architecture"], img_arch());
    assert_eq!(v["Env"], serde_json::json!(["A=1"]));
    assert_eq!(v["Layers"].as_array().unwrap().len(), 3, "{v}");
    let config = skopeo_ok(&["inspect", "--config", "--raw", &archive]);
    assert_eq!(
        config, img.config_bytes,
        "the archive keeps the config byte for byte"
    );
    // Copying checks every layer against the config's DiffIDs.
    let copied = work.path().join("copied");
    skopeo_copy_to_dir(&archive, &copied);
    let m: Value = serde_json::from_slice(&fs::read(copied.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(m["layers"].as_array().unwrap().len(), 3);
    // The archive's manifest.json names the tag as docker does.
    let listing = tar_listing(&file);
    let manifest_json: Value = serde_json::from_slice(&listing["manifest.json"]).unwrap();
    assert_eq!(
        manifest_json[0]["RepoTags"],
        serde_json::json!([format!("{}/bench/save:v1", registry.host())])
    );
    assert_eq!(
        manifest_json[0]["Config"],
        format!("blobs/sha256/{}", hex_of(&img.config_digest))
    );

    // The same archive on stdout when it is not a terminal.
    let out = save_to_stdout(&sandbox, &[&reference]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(
        out.stdout,
        fs::read(&file).unwrap(),
        "stdout and -o give the same bytes"
    );

    // Several images in one archive, one by image ID (no RepoTags for it, like docker).
    let both = work.path().join("both.tar");
    sandbox
        .run(["save", "-o", both.to_str().unwrap(), &reference, other.short_id()])
        .assert_success();
    let listing = tar_listing(&both);
    let manifest_json: Value = serde_json::from_slice(&listing["manifest.json"]).unwrap();
    assert_eq!(manifest_json.as_array().unwrap().len(), 2);
    assert!(manifest_json[1]["RepoTags"].is_null(), "{manifest_json}");
    let second = format!("docker-archive:{}:@1", both.display());
    let v = skopeo_json(&["inspect", "--config", &second]);
    assert_eq!(v["rootfs"]["diff_ids"], serde_json::json!(other.diff_ids));

    // OCI archive.
    let oci = work.path().join("img-oci.tar");
    sandbox
        .run(["save", "--format", "oci", "-o", oci.to_str().unwrap(), &reference])
        .assert_success();
    let oci_ref = format!("oci-archive:{}", oci.display());
    let v = skopeo_json(&["inspect", &oci_ref]);
    assert_eq!(v["Digest"], img.manifest_digest.as_str(), "{v}");
    let raw = skopeo_ok(&["inspect", "--raw", &oci_ref]);
    assert_eq!(
        raw, img.manifest_bytes,
        "the OCI archive keeps the manifest byte for byte"
    );
    let v = skopeo_json(&["inspect", "--config", &oci_ref]);
    assert_eq!(v["rootfs"]["diff_ids"], serde_json::json!(diff_ids));
    let copied = work.path().join("copied-oci");
    skopeo_copy_to_dir(&oci_ref, &copied);
    for d in &img.layer_digests {
        assert!(copied.join(hex_of(d)).exists(), "layer {d} copied");
    }

    // podman load, when podman is installed (it is optional; skopeo above is not).
    if let Ok(podman) = which("podman") {
        let storage = temp_dir("rpull-podman-");
        let out = Command::new(podman)
            .arg("--root")
            .arg(storage.path().join("root"))
            .arg("--runroot")
            .arg(storage.path().join("run"))
            .args(["--storage-driver", "vfs", "load", "-i"])
            .arg(&file)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "podman load failed\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    // By digest: no RepoTags, like docker.
    let by_digest = work.path().join("by-digest.tar");
    let digest_ref = registry.digest_ref("bench/save", &img.manifest_digest);
    sandbox
        .run(["save", "-o", by_digest.to_str().unwrap(), &digest_ref])
        .assert_success();
    let manifest_json: Value = serde_json::from_slice(&tar_listing(&by_digest)["manifest.json"]).unwrap();
    assert!(manifest_json[0]["RepoTags"].is_null(), "{manifest_json}");
    let v = skopeo_json(&["inspect", &format!("docker-archive:{}", by_digest.display())]);
    assert_eq!(v["Layers"].as_array().unwrap().len(), 3, "{v}");

    // Unknown images fail, and no file is left behind.
    let missing = work.path().join("missing.tar");
    let out = sandbox.run(["save", "-o", missing.to_str().unwrap(), &reference, "nope"]);
    out.assert_code(1)
        .assert_stderr_lines(&["Error response from daemon: No such image: nope:latest"]);
    assert!(!missing.exists());
    assert_eq!(
        fs::read_dir(work.path())
            .unwrap()
            .filter(|e| e.as_ref().unwrap().file_name().to_string_lossy().starts_with('.'))
            .count(),
        0
    );
}

fn img_arch() -> String {
    Platform::host().architecture
}

/// `program` on `PATH`.
fn which(program: &str) -> Result<PathBuf, ()> {
    std::env::var_os("PATH")
        .and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|d| d.join(program))
                .find(|p| p.is_file())
        })
        .ok_or(())
}

/// The regular files of a tar archive, by name.
fn tar_listing(path: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut archive = tar::Archive::new(fs::File::open(path).unwrap());
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        if entry.header().entry_type().is_file() {
            let name = entry.path().unwrap().to_string_lossy().into_owned();
            let mut data = Vec::new();
            std::io::Read::read_to_end(&mut entry, &mut data).unwrap();
            out.insert(name, data);
        }
    }
    out
}

#[test]
fn save_refuses_to_write_to_a_terminal() {
    let sandbox = rpull();
    let (master, slave) = crate::support::process::openpty();
    let out = sandbox
        .command()
        .args(["save", "debian"])
        .stdout(Stdio::from(slave))
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    drop(master);
    assert_eq!(out.status.code(), Some(1));
    assert_lines(
        &String::from_utf8_lossy(&out.stderr),
        &["cowardly refusing to save to a terminal. Use the -o flag or redirect"],
    );
}

// ---------------------------------------------------------------------------------------------
// rootfs

/// What is at each path under `root`: `d 755`, `f 644 <content>`, `l -> target`.
fn tree(root: &Path) -> BTreeMap<String, String> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, String>) {
        for e in fs::read_dir(dir).unwrap() {
            let e = e.unwrap();
            let path = e.path();
            let rel = path.strip_prefix(root).unwrap().to_string_lossy().into_owned();
            let meta = fs::symlink_metadata(&path).unwrap();
            let mode = meta.permissions().mode() & 0o7777;
            let desc = if meta.file_type().is_symlink() {
                format!("l -> {}", fs::read_link(&path).unwrap().display())
            } else if meta.is_dir() {
                walk(root, &path, out);
                format!("d {mode:o}")
            } else {
                let data = fs::read(&path).unwrap();
                let content = if data.len() > 32 {
                    format!("{} bytes", data.len())
                } else {
                    String::from_utf8_lossy(&data).into_owned()
                };
                format!("f {mode:o} {content}")
            };
            out.insert(rel, desc);
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

#[test]
fn rootfs_applies_whiteouts_opaque_dirs_and_replacements() {
    let registry = Registry::start();
    let base = LayerBuilder::new()
        .dir("srv", 0o755)
        .dir("srv/app", 0o755)
        .file("srv/app/keep.txt", "keep", 0o644)
        .file("srv/app/gone.txt", "gone", 0o644)
        .dir("srv/opq", 0o755)
        .file("srv/opq/old.txt", "old", 0o644)
        .dir("srv/opq/sub", 0o700)
        .file("srv/opq/sub/x", "x", 0o644)
        .file("srv/f2d", "was a file", 0o644)
        .dir("srv/d2f", 0o755)
        .file("srv/d2f/inner", "inner", 0o644)
        .dir("srv/gone_dir", 0o755)
        .file("srv/gone_dir/y", "y", 0o644)
        .dir("srv/data", 0o755)
        .random_file("srv/data/part.dat", 5000, 51)
        .dir("srv/links", 0o755)
        .hardlink("srv/links/hard.dat", "srv/data/part.dat")
        .symlink("srv/links/sym.dat", "../data/part.dat")
        .file("srv/secret", "s", 0o600)
        .build(Compression::Gzip);
    let middle = LayerBuilder::new()
        .dir("srv", 0o755)
        .dir("srv/app", 0o755)
        .whiteout("srv/app/gone.txt")
        .dir("srv/opq", 0o750)
        .opaque("srv/opq")
        .file("srv/opq/new.txt", "new", 0o644)
        .dir("srv/f2d", 0o711)
        .file("srv/f2d/child", "child", 0o644)
        .file("srv/d2f", "now a file", 0o640)
        .whiteout("srv/gone_dir")
        .build(Compression::Zstd);
    let top = LayerBuilder::new()
        .dir("srv", 0o755)
        .dir("srv/app", 0o755)
        .file("srv/app/gone.txt", "back", 0o644)
        .dir("srv/l3", 0o755)
        .file("srv/l3/a", "linked", 0o644)
        .hardlink("srv/l3/b", "srv/l3/a")
        .build(Compression::Gzip);
    let pushed = registry.push_layers("bench/layers", "whiteout", vec![base, middle, top]);
    let sandbox = rpull();
    let reference = registry.image_ref("bench/layers", "whiteout");
    pull(&sandbox, &reference);

    let dest = sandbox.home().join("flat");
    let out = sandbox.run(["rootfs", &reference, dest.to_str().unwrap()]);
    out.assert_success();
    assert!(out.stdout.is_empty(), "{out}");

    let got = tree(&dest);
    let expected: BTreeMap<String, String> = [
        ("srv", "d 755"),
        ("srv/app", "d 755"),
        ("srv/app/gone.txt", "f 644 back"),
        ("srv/app/keep.txt", "f 644 keep"),
        ("srv/opq", "d 750"),
        ("srv/opq/new.txt", "f 644 new"),
        ("srv/f2d", "d 711"),
        ("srv/f2d/child", "f 644 child"),
        ("srv/d2f", "f 640 now a file"),
        ("srv/data", "d 755"),
        ("srv/data/part.dat", "f 644 5000 bytes"),
        ("srv/links", "d 755"),
        ("srv/links/hard.dat", "f 644 5000 bytes"),
        ("srv/links/sym.dat", "l -> ../data/part.dat"),
        ("srv/l3", "d 755"),
        ("srv/l3/a", "f 644 linked"),
        ("srv/l3/b", "f 644 linked"),
        ("srv/secret", "f 600 s"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    assert_eq!(got, expected);
    assert_eq!(
        fs::read(dest.join("srv/data/part.dat")).unwrap(),
        pseudo_random_bytes(5000, 51)
    );
    // Hardlinks stay hardlinks.
    let ino = |p: &str| fs::metadata(dest.join(p)).unwrap().ino();
    assert_eq!(ino("srv/data/part.dat"), ino("srv/links/hard.dat"));
    assert_eq!(ino("srv/l3/a"), ino("srv/l3/b"));
    assert_ne!(ino("srv/l3/a"), ino("srv/app/keep.txt"));

    // By image ID prefix, the same tree.
    let by_id = sandbox.home().join("by-id");
    sandbox
        .run(["rootfs", &pushed.short_id()[..8], by_id.to_str().unwrap()])
        .assert_success();
    assert_eq!(tree(&by_id), expected);

    // The destination must be empty, and the image must exist.
    let out = sandbox.run(["rootfs", &reference, dest.to_str().unwrap()]);
    out.assert_failed_with("must be an empty directory");
    let out = sandbox.run(["rootfs", "nope", sandbox.home().join("x").to_str().unwrap()]);
    out.assert_code(1)
        .assert_stderr_lines(&["Error response from daemon: No such image: nope:latest"]);
}

// ---------------------------------------------------------------------------------------------
// The store as an OCI image layout

#[test]
fn skopeo_reads_the_store_by_full_reference() {
    let (registry, sandbox, pushed, other) = two_pulled("bench/img", (800, 61), ManifestFormat::Oci);
    let root = sandbox.root().to_str().unwrap().to_string();
    let reference = registry.image_ref("bench/img", "v1");
    let work = temp_dir("rpull-skopeo-");

    // `oci:<store>:<full reference>`: skopeo splits at the first ':' after the path, and the
    // rest is the `org.opencontainers.image.ref.name` annotation of the index.json entry.
    let source = format!("oci:{root}:{reference}");
    let v = skopeo_json(&["inspect", &source]);
    assert_eq!(v["Digest"], pushed.manifest_digest.as_str(), "{v}");
    assert_eq!(v["Env"], serde_json::json!(["A=1"]));
    assert_eq!(skopeo_ok(&["inspect", "--raw", &source]), pushed.manifest_bytes);
    assert_eq!(
        skopeo_ok(&["inspect", "--config", "--raw", &source]),
        pushed.config_bytes
    );
    let dest = work.path().join("copy");
    skopeo_copy_to_dir(&source, &dest);
    assert_eq!(
        fs::read(dest.join("manifest.json")).unwrap(),
        pushed.manifest_bytes
    );
    for d in &pushed.layer_digests {
        assert!(dest.join(hex_of(d)).exists(), "layer {d} copied");
    }
    // The other entry of the same store.
    let v = skopeo_json(&[
        "inspect",
        &format!("oci:{root}:{}", registry.image_ref("bench/other", "v2")),
    ]);
    assert_eq!(v["Digest"], other.manifest_digest.as_str(), "{v}");
    // An unknown reference is an error, not some other image.
    let out = skopeo(&["inspect", &format!("oci:{root}:{}/bench/img:v9", registry.host())]);
    assert!(!out.status.success());
}

// ---------------------------------------------------------------------------------------------
// Subcommand names and arguments

#[test]
fn an_image_named_like_a_subcommand_is_still_pullable() {
    use ::rpull::cli::{Cli, Command as Sub};
    use clap::Parser;

    for name in ["images", "rmi", "prune", "save", "rootfs", "pull"] {
        let cli = Cli::try_parse_from(["rpull", "pull", name]).unwrap();
        match cli.command {
            Some(Sub::Pull(args)) => assert_eq!(args.name.as_deref(), Some(name)),
            other => panic!("rpull pull {name} parsed as {other:?}"),
        }
        let cli = Cli::try_parse_from(["rpull", &format!("docker.io/library/{name}")]).unwrap();
        assert!(cli.command.is_none());
        assert_eq!(cli.pull.name, Some(format!("docker.io/library/{name}")));
    }
    assert!(matches!(
        Cli::try_parse_from(["rpull", "images"]).unwrap().command,
        Some(Sub::Images(_))
    ));
    assert!(matches!(
        Cli::try_parse_from(["rpull", "--root", "/x", "rmi", "-f", "a", "b"]).unwrap().command,
        Some(Sub::Rmi(a)) if a.force && a.names == ["a", "b"]
    ));

    // End to end: `rpull pull images` is a pull (it fails on the network), not a usage error.
    let sandbox = rpull();
    let out = sandbox.run(["pull", "127.0.0.1:1/images"]);
    out.assert_failed_with("127.0.0.1:1");
    assert!(!out.stderr.contains("Usage"), "{out}");
}

#[test]
fn missing_arguments_get_dockers_text() {
    let sandbox = rpull();
    sandbox.run(["rmi"]).assert_code(1).assert_stderr_lines(&[
        "rpull: 'rpull rmi' requires at least 1 argument",
        "",
        "Usage:  rpull rmi [OPTIONS] NAME|ID [NAME|ID...]",
        "",
        "Run 'rpull rmi --help' for more information",
    ]);
    sandbox.run(["save"]).assert_code(1).assert_stderr_lines(&[
        "rpull: 'rpull save' requires at least 1 argument",
        "",
        "Usage:  rpull save [OPTIONS] NAME|ID [NAME|ID...]",
        "",
        "Run 'rpull save --help' for more information",
    ]);
    sandbox
        .run(["rootfs", "debian"])
        .assert_code(1)
        .assert_stderr_lines(&[
            "rpull: 'rpull rootfs' requires exactly 2 arguments",
            "",
            "Usage:  rpull rootfs NAME|ID DIR",
            "",
            "Run 'rpull rootfs --help' for more information",
        ]);
    // `pull` keeps its own text.
    let out = sandbox.run(["pull"]);
    out.assert_code(1);
    assert!(
        out.stderr.starts_with("rpull: 'rpull pull' requires 1 argument"),
        "{out}"
    );
}
