//! The image's hardlinks into lower layers, checked once all its layers are in the store.
//!
//! A layer unpacks alone, so a hardlink whose target is not in the layer is only recorded
//! (`externalHardlinks` in its `layer.json`), and `rootfs` makes it over the layers below.
//! containerd's applier, which unpacks a layer over its mounted parents, fails the pull when
//! link(2) fails there (a directory: EPERM; nothing: ENOENT); so does this check, looking each
//! target up in the image's layers as `rootfs` would stack them ([`overlay::lookup`]). Layers
//! are shared between images, and the same layer may sit on other parents elsewhere: the check
//! is the image's, so a refused layer stays in the store unmarked and only this image's
//! reference is not recorded.

use std::collections::BTreeSet;
use std::path::PathBuf;

use super::*;
use crate::overlay::{self, Found, Stacked};
use crate::store::{LayerMeta, LAYER_JSON};

/// The unpacked layers of one image, bottom first, when at least one has external hardlinks.
pub(super) struct ImageLinks {
    layers: Vec<LayerLinks>,
}

struct LayerLinks {
    diff_id: Digest,
    rootfs: PathBuf,
    /// The `externalHardlinks` pairs (link, target), in `layer.json`'s order.
    external: Vec<(String, String)>,
    /// Where they put a file.
    paths: BTreeSet<PathBuf>,
}

impl ImageLinks {
    /// Reads the external hardlinks of the image's layers `diff_ids` (bottom first, all in the
    /// store); `None` when there is none. A layer without any costs the read of its
    /// `layer.json`, nothing more.
    pub(super) fn read(store: &Store, diff_ids: &[Digest]) -> Result<Option<ImageLinks>, StoreError> {
        let mut layers = Vec::with_capacity(diff_ids.len());
        for diff_id in diff_ids {
            let dir = store.layer_dir(diff_id);
            let external = LayerMeta::read(&dir.join(LAYER_JSON))?.external_hardlinks;
            let paths = external
                .iter()
                .filter_map(|(l, _)| overlay::link_path(l))
                .collect();
            layers.push(LayerLinks {
                diff_id: diff_id.clone(),
                rootfs: dir.join("rootfs"),
                external,
                paths,
            });
        }
        Ok(layers
            .iter()
            .any(|l| !l.external.is_empty())
            .then_some(ImageLinks { layers }))
    }

