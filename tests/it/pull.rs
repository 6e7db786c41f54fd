//! End-to-end pulls: the real `rpull` binary against the real distribution registry, with
//! output compared line for line to docker's (see ../shared/docs/captures/).

use std::fs;

use crate::support::*;
use serde_json::Value;

/// A three-layer gzip OCI image with distinct content, pushed as `repo:tag`.
fn three_layer_image(registry: &Registry, repo: &str, tag: &str) -> PushedImage {
    let layers = layer::three_layers([Compression::Gzip; 3], 300_000, 7);
    registry.push_layers(repo, tag, layers)
}

fn short(digest: &str) -> &str {
    &digest["sha256:".len().."sha256:".len() + 12]
}

/// Lines of `out` for one layer id, in order.
fn layer_lines<'a>(out: &'a str, id: &str) -> Vec<&'a str> {
    out.lines()
        .filter(|l| l.starts_with(&format!("{id}: ")))
        .map(|l| &l[id.len() + 2..])
        .collect()
}

/// The tags an `--all-tags` pull of `repo` announced, in order: its `<tag>: Pulling from <repo>`
/// lines.
fn pulled_tags<'a>(out: &'a str, repo: &str) -> Vec<&'a str> {
    let suffix = format!(": Pulling from {repo}");
    out.lines().filter_map(|l| l.strip_suffix(&suffix)).collect()
}

#[test]
fn pulls_a_multi_layer_image_like_docker() {
    let registry = Registry::start();
    let pushed = three_layer_image(&registry, "bench/img", "v1");
    let sandbox = rpull();
    let reference = registry.image_ref("bench/img", "v1");
    let out = sandbox.run([&reference]);
    out.assert_success();
    let lines: Vec<&str> = out.stdout.lines().collect();
    let ids: Vec<&str> = pushed.layer_digests.iter().map(|d| short(d)).collect();
    // Deterministic frame: first line, the `Pulling fs layer` block in manifest order, and the
    // closing lines.
    assert_eq!(lines[0], "v1: Pulling from bench/img");
    for (i, id) in ids.iter().enumerate() {
        assert_eq!(lines[1 + i], format!("{id}: Pulling fs layer"), "{}", out.stdout);
    }
    let n = lines.len();
    assert_eq!(lines[n - 3], format!("Digest: {}", pushed.manifest_digest));
    assert_eq!(
        lines[n - 2],
        format!("Status: Downloaded newer image for {reference}")
    );
    assert_eq!(lines[n - 1], reference);
    // Each layer: Verifying Checksum, Download complete, Pull complete; Pull complete in order.
    for id in &ids {
        assert_eq!(
            layer_lines(&out.stdout, id),
            [
                "Pulling fs layer",
                "Verifying Checksum",
                "Download complete",
                "Pull complete"
            ],
            "{}",
            out.stdout
        );
    }
    let completes: Vec<&str> = lines
        .iter()
        .filter(|l| l.ends_with(": Pull complete"))
        .map(|l| &l[..12])
        .collect();
    assert_eq!(completes, ids);
    assert!(out.stderr.is_empty(), "stderr: {}", out.stderr);

    // The store is an OCI layout holding every blob, the layers unpacked, and the reference.
    let root = sandbox.root();
    assert_eq!(
        fs::read_to_string(root.join("oci-layout")).unwrap(),
        r#"{"imageLayoutVersion":"1.0.0"}"#
    );
    let entry = sandbox.ref_entry(&reference).expect("index.json entry");
    assert_eq!(entry["digest"], pushed.manifest_digest.as_str());
    assert_eq!(entry["mediaType"], "application/vnd.oci.image.manifest.v1+json");
    for d in pushed
        .layer_digests
        .iter()
        .chain([&pushed.config_digest, &pushed.manifest_digest])
    {
        assert!(
            root.join("blobs/sha256").join(&d[7..]).is_file(),
            "missing blob {d}"
        );
    }
    for d in &pushed.diff_ids {
        assert!(
            root.join("layers/sha256")
                .join(&d[7..])
                .join("layer.json")
                .is_file(),
            "layer {d} not unpacked"
        );
    }
    let hello = root
        .join("layers/sha256")
        .join(&pushed.diff_ids[2][7..])
        .join("rootfs/hello.txt");
    assert_eq!(fs::read_to_string(hello).unwrap(), "hello\n");

    // Pulling again: nothing is downloaded, docker's up-to-date lines.
    let again = sandbox.run([&reference]);
    again.assert_success();
    again.assert_stdout_lines(&[
        "v1: Pulling from bench/img",
        &format!("Digest: {}", pushed.manifest_digest),
        &format!("Status: Image is up to date for {reference}"),
        &reference,
    ]);
}

