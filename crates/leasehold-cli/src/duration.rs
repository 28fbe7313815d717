//! Durations on the command line and in the config file: `10s`, `500ms`,
//! `2m`, `1h`, `1m30s`, `1.5s`.

use std::time::Duration;

/// Parses a duration: one or more `NUMBER UNIT` pairs, units `ms`, `s`,
/// `m`, `h`, `d` (e.g. `10s`, `500ms`, `1m30s`, `1.5s`). A number may have
/// a decimal fraction as long as the total is whole milliseconds. A bare
/// `0` is zero.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let usage = || format!("invalid duration {text:?}: expected e.g. 10s, 500ms, 2m, 1m30s");
    let s = text.trim();
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    if s.is_empty() {
        return Err(usage());
    }
    let mut total_ms: u128 = 0;
    let mut rest = s;
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let number = &rest[..number_len];
        rest = &rest[number_len..];
        let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
        if whole.is_empty() || (number.contains('.') && fraction.is_empty()) {
            return Err(usage());
        }
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        let ms_per_unit: u128 = match unit {
            "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            _ => return Err(usage()),
        };
        // NUMBER × unit in whole milliseconds: `1.5s` is 1500 ms; a value
        // finer than a millisecond (`1.5ms`, `0.0001s`) is refused.
        let digits = format!("{whole}{fraction}");
        if digits.len() > 30 {
            return Err(usage());
        }
        let scaled: u128 = digits.parse().map_err(|_| usage())?;
        let divisor = 10u128.pow(u32::try_from(fraction.len()).map_err(|_| usage())?);
        let product = scaled.checked_mul(ms_per_unit).ok_or_else(usage)?;
        if product % divisor != 0 {
            return Err(format!(
                "invalid duration {text:?}: finer than a millisecond"
            ));
        }
        total_ms = total_ms.checked_add(product / divisor).ok_or_else(usage)?;
    }
    let total = u64::try_from(total_ms).map_err(|_| usage())?;
    Ok(Duration::from_millis(total))
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
    fn parses_fractions_of_whole_milliseconds() {
        assert_eq!(parse_duration("1.5s"), Ok(ms(1_500)));
        assert_eq!(parse_duration("0.25s"), Ok(ms(250)));
        assert_eq!(parse_duration("1.5m"), Ok(ms(90_000)));
        assert_eq!(parse_duration("0.001s"), Ok(ms(1)));
        assert_eq!(parse_duration("1m0.5s"), Ok(ms(60_500)));
        for bad in ["1.5ms", "0.0001s", "1.s", ".5s", "1..5s", "1.5.5s"] {
            assert!(parse_duration(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn rejects_garbage() {
        for bad in [
            "",
            "10",
            "s",
            "10x",
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
