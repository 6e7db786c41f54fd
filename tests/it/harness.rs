//! Tests of the test harness itself, against the real registry: it starts and stops cleanly,
//! images pushed in every format read back byte for byte with the digests the harness computed,
//! layers are deterministic and can hold hostile entries, and a missing registry binary fails
//! loudly. rpull itself is not run here.

use std::collections::BTreeSet;
use std::io::Read;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::support::image::{
    index_json, to_bytes, ALL_MANIFEST_TYPES, DOCKER_CONFIG, DOCKER_MANIFEST, DOCKER_MANIFEST_LIST, IN_TOTO,
    OCI_CONFIG, OCI_INDEX, OCI_MANIFEST,
};
use crate::support::registry::{header_str, MARKER_HEADER, REGISTRY_BIN_ENV};
use crate::support::*;
use serde_json::json;

fn gunzip(blob: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(blob)
        .read_to_end(&mut out)
        .expect("valid gzip");
    out
}

fn decompress(layer: &Layer) -> Vec<u8> {
    match layer.compression {
        Compression::Gzip => gunzip(&layer.blob),
        Compression::Zstd => zstd::stream::decode_all(&layer.blob[..]).expect("valid zstd"),
        Compression::None => layer.blob.clone(),
    }
}

/// `(name bytes, type flag, link name bytes)` of every entry, as the `tar` crate reads them.
fn tar_entries(tar: &[u8]) -> Vec<(Vec<u8>, u8, Option<Vec<u8>>)> {
    let mut archive = tar::Archive::new(tar);
    archive
        .entries()
        .expect("tar entries")
        .map(|e| {
            let e = e.expect("tar entry");
            let link = e.link_name_bytes().map(|l| l.into_owned());
            (
                e.path_bytes().into_owned(),
                e.header().entry_type().as_byte(),
                link,
            )
        })
        .collect()
}

fn base_layer() -> LayerBuilder {
    LayerBuilder::new()
        .dir("etc", 0o755)
        .file("etc/hostname", b"harness\n", 0o644)
        .file("etc/motd", b"hello\n", 0o644)
        .dir("usr/bin", 0o755)
        .file("usr/bin/tool", b"#!/bin/sh\necho tool\n", 0o755)
        .symlink("usr/bin/alias", "tool")
        .hardlink("usr/bin/tool2", "usr/bin/tool")
}

fn top_layer() -> LayerBuilder {
    LayerBuilder::new()
        .whiteout("etc/motd")
        .opaque("usr/bin")
        .file("usr/bin/new", b"new\n", 0o755)
}

/// Checks a pushed image against the registry: manifest bytes and digest header, config and
/// every layer blob (digest of the blob, diff_id of its decompressed content).
/// An image of [`base_layer`] compressed as `base` under [`top_layer`] compressed as `top`.
fn base_and_top(platform: impl Into<Platform>, base: Compression, top: Compression) -> Image {
    Image::new(platform, vec![base_layer().build(base), top_layer().build(top)])
}

fn check_round_trip(registry: &Registry, pushed: &PushedImage, image: &Image, tag: &str) {
    let repo = &pushed.repo;
    let fetched = registry.get_manifest(repo, tag, &[&pushed.media_type]);
    assert_eq!(
        fetched.digest, pushed.manifest_digest,
        "Docker-Content-Digest by tag"
    );
    assert_eq!(fetched.media_type, pushed.media_type);
    assert_eq!(fetched.bytes, pushed.manifest_bytes);
    assert_eq!(sha256_digest(&fetched.bytes), pushed.manifest_digest);
    let by_digest = registry.get_manifest(repo, &pushed.manifest_digest, &ALL_MANIFEST_TYPES);
    assert_eq!(by_digest.bytes, pushed.manifest_bytes);

    let manifest = fetched.json();
    assert_eq!(manifest["config"]["digest"], json!(pushed.config_digest));
    let config = registry.get_blob(repo, &pushed.config_digest);
    assert_eq!(sha256_digest(&config), pushed.config_digest);
    let config: serde_json::Value = serde_json::from_slice(&config).unwrap();
    assert_eq!(config["rootfs"]["diff_ids"], json!(pushed.diff_ids));
    assert_eq!(config["architecture"], json!(image.platform.architecture));
    assert_eq!(config["os"], json!(image.platform.os));

    assert_eq!(manifest["layers"].as_array().unwrap().len(), image.layers.len());
    for (layer, desc) in image.layers.iter().zip(manifest["layers"].as_array().unwrap()) {
        assert_eq!(desc["digest"], json!(layer.digest));
        assert_eq!(desc["size"], json!(layer.size()));
        let blob = registry.get_blob(repo, &layer.digest);
        assert_eq!(sha256_digest(&blob), layer.digest, "blob digest");
        assert_eq!(sha256_digest(&decompress(layer)), layer.diff_id, "diff_id");
        assert_eq!(decompress(layer), layer.tar);
    }
}

