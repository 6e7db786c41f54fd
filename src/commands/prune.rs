//! `rpull prune`: deletes the blobs and unpacked layers `index.json` no longer reaches,
//! abandoned partial downloads and temporary files left by interrupted commands
//! ([`Engine::collect`](rpull::engine::Engine::collect), with no grace).
//!
//! Prints a `Deleted: sha256:…` line per blob or layer deleted, then docker's `Total reclaimed
//! space: …` line. Fails (exit status 1) when another rpull command is using the store: pulls,
//! saves and `rootfs` hold the store guard for their whole run, so nothing they are writing or
//! reading can be deleted under them.

use std::path::PathBuf;
use std::process::ExitCode;

use super::{fail, print_line, store_engine};
use rpull::cli::PruneArgs;
use rpull::gc::CollectOptions;
use rpull::images::human_size_precision;

/// Collects the store's garbage and returns the exit status.
pub fn run(_args: PruneArgs, root: Option<PathBuf>) -> ExitCode {
    let engine = match store_engine(root.as_deref()) {
        Ok(e) => e,
        Err(e) => return fail(&e),
    };
    let report = match engine.collect(&CollectOptions::immediate()) {
        Ok(r) => r,
        Err(e) => return fail(&format!("Error: {e}")),
    };
    for d in report.deleted() {
        print_line(format_args!("Deleted: {d}"));
    }
    for w in &report.warnings {
        eprintln!("warning: {w}");
    }
    for p in &report.in_use {
        eprintln!("note: {} is being downloaded; kept", p.display());
    }
    print_line(format_args!(
        "Total reclaimed space: {}",
        human_size_precision(report.reclaimed_bytes(), 4)
    ));
    ExitCode::SUCCESS
}
