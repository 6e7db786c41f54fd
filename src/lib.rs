//! rpull: a docker-compatible image puller with no daemon.
//!
//! The library holds every piece of a pull; `main.rs` only parses the command line and maps
//! the outcome to an exit code. No module here prints: progress is reported as
//! [`progress::Event`]s to a [`progress::Reporter`], which decides how they look.

pub mod app;
pub mod archive;
pub mod check;
pub mod cli;
pub mod commands;
pub mod compression;
pub mod config;
pub mod credentials;
pub mod cri;
pub mod digest;
pub mod engine;
pub mod flatten;
pub mod gc;
pub mod images;
pub mod inspect;
pub mod manifest;
pub mod platform;
pub mod progress;
pub mod pull;
pub mod reference;
pub mod registry;
pub mod settings;
pub mod store;
pub mod unpack;
