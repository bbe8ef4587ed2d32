//! Time, injectable so that tests never sleep and never depend on today's date.

use std::fmt;
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, SystemTime};

/// A source of the current time.
///
/// The replay window and the in-memory store read the time through this trait, so tests can
/// move time forward instead of sleeping.
pub trait Clock: Send + Sync + fmt::Debug + 'static {
    /// The current time.
    fn now(&self) -> SystemTime;
}

/// The system's wall clock. The default everywhere.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }
}

/// Wall-clock time that moves with tokio's clock: the system time when it was made, plus the
/// tokio time elapsed since.
///
/// Under `tokio::time::pause()` it stands still and jumps with `tokio::time::advance` and
/// auto-advance, together with every `sleep` and timeout, so one test controls the replay
/// window, the inbox's leases and backoff, and the timers that renew and retry: an hour of
/// the platform's retries runs in milliseconds. On a running runtime it reads like
/// [`SystemClock`], without following later jumps of the system clock.
#[derive(Debug, Clone, Copy)]
pub struct TokioClock {
    wall: SystemTime,
    start: tokio::time::Instant,
}

impl TokioClock {
    /// A clock starting at the system's current time.
    pub fn new() -> Self {
        Self::starting_at(SystemTime::now())
    }

    /// A clock showing `wall` now, and moving with tokio's clock from here on.
    pub fn starting_at(wall: SystemTime) -> Self {
        Self {
            wall,
            start: tokio::time::Instant::now(),
        }
    }
}

impl Default for TokioClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for TokioClock {
    fn now(&self) -> SystemTime {
        self.wall + self.start.elapsed()
    }
}

/// A clock that stands still until told to move, for tests.
///
/// ```
/// use std::time::{Duration, UNIX_EPOCH};
/// use aisoule_webhooks::clock::{Clock, ManualClock};
///
/// let clock = ManualClock::new(UNIX_EPOCH + Duration::from_secs(1_780_369_298));
/// clock.advance(Duration::from_secs(10));
/// assert_eq!(clock.now(), UNIX_EPOCH + Duration::from_secs(1_780_369_308));
/// ```
#[derive(Debug)]
pub struct ManualClock {
    now: Mutex<SystemTime>,
}

impl ManualClock {
    /// A clock showing `start`.
    pub fn new(start: SystemTime) -> Self {
        Self {
            now: Mutex::new(start),
        }
    }

    /// Moves the clock forward by `by`.
    pub fn advance(&self, by: Duration) {
        let mut now = self.now.lock().unwrap_or_else(|p| p.into_inner());
        *now += by;
    }

    /// Sets the clock to `to`, forward or back.
    pub fn set(&self, to: SystemTime) {
        *self.now.lock().unwrap_or_else(|p| p.into_inner()) = to;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> SystemTime {
        *self.now.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl<C: Clock> Clock for Arc<C> {
    fn now(&self) -> SystemTime {
        (**self).now()
    }
}

/// The process's one [`SystemClock`] as a shared clock: the default of every part that keeps a
/// clock, so that parts left at their default are known to keep the same one
/// ([`same_clock`]), and a time one of them read serves the others.
pub(crate) fn system() -> Arc<dyn Clock> {
    static SYSTEM: LazyLock<Arc<dyn Clock>> = LazyLock::new(|| Arc::new(SystemClock));
    Arc::clone(&SYSTEM)
}

/// Whether `a` and `b` are the same clock, so that a time read from one is the other's too.
pub(crate) fn same_clock(a: &Arc<dyn Clock>, b: &Arc<dyn Clock>) -> bool {
    std::ptr::addr_eq(Arc::as_ptr(a), Arc::as_ptr(b))
}

/// A time read from a clock, kept with the clock it came from, so that a part keeping time by
/// the same clock uses it instead of reading its own: the receiver reads its clock once when a
/// delivery arrives, for the replay window, the memory store's claim and the inbox's
/// `received_at`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Reading<'a> {
    clock: &'a Arc<dyn Clock>,
    at: SystemTime,
}

impl<'a> Reading<'a> {
    /// Reads `clock` now.
    pub(crate) fn now(clock: &'a Arc<dyn Clock>) -> Self {
        Self {
            clock,
            at: clock.now(),
        }
    }

    /// The time read.
    pub(crate) fn at(self) -> SystemTime {
        self.at
    }

    /// The time read, if `clock` is the clock it was read from.
    pub(crate) fn on(self, clock: &Arc<dyn Clock>) -> Option<SystemTime> {
        same_clock(self.clock, clock).then_some(self.at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every default clock is the one shared `SystemClock`, so that defaults share readings.
    #[test]
    fn the_default_clocks_are_one_clock() {
        assert!(same_clock(&system(), &system()));
        assert!(!same_clock(
            &system(),
            &(Arc::new(SystemClock) as Arc<dyn Clock>)
        ));
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_780_369_298);
        let reading = Reading {
            clock: &system(),
            at: now,
        };
        assert_eq!(reading.on(&system()), Some(now));
        assert_eq!(reading.on(&(Arc::new(SystemClock) as Arc<dyn Clock>)), None);
    }
}
