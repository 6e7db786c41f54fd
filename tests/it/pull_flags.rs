//! The pull flags scripts written for `docker pull` and `podman pull` pass: content trust
//! (`--disable-content-trust`, `DOCKER_CONTENT_TRUST`), `--tls-verify`, and `--os`, `--arch`,
//! `--variant` as a platform, against the real distribution registry.

use std::fs;

use crate::support::*;

fn multi_platform(registry: &Registry, repo: &str, tag: &str) -> PushedIndex {
    let platforms = ["linux/amd64", "linux/arm64/v8", "linux/arm/v6", "linux/arm/v7"];
    let images = Image::per_platform(&platforms, 500, 40);
    registry.push_multi_platform(repo, tag, ManifestFormat::Oci, &images, false)
}

/// A fresh registry holding a small image as `<repo>:v1`, and its reference.
fn small_image(repo: &str, seed: u64) -> (Registry, String) {
    let registry = Registry::start();
    registry.push_small_image(repo, "v1", seed);
    let reference = registry.image_ref(repo, "v1");
    (registry, reference)
}

const TRUST_ERROR: &str = "content trust is enabled (DOCKER_CONTENT_TRUST is set or \
--disable-content-trust=false), but rpull does not implement Docker Content Trust (Notary v1) \
signature verification: refusing to pull unverified. Unset DOCKER_CONTENT_TRUST or pass \
--disable-content-trust to pull without it (manifest and layer digests are always verified)";

#[test]
fn content_trust_is_refused_before_any_network_access() {
    // Nothing listens on port 1: a connection attempt would say so.
    let mut sandbox = rpull();
    sandbox.env("DOCKER_CONTENT_TRUST", "1");
    sandbox
        .run(["127.0.0.1:1/some/image:tag"])
        .assert_code(1)
        .assert_stdout_lines(&[])
        .assert_stderr_lines(&[TRUST_ERROR]);
    // The flag set to false asks for verification without the variable, too.
    rpull()
        .run(["--disable-content-trust=false", "127.0.0.1:1/some/image:tag"])
        .assert_code(1)
        .assert_stderr_lines(&[TRUST_ERROR]);
    // An explicit --disable-content-trust=true wins over the variable.
    let out = sandbox.run(["--disable-content-trust=true", "127.0.0.1:1/some/image:tag"]);
    out.assert_failed_with("connection refused");
    // DOCKER_CONTENT_TRUST=0 leaves it off.
    let mut off = rpull();
    off.env("DOCKER_CONTENT_TRUST", "0");
    let out = off.run(["127.0.0.1:1/some/image:tag"]);
    assert!(out.stderr.contains("connection refused"), "{}", out.stderr);
}

#[test]
fn disable_content_trust_pulls_with_the_variable_set() {
    let (registry, reference) = small_image("trust/img", 3);
    let mut sandbox = rpull();
    sandbox.env("DOCKER_CONTENT_TRUST", "1");
    sandbox
        .run(["--disable-content-trust", &reference])
        .assert_success();
    assert!(sandbox.ref_entry(&reference).is_some());
    // docker's default (true) with no variable: pulls.
    let plain = rpull();
    plain
        .run(["--disable-content-trust=true", "-q", &reference])
        .assert_success()
        .assert_stdout_lines(&[&reference]);
    plain.run(["-q", &reference]).assert_success();
    // Nothing was asked of the registry while trust was refused.
    let before = registry.log().matches("/v2/").count();
    sandbox
        .run([&reference])
        .assert_code(1)
        .assert_stderr_lines(&[TRUST_ERROR]);
    assert_eq!(registry.log().matches("/v2/").count(), before);
}

#[test]
fn os_arch_variant_pick_from_an_index() {
    let registry = Registry::start();
    let index = multi_platform(&registry, "plat/multi", "latest");
    let reference = registry.image_ref("plat/multi", "latest");

    let sandbox = rpull();
    sandbox
        .run(["--os", "linux", "--arch", "arm64", "-q", &reference])
        .assert_success();
    sandbox.assert_recorded(&reference, &index.images[1].manifest_digest);

    sandbox
        .run(["pull", "--arch", "arm", "--variant", "v6", "-q", &reference])
        .assert_success();
    sandbox.assert_recorded(&reference, &index.images[2].manifest_digest);

    // --arch alone keeps the host's OS.
    sandbox
        .run(["--arch", "amd64", "-q", &reference])
        .assert_success();
    sandbox.assert_recorded(&reference, &index.images[0].manifest_digest);

    // An architecture the index lacks fails like --platform does.
    sandbox
        .run(["--os", "linux", "--arch", "s390x", &reference])
        .assert_code(1)
        .assert_stderr_lines(&["no matching manifest for linux/s390x in the manifest list entries"]);
}

#[test]
fn os_arch_variant_conflict_with_platform() {
    let sandbox = rpull();
    for extra in [["--os", "linux"], ["--arch", "arm64"], ["--variant", "v7"]] {
        let out = sandbox.run(
            ["--platform", "linux/arm64"]
                .into_iter()
                .chain(extra)
                .chain(["127.0.0.1:1/x:y"]),
        );
        out.assert_code(125)
            .assert_stderr_lines(&["--platform option can not be specified with --os, --arch or --variant"]);
    }
    // DOCKER_DEFAULT_PLATFORM is only a default: the explicit flags win over it.
    let registry = Registry::start();
    let index = multi_platform(&registry, "plat/multi", "latest");
    let reference = registry.image_ref("plat/multi", "latest");
    let mut sandbox = rpull();
    sandbox.env("DOCKER_DEFAULT_PLATFORM", "linux/amd64");
    sandbox
        .run(["--arch", "arm", "--variant", "v7", "-q", &reference])
        .assert_success();
    sandbox.assert_recorded(&reference, &index.images[3].manifest_digest);
}

#[test]
fn tls_verify_false_is_accepted_for_the_pulled_registry() {
    let (_registry, reference) = small_image("tls/img", 9);
    let sandbox = rpull();
    sandbox
        .run(["--tls-verify=false", "-q", &reference])
        .assert_success()
        .assert_stdout_lines(&[&reference]);
    sandbox.run(["--tls-verify", "-q", &reference]).assert_success();
}

#[test]
fn help_lists_the_new_flags() {
    let out = rpull().run(["--help"]);
    out.assert_success();
    for flag in [
        "--disable-content-trust",
        "--creds",
        "--authfile",
        "--tls-verify",
        "--os",
        "--arch",
        "--variant",
        "login",
        "logout",
    ] {
        assert!(
            out.stdout.contains(flag),
            "{flag} missing from --help:\n{}",
            out.stdout
        );
    }
}

#[test]
fn a_broken_docker_config_is_a_warning() {
    let (_registry, reference) = small_image("cfg/img", 5);
    let sandbox = rpull();
    let path = sandbox.docker_config_dir().join("config.json");
    fs::write(&path, "{not json").unwrap();
    let out = sandbox.run(["-q", &reference]);
    out.assert_success().assert_stdout_lines(&[&reference]);
    assert_eq!(out.stderr.lines().count(), 1, "{}", out.stderr);
    assert!(
        out.stderr.starts_with(&format!(
            "WARNING: Error parsing config file ({}): ",
            path.display()
        )),
        "{}",
        out.stderr
    );
}
