use crate::error::PgWireError;
use smol_str::{SmolStr, ToSmolStr, format_smolstr};

/// extra_float_digits sets the number of digits displayed for floating-point
/// values.
///
/// Valid values [-15, 3], default value: 1
#[derive(Debug)]
pub struct ExtraFloatDigits(pub i8);

impl TryFrom<&str> for ExtraFloatDigits {
    type Error = PgWireError;

    fn try_from(value: &str) -> Result<Self, Self::Error> {
        let value = value
            .parse::<i8>()
            .map_err(|_| PgWireError::InvalidOptionValue(value.to_string()))?;

        if !(-15..=3).contains(&value) {
            Err(PgWireError::InvalidOptionValue(value.to_string()))
        } else {
            Ok(Self(value))
        }
    }
}

impl ExtraFloatDigits {
    const FLT_DIG: i8 = 6;
    const DBL_DIG: i8 = 15;

    /// Format an f64 value according to the configured precision.
    pub fn format_f64(&self, value: f64) -> SmolStr {
        let extra = self.0.clamp(-15, 3);

        // Handle special cases
        if value.is_nan() {
            return "NaN".to_smolstr();
        }
        if value.is_infinite() {
            // Sextant patch: PostgreSQL's words for the infinities.
            return if value.is_sign_positive() {
                "Infinity".to_smolstr()
            } else {
                "-Infinity".to_smolstr()
            };
        }

        if value == 0.0 {
            return "0".to_smolstr();
        }

        // For extra_float_digits >= 1, use ryu for shortest-precise format
        // This preserves the original binary float value exactly
        // At most 17 digits for f64
        if extra >= 1 {
            let mut buffer = ryu::Buffer::new();
            // Sextant patch: laid out as PostgreSQL lays it out.
            return pg_shortest(buffer.format(value), Self::DBL_DIG as i32);
        }

        // For negative values, round to DBL_DIG + extra_float_digits significant digits
        // DBL_DIG = 15 for f64
        let sig_digits = (Self::DBL_DIG + extra).max(0) as usize;
        format_with_significant_digits(value, sig_digits)
    }

    /// Format an f32 value according to the configured precision.
    pub fn format_f32(&self, value: f32) -> SmolStr {
        let extra = self.0.clamp(-15, 3);

        // Handle special cases
        if value.is_nan() {
            return "NaN".to_smolstr();
        }
        if value.is_infinite() {
            // Sextant patch: PostgreSQL's words for the infinities.
            return if value.is_sign_positive() {
                "Infinity".to_smolstr()
            } else {
                "-Infinity".to_smolstr()
            };
        }

        if value == 0.0 {
            return "0".to_smolstr();
        }

        // For extra_float_digits >= 1, use ryu for shortest-precise format
        // This preserves the original binary float value exactly
        // At most 9 digits for f32
        if extra >= 1 {
            let mut buffer = ryu::Buffer::new();
            // Sextant patch: laid out as PostgreSQL lays it out.
            return pg_shortest(buffer.format(value), Self::FLT_DIG as i32);
        }

        // For negative values, round to FLT_DIG + extra_float_digits significant digits
        // FLT_DIG = 6 for f32
        let sig_digits = (Self::FLT_DIG + extra).max(0) as usize;
        format_with_significant_digits(value as f64, sig_digits)
    }
}

/// Sextant patch: the shortest digits that read back exactly (`ryu`'s
/// output), laid out as PostgreSQL's float8out/float4out do (d2s.c, f2s.c):
/// fixed-point when the decimal exponent is at least -4 and below
/// `fixed_below` (15 for double precision, 6 for real), without a
/// trailing `.0`; otherwise `d.ddde+XX` with at least two exponent digits.
fn pg_shortest(ryu: &str, fixed_below: i32) -> SmolStr {
    let (negative, s) = match ryu.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, ryu),
    };
    let (mantissa, exp) = match s.split_once(['e', 'E']) {
        Some((m, e)) => (m, e.parse::<i32>().unwrap_or(0)),
        None => (s, 0),
    };
    let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let all = format!("{int}{frac}");
    let lead = all.len() - all.trim_start_matches('0').len();
    let digits = all.trim_start_matches('0').trim_end_matches('0');
    if digits.is_empty() {
        return "0".to_smolstr();
    }
    let sci = int.len() as i32 - 1 - lead as i32 + exp;
    let mut out = String::with_capacity(digits.len() + 8);
    if negative {
        out.push('-');
    }
    if (-4..fixed_below).contains(&sci) {
        if sci < 0 {
            out.push_str("0.");
            for _ in 0..(-sci - 1) {
                out.push('0');
            }
            out.push_str(digits);
        } else {
            let point = (sci + 1) as usize;
            if digits.len() <= point {
                out.push_str(digits);
                for _ in digits.len()..point {
                    out.push('0');
                }
            } else {
                out.push_str(&digits[..point]);
                out.push('.');
                out.push_str(&digits[point..]);
            }
        }
    } else {
        out.push_str(&digits[..1]);
        if digits.len() > 1 {
            out.push('.');
            out.push_str(&digits[1..]);
        }
        out.push('e');
        out.push(if sci < 0 { '-' } else { '+' });
        out.push_str(&format!("{:02}", sci.abs()));
    }
    out.to_smolstr()
}

