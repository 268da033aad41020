//! Fetching a key from another key service while a TLS handshake waits for it.
//!
//! OpenSSL's PSK callback is synchronous, but the key lives at a MAF or MEF: the callback waits
//! here for the fetch, while the runtime moves its other tasks off this worker
//! (`block_in_place`). This needs tokio's multi-thread runtime; elsewhere nothing is fetched.

use std::future::Future;
use std::time::Duration;

/// Runs `fetch` to completion (at most `timeout`) from inside a PSK callback; `Err` says why
/// there is no key.
pub fn fetch_in_psk_callback<T>(
    timeout: Duration,
    fetch: impl Future<Output = Result<T, String>>,
) -> Result<T, String> {
    let handle = tokio::runtime::Handle::try_current()
        .map_err(|_| "no runtime to fetch the key".to_owned())?;
    if handle.runtime_flavor() != tokio::runtime::RuntimeFlavor::MultiThread {
        return Err("fetching a key during a handshake needs a multi-thread runtime".into());
    }
    match tokio::task::block_in_place(|| handle.block_on(tokio::time::timeout(timeout, fetch))) {
        Ok(r) => r,
        Err(_) => Err(format!("no answer within {timeout:?}")),
    }
}
