//! ISO 8601 formatting of Unix milliseconds for `EXT-X-PROGRAM-DATE-TIME`, without a date
//! library.

use std::fmt::Write;

/// Milliseconds in a day.
const MS_PER_DAY: i64 = 86_400_000;

/// Converts days since 1970-01-01 to a proleptic Gregorian (year, month, day)
/// (Howard Hinnant's `civil_from_days`). Valid for any day count an `i64` of
/// milliseconds can produce.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097); // [0, 146096]
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365; // [0, 399]
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // [0, 365]
    let mp = (5 * doy + 2) / 153; // [0, 11]
    let d = doy - (153 * mp + 2) / 5 + 1; // [1, 31]
    let m = if mp < 10 { mp + 3 } else { mp - 9 }; // [1, 12]
    let year = if m <= 2 { y + 1 } else { y };
    // Both fit trivially: d in [1, 31], m in [1, 12].
    (year, m as u32, d as u32)
}

/// Writes `unix_ms` as `YYYY-MM-DDTHH:MM:SS.mmmZ`.
pub(crate) fn write_program_date_time(out: &mut String, unix_ms: i64) {
    let days = unix_ms.div_euclid(MS_PER_DAY);
    let ms_of_day = unix_ms.rem_euclid(MS_PER_DAY);
    let (year, month, day) = civil_from_days(days);
    let hours = ms_of_day / 3_600_000;
    let minutes = ms_of_day / 60_000 % 60;
    let seconds = ms_of_day / 1000 % 60;
    let millis = ms_of_day % 1000;
    // Writing to a String cannot fail.
    let _ = write!(
        out,
        "{year:04}-{month:02}-{day:02}T{hours:02}:{minutes:02}:{seconds:02}.{millis:03}Z"
    );
}

/// Formats Unix milliseconds as an ISO 8601 UTC date-time with milliseconds, as
/// `EXT-X-PROGRAM-DATE-TIME` carries it, e.g. `2024-02-29T23:59:59.999Z`.
pub fn format_program_date_time(unix_ms: i64) -> String {
    let mut out = String::with_capacity(24);
    write_program_date_time(&mut out, unix_ms);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_dates() {
        assert_eq!(format_program_date_time(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(format_program_date_time(-1), "1969-12-31T23:59:59.999Z");
        assert_eq!(
            format_program_date_time(1_709_251_199_999),
            "2024-02-29T23:59:59.999Z"
        );
        assert_eq!(
            format_program_date_time(1_709_251_200_000),
            "2024-03-01T00:00:00.000Z"
        );
        assert_eq!(
            format_program_date_time(951_782_400_000),
            "2000-02-29T00:00:00.000Z"
        );
        assert_eq!(
            format_program_date_time(4_102_444_800_123),
            "2100-01-01T00:00:00.123Z"
        );
        // Extremes must not panic.
        let _ = format_program_date_time(i64::MAX);
        let _ = format_program_date_time(i64::MIN);
    }

    /// Every day from 1900 to 2200 follows the previous one, checked against a naive
    /// day-by-day calendar walk.
    #[test]
    fn walks_the_calendar() {
        let is_leap = |y: i64| (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
        let (mut y, mut m, mut d) = (1900i64, 1u32, 1u32);
        let start = -25_567i64; // 1900-01-01
        for days in start..start + 300 * 366 {
            assert_eq!(civil_from_days(days), (y, m, d), "day {days}");
            let month_len = match m {
                2 if is_leap(y) => 29,
                2 => 28,
                4 | 6 | 9 | 11 => 30,
                _ => 31,
            };
            d += 1;
            if d > month_len {
                d = 1;
                m += 1;
                if m > 12 {
                    m = 1;
                    y += 1;
                }
            }
        }
    }
}
