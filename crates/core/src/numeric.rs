//! Sums of numeric properties that stay finite, so every number Hourglass stores or returns is one.
//!
//! The collector refuses NaN and ±infinity as property values, but finite values still add up past the
//! range of `f64` (two values of 1e308 do), and once one partial sum is +infinity and another -infinity,
//! their sum is NaN. A NaN is no figure a reader can use, Postgres keeps it as it is and SQLite stores it
//! as NULL, which the rollup tables refuse: the hour would fail to roll up at every retry.
//!
//! [`FiniteSum`] saturates instead: a sum whose exact value is beyond `±f64::MAX` is `±f64::MAX`, with
//! the exact value's sign (so `f64::MAX + f64::MAX - f64::MAX` is `f64::MAX`, not 0 nor NaN).

/// 2^-64: values are scaled by it in [`FiniteSum::scaled`]. At most 2^64 values (a `u64` count) of
/// magnitude at most `f64::MAX` add up to at most `f64::MAX` once scaled, so the scaled sum cannot overflow.
const SCALE_DOWN: f64 = 1.0 / 18_446_744_073_709_551_616.0;
/// 2^64, which undoes [`SCALE_DOWN`].
const SCALE_UP: f64 = 18_446_744_073_709_551_616.0;

/// A sum of finite `f64` values that is always finite: exactly the ordinary floating-point sum while
/// that stays within `±f64::MAX`, else `±f64::MAX` with the sign of the exact sum (saturation).
///
/// Non-finite values are left out: they are not numbers to add (the collector refuses them; only an old
/// or buggy collector could have logged one).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct FiniteSum {
    /// The ordinary running sum. Once it is ±infinity or NaN it stays so, which tells [`Self::value`]
    /// that it overflowed somewhere.
    plain: f64,
    /// The sum of the values multiplied by [`SCALE_DOWN`], which never overflows. Scaling by a power of
    /// two is exact for all but the tiniest values (below about 1e-288, which vanish next to a sum that
    /// overflowed anyway), so this is the same sum at another exponent. Used only once `plain` overflowed,
    /// because those tiniest values would be lost in it.
    scaled: f64,
}

impl FiniteSum {
    /// Adds `value`; a non-finite `value` is left out.
    pub fn add(&mut self, value: f64) {
        if !value.is_finite() {
            return;
        }
        self.plain += value;
        self.scaled += value * SCALE_DOWN;
    }

    /// Adds everything `other` summed.
    pub fn merge(&mut self, other: &FiniteSum) {
        self.plain += other.plain;
        self.scaled += other.scaled;
    }

    /// The sum, saturated to `±f64::MAX`: always finite.
    pub fn value(&self) -> f64 {
        if self.plain.is_finite() {
            return self.plain;
        }
        debug_assert!(self.scaled.is_finite(), "the scaled sum of finite values cannot overflow");
        (self.scaled * SCALE_UP).clamp(-f64::MAX, f64::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sum_of(values: &[f64]) -> f64 {
        let mut sum = FiniteSum::default();
        values.iter().for_each(|value| sum.add(*value));
        sum.value()
    }

    #[test]
    fn an_ordinary_sum_is_the_plain_floating_point_sum() {
        let values = [0.1, 0.2, 0.3, -1e-300, 5e-324, 1e15];
        assert_eq!(sum_of(&values), values.iter().sum::<f64>());
        assert_eq!(sum_of(&[]), 0.0);
    }

    #[test]
    fn sums_past_the_range_saturate_with_the_sign_of_the_exact_sum() {
        assert_eq!(sum_of(&[f64::MAX, f64::MAX]), f64::MAX);
        assert_eq!(sum_of(&[-f64::MAX, -f64::MAX, -1.0]), -f64::MAX);
        // +inf then -inf as plain partial sums would make NaN; the exact sums are MAX and -MAX.
        assert_eq!(sum_of(&[f64::MAX, f64::MAX, -f64::MAX]), f64::MAX);
        assert_eq!(sum_of(&[f64::MAX, f64::MAX, -f64::MAX, -f64::MAX, -f64::MAX]), -f64::MAX);
        // Back within range after overflowing: the exact sum, 1e308.
        let near = sum_of(&[f64::MAX, f64::MAX, -f64::MAX, -f64::MAX, 1e308]);
        assert!((near - 1e308).abs() <= 1e308 * f64::EPSILON, "{near}");
    }

    #[test]
    fn non_finite_values_are_left_out() {
        assert_eq!(sum_of(&[1.0, f64::NAN, 2.0, f64::INFINITY, f64::NEG_INFINITY]), 3.0);
    }

    #[test]
    fn merging_parts_saturates_like_one_sum() {
        let values = [f64::MAX, 1e308, -f64::MAX, f64::MAX, -1e308, 7.0];
        for split in 0..=values.len() {
            let mut left = FiniteSum::default();
            values[..split].iter().for_each(|value| left.add(*value));
            let mut right = FiniteSum::default();
            values[split..].iter().for_each(|value| right.add(*value));
            left.merge(&right);
            assert_eq!(left.value(), f64::MAX, "split at {split}");
            assert!(left.value().is_finite());
        }
    }
}
