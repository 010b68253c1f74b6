//! Kubernetes resource quantities (`10m`, `64Mi`, `1.5G`, `1e3`): validated and compared.
//!
//! Grammar (as the API server accepts it): an optional sign, a decimal number, then a binary
//! suffix (`Ki` .. `Ei`), a decimal suffix (`n`, `u`, `m`, none, `k`, `M` .. `E`) or an exponent
//! (`e3`, `E-2`).
//!
//! The API server canonicalises quantities itself, so the webhook keeps the user's spelling and
//! only needs the numeric value to reject nonsense and to compare a request with its limit.

use std::fmt;
use std::str::FromStr;

use crate::error::Error;

/// A non-negative quantity in the Kubernetes grammar, with its value in nano-units.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Quantity {
    text: String,
    nanos: u128,
}

const SYNTAX: Error = Error::Quantity("not a Kubernetes quantity");
const NEGATIVE: Error = Error::Quantity("negative quantities are not allowed");
const TOO_LARGE: Error = Error::Quantity("quantity is too large");

const NANOS_PER_UNIT: u32 = 9;
/// 10^38 is the largest power of ten below `u128::MAX`.
const MAX_POW10: u32 = 38;

impl Quantity {
    /// The quantity as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The value in billionths of the unit (rounded up, as Kubernetes does).
    pub fn nanos(&self) -> u128 {
        self.nanos
    }
}

impl fmt::Display for Quantity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl FromStr for Quantity {
    type Err = Error;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let (negative, unsigned) = match text.as_bytes().first() {
            Some(b'-') => (true, &text[1..]),
            Some(b'+') => (false, &text[1..]),
            _ => (false, text),
        };
        let number_len = unsigned
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(unsigned.len());
        let (number, suffix) = unsigned.split_at(number_len);
        let (mantissa, fraction_digits) = parse_decimal(number)?;
        let nanos = scale(mantissa, fraction_digits, parse_suffix(suffix)?)?;
        if negative && nanos > 0 {
            return Err(NEGATIVE);
        }
        Ok(Self {
            text: text.to_owned(),
            nanos,
        })
    }
}

/// `digits`, `digits.digits`, `digits.` or `.digits` as an integer mantissa and its count of
/// fractional digits.
fn parse_decimal(number: &str) -> Result<(u128, u32), Error> {
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    if whole.is_empty() && fraction.is_empty() || fraction.contains('.') {
        return Err(SYNTAX);
    }
    let mut mantissa: u128 = 0;
    for digit in whole.bytes().chain(fraction.bytes()) {
        mantissa = mantissa
            .checked_mul(10)
            .and_then(|m| m.checked_add(u128::from(digit - b'0')))
            .ok_or(TOO_LARGE)?;
    }
    let fraction_digits = u32::try_from(fraction.len()).map_err(|_| TOO_LARGE)?;
    Ok((mantissa, fraction_digits))
}

/// A suffix's multiplier: a power of 1024 or a (possibly negative) power of ten.
#[derive(Clone, Copy, Debug)]
enum Multiplier {
    Binary(u32),
    Decimal(i64),
}

fn parse_suffix(suffix: &str) -> Result<Multiplier, Error> {
    let multiplier = match suffix {
        "" => Multiplier::Decimal(0),
        "n" => Multiplier::Decimal(-9),
        "u" => Multiplier::Decimal(-6),
        "m" => Multiplier::Decimal(-3),
        "k" => Multiplier::Decimal(3),
        "M" => Multiplier::Decimal(6),
        "G" => Multiplier::Decimal(9),
        "T" => Multiplier::Decimal(12),
        "P" => Multiplier::Decimal(15),
        "E" => Multiplier::Decimal(18),
        "Ki" => Multiplier::Binary(1),
        "Mi" => Multiplier::Binary(2),
        "Gi" => Multiplier::Binary(3),
        "Ti" => Multiplier::Binary(4),
        "Pi" => Multiplier::Binary(5),
        "Ei" => Multiplier::Binary(6),
        _ => {
            let exponent = suffix
                .strip_prefix('e')
                .or_else(|| suffix.strip_prefix('E'))
                .ok_or(SYNTAX)?;
            let digits = exponent.strip_prefix(['+', '-']).unwrap_or(exponent);
            if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return Err(SYNTAX);
            }
            Multiplier::Decimal(exponent.parse().map_err(|_| TOO_LARGE)?)
        }
    };
    Ok(multiplier)
}

