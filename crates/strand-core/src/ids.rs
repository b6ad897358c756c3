//! Trace and span identifiers.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Why bytes or text are not a valid id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    /// The id has the wrong number of bytes.
    #[error("{what} must be {expected} bytes, got {actual}")]
    Length {
        /// `trace_id` or `span_id`.
        what: &'static str,
        /// The required length.
        expected: usize,
        /// The length received.
        actual: usize,
    },
    /// The id is all zero bytes, which OTLP defines as invalid.
    #[error("{what} must not be all zeroes")]
    Zero {
        /// `trace_id` or `span_id`.
        what: &'static str,
    },
    /// The text is not hex of the right length.
    #[error("{what} must be {expected} hex characters")]
    Hex {
        /// `trace_id` or `span_id`.
        what: &'static str,
        /// The required number of hex characters.
        expected: usize,
    },
}

macro_rules! id_type {
    ($name:ident, $len:expr, $what:expr, $doc:expr) => {
        #[doc = $doc]
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default, Serialize, Deserialize)]
        pub struct $name(pub [u8; $len]);

        impl $name {
            /// Length of the id in bytes.
            pub const LEN: usize = $len;

            /// Validates raw bytes: right length and not all zero.
            pub fn from_slice(bytes: &[u8]) -> Result<Self, IdError> {
                let arr: [u8; $len] = bytes.try_into().map_err(|_| IdError::Length {
                    what: $what,
                    expected: $len,
                    actual: bytes.len(),
                })?;
                if arr == [0; $len] {
                    return Err(IdError::Zero { what: $what });
                }
                Ok(Self(arr))
            }

            /// Lowercase hex text of the id.
            pub fn to_hex(&self) -> String {
                let mut s = String::with_capacity($len * 2);
                for b in self.0 {
                    s.push(char::from(HEX[usize::from(b >> 4)]));
                    s.push(char::from(HEX[usize::from(b & 0xf)]));
                }
                s
            }
        }

        impl FromStr for $name {
            type Err = IdError;

            /// Parses hex of either case; the id must not be all zero.
            fn from_str(s: &str) -> Result<Self, IdError> {
                let bad = IdError::Hex { what: $what, expected: $len * 2 };
                let s = s.as_bytes();
                if s.len() != $len * 2 {
                    return Err(bad);
                }
                let mut out = [0u8; $len];
                for (i, pair) in s.chunks_exact(2).enumerate() {
                    let hi = hex_val(pair[0]).ok_or(bad.clone())?;
                    let lo = hex_val(pair[1]).ok_or(bad.clone())?;
                    out[i] = (hi << 4) | lo;
                }
                Self::from_slice(&out)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.to_hex())
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self.to_hex())
            }
        }
    };
}

const HEX: &[u8; 16] = b"0123456789abcdef";

fn hex_val(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

id_type!(TraceId, 16, "trace_id", "A 16-byte W3C trace id; never all zero.");
id_type!(SpanId, 8, "span_id", "An 8-byte span id; never all zero.");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_either_case_and_prints_lowercase() {
        let id: TraceId = "5B8EFFF798038103D269B633813FC60C".parse().expect("valid id");
        assert_eq!(id.to_hex(), "5b8efff798038103d269b633813fc60c");
        let again: TraceId = id.to_hex().parse().expect("valid id");
        assert_eq!(id, again);
    }

    #[test]
    fn rejects_zero_short_and_non_hex() {
        assert_eq!(SpanId::from_slice(&[0; 8]), Err(IdError::Zero { what: "span_id" }));
        assert_eq!(
            TraceId::from_slice(&[1; 15]).err().map(|e| e.to_string()).as_deref(),
            Some("trace_id must be 16 bytes, got 15")
        );
        assert!("zz".repeat(8).parse::<SpanId>().is_err());
        assert!("abc".parse::<SpanId>().is_err());
        assert!("0".repeat(32).parse::<TraceId>().is_err());
    }
}
