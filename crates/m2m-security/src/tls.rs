//! TLS contexts in the oneM2M profiles (TS-0003 clause 10.2): TLS 1.2 with the PSK suites of
//! clause 10.2.2 and the ECDHE-ECDSA suites of clause 10.2.3; TLS 1.3 only when asked for.
//!
//! The server context answers a psk_identity from a lookup table (the psk lookup table of the
//! door-lock guide, seeds/000 clause 7.1.2) and verifies client certificates against a root of
//! trust and the P-256 profile. What the handshake authenticated is read back with
//! [`association_of`].

use crate::association::Association;
use crate::revocation::{CertStatus, RevocationList};
use openssl::error::ErrorStack;
use openssl::ex_data::Index;
use openssl::ssl::{
    Ssl, SslContext, SslContextBuilder, SslFiletype, SslMethod, SslOptions, SslRef, SslVerifyMode,
    SslVersion,
};
use openssl::x509::{X509Ref, X509StoreContextRef};
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use zeroize::Zeroizing;

/// TLS_PSK_WITH_AES_128_CBC_SHA256 (0x00AE) and TLS_PSK_WITH_AES_128_CCM_8 (0xC0A8).
pub const PSK_SUITES: &[&str] = &["PSK-AES128-CBC-SHA256", "PSK-AES128-CCM8"];
/// TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA256 (0xC023) and TLS_ECDHE_ECDSA_WITH_AES_128_CCM_8 (0xC0AE),
/// the suites TS-0003 clause 10.2.3 requires "at least", and TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256
/// (0xC02B, RFC 5289), which many DTLS stacks of constrained devices carry instead of CCM_8.
pub const CERTIFICATE_SUITES: &[&str] = &[
    "ECDHE-ECDSA-AES128-SHA256",
    "ECDHE-ECDSA-AES128-CCM8",
    "ECDHE-ECDSA-AES128-GCM-SHA256",
];

/// Whether a suite name (OpenSSL spelling) belongs to the oneM2M profiles.
pub fn is_profile_suite(name: &str) -> bool {
    PSK_SUITES.contains(&name) || CERTIFICATE_SUITES.contains(&name)
}

/// A row of the psk lookup table: the key, and the association it opens once a handshake has
/// proven possession of it (mode, Credential-ID, the AE-ID or CSE-ID bound, if any).
pub struct PskKey {
    pub key: Zeroizing<Vec<u8>>,
    pub association: Association,
}

/// Where the server finds the key for a psk_identity (a KpsaID, MAF key identifiers, KsxIds,
/// B-TIDs).
pub trait PskLookup: Send + Sync {
    fn lookup(&self, psk_identity: &str, handshake: &PskHandshake) -> Option<PskKey>;
}

/// What the server knows of the handshake in progress when it looks a psk_identity up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PskHandshake {
    /// The client's address, for lookups that must be limited per source.
    pub peer: Option<IpAddr>,
    /// The suite the handshake is keyed for: a key derived for one protocol (GBA's NAF_Id names
    /// it, TS 33.220 Annex H) opens no other.
    pub suite: PskSuite,
}

impl PskHandshake {
    /// A handshake from `peer` whose suite does not matter to the lookup (tests, tools).
    pub fn from_peer(peer: Option<IpAddr>) -> PskHandshake {
        PskHandshake {
            peer,
            suite: PskSuite::Unknown,
        }
    }
}

/// The PSK suite of a handshake in progress.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PskSuite {
    /// TLS or DTLS 1.2 with this suite (its two-octet code, e.g. 0x00AE).
    Tls12([u8; 2]),
    /// TLS 1.3 (an external PSK serves every suite of its hash).
    Tls13,
    /// Not determined.
    Unknown,
}

/// The suites a client offered in its ClientHello (recorded by the server's ClientHello
/// callback): OpenSSL names the negotiated suite only once the keys are set up, after the PSK
/// callback, so the callback works the suite out from the offer and the server's order.
fn offered_index() -> Index<Ssl, Vec<[u8; 2]>> {
    static INDEX: OnceLock<Index<Ssl, Vec<[u8; 2]>>> = OnceLock::new();
    *INDEX.get_or_init(|| Ssl::new_ex_index().expect("OpenSSL ex_data index"))
}

