//! DTLS 1.2 session resumption on the server (RFC 5246 clause 7.3, the abbreviated handshake;
//! TS-0003 clause 10.2.1 profiles DTLS 1.2 and leaves resumption open): a device that associated
//! once comes back within the session's lifetime with two flights and no certificate signature.
//!
//! Sessions live in the listener context's own cache (server-side state, bounded, no tickets),
//! and OpenSSL resumes them without asking the psk lookup table or checking a certificate again.
//! So the association of a resumed session is decided again here, from what holds now:
//! - PSK: the session's psk_identity is looked up in the table again; the row must still exist
//!   and hold the key the session was made with (compared through a keyed tag, never the key), so
//!   a removed or rotated key, or a group member's former Ksx, resumes nothing;
//! - certificate: the peer certificate the session kept must still be within its validity.
//!
//! What the handshake authenticated then goes through the listener's binder as for a full one.

use crate::tls::{Authenticated, PskLookup};
use openssl::ex_data::Index;
use openssl::ssl::{Ssl, SslContext, SslContextBuilder, SslRef, SslSessionCacheMode};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

/// Sessions a listener keeps (OpenSSL's default cache size): the oldest go first.
pub const MAX_SESSIONS: i32 = 20 * 1024;

/// How a session was authenticated when it was made.
#[derive(Clone, Copy)]
enum Made {
    /// With a PSK whose key had this tag.
    Psk {
        key_tag: [u8; 16],
    },
    Certificate,
}

/// The sessions of every DTLS listener of the process, by session ID (32 random bytes chosen by
/// OpenSSL); entries leave with OpenSSL's own (timeout, cache full, context freed).
fn sessions() -> &'static Mutex<HashMap<Vec<u8>, Made>> {
    static SESSIONS: OnceLock<Mutex<HashMap<Vec<u8>, Made>>> = OnceLock::new();
    SESSIONS.get_or_init(Default::default)
}

fn table_index() -> Index<SslContext, Arc<dyn PskLookup>> {
    static INDEX: OnceLock<Index<SslContext, Arc<dyn PskLookup>>> = OnceLock::new();
    *INDEX.get_or_init(|| SslContext::new_ex_index().expect("OpenSSL ex_data index"))
}

fn key_tag_index() -> Index<Ssl, [u8; 16]> {
    static INDEX: OnceLock<Index<Ssl, [u8; 16]>> = OnceLock::new();
    *INDEX.get_or_init(|| Ssl::new_ex_index().expect("OpenSSL ex_data index"))
}

/// A keyed tag of a PSK: equal for equal keys within this process, useless to anyone else.
fn key_tag(key: &[u8]) -> [u8; 16] {
    use hmac::Mac;
    static KEYED: OnceLock<hmac::Hmac<sha2::Sha256>> = OnceLock::new();
    let mut mac = KEYED
        .get_or_init(|| {
            let k: [u8; 32] = rand::random();
            <hmac::Hmac<sha2::Sha256> as Mac>::new_from_slice(&k).expect("any key length")
        })
        .clone();
    mac.update(key);
    let mut tag = [0u8; 16];
    tag.copy_from_slice(&mac.finalize().into_bytes()[..16]);
    tag
}

/// Records, during a handshake, which key the psk lookup table answered with.
pub(crate) fn note_psk(ssl: &mut SslRef, key: &[u8]) {
    ssl.set_ex_data(key_tag_index(), key_tag(key));
}

/// Turns on resumption for a DTLS server context whose psk lookup table is `table`.
pub(crate) fn enable(b: &mut SslContextBuilder, table: Option<Arc<dyn PskLookup>>) {
    b.set_session_cache_mode(SslSessionCacheMode::SERVER);
    b.set_session_cache_size(MAX_SESSIONS);
    if let Some(table) = table {
        b.set_ex_data(table_index(), table);
    }
    b.set_new_session_callback(|ssl, session| {
        let made = if crate::tls::psk_was_used(ssl) {
            match ssl.ex_data(key_tag_index()) {
                Some(tag) => Made::Psk { key_tag: *tag },
                None => return,
            }
        } else if ssl.peer_certificate().is_some() {
            Made::Certificate
        } else {
            return;
        };
        let mut all = sessions().lock().unwrap_or_else(|e| e.into_inner());
        // OpenSSL's cache removes its oldest beyond MAX_SESSIONS and tells us; this only guards
        // against a callback that never came.
        if all.len() >= 4 * MAX_SESSIONS as usize {
            all.clear();
        }
        all.insert(session.id().to_vec(), made);
    });
    b.set_remove_session_callback(|_ctx, session| {
        sessions()
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(session.id());
    });
}

/// What a resumed session authenticates now, if anything (see the module's documentation).
pub(crate) fn resumed(ssl: &SslRef) -> Option<Authenticated> {
    let id = ssl.session()?.id().to_vec();
    let made = *sessions()
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(&id)?;
    match made {
        Made::Psk { key_tag: was } => {
            let identity = std::str::from_utf8(ssl.psk_identity()?).ok()?;
            let table = ssl.ssl_context().ex_data(table_index())?;
            // A resumed session names its suite: the one the row's key was looked up for.
            let handshake = crate::tls::PskHandshake {
                peer: crate::tls::peer_address(ssl),
                suite: ssl
                    .current_cipher()
                    .map_or(crate::tls::PskSuite::Unknown, |c| {
                        crate::tls::PskSuite::Tls12(c.protocol_id())
                    }),
            };
            let row = table.lookup(identity, &handshake)?;
            (key_tag(&row.key) == was).then_some(Authenticated::Psk(row.association))
        }
        Made::Certificate => {
            let leaf = ssl.peer_certificate()?;
            let now = openssl::asn1::Asn1Time::days_from_now(0).ok()?;
            // The whole stored chain, not the leaf only: an intermediate may be revoked too.
            let chain_revoked = ssl
                .peer_cert_chain()
                .is_some_and(|chain| chain.iter().any(|c| crate::tls::revoked_in_context(ssl, c)));
            let valid = leaf.not_before() <= now
                && leaf.not_after() >= now
                && !crate::tls::revoked_in_context(ssl, &leaf)
                && !chain_revoked;
            (valid && ssl.verify_result() == openssl::x509::X509VerifyResult::OK).then(|| {
                Some(Authenticated::Certificate {
                    leaf_der: leaf.to_der().ok()?,
                })
            })?
        }
    }
}