/// Format with specific number of significant digits
fn format_with_significant_digits(value: f64, sig_digits: usize) -> SmolStr {
    if sig_digits == 0 {
        // Round to nearest integer
        return format_smolstr!("{:.0}", value.round());
    }

    let negative = value < 0.0;
    let abs_value = value.abs();

    // Find the order of magnitude
    let magnitude = abs_value.log10().floor();

    // Calculate decimal places needed
    // For a number like 3.14159, magnitude is 0
    // For 314.159, magnitude is 2
    // For 0.0314159, magnitude is -2
    let decimal_places = if magnitude >= 0.0 {
        // For numbers >= 1, decimal places = sig_digits - (integer_digits)
        let integer_digits = (magnitude as i32) + 1;
        (sig_digits as i32 - integer_digits).max(0) as usize
    } else {
        // For numbers < 1, we need to account for leading zeros after decimal
        let leading_zeros = (-magnitude as i32) - 1;
        sig_digits + leading_zeros as usize
    };

    // Format with calculated precision
    let formatted = format_smolstr!("{abs_value:.decimal_places$}");

    // Remove trailing zeros and unnecessary decimal point
    let trimmed = trim_trailing_zeros(&formatted);

    if negative {
        format_smolstr!("-{trimmed}",)
    } else {
        trimmed.to_smolstr()
    }
}

/// Remove trailing zeros from decimal representation
fn trim_trailing_zeros(s: &str) -> SmolStr {
    if !s.contains('.') {
        return s.to_smolstr();
    }

    let trimmed = s.trim_end_matches('0').trim_end_matches('.');
    trimmed.to_smolstr()
}
#[cfg(test)]
mod tests {
    use super::*;

    /// Sextant patch: PostgreSQL 15's output with extra_float_digits 1.
    #[test]
    fn postgres_layout() {
        let d = ExtraFloatDigits(1);
        let cases: &[(f64, &str)] = &[
            (4.0, "4"),
            (0.5, "0.5"),
            (-2.25, "-2.25"),
            (1e20, "1e+20"),
            (123456789012345.0, "123456789012345"),
            (1234567890123456.0, "1.234567890123456e+15"),
            (0.0001, "0.0001"),
            (0.00001, "1e-05"),
            (1.5e-7, "1.5e-07"),
            (1e308, "1e+308"),
            (100.0, "100"),
            (0.1 + 0.2, "0.30000000000000004"),
            (f64::INFINITY, "Infinity"),
        ];
        for (v, want) in cases {
            assert_eq!(d.format_f64(*v), *want, "{v}");
        }
        assert_eq!(d.format_f32(100000.0), "100000");
        assert_eq!(d.format_f32(1000000.0), "1e+06");
        assert_eq!(d.format_f32(0.1), "0.1");
    }

    #[test]
    fn test_format() {
        let v = std::f64::consts::PI; //3.1415926535897931

        let formatted = &[
            "3",                 // -15
            "3",                 // -14
            "3.1",               // -13
            "3.14",              // -12
            "3.142",             // -11
            "3.1416",            // -10
            "3.14159",           // -9
            "3.141593",          // -8
            "3.1415927",         // -7
            "3.14159265",        // -6
            "3.141592654",       // -5
            "3.1415926536",      // -4
            "3.14159265359",     // -3
            "3.14159265359",     // -2
            "3.1415926535898",   // -1
            "3.14159265358979",  // 0
            "3.141592653589793", // 1
            "3.141592653589793", // 2
            "3.141592653589793", // 3
        ];

        for (i, e) in (-15..=3).enumerate() {
            let extra_float_digit = ExtraFloatDigits(e);
            assert_eq!(extra_float_digit.format_f64(v), formatted[i]);
        }

        assert_eq!(ExtraFloatDigits(0).format_f64(f64::NAN), "NaN");
        assert_eq!(ExtraFloatDigits(0).format_f64(f64::INFINITY), "inf");
        assert_eq!(ExtraFloatDigits(0).format_f64(-f64::INFINITY), "-inf");

        let v = std::f32::consts::PI; //3.1415926535897931

        let formatted = &[
            "3",         // -15
            "3",         // -14
            "3",         // -13
            "3",         // -12
            "3",         // -11
            "3",         // -10
            "3",         // -9
            "3",         // -8
            "3",         // -7
            "3",         // -6
            "3",         // -5
            "3.1",       // -4
            "3.14",      // -3
            "3.142",     // -2
            "3.1416",    // -1
            "3.14159",   // 0
            "3.1415927", // 1
            "3.1415927", // 2
            "3.1415927", // 3
        ];

        for (i, e) in (-15..=3).enumerate() {
            let extra_float_digit = ExtraFloatDigits(e);
            assert_eq!(extra_float_digit.format_f32(v), formatted[i]);
        }
    }
}