/// The two-octet code of a PSK suite of the profile.
fn psk_suite_code(name: &str) -> Option<[u8; 2]> {
    match name {
        "PSK-AES128-CBC-SHA256" => Some([0x00, 0xAE]),
        "PSK-AES128-CCM8" => Some([0xC0, 0xA8]),
        _ => None,
    }
}

/// The PSK suite OpenSSL chooses for a handshake that reached the PSK callback: under server
/// preference the first of the server's PSK suites the client offered, else the first of the
/// client's offer the server has. Only PSK suites count: a handshake keyed by a PSK uses one.
fn negotiated_psk_suite(
    server: &[[u8; 2]],
    offered: &[[u8; 2]],
    server_preference: bool,
) -> Option<[u8; 2]> {
    if server_preference {
        server.iter().find(|s| offered.contains(s)).copied()
    } else {
        offered.iter().find(|s| server.contains(s)).copied()
    }
}

fn peer_index() -> Index<Ssl, IpAddr> {
    static INDEX: OnceLock<Index<Ssl, IpAddr>> = OnceLock::new();
    *INDEX.get_or_init(|| Ssl::new_ex_index().expect("OpenSSL ex_data index"))
}

/// Records the client's address on a server connection before its handshake, for the PSK lookup.
pub fn set_peer_address(ssl: &mut SslRef, ip: IpAddr) {
    ssl.set_ex_data(peer_index(), ip);
}

/// The client's address [`set_peer_address`] recorded.
pub(crate) fn peer_address(ssl: &SslRef) -> Option<IpAddr> {
    ssl.ex_data(peer_index()).copied()
}

/// What one TLS listener offers.
pub struct ServerTlsConfig {
    /// OpenSSL suite names; each must be a profile suite.
    pub cipher_suites: Vec<String>,
    /// Also accept TLS 1.3 (not part of oneM2M Release 3).
    pub tls13: bool,
    /// PEM chain (leaf first) and key of this CSE, for the certificate suites.
    pub certificate_chain: Option<PathBuf>,
    pub private_key: Option<PathBuf>,
    /// Root(s) of trust for client certificates; without it no client certificate is accepted.
    pub trusted_ca: Option<PathBuf>,
    /// The psk lookup table, for the PSK suites.
    pub psk: Option<Arc<dyn PskLookup>>,
    /// Certificate revocation lists consulted at every certificate handshake (TS-0003 clause
    /// 8.1.2.2); absent: no status check.
    pub revocation: Option<Arc<RevocationList>>,
}

/// What a completed handshake authenticated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Authenticated {
    /// TLS-PSK: the key of this table row was used, so its association holds.
    Psk(Association),
    /// A client certificate that chained to the root of trust; the leaf in DER.
    Certificate { leaf_der: Vec<u8> },
}

/// The association of the PSK row the callback answered with. It is only a candidate: whether the
/// handshake used that PSK is known once it completed ([`association_of`]).
fn psk_index() -> Index<Ssl, Association> {
    static INDEX: OnceLock<Index<Ssl, Association>> = OnceLock::new();
    *INDEX.get_or_init(|| Ssl::new_ex_index().expect("OpenSSL ex_data index"))
}

/// TLS 1.3 suites whose hash is SHA-256, the hash OpenSSL gives a PSK from the TLS 1.2-style
/// callback: a client offering only others (SHA-384) gets no PSK handshake at all.
pub const TLS13_PSK_COMPATIBLE_SUITES: &str =
    "TLS_AES_128_GCM_SHA256:TLS_AES_128_CCM_SHA256:TLS_AES_128_CCM_8_SHA256";

/// Builds the server context of a TLS listener.
pub fn server_context(cfg: &ServerTlsConfig) -> Result<SslContext, String> {
    Ok(server_builder(cfg, Proto::Tls { tls13: cfg.tls13 })?.build())
}

