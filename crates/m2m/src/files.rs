//! Files of secrets the commands write (keys, configurations holding keys): created new, mode 0600
//! from the start, so they are never readable by others, not even for a moment.

use std::path::Path;

/// Creates `path` (which must not exist) with mode 0600 and writes `data` into it
/// ([`m2m_security::secure_environment::write_private`]).
pub fn write_private(path: &Path, data: &[u8]) -> anyhow::Result<()> {
    Ok(m2m_security::secure_environment::write_private(path, data)?)
}

/// `path` as a TOML string, escaped so that quotes and backslashes in it (a `TMPDIR` may hold
/// any) keep the configuration valid.
pub fn toml_path(path: &Path) -> String {
    toml::Value::String(path.display().to_string()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_path_with_quotes_and_backslashes_survives_a_toml_round_trip() {
        let path = Path::new("/tmp/a \"quoted\" dir\\with\\backslashes/data");
        let doc = format!("path = {}\n", toml_path(path));
        let parsed: toml::Table = doc.parse().expect("valid TOML");
        assert_eq!(parsed["path"].as_str(), path.to_str());
    }
}