#[test]
fn registry_starts_answers_and_dies_with_its_owner() {
    let started = Instant::now();
    let registry = Registry::start();
    let startup = started.elapsed();
    assert!(registry.host().starts_with("127.0.0.1:"), "{}", registry.host());
    assert_eq!(registry.url(), format!("http://{}", registry.host()));
    assert!(registry.storage_dir().is_dir());

    let resp = registry.get("/v2/", &[]);
    assert_eq!(resp.status(), 200);
    assert_eq!(
        header_str(resp.headers(), "docker-distribution-api-version").as_deref(),
        Some("registry/2.0")
    );
    assert!(header_str(resp.headers(), MARKER_HEADER).is_some());
    eprintln!("registry startup took {startup:?}");

    let port = registry.port();
    let work_dir = registry.work_dir().to_path_buf();
    drop(registry);
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
        "registry still listening"
    );
    assert!(!work_dir.exists(), "temp dir not removed");
}

#[test]
fn registry_is_killed_when_the_test_panics() {
    let mut pid = 0;
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let registry = Registry::start();
        pid = registry.pid();
        panic!("test failure while the registry runs");
    }));
    assert!(result.is_err());
    assert_ne!(pid, 0);
    // The child was killed and reaped in Drop: the pid no longer exists.
    assert!(!process_alive(pid as i32), "registry pid {pid} still exists");
}

/// Runs itself in a child process that starts a registry and then sleeps; kills that process
/// with SIGKILL (no unwinding, no `Drop`) and checks the registry dies too.
#[test]
fn registry_dies_when_the_test_process_is_killed() {
    const CHILD: &str = "RPULL_HARNESS_CHILD_SLEEPER";
    if std::env::var_os(CHILD).is_some() {
        let registry = Registry::start();
        println!("REGISTRY_DIR={}", registry.work_dir().display());
        println!("REGISTRY_PID={}", registry.pid());
        std::io::Write::flush(&mut std::io::stdout()).unwrap();
        std::thread::sleep(Duration::from_secs(60));
        return;
    }
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args([
        "--exact",
        "harness::registry_dies_when_the_test_process_is_killed",
        "--nocapture",
    ])
    .env(CHILD, "1")
    .stdout(std::process::Stdio::piped());
    let mut child = crate::support::process::spawn_tethered(cmd).unwrap();
    let stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut lines = std::io::BufRead::lines(stdout).map_while(Result::ok);
    let mut value = |key: &str| {
        lines
            .find_map(|line| line.strip_prefix(key).map(String::from))
            .unwrap_or_else(|| panic!("child printed no {key}"))
    };
    let work_dir = value("REGISTRY_DIR=");
    let pid: i32 = value("REGISTRY_PID=").parse().unwrap();
    assert!(process_alive(pid), "registry {pid} not running");
    crate::support::process::kill_and_reap(&mut child);
    let deadline = Instant::now() + Duration::from_secs(5);
    while process_alive(pid) {
        assert!(
            Instant::now() < deadline,
            "registry {pid} outlived its killed test process"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // Nobody ran the killed process's destructors.
    std::fs::remove_dir_all(&work_dir).unwrap();
}

/// Is `pid` a live process (not gone, not a zombie waiting for init to reap it)?
fn process_alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the parenthesised command name.
        Ok(stat) => !stat
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| rest.starts_with('Z')),
        Err(_) => false,
    }
}

