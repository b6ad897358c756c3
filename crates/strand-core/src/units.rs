//! Sizes and durations as people write them in configuration: `16MiB`, `30s`.
//!
//! ```
//! use strand_core::units::{ByteSize, HumanDuration};
//!
//! assert_eq!("16MiB".parse::<ByteSize>()?.0, 16 << 20);
//! assert_eq!("5s".parse::<HumanDuration>()?.0, std::time::Duration::from_secs(5));
//! # Ok::<(), String>(())
//! ```

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A size in bytes, written as a number or with a unit: `16MiB`, `512KB`, `2GiB`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteSize(pub u64);

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const UNITS: [(&str, u64); 4] =
            [("TiB", 1 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)];
        for (unit, size) in UNITS {
            if self.0 >= size && self.0.is_multiple_of(size) {
                return write!(f, "{}{unit}", self.0 / size);
            }
        }
        write!(f, "{}B", self.0)
    }
}

impl std::str::FromStr for ByteSize {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let (n, unit) = number_and_unit(s).ok_or_else(|| {
            format!("invalid size `{s}`: expected a number with an optional unit like 16MiB")
        })?;
        let mult: u64 = match unit {
            "" | "B" => 1,
            "KB" | "kB" => 1000,
            "KiB" => 1 << 10,
            "MB" => 1000 * 1000,
            "MiB" => 1 << 20,
            "GB" => 1000 * 1000 * 1000,
            "GiB" => 1 << 30,
            "TB" => 1000u64.pow(4),
            "TiB" => 1 << 40,
            other => {
                return Err(format!(
                    "invalid size unit `{other}` in `{s}`: use B, KB, KiB, MB, MiB, GB, GiB, TB or TiB"
                ));
            }
        };
        n.checked_mul(mult).map(ByteSize).ok_or_else(|| format!("size `{s}` is too large"))
    }
}

/// Splits `"16 MiB"` into `(16, "MiB")`; spaces around and between are allowed.
fn number_and_unit(s: &str) -> Option<(u64, &str)> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    Some((num.parse().ok()?, unit.trim()))
}

/// A duration written with a unit: `100ms`, `5s`, `5m`, `24h`, `7d`, `2w`, `1h30m` (see
/// [`parse_duration`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HumanDuration(pub Duration);

impl fmt::Display for HumanDuration {
    /// The largest unit that divides it exactly: `7d`, `90m`, `1500ms`, `100us`; what
    /// [`parse_duration`] reads back to the same value.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ns = self.0.as_nanos();
        for (unit, size) in [
            ("d", 86_400_000_000_000u128),
            ("h", 3_600_000_000_000),
            ("m", 60_000_000_000),
            ("s", 1_000_000_000),
            ("ms", 1_000_000),
            ("us", 1_000),
        ] {
            if ns >= size && ns.is_multiple_of(size) {
                return write!(f, "{}{unit}", ns / size);
            }
        }
        write!(f, "{ns}ns")
    }
}

impl std::str::FromStr for HumanDuration {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        parse_duration(s).map(HumanDuration)
    }
}

/// Parses a duration as config, API and CLI all write them: one or more decimal numbers,
/// each with a unit, `ns`, `us` (or `µs`), `ms`, `s`, `m`, `h`, `d` (24 h) or `w` (7 d):
/// `250ms`, `1.5s`, `1h30m`, `7d`, `2w`. Go's `time.ParseDuration` syntax plus days and
/// weeks; a bare `0` is zero; negative durations are refused.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let s = text.trim();
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    if s.is_empty() {
        return Err("empty duration: expected a number with a unit like 30s".into());
    }
    if s.starts_with('-') {
        return Err(format!("duration `{s}` is negative"));
    }
    let mut rest = s.strip_prefix('+').unwrap_or(s);
    let mut total: f64 = 0.0;
    while !rest.is_empty() {
        let num_len = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(rest.len());
        let (num, after) = rest.split_at(num_len);
        let value: f64 = num
            .parse()
            .map_err(|_| format!("invalid duration `{s}`: expected a number with a unit like 30s"))?;
        let unit_len = after.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(after.len());
        let (unit, after) = after.split_at(unit_len);
        let nanos_per = match unit.trim() {
            "ns" => 1.0,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            "d" => 86_400e9,
            "w" => 604_800e9,
            "" => return Err(format!("duration `{s}` needs a unit: ns, us, ms, s, m, h, d or w")),
            other => {
                return Err(format!(
                    "invalid duration unit `{other}` in `{s}`: use ns, us, ms, s, m, h, d or w"
                ));
            }
        };
        total += value * nanos_per;
        rest = after;
    }
    if !total.is_finite() || total >= u64::MAX as f64 {
        return Err(format!("duration `{s}` is too large"));
    }
    Ok(Duration::from_nanos(total.round() as u64))
}

/// A memory size that may be sized from the machine (`auto`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum MemorySize {
    /// Sized from the machine's memory at start.
    #[default]
    Auto,
    /// This many bytes.
    Bytes(ByteSize),
}