/// Builds the server context of a DTLS 1.2 listener (TS-0003 clause 10.2.1, the CoAP binding):
/// the same suites, PSK table and certificate checks as TLS, and a HelloVerifyRequest cookie
/// before any handshake state (RFC 6347 clause 4.2.1) so that a spoofed source gets one small
/// datagram and no amplification. Sessions can be resumed ([`crate::dtls_resumption`]).
pub fn dtls_server_context(cfg: &ServerTlsConfig) -> Result<SslContext, String> {
    let mut b = server_builder(cfg, Proto::Dtls)?;
    crate::dtls_resumption::enable(&mut b, cfg.psk.clone());
    b.set_options(SslOptions::COOKIE_EXCHANGE | SslOptions::NO_QUERY_MTU);
    b.set_cookie_generate_cb(|ssl, out| {
        let cookie = cookie_for(ssl.ex_data(peer_index()).copied(), cookie_epoch(0));
        let n = cookie.len().min(out.len());
        out[..n].copy_from_slice(&cookie[..n]);
        Ok(n)
    });
    b.set_cookie_verify_cb(|ssl, cookie| {
        dtls_cookie_is_valid(ssl.ex_data(peer_index()).copied(), cookie)
    });
    Ok(b.build())
}

/// The cookie of this minute for `ip`: what a HelloVerifyRequest to it carries.
pub fn dtls_cookie(ip: IpAddr) -> [u8; 16] {
    cookie_for(Some(ip), cookie_epoch(0))
}

/// Whether `cookie` is one this process's DTLS listeners gave `ip` this minute or the last (a
/// client between the two is not refused). The transport asks too, before it lets a new
/// ClientHello replace an established association (RFC 6347 clause 4.2.8).
pub fn dtls_cookie_is_valid(ip: Option<IpAddr>, cookie: &[u8]) -> bool {
    [0, 1].iter().any(|back| {
        let expected = cookie_for(ip, cookie_epoch(*back));
        cookie.len() == expected.len() && openssl::memcmp::eq(&expected, cookie)
    })
}

/// The minute a cookie belongs to, `back` minutes ago.
fn cookie_epoch(back: u64) -> u64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    (now / 60).saturating_sub(back)
}

/// HMAC-SHA-256 over the client's address and the minute, under a key of this process, cut to
/// 16 bytes: only a client that receives datagrams at its source address can return it.
fn cookie_for(ip: Option<IpAddr>, epoch: u64) -> [u8; 16] {
    use hmac::Mac;
    // The keyed state (the key's two blocks hashed) is made once: each cookie then costs two
    // compressions, not four (several cookies per handshake).
    static KEYED: OnceLock<hmac::Hmac<sha2::Sha256>> = OnceLock::new();
    let mut mac = KEYED
        .get_or_init(|| {
            let key: [u8; 32] = rand::random();
            <hmac::Hmac<sha2::Sha256> as Mac>::new_from_slice(&key).expect("any key length")
        })
        .clone();
    match ip {
        Some(IpAddr::V4(ip)) => mac.update(&ip.octets()),
        Some(IpAddr::V6(ip)) => mac.update(&ip.octets()),
        None => mac.update(b"?"),
    }
    mac.update(&epoch.to_be_bytes());
    let tag = mac.finalize().into_bytes();
    let mut cookie = [0u8; 16];
    cookie.copy_from_slice(&tag[..16]);
    cookie
}

/// TLS (with TLS 1.3 when asked) or DTLS 1.2.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Proto {
    Tls { tls13: bool },
    Dtls,
}