#[test]
fn upload_locations_resolve_relative_and_absolute() {
    let start = "http://127.0.0.1:5000/v2/a/b/blobs/uploads/";
    let d = "sha256:abc";
    assert_eq!(
        crate::support::registry::upload_url(start, "/v2/a/b/blobs/uploads/u1?_state=x%3D", d).as_str(),
        "http://127.0.0.1:5000/v2/a/b/blobs/uploads/u1?_state=x%3D&digest=sha256%3Aabc"
    );
    assert_eq!(
        crate::support::registry::upload_url(start, "u2", d).as_str(),
        "http://127.0.0.1:5000/v2/a/b/blobs/uploads/u2?digest=sha256%3Aabc"
    );
    assert_eq!(
        crate::support::registry::upload_url(start, "http://other:1/up?x=1", d).as_str(),
        "http://other:1/up?x=1&digest=sha256%3Aabc"
    );
}

#[test]
fn parallel_registries_get_distinct_ports() {
    let handles: Vec<_> = (0..6)
        .map(|_| {
            std::thread::spawn(|| {
                let registry = Registry::start();
                assert_eq!(registry.get("/v2/", &[]).status(), 200);
                registry
            })
        })
        .collect();
    let registries: Vec<Registry> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    let ports: BTreeSet<u16> = registries.iter().map(Registry::port).collect();
    assert_eq!(ports.len(), registries.len());
    // Each answers with its own marker, so no test can talk to another's registry.
    let markers: BTreeSet<String> = registries
        .iter()
        .map(|r| header_str(r.get("/v2/", &[]).headers(), MARKER_HEADER).unwrap())
        .collect();
    assert_eq!(markers.len(), registries.len());
}

#[test]
fn oci_gzip_two_layer_image_round_trips() {
    let registry = Registry::start();
    let image = base_and_top(Platform::linux_amd64(), Compression::Gzip, Compression::Gzip)
        .with_config(json!({ "Env": ["PATH=/usr/bin"], "Cmd": ["/usr/bin/tool"] }));
    let pushed = registry.push_image("library/harness", "gzip", &image, ManifestFormat::Oci);
    assert_eq!(pushed.media_type, OCI_MANIFEST);
    assert_eq!(pushed.manifest_digest, image.manifest_digest(ManifestFormat::Oci));
    check_round_trip(&registry, &pushed, &image, "gzip");

    let manifest = registry
        .get_manifest("library/harness", "gzip", &[OCI_MANIFEST])
        .json();
    assert_eq!(manifest["config"]["mediaType"], json!(OCI_CONFIG));
    for layer in manifest["layers"].as_array().unwrap() {
        assert_eq!(
            layer["mediaType"],
            json!("application/vnd.oci.image.layer.v1.tar+gzip")
        );
    }
    assert_eq!(registry.tags("library/harness"), vec!["gzip".to_string()]);
    // Pushing the same image again is a no-op that gives the same digest.
    let again = registry.push_image("library/harness", "gzip", &image, ManifestFormat::Oci);
    assert_eq!(again.manifest_digest, pushed.manifest_digest);
}

#[test]
fn oci_zstd_and_uncompressed_layers_round_trip() {
    let registry = Registry::start();
    let image = base_and_top("linux/arm64", Compression::Zstd, Compression::None);
    assert_eq!(
        &image.layers[0].blob[..4],
        &[0x28, 0xb5, 0x2f, 0xfd],
        "zstd magic"
    );
    assert_eq!(image.layers[1].digest, image.layers[1].diff_id);
    let pushed = registry.push_image("zstd", "latest", &image, ManifestFormat::Oci);
    check_round_trip(&registry, &pushed, &image, "latest");
    let manifest = registry.get_manifest("zstd", "latest", &[OCI_MANIFEST]).json();
    assert_eq!(
        manifest["layers"][0]["mediaType"],
        json!("application/vnd.oci.image.layer.v1.tar+zstd")
    );
    assert_eq!(
        manifest["layers"][1]["mediaType"],
        json!("application/vnd.oci.image.layer.v1.tar")
    );
}

