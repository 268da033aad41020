//! The audit trail on disk (`m2m_security::audit_trail`): every event a service logs to the
//! `audit` target, whatever `M2M_LOG` says, is appended to the trail by a writer thread, and
//! `m2m audit verify` / `m2m audit show` read it back.
//!
//! The request path never waits for the disk: events go through a bounded queue; when it is full
//! they are counted, and the count is written as an entry of its own ("audit entries dropped").
//! The writer syncs the file within 100 ms of an entry, and no more often.

use anyhow::Context;
use m2m_security::audit_trail::{self, Appender};
use serde_json::{json, Map, Value};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::layer::Context as LayerContext;
use tracing_subscriber::Layer;

/// Events waiting for the writer at most; beyond, they are counted as dropped.
const QUEUE: usize = 16 * 1024;

/// Entries per write at most.
const BATCH: usize = 512;

/// The writer's pause after a drain: entries are written at most this much later.
const BATCH_PAUSE: Duration = Duration::from_millis(5);

/// Entries reach the disk (fsync) within this time of being written, and the disk is asked no
/// more often: a flood of refused handshakes costs one sync per interval, not one per entry.
const SYNC_EVERY: Duration = Duration::from_millis(100);

/// The target of audit events.
const TARGET: &str = "audit";

/// A field's text at most, in bytes: some reasons quote what a peer sent (an error text, an
/// identity), and an entry must stay small (the Appender reads only the trail's last MiB).
const FIELD_MAX: usize = 1024;

/// One event for the trail.
struct Record {
    event: String,
    fields: Map<String, Value>,
}

/// What the writer thread is handed: an event, or a request to have every event handed before
/// it on the disk (answered on the channel it carries).
enum Message {
    Record(Record),
    Flush(std::sync::mpsc::Sender<()>),
}

/// The layer that hands `audit` events to the writer thread.
pub struct AuditLayer {
    tx: SyncSender<Message>,
    dropped: Arc<AtomicU64>,
}

/// The writer of this process's trail, for [`flush`].
static WRITER: std::sync::OnceLock<SyncSender<Message>> = std::sync::OnceLock::new();

/// How long [`flush`] waits for the writer at most.
const FLUSH_WAIT: Duration = Duration::from_secs(2);

/// Has every audit event logged so far written and synced before the process ends: the writer
/// thread would otherwise be stopped with the last events (a command's one event, a service's
/// last ones) still queued. Waits [`FLUSH_WAIT`] at most; nothing to do without a trail.
pub fn flush() {
    let Some(tx) = WRITER.get() else {
        return;
    };
    let deadline = Instant::now() + FLUSH_WAIT;
    let (done, wait) = std::sync::mpsc::channel();
    let mut flush = Message::Flush(done);
    // A full queue is waited for within the deadline too: a writer stuck on the disk must not
    // keep the process from ending.
    let sent = loop {
        match tx.try_send(flush) {
            Ok(()) => break true,
            Err(TrySendError::Full(m)) if Instant::now() < deadline => {
                flush = m;
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(_) => break false,
        }
    };
    let left = deadline.saturating_duration_since(Instant::now());
    if !sent || wait.recv_timeout(left).is_err() {
        eprintln!("audit trail: its last entries may not have reached the disk");
    }
}

/// Flushes the trail when dropped: at the end of `main`, also when it unwinds from a panic.
pub struct FlushOnExit;

impl Drop for FlushOnExit {
    fn drop(&mut self) {
        flush();
    }
}

/// Opens the trail (its chain continues), writes the opening entry and starts the writer.
pub fn layer(path: &Path, service: &str) -> anyhow::Result<AuditLayer> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        m2m_security::data_files::private_dir(dir).map_err(anyhow::Error::msg)?;
    }
    let mut appender = Appender::open(path).map_err(anyhow::Error::msg)?;
    let mut fields = Map::new();
    fields.insert("service".into(), json!(service));
    fields.insert("pid".into(), json!(std::process::id()));
    appender
        .append("audit trail opened", fields)
        .map_err(anyhow::Error::msg)?;
    appender.sync().map_err(anyhow::Error::msg)?;
    let (tx, rx) = sync_channel(QUEUE);
    // One trail per process: a second layer (none is made today) would not be flushed.
    let _ = WRITER.set(tx.clone());
    let dropped = Arc::new(AtomicU64::new(0));
    let counter = Arc::clone(&dropped);
    std::thread::Builder::new()
        .name("audit-trail".into())
        .spawn(move || write(appender, rx, &counter))
        .context("cannot start the audit trail writer")?;
    Ok(AuditLayer { tx, dropped })
}

