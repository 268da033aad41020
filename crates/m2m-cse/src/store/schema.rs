//! The resource store's tables, and the columns discovery searches by (TS-0004 clause 7.3.3.17):
//! created here, migrated from earlier versions, and filled from a resource's attributes by
//! [`IndexColumns`] so that they never disagree with the stored representation.
//!
//! | filter condition | column or table | index |
//! |---|---|---|
//! | the subtree of the target, `lvl` | `srn` | `srn` (unique) |
//! | `ty` | `ty` | `resources_type (ty, srn)` |
//! | `lbl` | table `labels` | `(lbl, srn)` |
//! | `rn` (attribute condition) | `rn` | `resources_name (rn, srn)` |
//! | `cty` | `cty` (media type of `cnf`) | `resources_content_type (cty, srn)` |
//! | `cra`/`crb` | `ct` | `resources_created (ct)` |
//! | `ms`/`us` | `lt` | `resources_modified (lt)` |
//! | `exa`/`exb` | `et` | `resources_expiry (et)` |
//! | `sza`/`szb` | `cs` | `resources_size (cs)` |
//!
//! Every timestamp column holds the normalized form of [`m2m_core::time::normalize`], which
//! orders as text in time order.

use m2m_core::time;
use rusqlite::{params, Connection};
use serde_json::{Map, Value};

/// The schema version this build writes (`PRAGMA user_version`).
pub const VERSION: i64 = 6;