#[test]
fn docker_schema2_image_round_trips() {
    let registry = Registry::start();
    let image = base_and_top("linux/arm/v7", Compression::Gzip, Compression::Gzip);
    let pushed = registry.push_image("schema2/img", "v1", &image, ManifestFormat::Docker);
    assert_eq!(pushed.media_type, DOCKER_MANIFEST);
    check_round_trip(&registry, &pushed, &image, "v1");
    let fetched = registry.get_manifest("schema2/img", "v1", &[DOCKER_MANIFEST]);
    assert_eq!(fetched.media_type, DOCKER_MANIFEST);
    let manifest = fetched.json();
    assert_eq!(manifest["mediaType"], json!(DOCKER_MANIFEST));
    assert_eq!(manifest["config"]["mediaType"], json!(DOCKER_CONFIG));
    for layer in manifest["layers"].as_array().unwrap() {
        assert_eq!(
            layer["mediaType"],
            json!("application/vnd.docker.image.rootfs.diff.tar.gzip")
        );
    }
    let config: serde_json::Value =
        serde_json::from_slice(&registry.get_blob("schema2/img", &pushed.config_digest)).unwrap();
    assert_eq!(config["variant"], json!("v7"));
}

#[test]
fn oci_index_with_attestations_round_trips() {
    let registry = Registry::start();
    let images: Vec<Image> = ["linux/amd64", "linux/arm64", "linux/arm/v7"]
        .into_iter()
        .enumerate()
        .map(|(i, platform)| {
            let layer = LayerBuilder::new()
                .file("platform", platform, 0o644)
                .build(Compression::Gzip);
            Image::new(platform, vec![base_layer().build(Compression::Gzip), layer])
                .with_config(json!({ "Labels": { "n": i.to_string() } }))
        })
        .collect();
    let index = registry.push_multi_platform("multi", "latest", ManifestFormat::Oci, &images, true);
    assert_eq!(index.entries.len(), 6);

    let fetched = registry.get_manifest("multi", "latest", &ALL_MANIFEST_TYPES);
    assert_eq!(fetched.media_type, OCI_INDEX);
    assert_eq!(fetched.digest, index.digest);
    assert_eq!(fetched.bytes, index.bytes);
    let doc = fetched.json();
    let manifests = doc["manifests"].as_array().unwrap();
    for (entry, image) in manifests.iter().zip(&index.images) {
        assert_eq!(entry["digest"], json!(image.manifest_digest));
        assert_eq!(entry["platform"], image.platform.to_json());
        assert!(entry.get("annotations").is_none());
    }
    for (entry, image) in manifests[3..].iter().zip(&index.images) {
        assert_eq!(
            entry["platform"],
            json!({ "architecture": "unknown", "os": "unknown" })
        );
        assert_eq!(
            entry["annotations"]["vnd.docker.reference.type"],
            json!("attestation-manifest")
        );
        assert_eq!(
            entry["annotations"]["vnd.docker.reference.digest"],
            json!(image.manifest_digest)
        );
        // The attestation is a real manifest whose layer is an in-toto statement.
        let digest = entry["digest"].as_str().unwrap();
        let attestation = registry.get_manifest("multi", digest, &[OCI_MANIFEST]);
        assert_eq!(attestation.digest, digest);
        let layer = &attestation.json()["layers"][0];
        assert_eq!(layer["mediaType"], json!(IN_TOTO));
        let statement = registry.get_blob("multi", layer["digest"].as_str().unwrap());
        let statement: serde_json::Value = serde_json::from_slice(&statement).unwrap();
        let subject = image.manifest_digest.trim_start_matches("sha256:");
        assert_eq!(statement["subject"][0]["digest"]["sha256"], json!(subject));
    }
    assert!(index.entries[3..].iter().all(IndexEntry::is_attestation));
    assert!(!index.entries[..3].iter().any(IndexEntry::is_attestation));
    // Platform manifests are untagged: only the index has a tag.
    assert_eq!(registry.tags("multi"), vec!["latest".to_string()]);
    for (image, source) in index.images.iter().zip(&images) {
        check_round_trip(&registry, image, source, &image.manifest_digest);
    }
}

