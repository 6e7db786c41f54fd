//! `rpull rmi [-f] NAME|ID...`: untags and removes images as `docker rmi` does, then, unless
//! `--no-prune`, deletes the blobs and unpacked layers nothing refers to any more
//! ([`Engine::remove`](rpull::engine::Engine::remove)).
//!
//! Output is docker's: `Untagged: …` and `Deleted: sha256:…` lines on stdout, one failure per
//! name on stderr as `Error response from daemon: …`, exit status 1 when any name failed. The
//! collection adds a `Deleted: sha256:…` line per blob or layer it deletes (the image ID is
//! not repeated). When another rpull command holds the store, the collection is left to a
//! later `rpull prune` and a note says so on stderr.

use std::collections::HashSet;
use std::path::PathBuf;
use std::process::ExitCode;

use super::{fail, print_line, store_engine};
use rpull::cli::RmiArgs;
use rpull::engine::RemoveOptions;
use rpull::gc::{GcError, GcReport, Removed};

/// Removes the named images and returns the exit status.
pub fn run(args: RmiArgs, root: Option<PathBuf>) -> ExitCode {
    let engine = match store_engine(root.as_deref()) {
        Ok(e) => e,
        Err(e) => return fail(&e),
    };
    let opts = RemoveOptions {
        force: args.force,
        prune: !args.no_prune,
    };
    let removal = match engine.remove(&args.names, &opts) {
        Ok(r) => r,
        Err(e) => return fail(&format!("Error response from daemon: {e}")),
    };
    let mut failed = false;
    let mut printed: HashSet<String> = HashSet::new();
    for outcome in removal.outcomes {
        match outcome.result {
            Ok(lines) => {
                for line in lines {
                    if let Removed::Deleted(d) = &line {
                        printed.insert(d.to_string());
                    }
                    print_line(line);
                }
            }
            Err(e) => {
                failed = true;
                eprintln!("Error response from daemon: {e}");
            }
        }
    }
    if let Some(collected) = removal.collected {
        print_collected(collected, &printed);
    }
    if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

/// Prints a line per digest the collection deleted that was not printed yet, or why it did
/// not run.
fn print_collected(collected: Result<GcReport, GcError>, printed: &HashSet<String>) {
    match collected {
        Ok(report) => {
            for d in report.deleted() {
                if !printed.contains(&d.to_string()) {
                    print_line(format_args!("Deleted: {d}"));
                }
            }
            for w in &report.warnings {
                eprintln!("warning: {w}");
            }
        }
        Err(GcError::Busy) => eprintln!(
            "note: another rpull command is using the store; run `rpull prune` later to free the space"
        ),
        Err(e) => eprintln!("warning: freeing unused blobs and layers failed: {e}"),
    }
}
