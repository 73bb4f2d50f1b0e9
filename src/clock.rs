//! Where time comes from.
//!
//! Every time-dependent rule in bearer-guard (token `exp`/`nbf`/`iat`, JWKS TTLs,
//! the unknown-`kid` cooldown, last-known-good staleness, the bundled server's code
//! lifetime) reads one injectable [`Clock`], so tests move time by hand instead of
//! sleeping.
//!
//! ```
//! use std::time::Duration;
//! use bearer_guard::clock::{Clock, ManualClock};
//!
//! let clock = ManualClock::at_unix(1_700_000_000);
//! clock.advance(Duration::from_secs(90));
//! assert_eq!(clock.unix_seconds(), 1_700_000_090);
//! ```

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A source of wall-clock time.
pub trait Clock: Send + Sync + fmt::Debug + 'static {
    /// The current time.
    fn now(&self) -> SystemTime;

    /// The current time as whole seconds since the Unix epoch (0 before it).
    fn unix_seconds(&self) -> u64 {
        self.now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0)
    }
}

/// The operating system's clock. The default everywhere.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }
}

/// A clock that only moves when told to; clones share the same time.
///
/// Meant for tests: hand one clone to a [`Guard`](crate::Guard) (or the bundled
/// authorization server) and keep another to move time.
#[derive(Debug, Clone)]
pub struct ManualClock {
    unix_millis: Arc<AtomicU64>,
}

impl ManualClock {
    /// A clock standing at `secs` seconds after the Unix epoch.
    pub fn at_unix(secs: u64) -> Self {
        Self {
            unix_millis: Arc::new(AtomicU64::new(secs.saturating_mul(1000))),
        }
    }

    /// A clock standing at the current system time.
    pub fn starting_now() -> Self {
        let millis = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, saturating_millis);
        Self {
            unix_millis: Arc::new(AtomicU64::new(millis)),
        }
    }

    /// Moves the clock forward by `by` (it stops at the end of `u64` milliseconds
    /// rather than wrapping).
    pub fn advance(&self, by: Duration) {
        let by = saturating_millis(by);
        let _ = self
            .unix_millis
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |ms| {
                Some(ms.saturating_add(by))
            });
    }

    /// Sets the clock to `secs` seconds after the Unix epoch.
    pub fn set_unix(&self, secs: u64) {
        self.unix_millis
            .store(secs.saturating_mul(1000), Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(self.unix_millis.load(Ordering::SeqCst))
    }
}

/// Whole milliseconds of `d`, `u64::MAX` for durations beyond it (585 million
/// years): `as_millis() as u64` would wrap a huge setting to a small one.
pub(crate) fn saturating_millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// A shared, type-erased clock.
pub type SharedClock = Arc<dyn Clock>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manual_clock_clones_share_time() {
        let a = ManualClock::at_unix(10);
        let b = a.clone();
        a.advance(Duration::from_secs(5));
        assert_eq!(b.unix_seconds(), 15);
        b.set_unix(100);
        assert_eq!(a.unix_seconds(), 100);
    }

    #[test]
    fn durations_beyond_u64_millis_saturate_instead_of_wrapping() {
        assert_eq!(saturating_millis(Duration::from_millis(1500)), 1500);
        assert_eq!(saturating_millis(Duration::MAX), u64::MAX);
        // 2^64 ms + 1 ms would wrap to 1 ms with `as u64`.
        let past_u64 = Duration::from_secs(u64::MAX / 1000 + 1);
        assert_eq!(saturating_millis(past_u64), u64::MAX);
        let clock = ManualClock::at_unix(10);
        clock.advance(Duration::MAX);
        clock.advance(Duration::from_secs(1));
        assert_eq!(clock.unix_millis.load(Ordering::SeqCst), u64::MAX);
    }

    #[test]
    fn system_clock_is_after_2020() {
        assert!(SystemClock.unix_seconds() > 1_577_836_800);
    }
}
