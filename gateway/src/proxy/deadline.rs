//! A deadline a connection keeps across its requests (header timeout toward clients, response
//! timeout toward upstreams).
//!
//! A tokio timer registered and removed per request costs two trips through the timer wheel and
//! a clock read each (callgrind: ~2 % of a proxied request). Here the connection's one timer is
//! moved lazily: a new deadline later than the armed one is only noted, and the wheel entry is
//! reset when it fires before the noted deadline, or at once when a deadline comes earlier.

use std::pin::Pin;

use tokio::time::{Instant, Sleep};

pub(crate) struct Deadline {
    sleep: Pin<Box<Sleep>>,
    at: Instant,
}

impl Deadline {
    pub(crate) fn new(at: Instant) -> Self {
        Self {
            sleep: Box::pin(tokio::time::sleep_until(at)),
            at,
        }
    }

    /// From now on, [`expired`](Self::expired) waits for `at`.
    pub(crate) fn set(&mut self, at: Instant) {
        self.at = at;
        if at < self.sleep.deadline() {
            self.sleep.as_mut().reset(at);
        }
    }

    /// Ready once the deadline set last has passed.
    pub(crate) async fn expired(&mut self) {
        loop {
            self.sleep.as_mut().await;
            if Instant::now() >= self.at {
                return;
            }
            self.sleep.as_mut().reset(self.at);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_later_deadline_is_kept_an_earlier_one_fires_first() {
        let start = Instant::now();
        let mut d = Deadline::new(start + Duration::from_secs(10));
        // Moved later before the armed time: fires at the new time, not the old.
        d.set(start + Duration::from_secs(30));
        d.expired().await;
        assert_eq!(Instant::now() - start, Duration::from_secs(30));
        // Moved earlier than what is armed: fires then.
        let now = Instant::now();
        d.set(now + Duration::from_secs(60));
        d.set(now + Duration::from_millis(300));
        d.expired().await;
        assert_eq!(Instant::now() - now, Duration::from_millis(300));
    }
}
