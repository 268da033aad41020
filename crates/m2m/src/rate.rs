//! Operations per second of concurrent workers, each on its own kept-alive connection: the rate
//! loop of `m2m bench-tls` and `m2m bench-maf` (a measurement tool, no oneM2M clause).

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// One benchmarked operation of a worker; true when it succeeded.
pub type Op = Box<dyn FnMut() -> Pin<Box<dyn Future<Output = bool> + Send>> + Send>;

/// Runs `workers` workers (worker `i` doing `make(i)` back to back) for `warm_up` (not counted)
/// then `seconds`; returns the successes per second of the measured span and all failures.
pub async fn per_second<F, Fut>(
    workers: usize,
    seconds: u64,
    warm_up: Option<Duration>,
    mut make: F,
) -> (f64, u64)
where
    F: FnMut(usize) -> Fut,
    Fut: Future<Output = Op>,
{
    let done = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::with_capacity(workers);
    for i in 0..workers {
        let mut op = make(i).await;
        let (done, failed, stop) = (done.clone(), failed.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let counter = if op().await { &done } else { &failed };
                counter.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    if let Some(w) = warm_up {
        tokio::time::sleep(w).await;
    }
    let base = done.load(Ordering::Relaxed);
    let start = Instant::now();
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    let n = done.load(Ordering::Relaxed) - base;
    let elapsed = start.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        let _ = t.await;
    }
    (n as f64 / elapsed, failed.load(Ordering::Relaxed))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn successes_and_failures_are_counted_apart() {
        let (rate, failed) = per_second(2, 1, Some(Duration::from_millis(50)), |i| async move {
            let op: Op = Box::new(move || {
                Box::pin(async move {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    i == 0
                })
            });
            op
        })
        .await;
        assert!(rate > 10.0 && rate < 200.0, "{rate}");
        assert!(failed > 10, "{failed}");
    }
}