/// Version 1: the resource table before discovery had indexes of its own.
const TABLES_V1: &str = "
CREATE TABLE IF NOT EXISTS resources (
    seq  INTEGER PRIMARY KEY AUTOINCREMENT,
    ri   TEXT NOT NULL UNIQUE,
    srn  TEXT NOT NULL UNIQUE,
    pi   TEXT NOT NULL,
    ty   INTEGER NOT NULL,
    et   TEXT,
    creator TEXT,
    doc  TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS resources_children ON resources(pi, ty, seq);
CREATE INDEX IF NOT EXISTS resources_expiry ON resources(et);
CREATE TABLE IF NOT EXISTS credential_bindings (
    ae_id         TEXT PRIMARY KEY,
    credential_id TEXT NOT NULL
);
";

/// What version 2 adds: the columns and tables discovery searches by.
const COLUMNS_V2: &str = "
ALTER TABLE resources ADD COLUMN rn TEXT;
ALTER TABLE resources ADD COLUMN ct TEXT;
ALTER TABLE resources ADD COLUMN lt TEXT;
ALTER TABLE resources ADD COLUMN cs INTEGER;
ALTER TABLE resources ADD COLUMN cty TEXT;
CREATE TABLE labels (
    lbl TEXT NOT NULL,
    srn TEXT NOT NULL,
    seq INTEGER NOT NULL,
    PRIMARY KEY (lbl, srn)
) WITHOUT ROWID;
";

/// The indexes of version 2, built after the columns are filled (faster than row by row).
const INDEXES_V2: &str = "
CREATE INDEX labels_by_srn ON labels(srn);
CREATE INDEX resources_type ON resources(ty, srn);
CREATE INDEX resources_name ON resources(rn, srn);
CREATE INDEX resources_content_type ON resources(cty, srn) WHERE cty IS NOT NULL;
CREATE INDEX resources_created ON resources(ct);
CREATE INDEX resources_modified ON resources(lt);
CREATE INDEX resources_size ON resources(cs) WHERE cs IS NOT NULL;
";

/// What version 3 adds: the specialization a resource is represented under where its
/// attributes cannot tell it (a `<flexContainer>` whose containerDefinition the TS leaves
/// undefined, TS-0004 Annex J). Rows of earlier versions have none and need none.
const COLUMNS_V3: &str = "ALTER TABLE resources ADD COLUMN spec TEXT;";

/// What version 4 adds: who may register an AE-ID again once its AE has gone
/// ([`super::AeIdHolder`]); `credential_id` NULL is the AE-ID itself (an association bound to it).
/// The AEs registered then with a credential bound to no entity are held by that credential;
/// those registered over an association bound to them were not recorded before, so they are not.
/// `credential_bindings` goes: a registered AE's binding is its holder (`Reader::credential_of`).
const TABLES_V4: &str = "
CREATE TABLE ae_id_holders (
    ae_id         TEXT PRIMARY KEY,
    credential_id TEXT
);
INSERT INTO ae_id_holders (ae_id, credential_id) SELECT ae_id, credential_id FROM credential_bindings;
DROP TABLE credential_bindings;
";

/// What version 5 adds: the Credential-ID an AE-ID last registered with (`registered_with`),
/// also when its holder is the AE-ID itself, which an MN-CSE names when it announces the AE to
/// the IN-CSE again (TS-0001 clause 10.2.2.2 step 005b). Rows of version 4 held by a credential
/// registered with it; those held by the AE-ID itself are not known (NULL).
const COLUMNS_V5: &str = "
ALTER TABLE ae_id_holders ADD COLUMN registered_with TEXT;
UPDATE ae_id_holders SET registered_with = credential_id;
";

/// What version 6 adds: work left for the CSE to do once at its next start, by name
/// (`Reader::upkeep_pending`). The references that decide access, kept as the resourceIDs they
/// name since this version, are pinned in the resources stored before it
/// (`access_references::pin_stored`).
const TABLES_V6: &str = "
CREATE TABLE upkeep (task TEXT PRIMARY KEY);
INSERT INTO upkeep (task) VALUES ('pin-access-references');
";

/// Brings the database to [`VERSION`]: creates it, or migrates an earlier one in one
/// transaction (all or nothing). A database of a later version is refused, not guessed at.
pub fn prepare(conn: &Connection) -> anyhow::Result<()> {
    let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if version > VERSION {
        anyhow::bail!(
            "the resource store has schema version {version}; this build reads up to {VERSION}: \
             use the version of m2m that wrote it"
        );
    }
    if version == VERSION {
        return Ok(());
    }
    conn.execute_batch("BEGIN IMMEDIATE")?;
    let migrated = migrate(conn);
    match migrated {
        Ok(rows) => {
            conn.execute_batch("COMMIT")?;
            if rows > 0 {
                tracing::info!(rows, "resource store migrated to schema version {VERSION}");
            }
            Ok(())
        }
        Err(e) => {
            let _ = conn.execute_batch("ROLLBACK");
            Err(e)
        }
    }
}

/// Version 0 (new, or written before versions were recorded), 1, 2, 3, 4 or 5 to [`VERSION`];
/// returns the rows filled.
fn migrate(conn: &Connection) -> anyhow::Result<u64> {
    // Read again inside the transaction: another connection may have migrated meanwhile.
    let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if version >= VERSION {
        return Ok(0);
    }
    let rows = if version < 2 { migrate_to_2(conn)? } else { 0 };
    if version < 3 {
        conn.execute_batch(COLUMNS_V3)?;
    }
    if version < 4 {
        conn.execute_batch(TABLES_V4)?;
    }
    if version < 5 {
        conn.execute_batch(COLUMNS_V5)?;
    }
    conn.execute_batch(TABLES_V6)?;
    conn.pragma_update(None, "user_version", VERSION)?;
    Ok(rows)
}

/// Version 0 or 1 to 2: the columns discovery searches by, filled from every row.
fn migrate_to_2(conn: &Connection) -> anyhow::Result<u64> {
    conn.execute_batch(TABLES_V1)?;
    conn.execute_batch(COLUMNS_V2)?;
    let mut rows = 0u64;
    {
        let mut read = conn.prepare("SELECT seq, srn, doc FROM resources")?;
        let mut fill = conn.prepare(
            "UPDATE resources SET rn = ?2, ct = ?3, lt = ?4, cs = ?5, cty = ?6, et = ?7 WHERE seq = ?1",
        )?;
        let mut label = conn.prepare(LABEL_INSERT)?;
        let mut all = read.query([])?;
        while let Some(row) = all.next()? {
            let seq: i64 = row.get(0)?;
            let srn: String = row.get(1)?;
            let doc: String = row.get(2)?;
            let attrs: Map<String, Value> = serde_json::from_str(&doc)?;
            let c = IndexColumns::of(&attrs);
            fill.execute(params![seq, c.rn, c.ct, c.lt, c.cs, c.cty, c.et])?;
            for l in &c.labels {
                label.execute(params![l, srn, seq])?;
            }
            rows += 1;
        }
    }
    conn.execute_batch(INDEXES_V2)?;
    Ok(rows)
}

pub const LABEL_INSERT: &str = "INSERT OR IGNORE INTO labels (lbl, srn, seq) VALUES (?1, ?2, ?3)";

/// The searchable columns of one resource, derived from its attributes exactly as
/// [`m2m_core::FilterCriteria::matches`] reads them, so that an index lookup finds every resource
/// the filter would match (discovery re-checks each candidate against the full filter).
#[derive(Debug, Default, PartialEq)]
pub struct IndexColumns {
    pub rn: Option<String>,
    pub ct: Option<String>,
    pub lt: Option<String>,
    pub et: Option<String>,
    /// contentSize, saturated at `i64::MAX` (SQLite integers are signed).
    pub cs: Option<i64>,
    /// The media type of contentInfo (`type/subtype` of `type/subtype:encoding`).
    pub cty: Option<String>,
    /// The labels, each once.
    pub labels: Vec<String>,
}

impl IndexColumns {
    pub fn of(attrs: &Map<String, Value>) -> IndexColumns {
        let text = |k: &str| attrs.get(k).and_then(Value::as_str);
        let ts = |k: &str| text(k).and_then(|s| time::normalize(s).ok());
        let mut labels: Vec<String> = attrs
            .get("lbl")
            .and_then(Value::as_array)
            .map(|l| {
                l.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default();
        labels.sort_unstable();
        labels.dedup();
        IndexColumns {
            rn: text("rn").map(str::to_owned),
            ct: ts("ct"),
            lt: ts("lt"),
            et: ts("et"),
            cs: attrs.get("cs").and_then(Value::as_u64).map(saturating_i64),
            cty: text("cnf").map(|c| m2m_core::filter::type_of_content(c).to_owned()),
            labels,
        }
    }
}

/// A size as SQLite stores it: values above `i64::MAX` become `i64::MAX`, which keeps the order
/// that range lookups rely on (`a <= b` implies `sat(a) <= sat(b)`).
pub fn saturating_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn columns_read_attributes_as_the_filter_does() {
        let attrs = json!({
            "rn": "cin_1", "ct": "20261204T101010", "lt": "20261204T101011,5", "et": "bad",
            "cs": u64::MAX, "cnf": "application/json:0", "lbl": ["b", "a", "b", 7]
        });
        let c = IndexColumns::of(attrs.as_object().unwrap());
        assert_eq!(c.rn.as_deref(), Some("cin_1"));
        assert_eq!(c.ct.as_deref(), Some("20261204T101010,000000"));
        assert_eq!(c.lt.as_deref(), Some("20261204T101011,500000"));
        assert_eq!(
            c.et, None,
            "an unreadable timestamp matches no time condition"
        );
        assert_eq!(c.cs, Some(i64::MAX));
        assert_eq!(c.cty.as_deref(), Some("application/json"));
        assert_eq!(c.labels, vec!["a", "b"]);
    }

    /// An in-memory database as version `version` (2 to 5) of the schema left it.
    fn database_at(version: i64) -> Connection {
        let conn = Connection::open_in_memory().unwrap();
        let steps = [
            (2, TABLES_V1),
            (2, COLUMNS_V2),
            (2, INDEXES_V2),
            (3, COLUMNS_V3),
            (4, TABLES_V4),
            (5, COLUMNS_V5),
        ];
        for (since, sql) in steps {
            if version >= since {
                conn.execute_batch(sql).unwrap();
            }
        }
        conn.pragma_update(None, "user_version", version).unwrap();
        conn
    }

    /// A version 1 database (as written before this schema) is migrated with its rows' columns
    /// filled; a later version is refused.
    #[test]
    fn a_version_1_database_is_migrated_and_a_later_one_refused() {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(TABLES_V1).unwrap();
        conn.execute(
            "INSERT INTO resources (ri, srn, pi, ty, et, doc) VALUES ('cnt1', 'cse-in/c', 'id', 3, NULL, ?1)",
            [json!({"rn": "c", "ct": "20260101T000000", "lbl": ["x"]}).to_string()],
        )
        .unwrap();
        prepare(&conn).unwrap();
        let (rn, ct): (String, String) = conn
            .query_row("SELECT rn, ct FROM resources", [], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .unwrap();
        assert_eq!((rn.as_str(), ct.as_str()), ("c", "20260101T000000,000000"));
        let lbl: String = conn
            .query_row("SELECT lbl FROM labels WHERE srn = 'cse-in/c'", [], |r| {
                r.get(0)
            })
            .unwrap();
        assert_eq!(lbl, "x");
        prepare(&conn).unwrap();
        conn.pragma_update(None, "user_version", VERSION + 1)
            .unwrap();
        let e = prepare(&conn).unwrap_err().to_string();
        assert!(
            e.contains(&format!("schema version {}", VERSION + 1)),
            "{e}"
        );
    }

    /// A version 2 database gets the specialization column, its rows none.
    #[test]
    fn a_version_2_database_gets_the_specialization_column() {
        let conn = database_at(2);
        conn.execute(
            "INSERT INTO resources (ri, srn, pi, ty, doc, rn) VALUES ('f', 'cse-in/f', 'id', 28, '{}', 'f')",
            [],
        )
        .unwrap();
        prepare(&conn).unwrap();
        let spec: Option<String> = conn
            .query_row("SELECT spec FROM resources", [], |r| r.get(0))
            .unwrap();
        assert_eq!(spec, None);
        let version: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(version, VERSION);
    }

    /// A version 3 database: the AEs then bound to a credential are held by it.
    #[test]
    fn a_version_3_database_keeps_its_credential_bindings_as_holders() {
        let conn = database_at(3);
        conn.execute(
            "INSERT INTO credential_bindings (ae_id, credential_id) VALUES ('Cmeter', '12-m@in.example.com')",
            [],
        )
        .unwrap();
        prepare(&conn).unwrap();
        let held: (String, Option<String>, Option<String>) = conn
            .query_row(
                "SELECT ae_id, credential_id, registered_with FROM ae_id_holders",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .unwrap();
        let m = Some("12-m@in.example.com".to_owned());
        assert_eq!(held, ("Cmeter".to_owned(), m.clone(), m));
        let left: i64 = conn
            .query_row(
                "SELECT count(*) FROM sqlite_master WHERE name = 'credential_bindings'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(left, 0, "the bindings are the holders now");
    }

    /// A version 4 database: holders keep what they were; the credential a holder of its own
    /// AE-ID registered with is not known.
    #[test]
    fn a_version_4_database_learns_what_its_holders_registered_with() {
        let conn = database_at(4);
        conn.execute_batch(
            "INSERT INTO ae_id_holders (ae_id, credential_id) VALUES ('Cmeter', '12-m@in.example.com');
             INSERT INTO ae_id_holders (ae_id, credential_id) VALUES ('Clock', NULL);",
        )
        .unwrap();
        prepare(&conn).unwrap();
        let rows: Vec<(String, Option<String>, Option<String>)> = conn
            .prepare(
                "SELECT ae_id, credential_id, registered_with FROM ae_id_holders ORDER BY ae_id",
            )
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        let m = Some("12-m@in.example.com".to_owned());
        assert_eq!(
            rows,
            vec![
                ("Clock".to_owned(), None, None),
                ("Cmeter".to_owned(), m.clone(), m),
            ]
        );
    }

    /// A version 5 database gets the one-off task of pinning its access references, once.
    #[test]
    fn a_version_5_database_is_given_its_references_to_pin() {
        let conn = database_at(5);
        prepare(&conn).unwrap();
        let tasks: Vec<String> = conn
            .prepare("SELECT task FROM upkeep")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(tasks, vec!["pin-access-references".to_owned()]);
        conn.execute_batch("DELETE FROM upkeep").unwrap();
        prepare(&conn).unwrap();
        let left: i64 = conn
            .query_row("SELECT COUNT(*) FROM upkeep", [], |r| r.get(0))
            .unwrap();
        assert_eq!(left, 0, "a database of this version is not migrated again");
    }
}
