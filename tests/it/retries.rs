//! Retries and resume within a pull: the fault proxy between rpull and the real registry cuts,
//! stalls, fails, rate-limits and corrupts layer downloads (retried with docker's countdown),
//! and fails the ping and manifests (retried quietly). Every fault ends in either the correct
//! image or a clear error with exit status 1, never in wrong data in the store.

use std::time::{Duration, Instant};

use crate::support::fault_proxy::{Fault, RequestLog, Rule};
use crate::support::setups::{proxied_image, ProxiedImage};
use crate::support::*;

/// `app:v1`, a one-layer image with a ~400 kB incompressible layer, behind a fault proxy.
fn setup() -> ProxiedImage {
    let layer = LayerBuilder::new()
        .random_file("data.bin", 400_000, 42)
        .build(Compression::Gzip);
    proxied_image("app", vec![layer])
}

/// The pulled layer's blob in the store hashes to its digest.
fn assert_layer_intact(r: &Rpull, s: &ProxiedImage) {
    let bytes = std::fs::read(r.blob_path(s.layer())).expect("layer blob stored");
    assert_eq!(sha256_digest(&bytes), s.layer());
}

/// The layer was fetched twice, the second GET asking for its bytes from `offset` on; the GETs.
fn assert_fetched_again_from(s: &ProxiedImage, offset: u64) -> Vec<RequestLog> {
    let gets = s.layer_gets();
    assert_eq!(gets.len(), 2, "{gets:?}");
    assert_eq!(gets[1].range, Some(format!("bytes={offset}-")), "{gets:?}");
    gets
}

#[test]
fn a_cut_download_resumes_with_range_after_a_countdown() {
    let s = setup();
    s.fault_layer(Fault::DropAfter(100_000), Some(1));
    let r = rpull();
    let out = r.run(["--retry-delay", "1s", &s.reference]);
    out.assert_success();
    assert!(out.stdout.contains("Retrying in 1 second"), "{out}");
    let gets = assert_fetched_again_from(&s, 100_000);
    assert_eq!(gets[0].range, None);
    assert_eq!(gets[1].status, 206);
    assert_layer_intact(&r, &s);
}

#[test]
fn a_server_ignoring_the_range_restarts_the_download_cleanly() {
    let s = setup();
    s.fault_layer(Fault::DropAfter(100_000), Some(1));
    s.fault_layer(Fault::IgnoreRange, Some(1));
    let r = rpull();
    r.run(["--retry-delay", "0s", &s.reference]).assert_success();
    let gets = assert_fetched_again_from(&s, 100_000);
    assert_eq!(gets[1].status, 200);
    assert_layer_intact(&r, &s);
}

#[test]
fn server_errors_are_retried_then_succeed() {
    let s = setup();
    s.fault_layer(Fault::status(500, &[], "boom"), Some(2));
    let r = rpull();
    r.run(["--retry-delay", "0s", &s.reference]).assert_success();
    assert_eq!(s.layer_gets().len(), 3);
    assert_layer_intact(&r, &s);
}

#[test]
fn retries_give_up_after_the_last_attempt() {
    let s = setup();
    s.fault_layer(Fault::status(503, &[], "down"), None);
    let r = rpull();
    let out = r.run(["--retry", "2", "--retry-delay", "0s", &s.reference]);
    out.assert_error("received unexpected HTTP status: 503 Service Unavailable");
    assert_eq!(s.layer_gets().len(), 3, "--retry 2 is 3 attempts");
    assert!(!r.blob_path(s.layer()).exists());
}

#[test]
fn retry_after_of_a_429_is_honoured() {
    let s = setup();
    s.fault_layer(Fault::status(429, &[("Retry-After", "2")], ""), Some(1));
    let r = rpull();
    let start = Instant::now();
    let out = r.run(["--retry-delay", "0s", &s.reference]);
    out.assert_success();
    assert!(
        start.elapsed() >= Duration::from_secs(2),
        "waited {:?}",
        start.elapsed()
    );
    assert!(out.stdout.contains("Retrying in 2 seconds"), "{out}");
    assert_eq!(s.layer_gets().len(), 2);
    assert_layer_intact(&r, &s);
}