#[test]
fn quiet_prints_only_the_reference() {
    let registry = Registry::start();
    registry.push_small_image("bench/q", "latest", 1);
    let sandbox = rpull();
    let name = format!("{}/bench/q", registry.host());
    let out = sandbox.run(["-q", &name]);
    out.assert_success()
        .assert_stdout_lines(&[&format!("{name}:latest")]);
    let again = sandbox.run(["--quiet", &name]);
    again
        .assert_success()
        .assert_stdout_lines(&[&format!("{name}:latest")]);
}

#[test]
fn default_tag_and_pull_subcommand() {
    let registry = Registry::start();
    let pushed = registry.push_small_image("bench/d", "latest", 2);
    let sandbox = rpull();
    let name = format!("{}/bench/d", registry.host());
    let out = sandbox.run(["pull", &name]);
    out.assert_success();
    let id = short(&pushed.layer_digests[0]);
    out.assert_stdout_lines(&[
        "Using default tag: latest",
        "latest: Pulling from bench/d",
        &format!("{id}: Pulling fs layer"),
        &format!("{id}: Verifying Checksum"),
        &format!("{id}: Download complete"),
        &format!("{id}: Pull complete"),
        &format!("Digest: {}", pushed.manifest_digest),
        &format!("Status: Downloaded newer image for {name}:latest"),
        &format!("{name}:latest"),
    ]);
}

#[test]
fn layers_beyond_the_concurrency_limit_wait() {
    let registry = Registry::start();
    let layers: Vec<Layer> = (0..5)
        .map(|i| Layer::random(&format!("f{i}"), 50_000, i, Compression::Gzip))
        .collect();
    let pushed = registry.push_layers("bench/five", "x", layers);
    let sandbox = rpull();
    let out = sandbox.run([
        "--max-concurrent-downloads",
        "2",
        &registry.image_ref("bench/five", "x"),
    ]);
    out.assert_success();
    let lines: Vec<&str> = out.stdout.lines().collect();
    let ids: Vec<&str> = pushed.layer_digests.iter().map(|d| short(d)).collect();
    for (i, id) in ids.iter().enumerate() {
        assert_eq!(lines[1 + i], format!("{id}: Pulling fs layer"), "{}", out.stdout);
    }
    for (i, id) in ids[2..].iter().enumerate() {
        assert_eq!(lines[6 + i], format!("{id}: Waiting"), "{}", out.stdout);
    }
    assert_eq!(layer_lines(&out.stdout, ids[0]).len(), 4);
}

#[test]
fn pulls_by_digest_and_by_tag_and_digest() {
    let registry = Registry::start();
    let pushed = registry.push_small_image("bench/debian", "bookworm", 3);
    let sandbox = rpull();
    let by_digest = registry.digest_ref("bench/debian", &pushed.manifest_digest);
    let id = short(&pushed.layer_digests[0]);
    let out = sandbox.run([&by_digest]);
    out.assert_success().assert_stdout_lines(&[
        &format!("{by_digest}: Pulling from bench/debian"),
        &format!("{id}: Pulling fs layer"),
        &format!("{id}: Verifying Checksum"),
        &format!("{id}: Download complete"),
        &format!("{id}: Pull complete"),
        &format!("Digest: {}", pushed.manifest_digest),
        &format!("Status: Downloaded newer image for {by_digest}"),
        &by_digest,
    ]);
    let tag_and_digest = format!(
        "{}/bench/debian:bookworm@{}",
        registry.host(),
        pushed.manifest_digest
    );
    let out = sandbox.run([&tag_and_digest]);
    out.assert_success().assert_stdout_lines(&[
        &format!("{by_digest}: Pulling from bench/debian"),
        &format!("Digest: {}", pushed.manifest_digest),
        &format!("Status: Image is up to date for {by_digest}"),
        &tag_and_digest,
    ]);
    assert!(sandbox.ref_entry(&by_digest).is_some());
}

