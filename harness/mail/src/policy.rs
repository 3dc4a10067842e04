//! Retry policies of remote senders, as data (`fixtures/policies/*.toml`, embedded in the
//! binary): RFC 5321 §4.5.4.1 and what real MTAs ship, plus two misbehaving ones.
//!
//! A policy is a list of stages by message age; within a stage the interval starts at
//! `interval_s` and is multiplied by `factor` after each attempt, up to `max_interval_s`
//! (Exim's F and G rules). Scenarios scale every duration with a provider's `time_scale`.

use serde::Deserialize;
use std::time::Duration;

/// The shipped policies: (file, text).
pub const SHIPPED: &[(&str, &str)] = &[
    ("fixtures/policies/rfc5321.toml", include_str!("../../../fixtures/policies/rfc5321.toml")),
    ("fixtures/policies/postfix.toml", include_str!("../../../fixtures/policies/postfix.toml")),
    ("fixtures/policies/exim.toml", include_str!("../../../fixtures/policies/exim.toml")),
    ("fixtures/policies/exchange-server.toml", include_str!("../../../fixtures/policies/exchange-server.toml")),
    ("fixtures/policies/exchange-online.toml", include_str!("../../../fixtures/policies/exchange-online.toml")),
    ("fixtures/policies/gmail-like.toml", include_str!("../../../fixtures/policies/gmail-like.toml")),
    ("fixtures/policies/no-retry.toml", include_str!("../../../fixtures/policies/no-retry.toml")),
    ("fixtures/policies/hammer.toml", include_str!("../../../fixtures/policies/hammer.toml")),
    ("fixtures/policies/dead-host-cutoff.toml", include_str!("../../../fixtures/policies/dead-host-cutoff.toml")),
];

#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Stage {
    /// The stage applies while the message is younger than this.
    pub until_s: f64,
    pub interval_s: f64,
    #[serde(default = "one")]
    pub factor: f64,
    /// Defaults to `interval_s` (a fixed interval).
    #[serde(default)]
    pub max_interval_s: Option<f64>,
}

fn one() -> f64 {
    1.0
}

fn yes() -> bool {
    true
}

#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryPolicy {
    pub name: String,
    pub description: String,
    /// After this long in the queue the message is returned to its sender (a failure DSN).
    pub lifetime_s: f64,
    #[serde(default, rename = "stage")]
    pub stages: Vec<Stage>,
    /// False for a sender that gives up at the first transient failure.
    #[serde(default = "yes")]
    pub retries: bool,
    /// When set, a delay DSN (Action: delayed) goes to the sender once the message is this old.
    #[serde(default)]
    pub delay_notice_s: Option<f64>,
    /// When set, new mail to a destination that has failed for this long is bounced at once.
    #[serde(default)]
    pub dead_host_cutoff_s: Option<f64>,
    /// Shipped to show that the checkers catch it; a suite that uses it is expected to fail.
    #[serde(default)]
    pub misbehaving: bool,
}

/// Parses one policy file; errors name `file:line:col`.
pub fn parse(file: &str, text: &str) -> Result<RetryPolicy, String> {
    let locate = |offset: usize, message: &str| {
        let before = &text[..offset.min(text.len())];
        let line = before.matches('\n').count() + 1;
        let column = before.rsplit('\n').next().map(|tail| tail.chars().count()).unwrap_or(0) + 1;
        format!("{file}:{line}:{column}: {message}")
    };
    let policy: RetryPolicy = toml::from_str(text).map_err(|error| locate(error.span().map(|s| s.start).unwrap_or(0), error.message()))?;
    policy.validate().map_err(|message| locate(0, &message))?;
    Ok(policy)
}

impl RetryPolicy {
    fn validate(&self) -> Result<(), String> {
        if !(0.0..=365.0 * 86400.0).contains(&self.lifetime_s) {
            return Err("lifetime_s must be between 0 and one year".into());
        }
        if self.retries && self.stages.is_empty() {
            return Err("a policy that retries needs at least one [[stage]]".into());
        }
        let mut previous_until = 0.0;
        for stage in &self.stages {
            if stage.until_s <= previous_until || stage.interval_s < 1.0 || stage.factor < 1.0 {
                return Err("stages need increasing until_s, interval_s >= 1 and factor >= 1".into());
            }
            if stage.max_interval_s.is_some_and(|max| max < stage.interval_s) {
                return Err("max_interval_s must be at least interval_s".into());
            }
            previous_until = stage.until_s;
        }
        Ok(())
    }

    /// Every shipped policy, in file order.
    pub fn shipped() -> Vec<RetryPolicy> {
        Self::parsed().to_vec()
    }

