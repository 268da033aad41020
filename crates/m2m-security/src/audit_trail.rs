//! The audit trail of the Security CSF (seeds/002, security administration): security events
//! appended to a file in which each entry is chained by hash to the previous one, so that an
//! entry changed, removed, inserted or reordered is found by [`verify`].
//!
//! One entry per line: `<hash> <body>`, where `<body>` is a JSON object holding `seq` (1, 2, ...),
//! `ts` (RFC 3339, UTC), `event` (what happened), `fields` (who, where, why: never a secret; the
//! callers log identities and reasons only), and `prev` (the hash of the entry before, 64 zeros
//! for the first), and `<hash>` is the lower-case hex SHA-256 of the exact bytes of `<body>`. No
//! canonical form is needed: the verifier hashes the bytes it reads.
//!
//! The chain has no key: someone who may write the file can rewrite an entry and every hash after
//! it, or cut entries off the end, and the rest still verifies. [`verify`] reports the head (last
//! `seq` and hash); recorded somewhere the host cannot write (a ticket, a remote log) and checked
//! later (`m2m audit verify --expect SEQ:HASH`), it shows both: the recorded entry must still be
//! there with the same hash.
//!
//! A crash may leave an incomplete last line (every entry is one write, its newline included, so
//! a crash never leaves a whole line that is no entry). On opening, the [`Appender`] ends it and
//! writes a recovery entry chained to the last complete entry and naming the fragment's length and
//! hash; [`verify`] accepts a line that is not an entry only without its newline at the very end,
//! or right before the recovery entry that names it. A whole last line that is no entry (a changed
//! last entry) makes the Appender refuse to open the trail rather than write over it.

use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::Path;

/// The `prev` of the first entry.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// The event of the entry written after an incomplete line.
pub const RECOVERED: &str = "audit trail resumed after an incomplete entry";

/// One entry as read back.
#[derive(Clone, Debug, PartialEq)]
pub struct Entry {
    pub seq: u64,
    pub ts: String,
    pub event: String,
    pub fields: Map<String, Value>,
    pub hash: String,
    pub prev: String,
}

impl Entry {
    /// The entry as one JSON object (for `m2m audit show`).
    pub fn to_json(&self) -> Value {
        json!({
            "seq": self.seq,
            "ts": self.ts,
            "event": self.event,
            "fields": self.fields,
            "hash": self.hash,
            "prev": self.prev,
        })
    }
}

/// Where the chain breaks, and how.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Broken {
    /// Line number in the file (1-based).
    pub line: usize,
    pub reason: String,
}

impl std::fmt::Display for Broken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "line {}: {}", self.line, self.reason)
    }
}

/// The result of a verification that found the chain intact.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Head {
    /// Entries read.
    pub entries: u64,
    /// The last entry's seq and hash (`GENESIS` for an empty trail).
    pub seq: u64,
    pub hash: String,
}

/// The hash of a body: lower-case hex SHA-256 of its bytes.
fn digest(body: &[u8]) -> String {
    hex::encode(Sha256::digest(body))
}

/// Splits a line into its hash and body, checking the hash; the body parsed.
fn parse_line(line: &str) -> Result<Entry, String> {
    let (hash, body) = line
        .split_once(' ')
        .ok_or_else(|| "not an entry (no hash)".to_owned())?;
    if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err("not an entry (no hash)".into());
    }
    if digest(body.as_bytes()) != hash {
        return Err("the entry was changed: its hash does not match its content".into());
    }
    let v: Value =
        serde_json::from_str(body).map_err(|_| "the entry is not a JSON object".to_owned())?;
    let field = |k: &str| v.get(k).ok_or_else(|| format!("the entry has no '{k}'"));
    Ok(Entry {
        seq: field("seq")?
            .as_u64()
            .ok_or_else(|| "seq is not a number".to_owned())?,
        ts: field("ts")?.as_str().unwrap_or_default().to_owned(),
        event: field("event")?.as_str().unwrap_or_default().to_owned(),
        fields: field("fields")?.as_object().cloned().unwrap_or_default(),
        prev: field("prev")?.as_str().unwrap_or_default().to_owned(),
        hash: hash.to_owned(),
    })
}

