//! Byte sizes on the command line: a plain number of bytes, or a number
//! with one of the suffixes K, M, G, T (powers of 1024, either case).

use std::fmt;

/// A rejected size argument. Each message names the value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SizeError {
    /// The argument is empty.
    #[error("invalid size \"\": expected a number of bytes with an optional K, M, G or T suffix")]
    Empty,
    /// The argument is not digits with an optional suffix.
    #[error(
        "invalid size {value:?}: expected a whole number of bytes with an optional K, M, G or T suffix, such as 512M"
    )]
    Malformed {
        /// The argument as given.
        value: String,
    },
    /// The size does not fit in 64 bits.
    #[error("invalid size {value:?}: larger than {max} bytes", max = u64::MAX)]
    Overflow {
        /// The argument as given.
        value: String,
    },
}

/// A byte count parsed from a size argument, usable as a clap value type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Size(pub u64);

impl std::str::FromStr for Size {
    type Err = SizeError;

    fn from_str(s: &str) -> Result<Size, SizeError> {
        parse(s).map(Size)
    }
}

impl fmt::Display for Size {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Parses a size such as `4096`, `64K`, `10G` or `2t` into bytes.
pub fn parse(value: &str) -> Result<u64, SizeError> {
    if value.is_empty() {
        return Err(SizeError::Empty);
    }
    let malformed = || SizeError::Malformed {
        value: value.to_string(),
    };
    let (digits, shift) = match value.as_bytes()[value.len() - 1] {
        b'K' | b'k' => (&value[..value.len() - 1], 10),
        b'M' | b'm' => (&value[..value.len() - 1], 20),
        b'G' | b'g' => (&value[..value.len() - 1], 30),
        b'T' | b't' => (&value[..value.len() - 1], 40),
        b'0'..=b'9' => (value, 0),
        _ => return Err(malformed()),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(malformed());
    }

    let overflow = || SizeError::Overflow {
        value: value.to_string(),
    };
    let number: u64 = digits.parse().map_err(|_| overflow())?;
    number.checked_mul(1u64 << shift).ok_or_else(overflow)
}

/// Formats a byte count with the largest suffix that divides it exactly,
/// so that [`parse`] reads back the same number.
pub fn format(bytes: u64) -> String {
    for (shift, suffix) in [(40, 'T'), (30, 'G'), (20, 'M'), (10, 'K')] {
        let unit = 1u64 << shift;
        if bytes != 0 && bytes.is_multiple_of(unit) {
            return format!("{}{suffix}", bytes / unit);
        }
    }
    bytes.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_bytes_and_suffixes_parse() {
        assert_eq!(parse("0"), Ok(0));
        assert_eq!(parse("4096"), Ok(4096));
        assert_eq!(parse("64K"), Ok(64 << 10));
        assert_eq!(parse("64k"), Ok(64 << 10));
        assert_eq!(parse("10M"), Ok(10 << 20));
        assert_eq!(parse("5G"), Ok(5 << 30));
        assert_eq!(parse("2T"), Ok(2 << 40));
    }

    #[test]
    fn bad_sizes_are_rejected_with_value() {
        for value in [
            "10Q", "-1", "1.5G", "G", "10 G", " 10", "10GB", "0x10", "+5",
        ] {
            let error = parse(value).expect_err(value);
            assert!(
                error.to_string().contains(&format!("{value:?}")),
                "{value}: {error}"
            );
        }
        assert_eq!(parse(""), Err(SizeError::Empty));
    }

    #[test]
    fn overflow_is_rejected() {
        let too_big = "18446744073709551616";
        assert!(matches!(parse(too_big), Err(SizeError::Overflow { .. })));
        assert!(matches!(
            parse("16777216T"),
            Err(SizeError::Overflow { .. })
        ));
        assert_eq!(parse("16777215T"), Ok(16_777_215 << 40));
    }

    #[test]
    fn format_round_trips() {
        for bytes in [0, 1, 4096, 1 << 20, 3 << 30, (5 << 40) + 1, u64::MAX] {
            assert_eq!(parse(&format(bytes)), Ok(bytes));
        }
        assert_eq!(format(10 << 30), "10G");
    }
}
