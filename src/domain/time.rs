//! Instants and durations as the auditor uses them: whole milliseconds since the Unix epoch, and
//! the replication window written as `90s`, `30m`, `2h`.
//!
//! The domain never reads a clock: every "now" is passed in by the caller.

use std::fmt;

use serde::{Serialize, Serializer};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// An instant, in milliseconds since the Unix epoch. EventBridge `time` has whole seconds, but
/// `imagePushedAt` and the Lambda's clock are finer, and lag is reported below a second.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct Timestamp(i64);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("is not an RFC 3339 date-time (e.g. 2024-07-01T12:00:00Z)")]
pub struct InvalidTimestamp;

impl Timestamp {
    pub const fn from_millis(ms: i64) -> Self {
        Timestamp(ms)
    }

    pub const fn millis(self) -> i64 {
        self.0
    }

    pub fn parse_rfc3339(s: &str) -> Result<Self, InvalidTimestamp> {
        if let Some(t) = utc_seconds(s.as_bytes()) {
            return Ok(t);
        }
        // The `time` crate takes any byte between date and time; RFC 3339 allows 'T', 't', or
        // (its section 5.6 note) a space.
        if !matches!(s.as_bytes().get(10), Some(b'T' | b't' | b' ')) {
            return Err(InvalidTimestamp);
        }
        let t = OffsetDateTime::parse(s, &Rfc3339).map_err(|_| InvalidTimestamp)?;
        let ms = t.unix_timestamp_nanos() / 1_000_000;
        i64::try_from(ms)
            .map(Timestamp)
            .map_err(|_| InvalidTimestamp)
    }

    /// `self - earlier`, in milliseconds (negative when clocks disagree).
    pub fn since(self, earlier: Timestamp) -> i64 {
        self.0.saturating_sub(earlier.0)
    }

    pub fn plus(self, d: Window) -> Timestamp {
        Timestamp(self.0.saturating_add(d.millis()))
    }
}

impl fmt::Display for Timestamp {
    /// RFC 3339 in UTC, `2024-07-01T12:00:00Z`, with the milliseconds when there are any and
    /// without their trailing zeros (`.5`, `.25`, `.125`), exactly as the `time` crate writes it
    /// (a test holds the two equal); `@<ms>ms` outside the years 0 to 9999, which RFC 3339 cannot
    /// write. Written here because every verdict of `replay --format json` writes two of them,
    /// and the `time` crate's formatter, through a `String` each, was a measurable part of it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut buf = [0u8; 24];
        match rfc3339(self.0, &mut buf) {
            Some(len) => f.write_str(std::str::from_utf8(&buf[..len]).map_err(|_| fmt::Error)?),
            None => write!(f, "@{}ms", self.0),
        }
    }
}

impl Timestamp {
    /// Writes the instant as its `Display` does, without going through a formatter: `replay
    /// --format json` writes two or three per verdict.
    pub fn write_to(&self, out: &mut impl std::io::Write) -> std::io::Result<()> {
        let mut buf = [0u8; 24];
        match rfc3339(self.0, &mut buf) {
            Some(len) => out.write_all(&buf[..len]),
            None => write!(out, "@{}ms", self.0),
        }
    }
}

/// The instant of `YYYY-MM-DDTHH:MM:SSZ`, the form every EventBridge `time` has, read without
/// the `time` crate's general parser (most of `Fields::time`, 3.9% of `replay`'s reading
/// thread); `None` for any other text, which that parser then reads. Within this form it takes
/// exactly what that parser takes (a test holds the two equal): a real date, hours to 23,
/// minutes and seconds to 59. A leap second (`:60`) is left to it.
fn utc_seconds(s: &[u8]) -> Option<Timestamp> {
    let &[
        y0,
        y1,
        y2,
        y3,
        b'-',
        m0,
        m1,
        b'-',
        d0,
        d1,
        b'T',
        h0,
        h1,
        b':',
        i0,
        i1,
        b':',
        s0,
        s1,
        b'Z',
    ] = s
    else {
        return None;
    };
    let number = |digits: &[u8]| {
        digits.iter().try_fold(0i64, |n, d| {
            d.is_ascii_digit().then(|| n * 10 + i64::from(d - b'0'))
        })
    };
    let year = number(&[y0, y1, y2, y3])?;
    let month = number(&[m0, m1])?;
    let day = number(&[d0, d1])?;
    let (hour, minute, second) = (number(&[h0, h1])?, number(&[i0, i1])?, number(&[s0, s1])?);
    let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
    let days_in_month = match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return None,
    };
    if day == 0 || day > days_in_month || hour > 23 || minute > 59 || second > 59 {
        return None;
    }
    // Howard Hinnant's days_from_civil: the day number of a proleptic Gregorian date.
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + hour * 3600 + minute * 60 + second;
    Some(Timestamp(secs * 1000))
}