#[test]
fn docker_manifest_list_round_trips() {
    let registry = Registry::start();
    let images = vec![
        Image::new("linux/amd64", vec![base_layer().build(Compression::Gzip)]),
        Image::new("linux/s390x", vec![top_layer().build(Compression::Gzip)]),
    ];
    let list = registry.push_multi_platform("list", "v2", ManifestFormat::Docker, &images, false);
    let fetched = registry.get_manifest("list", "v2", &[DOCKER_MANIFEST_LIST, DOCKER_MANIFEST]);
    assert_eq!(fetched.media_type, DOCKER_MANIFEST_LIST);
    assert_eq!(fetched.digest, list.digest);
    let doc = fetched.json();
    assert_eq!(doc["manifests"][0]["mediaType"], json!(DOCKER_MANIFEST));
    assert_eq!(doc["manifests"][1]["platform"]["architecture"], json!("s390x"));
    // A hand-made list (here: one entry and an attestation) pushes just as well.
    let entries = vec![
        list.images[0].index_entry(),
        registry.push_attestation("list", &list.images[0]),
    ];
    let doc = index_json(ManifestFormat::Docker, &entries);
    let digest = registry.push_manifest_json("list", "with-attestation", &doc);
    assert_eq!(digest, sha256_digest(&to_bytes(&doc)));
}

#[test]
fn tags_list_is_not_paginated_by_registry_2_8() {
    let registry = Registry::start();
    let pushed = registry.push_small_image("many", "tag-000", 7);
    std::thread::scope(|scope| {
        for worker in 0..8 {
            let (registry, manifest) = (&registry, &pushed.manifest_bytes);
            scope.spawn(move || {
                for i in (1..250).filter(|i| i % 8 == worker) {
                    registry.push_manifest("many", &format!("tag-{i:03}"), OCI_MANIFEST, manifest);
                }
            });
        }
    });
    let resp = registry.get("/v2/many/tags/list?n=100", &[]);
    assert_eq!(resp.status(), 200);
    // distribution 2.8 ignores `n` and sends no `Link`: rpull's pagination needs a paginating
    // front (or a newer registry) to be exercised.
    let link = header_str(resp.headers(), "link");
    let doc: serde_json::Value = serde_json::from_slice(&resp.bytes().unwrap()).unwrap();
    let tags: BTreeSet<&str> = doc["tags"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap())
        .collect();
    assert_eq!(
        link, None,
        "this registry paginates tags now: update the harness docs and tests"
    );
    assert_eq!(tags.len(), 250);
    assert_eq!(registry.tags("many").len(), 250);

    // The catalog, by contrast, does paginate.
    registry.push_small_image("other", "latest", 8);
    let resp = registry.get("/v2/_catalog?n=1", &[]);
    let link = header_str(resp.headers(), "link").expect("catalog Link header");
    assert!(link.contains("rel=\"next\""), "{link}");
}

#[test]
fn deleted_and_corrupted_content_is_served_as_stored() {
    let registry = Registry::start();
    let pushed = registry.push_small_image("faults", "latest", 11);
    let layer = pushed.layer_digests[0].clone();
    let mut bad = registry.get_blob("faults", &layer);
    bad[0] ^= 0xff;
    registry.corrupt_blob(&layer, &bad);
    let served = registry.get_blob("faults", &layer);
    assert_eq!(served, bad);
    assert_ne!(sha256_digest(&served), layer);

    registry.delete_blob("faults", &layer);
    assert_eq!(
        registry.get(&format!("/v2/faults/blobs/{layer}"), &[]).status(),
        404
    );
    registry.delete_manifest("faults", &pushed.manifest_digest);
    assert_eq!(
        registry
            .get("/v2/faults/manifests/latest", &ALL_MANIFEST_TYPES)
            .status(),
        404
    );
}

