//! Event time: RFC 3339 timestamps held as nanoseconds since the Unix epoch, and
//! durations written the way operators write them in config (`500ms`, `60s`, `10m`).
//!
//! Written here rather than pulled from a date crate because the wire format needs
//! exactly one thing (RFC 3339 in, RFC 3339 UTC out) and the sink must stay small.

use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

const NANOS_PER_SEC: i64 = 1_000_000_000;
const SECS_PER_DAY: i64 = 86_400;

/// A point in time, UTC, with nanosecond precision (years 1677 to 2262, the range of
/// signed 64-bit nanoseconds; the same range Arrow and Parquet timestamps use).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(i64);

/// Why a string is not an RFC 3339 timestamp.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not an RFC 3339 timestamp ({0}); expected e.g. 2025-01-31T12:00:00Z")]
pub struct TimestampError(&'static str);

impl TimestampError {
    /// What is wrong, in a few words.
    pub fn reason(&self) -> &'static str {
        self.0
    }
}

impl Timestamp {
    /// The Unix epoch.
    pub const EPOCH: Timestamp = Timestamp(0);

    /// From nanoseconds since the Unix epoch.
    pub const fn from_unix_nanos(nanos: i64) -> Self {
        Timestamp(nanos)
    }

    /// Nanoseconds since the Unix epoch.
    pub const fn unix_nanos(self) -> i64 {
        self.0
    }

    /// Milliseconds since the Unix epoch (floor), as SIEM formats want them.
    pub const fn unix_millis(self) -> i64 {
        self.0.div_euclid(1_000_000)
    }

    /// The wall clock. Only edges (sinks, the engine runtime) call this; detectors
    /// run on event time.
    pub fn now() -> Self {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
            .unwrap_or(0);
        Timestamp(nanos)
    }

    /// This time plus a duration, saturating.
    pub fn saturating_add(self, d: Duration) -> Self {
        Timestamp(self.0.saturating_add(d.as_nanos()))
    }

    /// This time minus a duration, saturating.
    pub fn saturating_sub(self, d: Duration) -> Self {
        Timestamp(self.0.saturating_sub(d.as_nanos()))
    }

    /// The start of the window of length `window` that holds this time.
    pub fn floor_to(self, window: Duration) -> Self {
        let w = window.as_nanos().max(1);
        Timestamp(self.0.div_euclid(w) * w)
    }

    /// Parses an RFC 3339 date-time (`T`, `t` or a space between date and time;
    /// `Z` or a numeric offset) and converts it to UTC.
    pub fn parse(s: &str) -> Result<Self, TimestampError> {
        let b = s.as_bytes();
        if b.len() < 20 {
            return Err(TimestampError("too short"));
        }
        let year = digits(b, 0, 4)?;
        expect(b, 4, b'-')?;
        let month = digits(b, 5, 2)?;
        expect(b, 7, b'-')?;
        let day = digits(b, 8, 2)?;
        if !matches!(b[10], b'T' | b't' | b' ') {
            return Err(TimestampError("date and time must be separated by 'T'"));
        }
        let hour = digits(b, 11, 2)?;
        expect(b, 13, b':')?;
        let minute = digits(b, 14, 2)?;
        expect(b, 16, b':')?;
        let mut second = digits(b, 17, 2)?;
        if year == 0 {
            return Err(TimestampError("year 0000 is out of range"));
        }
        if !(1..=12).contains(&month) {
            return Err(TimestampError("month out of range"));
        }
        if day == 0 || day > days_in_month(year, month) {
            return Err(TimestampError("day out of range for the month"));
        }
        if hour > 23 || minute > 59 || second > 60 {
            return Err(TimestampError("time of day out of range"));
        }
        let mut pos = 19;
        let mut nanos: i64 = 0;
        if b.get(pos) == Some(&b'.') {
            pos += 1;
            let start = pos;
            while pos < b.len() && b[pos].is_ascii_digit() {
                if pos - start < 9 {
                    nanos = nanos * 10 + i64::from(b[pos] - b'0');
                }
                pos += 1;
            }
            let n = pos - start;
            if n == 0 {
                return Err(TimestampError("empty fraction of a second"));
            }
            for _ in n..9 {
                nanos *= 10;
            }
        }
        // A leap second is kept inside the minute it belongs to.
        if second == 60 {
            second = 59;
            nanos = NANOS_PER_SEC - 1;
        }
        let offset_secs = match b.get(pos) {
            Some(b'Z' | b'z') if pos + 1 == b.len() => 0,
            Some(&sign @ (b'+' | b'-')) if pos + 6 == b.len() => {
                let oh = digits(b, pos + 1, 2)?;
                expect(b, pos + 3, b':')?;
                let om = digits(b, pos + 4, 2)?;
                if oh > 23 || om > 59 {
                    return Err(TimestampError("offset out of range"));
                }
                let off = i64::from(oh * 3600 + om * 60);
                if sign == b'+' { off } else { -off }
            }
            _ => return Err(TimestampError("missing or malformed offset (Z or +HH:MM)")),
        };
        let days = days_from_civil(i64::from(year), month, day);
        let secs =
            days * SECS_PER_DAY + i64::from(hour * 3600 + minute * 60 + second) - offset_secs;
        // In i128: the extremes of the range have seconds whose product with 1e9 is
        // outside i64 until the fraction is added.
        let total = i128::from(secs) * i128::from(NANOS_PER_SEC) + i128::from(nanos);
        i64::try_from(total)
            .map(Timestamp)
            .map_err(|_| TimestampError("outside the years 1677 to 2262"))
    }
}

