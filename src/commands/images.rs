//! `rpull images [REPOSITORY[:TAG]]`: docker's `docker images` table, `-q` IDs, `--digests`,
//! `--no-trunc` and `--format json`: the rows of
//! [`Engine::images`](rpull::engine::Engine::images), rendered by [`rpull::images`].

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::SystemTime;

use super::{fail, store_engine};
use rpull::cli::{ImagesArgs, ImagesFormat};
use rpull::images::{self, Columns};

/// Lists the images in the store and returns the exit status.
pub fn run(args: ImagesArgs, root: Option<PathBuf>) -> ExitCode {
    let engine = match store_engine(root.as_deref()) {
        Ok(e) => e,
        Err(e) => return fail(&e),
    };
    let rows = match engine.images(args.filter.as_deref()) {
        Ok(rows) => rows,
        Err(e) => return fail(&format!("Error response from daemon: {e}")),
    };
    let now = SystemTime::now();
    let columns = Columns {
        digests: args.digests,
        no_trunc: args.no_trunc,
    };
    let out = match (args.format, args.quiet) {
        (_, true) => images::render_table(&rows, columns, true, now),
        (ImagesFormat::Json, false) => images::render_json(&rows, columns, now),
        (ImagesFormat::Table, false) => images::render_table(&rows, columns, false, now),
    };
    let mut stdout = std::io::stdout().lock();
    if stdout
        .write_all(out.as_bytes())
        .and_then(|()| stdout.flush())
        .is_err()
    {
        return ExitCode::from(1);
    }
    ExitCode::SUCCESS
}