/// Writes `ms` as RFC 3339 in UTC into `buf`; its length, or `None` outside the years 0 to 9999.
fn rfc3339(ms: i64, buf: &mut [u8; 24]) -> Option<usize> {
    let (secs, milli) = (ms.div_euclid(1000), ms.rem_euclid(1000));
    let (days, of_day) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Howard Hinnant's civil_from_days: the proleptic Gregorian date of a day number.
    let z = days.checked_add(719_468)?;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe.checked_add(era.checked_mul(400)?)? + i64::from(month <= 2);
    if !(0..=9999).contains(&year) {
        return None;
    }
    let mut put = |at: usize, value: i64, digits: usize| {
        let mut v = value;
        for i in (at..at + digits).rev() {
            buf[i] = b'0' + (v % 10) as u8;
            v /= 10;
        }
    };
    put(0, year, 4);
    put(5, month, 2);
    put(8, day, 2);
    put(11, of_day / 3600, 2);
    put(14, of_day / 60 % 60, 2);
    put(17, of_day % 60, 2);
    let mut len = 19;
    if milli != 0 {
        put(20, milli, 3);
        len = 23;
        while buf[len - 1] == b'0' {
            len -= 1;
        }
    }
    buf[4] = b'-';
    buf[7] = b'-';
    buf[10] = b'T';
    buf[13] = b':';
    buf[16] = b':';
    buf[19] = if milli != 0 { b'.' } else { b'Z' };
    buf[len] = b'Z';
    Some(len + 1)
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// Read back as written: an RFC 3339 string (events parked for a later publish).
impl<'de> serde::Deserialize<'de> for Timestamp {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Timestamp::parse_rfc3339(&text).map_err(serde::de::Error::custom)
    }
}

/// How long a copy may take before it is late (when it arrived) or missing (when it has not).
/// Always positive.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
pub struct Window(i64);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{0:?} is not a duration: write a positive whole number followed by s, m or h (90s, 30m, 2h)"
)]
pub struct InvalidWindow(String);

impl Window {
    /// ECR's own words: "the majority of images replicate in less than 30 minutes".
    pub const DEFAULT: Window = Window(30 * 60 * 1000);

    pub fn from_secs(secs: u32) -> Option<Window> {
        (secs > 0).then_some(Window(i64::from(secs) * 1000))
    }

    pub fn parse(s: &str) -> Result<Self, InvalidWindow> {
        let err = || InvalidWindow(s.to_owned());
        let (digits, unit) = s.split_at(s.len().saturating_sub(1));
        let per_unit: i64 = match unit {
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            _ => return Err(err()),
        };
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(err());
        }
        let n: i64 = digits.parse().map_err(|_| err())?;
        // A window longer than a year is a typo, and keeps the arithmetic far from overflow.
        match n.checked_mul(per_unit) {
            Some(ms) if ms > 0 && ms <= 366 * 24 * 3_600_000 => Ok(Window(ms)),
            _ => Err(err()),
        }
    }

    pub const fn millis(self) -> i64 {
        self.0
    }

    pub const fn hours(hours: i64) -> Window {
        Window(hours * 3_600_000)
    }

    pub const fn minutes(minutes: i64) -> Window {
        Window(minutes * 60_000)
    }

    /// Twice as long (a window is at most a year, so this cannot overflow).
    pub const fn twice(self) -> Window {
        Window(self.0 * 2)
    }

    pub fn seconds(self) -> f64 {
        self.0 as f64 / 1000.0
    }
}

impl fmt::Display for Window {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secs = self.0 / 1000;
        if secs % 3600 == 0 {
            write!(f, "{}h", secs / 3600)
        } else if secs % 60 == 0 {
            write!(f, "{}m", secs / 60)
        } else {
            write!(f, "{secs}s")
        }
    }
}

