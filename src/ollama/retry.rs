//! Capped exponential backoff with jitter. Pure: the caller supplies the random fraction, so
//! the schedule is deterministic in tests and the daemon owns the sleeping.

use std::time::Duration;

/// Backoff schedule: `base * 2^attempt`, capped at `max`, scaled by a jitter factor in
/// `[1 - jitter, 1]` so many daemons do not retry in lockstep.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    /// Delay before the first retry.
    pub base: Duration,
    /// Upper bound of any delay.
    pub max: Duration,
    /// Fraction (0..=1) of the delay that may be removed at random.
    pub jitter: f64,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            base: Duration::from_millis(500),
            max: Duration::from_secs(60),
            jitter: 0.5,
        }
    }
}

impl Backoff {
    /// Delay before retry number `attempt` (0-based). `random` is a uniform sample in
    /// `[0, 1)`; values outside are clamped so a bad sample cannot produce a huge delay.
    pub fn delay(&self, attempt: u32, random: f64) -> Duration {
        let factor = 2f64.powi(attempt.min(62) as i32);
        let raw = self.base.as_secs_f64() * factor;
        let capped = raw.min(self.max.as_secs_f64());
        let random = if random.is_finite() {
            random.clamp(0.0, 1.0)
        } else {
            0.0
        };
        let jitter = self.jitter.clamp(0.0, 1.0);
        Duration::from_secs_f64((capped * (1.0 - jitter * random)).max(0.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_then_caps() {
        let b = Backoff {
            base: Duration::from_secs(1),
            max: Duration::from_secs(10),
            jitter: 0.5,
        };
        assert_eq!(b.delay(0, 0.0), Duration::from_secs(1));
        assert_eq!(b.delay(1, 0.0), Duration::from_secs(2));
        assert_eq!(b.delay(3, 0.0), Duration::from_secs(8));
        assert_eq!(b.delay(4, 0.0), Duration::from_secs(10));
        assert_eq!(b.delay(1000, 0.0), Duration::from_secs(10));
        assert_eq!(b.delay(4, 1.0), Duration::from_secs(5));
        assert_eq!(b.delay(4, f64::NAN), Duration::from_secs(10));
        assert_eq!(b.delay(4, 7.0), Duration::from_secs(5));
    }
}
