//! What the POP3 and IMAP servers share about logging in: a deadline to log in by, and a reply
//! that waits longer after each failed attempt, then a closed session. Without them one
//! connection tried thousands of passwords a second and stayed unauthenticated for ever.

use super::conn::ConnError;
use super::store::StoreConfig;
use std::future::Future;
use tokio::time::Instant;

pub struct LoginGuard {
    /// Logins refused for a wrong user or password.
    failures: u32,
    /// When the session must have logged in (`login_timeout` after it began).
    deadline: Option<Instant>,
}

impl LoginGuard {
    pub fn new(config: &StoreConfig) -> LoginGuard {
        LoginGuard { failures: 0, deadline: config.login_timeout.map(|timeout| Instant::now() + timeout) }
    }

    pub fn failed(&mut self) {
        self.failures = self.failures.saturating_add(1);
    }

    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// `read`, bounded by the login deadline while the session is not logged in.
    pub async fn bounded<T>(&self, logged_in: bool, read: impl Future<Output = Result<T, ConnError>>) -> Result<T, ConnError> {
        match self.deadline.filter(|_| !logged_in) {
            Some(deadline) => tokio::time::timeout_at(deadline, read).await.unwrap_or(Err(ConnError::Timeout)),
            None => read.await,
        }
    }

    /// The session is not logged in and its time to do so is over.
    pub fn expired(&self, logged_in: bool) -> bool {
        !logged_in && self.deadline.is_some_and(|deadline| Instant::now() >= deadline)
    }

    /// After a failed login: waits `login_failure_delay` times the failures so far, and says
    /// whether the session must now be closed.
    pub async fn throttle(&self, config: &StoreConfig) -> bool {
        let delay = config.login_failure_delay.saturating_mul(self.failures);
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        config.max_login_failures.is_some_and(|max| self.failures >= max)
    }
}
