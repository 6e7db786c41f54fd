//! CTRL-c and SIGTERM: a pull stops at once with docker's exit codes, nothing half-written is
//! taken for complete, and the next pull continues the interrupted download with `Range`.

use std::fs;
use std::time::{Duration, Instant};

use crate::support::*;

fn interrupted_pull(signal: libc::c_int, expected_code: i32) {
    let (_registry, proxy, pushed, reference) = setups::slow_image();
    let sandbox = rpull();
    let mut running = sandbox.spawn([&reference]);
    running.wait_for_stdout("Pulling fs layer", Duration::from_secs(30));
    // Let some bytes arrive, then stop it.
    let layer = &pushed.layer_digests[0];
    let partial = sandbox.partial_path(layer);
    let deadline = Instant::now() + Duration::from_secs(20);
    while fs::metadata(&partial).map(|m| m.len()).unwrap_or(0) < 200_000 {
        assert!(Instant::now() < deadline, "download never started");
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = running.stop_within(signal, Duration::from_secs(5));
    out.assert_code(expected_code);
    assert!(
        out.stderr.trim().is_empty(),
        "no error stack on cancel, got: {}",
        out.stderr
    );
    // Nothing half-written is visible; the partial download is kept for next time.
    assert!(!sandbox.root().join("blobs/sha256").join(&layer[7..]).exists());
    assert_eq!(
        fs::read_dir(sandbox.root().join("layers/sha256"))
            .unwrap()
            .count(),
        0
    );
    let kept = fs::metadata(&partial).unwrap().len();
    assert!(
        kept > 0 && kept < pushed_layer_size(&pushed),
        "partial has {kept} bytes"
    );

    // The next pull resumes from where it stopped.
    proxy.clear_rules();
    let seen_before = proxy.requests().len();
    let again = sandbox.run([&reference]);
    again.assert_success();
    let ranged: Vec<_> = proxy
        .requests()
        .into_iter()
        .filter(|r| r.path.ends_with(&layer[..]) && r.range.is_some())
        .collect();
    assert_eq!(
        ranged.len(),
        1,
        "expected one ranged request: {:?}",
        proxy.requests()
    );
    let range = ranged[0].range.clone().unwrap();
    let offset: u64 = range
        .trim_start_matches("bytes=")
        .trim_end_matches('-')
        .parse()
        .unwrap();
    assert!(
        offset > 0 && offset <= kept,
        "resumed at {offset}, partial had {kept}"
    );
    let served: u64 = proxy.requests()[seen_before..]
        .iter()
        .filter(|r| r.path.contains("/blobs/"))
        .map(|r| r.body_bytes)
        .sum();
    let config_size = pushed.config_bytes.len() as u64;
    assert!(
        served <= pushed_layer_size(&pushed) - offset + config_size,
        "re-pull fetched {served} bytes; the rest of the layer is {}",
        pushed_layer_size(&pushed) - offset
    );
    assert!(sandbox.root().join("blobs/sha256").join(&layer[7..]).is_file());
    assert!(!partial.exists());
}

fn pushed_layer_size(p: &PushedImage) -> u64 {
    let manifest: serde_json::Value = serde_json::from_slice(&p.manifest_bytes).unwrap();
    manifest["layers"][0]["size"].as_u64().unwrap()
}

#[test]
fn sigint_stops_with_130_and_the_next_pull_resumes() {
    interrupted_pull(libc::SIGINT, 130);
}

#[test]
fn sigterm_stops_with_143_and_the_next_pull_resumes() {
    interrupted_pull(libc::SIGTERM, 143);
}

#[test]
fn a_pull_waiting_for_a_collection_says_why_and_stops_on_ctrl_c() {
    let registry = Registry::start();
    registry.push_small_image("bench/waits", "v1", 71);
    let reference = registry.image_ref("bench/waits", "v1");
    let sandbox = rpull();
    // A collection (rpull prune) holds the store.
    let collection = sandbox.hold_store_guard(true);
    let mut waiting = sandbox.spawn([&reference]);
    waiting.wait_for_stderr(
        "Waiting for another rpull to finish with the store",
        Duration::from_secs(30),
    );
    let out = waiting.stop_within(libc::SIGINT, Duration::from_secs(5));
    out.assert_code(130);
    assert_eq!(out.stdout, "", "nothing was pulled");

    // Once the collection ends, a waiting pull goes on.
    let mut waiting = sandbox.spawn([&reference]);
    waiting.wait_for_stderr(
        "Waiting for another rpull to finish with the store",
        Duration::from_secs(30),
    );
    drop(collection);
    let out = waiting.wait();
    out.assert_success();
    assert!(out.stdout.contains("Status: Downloaded newer image"), "{out}");
    sandbox.assert_store_intact("after the wait");
}

#[test]
fn ctrl_c_stops_a_pull_waiting_on_a_credential_helper() {
    let registry = Registry::start();
    registry.push_small_image("bench/helped", "v1", 72);
    let reference = registry.image_ref("bench/helped", "v1");
    // A helper that hangs, as one waiting on the network or a PIN prompt does. (Its stderr,
    // rpull's, is closed so that only rpull's own exit ends the output the harness collects.)
    let helpers = temp_dir("rpull-slow-helper-");
    let started = helpers.path().join("started");
    let script = format!("#!/bin/sh\ntouch '{}'\nexec sleep 30 2>&-\n", started.display());
    write_executable(&helpers.path().join("docker-credential-slow"), &script);
    let mut sandbox = rpull();
    sandbox.path_first(helpers.path());
    sandbox.write_docker_config(&serde_json::json!({"credsStore": "slow"}));
    let running = sandbox.spawn([&reference]);
    let deadline = Instant::now() + Duration::from_secs(20);
    while !started.exists() {
        assert!(Instant::now() < deadline, "the helper never ran");
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = running.stop_within(libc::SIGINT, Duration::from_secs(5));
    out.assert_code(130);
    let index = fs::read_to_string(sandbox.root().join("index.json")).unwrap_or_default();
    assert!(!index.contains("bench/helped"), "{index}");
}