    /// Fails on the first link (bottom layer first, then in `layer.json`'s order, as `rootfs`
    /// makes them) whose target is not a non-directory in the stack of the layers up to the
    /// link's: its own tree and the links it made before this one, over the layers below
    /// with all of theirs.
    pub(super) fn check(&self) -> Result<(), PullError> {
        for (i, layer) in self.layers.iter().enumerate() {
            let mut made = BTreeSet::new();
            for (link, target) in &layer.external {
                let own = Stacked {
                    rootfs: &layer.rootfs,
                    links: &made,
                };
                let below = self.layers[..i].iter().rev().map(|l| Stacked {
                    rootfs: &l.rootfs,
                    links: &l.paths,
                });
                let stack: Vec<Stacked<'_>> = std::iter::once(own).chain(below).collect();
                let reason = match overlay::lookup(&stack, target)? {
                    Found::NonDir => None,
                    Found::Dir => Some(BadLinkTarget::Directory),
                    Found::Missing => Some(BadLinkTarget::Missing),
                    // Index 0 is this layer, 1 the one below it, and so on.
                    Found::WhitedOut(index) => {
                        Some(BadLinkTarget::WhitedOut(self.layers[i - index].diff_id.clone()))
                    }
                    Found::ParentNotDir { parent, symlink } => {
                        let parent = parent.to_string_lossy().into_owned();
                        Some(if symlink {
                            BadLinkTarget::SymlinkParent(parent)
                        } else {
                            BadLinkTarget::NotDirParent(parent)
                        })
                    }
                    Found::Invalid(why) => Some(BadLinkTarget::Invalid(why)),
                };
                if let Some(reason) = reason {
                    return Err(PullError::ExternalHardlink {
                        layer: layer.diff_id.clone(),
                        link: link.clone(),
                        target: target.clone(),
                        reason,
                    });
                }
                made.extend(overlay::link_path(link));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::fs;

    use super::*;
    use crate::images::testutil::*;

    /// One layer: its name, its files (path, content), its external hardlinks (link, target).
    type Spec<'a> = (&'a str, &'a [(&'a str, &'a str)], &'a [(&'a str, &'a str)]);

    /// A store with `layers`, bottom first; the image's links, read back.
    fn image(layers: &[Spec<'_>]) -> (tempfile::TempDir, Option<ImageLinks>) {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::open(&tmp.path().join("store")).unwrap();
        let mut diff_ids = Vec::new();
        for (name, files, external) in layers {
            let layer = Layer::new(&store, name, |r| put(r, files));
            write_layer_json(&store, &layer.diff_id, &Digest::sha256_of(&layer.blob), external);
            diff_ids.push(layer.diff_id);
        }
        let links = ImageLinks::read(&store, &diff_ids).unwrap();
        (tmp, links)
    }

    fn refusal(layers: &[Spec<'_>]) -> Option<BadLinkTarget> {
        let (_tmp, links) = image(layers);
        match links.expect("the image has external hardlinks").check() {
            Ok(()) => None,
            Err(PullError::ExternalHardlink { reason, .. }) => Some(reason),
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn an_image_without_external_hardlinks_reads_nothing_more() {
        let (_tmp, links) = image(&[("a", &[("f", "x")], &[]), ("b", &[("g", "y")], &[])]);
        assert!(links.is_none());
    }

    #[test]
    fn targets_are_looked_up_in_the_layers_up_to_the_link() {
        let base: Spec<'_> = ("base", &[("d/file", "f")], &[]);
        // A file of a lower layer, and one a lower layer linked in turn.
        assert_eq!(refusal(&[base, ("top", &[("t", "")], &[("l", "d/file")])]), None);
        assert_eq!(
            refusal(&[
                base,
                ("mid", &[("m", "")], &[("m2", "d/file")]),
                ("top", &[("t", "")], &[("l", "m2")])
            ]),
            None
        );
        // The link's own earlier links count; later ones do not.
        assert_eq!(
            refusal(&[base, ("top", &[("t", "")], &[("a", "d/file"), ("b", "a")])]),
            None
        );
        assert_eq!(
            refusal(&[base, ("top", &[("t", "")], &[("a", "b"), ("b", "d/file")])]),
            Some(BadLinkTarget::Missing)
        );
        // A directory, nothing, a file below a file.
        assert_eq!(
            refusal(&[base, ("top", &[("t", "")], &[("l", "d")])]),
            Some(BadLinkTarget::Directory)
        );
        assert_eq!(
            refusal(&[base, ("top", &[("t", "")], &[("l", "nothing")])]),
            Some(BadLinkTarget::Missing)
        );
        assert_eq!(
            refusal(&[base, ("top", &[("t", "")], &[("l", "d/file/x")])]),
            Some(BadLinkTarget::NotDirParent("d/file".into()))
        );
        // Only the layers below count: a file of a higher layer does not.
        assert_eq!(
            refusal(&[
                ("base", &[("x", "")], &[("l", "d/file")]),
                ("top", &[("d/file", "f")], &[])
            ]),
            Some(BadLinkTarget::Missing)
        );
    }

    #[test]
    fn a_whiteout_names_the_layer_that_deleted_the_target() {
        let (tmp, links) = image(&[
            ("base", &[("d/file", "f")], &[]),
            ("mid", &[("d/.wh.file", "")], &[]),
            ("top", &[("t", "")], &[("l", "d/file")]),
        ]);
        let err = links.unwrap().check().unwrap_err();
        let mid = Digest::sha256_of(b"diff mid");
        let top = Digest::sha256_of(b"diff top");
        assert!(
            matches!(&err, PullError::ExternalHardlink { layer, link, target, reason: BadLinkTarget::WhitedOut(by) }
                if *layer == top && link == "l" && target == "d/file" && *by == mid),
            "{err:?}"
        );
        assert_eq!(
            err.to_string(),
            format!("failed to register layer: hardlink \"l\" to \"d/file\" in layer {top}: the target is whited out by layer {mid} (link: no such file or directory)")
        );
        // The layers are left as they were.
        let store = Store::open(&tmp.path().join("store")).unwrap();
        assert!(store.has_layer(&top) && store.has_layer(&mid));
        assert!(fs::metadata(store.layer_dir(&top).join("rootfs/t")).is_ok());
    }
}
