//! The oneM2M CSE (TS-0001): resource tree in an embedded store, the HTTP binding, registration of
//! AEs and CSEs, discovery, subscriptions and notifications, groups, and retargeting between CSEs.
//!
//! A request travels: binding (`http_server`) → [`Cse::handle`] → target resolution (`resolve`) →
//! local operation (`dispatcher`, `discovery`, `group`) or forwarding (`routing`) → store → response.

mod access;
pub mod config;
pub mod cse;
mod discovery;
mod dispatcher;
pub mod expiry;
mod group;
pub mod http_server;
mod notification;
pub mod registration;
mod resolve;
mod resources;
mod routing;
pub mod store;

pub use config::{Config, Role};
pub use cse::{Cse, Peer};

use std::sync::Arc;

/// A running CSE: its listener is bound and its background tasks started.
pub struct Running {
    pub cse: Arc<Cse>,
    pub local_addr: std::net::SocketAddr,
}

/// Binds the HTTP listener, starts the server, the expiry sweeper and (for an MN) registration.
pub async fn start(cfg: Config) -> anyhow::Result<Running> {
    let listen = cfg.listen_addr()?;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {listen}: {e}"))?;
    let local_addr = listener.local_addr()?;
    let explicit_url = cfg.http.public_url.clone();
    let cse = Cse::open(cfg)?;
    let url = explicit_url.unwrap_or_else(|| format!("http://{local_addr}"));
    cse.set_public_url(url)
        .map_err(|e| anyhow::anyhow!(e.dbg))?;
    tokio::spawn(http_server::serve(Arc::clone(&cse), listener));
    tokio::spawn(expiry::run(Arc::clone(&cse)));
    tokio::spawn(registration::register_with_registrar(Arc::clone(&cse)));
    Ok(Running { cse, local_addr })
}
