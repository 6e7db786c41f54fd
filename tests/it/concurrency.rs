//! Concurrent use of one store: several rpull processes pulling the same or overlapping images
//! at once all succeed, leave one intact copy of each blob and layer, no debris, and an
//! `index.json` that names every reference.

use std::collections::BTreeSet;
use std::fs;

use crate::support::fault_proxy::{Fault, FaultProxy, Rule};
use crate::support::*;

fn layer(seed: u64) -> Layer {
    LayerBuilder::new()
        .dir("shared", 0o755)
        .random_file(&format!("shared/f{seed}"), 200_000, seed)
        .build(Compression::Gzip)
}

/// The shared store checker, and what concurrent pulls must not leave behind at all: no
/// temporary blobs, unpack directories or partial downloads.
fn assert_store_intact_and_clean(sandbox: &Rpull) {
    sandbox.assert_store_intact("");
    let root = sandbox.root();
    for e in fs::read_dir(root.join("blobs/sha256")).unwrap() {
        let name = e.unwrap().file_name().to_string_lossy().into_owned();
        assert!(!name.starts_with(".tmp-"), "temporary file left: {name}");
    }
    assert_eq!(
        fs::read_dir(root.join("layers/tmp")).unwrap().count(),
        0,
        "layers/tmp not empty"
    );
    let partials: Vec<_> = fs::read_dir(root.join("ingest"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".partial") || n.ends_with(".json"))
        .collect();
    assert!(partials.is_empty(), "partial downloads left: {partials:?}");
}

#[test]
fn four_processes_pulling_overlapping_images_into_one_store() {
    let registry = Registry::start();
    let (l1, l2, l3, l4, l5) = (layer(1), layer(2), layer(3), layer(4), layer(5));
    let a = registry.push_image(
        "conc/a",
        "v1",
        &Image::new(Platform::host(), vec![l1.clone(), l2.clone(), l3.clone()]),
        ManifestFormat::Oci,
    );
    let b = registry.push_image(
        "conc/b",
        "v1",
        &Image::new(Platform::host(), vec![l2.clone(), l3.clone(), l4.clone()]),
        ManifestFormat::Docker,
    );
    let c = registry.push_image(
        "conc/c",
        "v1",
        &Image::new(Platform::host(), vec![l1.clone(), l5.clone()]),
        ManifestFormat::Oci,
    );
    let proxy = FaultProxy::start(&registry.host());
    // Slow enough that the four runs overlap for the whole download.
    proxy.add_rule(Rule::get("/blobs/", Fault::Throttle(800_000)));
    let refs = [
        format!("{}/conc/a:v1", proxy.host()),
        format!("{}/conc/b:v1", proxy.host()),
        format!("{}/conc/a:v1", proxy.host()),
        format!("{}/conc/c:v1", proxy.host()),
    ];
    let sandbox = rpull();
    let running: Vec<_> = refs.iter().map(|r| sandbox.spawn([r])).collect();
    for (r, run) in refs.iter().zip(running) {
        let out = run.wait();
        assert!(out.success(), "{r}:\n{}\n{}", out.stdout, out.stderr);
    }

    let root = sandbox.root();
    assert_store_intact_and_clean(&sandbox);

    // One copy of each blob and layer: exactly the union of the three images.
    let blobs: BTreeSet<String> = fs::read_dir(root.join("blobs/sha256"))
        .unwrap()
        .map(|e| format!("sha256:{}", e.unwrap().file_name().to_string_lossy()))
        .collect();
    let mut want = BTreeSet::new();
    for p in [&a, &b, &c] {
        want.insert(p.manifest_digest.clone());
        want.insert(p.config_digest.clone());
        want.extend(p.layer_digests.iter().cloned());
    }
    assert_eq!(blobs, want);
    let layers: BTreeSet<String> = fs::read_dir(root.join("layers/sha256"))
        .unwrap()
        .map(|e| format!("sha256:{}", e.unwrap().file_name().to_string_lossy()))
        .collect();
    let want_layers: BTreeSet<String> = [&l1, &l2, &l3, &l4, &l5]
        .iter()
        .map(|l| l.diff_id.clone())
        .collect();
    assert_eq!(layers, want_layers);
    for (i, l) in [&l1, &l2, &l3, &l4, &l5].iter().enumerate() {
        let file = root
            .join("layers/sha256")
            .join(&l.diff_id[7..])
            .join(format!("rootfs/shared/f{}", i + 1));
        assert_eq!(
            fs::read(file).unwrap(),
            pseudo_random_bytes(200_000, i as u64 + 1)
        );
    }

    // Each layer blob was downloaded once, whatever the number of processes wanting it.
    for d in want
        .iter()
        .filter(|d| [&l1, &l2, &l3, &l4, &l5].iter().any(|l| &&l.digest == d))
    {
        let gets: Vec<_> = proxy
            .requests()
            .into_iter()
            .filter(|r| r.method == "GET" && r.path.ends_with(d.as_str()))
            .collect();
        assert_eq!(gets.len(), 1, "{d} fetched {} times", gets.len());
    }

    // index.json names all three references, once each.
    let index: serde_json::Value =
        serde_json::from_slice(&fs::read(root.join("index.json")).unwrap()).unwrap();
    let mut names: Vec<String> = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            m["annotations"]["org.opencontainers.image.ref.name"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    names.sort();
    let mut expected = vec![refs[0].clone(), refs[1].clone(), refs[3].clone()];
    expected.sort();
    assert_eq!(names, expected);
}

#[test]
fn many_processes_recording_different_references_lose_none() {
    let registry = Registry::start();
    let tags: Vec<String> = (0..4).map(|i| format!("t{i}")).collect();
    for (i, t) in tags.iter().enumerate() {
        registry.push_small_image("conc/tags", t, 100 + i as u64);
    }
    let sandbox = rpull();
    for _round in 0..2 {
        let running: Vec<_> = tags
            .iter()
            .map(|t| sandbox.spawn([registry.image_ref("conc/tags", t)]))
            .collect();
        for run in running {
            run.wait().assert_success();
        }
    }
    let index: serde_json::Value =
        serde_json::from_slice(&fs::read(sandbox.root().join("index.json")).unwrap()).unwrap();
    assert_eq!(index["manifests"].as_array().unwrap().len(), 4, "{index}");
    assert_store_intact_and_clean(&sandbox);
}
