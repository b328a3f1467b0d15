//! Time as the product sees it: Unix seconds as `f64` (the connector's own unit) and the few
//! human formats the records use. Every rule that depends on time takes `now` as an argument,
//! so tests and the simulator can drive it; only the edges call [`now`].

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The server clock, in Unix seconds.
pub fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

fn to_system_time(ts: f64) -> Option<SystemTime> {
    if !(0.0..=253_402_300_799.0).contains(&ts) {
        return None;
    }
    Some(UNIX_EPOCH + Duration::from_secs_f64(ts))
}

/// `2026-07-29 14:00:02 UTC` — what every record header uses, so a model can compare times.
pub fn format_utc(ts: f64) -> String {
    Utc(ts).to_string()
}

/// [`format_utc`] as a `Display`, to write into a buffer without a `String` of its own (the
/// activity view's head is written on every `/retrieval` answer).
#[derive(Debug, Clone, Copy)]
pub struct Utc(pub f64);

impl Utc {
    /// What is written for a time out of range.
    pub const UNKNOWN: &str = "unknown time";

    /// The second a time is written as (`None`: it is written as [`Self::UNKNOWN`]); `Utc` of
    /// that second reads the same as `Utc` of the time.
    pub fn whole_second(ts: f64) -> Option<u64> {
        let t = to_system_time(ts)?;
        t.duration_since(UNIX_EPOCH).ok().map(|d| d.as_secs())
    }
}

impl fmt::Display for Utc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Some(t) = to_system_time(self.0) else {
            return f.write_str(Self::UNKNOWN);
        };
        // 2026-07-29T14:00:02Z → 2026-07-29 14:00:02 UTC (20 bytes up to the year 9999).
        let mut buf = [0u8; 32];
        let mut cursor = std::io::Cursor::new(&mut buf[..]);
        let written = std::io::Write::write_fmt(
            &mut cursor,
            format_args!("{}", humantime::format_rfc3339_seconds(t)),
        );
        let len = usize::try_from(cursor.position()).unwrap_or(0);
        let text = match (written, std::str::from_utf8(&buf[..len])) {
            (Ok(()), Ok(text)) => text.trim_end_matches('Z'),
            _ => return f.write_str("unknown time"),
        };
        match text.split_once('T') {
            Some((day, time)) => write!(f, "{day} {time} UTC"),
            None => write!(f, "{text} UTC"),
        }
    }
}

/// `14:00:02` (UTC) — for lists within one record whose header already names the day.
pub fn format_utc_time(ts: f64) -> String {
    if to_system_time(ts).is_none() {
        return "unknown time".to_string();
    }
    let full = format_utc(ts);
    match full.split_once(' ') {
        Some((_, rest)) => rest.trim_end_matches(" UTC").to_string(),
        None => full,
    }
}

/// RFC 3339 with milliseconds, for machine-readable metadata.
pub fn format_rfc3339(ts: f64) -> String {
    match to_system_time(ts) {
        Some(t) => humantime::format_rfc3339_millis(t).to_string(),
        None => String::new(),
    }
}

/// [`format_rfc3339`] lent to `use_text`, for a time stamped many times within one millisecond
/// (every `/retrieval` answer's `generated_at`): each thread keeps the text of the last
/// millisecond it wrote, since formatting costs more than the rest of the stamp.
pub fn with_rfc3339<R>(ts: f64, use_text: impl FnOnce(&str) -> R) -> R {
    thread_local! {
        static LAST: std::cell::RefCell<(Option<(u64, u32)>, String)> =
            const { std::cell::RefCell::new((None, String::new())) };
    }
    let Some(since_epoch) = to_system_time(ts).and_then(|t| t.duration_since(UNIX_EPOCH).ok())
    else {
        return use_text(&format_rfc3339(ts));
    };
    // The text shows whole milliseconds (cut, not rounded), so equal keys read the same.
    let key = (since_epoch.as_secs(), since_epoch.subsec_millis());
    LAST.with(|last| {
        let Ok(mut last) = last.try_borrow_mut() else {
            return use_text(&format_rfc3339(ts));
        };
        if last.0 != Some(key) {
            *last = (Some(key), format_rfc3339(ts));
        }
        use_text(&last.1)
    })
}

/// A duration for people: `45 s`, `3 min 5 s`, `2 h 10 min`, `3 days`.
pub fn format_duration(secs: f64) -> String {
    HumanDuration(secs).to_string()
}

/// [`format_duration`] as a `Display` (see [`Utc`] for why).
#[derive(Debug, Clone, Copy)]
pub struct HumanDuration(pub f64);

impl HumanDuration {
    /// The whole seconds a duration is written as: equal for two durations that read the same.
    pub fn whole_seconds(secs: f64) -> u64 {
        let secs = if secs.is_finite() { secs.max(0.0) } else { 0.0 };
        secs.round() as u64
    }
}

impl fmt::Display for HumanDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let whole = Self::whole_seconds(self.0);
        match whole {
            0..=59 => write!(f, "{whole} s"),
            60..=3599 => {
                let (m, s) = (whole / 60, whole % 60);
                if s == 0 {
                    write!(f, "{m} min")
                } else {
                    write!(f, "{m} min {s} s")
                }
            }
            3600..=172_799 => {
                let (h, m) = (whole / 3600, (whole % 3600) / 60);
                if m == 0 {
                    write!(f, "{h} h")
                } else {
                    write!(f, "{h} h {m} min")
                }
            }
            _ => write!(f, "{} days", whole / 86_400),
        }
    }
}

/// Parse durations written like `90s`, `5m`, `24h`, `250ms` (for clap).
pub fn parse_duration(raw: &str) -> Result<Duration, String> {
    humantime::parse_duration(raw.trim())
        .map_err(|e| format!("`{raw}` is not a duration like 90s, 5m or 24h: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kept_stamp_reads_as_formatting_each_time() {
        let times = [
            1_785_333_602.114,
            1_785_333_602.114_1,
            1_785_333_602.114_9,
            1_785_333_602.115,
            1_785_333_602.114,
            1_785_333_603.114,
            f64::NAN,
            -1.0,
            1_785_333_602_114.0,
            0.0,
            1_785_333_602.999_9,
        ];
        for ts in times.iter().chain(times.iter().rev()) {
            assert_eq!(
                with_rfc3339(*ts, str::to_owned),
                format_rfc3339(*ts),
                "{ts}"
            );
        }
    }

    #[test]
    fn formats_utc_times() {
        assert_eq!(format_utc(1_785_333_602.114), "2026-07-29 14:00:02 UTC");
        assert_eq!(format_utc_time(1_785_333_602.9), "14:00:02");
        assert_eq!(format_utc(f64::NAN), "unknown time");
        // A millisecond timestamp by mistake: said plainly, not cut to "time".
        assert_eq!(format_utc_time(1_785_333_602_114.0), "unknown time");
    }

    #[test]
    fn formats_durations_for_people() {
        assert_eq!(format_duration(4.4), "4 s");
        assert_eq!(format_duration(125.0), "2 min 5 s");
        assert_eq!(format_duration(7200.0), "2 h");
        assert_eq!(format_duration(3.0 * 86_400.0), "3 days");
        assert_eq!(format_duration(-5.0), "0 s");
    }

    #[test]
    fn parses_durations() {
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("24h"), Ok(Duration::from_secs(86_400)));
        assert!(parse_duration("soon").is_err());
    }
}