#[test]
fn missing_tag_and_missing_repository() {
    let registry = Registry::start();
    registry.push_small_image("bench/debian", "bookworm", 4);
    let sandbox = rpull();
    let host = registry.host();
    let out = sandbox.run([format!("{host}/bench/debian:nope")]);
    out.assert_code(1)
        .assert_stdout_lines(&[])
        .assert_stderr_lines(&[&format!(
            "manifest for {host}/bench/debian:nope not found: manifest unknown: manifest unknown"
        )]);
    let out = sandbox.run([format!("{host}/bench/nope")]);
    out.assert_code(1)
        .assert_stdout_lines(&["Using default tag: latest"]);
    assert!(
        out.stderr
            .starts_with(&format!("manifest for {host}/bench/nope:latest not found: ")),
        "{}",
        out.stderr
    );
    assert_eq!(sandbox.index_json()["manifests"].as_array().unwrap().len(), 0);
}

#[test]
fn bad_references_and_arguments() {
    let sandbox = rpull();
    let out = sandbox.run(["127.0.0.1:5000/Bench/UPPER:x"]);
    out.assert_code(1)
        .assert_stdout_lines(&[])
        .assert_stderr_lines(&["invalid reference format: repository name (Bench/UPPER) must be lowercase"]);
    let out = sandbox.run(["127.0.0.1:5000/bench/debian:bad!tag"]);
    out.assert_code(1)
        .assert_stderr_lines(&["invalid reference format"]);
    let out = sandbox.run(["-a", "127.0.0.1:5000/bench/debian:tag"]);
    out.assert_code(1)
        .assert_stderr_lines(&["tag can't be used with --all-tags/-a"]);
    let out = sandbox.run([
        "--platform",
        "linux/nonsense/x/y",
        "127.0.0.1:5000/bench/multi:latest",
    ]);
    out.assert_code(1)
        .assert_stderr_lines(&["\"linux/nonsense/x/y\": cannot parse platform specifier: invalid argument"]);
    let out = sandbox.run(Vec::<&str>::new());
    out.assert_code(1);
    assert!(
        out.stderr.starts_with("rpull: 'rpull pull' requires 1 argument"),
        "{}",
        out.stderr
    );
    let out = sandbox.run(["--no-such-flag", "x"]);
    out.assert_code(125);
}

#[test]
fn connection_refused_reads_like_docker() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let out = rpull().run([format!("127.0.0.1:{port}/bench/debian:bookworm")]);
    out.assert_code(1)
        .assert_stdout_lines(&[])
        .assert_stderr_lines(&[&format!(
            "Get \"http://127.0.0.1:{port}/v2/\": dial tcp 127.0.0.1:{port}: connect: connection refused"
        )]);
}

/// A registry holding `<repo>:<tag>`, an index (with attestations when `format` is OCI) of
/// linux/amd64, linux/arm64 and linux/arm/v7 images; the registry, the index and the reference.
fn multi_platform(repo: &str, tag: &str, format: ManifestFormat) -> (Registry, PushedIndex, String) {
    let registry = Registry::start();
    let images = Image::per_platform(&["linux/amd64", "linux/arm64", "linux/arm/v7"], 1000, 0);
    let index = registry.push_multi_platform(repo, tag, format, &images, format == ManifestFormat::Oci);
    let reference = registry.image_ref(repo, tag);
    (registry, index, reference)
}

#[test]
fn picks_the_platform_from_an_index() {
    let (_registry, index, reference) = multi_platform("bench/multi", "latest", ManifestFormat::Oci);
    let sandbox = rpull();
    let out = sandbox.run(["--platform", "linux/arm64", &reference]);
    out.assert_success();
    let arm = &index.images[1];
    let id = short(&arm.layer_digests[0]);
    out.assert_stdout_lines(&[
        "latest: Pulling from bench/multi",
        &format!("{id}: Pulling fs layer"),
        &format!("{id}: Verifying Checksum"),
        &format!("{id}: Download complete"),
        &format!("{id}: Pull complete"),
        &format!("Digest: {}", index.digest),
        &format!("Status: Downloaded newer image for {reference}"),
        &reference,
    ]);
    let entry = sandbox.ref_entry(&reference).unwrap();
    assert_eq!(entry["digest"], arm.manifest_digest.as_str());
    assert_eq!(entry["platform"]["architecture"], "arm64");
    // The index blob itself is kept, so other tools can resolve the reference's digest.
    assert!(sandbox
        .root()
        .join("blobs/sha256")
        .join(&index.digest[7..])
        .is_file());

    // DOCKER_DEFAULT_PLATFORM is --platform's default; a new platform moves the reference.
    let mut sandbox2 = rpull();
    sandbox2.env("DOCKER_DEFAULT_PLATFORM", "linux/arm/v7");
    sandbox2.run([&reference]).assert_success();
    assert_eq!(
        sandbox2.ref_entry(&reference).unwrap()["digest"],
        index.images[2].manifest_digest.as_str()
    );

    let out = sandbox.run(["--platform", "linux/s390x", &reference]);
    out.assert_code(1)
        .assert_stdout_lines(&["latest: Pulling from bench/multi"])
        .assert_stderr_lines(&["no matching manifest for linux/s390x in the manifest list entries"]);
}