/// Reads a trail, calling `each` for every entry in order, and checks the chain: every hash, every
/// link, every seq. Stops at the first break.
///
/// A line that is not an entry is accepted in two places only: right before a recovery entry
/// (the Appender found it incomplete after a crash), and as a last line without its newline (a
/// write in progress, or a crash before the next start), which is then not counted.
pub fn verify(reader: impl Read, mut each: impl FnMut(&Entry)) -> Result<Head, Broken> {
    let mut reader = BufReader::new(reader);
    let mut prev = GENESIS.to_owned();
    let (mut seq, mut entries, mut number) = (0u64, 0u64, 0usize);
    let mut torn: Option<(usize, Vec<u8>)> = None;
    let mut buf = Vec::new();
    loop {
        buf.clear();
        let n = reader.read_until(b'\n', &mut buf).map_err(|e| Broken {
            line: number + 1,
            reason: format!("cannot read: {e}"),
        })?;
        if n == 0 {
            break;
        }
        number += 1;
        if buf.last() != Some(&b'\n') {
            // The unterminated end: nothing the chain vouches for.
            break;
        }
        buf.pop();
        let parsed = std::str::from_utf8(&buf)
            .map_err(|_| "not an entry (not UTF-8)".to_owned())
            .and_then(parse_line);
        let entry = match parsed {
            Ok(e) => e,
            Err(reason) => {
                if torn.is_some() {
                    return Err(Broken {
                        line: number,
                        reason,
                    });
                }
                torn = Some((number, buf.clone()));
                continue;
            }
        };
        if let Some((t, fragment)) = torn.take() {
            // The recovery entry names the fragment it follows: its length and hash.
            let names_it = entry.event == RECOVERED
                && entry.fields.get("torn_sha256").and_then(Value::as_str)
                    == Some(digest(&fragment).as_str());
            if !names_it {
                return Err(not_recovered(t));
            }
        }
        if entry.prev != prev {
            return Err(Broken {
                line: number,
                reason: "the chain is broken: the entry before it was removed, changed or moved"
                    .into(),
            });
        }
        if Some(entry.seq) != seq.checked_add(1) {
            return Err(Broken {
                line: number,
                reason: format!("seq {} follows seq {seq}", entry.seq),
            });
        }
        each(&entry);
        prev.clone_from(&entry.hash);
        seq = entry.seq;
        entries += 1;
    }
    if let Some((t, _)) = torn {
        return Err(not_recovered(t));
    }
    Ok(Head {
        entries,
        seq,
        hash: prev,
    })
}

fn not_recovered(line: usize) -> Broken {
    Broken {
        line,
        reason: "not an entry, and no recovery entry follows it".into(),
    }
}

/// Appends entries to a trail file, keeping the chain across restarts. Holds an exclusive lock
/// on the file while it lives: a second process on the same trail would fork the chain.
pub struct Appender {
    file: File,
    seq: u64,
    prev: String,
}

impl std::fmt::Debug for Appender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Appender")
            .field("seq", &self.seq)
            .finish_non_exhaustive()
    }
}

/// How the trail ends, as [`Appender::open`] finds it.
enum End {
    /// Empty, or a complete entry last.
    Clean,
    /// A complete entry without its newline, chained to the entry before: only the newline is
    /// missing.
    Unterminated(Entry),
    /// The start of a line that a crash cut off (no newline): its bytes.
    Torn(Vec<u8>),
}