fn server_builder(cfg: &ServerTlsConfig, proto: Proto) -> Result<SslContextBuilder, String> {
    let err = |what: &str, e: ErrorStack| format!("{what}: {e}");
    if let Some(bad) = cfg.cipher_suites.iter().find(|s| !is_profile_suite(s)) {
        return Err(format!(
            "cipher suite '{bad}' is not a oneM2M profile suite ({})",
            profile_list()
        ));
    }
    let has_cert = cfg.certificate_chain.is_some() && cfg.private_key.is_some();
    let mut suites: Vec<&str> = cfg
        .cipher_suites
        .iter()
        .map(String::as_str)
        .filter(|s| {
            if PSK_SUITES.contains(s) {
                cfg.psk.is_some()
            } else {
                has_cert
            }
        })
        .collect();
    if proto == Proto::Dtls {
        // Over DTLS the server picks, CCM_8 first: the AEAD suite constrained devices carry, and
        // the one whose records the transport protects without OpenSSL after the handshake
        // (m2m-transport dtls_record: an idle association then holds no record buffers).
        suites.sort_by_key(|s| !s.ends_with("CCM8"));
    }
    if suites.is_empty() {
        return Err("no usable cipher suite: PSK suites need a psk table, certificate suites a certificate and key".into());
    }
    let method = match proto {
        Proto::Tls { .. } => SslMethod::tls_server(),
        Proto::Dtls => SslMethod::dtls_server(),
    };
    let mut b = profile_builder(method, proto, &suites)?;
    // No session tickets. TLS resumes nothing (each connection authenticates afresh; under TLS
    // 1.3 "resumed" is how an external PSK shows); DTLS resumes from its own bounded cache.
    b.set_options(SslOptions::NO_TICKET);
    if proto == Proto::Dtls {
        b.set_options(SslOptions::CIPHER_SERVER_PREFERENCE);
    }
    // Idle associations give their record buffers back (some 34 KB each): thousands of idle
    // devices stay cheap.
    b.set_mode(openssl::ssl::SslMode::RELEASE_BUFFERS);
    b.set_session_cache_mode(openssl::ssl::SslSessionCacheMode::OFF);
    // A TLS 1.3 external PSK handshake is a resumption to OpenSSL, which then wants a session ID
    // context whenever client certificates are verified.
    b.set_session_id_context(b"oneM2M-CSE")
        .map_err(|e| err("session id context", e))?;
    if has_cert {
        let chain = cfg.certificate_chain.as_ref().expect("checked");
        b.set_certificate_chain_file(chain)
            .map_err(|e| err(&format!("certificate {}", chain.display()), e))?;
        let key = cfg.private_key.as_ref().expect("checked");
        use_private_key(&mut b, key)?;
        b.check_private_key()
            .map_err(|e| err("the private key does not match the certificate", e))?;
    }
    match &cfg.trusted_ca {
        Some(ca) => {
            b.set_ca_file(ca)
                .map_err(|e| err(&format!("trusted CA {}", ca.display()), e))?;
            // A certificate handshake requires a client certificate that chains to the root and
            // fits the profile; PSK handshakes send no certificate request at all.
            let revocation = cfg.revocation.clone();
            b.set_verify_callback(
                SslVerifyMode::PEER | SslVerifyMode::FAIL_IF_NO_PEER_CERT,
                move |preverified, ctx| {
                    verify_profile(preverified, ctx) && not_revoked(revocation.as_deref(), ctx)
                },
            );
            if let Some(list) = cfg.revocation.clone() {
                b.set_ex_data(revocation_index(), list);
            }
        }
        None => b.set_verify(SslVerifyMode::NONE),
    }
    if let Some(table) = cfg.psk.clone() {
        // Every PSK suite of the list must have its code, or the inference could name another
        // suite than OpenSSL's choice: then the lookup is told none.
        let psk_names: Vec<&str> = suites
            .iter()
            .copied()
            .filter(|s| PSK_SUITES.contains(s))
            .collect();
        let server_psk: Vec<[u8; 2]> = psk_names.iter().filter_map(|s| psk_suite_code(s)).collect();
        let complete = server_psk.len() == psk_names.len();
        let server_preference = proto == Proto::Dtls;
        b.set_client_hello_callback(|ssl, _alert| {
            let offered = ssl
                .client_hello_ciphers()
                .unwrap_or_default()
                .chunks_exact(2)
                .map(|c| [c[0], c[1]])
                .collect();
            ssl.set_ex_data(offered_index(), offered);
            Ok(openssl::ssl::ClientHelloResponse::SUCCESS)
        });
        b.set_psk_server_callback(move |ssl, identity, psk_out| {
            let Some(identity) = identity.and_then(|i| std::str::from_utf8(i).ok()) else {
                return Ok(0);
            };
            let suite = if ssl.version2() == Some(SslVersion::TLS1_3) {
                PskSuite::Tls13
            } else if !complete {
                PskSuite::Unknown
            } else {
                ssl.ex_data(offered_index())
                    .and_then(|offered| {
                        negotiated_psk_suite(&server_psk, offered, server_preference)
                    })
                    .map_or(PskSuite::Unknown, PskSuite::Tls12)
            };
            let handshake = PskHandshake {
                peer: ssl.ex_data(peer_index()).copied(),
                suite,
            };
            let Some(row) = table.lookup(identity, &handshake) else {
                // Unknown identity: the client sees unknown_psk_identity; nothing is logged but the identity.
                return Ok(0);
            };
            if row.key.len() > psk_out.len() {
                return Ok(0);
            }
            psk_out[..row.key.len()].copy_from_slice(&row.key);
            crate::dtls_resumption::note_psk(ssl, &row.key);
            // A candidate only: under TLS 1.3 OpenSSL may still drop this PSK (a suite with
            // another hash) and finish with a certificate, or with nothing.
            ssl.set_ex_data(psk_index(), row.association);
            Ok(row.key.len())
        });
    }
    Ok(b)
}