impl fmt::Display for Timestamp {
    /// RFC 3339 in UTC with `Z`; the fraction is printed only as far as it is non-zero.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secs = self.0.div_euclid(NANOS_PER_SEC);
        let nanos = self.0.rem_euclid(NANOS_PER_SEC);
        let days = secs.div_euclid(SECS_PER_DAY);
        let sod = secs.rem_euclid(SECS_PER_DAY);
        let (y, m, d) = civil_from_days(days);
        write!(
            f,
            "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}",
            sod / 3600,
            (sod / 60) % 60,
            sod % 60
        )?;
        if nanos != 0 {
            let mut frac = format!("{nanos:09}");
            while frac.ends_with('0') {
                frac.pop();
            }
            write!(f, ".{frac}")?;
        }
        f.write_str("Z")
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Timestamp::parse(&s).map_err(serde::de::Error::custom)
    }
}

fn expect(b: &[u8], pos: usize, c: u8) -> Result<(), TimestampError> {
    if b.get(pos) == Some(&c) {
        Ok(())
    } else {
        Err(TimestampError("malformed date or time"))
    }
}

fn digits(b: &[u8], pos: usize, n: usize) -> Result<u32, TimestampError> {
    let mut v = 0u32;
    for i in pos..pos + n {
        match b.get(i) {
            Some(c) if c.is_ascii_digit() => v = v * 10 + u32::from(c - b'0'),
            _ => return Err(TimestampError("expected a digit")),
        }
    }
    Ok(v)
}

fn is_leap(y: u32) -> bool {
    (y.is_multiple_of(4) && !y.is_multiple_of(100)) || y.is_multiple_of(400)
}

fn days_in_month(y: u32, m: u32) -> u32 {
    match m {
        2 if is_leap(y) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

// Howard Hinnant's days_from_civil / civil_from_days (proleptic Gregorian).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// A non-negative span of time, written in config as a number and a unit:
/// `ns`, `us`, `ms`, `s`, `m`, `h` or `d` (for example `250ms`, `90s`, `1h`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Duration(i64);

/// Why a string is not a duration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid duration {input:?}: {reason}; expected a number and a unit, e.g. 500ms, 60s, 10m, 1h"
)]
pub struct DurationError {
    input: String,
    reason: &'static str,
}

impl Duration {
    /// Zero length.
    pub const ZERO: Duration = Duration(0);

    /// From nanoseconds (negative values clamp to zero).
    pub const fn from_nanos(n: i64) -> Self {
        Duration(if n < 0 { 0 } else { n })
    }

    /// From whole seconds.
    pub const fn from_secs(s: i64) -> Self {
        Duration::from_nanos(s.saturating_mul(NANOS_PER_SEC))
    }

    /// From whole milliseconds.
    pub const fn from_millis(ms: i64) -> Self {
        Duration::from_nanos(ms.saturating_mul(1_000_000))
    }

    /// Length in nanoseconds.
    pub const fn as_nanos(self) -> i64 {
        self.0
    }

    /// As a wall-clock [`std::time::Duration`] (for timers and deadlines). Exact: a
    /// `Duration` is never negative.
    pub const fn to_std(self) -> std::time::Duration {
        std::time::Duration::from_nanos(self.0.unsigned_abs())
    }

