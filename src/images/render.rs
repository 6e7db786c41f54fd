//! docker's renderings of the image rows: the `docker images` table (and `-q`), and
//! `--format json` lines.

use std::collections::HashSet;
use std::time::SystemTime;

use super::time::{created_since, go_time_string, local_zone, parse_rfc3339, GO_ZERO_UNIX};
use super::{human_size_precision, ImageRow, NONE};

/// What of the rows `docker images` shows, by its flags.
#[derive(Debug, Clone, Copy, Default)]
pub struct Columns {
    /// `--digests`: a `DIGEST` column, and a row per repo digest.
    pub digests: bool,
    /// `--no-trunc`: full image IDs (`sha256:…`) instead of their first 12 hex characters.
    pub no_trunc: bool,
}

impl Columns {
    /// An image ID as the flags show it.
    fn id<'a>(&self, id: &'a str) -> &'a str {
        if self.no_trunc {
            id
        } else {
            short_id(id)
        }
    }
}

/// The rows docker shows for one `digests` setting: without `--digests`, a tag row appears
/// once per tag and a digest-only repository once, with an empty digest.
fn fold_rows(rows: &[ImageRow], digests: bool) -> Vec<(ImageRow, String)> {
    let mut out: Vec<(ImageRow, String)> = Vec::new();
    let mut seen = HashSet::new();
    for r in rows {
        if digests {
            let d = r.digest.clone().unwrap_or_else(|| NONE.to_string());
            out.push((r.clone(), d));
        } else if seen.insert((r.image_id.clone(), r.repository.clone(), r.tag.clone())) {
            let d = if r.tag == NONE {
                String::new()
            } else {
                NONE.to_string()
            };
            out.push((r.clone(), d));
        }
    }
    out
}

/// Renders rows exactly as `docker images` prints them: a tabwriter table (minimum cell width
/// 10, padding 3) with `REPOSITORY`, `TAG`, `DIGEST` (with `digests`), `IMAGE ID`, `CREATED`,
/// `SIZE`; or with `quiet`, one image ID per row (repeated for an image with several tags, as
/// docker does). Every line ends with a newline.
pub fn render_table(rows: &[ImageRow], columns: Columns, quiet: bool, now: SystemTime) -> String {
    let digests = columns.digests;
    let folded = fold_rows(rows, digests);
    if quiet {
        return folded
            .iter()
            .map(|(r, _)| format!("{}\n", columns.id(&r.image_id)))
            .collect();
    }
    let mut table: Vec<Vec<String>> = Vec::new();
    let mut header = vec!["REPOSITORY", "TAG"];
    if digests {
        header.push("DIGEST");
    }
    header.extend(["IMAGE ID", "CREATED", "SIZE"]);
    table.push(header.into_iter().map(str::to_string).collect());
    for (r, d) in &folded {
        let since = created_since(r.created.as_deref(), now);
        let mut line = vec![r.repository.clone(), r.tag.clone()];
        if digests {
            line.push(d.clone());
        }
        line.extend([
            columns.id(&r.image_id).to_string(),
            if since.is_empty() {
                "N/A".to_string()
            } else {
                since
            },
            human_size_precision(r.size, 3),
        ]);
        table.push(line);
    }
    tabwrite(&table, 10, 3)
}

/// Renders rows as `docker images --format json` does: one JSON object per row and line, keys
/// sorted, every value a string, `<`, `>` and `&` escaped as Go's encoder escapes them.
/// `CreatedAt` is in the local time zone, as docker prints it.
pub fn render_json(rows: &[ImageRow], columns: Columns, now: SystemTime) -> String {
    let mut out = String::new();
    for (r, d) in fold_rows(rows, columns.digests) {
        let created = r
            .created
            .as_deref()
            .and_then(parse_rfc3339)
            .unwrap_or(GO_ZERO_UNIX);
        let created_at = if created == GO_ZERO_UNIX {
            "0001-01-01 00:00:00 +0000 UTC".to_string()
        } else {
            let (offset, zone) = local_zone(created);
            go_time_string(created, offset, &zone)
        };
        let mut obj = serde_json::Map::new();
        let mut put = |k: &str, v: String| {
            obj.insert(k.to_string(), serde_json::Value::String(v));
        };
        put("Containers", "N/A".into());
        put("CreatedAt", created_at);
        put("CreatedSince", created_since(r.created.as_deref(), now));
        put("Digest", d);
        put("ID", columns.id(&r.image_id).to_string());
        put("Repository", r.repository.clone());
        put("SharedSize", "N/A".into());
        put("Size", human_size_precision(r.size, 3));
        put("Tag", r.tag.clone());
        put("UniqueSize", "N/A".into());
        put("VirtualSize", crate::progress::human_size(r.size));
        let line = serde_json::Value::Object(obj).to_string();
        out.push_str(&go_escape_html(&line));
        out.push('\n');
    }
    out
}

/// Go's `json.Marshal` HTML escaping, applied to already serialized JSON (the characters only
/// occur inside strings there).
fn go_escape_html(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '<' => out.push_str("\\u003c"),
            '>' => out.push_str("\\u003e"),
            '&' => out.push_str("\\u0026"),
            '\u{2028}' => out.push_str("\\u2028"),
            '\u{2029}' => out.push_str("\\u2029"),
            c => out.push(c),
        }
    }
    out
}

/// docker's truncated ID: the first 12 hex characters after the algorithm.
fn short_id(id: &str) -> &str {
    let hex = id.split_once(':').map_or(id, |(_, h)| h);
    &hex[..hex.len().min(12)]
}