    /// The shipped policies, parsed once per process: their texts are compiled in, and A22 asks
    /// for a sender's policy per message (parsing every file each time was 6% of a 10,000-message
    /// outage run).
    fn parsed() -> &'static [RetryPolicy] {
        static PARSED: std::sync::OnceLock<Vec<RetryPolicy>> = std::sync::OnceLock::new();
        PARSED.get_or_init(|| SHIPPED.iter().filter_map(|(file, text)| parse(file, text).ok()).collect())
    }

    pub fn names() -> Vec<String> {
        Self::shipped().into_iter().map(|policy| policy.name).collect()
    }

    /// A shipped policy with every duration multiplied by `time_scale`.
    pub fn built_in(name: &str, time_scale: f64) -> Option<RetryPolicy> {
        let mut policy = Self::parsed().iter().find(|policy| policy.name == name)?.clone();
        policy.lifetime_s *= time_scale;
        policy.delay_notice_s = policy.delay_notice_s.map(|s| s * time_scale);
        policy.dead_host_cutoff_s = policy.dead_host_cutoff_s.map(|s| s * time_scale);
        for stage in &mut policy.stages {
            stage.until_s *= time_scale;
            stage.interval_s *= time_scale;
            stage.max_interval_s = stage.max_interval_s.map(|s| s * time_scale);
        }
        Some(policy)
    }

    /// The wait before the next attempt, for a message of age `age_s` that has already had
    /// `attempts_in_stage` failed attempts in its current stage.
    pub fn next_delay(&self, age_s: f64, attempts_in_stage: u32) -> Duration {
        let Some(stage) = self.stage_at(age_s) else { return Duration::from_secs(1) };
        let max = stage.max_interval_s.unwrap_or(stage.interval_s);
        let exponent = attempts_in_stage.saturating_sub(1).min(64) as i32;
        let delay_s = (stage.interval_s * stage.factor.powi(exponent)).min(max).max(1.0);
        Duration::from_millis((delay_s * 1000.0) as u64)
    }

    /// The index of the stage that applies at this age (the last one past every `until_s`).
    pub fn stage_index(&self, age_s: f64) -> usize {
        self.stages.iter().position(|stage| age_s < stage.until_s).unwrap_or(self.stages.len().saturating_sub(1))
    }

    fn stage_at(&self, age_s: f64) -> Option<&Stage> {
        self.stages.get(self.stage_index(age_s))
    }

    /// The smallest interval the policy ever waits between attempts.
    pub fn min_interval_s(&self) -> f64 {
        self.stages.iter().map(|stage| stage.interval_s).fold(f64::INFINITY, f64::min)
    }

    pub fn lifetime(&self) -> Duration {
        Duration::from_millis((self.lifetime_s * 1000.0) as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nine_policies_ship_and_all_parse() {
        for (file, text) in SHIPPED {
            parse(file, text).unwrap_or_else(|error| panic!("{error}"));
        }
        let names = RetryPolicy::names();
        let expected = ["rfc5321", "postfix", "exim", "exchange-server", "exchange-online", "gmail-like", "no-retry", "hammer", "dead-host-cutoff"];
        assert_eq!(names, expected);
    }

    #[test]
    fn postfix_doubles_up_to_its_maximum() {
        let policy = RetryPolicy::built_in("postfix", 1.0).unwrap();
        let delays: Vec<u64> = (1..=6).map(|attempt| policy.next_delay(10.0, attempt).as_secs()).collect();
        assert_eq!(delays, vec![300, 600, 1200, 2400, 4000, 4000]);
        assert_eq!(policy.lifetime().as_secs(), 5 * 86400);
    }

    #[test]
    fn exim_follows_its_three_rules_by_message_age() {
        let policy = RetryPolicy::built_in("exim", 1.0).unwrap();
        assert_eq!(policy.next_delay(600.0, 3).as_secs(), 900);
        assert_eq!(policy.next_delay(3.0 * 3600.0, 1).as_secs(), 3600);
        assert_eq!(policy.next_delay(5.0 * 3600.0, 3).as_secs(), 8100);
        assert_eq!(policy.next_delay(20.0 * 3600.0, 2).as_secs(), 21600);
        assert_eq!(policy.lifetime().as_secs(), 4 * 86400);
    }

    #[test]
    fn scaling_keeps_the_shape() {
        let policy = RetryPolicy::built_in("exchange-online", 0.01).unwrap();
        assert_eq!(policy.next_delay(0.0, 1).as_secs(), 9);
        assert_eq!(policy.next_delay(0.0, 5).as_secs(), 36);
        assert_eq!(policy.lifetime().as_secs(), 864);
        assert!(RetryPolicy::built_in("nonesuch", 1.0).is_none());
    }

    #[test]
    fn a_bad_policy_file_is_located() {
        let error = parse("p.toml", "name = \"x\"\ndescription = \"d\"\nlifetime_s = \"long\"\n").unwrap_err();
        assert!(error.starts_with("p.toml:3:14:"), "{error}");
        let error = parse("p.toml", "name = \"x\"\ndescription = \"d\"\nlifetime_s = 10\n").unwrap_err();
        assert!(error.contains("needs at least one [[stage]]"), "{error}");
    }
}