#[test]
fn host_platform_is_the_default_and_attestations_are_skipped() {
    let (registry, index, reference) = multi_platform("bench/multi", "latest", ManifestFormat::Oci);
    let sandbox = rpull();
    let out = sandbox.run([format!("{}/bench/multi", registry.host())]);
    out.assert_success();
    let host = Platform::host();
    let want = index
        .images
        .iter()
        .find(|i| i.platform.architecture == host.architecture)
        .unwrap();
    sandbox.assert_recorded(&reference, &want.manifest_digest);
}

#[test]
fn docker_manifest_list_with_arm_variant_fallback() {
    let (_registry, index, reference) = multi_platform("bench/list", "v2s2-list", ManifestFormat::Docker);
    let sandbox = rpull();
    // arm/v6 is not in the list; docker falls back to nothing (v7 does not serve v6) — but
    // arm64 hosts fall back to arm/v7. Ask for arm/v7 explicitly.
    sandbox
        .run(["--platform", "linux/arm/v7", &reference])
        .assert_success();
    let entry = sandbox.ref_entry(&reference).unwrap();
    assert_eq!(entry["digest"], index.images[2].manifest_digest.as_str());
    assert_eq!(
        entry["mediaType"],
        "application/vnd.docker.distribution.manifest.v2+json"
    );
}

#[test]
fn warns_when_a_single_platform_image_does_not_match() {
    let registry = Registry::start();
    let layer = LayerBuilder::new().file("a", "a", 0o644).build(Compression::Gzip);
    let pushed = registry.push_image(
        "bench/one",
        "v1",
        &Image::new(Platform::parse("linux/arm64"), vec![layer]),
        ManifestFormat::Oci,
    );
    let reference = registry.image_ref("bench/one", "v1");
    let out = rpull().run(["--platform", "linux/arm/v7", &reference]);
    out.assert_success();
    let lines: Vec<&str> = out.stdout.lines().collect();
    let n = lines.len();
    assert_eq!(lines[n - 4], format!("Digest: {}", pushed.manifest_digest));
    assert_eq!(
        lines[n - 2],
        format!(
            "WARNING: image with reference {}/bench/one was found but does not match the specified platform: wanted linux/arm/v7, actual: linux/arm64",
            registry.host()
        )
    );
    assert_eq!(lines[n - 1], reference);
}

#[test]
fn all_tags_pulls_every_tag() {
    let registry = Registry::start();
    let base = LayerBuilder::new()
        .file("base", "base", 0o644)
        .build(Compression::Gzip);
    let mut tags = Vec::new();
    for i in 0..12 {
        let top = LayerBuilder::new()
            .file("n", format!("{i}"), 0o644)
            .build(Compression::Gzip);
        let tag = format!("tag{i:03}");
        registry.push_layers("bench/many", &tag, vec![base.clone(), top]);
        tags.push(tag);
    }
    let sandbox = rpull();
    let name = format!("{}/bench/many", registry.host());
    let out = sandbox.run(["-a", &name]);
    out.assert_success();
    let pulled = pulled_tags(&out.stdout, "bench/many");
    let mut sorted = pulled.clone();
    sorted.sort();
    assert_eq!(sorted, tags);
    let base_id = &base.digest[7..19];
    assert_eq!(
        layer_lines(&out.stdout, base_id)
            .iter()
            .filter(|l| **l == "Already exists")
            .count(),
        11
    );
    let lines: Vec<&str> = out.stdout.lines().collect();
    let n = lines.len();
    assert_eq!(lines[n - 2], format!("Status: Downloaded newer image for {name}"));
    assert_eq!(lines[n - 1], name);
    assert_eq!(out.stdout.matches("Digest: ").count(), 12);
    for tag in &tags {
        assert!(sandbox.ref_entry(&format!("{name}:{tag}")).is_some());
    }
    let again = sandbox.run(["-a", &name]);
    again.assert_success();
    assert!(!again.stdout.contains("Pull complete"));
    assert!(again
        .stdout
        .contains(&format!("Status: Image is up to date for {name}\n")));
    let quiet = sandbox.run(["-a", "-q", &name]);
    quiet.assert_success().assert_stdout_lines(&[&name]);
}

