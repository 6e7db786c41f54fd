//! Times as docker shows them: RFC 3339 parsing, go-units' relative durations
//! (`18 months ago`) and Go's `Time.String()` in the local zone.

use std::time::{SystemTime, UNIX_EPOCH};

/// Unix time of Go's zero `time.Time` (0001-01-01 UTC), which docker shows as no time at all.
pub(super) const GO_ZERO_UNIX: i64 = -62_135_596_800;

/// docker's `CreatedSince`: `HumanDuration(now - created) + " ago"`, or empty when there is no
/// creation time.
pub fn created_since(created: Option<&str>, now: SystemTime) -> String {
    let Some(secs) = created.and_then(parse_rfc3339) else {
        return String::new();
    };
    if secs == GO_ZERO_UNIX {
        return String::new();
    }
    let now_ns = match now.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_nanos() as i128,
        Err(e) => -(e.duration().as_nanos() as i128),
    };
    // Go's time.Sub saturates at the limits of a Duration (an int64 of nanoseconds).
    let d = (now_ns - secs as i128 * 1_000_000_000).clamp(i64::MIN as i128, i64::MAX as i128) as i64;
    format!("{} ago", human_duration_ns(d))
}

/// go-units `HumanDuration` (v0.5.0) for a duration in nanoseconds: "Less than a second",
/// "1 second", "About a minute", "2 hours", "18 months", "2 years", ….
pub fn human_duration_ns(d: i64) -> String {
    // Go's Duration.Seconds()/Minutes()/Hours() are float divisions, truncated by int().
    let in_unit = |unit: i64| (d / unit) as f64 + (d % unit) as f64 / unit as f64;
    let seconds = in_unit(1_000_000_000) as i64;
    let minutes = in_unit(60_000_000_000) as i64;
    let exact_hours = in_unit(3_600_000_000_000);
    if seconds < 1 {
        return "Less than a second".to_string();
    } else if seconds == 1 {
        return "1 second".to_string();
    } else if seconds < 60 {
        return format!("{seconds} seconds");
    } else if minutes == 1 {
        return "About a minute".to_string();
    } else if minutes < 60 {
        return format!("{minutes} minutes");
    }
    // go-units: hours rounded to the nearest, then whole days, weeks and months of them;
    // years from the truncated hours.
    let hours = (exact_hours + 0.5) as i64;
    if hours == 1 {
        "About an hour".to_string()
    } else if hours < 48 {
        format!("{hours} hours")
    } else if hours < 24 * 7 * 2 {
        format!("{} days", hours / 24)
    } else if hours < 24 * 30 * 2 {
        format!("{} weeks", hours / 24 / 7)
    } else if hours < 24 * 365 * 2 {
        format!("{} months", hours / 24 / 30)
    } else {
        format!("{} years", exact_hours as i64 / 24 / 365)
    }
}

