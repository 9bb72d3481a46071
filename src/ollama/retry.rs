//! Capped exponential backoff with jitter: how long to wait before the
//! next attempt. Pure, so the schedule is testable; the caller sleeps.

use std::time::Duration;

/// A backoff schedule.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    /// Wait before the second attempt.
    pub initial: Duration,
    /// Longest wait.
    pub max: Duration,
    /// Growth per attempt.
    pub factor: f64,
    /// Fraction of the wait randomised (0.2 = ±20 %), so many clients do
    /// not retry in lock-step.
    pub jitter: f64,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            initial: Duration::from_millis(500),
            max: Duration::from_secs(60),
            factor: 2.0,
            jitter: 0.2,
        }
    }
}

impl Backoff {
    /// The wait after `attempt` failures (1 = the first), with `unit` in
    /// [0, 1) supplying the randomness.
    pub fn delay(&self, attempt: u32, unit: f64) -> Duration {
        let base =
            self.initial.as_secs_f64() * self.factor.powi(attempt.saturating_sub(1).min(64) as i32);
        let capped = base.min(self.max.as_secs_f64());
        let jittered = capped * (1.0 + self.jitter * (2.0 * unit.clamp(0.0, 1.0) - 1.0));
        Duration::from_secs_f64(jittered.clamp(0.0, self.max.as_secs_f64()))
    }

    /// [`Backoff::delay`] with a random `unit`.
    pub fn delay_random(&self, attempt: u32) -> Duration {
        self.delay(attempt, rand::random::<f64>())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_then_caps() {
        let b = Backoff::default();
        assert_eq!(b.delay(1, 0.5), Duration::from_millis(500));
        assert_eq!(b.delay(2, 0.5), Duration::from_secs(1));
        assert_eq!(b.delay(30, 0.5), Duration::from_secs(60));
        assert!(b.delay(3, 0.0) < b.delay(3, 0.99));
        assert!(b.delay(100, 0.99) <= b.max);
    }
}