#[test]
fn zstd_plain_and_docker_layers_with_links_and_whiteouts() {
    let registry = Registry::start();
    let l1 = LayerBuilder::new()
        .dir("srv", 0o755)
        .dir("srv/app", 0o755)
        .file("srv/app/gone.txt", "gone", 0o644)
        .file("srv/app/keep.txt", "keep", 0o644)
        .symlink("srv/link", "app/keep.txt")
        .hardlink("srv/hard", "srv/app/keep.txt")
        .build(Compression::Zstd);
    let l2 = LayerBuilder::new()
        .whiteout("srv/app/gone.txt")
        .opaque("srv/opq")
        .build(Compression::None);
    let l3 = LayerBuilder::new()
        .file("srv/app/gone.txt", "back", 0o600)
        .build(Compression::Gzip);
    let pushed = registry.push_layers("bench/layers", "whiteout", vec![l1, l2, l3]);
    let sandbox = rpull();
    sandbox
        .run([registry.image_ref("bench/layers", "whiteout")])
        .assert_success();
    let layer = |i: usize| {
        sandbox
            .root()
            .join("layers/sha256")
            .join(&pushed.diff_ids[i][7..])
            .join("rootfs")
    };
    assert_eq!(
        fs::read_to_string(layer(0).join("srv/app/keep.txt")).unwrap(),
        "keep"
    );
    assert_eq!(
        fs::read_link(layer(0).join("srv/link")).unwrap().to_str(),
        Some("app/keep.txt")
    );
    use std::os::unix::fs::MetadataExt;
    assert_eq!(
        fs::metadata(layer(0).join("srv/hard")).unwrap().ino(),
        fs::metadata(layer(0).join("srv/app/keep.txt")).unwrap().ino()
    );
    // Whiteouts are kept losslessly as the empty marker files the layer carried.
    assert_eq!(
        fs::metadata(layer(1).join("srv/app/.wh.gone.txt")).unwrap().len(),
        0
    );
    assert!(layer(1).join("srv/opq/.wh..wh..opq").is_file());
    assert_eq!(
        fs::read_to_string(layer(2).join("srv/app/gone.txt")).unwrap(),
        "back"
    );

    // The same layers in a Docker schema2 image are shared, not unpacked again.
    let l1 = LayerBuilder::new()
        .file("only", "x", 0o644)
        .build(Compression::Gzip);
    let docker = registry.push_image(
        "bench/docker",
        "v1",
        &Image::new(Platform::host(), vec![l1]),
        ManifestFormat::Docker,
    );
    let out = sandbox.run([registry.image_ref("bench/docker", "v1")]);
    out.assert_success();
    sandbox.assert_recorded(&registry.image_ref("bench/docker", "v1"), &docker.manifest_digest);
}

#[test]
fn shared_layers_already_exist() {
    let registry = Registry::start();
    let base = LayerBuilder::new()
        .random_file("base", 10_000, 9)
        .build(Compression::Gzip);
    let a = LayerBuilder::new().file("a", "a", 0o644).build(Compression::Gzip);
    let b = LayerBuilder::new().file("b", "b", 0o644).build(Compression::Gzip);
    registry.push_layers("bench/a", "1", vec![base.clone(), a]);
    let pb = registry.push_layers("bench/b", "1", vec![base.clone(), b]);
    let sandbox = rpull();
    sandbox.run([registry.image_ref("bench/a", "1")]).assert_success();
    let out = sandbox.run([registry.image_ref("bench/b", "1")]);
    out.assert_success();
    let base_id = &base.digest[7..19];
    let b_id = short(&pb.layer_digests[1]);
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines[1], format!("{base_id}: Already exists"));
    assert_eq!(lines[2], format!("{b_id}: Pulling fs layer"));
}

#[test]
fn hostile_layer_is_refused_and_store_stays_clean() {
    let registry = Registry::start();
    let evil = LayerBuilder::new()
        .raw_file("../escape.txt", "x")
        .build(Compression::Gzip);
    registry.push_layers("bench/evil", "v1", vec![evil]);
    let sandbox = rpull();
    let out = sandbox.run([registry.image_ref("bench/evil", "v1")]);
    out.assert_code(1);
    assert!(
        out.stderr.starts_with("failed to register layer: "),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("escape.txt"), "{}", out.stderr);
    assert!(!sandbox.root().join("escape.txt").exists());
    assert!(!sandbox.root().join("layers/escape.txt").exists());
    assert_eq!(
        fs::read_dir(sandbox.root().join("layers/sha256"))
            .unwrap()
            .count(),
        0
    );
    assert_eq!(
        fs::read_dir(sandbox.root().join("layers/tmp")).unwrap().count(),
        0
    );
    assert!(sandbox
        .ref_entry(&registry.image_ref("bench/evil", "v1"))
        .is_none());
}

