//! Times in the store: microseconds since the Unix epoch, UTC, read from
//! and written as the reports' RFC 3339 form, and the `--since`/`--until`
//! arguments of the queries.

use std::time::{SystemTime, UNIX_EPOCH};

const MICROS: i64 = 1_000_000;

/// Now, in microseconds since the epoch.
pub fn now_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}

/// Days since 1970-01-01 of a proleptic Gregorian date.
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Parses `YYYY-MM-DD`, `YYYY-MM-DDTHH:MM[:SS[.ffffff]]` with an optional
/// `Z` (times are UTC; a space may replace the `T`).
pub fn parse_rfc3339(s: &str) -> Option<i64> {
    let s = s.trim().trim_end_matches('Z');
    let (date, time) = match s.split_once(['T', ' ']) {
        Some((d, t)) => (d, Some(t)),
        None => (s, None),
    };
    let mut d = date.splitn(3, '-').map(|p| p.parse::<i64>().ok());
    let (y, mo, da) = (d.next()??, d.next()??, d.next()??);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&da) {
        return None;
    }
    let mut us = days_from_civil(y, mo, da) * 86_400 * MICROS;
    if let Some(t) = time {
        let (hms, frac) = t.split_once('.').unwrap_or((t, ""));
        let mut parts = hms.split(':').map(|p| p.parse::<i64>().ok());
        let h = parts.next()??;
        let mi = parts.next()??;
        let se = parts.next().unwrap_or(Some(0))?;
        if h > 23 || mi > 59 || se > 60 || parts.next().is_some() {
            return None;
        }
        us += (h * 3600 + mi * 60 + se) * MICROS;
        if !frac.is_empty() {
            if !frac.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            let digits: String = frac.chars().chain(std::iter::repeat('0')).take(6).collect();
            us += digits.parse::<i64>().ok()?;
        }
    }
    Some(us)
}

/// Formats as the reports do, to the second (`2026-11-22T01:02:03Z`).
pub fn format_seconds(us: i64) -> String {
    let secs = us.div_euclid(MICROS);
    let t = UNIX_EPOCH + std::time::Duration::from_secs(secs.max(0) as u64);
    let full = crate::report::time::rfc3339(t);
    match full.split_once('.') {
        Some((head, _)) => format!("{head}Z"),
        None => full,
    }
}

/// A `--since`/`--until` argument: an absolute time (see
/// [`parse_rfc3339`]), or a span before now such as `90s`, `30m`, `2h`,
/// `7d` (also written `-2h` or `2h ago`), or `now`.
pub fn parse_when(s: &str, now: i64) -> Result<i64, String> {
    let t = s.trim();
    if t == "now" {
        return Ok(now);
    }
    let rel = t.trim_start_matches('-').trim_end_matches(" ago").trim();
    if let Some(unit) = rel.chars().last()
        && let Ok(n) = rel[..rel.len() - unit.len_utf8()].trim().parse::<i64>()
    {
        let secs = match unit {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86_400,
            'w' => 7 * 86_400,
            _ => 0,
        };
        if secs > 0 {
            return Ok(now - n.saturating_mul(secs * MICROS));
        }
    }
    parse_rfc3339(t).ok_or_else(|| {
        format!(
            "{s:?} is not a time (use 2026-11-22, 2026-11-22T10:00:00Z, or 30m, 2h, 7d before now)"
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_report_times() {
        let us = parse_rfc3339("2026-11-22T02:14:58.297279Z").unwrap();
        let t = UNIX_EPOCH + std::time::Duration::from_micros(us as u64);
        assert_eq!(
            crate::report::time::rfc3339(t),
            "2026-11-22T02:14:58.297279Z"
        );
        assert_eq!(format_seconds(us), "2026-11-22T02:14:58Z");
        assert_eq!(parse_rfc3339("1970-01-01"), Some(0));
        assert_eq!(parse_rfc3339("1970-01-01T00:01"), Some(60 * MICROS));
        assert_eq!(parse_rfc3339("2026-13-01"), None);
        assert_eq!(parse_rfc3339("yesterday"), None);
    }

    #[test]
    fn relative_times_count_back_from_now() {
        let now = 1_000_000 * MICROS;
        assert_eq!(parse_when("2h", now), Ok(now - 7200 * MICROS));
        assert_eq!(parse_when("-30m", now), Ok(now - 1800 * MICROS));
        assert_eq!(parse_when("7d ago", now), Ok(now - 7 * 86_400 * MICROS));
        assert_eq!(parse_when("now", now), Ok(now));
        assert_eq!(parse_when("1970-01-02", now), Ok(86_400 * MICROS));
        assert!(parse_when("soon", now).is_err());
    }
}