#[test]
fn a_stalled_download_times_out_and_resumes() {
    let s = setup();
    s.fault_layer(Fault::StallAfter(50_000, Duration::from_secs(30)), Some(1));
    let mut r = rpull();
    r.env("RPULL_READ_TIMEOUT", "1s");
    let start = Instant::now();
    r.run(["--retry-delay", "0s", &s.reference]).assert_success();
    assert!(start.elapsed() < Duration::from_secs(20));
    assert_fetched_again_from(&s, 50_000);
    assert_layer_intact(&r, &s);
}

#[test]
fn a_flipped_byte_fails_verification_at_once_and_stores_nothing() {
    let s = setup();
    s.fault_layer(Fault::FlipByte(1234), None);
    let r = rpull();
    let out = r.run(["--retry-delay", "0s", &s.reference]);
    out.assert_error(format!(
        "filesystem layer verification failed for digest {}",
        s.layer()
    ));
    assert_eq!(s.layer_gets().len(), 1, "a fresh download's mismatch is fatal");
    assert!(!r.blob_path(s.layer()).exists());
    // The next pull, without the fault, is correct.
    s.proxy.clear_rules();
    r.run([&s.reference]).assert_success();
    assert_layer_intact(&r, &s);
}

#[test]
fn a_missing_blob_is_not_retried() {
    let s = setup();
    s.fault_layer(
        Fault::registry_error(404, "BLOB_UNKNOWN", "blob unknown to registry"),
        None,
    );
    let r = rpull();
    let out = r.run(["--retry-delay", "0s", &s.reference]);
    out.assert_error("blob unknown: blob unknown to registry");
    assert_eq!(s.layer_gets().len(), 1);
}

#[test]
fn the_config_blob_is_retried_and_then_reported_like_docker() {
    let s = setup();
    let fault = Fault::status(500, &[], "boom");
    s.proxy
        .add_rule(Rule::get(&s.pushed.config_digest, fault.clone()).times(2));
    let r = rpull();
    r.run([&s.reference]).assert_success();

    s.proxy.add_rule(Rule::get(&s.pushed.config_digest, fault));
    let r = rpull();
    let out = r.run(["--retry", "1", &s.reference]);
    out.assert_error("error pulling image configuration: download failed after attempts=2: received unexpected HTTP status: 500 Internal Server Error");
}

#[test]
fn the_default_delay_is_dockers_five_second_countdown() {
    let s = setup();
    s.fault_layer(Fault::DropAfter(10_000), Some(1));
    let r = rpull();
    let start = Instant::now();
    let out = r.run([&s.reference]);
    out.assert_success();
    assert!(start.elapsed() >= Duration::from_secs(5), "{:?}", start.elapsed());
    let id = &s.layer()["sha256:".len().."sha256:".len() + 12];
    let countdown: Vec<&str> = out
        .stdout
        .lines()
        .filter(|l| l.starts_with(&format!("{id}: Retrying")))
        .collect();
    assert_eq!(
        countdown,
        (1..=5)
            .rev()
            .map(|n| format!("{id}: Retrying in {n} second{}", if n == 1 { "" } else { "s" }))
            .collect::<Vec<_>>(),
        "{out}"
    );
}

#[test]
fn the_ping_and_manifests_are_retried_quietly() {
    let s = setup();
    let unavailable = Fault::status(503, &[], "busy");
    // The first GET is the ping; then one manifest GET fails.
    s.proxy.add_rule(Rule::get("/v2/", unavailable.clone()).times(1));
    s.proxy.add_rule(Rule::get("/manifests/", unavailable).times(1));
    let r = rpull();
    let out = r.run([&s.reference]);
    out.assert_success();
    assert!(
        !out.stdout.contains("Retrying"),
        "no countdown outside layers\n{out}"
    );
    assert_layer_intact(&r, &s);
    let manifest_gets = s.proxy.gets("/manifests/").len();
    assert_eq!(manifest_gets, 2, "{:?}", s.proxy.requests());
}

#[test]
fn a_missing_manifest_is_asked_for_once() {
    let s = setup();
    let r = rpull();
    let out = r.run([format!("{}/app:nope", s.proxy.host())]);
    out.assert_code(1);
    let manifest_requests = s.proxy.requests_to("/manifests/").len();
    // The HEAD, then the GET that fetches the error.
    assert_eq!(manifest_requests, 2, "{:?}", s.proxy.requests());
}
