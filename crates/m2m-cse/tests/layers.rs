//! The layers of m2m-cse (docs/ARCHITECTURE.md): a module imports from its own layer and the
//! layers below it, never from one above, so no import cycle spans the crate. Read from the
//! sources: every `crate::<module>` path outside comments and `#[cfg(test)]` modules.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Bottom to top. A new module must be placed here before it builds green.
const LAYERS: &[(&str, &[&str])] = &[
    (
        "foundation (configuration, store)",
        &[
            "config",
            "store",
            "search_threads",
            "credential_rotation",
            "provisioned_keys",
            "overrides",
            "sparql",
        ],
    ),
    (
        "security gate",
        &[
            "context",
            "validity",
            "resolve",
            "association",
            "impersonation",
            "descendants",
            "roles",
            "access",
            "access_references",
            "dynamic_authorization",
            "secure_storage",
            "maf_keys",
            "esprim",
            "escertke",
            "group_authentication",
            "group_credentials",
        ],
    ),
    (
        "notification (delivery)",
        &["notification", "outbound", "polling_queue"],
    ),
    (
        "resource types",
        &[
            "cse",
            "dispatcher",
            "resources",
            "subscription_events",
            "discovery",
            "semantic_query",
            "group",
            "multicast",
            "prefill",
            "expiry",
            "registration",
            "routing",
        ],
    ),
    (
        "binding entry",
        &[
            "http_server",
            "coap_server",
            "mqtt_binding",
            "mqtt_broker",
            "websocket_server",
            "upper_tester",
        ],
    ),
];

/// The source with comments, string and character literals blanked, and `#[cfg(test)]` items
/// removed (brace-matched), so that only code paths remain.
fn code_of(source: &str) -> String {
    let blanked = blank_literals_and_comments(source);
    let mut out = String::with_capacity(blanked.len());
    let mut rest = blanked.as_str();
    while let Some(at) = rest.find("#[cfg(test)]") {
        out.push_str(&rest[..at]);
        let after = &rest[at..];
        // The item ends at its first `;` before any `{`, or at the brace closing its first `{`.
        let open = after.find('{');
        let semi = after.find(';');
        let end = match (open, semi) {
            (Some(o), Some(s)) if s < o => s + 1,
            (Some(o), _) => closing_brace(after, o).map_or(after.len(), |c| c + 1),
            (None, Some(s)) => s + 1,
            (None, None) => after.len(),
        };
        rest = &after[end..];
    }
    out.push_str(rest);
    out
}

fn closing_brace(s: &str, open: usize) -> Option<usize> {
    let mut depth = 0usize;
    for (i, c) in s[open..].char_indices() {
        match c {
            '{' => depth += 1,
            '}' => {
                depth -= 1;
                if depth == 0 {
                    return Some(open + i);
                }
            }
            _ => {}
        }
    }
    None
}

/// Replaces comments and the insides of string and char literals with spaces (braces in them
/// would unbalance the matching; paths in them are no imports).
fn blank_literals_and_comments(s: &str) -> String {
    let b: Vec<char> = s.chars().collect();
    let mut out = String::with_capacity(s.len());
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        let next = b.get(i + 1).copied();
        if c == '/' && next == Some('/') {
            while i < b.len() && b[i] != '\n' {
                i += 1;
            }
        } else if c == '/' && next == Some('*') {
            i += 2;
            while i + 1 < b.len() && !(b[i] == '*' && b[i + 1] == '/') {
                i += 1;
            }
            i += 2;
        } else if c == 'r' && (next == Some('"') || next == Some('#')) && is_raw_start(&b, i) {
            let mut j = i + 1;
            let mut hashes = 0;
            while b[j] == '#' {
                hashes += 1;
                j += 1;
            }
            j += 1;
            loop {
                if j >= b.len() {
                    break;
                }
                if b[j] == '"' && (0..hashes).all(|k| b.get(j + 1 + k) == Some(&'#')) {
                    j += 1 + hashes;
                    break;
                }
                j += 1;
            }
            out.push_str("\"\"");
            i = j;
        } else if c == '"' {
            i += 1;
            while i < b.len() && b[i] != '"' {
                if b[i] == '\\' {
                    i += 1;
                }
                i += 1;
            }
            i += 1;
            out.push_str("\"\"");
        } else if c == '\'' && is_char_literal(&b, i) {
            i += 1;
            while i < b.len() && b[i] != '\'' {
                if b[i] == '\\' {
                    i += 1;
                }
                i += 1;
            }
            i += 1;
            out.push_str("' '");
        } else {
            out.push(c);
            i += 1;
        }
    }
    out
}

