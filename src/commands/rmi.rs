//! `rpull rmi [-f] NAME|ID...`: untags and removes images as `docker rmi` does
//! ([`gc::remove_refs`]), then, unless `--no-prune`, deletes the blobs and unpacked layers
//! nothing refers to any more ([`gc::collect_with`]).
//!
//! Output is docker's: `Untagged: …` and `Deleted: sha256:…` lines on stdout, one failure per
//! name on stderr as `Error response from daemon: …`, exit status 1 when any name failed. The
//! collection adds a `Deleted: sha256:…` line per blob or layer it deletes (the image ID is
//! not repeated). When another rpull command holds the store, the collection is left to a
//! later `rpull prune` and a note says so on stderr.

use std::collections::HashSet;
use std::path::PathBuf;
use std::process::ExitCode;

use super::{fail, open_store, print_line};
use rpull::cli::RmiArgs;
use rpull::gc::{self, CollectOptions, GcError, Removed};
use rpull::store::Store;

/// Removes the named images and returns the exit status.
pub fn run(args: RmiArgs, root: Option<PathBuf>) -> ExitCode {
    let store = match open_store(root.as_deref()) {
        Ok(s) => s,
        Err(e) => return fail(&e),
    };
    let outcomes = match gc::remove_refs(&store, &args.names, args.force) {
        Ok(o) => o,
        Err(e) => return fail(&format!("Error response from daemon: {e}")),
    };
    let mut failed = false;
    let mut printed: HashSet<String> = HashSet::new();
    let mut removed_any = false;
    for outcome in outcomes {
        match outcome.result {
            Ok(lines) => {
                for line in lines {
                    if let Removed::Deleted(d) = &line {
                        printed.insert(d.to_string());
                    }
                    removed_any = true;
                    print_line(line);
                }
            }
            Err(e) => {
                failed = true;
                eprintln!("Error response from daemon: {e}");
            }
        }
    }
    if removed_any && !args.no_prune {
        collect(&store, &printed);
    }
    if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

/// Deletes what is no longer referenced and prints a line per deleted digest not printed yet.
fn collect(store: &Store, printed: &HashSet<String>) {
    let opts = CollectOptions {
        grace: std::time::Duration::ZERO,
        wait: false,
    };
    match gc::collect_with(store, &opts) {
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