#[test]
fn layers_are_deterministic_and_keep_hostile_entries() {
    let long_name = format!("deep/{}/file", "d".repeat(120));
    let long_target = format!("/{}", "t".repeat(150));
    let builder = base_layer()
        .whiteout("etc/motd")
        .whiteout("top")
        .opaque("usr/bin/")
        .fifo("run/fifo", 0o600)
        .char_device("dev/null", 1, 3, 0o666)
        .block_device("dev/sda", 8, 0, 0o660)
        .file(&long_name, b"long", 0o644)
        .symlink("long-link", &long_target)
        .raw_file("../escape", b"x")
        .raw_file("/etc/passwd", b"root::0:0::/:/bin/sh\n")
        .raw_file("a/../../b", b"y")
        .raw_symlink("evil", "../../../../etc")
        .raw_hardlink("hard", "/etc/shadow")
        .entry(
            Entry::file("xattr", b"z")
                .owner(1000, 1000)
                .pax("SCHILY.xattr.user.k", b"v"),
        );
    let a = builder.build(Compression::Gzip);
    let b = builder.clone().build(Compression::Gzip);
    assert_eq!(a.digest, b.digest);
    assert_eq!(a.diff_id, b.diff_id);
    assert_eq!(a.blob, b.blob);
    assert_eq!(a.diff_id, builder.build(Compression::Zstd).diff_id);

    let entries = tar_entries(&a.tar);
    let names: Vec<String> = entries
        .iter()
        .map(|(n, _, _)| String::from_utf8_lossy(n).into_owned())
        .collect();
    for expected in [
        "etc/",
        "etc/.wh.motd",
        ".wh.top",
        "usr/bin/.wh..wh..opq",
        "../escape",
        "/etc/passwd",
        "a/../../b",
        long_name.as_str(),
    ] {
        assert!(
            names.iter().any(|n| n == expected),
            "{expected:?} missing from {names:?}"
        );
    }
    let find = |name: &str| {
        entries
            .iter()
            .find(|(n, _, _)| n == name.as_bytes())
            .unwrap()
            .clone()
    };
    assert_eq!(find("run/fifo").1, b'6');
    assert_eq!(find("dev/null").1, b'3');
    assert_eq!(find("dev/sda").1, b'4');
    assert_eq!(find("evil").1, b'2');
    assert_eq!(find("evil").2.unwrap(), b"../../../../etc");
    assert_eq!(find("hard").1, b'1');
    assert_eq!(find("hard").2.unwrap(), b"/etc/shadow");
    assert_eq!(find("long-link").2.unwrap(), long_target.as_bytes());

    let mut archive = tar::Archive::new(&a.tar[..]);
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        let header = entry.header().clone();
        assert_eq!(header.mtime().unwrap(), layer::FIXED_MTIME);
        match &*entry.path_bytes() {
            b"dev/null" => {
                assert_eq!(header.device_major().unwrap(), Some(1));
                assert_eq!(header.device_minor().unwrap(), Some(3));
            }
            b"xattr" => {
                assert_eq!(header.uid().unwrap(), 1000);
                let pax: Vec<_> = entry
                    .pax_extensions()
                    .unwrap()
                    .unwrap()
                    .map(|e| e.unwrap().key().unwrap().to_string())
                    .collect();
                assert_eq!(pax, ["SCHILY.xattr.user.k"]);
            }
            b"usr/bin/tool" => {
                assert_eq!(header.uid().unwrap(), 0);
                assert_eq!(header.mode().unwrap(), 0o755);
                let mut body = String::new();
                entry.read_to_string(&mut body).unwrap();
                assert_eq!(body, "#!/bin/sh\necho tool\n");
            }
            _ => {}
        }
    }
}

#[test]
fn random_layers_are_incompressible_and_seeded() {
    let size = 2 << 20;
    let a = Layer::random("blob.bin", size, 1, Compression::Gzip);
    let b = Layer::random("blob.bin", size, 1, Compression::Gzip);
    let c = Layer::random("blob.bin", size, 2, Compression::Gzip);
    assert_eq!(a.digest, b.digest);
    assert_ne!(a.digest, c.digest);
    assert!(
        a.blob.len() >= size,
        "{} < {size}: the data compressed",
        a.blob.len()
    );
    let small = Layer::random("blob.bin", 64 << 10, 1, Compression::Gzip);
    assert_eq!(sha256_digest(&gunzip(&small.blob)), small.diff_id);
    assert_eq!(sha256_digest(&gunzip(&a.blob)), a.diff_id);
}