impl Appender {
    /// Opens (creates 0600) the trail, locks it, and finds its last entry. The existing chain is
    /// not verified here (that is `verify`'s job and may take long); only its end is read. An
    /// incomplete last line is ended and a recovery entry written after it. A trail whose last
    /// MiB holds no entry is refused: it needs the operator's eyes, not a new chain.
    pub fn open(path: &Path) -> Result<Self, String> {
        if let Some(t) = crate::data_files::private_file(path)? {
            // Loose permissions found and narrowed: worth an entry of its own below.
            eprintln!("audit trail: {t}");
        }
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .open(path)
            .map_err(|e| format!("cannot open the audit trail {}: {e}", path.display()))?;
        file.try_lock().map_err(|_| {
            format!(
                "the audit trail {} is in use by another process",
                path.display()
            )
        })?;
        let (last, end) = tail(&mut file)
            .map_err(|e| format!("cannot read the audit trail {}: {e}", path.display()))?;
        let (seq, prev) = match &last {
            Some(e) => (e.seq, e.hash.clone()),
            None => (0, GENESIS.to_owned()),
        };
        let mut appender = Self { file, seq, prev };
        match end {
            End::Clean => {}
            End::Unterminated(entry) => {
                appender.write_all(b"\n")?;
                appender.seq = entry.seq;
                appender.prev = entry.hash;
            }
            End::Torn(fragment) => {
                // The fragment stays in the file; the recovery entry vouches for exactly it.
                let mut fields = Map::new();
                fields.insert("torn_bytes".into(), json!(fragment.len()));
                fields.insert("torn_sha256".into(), json!(digest(&fragment)));
                appender.append_after("\n", RECOVERED, fields)?;
            }
        }
        Ok(appender)
    }

    /// Appends one entry (one write of one whole line) and returns its seq.
    pub fn append(&mut self, event: &str, fields: Map<String, Value>) -> Result<u64, String> {
        self.append_after("", event, fields)
    }

    /// Appends entries in one write (the writer's batch): all of them, or none (a write that
    /// fails is undone and the chain stays where it was).
    pub fn append_all(
        &mut self,
        entries: impl IntoIterator<Item = (String, Map<String, Value>)>,
    ) -> Result<u64, String> {
        let (mut seq, mut prev) = (self.seq, self.prev.clone());
        let mut out = String::new();
        for (event, fields) in entries {
            seq = next_seq(seq)?;
            prev = push_entry(&mut out, seq, &prev, &event, fields)?;
        }
        if out.is_empty() {
            return Ok(self.seq);
        }
        self.write_all(out.as_bytes())?;
        self.seq = seq;
        self.prev = prev;
        Ok(seq)
    }

    /// Appends `prefix` and one entry in a single write; a write that fails is undone, so that the
    /// trail never holds half a line followed by more entries.
    fn append_after(
        &mut self,
        prefix: &str,
        event: &str,
        fields: Map<String, Value>,
    ) -> Result<u64, String> {
        let seq = next_seq(self.seq)?;
        let mut out = prefix.to_owned();
        let hash = push_entry(&mut out, seq, &self.prev, event, fields)?;
        self.write_all(out.as_bytes())?;
        self.seq = seq;
        self.prev = hash;
        Ok(seq)
    }

    fn write_all(&mut self, bytes: &[u8]) -> Result<(), String> {
        let before = self.file.metadata().map(|m| m.len()).ok();
        self.file.write_all(bytes).map_err(|e| {
            if let Some(len) = before {
                // Best effort: a full disk may refuse this too; the next open then recovers.
                let _ = self.file.set_len(len);
            }
            format!("cannot write the audit trail: {e}")
        })
    }

    /// Forces the entries written so far to the disk.
    pub fn sync(&mut self) -> Result<(), String> {
        self.file
            .sync_data()
            .map_err(|e| format!("cannot sync the audit trail: {e}"))
    }
}

fn next_seq(seq: u64) -> Result<u64, String> {
    seq.checked_add(1)
        .ok_or_else(|| "the audit trail is full (seq)".to_owned())
}

/// Appends the line of entry `seq` (chained to `prev`) to `out`; returns its hash.
fn push_entry(
    out: &mut String,
    seq: u64,
    prev: &str,
    event: &str,
    fields: Map<String, Value>,
) -> Result<String, String> {
    let ts = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    let body = serde_json::to_string(&json!({
        "seq": seq,
        "ts": ts,
        "event": event,
        "fields": fields,
        "prev": prev,
    }))
    .map_err(|e| format!("cannot write an audit entry: {e}"))?;
    let hash = digest(body.as_bytes());
    out.push_str(&hash);
    out.push(' ');
    out.push_str(&body);
    out.push('\n');
    Ok(hash)
}

