//! OpenSSL's PKCS#11 provider for a process whose private key lives in a token
//! (`[security.pkcs11]`, issue 18): the handshakes then sign inside the token.
//!
//! OpenSSL reads its configuration once, when it starts in the process, and the `openssl` crate
//! has no safe way to load a provider with parameters or to set default properties: so the
//! configuration is a file that `OPENSSL_CONF` names, set here before anything in the process
//! starts OpenSSL (and before any other thread exists). OpenSSL is started right then, so the
//! file (which names the PIN file, never the PIN) is removed at once: nothing is left in the
//! temporary directory, however the process ends.

use m2m_security::secure_environment::pkcs11;
use std::io::Write;
use std::path::Path;

/// Where a configuration names its private key and its token.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    /// `m2m cse`: `[tls] private_key` and `[security.pkcs11]`; relative paths are read against
    /// the working directory.
    Cse,
    /// `m2m maf` and `m2m mef`: `private_key` and `[pkcs11]`; relative paths are read against the
    /// configuration file's directory.
    KeyService,
    /// `m2m ae` and `m2m request --ae`: `[security] private_key` and `[security.pkcs11]`;
    /// relative paths are read against the configuration file's directory.
    Ae,
}

/// When the configuration at `path` names its private key by a `pkcs11:` URI and its token, and
/// `OPENSSL_CONF` is not set: writes the OpenSSL configuration that loads the PKCS#11 provider
/// for the token (it names the PIN file, never the PIN), points `OPENSSL_CONF` at it and starts
/// OpenSSL, which reads it once; the file is gone when this returns. An operator's own
/// `OPENSSL_CONF` is left alone: it must load the provider then.
///
/// Call it first in `main`, while the process has one thread.
pub fn prepare(path: &Path, layout: Layout) -> anyhow::Result<()> {
    // Errors of the file are reported by the configuration's own loading, right after.
    let Ok(text) = std::fs::read_to_string(path) else {
        return Ok(());
    };
    let Ok(table) = toml::from_str::<toml::Table>(&text) else {
        return Ok(());
    };
    let (key, token) = match layout {
        Layout::Cse => (
            table.get("tls").and_then(|t| t.get("private_key")),
            table.get("security").and_then(|s| s.get("pkcs11")),
        ),
        Layout::KeyService => (table.get("private_key"), table.get("pkcs11")),
        Layout::Ae => {
            let security = table.get("security");
            (
                security.and_then(|s| s.get("private_key")),
                security.and_then(|s| s.get("pkcs11")),
            )
        }
    };
    // Only a private key in the token needs the provider (PSKs and secrets come through the
    // project's own PKCS#11 session).
    let token_key = key
        .and_then(toml::Value::as_str)
        .is_some_and(|k| k.starts_with("pkcs11:"));
    let Some(mut section) = token
        .cloned()
        .and_then(|p| p.try_into::<m2m_cse::config::Pkcs11Section>().ok())
    else {
        return Ok(());
    };
    if !token_key || std::env::var_os("OPENSSL_CONF").is_some() {
        return Ok(());
    }
    if layout != Layout::Cse {
        let base = path.parent().unwrap_or(Path::new("."));
        for p in [&mut section.module, &mut section.pin_file] {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        }
    }
    let provider = section
        .provider
        .clone()
        .unwrap_or_else(|| pkcs11::DEFAULT_PROVIDER_MODULE.into());
    if !provider.exists() {
        anyhow::bail!(
            "security.pkcs11: OpenSSL's PKCS#11 provider {} is missing (Debian: apt-get install pkcs11-provider)",
            provider.display()
        );
    }
    let mut file = tempfile::Builder::new()
        .prefix("m2m-openssl-pkcs11-")
        .suffix(".cnf")
        .tempfile()?;
    let text = pkcs11::openssl_config(&section.token_config(), &provider)
        .map_err(|e| anyhow::anyhow!("security.pkcs11: {e}"))?;
    file.write_all(text.as_bytes())?;
    let path = file.into_temp_path();
    std::env::set_var("OPENSSL_CONF", &path);
    // OpenSSL reads its configuration when it starts (OPENSSL_init_ssl loads it), and never again.
    openssl::init();
    drop(path);
    Ok(())
}
