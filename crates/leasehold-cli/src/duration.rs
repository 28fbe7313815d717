//! Durations on the command line: `10s`, `1.5s`, `500ms`, `2m`, `1h`,
//! `1m30s`.

use std::time::Duration;

/// Milliseconds per unit.
fn unit_ms(unit: &str) -> Option<u64> {
    Some(match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return None,
    })
}

/// Parses a duration: one or more `NUMBER UNIT` pairs, units `ms`, `s`,
/// `m`, `h`, `d`, the number with an optional decimal fraction (e.g. `10s`,
/// `1.5s`, `250ms`, `2m`, `0.5h`, `1m30s`). The result must be whole
/// milliseconds (`1.5ms` is refused). A bare `0` is zero.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let usage = || format!("invalid duration {text:?}: expected e.g. 10s, 1.5s, 500ms, 2m, 1m30s");
    let s = text.trim();
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    if s.is_empty() {
        return Err(usage());
    }
    let mut total_ms: u64 = 0;
    let mut rest = s;
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let (number, after) = rest.split_at(number_len);
        let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
        if whole.is_empty() || (number.contains('.') && fraction.is_empty()) {
            return Err(usage());
        }
        if fraction.contains('.') || fraction.len() > 9 {
            return Err(usage());
        }
        let unit_len = after
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(after.len());
        let (unit, next) = after.split_at(unit_len);
        rest = next;
        let per_unit = unit_ms(unit).ok_or_else(usage)?;
        let whole: u64 = whole.parse().map_err(|_| usage())?;
        let mut ms = whole.checked_mul(per_unit).ok_or_else(usage)?;
        if !fraction.is_empty() {
            // fraction / 10^digits of a unit, in whole milliseconds only.
            let digits = u32::try_from(fraction.len()).map_err(|_| usage())?;
            let numerator: u128 = fraction.parse().map_err(|_| usage())?;
            let scaled = numerator * u128::from(per_unit);
            let denominator = 10u128.pow(digits);
            if !scaled.is_multiple_of(denominator) {
                return Err(format!(
                    "invalid duration {text:?}: finer than a millisecond"
                ));
            }
            let part = u64::try_from(scaled / denominator).map_err(|_| usage())?;
            ms = ms.checked_add(part).ok_or_else(usage)?;
        }
        total_ms = total_ms.checked_add(ms).ok_or_else(usage)?;
    }
    Ok(Duration::from_millis(total_ms))
}

/// Formats a duration the way [`parse_duration`] reads it, shortest exact
/// form (`10s`, `1m30s`, `250ms`).
pub fn format_duration(d: Duration) -> String {
    let mut ms = u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
    if ms == 0 {
        return "0s".to_string();
    }
    let mut out = String::new();
    for (unit, size) in [
        ("d", 86_400_000u64),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1_000),
        ("ms", 1),
    ] {
        if ms >= size {
            out.push_str(&format!("{}{unit}", ms / size));
            ms %= size;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn parses_units_and_compounds() {
        assert_eq!(parse_duration("10s"), Ok(ms(10_000)));
        assert_eq!(parse_duration("500ms"), Ok(ms(500)));
        assert_eq!(parse_duration("2m"), Ok(ms(120_000)));
        assert_eq!(parse_duration("1h"), Ok(ms(3_600_000)));
        assert_eq!(parse_duration("1d"), Ok(ms(86_400_000)));
        assert_eq!(parse_duration("1m30s"), Ok(ms(90_000)));
        assert_eq!(parse_duration(" 1s500ms "), Ok(ms(1_500)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        assert_eq!(parse_duration("0s"), Ok(Duration::ZERO));
    }

    #[test]
    fn parses_fractions() {
        assert_eq!(parse_duration("1.5s"), Ok(ms(1_500)));
        assert_eq!(parse_duration("0.25s"), Ok(ms(250)));
        assert_eq!(parse_duration("1.5m"), Ok(ms(90_000)));
        assert_eq!(parse_duration("0.5h"), Ok(ms(1_800_000)));
        assert_eq!(parse_duration("2.0ms"), Ok(ms(2)));
        assert_eq!(parse_duration("1m0.5s"), Ok(ms(60_500)));
        assert_eq!(parse_duration("0.001s"), Ok(ms(1)));
        let e = parse_duration("1.5ms").expect_err("sub-millisecond");
        assert!(e.contains("finer than a millisecond"), "{e}");
        assert!(parse_duration("0.0001s").is_err());
    }

    #[test]
    fn rejects_garbage() {
        for bad in [
            "",
            "10",
            "s",
            "10x",
            "1.s",
            ".5s",
            "1.2.3s",
            "-1s",
            "10 s",
            "ms10",
            "99999999999999999999s",
        ] {
            let e = parse_duration(bad).expect_err(bad);
            assert!(e.contains("invalid duration"), "{e}");
        }
    }

    #[test]
    fn formats_round_trip() {
        for d in [
            ms(10_000),
            ms(90_000),
            ms(250),
            ms(1_500),
            ms(3_600_000),
            Duration::ZERO,
        ] {
            assert_eq!(parse_duration(&format_duration(d)), Ok(d), "{d:?}");
        }
        assert_eq!(format_duration(ms(90_000)), "1m30s");
    }
}
