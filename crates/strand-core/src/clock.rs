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
