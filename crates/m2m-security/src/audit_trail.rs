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
//! What a chain cannot show by itself is entries cut off at the end (the remaining chain is
//! intact): [`verify`] reports the head (last `seq` and hash), which an operator records elsewhere
//! (a ticket, a remote log) to detect that too.
//!
//! A crash may leave an incomplete last line. On opening, the [`Appender`] ends it and writes a
//! recovery entry chained to the last complete entry; [`verify`] accepts a line that is not an
//! entry only at the very end or right before such a recovery entry (it vouches for nothing, and
//! the chain around it still shows anything removed).

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
    /// Line number in the file (1-based).
    pub line: usize,
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
fn parse_line(line: &str, number: usize) -> Result<Entry, String> {
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
        line: number,
    })
}

/// Reads a trail, calling `each` for every entry in order, and checks the chain: every hash, every
/// link, every seq. Stops at the first break.
pub fn verify(reader: impl Read, mut each: impl FnMut(&Entry)) -> Result<Head, Broken> {
    let mut prev = GENESIS.to_owned();
    let mut seq = 0;
    let mut entries = 0;
    // An incomplete line (a crash) is accepted only if a recovery entry naming it follows.
    let mut torn: Option<usize> = None;
    for (i, line) in BufReader::new(reader).lines().enumerate() {
        let number = i + 1;
        let line = line.map_err(|e| Broken {
            line: number,
            reason: format!("cannot read: {e}"),
        })?;
        let entry = match parse_line(&line, number) {
            Ok(e) => e,
            Err(reason) => {
                if torn.is_some() {
                    return Err(Broken {
                        line: number,
                        reason,
                    });
                }
                torn = Some(number);
                continue;
            }
        };
        if let Some(t) = torn.take() {
            if entry.event != RECOVERED {
                return Err(Broken {
                    line: t,
                    reason: "not an entry, and no recovery entry follows it".into(),
                });
            }
        }
        if entry.prev != prev {
            return Err(Broken {
                line: number,
                reason: "the chain is broken: the entry before it was removed, changed or moved"
                    .into(),
            });
        }
        if entry.seq != seq + 1 {
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
    // A last line left incomplete (a writer in the middle of a write, or a crash before the next
    // start) holds nothing the chain vouches for, and hides nothing: it is no break.
    Ok(Head {
        entries,
        seq,
        hash: prev,
    })
}

/// Appends entries to a trail file, keeping the chain across restarts.
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

impl Appender {
    /// Opens (creates 0600) the trail and finds its last entry. The existing chain is not
    /// verified here (that is `verify`'s job and may take long); only its end is read. An
    /// incomplete last line is ended and a recovery entry written after it.
    pub fn open(path: &Path) -> Result<Self, String> {
        crate::data_files::private_file(path)?;
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .open(path)
            .map_err(|e| format!("cannot open the audit trail {}: {e}", path.display()))?;
        let (last, incomplete) = tail(&mut file)
            .map_err(|e| format!("cannot read the audit trail {}: {e}", path.display()))?;
        let (seq, prev) = match &last {
            Some(e) => (e.seq, e.hash.clone()),
            None => (0, GENESIS.to_owned()),
        };
        let mut appender = Self { file, seq, prev };
        if incomplete {
            appender
                .file
                .write_all(b"\n")
                .map_err(|e| format!("cannot write the audit trail: {e}"))?;
            appender.append(RECOVERED, Map::new())?;
        }
        Ok(appender)
    }

    /// Appends one entry (one write of one whole line) and returns its seq.
    pub fn append(&mut self, event: &str, fields: Map<String, Value>) -> Result<u64, String> {
        let seq = self.seq + 1;
        let ts = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
        let body = serde_json::to_string(&json!({
            "seq": seq,
            "ts": ts,
            "event": event,
            "fields": fields,
            "prev": self.prev,
        }))
        .map_err(|e| format!("cannot write an audit entry: {e}"))?;
        let hash = digest(body.as_bytes());
        let line = format!("{hash} {body}\n");
        self.file
            .write_all(line.as_bytes())
            .map_err(|e| format!("cannot write the audit trail: {e}"))?;
        self.seq = seq;
        self.prev = hash;
        Ok(seq)
    }

    /// Forces the entries written so far to the disk.
    pub fn sync(&mut self) -> Result<(), String> {
        self.file
            .sync_data()
            .map_err(|e| format!("cannot sync the audit trail: {e}"))
    }
}

/// The last complete entry, and whether the trail ends in an incomplete line (no newline, or a
/// last line that is not an entry), reading only the last 1 MiB.
fn tail(file: &mut File) -> std::io::Result<(Option<Entry>, bool)> {
    let len = file.seek(SeekFrom::End(0))?;
    if len == 0 {
        return Ok((None, false));
    }
    file.seek(SeekFrom::Start(len.saturating_sub(1 << 20)))?;
    let mut text = Vec::new();
    file.read_to_end(&mut text)?;
    let text = String::from_utf8_lossy(&text);
    let mut lines: Vec<&str> = text.split('\n').collect();
    // After the last newline: empty when the trail ends cleanly.
    let partial = lines.pop().unwrap_or_default();
    let last_is_entry = lines.last().is_some_and(|l| parse_line(l, 0).is_ok());
    let last = lines.iter().rev().find_map(|l| parse_line(l, 0).ok());
    Ok((last, !partial.is_empty() || !last_is_entry))
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
}
