//! Waiting for the signal that stops a server process (`m2m cse`, `maf`, `mef`, `bsf`, `das`):
//! SIGINT (Ctrl-C) or SIGTERM, what systemd, Docker and Kubernetes send, so that either way the
//! process shuts down gracefully (requests in progress finish first) instead of being killed.

use anyhow::Context;
use tokio::signal::unix::{signal, SignalKind};

/// Returns once SIGINT or SIGTERM arrives.
pub async fn requested() -> anyhow::Result<()> {
    let mut term = signal(SignalKind::terminate()).context("cannot watch SIGTERM")?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r.context("cannot watch SIGINT")?,
        _ = term.recv() => {}
    }
    Ok(())
}