fn write(mut appender: Appender, rx: Receiver<Message>, dropped: &AtomicU64) {
    let fail = |e: String| eprintln!("audit trail: {e}");
    let mut unsynced = false;
    let mut last_sync = Instant::now()
        .checked_sub(SYNC_EVERY)
        .unwrap_or_else(Instant::now);
    loop {
        // Entries written but not synced wait for the disk at most SYNC_EVERY.
        let wait = if unsynced {
            SYNC_EVERY.saturating_sub(last_sync.elapsed())
        } else {
            Duration::from_secs(3600)
        };
        let first = match rx.recv_timeout(wait) {
            Ok(r) => Some(r),
            Err(RecvTimeoutError::Timeout) => None,
            Err(RecvTimeoutError::Disconnected) => break,
        };
        let mut next = first;
        let wrote = next.is_some();
        let mut flushed = Vec::new();
        // One write per batch of at most BATCH entries: a syscall per entry cost more than the
        // entry.
        while next.is_some() {
            let mut batch = Vec::new();
            while let Some(m) = next.take() {
                match m {
                    Message::Record(r) => batch.push((r.event, r.fields)),
                    // Answered once what came before it is written and synced, below.
                    Message::Flush(done) => flushed.push(done),
                }
                if batch.len() < BATCH {
                    next = rx.try_recv().ok();
                }
            }
            if !batch.is_empty() {
                if let Err(e) = appender.append_all(batch) {
                    fail(e);
                }
                unsynced = true;
            }
            next = rx.try_recv().ok();
        }
        if wrote {
            // Entries come in bursts (a handshake flood): gather a few milliseconds' worth before
            // the next drain, so that senders find the writer awake instead of waking it for
            // each entry (a wake-up per handshake cost a sixth of the handshake rate).
            std::thread::sleep(BATCH_PAUSE);
        }
        let lost = dropped.swap(0, Ordering::Relaxed);
        if lost > 0 {
            let mut fields = Map::new();
            fields.insert("count".into(), json!(lost));
            if let Err(e) = appender.append("audit entries dropped", fields) {
                fail(e);
            }
            unsynced = true;
        }
        if unsynced && (last_sync.elapsed() >= SYNC_EVERY || !flushed.is_empty()) {
            if let Err(e) = appender.sync() {
                fail(e);
            }
            unsynced = false;
            last_sync = Instant::now();
        }
        for done in flushed {
            let _ = done.send(());
        }
    }
    if unsynced {
        let _ = appender.sync();
    }
}

