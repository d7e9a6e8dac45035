//! `[certificate.reload] window = "02:00-05:00"`: the local hours in which a disruptive reload
//! (a restart) may happen. A window may cross midnight ("23:00-01:30").

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

const DAY: u32 = 24 * 60;

/// From `start` (included) to `end` (excluded), in minutes after local midnight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    start: u32,
    end: u32,
}

impl Window {
    pub fn parse(text: &str) -> Result<Self, String> {
        let bad = |why: &str| format!("reload.window \"{text}\" {why}; write local times as \"HH:MM-HH:MM\", e.g. \"02:00-05:00\"");
        let (a, b) = text.split_once('-').ok_or_else(|| bad("has no `-`"))?;
        let minute = |t: &str| -> Result<u32, String> {
            let (h, m) = t.trim().split_once(':').ok_or_else(|| bad("has a time without `:`"))?;
            let (h, m): (u32, u32) = (h.parse().map_err(|_| bad("has a bad hour"))?, m.parse().map_err(|_| bad("has bad minutes"))?);
            if h > 23 || m > 59 {
                return Err(bad("has a time outside 00:00–23:59"));
            }
            Ok(h * 60 + m)
        };
        let (start, end) = (minute(a)?, minute(b)?);
        if start == end {
            return Err(bad("is empty (it starts when it ends)"));
        }
        Ok(Window { start, end })
    }

    /// Is `minute` (after local midnight) inside?
    pub fn contains_minute(&self, minute: u32) -> bool {
        if self.start < self.end { (self.start..self.end).contains(&minute) } else { minute >= self.start || minute < self.end }
    }

    pub fn contains(&self, t: SystemTime) -> bool {
        self.contains_minute(local_minute(t).0)
    }

    /// `t` when it is inside, else the next start of the window after `t`.
    pub fn next_open(&self, t: SystemTime) -> SystemTime {
        let (minute, second) = local_minute(t);
        if self.contains_minute(minute) {
            return t;
        }
        let ahead = (self.start + DAY - minute) % DAY;
        t + Duration::from_secs(u64::from(ahead) * 60) - Duration::from_secs(u64::from(second))
    }
}

/// The local minute of the day at `t`, and the second within that minute (the C library's
/// idea of local time: TZ, /etc/localtime).
pub(crate) fn local_minute(t: SystemTime) -> (u32, u32) {
    let secs = t.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0) as libc::time_t;
    // SAFETY: localtime_r only writes the `tm` it is given.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    let ok = unsafe { !libc::localtime_r(&secs, &mut tm).is_null() };
    if !ok {
        let s = secs.rem_euclid(86_400) as u32;
        return (s / 60, s % 60);
    }
    (tm.tm_hour as u32 * 60 + tm.tm_min as u32, tm.tm_sec.clamp(0, 59) as u32)
}

impl fmt::Display for Window {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:02}:{:02}-{:02}:{:02}", self.start / 60, self.start % 60, self.end / 60, self.end % 60)
    }
}

impl<'de> Deserialize<'de> for Window {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Window::parse(&String::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

impl Serialize for Window {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_contains_including_across_midnight() {
        let w = Window::parse("02:00-05:00").unwrap();
        assert_eq!(w.to_string(), "02:00-05:00");
        assert!(w.contains_minute(120) && w.contains_minute(299));
        assert!(!w.contains_minute(300) && !w.contains_minute(119) && !w.contains_minute(0));
        let w = Window::parse("23:30-1:15").unwrap();
        assert_eq!(w.to_string(), "23:30-01:15");
        assert!(w.contains_minute(23 * 60 + 30) && w.contains_minute(0) && w.contains_minute(74));
        assert!(!w.contains_minute(75) && !w.contains_minute(12 * 60));
        for (bad, why) in [
            ("02:00", "has no `-`"),
            ("2-5", "without `:`"),
            ("24:00-05:00", "outside"),
            ("03:00-03:00", "empty"),
            ("aa:00-01:00", "bad hour"),
        ] {
            let e = Window::parse(bad).unwrap_err();
            assert!(e.contains(why) && e.contains("\"HH:MM-HH:MM\""), "{bad}: {e}");
        }
    }

    #[test]
    fn next_open_is_now_inside_and_the_next_start_outside() {
        let now = SystemTime::now();
        let (minute, _) = local_minute(now);
        let at = |m: u32| format!("{:02}:{:02}", (m % DAY) / 60, m % 60);
        let inside = Window::parse(&format!("{}-{}", at(minute + DAY - 1), at(minute + 10))).unwrap();
        assert!(inside.contains(now));
        assert_eq!(inside.next_open(now), now);
        let later = Window::parse(&format!("{}-{}", at(minute + 120), at(minute + 180))).unwrap();
        assert!(!later.contains(now));
        let wait = later.next_open(now).duration_since(now).unwrap();
        assert!(wait > Duration::from_secs(119 * 60) && wait <= Duration::from_secs(120 * 60), "{wait:?}");
        assert!(later.contains(later.next_open(now)));
    }
}
