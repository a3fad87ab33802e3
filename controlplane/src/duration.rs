//! Durations on the command line (`24h`, `90s`, `87600h`) and dates in messages.
//!
//! The same units as the proxy's variables (`ms`, `s`, `m`, `h`), plus `d` for days.

use std::time::Duration;
use time::OffsetDateTime;

/// Parses `<number><unit>` with unit `ms`, `s`, `m`, `h` or `d`. Zero is refused: no
/// lifetime or period in Weft makes sense as zero.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let split = s
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| format!("{s:?}: missing unit (ms, s, m, h or d)"))?;
    let (num, unit) = s.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?}: expected a number followed by ms, s, m, h or d"))?;
    let secs = |mul: u64| {
        n.checked_mul(mul)
            .map(Duration::from_secs)
            .ok_or_else(|| format!("{s:?}: too long"))
    };
    let d = match unit {
        "ms" => Duration::from_millis(n),
        "s" => secs(1)?,
        "m" => secs(60)?,
        "h" => secs(3600)?,
        "d" => secs(86_400)?,
        _ => {
            return Err(format!(
                "{s:?}: unknown unit {unit:?} (use ms, s, m, h or d)"
            ))
        }
    };
    if d.is_zero() {
        return Err(format!("{s:?}: must be more than zero"));
    }
    Ok(d)
}

/// Formats a duration the way it is written on the command line, in the largest unit up to
/// hours that divides it exactly (`24h`, `87600h`, `90s`, `1500ms`).
pub fn format_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms % 1000 != 0 {
        return format!("{ms}ms");
    }
    let s = d.as_secs();
    for (unit, n) in [("h", 3600), ("m", 60)] {
        if s >= n && s % n == 0 {
            return format!("{}{unit}", s / n);
        }
    }
    format!("{s}s")
}

/// `2027-12-07`.
pub fn date(t: OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    format!("{:04}-{:02}-{:02}", t.year(), u8::from(t.month()), t.day())
}

/// `2027-12-07T10:04:00Z`.
pub fn date_time(t: OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    format!(
        "{}T{:02}:{:02}:{:02}Z",
        date(t),
        t.hour(),
        t.minute(),
        t.second()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_units() {
        let cases = [
            ("24h", Duration::from_secs(86_400)),
            ("87600h", Duration::from_secs(87_600 * 3600)),
            ("90s", Duration::from_secs(90)),
            ("5m", Duration::from_secs(300)),
            ("1500ms", Duration::from_millis(1500)),
            ("7d", Duration::from_secs(7 * 86_400)),
        ];
        for (s, want) in cases {
            assert_eq!(parse_duration(s), Ok(want), "{s}");
            assert_eq!(parse_duration(&format_duration(want)), Ok(want), "{s}");
        }
        assert_eq!(format_duration(Duration::from_secs(86_400)), "24h");
        assert_eq!(format_duration(Duration::from_secs(90)), "90s");
        assert_eq!(format_duration(Duration::from_secs(120)), "2m");
    }

    #[test]
    fn refuses_bad_durations() {
        for s in [
            "",
            "24",
            "h",
            "1.5h",
            "-1h",
            "10y",
            "0s",
            "99999999999999999999h",
        ] {
            assert!(parse_duration(s).is_err(), "{s:?} should be refused");
        }
        assert!(parse_duration("18446744073709551615h").is_err());
    }

    #[test]
    fn formats_dates() {
        let t = OffsetDateTime::from_unix_timestamp(1_828_000_000).unwrap();
        assert_eq!(date(t), "2027-12-05");
        assert_eq!(date_time(t), "2027-12-05T09:46:40Z");
    }
}
