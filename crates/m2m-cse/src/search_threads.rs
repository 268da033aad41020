//! The threads that run searches (discovery, TS-0004 clause 7.3.3.17, and the child listings of
//! `rcn` 4/5/6/8): bulk work kept apart from the request path.
//!
//! A search reads up to thousands of rows; a point request (`la`, create, retrieve) a few. Run on
//! the async workers, a search would delay every request queued behind it; run on an unbounded
//! blocking pool, a burst of searches would start a thread each and take every core. Here a fixed
//! number of threads (one per core) take searches from a queue, at a lower CPU priority (nice
//! [`NICE`]) so that when the cores are busy the scheduler serves point requests first and a loop
//! of discoveries cannot take the CSE's rate from everyone else. A discovery's time budget counts
//! from its arrival, so the time it waits here is part of it (`discovery::Walk::deadline`).

use m2m_core::{M2mError, M2mResult};
use std::panic::AssertUnwindSafe;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};

/// The nice value of the search threads: CFS weight 110 against 1024 for the request path.
pub const NICE: i32 = 10;

type Job = Box<dyn FnOnce() + Send>;

/// A fixed pool of search threads; they end when it is dropped.
pub struct SearchThreads {
    queue: mpsc::Sender<Job>,
}

impl SearchThreads {
    /// Starts `threads` threads (at least one).
    pub fn start(threads: usize) -> Self {
        let (queue, jobs) = mpsc::channel::<Job>();
        let jobs = Arc::new(Mutex::new(jobs));
        for n in 0..threads.max(1) {
            let jobs = Arc::clone(&jobs);
            let spawned = std::thread::Builder::new()
                .name(format!("m2m-search-{n}"))
                .spawn(move || work(&jobs));
            if let Err(e) = spawned {
                tracing::error!("cannot start a search thread: {e}");
            }
        }
        SearchThreads { queue }
    }

    /// One thread per core.
    pub fn per_core() -> Self {
        Self::start(std::thread::available_parallelism().map_or(2, |n| n.get()))
    }

    /// Runs `search` on a search thread.
    pub async fn run<R: Send + 'static>(
        &self,
        search: impl FnOnce() -> M2mResult<R> + Send + 'static,
    ) -> M2mResult<R> {
        let (answer, answered) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move || {
            let result = std::panic::catch_unwind(AssertUnwindSafe(search))
                .unwrap_or_else(|_| Err(M2mError::internal("search failed")));
            let _ = answer.send(result);
        });
        self.queue
            .send(job)
            .map_err(|_| M2mError::internal("search failed"))?;
        answered
            .await
            .map_err(|_| M2mError::internal("search failed"))?
    }
}

fn work(jobs: &Mutex<mpsc::Receiver<Job>>) {
    lower_priority();
    loop {
        // The lock is held only while waiting for the next job, never while running one.
        let job = match jobs.lock() {
            Ok(jobs) => jobs.recv(),
            Err(_) => return,
        };
        match job {
            Ok(job) => job(),
            Err(_) => return, // the pool was dropped
        }
    }
}

/// Raises this thread's nice value to [`NICE`] (Linux schedules threads, not processes, so this
/// touches no other thread). Without it the searches still run, at the request path's priority.
fn lower_priority() {
    #[cfg(target_os = "linux")]
    {
        let tid = rustix::thread::gettid();
        if let Err(e) = rustix::process::setpriority_process(Some(tid), NICE) {
            tracing::warn!("search threads keep the default CPU priority: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn runs_searches_off_the_caller_at_a_lower_priority() {
        let threads = SearchThreads::start(2);
        let (name, nice) = threads
            .run(|| {
                let name = std::thread::current().name().unwrap_or("").to_string();
                #[cfg(target_os = "linux")]
                let nice = rustix::process::getpriority_process(Some(rustix::thread::gettid()))
                    .map_err(|_| M2mError::internal("getpriority"))?;
                #[cfg(not(target_os = "linux"))]
                let nice = NICE;
                Ok((name, nice))
            })
            .await
            .unwrap();
        assert!(name.starts_with("m2m-search-"), "{name}");
        assert_eq!(nice, NICE);
    }

    #[tokio::test]
    async fn a_panicking_search_is_an_error_and_the_thread_survives() {
        let threads = SearchThreads::start(1);
        let r: M2mResult<()> = threads.run(|| panic!("boom")).await;
        assert_eq!(
            r.unwrap_err().rsc,
            m2m_core::ResponseStatusCode::InternalServerError
        );
        assert_eq!(threads.run(|| Ok(7)).await.unwrap(), 7);
    }
}
