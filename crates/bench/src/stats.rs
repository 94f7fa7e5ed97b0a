//! Small numeric helpers: percentiles, rates and how numbers are written for people.

use std::time::Duration;

/// The nearest-rank percentile `p` (0 to 1) of `samples`, or None when there are none.
pub fn percentile(samples: &[f64], p: f64) -> Option<f64> {
    if samples.is_empty() {
        return None;
    }
    let mut sorted = samples.to_vec();
    sorted.sort_by(f64::total_cmp);
    let rank = (p * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

/// `count` per second over `elapsed`, guarding against a zero window.
pub fn per_second(count: u64, elapsed: Duration) -> f64 {
    count as f64 / elapsed.as_secs_f64().max(1e-9)
}

pub fn millis(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1_000.0
}

/// A whole number with thousands separators: 1234567 -> "1,234,567".
pub fn grouped(value: u64) -> String {
    let digits = value.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, digit) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(digit);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_percentile(samples: &[f64], p: f64, expected: Option<f64>) {
        assert_eq!(percentile(samples, p), expected, "p{p} of {samples:?}");
    }

    #[test]
    fn percentiles_take_the_nearest_rank() {
        let hundred: Vec<f64> = (1..=100).map(f64::from).collect();
        check_percentile(&hundred, 0.5, Some(50.0));
        check_percentile(&hundred, 0.99, Some(99.0));
        check_percentile(&hundred, 1.0, Some(100.0));
        check_percentile(&[3.0, 1.0, 2.0], 0.5, Some(2.0));
        check_percentile(&[7.0], 0.0, Some(7.0));
        check_percentile(&[], 0.5, None);
    }

    #[test]
    fn big_numbers_get_separators() {
        assert_eq!(grouped(0), "0");
        assert_eq!(grouped(999), "999");
        assert_eq!(grouped(1_000), "1,000");
        assert_eq!(grouped(49_812), "49,812");
        assert_eq!(grouped(1_000_000), "1,000,000");
    }
}
