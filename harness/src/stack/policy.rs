//! Retry policies of remote senders (RFC 5321 §4.5.4.1 and what real MTAs ship).

use std::time::Duration;

#[derive(Clone, Debug, PartialEq)]
pub struct RetryPolicy {
    pub name: String,
    /// Delay before the first retry.
    pub first_retry_s: f64,
    /// Each later delay is the previous one times this factor …
    pub backoff_factor: f64,
    /// … but never more than this.
    pub max_interval_s: f64,
    /// After this long in the queue the message is returned to its sender (a failure DSN).
    pub lifetime_s: f64,
    /// False for a sender that gives up at the first transient failure.
    pub retries: bool,
}

/// The built-in policies: name, first retry, factor, maximum interval, lifetime.
const BUILT_IN: &[(&str, f64, f64, f64, f64, bool)] = &[
    // RFC 5321 §4.5.4.1: at least 30 minutes between tries, give up after at least 4-5 days.
    ("rfc5321", 1800.0, 1.0, 1800.0, 5.0 * 86400.0, true),
    // Postfix: minimal_backoff_time 300s doubling to maximal_backoff_time 4000s; 5 days.
    ("postfix", 300.0, 2.0, 4000.0, 5.0 * 86400.0, true),
    // Exchange Online: retries every 15 minutes growing to an hour; returns after 24 hours.
    ("exchange-online", 900.0, 2.0, 3600.0, 86400.0, true),
    // A sender that never retries: the first transient failure bounces.
    ("no-retry", 0.0, 1.0, 0.0, 0.0, false),
];

impl RetryPolicy {
    pub fn names() -> Vec<&'static str> {
        BUILT_IN.iter().map(|entry| entry.0).collect()
    }

    /// A built-in policy with every interval multiplied by `time_scale` (fast scenarios compress
    /// days into hours while keeping the policies' shape).
    pub fn built_in(name: &str, time_scale: f64) -> Option<RetryPolicy> {
        let &(name, first, factor, max, lifetime, retries) = BUILT_IN.iter().find(|entry| entry.0 == name)?;
        Some(RetryPolicy {
            name: name.to_string(),
            first_retry_s: first * time_scale,
            backoff_factor: factor,
            max_interval_s: max * time_scale,
            lifetime_s: lifetime * time_scale,
            retries,
        })
    }

    /// The wait after failed attempt number `attempt` (1-based).
    pub fn delay_after(&self, attempt: u32) -> Duration {
        let exponent = attempt.saturating_sub(1).min(64) as i32;
        let delay_s = (self.first_retry_s * self.backoff_factor.powi(exponent)).min(self.max_interval_s);
        Duration::from_millis((delay_s.max(1.0) * 1000.0) as u64)
    }

    pub fn lifetime(&self) -> Duration {
        Duration::from_millis((self.lifetime_s * 1000.0) as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn postfix_doubles_up_to_its_maximum() {
        let policy = RetryPolicy::built_in("postfix", 1.0).unwrap();
        let delays: Vec<u64> = (1..=6).map(|attempt| policy.delay_after(attempt).as_secs()).collect();
        assert_eq!(delays, vec![300, 600, 1200, 2400, 4000, 4000]);
        assert_eq!(policy.lifetime().as_secs(), 5 * 86400);
    }

    #[test]
    fn scaling_keeps_the_shape() {
        let policy = RetryPolicy::built_in("exchange-online", 0.01).unwrap();
        assert_eq!(policy.delay_after(1).as_secs(), 9);
        assert_eq!(policy.delay_after(5).as_secs(), 36);
        assert_eq!(policy.lifetime().as_secs(), 864);
        assert!(RetryPolicy::built_in("nonesuch", 1.0).is_none());
    }
}
