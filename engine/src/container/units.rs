//! vzctl's number grammar: `<num>[.<frac>][suffix]`, `barrier:limit` pairs
//! and `unlimited`.
//!
//! Suffixes are case-insensitive: `K`, `M`, `G`, `T` (powers of 1024), `P`
//! (pages) and `B` (bytes). A suffixed value is converted into the field's
//! native unit and rounded up; a bare number is already in that unit. This
//! follows vzctl 4.x `src/lib/config.c` as described in ctid.conf(5).

use crate::error::{ErrorKind, HasKind};

/// The unit a config key stores its numbers in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    /// Bytes (KMEMSIZE, `--ram` on the command line).
    Bytes,
    /// Kilobytes (DISKSPACE).
    Kilobytes,
    /// Memory pages (PHYSPAGES, SWAPPAGES).
    Pages,
    /// Plain counts that take no suffix (DISKINODES, NUMPROC).
    Count,
}

impl Unit {
    fn bytes(self) -> u128 {
        match self {
            Unit::Bytes | Unit::Count => 1,
            Unit::Kilobytes => 1024,
            Unit::Pages => u128::from(page_size()),
        }
    }
}

/// The value vzctl stores for `unlimited`: `LONG_MAX` on 64-bit hosts.
pub const UNLIMITED: u64 = i64::MAX as u64;

/// A malformed number.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UnitError {
    /// The text is empty.
    #[error("empty value")]
    Empty,
    /// The text is not a number with an optional suffix.
    #[error("{value:?} is not a number: use digits with an optional K, M, G, T, P or B suffix")]
    NotANumber { value: String },
    /// The suffix is not one of K, M, G, T, P, B.
    #[error("{value:?} has unknown suffix {suffix:?}: use K, M, G, T, P or B")]
    BadSuffix { value: String, suffix: char },
    /// A count was given a suffix.
    #[error("{value:?} is a count and takes no suffix")]
    SuffixNotAllowed { value: String },
    /// `unlimited` was given where it is not allowed.
    #[error("unlimited is not allowed here")]
    UnlimitedNotAllowed,
    /// The value does not fit in 63 bits.
    #[error("{value:?} is too large")]
    TooLarge { value: String },
    /// A pair has more than one colon.
    #[error("{value:?} has more than two parts: use barrier:limit")]
    TooManyParts { value: String },
}

impl HasKind for UnitError {
    fn kind(&self) -> ErrorKind {
        ErrorKind::InvalidArgument
    }
}

/// Whether `unlimited` is accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unlimited {
    /// `unlimited` parses as [`UNLIMITED`].
    Allowed,
    /// `unlimited` is rejected (DISKSPACE, DISKINODES).
    Rejected,
}

/// Returns the system page size in bytes.
pub fn page_size() -> u64 {
    nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)
        .ok()
        .flatten()
        .and_then(|size| u64::try_from(size).ok())
        .unwrap_or(4096)
}

/// Parses one value into `unit`, rounding a suffixed value up.
pub fn parse_value(text: &str, unit: Unit, unlimited: Unlimited) -> Result<u64, UnitError> {
    let text = text.trim();
    if text.is_empty() {
        return Err(UnitError::Empty);
    }
    if text.eq_ignore_ascii_case("unlimited") {
        return match unlimited {
            Unlimited::Allowed => Ok(UNLIMITED),
            Unlimited::Rejected => Err(UnitError::UnlimitedNotAllowed),
        };
    }

    let (number, suffix) = split_suffix(text)?;
    let (numerator, denominator) = parse_decimal(number, text)?;
    let multiplier = match suffix {
        None => unit.bytes(),
        Some(_) if unit == Unit::Count => {
            return Err(UnitError::SuffixNotAllowed {
                value: text.to_string(),
            });
        }
        Some(c) => suffix_bytes(c, text)?,
    };

    let too_large = || UnitError::TooLarge {
        value: text.to_string(),
    };
    let bytes = numerator.checked_mul(multiplier).ok_or_else(too_large)?;
    let divisor = denominator
        .checked_mul(unit.bytes())
        .ok_or_else(too_large)?;
    let value = bytes.div_ceil(divisor);
    if value > u128::from(UNLIMITED) {
        return Err(too_large());
    }
    u64::try_from(value).map_err(|_| too_large())
}

/// Parses `barrier[:limit]`; a single value sets both.
pub fn parse_pair(text: &str, unit: Unit, unlimited: Unlimited) -> Result<(u64, u64), UnitError> {
    let mut parts = text.split(':');
    let first = parts.next().unwrap_or_default();
    let second = parts.next();
    if parts.next().is_some() {
        return Err(UnitError::TooManyParts {
            value: text.to_string(),
        });
    }
    let barrier = parse_value(first, unit, unlimited)?;
    let limit = match second {
        Some(second) => parse_value(second, unit, unlimited)?,
        None => barrier,
    };
    Ok((barrier, limit))
}

/// Formats a pair the way vzctl saves it: `barrier:limit`.
pub fn format_pair(barrier: u64, limit: u64) -> String {
    format!("{}:{}", format_one(barrier), format_one(limit))
}

fn format_one(value: u64) -> String {
    if value >= UNLIMITED {
        "unlimited".to_string()
    } else {
        value.to_string()
    }
}

