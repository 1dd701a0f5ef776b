//! How a thread waiting for the engine's verdict on a held call learns that a decision
//! arrived: a generation counter under a lock with a condition variable. The counter
//! closes the gap between looking for a verdict and going to sleep: a waiter sleeps
//! only if no decision came since it looked.

use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

/// Shared by the decision subscriber (which bumps it) and the waiters.
#[derive(Clone, Default)]
pub struct VerdictSignal(Arc<(Mutex<u64>, Condvar)>);

impl VerdictSignal {
    /// The current generation; pass it to [`VerdictSignal::wait`] after looking.
    pub fn generation(&self) -> u64 {
        self.0.0.lock().map_or(0, |g| *g)
    }

    /// Something changed (a decision was applied, a call was held): wake the waiters.
    pub fn notify(&self) {
        let (lock, cvar) = &*self.0;
        if let Ok(mut g) = lock.lock() {
            *g += 1;
        }
        cvar.notify_all();
    }

    /// Sleeps until the generation moves past `seen` or `timeout` passes.
    pub fn wait(&self, seen: u64, timeout: Duration) {
        let (lock, cvar) = &*self.0;
        if let Ok(g) = lock.lock() {
            let _ = cvar.wait_timeout_while(g, timeout, |g| *g == seen);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_notification_before_the_wait_is_not_missed() {
        let signal = VerdictSignal::default();
        let seen = signal.generation();
        signal.notify();
        let started = std::time::Instant::now();
        signal.wait(seen, Duration::from_secs(30));
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn a_waiter_is_woken_from_another_thread() {
        let signal = VerdictSignal::default();
        let seen = signal.generation();
        let other = signal.clone();
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            other.notify();
        });
        signal.wait(seen, Duration::from_secs(30));
        assert!(signal.generation() > seen);
        t.join().unwrap();
    }
}