#[test]
#[should_panic(expected = "apt-get install -y docker-registry")]
fn missing_registry_binary_panics_with_install_hint() {
    Registry::start_with(|config| config.binary = Some("/nonexistent/docker-registry".into()));
}

/// Runs itself in a child process with `RPULL_TEST_REGISTRY_BIN=/nonexistent` (setting the
/// variable here would race with the other tests) and checks that the child's test fails with
/// the install instructions.
#[test]
fn registry_bin_env_pointing_nowhere_fails_the_test() {
    const CHILD: &str = "RPULL_HARNESS_CHILD";
    if std::env::var_os(CHILD).is_some() {
        Registry::start();
        return;
    }
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "harness::registry_bin_env_pointing_nowhere_fails_the_test",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD, "1")
        .env(REGISTRY_BIN_ENV, "/nonexistent")
        .output()
        .unwrap();
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !out.status.success(),
        "child test passed without a registry:\n{all}"
    );
    assert!(all.contains("1 failed"), "{all}");
    assert!(all.contains("apt-get install -y docker-registry"), "{all}");
    assert!(all.contains("RPULL_TEST_REGISTRY_BIN=/path/to/registry"), "{all}");
    assert!(all.contains("/nonexistent"), "{all}");
}

#[test]
fn sandbox_scrubs_the_environment() {
    let mut sandbox = rpull();
    sandbox.env("EXTRA", "1");
    let cmd = sandbox.command();
    assert_eq!(cmd.get_program(), crate::support::rpull::RPULL_BIN);
    let args: Vec<_> = cmd.get_args().collect();
    assert_eq!(args, [std::ffi::OsStr::new("--root"), sandbox.root().as_os_str()]);
    let envs: std::collections::BTreeMap<_, _> = cmd.get_envs().collect();
    for removed in [
        "HTTP_PROXY",
        "https_proxy",
        "NO_PROXY",
        "RPULL_ROOT",
        "DOCKER_DEFAULT_PLATFORM",
    ] {
        assert_eq!(
            envs.get(std::ffi::OsStr::new(removed)),
            Some(&None),
            "{removed} not removed"
        );
    }

    let out = RunningRpull::start(sandbox.command_for("env"), Duration::from_secs(10)).wait();
    out.assert_success();
    let lines: BTreeSet<&str> = out.stdout.lines().collect();
    assert!(
        lines.contains(format!("HOME={}", sandbox.home().display()).as_str()),
        "{out}"
    );
    assert!(lines.contains(format!("DOCKER_CONFIG={}", sandbox.docker_config_dir().display()).as_str()));
    assert!(lines.contains("NO_COLOR=1"));
    assert!(lines.contains("EXTRA=1"));
    assert!(
        !out.stdout.contains("HTTP_PROXY=") && !out.stdout.contains("RPULL_"),
        "{out}"
    );
}

#[test]
fn running_commands_capture_output_and_exit_codes() {
    let sandbox = rpull();
    let mut cmd = sandbox.command_for("sh");
    cmd.args(["-c", "echo out; echo err >&2; printf 'no newline'; exit 3"]);
    let out = RunningRpull::start(cmd, Duration::from_secs(10)).wait();
    out.assert_code(3);
    assert_lines(&out.stdout, &["out", "no newline"]);
    assert_lines(&out.stderr, &["err"]);

    let mut cmd = sandbox.command_for("sh");
    cmd.args(["-c", "echo ready; exec sleep 30"]);
    let mut running = RunningRpull::start(cmd, Duration::from_secs(10));
    running.wait_for_stdout("ready", Duration::from_secs(5));
    running.interrupt();
    let out = running.wait();
    assert_eq!(out.code(), None, "killed by SIGINT: {out}");
}

#[test]
#[should_panic(expected = "timed out")]
fn running_commands_time_out() {
    let sandbox = rpull();
    let mut cmd = sandbox.command_for("sleep");
    cmd.arg("30");
    RunningRpull::start(cmd, Duration::from_millis(200)).wait();
}

#[test]
#[should_panic(expected = "lines differ, first at line 2")]
fn assert_lines_reports_the_first_difference() {
    assert_lines("a\nb\n", &["a", "b"]);
    assert_lines("a\nx\n", &["a", "b"]);
}
