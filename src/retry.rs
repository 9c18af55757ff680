//! Backoff with jitter until a deadline on the monotonic clock, for every network
//! client: IMDS now, the store later.

use std::time::{Duration, Instant};

const FIRST_DELAY: Duration = Duration::from_millis(50);
const MAX_DELAY: Duration = Duration::from_secs(2);

/// Delays between attempts: doubling from 50 ms up to 2 s, each drawn at random from
/// its upper half so that a fleet booting together does not retry in step.
#[derive(Debug)]
pub struct Backoff {
    deadline: Instant,
    next: Duration,
}

impl Backoff {
    pub fn until(deadline: Instant) -> Self {
        Self {
            deadline,
            next: FIRST_DELAY,
        }
    }

    /// Time left before the deadline.
    pub fn remaining(&self) -> Duration {
        self.deadline.saturating_duration_since(Instant::now())
    }

    /// The next delay, cut short by the deadline; `None` once the deadline has passed.
    pub fn next_delay(&mut self) -> Option<Duration> {
        let remaining = self.remaining();
        if remaining.is_zero() {
            return None;
        }
        let half = self.next / 2;
        let jittered = half + half.mul_f64(fastrand::f64());
        self.next = (self.next * 2).min(MAX_DELAY);
        Some(jittered.min(remaining))
    }

    /// Sleeps the next delay; `false` when the deadline has passed and the caller
    /// should give up.
    pub async fn wait(&mut self) -> bool {
        match self.next_delay() {
            Some(delay) => {
                tokio::time::sleep(delay).await;
                true
            }
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_jittered_and_cap() {
        let mut backoff = Backoff::until(Instant::now() + Duration::from_secs(3600));
        let mut ceiling = FIRST_DELAY;
        for _ in 0..12 {
            let delay = backoff.next_delay().unwrap();
            assert!(
                delay >= ceiling / 2 && delay <= ceiling,
                "{delay:?} vs {ceiling:?}"
            );
            ceiling = (ceiling * 2).min(MAX_DELAY);
        }
        assert!(backoff.next_delay().unwrap() <= MAX_DELAY);
    }

    #[test]
    fn delays_never_pass_the_deadline() {
        let mut backoff = Backoff::until(Instant::now() + Duration::from_millis(30));
        for _ in 0..8 {
            backoff.next_delay();
        }
        assert!(
            backoff
                .next_delay()
                .is_none_or(|d| d <= Duration::from_millis(30))
        );
        let mut done = Backoff::until(Instant::now());
        assert_eq!(done.next_delay(), None);
    }
}
