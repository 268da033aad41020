//! Keeping the write-ahead log bounded under sustained writes.
//!
//! SQLite appends every commit to `resources.db-wal` and starts the log again from its beginning
//! only when a writer begins a transaction while every frame of the log has been copied into the
//! database (checkpointed) and no reader still reads from the log. A checkpointer thread that runs
//! beside a busy writer never sees that moment: the writer has always appended more by the time a
//! checkpoint ends, so the log grows forever (17 GB of log for a 515 MB database was measured).
//!
//! So the work is split. A background thread checkpoints often (PASSIVE: it never blocks the
//! writer or readers) and does the bulk of the copying. When the log file has grown past a limit
//! that follows the database's size, the writer itself, between two batches, runs one more
//! checkpoint: nothing can be appended meanwhile, it only has to copy what was appended since the
//! background one, and when it has copied everything the writer's next transaction restarts the
//! log, which `journal_size_limit` then truncates to the limit. No acknowledged write is affected:
//! a checkpoint only copies committed frames.

use rusqlite::Connection;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The log may grow to this fraction of the database before the writer checkpoints it.
const DB_FRACTION: u64 = 2;
/// Bounds of that limit: small databases still get a useful log, large ones a bounded one.
const MIN_LIMIT: u64 = 1 << 20;
const MAX_LIMIT: u64 = 64 << 20;
/// The writer tries at most this often (a reader that pins the log makes an attempt fail).
const RETRY: Duration = Duration::from_millis(50);
/// How often the background thread checkpoints.
pub const BACKGROUND_PERIOD: Duration = Duration::from_millis(200);

/// The writer's side of the policy.
pub struct WalLimit {
    db: PathBuf,
    wal: PathBuf,
    limit: u64,
    last_attempt: Option<Instant>,
}

impl WalLimit {
    pub fn new(db: &Path) -> WalLimit {
        let mut wal = db.as_os_str().to_owned();
        wal.push("-wal");
        WalLimit {
            db: db.to_owned(),
            wal: PathBuf::from(wal),
            limit: MIN_LIMIT,
            last_attempt: None,
        }
    }

    /// The limit for the current database size.
    fn limit_for(db_bytes: u64) -> u64 {
        (db_bytes / DB_FRACTION).clamp(MIN_LIMIT, MAX_LIMIT)
    }

    /// Sets `journal_size_limit` for a new connection (it truncates the log after a restart).
    pub fn configure(&mut self, conn: &Connection) -> rusqlite::Result<()> {
        let db = std::fs::metadata(&self.db).map(|m| m.len()).unwrap_or(0);
        self.limit = Self::limit_for(db);
        conn.pragma_update(None, "journal_size_limit", self.limit as i64)
    }

    /// Called by the writer between batches (no transaction open): checkpoints when the log has
    /// outgrown its limit. Returns whether it checkpointed everything.
    pub fn after_batch(&mut self, conn: &Connection) -> bool {
        let Ok(wal) = std::fs::metadata(&self.wal).map(|m| m.len()) else {
            return false;
        };
        if wal <= self.limit {
            return false;
        }
        if self.last_attempt.is_some_and(|t| t.elapsed() < RETRY) {
            return false;
        }
        self.last_attempt = Some(Instant::now());
        let full = matches!(
            conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
                Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?, r.get::<_, i64>(2)?))
            }),
            Ok((0, log, done)) if log == done
        );
        // The database grew with what was copied: follow it.
        if let Err(e) = self.configure(conn) {
            tracing::warn!(error = %e, "resource store: cannot set the log's size limit");
        }
        full
    }
}

/// The background checkpointer: PASSIVE checkpoints every [`BACKGROUND_PERIOD`] until the writer
/// has ended (`stopped` disconnects) or checkpoints fail repeatedly.
pub fn checkpoint_loop(conn: Connection, stopped: std::sync::mpsc::Receiver<()>) {
    use std::sync::mpsc::RecvTimeoutError;
    let mut failures = 0;
    while failures < 20 {
        match stopped.recv_timeout(BACKGROUND_PERIOD) {
            Err(RecvTimeoutError::Timeout) => {}
            Ok(()) | Err(RecvTimeoutError::Disconnected) => return,
        }
        match conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
            Ok(()) => failures = 0,
            Err(_) => failures += 1,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_limit_follows_the_database() {
        assert_eq!(WalLimit::limit_for(0), MIN_LIMIT);
        assert_eq!(WalLimit::limit_for(100 << 20), 50 << 20);
        assert_eq!(WalLimit::limit_for(10 << 30), MAX_LIMIT);
    }
}