    /// From a wall-clock [`std::time::Duration`], saturating at about 292 years.
    pub fn from_std(d: std::time::Duration) -> Self {
        Duration::from_nanos(i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
    }

    /// Parses `<integer><unit>`.
    pub fn parse(s: &str) -> Result<Self, DurationError> {
        let err = |reason| DurationError {
            input: s.to_string(),
            reason,
        };
        let t = s.trim();
        let split = t
            .find(|c: char| !c.is_ascii_digit())
            .ok_or_else(|| err("missing unit"))?;
        let (num, unit) = t.split_at(split);
        if num.is_empty() {
            return Err(err("missing number"));
        }
        let n: i64 = num.parse().map_err(|_| err("number too large"))?;
        let scale = match unit {
            "ns" => 1,
            "us" | "µs" => 1_000,
            "ms" => 1_000_000,
            "s" => NANOS_PER_SEC,
            "m" => 60 * NANOS_PER_SEC,
            "h" => 3_600 * NANOS_PER_SEC,
            "d" => SECS_PER_DAY * NANOS_PER_SEC,
            _ => return Err(err("unknown unit")),
        };
        n.checked_mul(scale)
            .map(Duration)
            .ok_or_else(|| err("too long"))
    }
}

impl fmt::Display for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const UNITS: [(i64, &str); 6] = [
            (SECS_PER_DAY * NANOS_PER_SEC, "d"),
            (3_600 * NANOS_PER_SEC, "h"),
            (60 * NANOS_PER_SEC, "m"),
            (NANOS_PER_SEC, "s"),
            (1_000_000, "ms"),
            (1_000, "us"),
        ];
        for (scale, unit) in UNITS {
            if self.0 != 0 && self.0 % scale == 0 {
                return write!(f, "{}{unit}", self.0 / scale);
            }
        }
        write!(f, "{}ns", self.0)
    }
}

impl Serialize for Duration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Duration::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_utc_and_offsets() {
        let t = Timestamp::parse("2025-03-01T12:30:45.25Z").unwrap();
        assert_eq!(t.to_string(), "2025-03-01T12:30:45.25Z");
        let o = Timestamp::parse("2025-03-01T14:30:45.25+02:00").unwrap();
        assert_eq!(t, o);
        assert_eq!(
            Timestamp::parse("1970-01-01T00:00:00Z").unwrap(),
            Timestamp::EPOCH
        );
        assert_eq!(
            Timestamp::parse("2024-02-29t00:00:00z")
                .unwrap()
                .to_string(),
            "2024-02-29T00:00:00Z"
        );
    }

    #[test]
    fn the_extremes_of_the_range_round_trip() {
        for t in [
            Timestamp::from_unix_nanos(i64::MIN),
            Timestamp::from_unix_nanos(i64::MAX),
        ] {
            assert_eq!(Timestamp::parse(&t.to_string()).unwrap(), t);
        }
    }

    #[test]
    fn rejects_invalid_times() {
        for bad in [
            "2025-02-30T00:00:00Z",
            "2023-02-29T00:00:00Z",
            "2025-13-01T00:00:00Z",
            "2025-01-01T24:00:00Z",
            "2025-01-01T00:00:00",
            "2025-01-01T00:00:00.Z",
            "2025-01-01",
            "yesterday at noon, UTC",
            "2025-01-01T00:00:00+0200",
            "0000-01-01T00:00:00Z",
            "9999-01-01T00:00:00Z",
        ] {
            assert!(Timestamp::parse(bad).is_err(), "{bad} was accepted");
        }
    }

    #[test]
    fn durations_round_trip_through_text() {
        for (s, nanos) in [
            ("500ms", 500_000_000),
            ("60s", 60_000_000_000),
            ("10m", 600_000_000_000),
            ("2h", 7_200_000_000_000),
            ("1d", 86_400_000_000_000),
        ] {
            let d = Duration::parse(s).unwrap();
            assert_eq!(d.as_nanos(), nanos);
            assert_eq!(Duration::parse(&d.to_string()).unwrap(), d);
        }
        assert_eq!(Duration::parse("60s").unwrap().to_string(), "1m");
        for bad in [
            "",
            "10",
            "m",
            "-5s",
            "1.5s",
            "10 parsecs",
            "99999999999999999999d",
        ] {
            assert!(Duration::parse(bad).is_err(), "{bad} was accepted");
        }
    }

    proptest! {
        #[test]
        fn display_then_parse_is_identity(n in any::<i64>()) {
            let t = Timestamp::from_unix_nanos(n);
            prop_assert_eq!(Timestamp::parse(&t.to_string()).unwrap(), t);
        }

        #[test]
        fn parse_never_panics(s in "\\PC{0,40}") {
            let _ = Timestamp::parse(&s);
            let _ = Duration::parse(&s);
        }
    }
}