#[test]
fn wrong_diff_id_is_refused() {
    let registry = Registry::start();
    let layer = LayerBuilder::new().file("a", "a", 0o644).build(Compression::Gzip);
    let mut image = Image::new(Platform::host(), vec![layer]);
    let mut config = image.config_json();
    config["rootfs"]["diff_ids"][0] = Value::String(format!("sha256:{}", "0".repeat(64)));
    image.raw_config = Some(serde_json::to_vec(&config).unwrap());
    registry.push_image("bench/bad", "v1", &image, ManifestFormat::Oci);
    let sandbox = rpull();
    let out = sandbox.run([registry.image_ref("bench/bad", "v1")]);
    out.assert_code(1)
        .assert_stderr_lines(&["layers from manifest don't match image configuration"]);
    assert_eq!(
        fs::read_dir(sandbox.root().join("layers/sha256"))
            .unwrap()
            .count(),
        0
    );
}

#[test]
fn corrupt_blob_fails_verification() {
    let registry = Registry::start();
    let pushed = registry.push_small_image("bench/corrupt", "v1", 11);
    let blob = registry.get_blob("bench/corrupt", &pushed.layer_digests[0]);
    let mut bad = blob.clone();
    bad[10] ^= 0xff;
    registry.corrupt_blob(&pushed.layer_digests[0], &bad);
    let sandbox = rpull();
    let out = sandbox.run([registry.image_ref("bench/corrupt", "v1")]);
    out.assert_code(1).assert_stderr_lines(&[&format!(
        "filesystem layer verification failed for digest {}",
        pushed.layer_digests[0]
    )]);
    assert!(!sandbox
        .root()
        .join("blobs/sha256")
        .join(&pushed.layer_digests[0][7..])
        .exists());
}

#[test]
fn json_format_ends_with_a_result() {
    let registry = Registry::start();
    let pushed = registry.push_small_image("bench/json", "v1", 12);
    let sandbox = rpull();
    let reference = registry.image_ref("bench/json", "v1");
    let out = sandbox.run(["--format", "json", &reference]);
    out.assert_success();
    let messages: Vec<Value> = out
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect(l))
        .collect();
    assert_eq!(messages[0]["status"], "Pulling from bench/json");
    assert_eq!(messages[0]["id"], "v1");
    let result = &messages.last().unwrap()["result"];
    assert_eq!(result["image_id"], pushed.config_digest.as_str());
    assert_eq!(result["digest"], pushed.manifest_digest.as_str());
    assert_eq!(result["changed"], true);
    let again = sandbox.run(["--format", "json", &reference]);
    let last: Value = serde_json::from_str(again.stdout.lines().last().unwrap()).unwrap();
    assert_eq!(last["result"]["changed"], false);
}

#[test]
fn all_tags_follows_link_pagination() {
    let registry = Registry::start();
    for i in 0..7 {
        registry.push_small_image("bench/paged", &format!("t{i}"), 100 + i);
    }
    // Registry 2.8 answers every tag at once; the proxy serves them 3 to a page with `Link`.
    let proxy = crate::support::fault_proxy::FaultProxy::start(&registry.host());
    proxy.add_rule(crate::support::fault_proxy::Rule::new(
        "/tags/list",
        crate::support::fault_proxy::Fault::PaginateTags(3),
    ));
    let name = format!("{}/bench/paged", proxy.host());
    let out = rpull().run(["-a", &name]);
    out.assert_success();
    let pulled = pulled_tags(&out.stdout, "bench/paged");
    assert_eq!(pulled, ["t0", "t1", "t2", "t3", "t4", "t5", "t6"]);
    let pages: Vec<String> = proxy
        .requests()
        .into_iter()
        .filter(|r| r.path.contains("/tags/list"))
        .map(|r| r.path)
        .collect();
    assert_eq!(
        pages,
        [
            "/v2/bench/paged/tags/list".to_string(),
            "/v2/bench/paged/tags/list?n=3&last=t2".to_string(),
            "/v2/bench/paged/tags/list?n=3&last=t5".to_string()
        ]
    );
}