/// A context builder for TLS 1.2 (and 1.3 when asked) or DTLS 1.2 with exactly these suites.
fn profile_builder(
    method: SslMethod,
    proto: Proto,
    suites: &[&str],
) -> Result<SslContextBuilder, String> {
    let err = |what: &str, e: ErrorStack| format!("{what}: {e}");
    let mut b = SslContextBuilder::new(method).map_err(|e| err("TLS context", e))?;
    let (min, max) = match proto {
        Proto::Tls { tls13: false } => (SslVersion::TLS1_2, SslVersion::TLS1_2),
        Proto::Tls { tls13: true } => (SslVersion::TLS1_2, SslVersion::TLS1_3),
        Proto::Dtls => (SslVersion::DTLS1_2, SslVersion::DTLS1_2),
    };
    b.set_min_proto_version(Some(min))
        .map_err(|e| err("TLS version", e))?;
    b.set_max_proto_version(Some(max))
        .map_err(|e| err("TLS version", e))?;
    b.set_cipher_list(&suites.join(":"))
        .map_err(|e| err("cipher suites", e))?;
    if proto == (Proto::Tls { tls13: true }) {
        b.set_ciphersuites(TLS13_PSK_COMPATIBLE_SUITES)
            .map_err(|e| err("TLS 1.3 suites", e))?;
    }
    Ok(b)
}

fn profile_list() -> String {
    PSK_SUITES
        .iter()
        .chain(CERTIFICATE_SUITES)
        .copied()
        .collect::<Vec<_>>()
        .join(", ")
}

/// Peer certificates must chain to the root of trust (OpenSSL's verdict, which covers validity
/// dates and name constraints) and every certificate of the chain must fit the profile: ECDSA
/// P-256 with SHA-256, digitalSignature (TS-0003 clause 10.1.1).
fn verify_profile(preverified: bool, ctx: &mut X509StoreContextRef) -> bool {
    preverified
        && ctx
            .current_cert()
            .is_some_and(|c| crate::certificates::check_profile(c).is_ok())
}

/// The revocation list of a server context, for the sessions a DTLS client resumes without
/// a certificate exchange ([`crate::dtls_resumption`]).
fn revocation_index() -> Index<SslContext, Arc<RevocationList>> {
    static INDEX: OnceLock<Index<SslContext, Arc<RevocationList>>> = OnceLock::new();
    *INDEX.get_or_init(|| SslContext::new_ex_index().expect("OpenSSL ex_data index"))
}

/// Whether `cert` is revoked under the revocation list of the context `ssl` was made from.
pub(crate) fn revoked_in_context(ssl: &SslRef, cert: &X509Ref) -> bool {
    ssl.ssl_context()
        .ex_data(revocation_index())
        .is_some_and(|list| list.check(cert) != CertStatus::Good)
}