/// The last complete entry, and how the trail ends, reading only the last 1 MiB (entries are far
/// smaller: the callers bound their fields).
fn tail(file: &mut File) -> Result<(Option<Entry>, End), String> {
    let io = |e: std::io::Error| e.to_string();
    let len = file.seek(SeekFrom::End(0)).map_err(io)?;
    if len == 0 {
        return Ok((None, End::Clean));
    }
    file.seek(SeekFrom::Start(len.saturating_sub(1 << 20)))
        .map_err(io)?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes).map_err(io)?;
    file.seek(SeekFrom::End(0)).map_err(io)?;
    let mut lines: Vec<&[u8]> = bytes.split(|b| *b == b'\n').collect();
    // After the last newline: empty when the trail ends cleanly.
    let partial = lines.pop().unwrap_or_default();
    let entry = |l: &[u8]| std::str::from_utf8(l).ok().and_then(|l| parse_line(l).ok());
    let last = lines.iter().rev().find_map(|l| entry(l));
    if last.is_none() && !lines.is_empty() {
        return Err(
            "no entry in its last MiB: check it with `m2m audit verify` and move it aside".into(),
        );
    }
    if !partial.is_empty() {
        if let Some(e) = entry(partial) {
            let chained = match &last {
                Some(l) => e.prev == l.hash,
                None => e.prev == GENESIS,
            };
            if chained {
                return Ok((last, End::Unterminated(e)));
            }
        }
        return Ok((last, End::Torn(partial.to_vec())));
    }
    // A whole line (with its newline) that is no entry is never left by a crash: every entry is
    // one write, newline included. Someone changed the last entry; do not write over that.
    if lines.last().is_some_and(|l| entry(l).is_none()) {
        return Err(
            "its last line is not an entry (changed?): check it with `m2m audit verify`".into(),
        );
    }
    Ok((last, End::Clean))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(pairs: &[(&str, &str)]) -> Map<String, Value> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), json!(v)))
            .collect()
    }

    fn trail(n: usize) -> (tempfile::TempDir, std::path::PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let mut a = Appender::open(&path).unwrap();
        for i in 0..n {
            a.append("access denied", fields(&[("originator", &format!("C{i}"))]))
                .unwrap();
        }
        (dir, path)
    }

    fn check(path: &Path) -> Result<Head, Broken> {
        verify(File::open(path).unwrap(), |_| {})
    }

    fn rewrite(path: &Path, f: impl FnOnce(&mut Vec<String>)) {
        let text = std::fs::read_to_string(path).unwrap();
        let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
        f(&mut lines);
        std::fs::write(path, lines.join("\n") + "\n").unwrap();
    }

    #[test]
    fn an_intact_trail_verifies_and_continues_across_reopening() {
        let (_d, path) = trail(3);
        let head = check(&path).unwrap();
        assert_eq!((head.entries, head.seq), (3, 3));
        let mut a = Appender::open(&path).unwrap();
        assert_eq!(a.append("key revoked", Map::new()).unwrap(), 4);
        let again = check(&path).unwrap();
        assert_eq!(again.seq, 4);
        assert_ne!(again.hash, head.hash);
    }

    #[test]
    fn a_batch_is_chained_like_single_entries() {
        let (_d, path) = trail(2);
        let mut a = Appender::open(&path).unwrap();
        let batch = (0..3).map(|i| {
            let mut f = Map::new();
            f.insert("n".into(), json!(i));
            ("association established".to_owned(), f)
        });
        assert_eq!(a.append_all(batch).unwrap(), 5);
        assert_eq!(a.append_all(Vec::new()).unwrap(), 5);
        assert_eq!(a.append("key revoked", Map::new()).unwrap(), 6);
        let head = check(&path).unwrap();
        assert_eq!((head.entries, head.seq), (6, 6));
    }

    #[test]
    fn every_kind_of_tampering_is_found_at_its_line() {
        // A field changed (hash kept): the entry's own hash no longer matches.
        let (_d, path) = trail(4);
        rewrite(&path, |l| l[1] = l[1].replace("\"C1\"", "\"C9\""));
        assert_eq!(check(&path).unwrap_err().line, 2);
        // A field changed and its hash recomputed: the next entry's link breaks.
        let (_d, path) = trail(4);
        rewrite(&path, |l| {
            let body = l[1].split_once(' ').unwrap().1.replace("\"C1\"", "\"C9\"");
            l[1] = format!("{} {body}", digest(body.as_bytes()));
        });
        assert_eq!(check(&path).unwrap_err().line, 3);
        // An entry removed, two swapped, one duplicated.
        for edit in [
            |l: &mut Vec<String>| {
                l.remove(1);
            },
            |l: &mut Vec<String>| l.swap(1, 2),
            |l: &mut Vec<String>| {
                let d = l[1].clone();
                l.insert(2, d);
            },
        ] {
            let (_d, path) = trail(4);
            rewrite(&path, edit);
            assert!(check(&path).is_err());
        }
        // A forged first entry with a made-up history.
        let (_d, path) = trail(2);
        rewrite(&path, |l| {
            let body = l[0]
                .split_once(' ')
                .unwrap()
                .1
                .replace(GENESIS, &"1".repeat(64));
            l[0] = format!("{} {body}", digest(body.as_bytes()));
        });
        assert_eq!(check(&path).unwrap_err().line, 1);
    }

    #[test]
    fn a_torn_last_line_is_recovered_not_hidden() {
        let (_d, path) = trail(2);
        // A crash in the middle of a write.
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(b"0123 {\"seq\":3,").unwrap();
        drop(f);
        // Before the next start the incomplete line is no break (it is the end).
        assert_eq!(check(&path).unwrap().seq, 2);
        let mut a = Appender::open(&path).unwrap();
        a.append("access denied", Map::new()).unwrap();
        let mut events = Vec::new();
        let head = verify(File::open(&path).unwrap(), |e| events.push(e.event.clone())).unwrap();
        assert_eq!(head.seq, 4);
        assert_eq!(events[2], RECOVERED);
        // Garbage inserted in the middle, with no recovery entry after it, is a break.
        rewrite(&path, |l| l.insert(1, "garbage".into()));
        assert!(check(&path).is_err());
    }

    #[test]
    fn a_changed_last_entry_is_a_break_not_a_torn_line() {
        let (_d, path) = trail(3);
        rewrite(&path, |l| {
            let last = l.len() - 1;
            l[last] = l[last].replace("\"C2\"", "\"C9\"");
        });
        assert_eq!(check(&path).unwrap_err().line, 3);
        // A start does not write over it: the Appender refuses (no crash leaves a whole line
        // that is no entry), and the change stays found.
        assert!(Appender::open(&path).unwrap_err().contains("not an entry"));
        assert!(check(&path).is_err());
    }

    #[test]
    fn an_entry_without_its_newline_is_completed_and_odd_bytes_are_no_panic() {
        let (_d, path) = trail(2);
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::write(&path, text.trim_end_matches('\n')).unwrap();
        assert_eq!(
            check(&path).unwrap().seq,
            1,
            "the unterminated entry is not counted"
        );
        let mut a = Appender::open(&path).unwrap();
        a.append("x", Map::new()).unwrap();
        drop(a);
        let mut events = Vec::new();
        let head = verify(File::open(&path).unwrap(), |e| events.push(e.event.clone())).unwrap();
        assert_eq!(head.seq, 3);
        assert!(!events.iter().any(|e| e == RECOVERED), "{events:?}");
        // A fragment cut inside a multi-byte character.
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(&[b'a', 0xE2, 0x82]).unwrap();
        drop(f);
        assert_eq!(check(&path).unwrap().seq, 3);
        drop(Appender::open(&path).unwrap());
        assert_eq!(check(&path).unwrap().seq, 4, "the recovery entry");
    }

    #[test]
    fn one_writer_at_a_time() {
        let (_d, path) = trail(1);
        let first = Appender::open(&path).unwrap();
        let second = Appender::open(&path).unwrap_err();
        assert!(second.contains("in use"), "{second}");
        drop(first);
        assert!(Appender::open(&path).is_ok());
    }

    #[test]
    fn a_trail_without_any_entry_at_its_end_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        std::fs::write(&path, "not an entry\nnor this\n").unwrap();
        crate::data_files::private_file(&path).unwrap();
        assert!(Appender::open(&path).unwrap_err().contains("no entry"));
    }
}
