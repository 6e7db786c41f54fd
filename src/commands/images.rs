//! `rpull images [REPOSITORY[:TAG]]`: docker's `docker images` table, `-q` IDs, `--digests`,
//! `--no-trunc` and `--format json`: the rows of
//! [`Engine::images`](rpull::engine::Engine::images), rendered by [`rpull::images`].

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::SystemTime;

use super::{fail, store_engine};
use rpull::cli::{ImagesArgs, ImagesFormat};
use rpull::images::{self, ImageRow};

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
    let out = match (args.format, args.quiet) {
        (_, true) => {
            let ids = images::render_table(&rows, args.digests, true, now);
            if args.no_trunc {
                untruncate_ids(&ids, &rows)
            } else {
                ids
            }
        }
        (ImagesFormat::Json, false) => {
            let json = images::render_json(&rows, args.digests, now);
            if args.no_trunc {
                untruncate_json(&json, &rows)
            } else {
                json
            }
        }
        (ImagesFormat::Table, false) => {
            let table = images::render_table(&rows, args.digests, false, now);
            if args.no_trunc {
                untruncate_table(&table, &rows)
            } else {
                table
            }
        }
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

/// The short (12 hex) form of a full `sha256:…` image ID, as the renderers print it.
fn short(id: &str) -> &str {
    let hex = id.split_once(':').map_or(id, |(_, h)| h);
    &hex[..hex.len().min(12)]
}

/// The full ID for a short one printed by the renderers.
fn full_id<'a>(short_id: &str, rows: &'a [ImageRow]) -> Option<&'a str> {
    rows.iter()
        .map(|r| r.image_id.as_str())
        .find(|id| short(id) == short_id)
}

fn untruncate_ids(ids: &str, rows: &[ImageRow]) -> String {
    ids.lines()
        .map(|l| format!("{}\n", full_id(l, rows).unwrap_or(l)))
        .collect()
}

fn untruncate_json(json: &str, rows: &[ImageRow]) -> String {
    json.lines()
        .map(|l| {
            let line = match serde_json::from_str::<serde_json::Value>(l)
                .ok()
                .and_then(|v| v["ID"].as_str().and_then(|s| full_id(s, rows)))
            {
                Some(full) => l.replacen(
                    &format!(r#""ID":"{}""#, short(full)),
                    &format!(r#""ID":"{full}""#),
                    1,
                ),
                None => l.to_string(),
            };
            format!("{line}\n")
        })
        .collect()
}

/// Widens the `IMAGE ID` column to full IDs, as docker's `--no-trunc` does. Every row's ID sits
/// at the column of the `IMAGE ID` header, 12 characters and 3 of padding wide; with full IDs
/// (all of one length) the column becomes that length plus the padding.
fn untruncate_table(table: &str, rows: &[ImageRow]) -> String {
    let mut lines = table.lines();
    let Some(header) = lines.next() else {
        return table.to_string();
    };
    let Some(col) = header.find("IMAGE ID") else {
        return table.to_string();
    };
    let Some(width) = rows.iter().map(|r| r.image_id.len()).max() else {
        return table.to_string();
    };
    let old_width = 12 + 3;
    let mut out = String::new();
    let widen = |line: &str, cell: &str| -> String {
        if line.len() < col + old_width || !line.is_char_boundary(col) {
            return format!("{line}\n");
        }
        format!(
            "{}{cell:<w$}{}\n",
            &line[..col],
            &line[col + old_width..],
            w = width + 3
        )
    };
    out.push_str(&widen(header, "IMAGE ID"));
    for line in lines {
        let id = line.get(col..col + 12).unwrap_or_default();
        match full_id(id, rows) {
            Some(full) => out.push_str(&widen(line, full)),
            None => out.push_str(&format!("{line}\n")),
        }
    }
    out
}