thread_local! {
    /// Why the verify callback refused a chain, for [`handshake_reason`]: the callback runs inside
    /// the handshake call, on the thread that then reads the failure.
    static REFUSAL: std::cell::RefCell<Option<String>> = const { std::cell::RefCell::new(None) };
}

fn note_refusal(why: String) {
    REFUSAL.with(|r| *r.borrow_mut() = Some(why));
}

/// The chain's certificate at hand is not revoked by its issuer's CRL. A refusal's reason goes
/// to the handshake's audit line ([`handshake_reason`]).
fn not_revoked(list: Option<&RevocationList>, ctx: &mut X509StoreContextRef) -> bool {
    let (Some(list), Some(cert)) = (list, ctx.current_cert()) else {
        return true;
    };
    match list.check(cert) {
        CertStatus::Good => true,
        CertStatus::Revoked => {
            ctx.set_error(openssl::x509::X509VerifyResult::APPLICATION_VERIFICATION);
            note_refusal("certificate revoked".into());
            false
        }
        CertStatus::Undecided(why) => {
            ctx.set_error(openssl::x509::X509VerifyResult::APPLICATION_VERIFICATION);
            note_refusal(format!("certificate status unknown: {why}"));
            false
        }
    }
}

/// What the completed handshake on `ssl` authenticated, if anything. A PSK row's association
/// holds only if the handshake really used a PSK: a TLS 1.2 PSK suite was negotiated, or (TLS 1.3,
/// where session tickets are off) the session was resumed from the external PSK. Otherwise only a
/// verified client certificate proves anything.
pub fn association_of(ssl: &SslRef) -> Option<Authenticated> {
    if ssl.session_reused() && ssl.version2() != Some(SslVersion::TLS1_3) {
        // An abbreviated DTLS 1.2 handshake: neither the table nor the chain was consulted.
        return crate::dtls_resumption::resumed(ssl);
    }
    if psk_was_used(ssl) {
        return ssl
            .ex_data(psk_index())
            .map(|a| Authenticated::Psk(a.clone()));
    }
    let leaf = ssl.peer_certificate()?;
    if ssl.verify_result() != openssl::x509::X509VerifyResult::OK {
        return None;
    }
    Some(Authenticated::Certificate {
        leaf_der: leaf.to_der().ok()?,
    })
}

/// Whether the completed handshake was keyed by a pre-shared key.
pub fn psk_was_used(ssl: &SslRef) -> bool {
    match ssl.version2() {
        Some(SslVersion::TLS1_3) => ssl.session_reused(),
        _ => ssl
            .current_cipher()
            .is_some_and(|c| PSK_SUITES.contains(&c.name())),
    }
}

/// A client's PSK fetched at each handshake: a key kept in a PKCS#11 token is unwrapped for that
/// handshake only and zeroed once OpenSSL has copied it, instead of living in the context for as
/// long as the context does.
#[derive(Clone)]
pub struct PskSource {
    /// The psk_identity sent.
    pub identity: String,
    /// The key; None fails the handshake (the key is gone from the secure environment).
    pub key: Arc<dyn Fn() -> Option<Zeroizing<Vec<u8>>> + Send + Sync>,
}

/// What a client presents and trusts.
#[derive(Clone, Default)]
pub struct ClientTlsConfig {
    /// Cipher suites (OpenSSL names); empty: every profile suite the credentials allow.
    pub cipher_suites: Vec<String>,
    pub tls13: bool,
    /// TLS-PSK: psk_identity (KpsaID, KmID, KcID) and key, held by the context.
    pub psk: Option<(String, Zeroizing<Vec<u8>>)>,
    /// TLS-PSK with the key asked for at each handshake instead (not with `psk`).
    pub psk_source: Option<PskSource>,
    /// Client certificate chain (PEM, leaf first) and key.
    pub certificate_chain: Option<PathBuf>,
    pub private_key: Option<PathBuf>,
    /// Root of trust for the server's certificate.
    pub trusted_ca: Option<PathBuf>,
    /// Revocation lists the server's certificate is checked against (TS-0003 clause 8.1.2.2).
    pub revocation: Option<Arc<RevocationList>>,
}