fn is_raw_start(b: &[char], i: usize) -> bool {
    let before = if i == 0 { ' ' } else { b[i - 1] };
    if before.is_alphanumeric() || before == '_' {
        return false;
    }
    let mut j = i + 1;
    while b.get(j) == Some(&'#') {
        j += 1;
    }
    b.get(j) == Some(&'"')
}

/// `'x'`, `'\n'`, `'\u{1F}'` are literals; `'a` in `&'a str` is a lifetime.
fn is_char_literal(b: &[char], i: usize) -> bool {
    matches!(
        (b.get(i + 1), b.get(i + 2)),
        (Some('\\'), _) | (Some(_), Some('\''))
    )
}

/// The top-level modules a piece of code names with `crate::` (and with the `super::` that is
/// the crate root: once in a top-level module, twice one level down), plus the root re-exports
/// it names (`crate::Cse` is `cse`'s).
fn imports(code: &str, reexports: &BTreeMap<String, String>, depth: usize) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let root = "super::".repeat(depth);
    let prefixes = ["crate::", root.as_str()];
    for prefix in prefixes {
        for (at, _) in code.match_indices(prefix) {
            // `super::super::x` one level down is the root; `super::x` there is not.
            if prefix.starts_with("super") && code[..at].ends_with("super::") {
                continue;
            }
            let before = code[..at].chars().next_back().unwrap_or(' ');
            if before.is_alphanumeric() || before == '_' {
                continue;
            }
            let name: String = code[at + prefix.len()..]
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            let module = reexports.get(&name).cloned().unwrap_or(name);
            found.insert(module);
        }
        // `use crate::{a, b::c}`
        for (at, _) in code.match_indices(&format!("{prefix}{{")) {
            let inner = &code[at + prefix.len() + 1..];
            let inner = &inner[..inner.find('}').unwrap_or(inner.len())];
            for part in inner.split(',') {
                let name: String = part
                    .trim()
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                if !name.is_empty() {
                    found.insert(reexports.get(&name).cloned().unwrap_or(name));
                }
            }
        }
    }
    found.remove("");
    found
}

/// `pub use cse::{Cse, Peer};` in lib.rs: `Cse` and `Peer` stand for `cse`.
fn root_reexports(lib: &str) -> BTreeMap<String, String> {
    let mut map = BTreeMap::new();
    for line in lib.lines() {
        let Some(rest) = line.trim().strip_prefix("pub use ") else {
            continue;
        };
        let Some((module, names)) = rest.split_once("::") else {
            continue;
        };
        let names = names
            .trim_end_matches(';')
            .trim_matches(|c| c == '{' || c == '}');
        for name in names.split(',') {
            let name = name.trim().rsplit("::").next().unwrap_or("").to_owned();
            if !name.is_empty() {
                map.insert(name, module.trim().to_owned());
            }
        }
    }
    map
}

/// Every `.rs` file under `src`, as (top-level module, path relative to src).
fn modules(src: &Path) -> Vec<(String, std::path::PathBuf)> {
    let mut out = Vec::new();
    let mut stack = vec![src.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let rel = path.strip_prefix(src).unwrap().to_path_buf();
                let first = rel.components().next().unwrap().as_os_str();
                let top = first.to_string_lossy().trim_end_matches(".rs").to_owned();
                out.push((top, rel));
            }
        }
    }
    out.sort();
    out
}

fn layer_of(module: &str) -> Option<usize> {
    LAYERS
        .iter()
        .position(|(_, members)| members.contains(&module))
}

