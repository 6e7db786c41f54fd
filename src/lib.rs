//! rpull: a docker-compatible image puller with no daemon, as a library every front end
//! drives the same way (the `rpull` binary's commands, the CRI image service, the fleet agent).
//!
//! The layers, from the front ends down:
//! * [`engine`]: the operations (pull, list, inspect, remove, collect, save, rootfs, check) over one store and one
//!   [`settings::Settings`] value built from flags, [`config`] and the environment;
//! * [`pull`]: orchestration of one pull (resolve, download, verify, unpack, record), reporting
//!   [`progress::Event`]s to a [`progress::Reporter`] that decides how they look;
//! * [`registry`]: the registry client (hosts, TLS, scheme, auth, transport, retries, errors), with
//!   [`credentials`] (docker's config.json and helpers);
//! * [`store`]: the OCI layout (blobs, unpacked layers, `index.json`, ingest, locks and its read
//!   side), with [`gc`], [`check`], [`images`], [`archive`] and [`flatten`] over it;
//! * [`unpack`] and [`compression`]: safe layer unpacking and decompression;
//! * the formats: [`reference`], [`platform`], [`digest`], [`manifest`], and `base64`;
//! * [`cli`]: the command-line definition, here so that man pages and completions can be
//!   generated from it.
//!
//! No module here prints or exits: the binary's command layer and the reporters do.

pub mod archive;
pub(crate) mod base64;
pub mod check;
pub mod cli;
pub mod compression;
pub mod config;
pub mod credentials;
pub mod cri;
pub mod digest;
pub mod engine;
pub mod flatten;
pub mod fleet;
pub mod fsutil;
pub mod gc;
pub mod images;
pub mod inspect;
pub mod manifest;
pub(crate) mod overlay;
pub mod platform;
pub mod progress;
pub mod pull;
pub mod reference;
pub mod registry;
pub mod scrub;
pub mod settings;
pub mod store;
#[cfg(test)]
mod testfs;
pub mod unpack;
