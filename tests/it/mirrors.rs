//! Mirrors, the config file and proxies, end to end against real registries: a second
//! distribution registry in proxy mode (pull-through cache) as a per-registry mirror, falling
//! back to the origin when a mirror lacks the image or is down, `--registry-mirror` for Docker
//! Hub names, `HTTP_PROXY` through a forward proxy, and loopback never proxied.

use std::path::{Path, PathBuf};

use crate::support::fault_proxy::FaultProxy;
use crate::support::registry::free_port;
use crate::support::*;
use serde_json::json;

fn write_config(r: &Rpull, config: &serde_json::Value) -> PathBuf {
    let path = r.home().join("rpull-config.json");
    std::fs::write(&path, config.to_string()).unwrap();
    path
}

/// `rpull --config <file> <image>`, the file (in the sandbox's home) holding `config`.
fn pull_with_config(r: &Rpull, config: &serde_json::Value, image: &str) -> RpullOutput {
    let cfg = write_config(r, config);
    r.run([Path::new("--config"), cfg.as_path(), Path::new(image)])
}

fn blob_gets(proxy: &FaultProxy) -> usize {
    proxy
        .requests()
        .iter()
        .filter(|q| q.method == "GET" && q.path.contains("/blobs/"))
        .count()
}

#[test]
fn a_pull_through_cache_mirror_spares_the_origin() {
    let origin = Registry::start();
    let origin_front = FaultProxy::start(&origin.host());
    let pushed = origin.push_small_image("team/app", "v1", 11);
    let cache = Registry::start_with(|c| {
        c.extra_yaml = format!("proxy:\n  remoteurl: \"http://{}\"\n", origin_front.host());
    });
    let config = json!({"mirrors": {origin_front.host(): [cache.url()]}});
    let image = format!("{}/team/app:v1", origin_front.host());

    let first = rpull();
    let out = pull_with_config(&first, &config, &image);
    out.assert_success();
    assert!(!out.stderr.contains("falling back"), "{out}");
    assert!(out.stdout.ends_with(&format!("{image}\n")), "{out}");
    let blobs_after_first = blob_gets(&origin_front);
    assert!(blobs_after_first > 0, "the cache filled itself from the origin");
    // The cache writes what it streamed in the background: wait until its storage holds the
    // config and every layer (the registry's filesystem layout) before pulling again.
    let stored = |d: &str| {
        let hex = &d["sha256:".len()..];
        cache
            .storage_dir()
            .join(format!(
                "docker/registry/v2/blobs/sha256/{}/{hex}/data",
                &hex[..2]
            ))
            .is_file()
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !(stored(&pushed.config_digest) && pushed.layer_digests.iter().all(|d| stored(d))) {
        assert!(
            std::time::Instant::now() < deadline,
            "the cache never stored the blobs"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }

    let second = rpull();
    pull_with_config(&second, &config, &image).assert_success();
    assert_eq!(
        blob_gets(&origin_front),
        blobs_after_first,
        "the second pull fetched blobs from the origin: {:?}",
        origin_front.requests()
    );
}

#[test]
fn a_mirror_without_the_image_or_down_falls_back_to_the_origin_with_a_note() {
    let origin = Registry::start();
    origin.push_small_image("app", "v1", 12);
    let empty_mirror = Registry::start();
    let dead = format!("http://127.0.0.1:{}", free_port());
    let r = rpull();
    let out = pull_with_config(
        &r,
        &json!({"mirrors": {origin.host(): [dead, empty_mirror.url()]}}),
        &origin.image_ref("app", "v1"),
    );
    out.assert_success();
    let notes: Vec<&str> = out
        .stderr
        .lines()
        .filter(|l| l.contains("falling back"))
        .collect();
    assert_eq!(notes.len(), 2, "{out}");
    assert!(notes[0].starts_with(&format!("mirror {dead}/ failed")), "{out}");
    assert!(notes[1].contains("manifest unknown"), "{out}");
    assert!(out.stdout.contains("Status: Downloaded newer image"), "{out}");
}

#[test]
fn registry_mirror_serves_docker_hub_names() {
    let mirror = Registry::start();
    mirror.push_small_image("library/app", "v1", 13);
    let r = rpull();
    let out = r.run(["--registry-mirror", &mirror.url(), "app:v1"]);
    out.assert_success();
    assert!(out.stdout.ends_with("docker.io/library/app:v1\n"), "{out}");
    assert!(out.stderr.is_empty(), "{out}");

    // From the config file too; a bad mirror is refused as docker refuses it.
    let out = pull_with_config(&r, &json!({"registry-mirrors": ["ftp://nope"]}), "app:v1");
    out.assert_code(1);
    assert!(out.stderr.starts_with("invalid mirror \"ftp://nope\""), "{out}");
}

#[test]
fn config_file_sets_concurrency_and_flags_win() {
    let registry = Registry::start();
    let layers: Vec<Layer> = (0..3)
        .map(|i| Layer::random(&format!("f{i}"), 20_000, 100 + i, Compression::Gzip))
        .collect();
    registry.push_layers("three", "x", layers);
    let image = registry.image_ref("three", "x");

    let mut r = rpull();
    let cfg = write_config(&r, &json!({"max-concurrent-downloads": 1}));
    r.env("RPULL_CONFIG", &cfg);
    let out = r.run([&image]);
    out.assert_success();
    assert_eq!(out.stdout.matches(": Waiting").count(), 2, "{out}");

    let mut r2 = rpull();
    r2.env("RPULL_CONFIG", &cfg);
    let out = r2.run(["--max-concurrent-downloads", "3", &image]);
    out.assert_success();
    assert_eq!(out.stdout.matches(": Waiting").count(), 0, "{out}");

    // An explicit config file that is missing or wrong is an error.
    let out = r2.run(["--config", "/nonexistent/rpull.json", &image]);
    out.assert_code(1);
    assert!(
        out.stderr
            .starts_with("cannot read config file /nonexistent/rpull.json"),
        "{out}"
    );
}

#[test]
fn http_proxy_is_used_and_loopback_is_never_proxied() {
    let registry = Registry::start();
    registry.push_small_image("app", "v1", 14);
    // The fault proxy doubles as a forward proxy to the registry, whatever host is asked for.
    let forward = FaultProxy::start(&registry.host());
    let name = "registry.rpull-test.invalid:5000";
    let mut r = rpull();
    r.env("HTTP_PROXY", format!("http://{}", forward.host()))
        .env("HTTPS_PROXY", format!("http://{}", forward.host()));
    let out = r.run(["--insecure-registry", name, &format!("{name}/app:v1")]);
    out.assert_success();
    let reqs = forward.requests();
    assert!(
        reqs.iter()
            .any(|q| q.proxied.as_deref() == Some(name) && q.path.contains("/manifests/v1")),
        "{reqs:?}"
    );

    // NO_PROXY sends that host direct: it does not resolve, so the pull fails, and the proxy
    // sees nothing.
    let seen = forward.requests().len();
    let mut r = rpull();
    r.env("HTTP_PROXY", format!("http://{}", forward.host()))
        .env("HTTPS_PROXY", format!("http://{}", forward.host()))
        .env("NO_PROXY", "example.com,.rpull-test.invalid");
    r.run(["--insecure-registry", name, &format!("{name}/app:v1")])
        .assert_code(1);
    assert_eq!(forward.requests().len(), seen, "NO_PROXY was ignored");

    // Loopback goes direct even with a proxy that does not exist.
    let mut r = rpull();
    let dead = format!("http://127.0.0.1:{}", free_port());
    r.env("HTTP_PROXY", &dead).env("HTTPS_PROXY", &dead);
    r.run([registry.image_ref("app", "v1")]).assert_success();
}

#[test]
fn falling_back_after_pulling_from_changes_nothing_but_a_note() {
    let origin = Registry::start();
    let pushed = origin.push_small_image("app", "v1", 15);
    // A mirror that has the manifest but fails on the config blob.
    let mirror_registry = Registry::start();
    mirror_registry.push_small_image("app", "v1", 15);
    let mirror = FaultProxy::start(&mirror_registry.host());
    let fault = crate::support::fault_proxy::Fault::Status {
        code: 404,
        headers: vec![("Content-Type".into(), "application/json".into())],
        body: r#"{"errors":[{"code":"BLOB_UNKNOWN","message":"blob unknown to registry"}]}"#.into(),
    };
    mirror.add_rule(crate::support::fault_proxy::Rule::new(
        &pushed.config_digest,
        fault,
    ));
    let image = origin.image_ref("app", "v1");

    let direct = rpull().run([&image]);
    direct.assert_success();

    let r = rpull();
    let out = pull_with_config(
        &r,
        &json!({"mirrors": {origin.host(): [format!("http://{}", mirror.host())]}}),
        &image,
    );
    out.assert_success();
    assert_eq!(out.stdout, direct.stdout, "only a note may differ\n{out}");
    assert_eq!(out.stderr.lines().count(), 1, "{out}");
    assert!(out.stderr.contains("falling back to"), "{out}");
    assert!(
        mirror
            .requests()
            .iter()
            .any(|q| q.path.contains(&pushed.config_digest)),
        "the mirror was tried"
    );
}