fn split_suffix(text: &str) -> Result<(&str, Option<char>), UnitError> {
    let last = text.chars().last().ok_or(UnitError::Empty)?;
    if last.is_ascii_digit() {
        return Ok((text, None));
    }
    if !last.is_ascii_alphabetic() {
        return Err(UnitError::NotANumber {
            value: text.to_string(),
        });
    }
    Ok((&text[..text.len() - last.len_utf8()], Some(last)))
}

/// Parses `int[.frac]` into the fraction numerator/denominator.
fn parse_decimal(number: &str, original: &str) -> Result<(u128, u128), UnitError> {
    let not_a_number = || UnitError::NotANumber {
        value: original.to_string(),
    };
    let (int, frac) = number.split_once('.').unwrap_or((number, ""));
    let digits_ok = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if int.is_empty() || !digits_ok(int) || !digits_ok(frac) || frac.len() > 18 {
        return Err(not_a_number());
    }

    let too_large = || UnitError::TooLarge {
        value: original.to_string(),
    };
    let all: String = format!("{int}{frac}");
    let numerator: u128 = all.parse().map_err(|_| too_large())?;
    let exponent = u32::try_from(frac.len()).map_err(|_| not_a_number())?;
    Ok((numerator, 10u128.pow(exponent)))
}

fn suffix_bytes(suffix: char, original: &str) -> Result<u128, UnitError> {
    let bytes = match suffix.to_ascii_uppercase() {
        'B' => 1,
        'K' => 1 << 10,
        'M' => 1 << 20,
        'G' => 1 << 30,
        'T' => 1 << 40,
        'P' => u128::from(page_size()),
        other => {
            return Err(UnitError::BadSuffix {
                value: original.to_string(),
                suffix: other,
            });
        }
    };
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    const KB: Unit = Unit::Kilobytes;
    const NO: Unlimited = Unlimited::Rejected;
    const YES: Unlimited = Unlimited::Allowed;

    #[test]
    fn bare_number_is_native_unit() {
        assert_eq!(parse_value("1024", KB, NO), Ok(1024));
        assert_eq!(parse_value("7", Unit::Pages, NO), Ok(7));
        assert_eq!(parse_value("7", Unit::Bytes, NO), Ok(7));
    }

    #[test]
    fn suffixes_are_powers_of_1024() {
        assert_eq!(parse_value("10G", KB, NO), Ok(10 * 1024 * 1024));
        assert_eq!(parse_value("1m", KB, NO), Ok(1024));
        assert_eq!(parse_value("1T", KB, NO), Ok(1 << 30));
        assert_eq!(parse_value("2048B", KB, NO), Ok(2));
        assert_eq!(parse_value("512M", Unit::Bytes, NO), Ok(512 << 20));
    }

    #[test]
    fn pages_round_up() {
        let page = page_size();
        assert_eq!(parse_value("512M", Unit::Pages, NO), Ok((512 << 20) / page));
        assert_eq!(parse_value("1B", Unit::Pages, NO), Ok(1));
        assert_eq!(parse_value("3P", Unit::Pages, NO), Ok(3));
        assert_eq!(parse_value("1P", Unit::Bytes, NO), Ok(page));
    }

    #[test]
    fn fractions_are_accepted() {
        // 2.2G in KB = 2.2 * 1048576 = 2306867.2, rounded up.
        assert_eq!(parse_value("2.2G", KB, NO), Ok(2_306_868));
        assert_eq!(parse_value("0.5K", Unit::Bytes, NO), Ok(512));
    }

    #[test]
    fn bad_suffix_is_rejected() {
        let err = parse_value("10Q", KB, NO).unwrap_err();
        assert_eq!(
            err,
            UnitError::BadSuffix {
                value: "10Q".into(),
                suffix: 'Q'
            }
        );
    }

    #[test]
    fn garbage_is_rejected() {
        for text in ["", "G", "1.2.3G", "-5", "1 G", "abc", ".5G", "1e9"] {
            assert!(parse_value(text, KB, NO).is_err(), "{text:?} parsed");
        }
    }

    #[test]
    fn count_rejects_suffix() {
        assert_eq!(parse_value("200000", Unit::Count, NO), Ok(200_000));
        assert!(matches!(
            parse_value("2K", Unit::Count, NO),
            Err(UnitError::SuffixNotAllowed { .. })
        ));
    }

    #[test]
    fn unlimited_depends_on_key() {
        assert_eq!(parse_value("unlimited", Unit::Pages, YES), Ok(UNLIMITED));
        assert_eq!(
            parse_value("unlimited", KB, NO),
            Err(UnitError::UnlimitedNotAllowed)
        );
    }

    #[test]
    fn overflow_is_rejected() {
        assert!(matches!(
            parse_value("99999999999999999999T", KB, NO),
            Err(UnitError::TooLarge { .. })
        ));
        assert!(matches!(
            parse_value("9223372036854775808", Unit::Bytes, NO),
            Err(UnitError::TooLarge { .. })
        ));
    }

    #[test]
    fn pair_forms() {
        assert_eq!(parse_pair("2G:2.2G", KB, NO), Ok((2_097_152, 2_306_868)));
        assert_eq!(parse_pair("100", KB, NO), Ok((100, 100)));
        assert_eq!(
            parse_pair("0:unlimited", Unit::Pages, YES),
            Ok((0, UNLIMITED))
        );
        assert!(matches!(
            parse_pair("1:2:3", KB, NO),
            Err(UnitError::TooManyParts { .. })
        ));
    }

    #[test]
    fn pair_formatting() {
        assert_eq!(format_pair(0, 131072), "0:131072");
        assert_eq!(format_pair(0, UNLIMITED), "0:unlimited");
    }
}