/// `mantissa * 10^-fraction_digits * multiplier` in nano-units, rounded up.
fn scale(mantissa: u128, fraction_digits: u32, multiplier: Multiplier) -> Result<u128, Error> {
    let (numerator, exponent) = match multiplier {
        Multiplier::Binary(power) => {
            let factor = 1024u128.pow(power);
            (mantissa.checked_mul(factor).ok_or(TOO_LARGE)?, 0)
        }
        Multiplier::Decimal(exponent) => (mantissa, exponent),
    };
    let exponent = exponent + i64::from(NANOS_PER_UNIT) - i64::from(fraction_digits);
    if numerator == 0 {
        return Ok(0);
    }
    if exponent >= 0 {
        let power = u32::try_from(exponent).map_err(|_| TOO_LARGE)?;
        if power > MAX_POW10 {
            return Err(TOO_LARGE);
        }
        numerator.checked_mul(10u128.pow(power)).ok_or(TOO_LARGE)
    } else {
        // Anything finer than a nano-unit rounds up to one, like the API server does.
        match u32::try_from(-exponent) {
            Ok(power) if power <= MAX_POW10 => Ok(numerator.div_ceil(10u128.pow(power))),
            _ => Ok(1),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_kubernetes_grammar() {
        let cases: &[(&str, u128)] = &[
            ("0", 0),
            ("1", 1_000_000_000),
            ("10m", 10_000_000),
            ("0.5", 500_000_000),
            (".5", 500_000_000),
            ("5.", 5_000_000_000),
            ("+2k", 2_000_000_000_000),
            ("64Mi", 64 * 1024 * 1024 * 1_000_000_000),
            ("1.5Gi", 1_610_612_736 * 1_000_000_000),
            ("1e3", 1_000_000_000_000),
            ("1E3", 1_000_000_000_000),
            ("5e-3", 5_000_000),
            ("1E", 1_000_000_000_000_000_000_000_000_000),
            ("7n", 7),
            ("3u", 3_000),
        ];
        for (text, nanos) in cases {
            let quantity: Quantity = text.parse().unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(quantity.nanos(), *nanos, "{text}");
            assert_eq!(quantity.as_str(), *text);
        }
    }

    fn nanos(text: &str) -> Option<u128> {
        text.parse::<Quantity>().ok().map(|q| q.nanos())
    }

    fn problem(text: &str) -> Option<String> {
        text.parse::<Quantity>().err().map(|e| e.to_string())
    }

    #[test]
    fn rounds_sub_nano_values_up() {
        assert_eq!(nanos("1e-12"), Some(1));
        assert_eq!(nanos("1e-99999"), Some(1));
        assert_eq!(nanos("0e-99999"), Some(0));
    }

    #[test]
    fn rejects_invalid_text() {
        for text in [
            "", "m", ".", "1..2", "1.2.3", "abc", "10 m", "10mi", "1K", "1e", "1e+", "e3", "1ee3",
            "Mi", "1Mi1", " 1", "0x10", "1_000",
        ] {
            assert_eq!(
                problem(text).as_deref(),
                Some("not a Kubernetes quantity"),
                "{text:?}"
            );
        }
        assert_eq!(
            problem("-1").as_deref(),
            Some("negative quantities are not allowed")
        );
        assert_eq!(nanos("-0"), Some(0));
        for text in [
            "1e40",
            "99999999999999999999999999999999999999999",
            "1e99999999999999999999",
            "999999999999999Ei",
        ] {
            assert_eq!(
                problem(text).as_deref(),
                Some("quantity is too large"),
                "{text}"
            );
        }
    }
}