/// Seconds for a report: whole numbers print without a fraction.
pub fn seconds_value(ms: i64) -> serde_json::Value {
    if ms % 1000 == 0 {
        serde_json::Value::from(ms / 1000)
    } else {
        serde_json::Value::from(ms as f64 / 1000.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// How the `time` crate writes an instant: what [`Timestamp`]'s `Display` must match.
    fn as_the_time_crate_writes_it(ms: i64) -> String {
        OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
            .ok()
            .and_then(|t| t.format(&Rfc3339).ok())
            .unwrap_or_else(|| format!("@{ms}ms"))
    }

    #[test]
    fn instants_are_written_exactly_as_the_time_crate_writes_them() {
        // Years 0 to 9999 and past both ends, every millisecond pattern, leap days and the
        // turns of centuries; then a million instants drawn at random over the whole range.
        let year = 31_556_952_000_i64;
        let mut cases: Vec<i64> = vec![
            0,
            -1,
            1,
            i64::MIN,
            i64::MAX,
            -62_167_219_200_000, // 0000-01-01T00:00:00Z
            -62_167_219_200_001, // just before
            253_402_300_799_999, // 9999-12-31T23:59:59.999Z
            253_402_300_800_000, // 10000-01-01
            951_782_400_000,     // 2000-02-29
            4_107_542_400_000,   // 2100-03-01
            1_719_835_200_500,
            1_719_835_200_250,
            1_719_835_200_125,
            1_719_835_200_007,
            1_719_835_200_010,
            1_719_835_200_100,
        ];
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        for _ in 0..1_000_000 {
            x = x
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            let span = 10_050 * year;
            let ms = (x >> 1) as i64 % span - 63_000_000_000_000;
            cases.push(ms);
        }
        for ms in cases {
            assert_eq!(
                Timestamp::from_millis(ms).to_string(),
                as_the_time_crate_writes_it(ms),
                "{ms}"
            );
        }
    }

    #[test]
    fn rfc3339_times_parse_to_milliseconds_and_print_back() {
        let t = Timestamp::parse_rfc3339("2024-07-01T12:00:00Z").unwrap();
        assert_eq!(t.millis(), 1_719_835_200_000);
        assert_eq!(t.to_string(), "2024-07-01T12:00:00Z");
        let offset = Timestamp::parse_rfc3339("2024-07-01T14:00:00.250+02:00").unwrap();
        assert_eq!(offset.since(t), 250);
        assert!(Timestamp::parse_rfc3339("2024-07-01 12:00:00").is_err());
        assert!(Timestamp::parse_rfc3339("yesterday").is_err());
        assert!(
            Timestamp::parse_rfc3339("2024-07-01 12:00:00Z").is_ok(),
            "RFC 3339 allows a space"
        );
        assert!(Timestamp::parse_rfc3339("2024-07-01x12:00:00Z").is_err());
    }

    /// The plain UTC form's own reader against the `time` crate's: every month and day (and
    /// each just past its range) of every eleventh year to 9999 and of the century years, and
    /// the times at the edges.
    #[test]
    fn utc_seconds_reads_what_the_time_crate_reads() {
        let general = |s: &str| {
            OffsetDateTime::parse(s, &Rfc3339)
                .ok()
                .map(|t| Timestamp((t.unix_timestamp_nanos() / 1_000_000) as i64))
        };
        let mut checked = 0;
        for year in (0..=9999).step_by(11).chain([1900, 2000, 2024, 2100, 2400]) {
            for month in 0..=13 {
                for day in 0..=32 {
                    let s = format!("{year:04}-{month:02}-{day:02}T23:59:59Z");
                    assert_eq!(utc_seconds(s.as_bytes()), general(&s), "{s}");
                    checked += 1;
                }
            }
        }
        for time in [
            "00:00:00", "24:00:00", "23:60:00", "23:59:60", "12:34:56", "09:05:07",
        ] {
            for date in [
                "1970-01-01",
                "2024-02-29",
                "2023-02-29",
                "1969-12-31",
                "0000-01-01",
            ] {
                let s = format!("{date}T{time}Z");
                let fast = utc_seconds(s.as_bytes());
                if fast.is_some() {
                    assert_eq!(fast, general(&s), "{s}");
                }
                assert_eq!(Timestamp::parse_rfc3339(&s).ok(), general(&s), "{s}");
                checked += 1;
            }
        }
        for other in [
            "2024-07-01t12:00:00Z",
            "2024-07-01T12:00:00z",
            "2024-07-01T12:00:00.5Z",
        ] {
            assert_eq!(utc_seconds(other.as_bytes()), None, "{other}");
            assert_eq!(
                Timestamp::parse_rfc3339(other).ok(),
                general(other),
                "{other}"
            );
        }
        assert!(checked > 400_000);
    }

    #[test]
    fn windows_take_seconds_minutes_and_hours() {
        assert_eq!(Window::parse("90s").unwrap().millis(), 90_000);
        assert_eq!(Window::parse("30m").unwrap(), Window::DEFAULT);
        assert_eq!(Window::parse("2h").unwrap().millis(), 7_200_000);
        assert_eq!(Window::parse("5s").unwrap().to_string(), "5s");
        assert_eq!(Window::parse("120m").unwrap().to_string(), "2h");
    }

    #[test]
    fn windows_refuse_zero_signs_fractions_and_other_units() {
        for bad in [
            "",
            "0s",
            "-5m",
            "+5m",
            "1.5h",
            "30",
            "m",
            "30 m",
            "30M",
            "3d",
            "99999999999999999999h",
            "9000h",
        ] {
            assert!(Window::parse(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn whole_seconds_print_as_integers() {
        assert_eq!(seconds_value(42_000), serde_json::json!(42));
        assert_eq!(seconds_value(1_500), serde_json::json!(1.5));
    }
}
