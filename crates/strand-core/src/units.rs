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

/// A duration written with a unit: `100ms`, `5s`, `5m`, `24h`, `7d`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HumanDuration(pub Duration);

impl fmt::Display for HumanDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.0.as_millis();
        for (unit, size) in [("d", 86_400_000u128), ("h", 3_600_000), ("m", 60_000), ("s", 1000)] {
            if ms >= size && ms.is_multiple_of(size) {
                return write!(f, "{}{unit}", ms / size);
            }
        }
        write!(f, "{ms}ms")
    }
}

impl std::str::FromStr for HumanDuration {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let (n, unit) = number_and_unit(s)
            .ok_or_else(|| format!("invalid duration `{s}`: expected a number with a unit like 30s"))?;
        let ms: u64 = match unit {
            "ms" => 1,
            "s" => 1000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            "" => return Err(format!("duration `{s}` needs a unit: ms, s, m, h or d")),
            other => return Err(format!("invalid duration unit `{other}` in `{s}`: use ms, s, m, h or d")),
        };
        n.checked_mul(ms)
            .map(|ms| HumanDuration(Duration::from_millis(ms)))
            .ok_or_else(|| format!("duration `{s}` is too large"))
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
serde_via_str!(HumanDuration, |n: u64| Err(serde::de::Error::custom(format!(
    "duration {n} needs a unit: write it as text like \"{n}s\""
))));