/// Parses an RFC 3339 time (`2023-11-14T22:13:00.123Z`, `…+01:00`) to Unix seconds.
pub fn parse_rfc3339(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    let num = |from: usize, len: usize| -> Option<i64> {
        let part = s.get(from..from + len)?;
        if !part.bytes().all(|c| c.is_ascii_digit()) {
            return None;
        }
        part.parse().ok()
    };
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    if b[13] != b':' || b[16] != b':' {
        return None;
    }
    let (year, month, day) = (num(0, 4)?, num(5, 2)?, num(8, 2)?);
    let (hour, minute, second) = (num(11, 2)?, num(14, 2)?, num(17, 2)?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    let mut rest = &s[19..];
    if let Some(frac) = rest.strip_prefix('.') {
        let digits = frac.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        rest = &frac[digits..];
    }
    let offset = match rest {
        "Z" | "z" => 0,
        _ => {
            let rb = rest.as_bytes();
            if rb.len() != 6 || !matches!(rb[0], b'+' | b'-') || rb[3] != b':' {
                return None;
            }
            let h: i64 = rest[1..3].parse().ok()?;
            let m: i64 = rest[4..6].parse().ok()?;
            let o = h * 3600 + m * 60;
            if rb[0] == b'-' {
                -o
            } else {
                o
            }
        }
    };
    let days = days_from_civil(year, month, day);
    Some(days * 86_400 + hour * 3600 + minute * 60 + second - offset)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The civil date of a day count since 1970-01-01.
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// Go's `Time.String()` for a whole second: `2023-11-14 22:13:00 +0000 UTC`.
pub(super) fn go_time_string(secs: i64, offset: i64, zone: &str) -> String {
    let local = secs + offset;
    let (y, mo, d) = civil_from_days(local.div_euclid(86_400));
    let tod = local.rem_euclid(86_400);
    let sign = if offset < 0 { '-' } else { '+' };
    let off = offset.abs();
    format!(
        "{y:04}-{mo:02}-{d:02} {:02}:{:02}:{:02} {sign}{:02}{:02} {zone}",
        tod / 3600,
        tod % 3600 / 60,
        tod % 60,
        off / 3600,
        off % 3600 / 60
    )
}

/// The local time zone's offset (seconds east of UTC) and abbreviation at `secs`.
pub(super) fn local_zone(secs: i64) -> (i64, String) {
    let t = secs as libc::time_t;
    // SAFETY: localtime_r only writes the `tm` we own; tm_zone points to static storage.
    unsafe {
        let mut tm: libc::tm = std::mem::zeroed();
        if libc::localtime_r(&t, &mut tm).is_null() {
            return (0, "UTC".to_string());
        }
        let zone = if tm.tm_zone.is_null() {
            String::new()
        } else {
            std::ffi::CStr::from_ptr(tm.tm_zone)
                .to_string_lossy()
                .into_owned()
        };
        (tm.tm_gmtoff, zone)
    }
}

#[cfg(test)]
mod tests {
    use super::super::human_size_precision;
    use super::super::testutil::at;
    use super::*;

    #[test]
    fn human_duration_is_go_units() {
        let s = 1_000_000_000i64;
        let cases: &[(i64, &str)] = &[
            (-5 * s, "Less than a second"),
            (s / 2, "Less than a second"),
            (s, "1 second"),
            (59 * s, "59 seconds"),
            (60 * s, "About a minute"),
            (119 * s, "About a minute"),
            (2 * 60 * s, "2 minutes"),
            (59 * 60 * s, "59 minutes"),
            (60 * 60 * s, "About an hour"),
            (89 * 60 * s, "About an hour"),
            (90 * 60 * s, "2 hours"),
            (47 * 3600 * s, "47 hours"),
            (48 * 3600 * s, "2 days"),
            (13 * 86400 * s, "13 days"),
            (14 * 86400 * s, "2 weeks"),
            (59 * 86400 * s, "8 weeks"),
            (60 * 86400 * s, "2 months"),
            (548 * 86400 * s, "18 months"),
            (729 * 86400 * s, "24 months"),
            (730 * 86400 * s, "2 years"),
            // go-units truncates days, weeks, months and years (it rounds only the hours).
            ((10 * 86400 + 23 * 3600) * s, "10 days"),
            (20 * 86400 * s, "2 weeks"),
            (89 * 86400 * s, "2 months"),
            (1065 * 86400 * s, "2 years"),
            (i64::MAX, "292 years"),
        ];
        for (d, want) in cases {
            assert_eq!(human_duration_ns(*d), *want, "{d}");
        }
        let now = at("2024-01-01T00:01:30Z");
        assert_eq!(
            created_since(Some("2024-01-01T00:00:00Z"), now),
            "About a minute ago"
        );
        assert_eq!(
            created_since(Some("2024-01-01T02:00:00+02:00"), now),
            "About a minute ago"
        );
        assert_eq!(created_since(None, now), "");
        assert_eq!(created_since(Some("0001-01-01T00:00:00Z"), now), "");
    }

    #[test]
    fn sizes_and_times() {
        assert_eq!(human_size_precision(116_930_000, 3), "117MB");
        assert_eq!(human_size_precision(419_000, 3), "419kB");
        assert_eq!(human_size_precision(999, 3), "999B");
        assert_eq!(human_size_precision(0, 3), "0B");
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(
            parse_rfc3339("2023-11-14T22:13:00.5+01:00"),
            Some(1_700_000_000 - 20 - 3600)
        );
        assert_eq!(parse_rfc3339("2023-11-14"), None);
        assert_eq!(parse_rfc3339("0001-01-01T00:00:00Z"), Some(GO_ZERO_UNIX));
        assert_eq!(
            go_time_string(1_699_999_980, 0, "UTC"),
            "2023-11-14 22:13:00 +0000 UTC"
        );
        assert_eq!(
            go_time_string(1_699_999_980, -5 * 3600 - 1800, "X"),
            "2023-11-14 16:43:00 -0530 X"
        );
    }
}
