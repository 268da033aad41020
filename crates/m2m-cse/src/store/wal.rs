//! Keeping the write-ahead log bounded under sustained writes.
//!
//! SQLite appends every commit to `resources.db-wal` and starts the log again from its beginning
//! only when a writer begins a transaction while every frame of the log has been copied into the
//! database (checkpointed) and no reader still reads from the log. A checkpointer thread that runs
//! beside a busy writer never sees that moment: the writer has always appended more by the time a
//! checkpoint ends, so the log grows forever (17 GB of log for a 515 MB database was measured).
//!
//! So the work is split. A background thread checkpoints often (PASSIVE: it never blocks the
//! writer or readers) and does all the bulk copying. When the log file has grown past a limit
//! that follows the database's size, it checkpoints again and again until one pass has almost
//! nothing left to copy, and then tells the writer. The writer, between two batches, runs the last
//! checkpoint itself (RESTART: nothing can be appended meanwhile, it copies the few frames
//! appended since, waits for the readers of the old log to finish, which takes microseconds), so
//! its next transaction starts the log again, and `journal_size_limit` truncates the file to the
//! limit. The writer pauses for a short copy, never for the bulk. No acknowledged write is
//! affected: a checkpoint only copies committed frames.

use rusqlite::Connection;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The log may grow to the database's size divided by this before it is started again.
const DB_FRACTION: u64 = 4;
/// Bounds of that limit: small databases still get a useful log, large ones a bounded one.
const MIN_LIMIT: u64 = 1 << 20;
const MAX_LIMIT: u64 = 64 << 20;
/// How often the background thread checkpoints.
const BACKGROUND_PERIOD: Duration = Duration::from_millis(50);
/// A background pass this short leaves the writer little to copy: time to hand over.
const SHORT_PASS: Duration = Duration::from_millis(3);
/// Passes the background thread tries before handing over anyway.
const MAX_PASSES: usize = 8;
/// The database file, whose size the limit follows.
#[derive(Clone)]
struct Files {
    db: PathBuf,
}

impl Files {
    /// The log's limit for the database's current size.
    fn limit(&self) -> u64 {
        limit_for(std::fs::metadata(&self.db).map_or(0, |m| m.len()))
    }
}

/// Bytes of log per frame: a page and its 24-byte header.
fn frame_bytes(conn: &Connection) -> u64 {
    let page: i64 = conn
        .query_row("PRAGMA page_size", [], |r| r.get(0))
        .unwrap_or(4096);
    page as u64 + 24
}

fn limit_for(db_bytes: u64) -> u64 {
    (db_bytes / DB_FRACTION).clamp(MIN_LIMIT, MAX_LIMIT)
}

/// The writer's side of the policy.
pub struct WalLimit {
    files: Files,
    /// Set by the background thread when the writer should restart the log.
    ready: Arc<AtomicBool>,
}

/// The background thread's side.
pub struct Checkpointer {
    files: Files,
    ready: Arc<AtomicBool>,
}

/// Both sides for the database at `db`.
pub fn policy(db: &Path) -> (WalLimit, Checkpointer) {
    let files = Files { db: db.to_owned() };
    let ready = Arc::new(AtomicBool::new(false));
    (
        WalLimit {
            files: files.clone(),
            ready: Arc::clone(&ready),
        },
        Checkpointer { files, ready },
    )
}

impl WalLimit {
    /// Sets `journal_size_limit`, the size the log file is cut to when the log restarts: twice
    /// the current limit, so that the file follows the database without being cut and grown
    /// again at every restart.
    pub fn configure(&self, conn: &Connection) -> rusqlite::Result<()> {
        conn.pragma_update(None, "journal_size_limit", (2 * self.files.limit()) as i64)
    }

    /// Called by the writer between batches (no transaction open): restarts the log when the
    /// background thread has handed over.
    pub fn after_batch(&mut self, conn: &Connection) {
        if !self.ready.swap(false, Ordering::AcqRel) {
            return;
        }
        let restarted =
            conn.query_row("PRAGMA wal_checkpoint(RESTART)", [], |r| r.get::<_, i64>(0));
        if !matches!(restarted, Ok(0)) {
            tracing::debug!("resource store: the log could not be restarted yet");
        }
        if let Err(e) = self.configure(conn) {
            tracing::warn!(error = %e, "resource store: cannot set the log's size limit");
        }
    }
}

impl Checkpointer {
    /// PASSIVE checkpoints every [`BACKGROUND_PERIOD`] until the writer has ended (`stopped`
    /// disconnects) or checkpoints fail repeatedly.
    pub fn run(self, conn: Connection, stopped: std::sync::mpsc::Receiver<()>) {
        use std::sync::mpsc::RecvTimeoutError;
        // The frames in the log: the file keeps its size after a restart, the log starts over.
        let passive =
            || conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| r.get::<_, i64>(1));
        let frame = frame_bytes(&conn);
        let mut failures = 0;
        while failures < 20 {
            match stopped.recv_timeout(BACKGROUND_PERIOD) {
                Err(RecvTimeoutError::Timeout) => {}
                Ok(()) | Err(RecvTimeoutError::Disconnected) => return,
            }
            if self.ready.load(Ordering::Acquire) {
                // The writer has not taken over yet (no write since): leave the lock to it.
                continue;
            }
            let frames = match passive() {
                Ok(frames) => {
                    failures = 0;
                    frames.max(0) as u64
                }
                Err(_) => {
                    failures += 1;
                    continue;
                }
            };
            if frames * frame <= self.files.limit() {
                continue;
            }
            for _ in 0..MAX_PASSES {
                let started = Instant::now();
                if passive().is_err() || started.elapsed() < SHORT_PASS {
                    break;
                }
            }
            self.ready.store(true, Ordering::Release);
        }
        tracing::error!("resource store: checkpoints keep failing; the log is no longer bounded");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_limit_follows_the_database() {
        assert_eq!(limit_for(0), MIN_LIMIT);
        assert_eq!(limit_for(100 << 20), 25 << 20);
        assert_eq!(limit_for(10 << 30), MAX_LIMIT);
    }
}
