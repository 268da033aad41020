//! Defaults a conformance test may shorten through the Upper Tester interface (TS-0019,
//! `upper_tester`): the lifetime of a `<request>` and the wait of a poll. Kept here, below the
//! binding that sets them, for the resource types that read them.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// What the commands changed (0: the built-in default).
#[derive(Default)]
pub struct Overrides {
    request_lifetime_secs: AtomicU64,
    poll_wait_secs: AtomicU64,
}

impl Overrides {
    /// Sets the lifetime of a `<request>` whose request names none (0: the default again).
    pub fn shorten_request_lifetime(&self, secs: u64) {
        self.request_lifetime_secs.store(secs, Ordering::Relaxed);
    }

    /// Sets the wait of a poll without a Request Expiration Timestamp (0: the default again).
    pub fn shorten_poll_wait(&self, secs: u64) {
        self.poll_wait_secs.store(secs, Ordering::Relaxed);
    }

    /// The lifetime of a `<request>` whose request names none, when a test shortened it.
    pub fn request_lifetime(&self) -> Option<chrono::Duration> {
        match self.request_lifetime_secs.load(Ordering::Relaxed) {
            0 => None,
            s => Some(chrono::Duration::seconds(s as i64)),
        }
    }

    /// How long a poll, or a request for a polling entity, waits without a Request Expiration
    /// Timestamp, when a test shortened it.
    pub fn poll_wait(&self) -> Option<Duration> {
        match self.poll_wait_secs.load(Ordering::Relaxed) {
            0 => None,
            s => Some(Duration::from_secs(s)),
        }
    }
}
