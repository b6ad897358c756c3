//! Time, passed in: components that act on time (retention, head cuts, receive times) read
//! it from a [`Clock`] they are given, so tests move time instead of sleeping.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A source of the current time. Called from any thread.
pub trait Clock: Send + Sync + fmt::Debug + 'static {
    /// Nanoseconds since the Unix epoch, now.
    fn now_unix_nano(&self) -> u64;
}

/// The system's wall clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_unix_nano(&self) -> u64 {
        SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0)
    }
}

/// A clock that stands still until moved: for tests.
#[derive(Debug, Default)]
pub struct ManualClock(AtomicU64);

impl ManualClock {
    /// A clock showing `unix_nano`.
    pub fn new(unix_nano: u64) -> Self {
        Self(AtomicU64::new(unix_nano))
    }

    /// Moves the clock forward.
    pub fn advance(&self, by: Duration) {
        self.0.fetch_add(by.as_nanos() as u64, Ordering::SeqCst);
    }

    /// Sets the clock.
    pub fn set(&self, unix_nano: u64) {
        self.0.store(unix_nano, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_unix_nano(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }
}

/// How far ahead of the clock the last receive time may be and still be followed: beyond
/// it, the clock (or a data directory from another machine) was wrong, and following it
/// would stamp every later write in the future, out of reach of retention.
pub const MAX_RECEIVE_LEAD_NANOS: u64 = 1_000_000_000;

/// The receive time of the next write: `now`, or just after `last` when `last` is at or
/// slightly ahead of `now`, so receive times strictly increase whatever the clock's
/// resolution (a search snapshot between two writes tells them apart).
pub fn next_receive_time(now: u64, last: u64) -> u64 {
    if last >= now && last - now < MAX_RECEIVE_LEAD_NANOS { last + 1 } else { now }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn receive_times_increase_but_do_not_follow_a_far_future() {
        assert_eq!(next_receive_time(100, 50), 100);
        assert_eq!(next_receive_time(100, 100), 101);
        assert_eq!(next_receive_time(100, 500), 501);
        let far = 100 + MAX_RECEIVE_LEAD_NANOS;
        assert_eq!(next_receive_time(100, far), 100, "a stamp far ahead of the clock is not followed");
    }
}
