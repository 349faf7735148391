//! UTC civil dates as days since the Unix epoch (1970-01-01 is day 0), the unit the usage
//! records and their API count in: conversions both ways (Howard Hinnant's `days_from_civil`
//! and `civil_from_days`), today, `YYYY-MM-DD` and `YYYY-MM` parsing with validation, calendar
//! months, and printing days and millisecond timestamps. Pure, no dependencies, no time zones.

/// Days since 1970-01-01 of the proleptic Gregorian date `y-m-d` (`m` 1-12, `d` 1-31; not
/// validated: see [`parse_date`]).
pub fn days_from_civil(y: i32, m: u32, d: u32) -> i64 {
    let y = i64::from(y) - i64::from(m <= 2);
    let era = (if y >= 0 { y } else { y - 399 }) / 400;
    let yoe = y - era * 400; // [0, 399]
    let mp = (i64::from(m) + 9) % 12; // March is 0
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1; // [0, 365]
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy; // [0, 146096]
    era * 146_097 + doe - 719_468
}

/// The date `(year, month, day)` of `days` since 1970-01-01.
pub fn civil_from_days(days: i64) -> (i32, u32, u32) {
    let z = days + 719_468;
    let era = (if z >= 0 { z } else { z - 146_096 }) / 146_097;
    let doe = z - era * 146_097; // [0, 146096]
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365; // [0, 399]
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // [0, 365]
    let mp = (5 * doy + 2) / 153; // [0, 11], March is 0
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y as i32, m as u32, d as u32)
}

/// Today (UTC) in days since the epoch.
pub fn today() -> u32 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| (d.as_secs() / 86_400) as u32)
}

fn leap(y: i32) -> bool {
    (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
}

/// The number of days of month `m` (1-12) of year `y`.
pub fn days_in_month(y: i32, m: u32) -> u32 {
    match m {
        2 if leap(y) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// `n` ASCII digits exactly, as a number.
fn digits(s: &str, n: usize) -> Option<u32> {
    (s.len() == n && s.bytes().all(|b| b.is_ascii_digit()))
        .then(|| s.parse::<u32>().ok())
        .flatten()
}

/// Year and month of `YYYY-MM`, the month checked (1-12) and the year at least 1970.
fn year_month(y: &str, m: &str) -> Option<(i32, u32)> {
    let (y, m) = (digits(y, 4)?, digits(m, 2)?);
    (y >= 1970 && (1..=12).contains(&m)).then_some((y as i32, m))
}

/// Days since the epoch of a `YYYY-MM-DD` date (1970-01-01 or later).
pub fn parse_date(s: &str) -> Result<u32, String> {
    let bad = || format!("{s:?} is not a date: expected YYYY-MM-DD (like 2026-12-01)");
    let mut parts = s.split('-');
    let (Some(y), Some(m), Some(d), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(bad());
    };
    let (y, m) = year_month(y, m).ok_or_else(bad)?;
    let d = digits(d, 2).ok_or_else(bad)?;
    if d == 0 || d > days_in_month(y, m) {
        return Err(format!(
            "{s:?} is not a date: {y:04}-{m:02} has {} days (expected YYYY-MM-DD)",
            days_in_month(y, m)
        ));
    }
    Ok(days_from_civil(y, m, d) as u32)
}

/// The first and last day (inclusive, days since the epoch) of a `YYYY-MM` month.
pub fn parse_month(s: &str) -> Result<(u32, u32), String> {
    let bad = || format!("{s:?} is not a month: expected YYYY-MM (like 2026-12)");
    let (y, m) = s.split_once('-').ok_or_else(bad)?;
    let (y, m) = year_month(y, m).ok_or_else(bad)?;
    let first = days_from_civil(y, m, 1) as u32;
    Ok((first, first + days_in_month(y, m) - 1))
}

/// The first and last day of the month that contains `day`.
pub fn month_of(day: u32) -> (u32, u32) {
    let (y, m, d) = civil_from_days(i64::from(day));
    let first = day - (d - 1);
    (first, first + days_in_month(y, m) - 1)
}

/// `2026-12-01`.
pub fn format_day(day: u32) -> String {
    let (y, m, d) = civil_from_days(i64::from(day));
    format!("{y:04}-{m:02}-{d:02}")
}

/// `2026-12`: the month that contains `day`.
pub fn format_month(day: u32) -> String {
    let (y, m, _) = civil_from_days(i64::from(day));
    format!("{y:04}-{m:02}")
}

/// Milliseconds since the epoch as UTC time to the second: `2026-12-01T14:03:00Z`.
pub fn format_ms(ms: i64) -> String {
    let s = ms.div_euclid(1000);
    let (days, secs) = (s.div_euclid(86_400), s.rem_euclid(86_400));
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_days_convert_both_ways() {
        for (y, m, d, days) in [
            (1970, 1, 1, 0),
            (1969, 12, 31, -1),
            (2000, 3, 1, 11_017),
            (2024, 2, 29, 19_782),
            (2026, 12, 1, 20_788),
        ] {
            assert_eq!(days_from_civil(y, m, d), days, "{y}-{m}-{d}");
            assert_eq!(civil_from_days(days), (y, m, d), "{days}");
        }
        // Every day of four centuries round-trips, one after the other.
        let mut prev = days_from_civil(1900, 1, 1) - 1;
        for day in prev + 1..days_from_civil(2300, 1, 1) {
            let (y, m, d) = civil_from_days(day);
            assert_eq!(days_from_civil(y, m, d), day);
            assert_eq!(day, prev + 1);
            prev = day;
        }
    }

    #[test]
    fn dates_and_months_parse_and_refuse() {
        assert_eq!(parse_date("1970-01-01"), Ok(0));
        assert_eq!(parse_date("2026-12-01"), Ok(20_788));
        assert_eq!(parse_date("2024-02-29"), Ok(19_782));
        assert_eq!(format_day(20_788), "2026-12-01");
        assert_eq!(format_month(20_788), "2026-12");
        for bad in [
            "2023-02-29",
            "2026-13-01",
            "2026-12-32",
            "2026-04-31",
            "2026-00-10",
            "26-12-01",
            "2026-1-01",
            "2026-12-01-",
            "1969-12-31",
            "+026-12-01",
            "",
        ] {
            let e = parse_date(bad).unwrap_err();
            assert!(
                e.contains(&format!("{bad:?}")) && e.contains("YYYY-MM-DD"),
                "{e}"
            );
        }
        assert_eq!(parse_month("2026-12"), Ok((20_788, 20_818)));
        assert_eq!(parse_month("2024-02").map(|(a, b)| b - a + 1), Ok(29));
        assert_eq!(parse_month("2023-02").map(|(a, b)| b - a + 1), Ok(28));
        for bad in ["2026-13", "2026-00", "26-12", "2026-12-01", "2026", ""] {
            let e = parse_month(bad).unwrap_err();
            assert!(e.contains("YYYY-MM"), "{e}");
        }
        assert_eq!(month_of(20_788), (20_788, 20_818));
        assert_eq!(month_of(20_818), (20_788, 20_818));
        assert_eq!(month_of(19_782), parse_month("2024-02").unwrap());
        assert_eq!(month_of(0), (0, 30));
    }

    #[test]
    fn times_print_in_utc() {
        assert_eq!(format_ms(0), "1970-01-01T00:00:00Z");
        assert_eq!(format_ms(1_796_133_780_000), "2026-12-01T14:03:00Z");
        assert_eq!(format_ms(1_796_133_780_999), "2026-12-01T14:03:00Z");
        assert!(today() > 20_000);
    }
}