impl<S: Subscriber> Layer<S> for AuditLayer {
    fn on_event(&self, event: &Event<'_>, _ctx: LayerContext<'_, S>) {
        if event.metadata().target() != TARGET {
            return;
        }
        let mut visitor = Fields::default();
        event.record(&mut visitor);
        visitor.fields.insert(
            "level".into(),
            json!(event.metadata().level().as_str().to_ascii_lowercase()),
        );
        let record = Message::Record(Record {
            event: visitor.message.unwrap_or_default(),
            fields: visitor.fields,
        });
        if let Err(TrySendError::Full(_)) = self.tx.try_send(record) {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// The fields of an event as JSON values; `message` apart.
#[derive(Default)]
struct Fields {
    message: Option<String>,
    fields: Map<String, Value>,
}

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.put(field, json!(format!("{value:?}")));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.put(field, json!(value));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.put(field, json!(value));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.put(field, json!(value));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.put(field, json!(value));
    }
}

impl Fields {
    fn put(&mut self, field: &Field, value: Value) {
        let value = match value {
            Value::String(s) if s.len() > FIELD_MAX => Value::String(shortened(s)),
            other => other,
        };
        if field.name() == "message" {
            self.message = Some(match value {
                Value::String(s) => s,
                other => other.to_string(),
            });
        } else {
            self.fields.insert(field.name().to_owned(), value);
        }
    }
}

/// `s` cut to [`FIELD_MAX`] bytes at a character boundary, marked as cut.
fn shortened(mut s: String) -> String {
    let mut end = FIELD_MAX;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s.truncate(end);
    s.push_str("...(cut)");
    s
}

#[derive(clap::Args)]
pub struct AuditArgs {
    #[command(subcommand)]
    command: AuditCommand,
}

#[derive(clap::Subcommand)]
enum AuditCommand {
    /// Check the whole chain: every entry's hash and its link to the one before. Prints the head
    /// (last seq and hash) to record elsewhere; exits 2 at the first break, naming its line.
    Verify(VerifyArgs),
    /// Print the entries (verified on the way) that match every filter given.
    Show(ShowArgs),
}

#[derive(clap::Args)]
struct TrailArgs {
    /// The trail file.
    #[arg(long, conflicts_with = "config")]
    file: Option<PathBuf>,
    /// The CSE configuration whose trail to read (`storage.audit_trail`, else audit.log in
    /// `storage.path`).
    #[arg(long)]
    config: Option<PathBuf>,
}

#[derive(clap::Args)]
struct VerifyArgs {
    #[command(flatten)]
    trail: TrailArgs,
    /// A head recorded earlier, SEQ:HASH: that entry must still be in the trail with that hash
    /// (a trail rewritten from an entry on, or cut off, no longer has it).
    #[arg(long, value_name = "SEQ:HASH")]
    expect: Option<String>,
}

#[derive(clap::Args)]
struct ShowArgs {
    #[command(flatten)]
    trail: TrailArgs,
    /// Entries whose event contains this text (case-insensitive).
    #[arg(long)]
    event: Option<String>,
    /// Entries with this field value, `name=value` (repeatable; all must match).
    #[arg(long = "field", value_name = "NAME=VALUE")]
    fields: Vec<String>,
    /// Entries at or after this time (RFC 3339, e.g. 2026-12-05T10:00:00Z).
    #[arg(long)]
    since: Option<String>,
    /// Entries before this time (RFC 3339).
    #[arg(long)]
    until: Option<String>,
    /// One JSON object per entry instead of one line of text.
    #[arg(long)]
    json: bool,
}

impl TrailArgs {
    fn path(&self) -> anyhow::Result<PathBuf> {
        match (&self.file, &self.config) {
            (Some(f), _) => Ok(f.clone()),
            (None, Some(c)) => Ok(m2m_cse::Config::load(c)?.audit_trail_path()),
            (None, None) => Ok(m2m_cse::Config::default().audit_trail_path()),
        }
    }
}

/// `m2m audit`: returns the exit code (0 intact, 2 broken).
pub fn run(args: AuditArgs) -> anyhow::Result<i32> {
    match args.command {
        AuditCommand::Verify(v) => {
            let path = v.trail.path()?;
            let expect = v
                .expect
                .as_deref()
                .map(|e| {
                    e.split_once(':')
                        .and_then(|(seq, hash)| Some((seq.parse::<u64>().ok()?, hash.to_owned())))
                        .context("--expect: SEQ:HASH, as `verify` printed them")
                })
                .transpose()?;
            let file = std::fs::File::open(&path)
                .with_context(|| format!("cannot open {}", path.display()))?;
            let mut found = None;
            let result = audit_trail::verify(file, |e| {
                if expect.as_ref().is_some_and(|(seq, _)| *seq == e.seq) {
                    found = Some(e.hash.clone());
                }
            });
            if let (Ok(_), Some((seq, hash))) = (&result, &expect) {
                if found.as_ref() != Some(hash) {
                    println!(
                        "{}: chain BROKEN: entry {seq} no longer has the recorded hash {hash} (the trail was rewritten or cut off)",
                        path.display()
                    );
                    return Ok(2);
                }
            }
            match result {
                Ok(head) => {
                    println!(
                        "{}: {} entries, chain intact; head: seq {} hash {}",
                        path.display(),
                        head.entries,
                        head.seq,
                        head.hash
                    );
                    Ok(0)
                }
                Err(broken) => {
                    println!("{}: chain BROKEN at {broken}", path.display());
                    Ok(2)
                }
            }
        }
        AuditCommand::Show(s) => show(&s),
    }
}

fn show(s: &ShowArgs) -> anyhow::Result<i32> {
    let path = s.trail.path()?;
    let file =
        std::fs::File::open(&path).with_context(|| format!("cannot open {}", path.display()))?;
    let time = |t: &Option<String>| -> anyhow::Result<Option<chrono::DateTime<chrono::Utc>>> {
        t.as_deref()
            .map(|t| {
                chrono::DateTime::parse_from_rfc3339(t)
                    .map(|t| t.with_timezone(&chrono::Utc))
                    .with_context(|| format!("'{t}' is not an RFC 3339 time"))
            })
            .transpose()
    };
    let (since, until) = (time(&s.since)?, time(&s.until)?);
    let wanted: Vec<(String, String)> = s
        .fields
        .iter()
        .map(|f| {
            f.split_once('=')
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .with_context(|| format!("--field {f}: expected NAME=VALUE"))
        })
        .collect::<anyhow::Result<_>>()?;
    let needle = s.event.as_deref().map(str::to_lowercase);
    let mut out = std::io::stdout().lock();
    let mut failed = None;
    let result = audit_trail::verify(file, |e| {
        let at = chrono::DateTime::parse_from_rfc3339(&e.ts)
            .ok()
            .map(|t| t.with_timezone(&chrono::Utc));
        let keep = needle
            .as_ref()
            .is_none_or(|n| e.event.to_lowercase().contains(n))
            && since.is_none_or(|s| at.is_some_and(|t| t >= s))
            && until.is_none_or(|u| at.is_some_and(|t| t < u))
            && wanted.iter().all(|(k, v)| {
                e.fields.get(k).is_some_and(|f| match f {
                    Value::String(s) => s == v,
                    // A number or a boolean, compared as the JSON text it is written as.
                    other => serde_json::from_str::<Value>(v).is_ok_and(|w| w == *other),
                })
            });
        if !keep || failed.is_some() {
            return;
        }
        let line = if s.json {
            e.to_json().to_string()
        } else {
            let fields: Vec<String> = e.fields.iter().map(|(k, v)| format!("{k}={v}")).collect();
            format!("{} #{} {} {}", e.ts, e.seq, e.event, fields.join(" "))
        };
        if let Err(err) = std::io::Write::write_all(&mut out, format!("{line}\n").as_bytes()) {
            failed = Some(err);
        }
    });
    if let Some(e) = failed {
        return Err(e).context("cannot write the entries");
    }
    match result {
        Ok(_) => Ok(0),
        Err(broken) => {
            eprintln!(
                "{}: chain BROKEN at {broken}; entries after it are not shown",
                path.display()
            );
            Ok(2)
        }
    }
}