impl MemorySize {
    /// The smallest `auto` budget.
    pub const AUTO_MIN: u64 = 256 << 20;
    /// The largest `auto` budget.
    pub const AUTO_MAX: u64 = 2 << 30;

    /// The size in bytes: `auto` is a quarter of `machine` (the machine's memory, see
    /// [`machine_memory`]), between [`Self::AUTO_MIN`] and [`Self::AUTO_MAX`]; the
    /// smallest when the machine's memory is unknown.
    pub fn bytes_of(self, machine: Option<u64>) -> u64 {
        match self {
            MemorySize::Bytes(b) => b.0,
            MemorySize::Auto => machine.map_or(0, |m| m / 4).clamp(Self::AUTO_MIN, Self::AUTO_MAX),
        }
    }

    /// The size in bytes on this machine.
    pub fn bytes(self) -> u64 {
        match self {
            MemorySize::Bytes(b) => b.0,
            MemorySize::Auto => self.bytes_of(machine_memory()),
        }
    }
}

impl fmt::Display for MemorySize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MemorySize::Auto => f.write_str("auto"),
            MemorySize::Bytes(b) => b.fmt(f),
        }
    }
}

impl std::str::FromStr for MemorySize {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        if s.trim().eq_ignore_ascii_case("auto") {
            return Ok(MemorySize::Auto);
        }
        s.parse::<ByteSize>()
            .map(MemorySize::Bytes)
            .map_err(|e| format!("{e}; or `auto` to size it from the machine"))
    }
}

/// The memory this process may use: the machine's (`MemTotal` of `/proc/meminfo`), or the
/// cgroup's limit when lower (`memory.max` of cgroup v2, `memory.limit_in_bytes` of v1).
/// `None` when neither can be read.
pub fn machine_memory() -> Option<u64> {
    let total = std::fs::read_to_string("/proc/meminfo").ok().and_then(|t| {
        let line = t.lines().find(|l| l.starts_with("MemTotal:"))?;
        let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        kib.checked_mul(1024)
    });
    let cgroup = ["/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"]
        .iter()
        .filter_map(|p| std::fs::read_to_string(p).ok())
        .filter_map(|t| t.trim().parse::<u64>().ok())
        .min();
    match (total, cgroup) {
        (Some(t), Some(c)) => Some(t.min(c)),
        (t, c) => t.or(c),
    }
}

macro_rules! serde_via_str {
    ($t:ty, $num:expr) => {
        impl Serialize for $t {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.to_string())
            }
        }

        impl<'de> Deserialize<'de> for $t {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                #[derive(Deserialize)]
                #[serde(untagged)]
                enum Raw {
                    Num(u64),
                    Text(String),
                }
                match Raw::deserialize(d).map_err(|_| {
                    serde::de::Error::custom(concat!(
                        "expected a ",
                        stringify!($t),
                        " (number or text with unit)"
                    ))
                })? {
                    Raw::Num(n) => $num(n),
                    Raw::Text(s) => s.parse().map_err(serde::de::Error::custom),
                }
            }
        }
    };
}

serde_via_str!(ByteSize, |n| Ok(ByteSize(n)));
serde_via_str!(MemorySize, |n| Ok(MemorySize::Bytes(ByteSize(n))));
serde_via_str!(HumanDuration, |n: u64| Err(serde::de::Error::custom(format!(
    "duration {n} needs a unit: write it as text like \"{n}s\""
))));

#[cfg(test)]
mod duration_tests {
    use super::*;

    #[test]
    fn durations_take_every_unit_and_compound_forms() {
        let secs = Duration::from_secs;
        for (text, want) in [
            ("250ms", Duration::from_millis(250)),
            ("1.5s", Duration::from_millis(1500)),
            ("1h30m", secs(5400)),
            ("7d", secs(7 * 86_400)),
            ("800d", secs(800 * 86_400)),
            ("2w", secs(14 * 86_400)),
            ("100us", Duration::from_micros(100)),
            ("5ns", Duration::from_nanos(5)),
            ("0", Duration::ZERO),
            (" 30s ", secs(30)),
        ] {
            assert_eq!(parse_duration(text), Ok(want), "{text}");
            assert_eq!(text.parse::<HumanDuration>(), Ok(HumanDuration(want)), "{text}");
        }
        for bad in ["", "10", "-1s", "1x", "s", "1.2.3s", "1y"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
        assert!(parse_duration("1y").expect_err("no years").contains("use ns, us, ms, s, m, h, d or w"));
        assert_eq!(HumanDuration(secs(7 * 86_400)).to_string(), "7d");
        for text in ["100us", "5ns", "1500ms", "90m", "2d"] {
            let d: HumanDuration = text.parse().expect("valid");
            assert_eq!(d.to_string(), text, "prints back as written");
        }
        assert_eq!(HumanDuration(Duration::ZERO).to_string(), "0ns");
        assert!(parse_duration("584942418w").is_err(), "beyond u64 nanoseconds");
    }
}