/// Gives the context its private key: a PEM file, or a key in a PKCS#11 token named by its
/// `pkcs11:` URI (the handshakes then sign inside the token, through OpenSSL's PKCS#11 provider,
/// which the process's OpenSSL configuration loads: `secure_environment::pkcs11`).
fn use_private_key(b: &mut SslContextBuilder, key: &std::path::Path) -> Result<(), String> {
    use crate::secure_environment::pkcs11;
    match key.to_str().filter(|_| pkcs11::is_key_uri(key)) {
        Some(uri) => {
            let pkey = pkcs11::load_private_key(uri).map_err(|e| {
                format!(
                    "private key {uri}: {e} (is OpenSSL's PKCS#11 provider loaded for its token?)"
                )
            })?;
            b.set_private_key(&pkey)
                .map_err(|e| format!("private key {uri}: {e}"))
        }
        None => b
            .set_private_key_file(key, SslFiletype::PEM)
            .map_err(|e| format!("private key {}: {e}", key.display())),
    }
}

/// Builds a client context; certificate suites verify the server against `trusted_ca`.
pub fn client_context(cfg: &ClientTlsConfig) -> Result<SslContext, String> {
    client_context_for(cfg, Proto::Tls { tls13: cfg.tls13 })
}

/// The same for DTLS 1.2 (`coaps://`).
pub fn dtls_client_context(cfg: &ClientTlsConfig) -> Result<SslContext, String> {
    client_context_for(cfg, Proto::Dtls)
}

fn client_context_for(cfg: &ClientTlsConfig, proto: Proto) -> Result<SslContext, String> {
    let err = |what: &str, e: ErrorStack| format!("{what}: {e}");
    if let Some(bad) = cfg.cipher_suites.iter().find(|s| !is_profile_suite(s)) {
        return Err(format!(
            "cipher suite '{bad}' is not a oneM2M profile suite ({})",
            profile_list()
        ));
    }
    let wanted: Vec<&str> = if cfg.cipher_suites.is_empty() {
        PSK_SUITES
            .iter()
            .chain(CERTIFICATE_SUITES)
            .copied()
            .collect()
    } else {
        cfg.cipher_suites.iter().map(String::as_str).collect()
    };
    let suites: Vec<&str> = wanted
        .into_iter()
        .filter(|s| {
            if PSK_SUITES.contains(s) {
                cfg.psk.is_some() || cfg.psk_source.is_some()
            } else {
                cfg.trusted_ca.is_some()
            }
        })
        .collect();
    if suites.is_empty() {
        return Err(
            "no usable cipher suite: PSK suites need a key, certificate suites a trusted CA".into(),
        );
    }
    if cfg.psk.is_some() && cfg.psk_source.is_some() {
        return Err("a PSK and a PSK source: give one".into());
    }
    let method = match proto {
        Proto::Tls { .. } => SslMethod::tls_client(),
        Proto::Dtls => SslMethod::dtls_client(),
    };
    let mut b = profile_builder(method, proto, &suites)?;
    if let (Some(chain), Some(key)) = (&cfg.certificate_chain, &cfg.private_key) {
        b.set_certificate_chain_file(chain)
            .map_err(|e| err(&format!("certificate {}", chain.display()), e))?;
        use_private_key(&mut b, key)?;
        b.check_private_key()
            .map_err(|e| err("the private key does not match the certificate", e))?;
    }
    match &cfg.trusted_ca {
        Some(ca) => {
            b.set_ca_file(ca)
                .map_err(|e| err(&format!("trusted CA {}", ca.display()), e))?;
            let revocation = cfg.revocation.clone();
            b.set_verify_callback(SslVerifyMode::PEER, move |preverified, ctx| {
                verify_profile(preverified, ctx) && not_revoked(revocation.as_deref(), ctx)
            });
        }
        None => b.set_verify(SslVerifyMode::NONE),
    }
    if let Some((identity, key)) = &cfg.psk {
        let identity = identity.clone();
        let key = key.clone();
        b.set_psk_client_callback(move |_ssl, _hint, identity_out, psk_out| {
            Ok(write_client_psk(&identity, &key, identity_out, psk_out))
        });
    }
    if let Some(source) = cfg.psk_source.clone() {
        b.set_psk_client_callback(move |_ssl, _hint, identity_out, psk_out| {
            // Dropped (zeroed) when the callback returns: OpenSSL has its copy.
            let Some(key) = (source.key)() else {
                return Ok(0);
            };
            Ok(write_client_psk(
                &source.identity,
                &key,
                identity_out,
                psk_out,
            ))
        });
    }
    Ok(b.build())
}

