//! The one poison-tolerant lock: a panic while a lock was held (a bug, never input)
//! must not turn every later request into a panic too. Every critical section in the
//! crate leaves its data consistent at each step, so the data is still usable.

use std::sync::{Mutex, MutexGuard, PoisonError};

pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