/// Go's `text/tabwriter` with `padchar ' '` and no flags, for cells that are all tab-terminated
/// except the last of each line: each column is as wide as its widest cell plus `padding`, and
/// at least `minwidth`.
fn tabwrite(table: &[Vec<String>], minwidth: usize, padding: usize) -> String {
    let columns = table.iter().map(Vec::len).max().unwrap_or(0);
    let mut widths = vec![0; columns];
    for line in table {
        for (i, cell) in line.iter().enumerate().take(line.len().saturating_sub(1)) {
            widths[i] = widths[i].max((cell.chars().count() + padding).max(minwidth));
        }
    }
    let mut out = String::new();
    for line in table {
        for (i, cell) in line.iter().enumerate() {
            out.push_str(cell);
            if i + 1 < line.len() {
                let pad = widths[i] - cell.chars().count();
                out.extend(std::iter::repeat_n(' ', pad));
            }
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::testutil::{at, id, row};
    use super::*;

    const DIGESTS: Columns = Columns {
        digests: true,
        no_trunc: false,
    };

    #[test]
    fn table_matches_capture_19() {
        let expected = "\
REPOSITORY                    TAG        IMAGE ID       CREATED         SIZE
127.0.0.1:5000/bench/many     tag066     b8771c0acce2   18 months ago   2.11MB
127.0.0.1:5000/bench/multi    latest     6f01b9cfe24d   18 months ago   1.57MB
127.0.0.1:5000/bench/layers   whiteout   aa50d2efc6d4   18 months ago   419kB
debian                        bookworm   7ea5cf21978c   18 months ago   117MB
debian                        latest     7ea5cf21978c   18 months ago   117MB
127.0.0.1:5000/bench/debian   <none>     7ea5cf21978c   18 months ago   117MB
";
        let mut digest_only = row(
            "127.0.0.1:5000/bench/debian",
            "<none>",
            "7ea5cf21978c",
            116_930_000,
        );
        digest_only.digest = Some(id("791c47585e2d"));
        let rows = vec![
            row("127.0.0.1:5000/bench/many", "tag066", "b8771c0acce2", 2_110_000),
            row("127.0.0.1:5000/bench/multi", "latest", "6f01b9cfe24d", 1_566_000),
            row("127.0.0.1:5000/bench/layers", "whiteout", "aa50d2efc6d4", 419_000),
            row("debian", "bookworm", "7ea5cf21978c", 116_930_000),
            row("debian", "latest", "7ea5cf21978c", 116_930_000),
            digest_only,
        ];
        let now = at("2025-05-20T10:00:00Z");
        assert_eq!(render_table(&rows, Columns::default(), false, now), expected);
        assert_eq!(
            render_table(&rows, Columns::default(), true, now),
            "b8771c0acce2\n6f01b9cfe24d\naa50d2efc6d4\n7ea5cf21978c\n7ea5cf21978c\n7ea5cf21978c\n"
        );
    }

    #[test]
    fn table_matches_capture_13c() {
        let expected = "\
REPOSITORY                    TAG       DIGEST                                                                    IMAGE ID       CREATED         SIZE
127.0.0.1:5000/bench/debian   <none>    sha256:791c47585e2d5f7943859d53f94bea25159a50ead6ec107ddaeac807e38e9e71   7ea5cf21978c   18 months ago   117MB
";
        let mut r = row(
            "127.0.0.1:5000/bench/debian",
            "<none>",
            "7ea5cf21978c",
            117_000_000,
        );
        r.digest = Some("sha256:791c47585e2d5f7943859d53f94bea25159a50ead6ec107ddaeac807e38e9e71".into());
        assert_eq!(
            render_table(&[r], DIGESTS, false, at("2025-05-20T10:00:00Z")),
            expected
        );
        assert_eq!(
            render_table(&[], Columns::default(), false, SystemTime::now()),
            "REPOSITORY   TAG       IMAGE ID   CREATED   SIZE\n"
        );
    }

    #[test]
    fn json_lines_are_dockers() {
        let mut tagged = row("debian", "bookworm", "7ea5cf21978c", 116_930_000);
        tagged.digest = Some(id("aaaa"));
        let mut digest_only = row("bench/debian", "<none>", "7ea5cf21978c", 116_930_000);
        digest_only.digest = Some(id("bbbb"));
        let now = at("2025-05-20T10:00:00Z");
        let out = render_json(&[tagged.clone(), digest_only.clone()], Columns::default(), now);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 2);
        let v: serde_json::Value = serde_json::from_str(lines[0]).unwrap();
        assert_eq!(v["Digest"], "<none>");
        assert_eq!(v["ID"], "7ea5cf21978c");
        assert_eq!(v["Size"], "117MB");
        assert_eq!(v["VirtualSize"], "116.9MB");
        assert_eq!(v["CreatedSince"], "18 months ago");
        assert_eq!(v["Containers"], "N/A");
        assert!(v["CreatedAt"].as_str().unwrap().starts_with("2023-11-1"));
        assert!(lines[0].starts_with(r#"{"Containers":"N/A","CreatedAt":"#));
        let tail = concat!(
            r#""Digest":"\u003cnone\u003e","ID":"7ea5cf21978c","Repository":"debian","SharedSize":"N/A","#,
            r#""Size":"117MB","Tag":"bookworm","UniqueSize":"N/A","VirtualSize":"116.9MB"}"#
        );
        assert!(lines[0].ends_with(tail), "{}", lines[0]);
        let v: serde_json::Value = serde_json::from_str(lines[1]).unwrap();
        assert_eq!(v["Digest"], "");
        let out = render_json(&[tagged, digest_only], DIGESTS, now);
        assert!(out.contains(&format!(r#""Digest":"{}""#, id("aaaa"))));
    }
}