/// The upward imports of a crate: (importing file, its layer, imported module, its layer).
fn upward_imports(src: &Path) -> (Vec<String>, Vec<String>) {
    let lib = std::fs::read_to_string(src.join("lib.rs")).unwrap();
    let reexports = root_reexports(&lib);
    let mut unplaced = Vec::new();
    let mut upward = Vec::new();
    for (top, rel) in modules(src) {
        if top == "lib" {
            continue;
        }
        let Some(own) = layer_of(&top) else {
            unplaced.push(format!("{} (module {top})", rel.display()));
            continue;
        };
        let code = code_of(&std::fs::read_to_string(src.join(&rel)).unwrap());
        let depth = rel.components().count();
        for imported in imports(&code, &reexports, depth) {
            if let Some(theirs) = layer_of(&imported) {
                if theirs > own {
                    upward.push(format!(
                        "{} ({}) imports {imported} ({})",
                        rel.display(),
                        LAYERS[own].0,
                        LAYERS[theirs].0
                    ));
                }
            }
        }
    }
    (unplaced, upward)
}

#[test]
fn no_module_imports_from_a_layer_above_its_own() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let (unplaced, upward) = upward_imports(&src);
    assert!(
        unplaced.is_empty(),
        "modules in no layer (place them in tests/layers.rs): {unplaced:#?}"
    );
    assert!(
        upward.is_empty(),
        "imports from a higher layer: {upward:#?}"
    );
}

#[test]
fn every_layer_is_named_once() {
    let mut seen = BTreeSet::new();
    for (_, members) in LAYERS {
        for m in *members {
            assert!(seen.insert(*m), "{m} is in two layers");
        }
    }
    // And each module named exists (a renamed module leaves no stale entry).
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let present: BTreeSet<String> = modules(&src).into_iter().map(|(t, _)| t).collect();
    for m in seen {
        assert!(present.contains(m), "layer entry {m} names no module");
    }
}

#[test]
fn the_reader_finds_imports_and_ignores_comments_literals_and_tests() {
    let reexports = root_reexports("pub use cse::{Cse, Peer};\npub use config::Config;");
    let code = code_of(
        r##"
use crate::store::Resource;
use crate::{access, dispatcher::create};
// crate::binding_in_a_comment
/* crate::block_comment */
fn f(x: &crate::Cse) -> &'static str { let _c = '{'; "crate::in_a_string {" }
const RAW: &str = r#"crate::in_raw "quoted" {"#;
#[cfg(test)]
mod tests {
    use crate::http_server;
    fn g() { let _ = "}"; }
}
fn after() { crate::notification::send(); }
"##,
    );
    let found = imports(&code, &reexports, 1);
    let expected: BTreeSet<String> = ["store", "access", "dispatcher", "cse", "notification"]
        .into_iter()
        .map(String::from)
        .collect();
    assert_eq!(found, expected);
}

#[test]
fn an_upward_import_is_reported() {
    // A copy of the sources where the store names the engine.
    let dir = std::env::temp_dir().join(format!("m2m-layers-{}", std::process::id()));
    let src = dir.join("src");
    std::fs::create_dir_all(src.join("store")).unwrap();
    std::fs::write(src.join("lib.rs"), "pub use cse::Cse;\n").unwrap();
    std::fs::write(src.join("cse.rs"), "use crate::store::Store;\n").unwrap();
    std::fs::write(src.join("store/mod.rs"), "fn f(_: &crate::Cse) {}\n").unwrap();
    std::fs::write(src.join("stray.rs"), "\n").unwrap();
    // One level down, `super::super::` is the crate root; `super::` is the store itself.
    std::fs::write(
        src.join("store/scan.rs"),
        "use super::Store;\nfn g() { super::super::http_server::x(); }\n",
    )
    .unwrap();
    std::fs::write(src.join("http_server.rs"), "\n").unwrap();
    let (unplaced, upward) = upward_imports(&src);
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(unplaced, vec!["stray.rs (module stray)".to_owned()]);
    assert_eq!(upward.len(), 2, "{upward:?}");
    assert!(
        upward[1].starts_with("store/scan.rs (foundation")
            && upward[1].contains("imports http_server (binding entry"),
        "{upward:?}"
    );
    assert!(
        upward[0].starts_with("store/mod.rs (foundation"),
        "{upward:?}"
    );
    assert!(
        upward[0].contains("imports cse (resource types"),
        "{upward:?}"
    );
}