/// Writes a client's psk_identity (NUL-terminated) and key where OpenSSL wants them; the key's
/// length, or 0 (no PSK: the handshake fails) when either does not fit.
fn write_client_psk(
    identity: &str,
    key: &[u8],
    identity_out: &mut [u8],
    psk_out: &mut [u8],
) -> usize {
    let id = identity.as_bytes();
    if id.len() + 1 > identity_out.len() || key.len() > psk_out.len() {
        return 0;
    }
    identity_out[..id.len()].copy_from_slice(id);
    identity_out[id.len()] = 0;
    psk_out[..key.len()].copy_from_slice(key);
    key.len()
}

/// A short reason for a failed handshake: OpenSSL's reason strings (they carry no key
/// material), or the error's own text when OpenSSL gave none (e.g. the peer closed the
/// connection).
pub fn handshake_reason(e: &openssl::ssl::Error) -> String {
    let refusal = REFUSAL.with(|r| r.borrow_mut().take());
    let reasons: Vec<&str> = e
        .ssl_error()
        .map(|stack| stack.errors().iter().filter_map(|x| x.reason()).collect())
        .unwrap_or_default();
    if let Some(why) = refusal.filter(|_| reasons.contains(&"certificate verify failed")) {
        return why;
    }
    if reasons.is_empty() {
        e.to_string()
    } else {
        reasons.join(", ")
    }
}

/// Prepares a client connection: SNI (TS-0003 clause 10.2.1) and, when the server is known by
/// name, verification of that name against its certificate.
pub fn client_ssl(ctx: &SslContext, server_name: Option<&str>) -> Result<Ssl, String> {
    let mut ssl = Ssl::new(ctx).map_err(|e| e.to_string())?;
    if let Some(name) = server_name {
        ssl.set_hostname(name).map_err(|e| e.to_string())?;
        ssl.param_mut().set_host(name).map_err(|e| e.to_string())?;
    }
    Ok(ssl)
}

/// Prepares a client connection to a server known by its IP address: its certificate must carry
/// that address (an iPAddress subjectAltName); no SNI (RFC 6066 clause 3).
pub fn client_ssl_for_ip(ctx: &SslContext, ip: IpAddr) -> Result<Ssl, String> {
    let mut ssl = Ssl::new(ctx).map_err(|e| e.to_string())?;
    ssl.param_mut().set_ip(ip).map_err(|e| e.to_string())?;
    Ok(ssl)
}

#[cfg(test)]
mod psk_suite_tests {
    use super::negotiated_psk_suite;

    const CBC: [u8; 2] = [0x00, 0xAE];
    const CCM8: [u8; 2] = [0xC0, 0xA8];
    const ECDHE: [u8; 2] = [0xC0, 0x23];

    /// DTLS servers choose by their own order; TLS servers by the client's.
    #[test]
    fn the_negotiated_psk_suite_follows_whose_preference_counts() {
        let server = [CCM8, CBC];
        assert_eq!(
            negotiated_psk_suite(&server, &[ECDHE, CBC, CCM8], true),
            Some(CCM8)
        );
        assert_eq!(
            negotiated_psk_suite(&server, &[ECDHE, CBC, CCM8], false),
            Some(CBC)
        );
        assert_eq!(negotiated_psk_suite(&server, &[ECDHE], false), None);
        assert_eq!(negotiated_psk_suite(&[CBC], &[CCM8, CBC], true), Some(CBC));
    }

    /// Every PSK suite of the profile has its code: the inference never skips one.
    #[test]
    fn every_psk_suite_has_its_code() {
        for s in super::PSK_SUITES {
            assert!(super::psk_suite_code(s).is_some(), "{s}");
        }
    }
}
