//! Layers are unpacked while they download. A download that is cut and resumed with `Range`
//! keeps feeding the same extractor; one that restarts from byte 0 drops it and unpacks the
//! stored blob afterwards. Either way the published layer is complete and verified, and no
//! temporary directory is left behind.

use std::fs;
use std::path::Path;

use crate::support::fault_proxy::{Fault, FaultProxy, Rule};
use crate::support::*;

/// A gzip layer of many small files and a few larger ones, about 1.5 MB compressed.
fn many_files_layer() -> Layer {
    let mut b = LayerBuilder::new().dir("data", 0o755);
    for i in 0..300 {
        b = b.file(
            &format!("data/small-{i:03}.txt"),
            format!("file {i}\n").repeat(50),
            0o644,
        );
    }
    for i in 0..3 {
        b = b.random_file(&format!("data/big-{i}.bin"), 500_000, 7 + i);
    }
    b.build(Compression::Gzip)
}

/// Checks the published layer, and that it was unpacked `from` the download as it streamed
/// in (`"stream"`) or from the stored blob afterwards (`"blob"`), as its marker records.
fn check_layer(root: &Path, layer: &Layer, from: &str) {
    let dir = root.join("layers/sha256").join(&layer.diff_id[7..]);
    let marker = fs::read(dir.join("layer.json"))
        .unwrap_or_else(|e| panic!("layer {} not published: {e}", layer.diff_id));
    let marker: serde_json::Value = serde_json::from_slice(&marker).unwrap();
    assert_eq!(marker["unpackedFrom"], from, "{marker}");
    let rootfs = dir.join("rootfs");
    for i in [0, 150, 299] {
        assert_eq!(
            fs::read_to_string(rootfs.join(format!("data/small-{i:03}.txt"))).unwrap(),
            format!("file {i}\n").repeat(50)
        );
    }
    for i in 0..3 {
        assert_eq!(
            fs::metadata(rootfs.join(format!("data/big-{i}.bin")))
                .unwrap()
                .len(),
            500_000
        );
    }
    let tmp = root.join("layers/tmp");
    let left: Vec<_> = fs::read_dir(&tmp)
        .map(|d| d.flatten().collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "left in layers/tmp: {left:?}");
}

fn pull_through(fault_after_drop: Option<Fault>) -> (Vec<Option<String>>, Layer, Rpull) {
    let registry = Registry::start();
    let layer = many_files_layer();
    let pushed = registry.push_image(
        "stream/cut",
        "v1",
        &Image::new(Platform::host(), vec![layer.clone()]),
        ManifestFormat::Oci,
    );
    let proxy = FaultProxy::start(&registry.host());
    let digest = pushed.layer_digests[0].clone();
    proxy.add_rule(Rule::get(&digest, Fault::DropAfter(layer.size() / 2)).times(1));
    if let Some(f) = fault_after_drop {
        proxy.add_rule(Rule::get(&digest, f).times(1));
    }
    let sandbox = rpull();
    let out = sandbox.run([format!("{}/stream/cut:v1", proxy.host())]);
    out.assert_success();
    let ranges = proxy
        .requests()
        .into_iter()
        .filter(|r| r.path.ends_with(&digest) && r.method == "GET")
        .map(|r| r.range)
        .collect();
    (ranges, layer, sandbox)
}

#[test]
fn an_uncut_download_is_unpacked_as_it_streams() {
    let registry = Registry::start();
    let layer = many_files_layer();
    registry.push_image(
        "stream/whole",
        "v1",
        &Image::new(Platform::host(), vec![layer.clone()]),
        ManifestFormat::Oci,
    );
    let sandbox = rpull();
    sandbox
        .run([format!("{}/stream/whole:v1", registry.host())])
        .assert_success();
    check_layer(sandbox.root(), &layer, "stream");
}

#[test]
fn a_cut_download_resumes_into_the_same_extraction() {
    let (ranges, layer, sandbox) = pull_through(None);
    assert_eq!(ranges.len(), 2, "{ranges:?}");
    assert!(
        ranges[1].as_deref().is_some_and(|r| r.starts_with("bytes=")),
        "{ranges:?}"
    );
    check_layer(sandbox.root(), &layer, "stream");
}

#[test]
fn a_download_restarted_from_zero_falls_back_to_the_stored_blob() {
    let (ranges, layer, sandbox) = pull_through(Some(Fault::IgnoreRange));
    assert_eq!(ranges.len(), 2, "{ranges:?}");
    check_layer(sandbox.root(), &layer, "blob");
}
