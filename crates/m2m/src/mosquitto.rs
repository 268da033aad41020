//! mosquitto as the MQTT server of a CSE (TS-0010), for `m2m demo` and `m2m bench-bindings`:
//! configured by `m2m mqtt-broker-config` from the CSE's own configuration, started as a child.

use crate::spawned::{self, Spawned};
use anyhow::Context;
use std::path::Path;
use std::process::{Command, Stdio};

/// Whether mosquitto (Debian package mosquitto) can be started here.
pub fn installed() -> bool {
    Command::new("mosquitto")
        .arg("-h")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

/// Writes mosquitto's files for the CSE of `cse_toml` into `out` and starts it, its log in `log`.
pub fn start(cse_toml: &Path, out: &Path, log: &Path) -> anyhow::Result<Spawned> {
    let result = spawned::m2m(&["mqtt-broker-config", "--config"])?
        .arg(cse_toml)
        .arg("--out")
        .arg(out)
        .output()?;
    anyhow::ensure!(
        result.status.success(),
        "m2m mqtt-broker-config: {}",
        String::from_utf8_lossy(&result.stderr)
    );
    let conf = out.join("mosquitto.conf");
    // Started as root, mosquitto drops to its own user, who cannot read this run's 0600 files.
    if std::os::unix::fs::MetadataExt::uid(&std::fs::metadata("/proc/self")?) == 0 {
        let text = std::fs::read_to_string(&conf)?;
        std::fs::write(&conf, format!("{text}user root\n"))?;
    }
    let child = Command::new("mosquitto")
        .arg("-c")
        .arg(&conf)
        .env("OPENSSL_CONF", out.join("openssl.cnf"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log)?)
        .spawn()
        .context("cannot start mosquitto (Debian package mosquitto)")?;
    Ok(child.into())
}
