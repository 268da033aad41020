//! The PKCS#11 back end of the Secure Environment (seeds/002 clauses 6.4.1 and 6.4.2: an SE
//! plug-in for a hardware security module, a smart card or a software token such as SoftHSM).
//!
//! What lives in the token and how it leaves it:
//!
//! - Private keys of certificates are generated in the token (`CKA_SENSITIVE`, never
//!   `CKA_EXTRACTABLE`) and never leave it: TLS and DTLS handshakes sign through OpenSSL 3's
//!   PKCS#11 provider, which [`openssl_config`] configures and [`private_key_pem`] names the key
//!   for (a "PKCS#11 PROVIDER URI" PEM block holding the key's `pkcs11:` URI, not the key).
//! - PSKs (Kpsa) are secret keys labelled `kpsa:<KpsaID>` with the bound AE-ID or CSE-ID as
//!   `CKA_ID`, sensitive: `C_GetAttributeValue` on `CKA_VALUE` is refused. OpenSSL must hold a
//!   PSK during its handshake, so [`Pkcs11Token::psk`] wraps it under a fresh session key
//!   (`CKM_AES_KEY_WRAP_PAD`), unwraps it in process memory and the [`Secret`] is zeroed when the
//!   handshake drops it, on either side: the CSE's own PSK clients (coaps towards a bound entity,
//!   its registrar, its MQTT server) ask for the key at each handshake too
//!   ([`super::psk_source`]).
//! - Derivation keys (`secret:<name>`, e.g. a MAF's master keys) can be made unextractable and
//!   used through [`Pkcs11Token::hmac_sha256`] (`CKM_SHA256_HMAC`, inside the token).
//!
//! The PIN is read from a file of mode 0600 and never logged; no error of this module carries it
//! or any key material.

use super::{check_private_file, SecureEnvironment, SecurityLevel};
use crate::credentials::{KpsaId, PskEntry, Secret};
use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;
use cryptoki::types::AuthPin;
use openssl::pkey::{PKey, Public};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use zeroize::Zeroizing;

/// Where the token is: the module (the vendor's PKCS#11 library), the token's label and the file
/// holding the user PIN.
#[derive(Clone, Debug, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct TokenConfig {
    pub module: PathBuf,
    pub token: String,
    pub pin_file: PathBuf,
}

/// Errors of the PKCS#11 back end. None carries the PIN or key material.
#[derive(Debug, thiserror::Error)]
pub enum Pkcs11Error {
    #[error("PKCS#11 module {}: {detail}", path.display())]
    Module { path: PathBuf, detail: String },
    #[error("no PKCS#11 token labelled {0:?}")]
    NoToken(String),
    #[error("PKCS#11 token {0:?}: wrong PIN")]
    WrongPin(String),
    #[error("PKCS#11 token {0:?}: the user PIN is locked")]
    PinLocked(String),
    #[error("PIN file: {0}")]
    PinFile(String),
    #[error("PKCS#11 token: {op}: {detail}")]
    Token { op: &'static str, detail: String },
    /// The session is gone (the token was removed or reset, the HSM restarted): a new session,
    /// logged in again, may succeed.
    #[error("PKCS#11 token: {op}: {detail}")]
    SessionLost { op: &'static str, detail: String },
    #[error("PKCS#11 token: no key labelled {0:?}")]
    NotFound(String),
    #[error("PKCS#11 token: a key labelled {0:?} exists already")]
    Exists(String),
    #[error("PKCS#11 token: {0}")]
    Invalid(String),
}

impl Pkcs11Error {
    /// The same error again (a login refusal remembered).
    fn again(&self) -> Pkcs11Error {
        match self {
            Pkcs11Error::WrongPin(t) => Pkcs11Error::WrongPin(t.clone()),
            Pkcs11Error::PinLocked(t) => Pkcs11Error::PinLocked(t.clone()),
            other => Pkcs11Error::Invalid(other.to_string()),
        }
    }
}

fn token_err(op: &'static str) -> impl Fn(CkError) -> Pkcs11Error {
    move |e| {
        let detail = e.to_string();
        if session_lost(&e) {
            Pkcs11Error::SessionLost { op, detail }
        } else {
            Pkcs11Error::Token { op, detail }
        }
    }
}

/// Whether `e` says the session (or the login, or the token under it) is gone.
fn session_lost(e: &CkError) -> bool {
    matches!(
        e,
        CkError::Pkcs11(
            RvError::SessionHandleInvalid
                | RvError::SessionClosed
                | RvError::UserNotLoggedIn
                | RvError::DeviceRemoved
                | RvError::TokenNotPresent
                | RvError::TokenNotRecognized,
            _
        )
    )
}

/// What a key in the token is, as `m2m keys token list` shows it: never its value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyInfo {
    pub label: String,
    pub kind: KeyKind,
    /// `CKA_SENSITIVE`: the value cannot be read out.
    pub sensitive: bool,
    /// `CKA_EXTRACTABLE`: the key can be wrapped out (a PSK must, for OpenSSL).
    pub extractable: bool,
    /// `CKA_LOCAL`: generated inside the token (not imported).
    pub generated_in_token: bool,
    /// The AE-ID or CSE-ID a PSK is bound to.
    pub entity: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyKind {
    /// A P-256 private key (certificates).
    EcPrivate,
    EcPublic,
    /// A TLS pre-shared key (`kpsa:` label).
    Psk,
    /// A named secret (`secret:` label).
    Secret,
    Other,
}

impl fmt::Display for KeyKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            KeyKind::EcPrivate => "ec-private",
            KeyKind::EcPublic => "ec-public",
            KeyKind::Psk => "psk",
            KeyKind::Secret => "secret",
            KeyKind::Other => "other",
        })
    }
}

const PSK_PREFIX: &str = "kpsa:";
const SECRET_PREFIX: &str = "secret:";
/// DER of the OID prime256v1 (secp256r1), `CKA_EC_PARAMS` of a P-256 key.
const P256_PARAMS: &[u8] = &[0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];

/// Labels the project chooses for certificate keys and secrets: letters, digits, `.`, `_`, `-`
/// (so that a label needs no escaping in a `pkcs11:` URI and never looks like a PSK label).
pub fn check_label(label: &str) -> Result<(), Pkcs11Error> {
    let ok = !label.is_empty()
        && label.len() <= 64
        && label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(Pkcs11Error::Invalid(format!(
            "label {label:?}: 1 to 64 letters, digits, '.', '_' or '-'"
        )))
    }
}

/// A token label as PKCS#11 has them (at most 32 bytes, padded with spaces in CK_TOKEN_INFO):
/// any printable text, percent-encoded in URIs.
pub fn check_token_label(label: &str) -> Result<(), Pkcs11Error> {
    if label.is_empty() || label.len() > 32 || label.chars().any(char::is_control) {
        return Err(Pkcs11Error::Invalid(format!(
            "token label {label:?}: 1 to 32 bytes of printable text"
        )));
    }
    Ok(())
}

/// Paths OpenSSL's configuration syntax reads as written (no `$` variables, `#` comments,
/// quotes, escapes or line breaks).
fn check_config_path(what: &str, path: &Path) -> Result<(), Pkcs11Error> {
    let text = path
        .to_str()
        .ok_or_else(|| Pkcs11Error::Invalid(format!("{what}: the path is not UTF-8")))?;
    if text
        .chars()
        .any(|c| matches!(c, '$' | '#' | '"' | '\'' | '\\') || c.is_control())
    {
        return Err(Pkcs11Error::Invalid(format!(
            "{what} {text:?}: OpenSSL's configuration cannot name a path with $ # quotes or backslashes"
        )));
    }
    Ok(())
}

/// One token, logged in for the life of the process.
pub struct Pkcs11Token {
    name: String,
    token: String,
    level: SecurityLevel,
    /// The PIN's file, read again when the session has to be opened again.
    pin_file: PathBuf,
    /// The logged-in session and its wrapping key, replaced when the token loses them.
    live: Mutex<Live>,
    /// How the last attempt to replace a lost session failed, if it did.
    last_reopen: Mutex<Option<Failed>>,
    /// Where each PSK handed out was found (nothing secret): the next hand-out is one
    /// C_WrapKey.
    found: Mutex<std::collections::HashMap<String, Found>>,
    /// The PSKs of the token as listed at open (label -> bound entity), kept as this process
    /// changes them: a handshake naming any other identity costs the token nothing (no lookup
    /// under the module's lock for an attacker's random identities), and the bindings are read
    /// without asking the token again. PSKs another process adds are seen at the next start, as
    /// the CSE's bindings are.
    psks: Mutex<std::collections::BTreeMap<String, Option<String>>>,
    /// The loaded module (dropping the last handle would unload the library under the
    /// session) and its lock.
    module: Module,
}

impl fmt::Debug for Pkcs11Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pkcs11Token")
            .field("token", &self.token)
            .field("level", &self.level)
            .finish_non_exhaustive()
    }
}

/// The PIN in its file: surrounding white space ignored, never empty.
fn read_pin(path: &Path) -> Result<AuthPin, Pkcs11Error> {
    check_private_file(path).map_err(Pkcs11Error::PinFile)?;
    let bytes = Zeroizing::new(
        std::fs::read(path)
            .map_err(|e| Pkcs11Error::PinFile(format!("{}: {e}", path.display())))?,
    );
    let text = std::str::from_utf8(&bytes)
        .map_err(|_| Pkcs11Error::PinFile(format!("{}: not UTF-8", path.display())))?
        .trim();
    if text.is_empty() {
        return Err(Pkcs11Error::PinFile(format!("{}: empty", path.display())));
    }
    Ok(AuthPin::from(text.to_string()))
}

/// A loaded module and the lock of its uses.
#[derive(Clone)]
struct Module {
    ctx: Pkcs11,
    lock: std::sync::Arc<Mutex<()>>,
}

/// Whether a failed operation may run again on a new session: only those that change nothing in
/// the token (a key generated or stored before the session went would be made twice).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Retry {
    Yes,
    No,
}

/// The shortest pause between two attempts to open a lost session that failed.
const REOPEN_PAUSE: std::time::Duration = std::time::Duration::from_secs(1);

/// Why the last attempt to open a lost session failed.
enum Failed {
    /// The token refused the login; not tried again while the PIN file is as it was.
    Login {
        pin_file: Option<std::time::SystemTime>,
        error: Pkcs11Error,
    },
    /// Anything else, at this moment.
    Other { at: std::time::Instant },
}

/// A logged-in session and its wrapping key ([`session_kek`]): a session object, gone with the
/// session.
struct Live {
    session: Session,
    kek: (ObjectHandle, Secret),
}

/// A token's session while this thread has the module to itself.
struct SessionGuard<'a> {
    live: std::sync::MutexGuard<'a, Live>,
    _module: std::sync::MutexGuard<'a, ()>,
}

/// Loads and initializes the module, once per process (PKCS#11 wants one C_Initialize per
/// application, and a module's initialization need not be safe to run from two threads at
/// once). Another user in this process (OpenSSL's PKCS#11 provider) may have initialized it
/// first: that is fine, both share the module's state.
///
/// Returns the module and the lock every use of it in this process takes: SoftHSM 2.6 fails
/// now and then (CKR_GENERAL_ERROR) when two sessions write its token at the same moment.
fn load_module(path: &Path) -> Result<Module, Pkcs11Error> {
    static MODULES: Mutex<Vec<(PathBuf, Module)>> = Mutex::new(Vec::new());
    let mut modules = MODULES.lock().unwrap_or_else(|p| p.into_inner());
    if let Some((_, module)) = modules.iter().find(|(p, _)| p == path) {
        return Ok(module.clone());
    }
    let module_err = |detail: String| Pkcs11Error::Module {
        path: path.to_path_buf(),
        detail,
    };
    let ctx = Pkcs11::new(path).map_err(|e| module_err(e.to_string()))?;
    match ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
        Ok(()) | Err(CkError::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => {
            let module = Module {
                ctx,
                lock: std::sync::Arc::new(Mutex::new(())),
            };
            modules.push((path.to_path_buf(), module.clone()));
            Ok(module)
        }
        Err(e) => Err(module_err(e.to_string())),
    }
}

fn find_slot(ctx: &Pkcs11, token: &str) -> Result<Slot, Pkcs11Error> {
    for slot in ctx
        .get_slots_with_token()
        .map_err(token_err("listing slots"))?
    {
        let info = ctx
            .get_token_info(slot)
            .map_err(token_err("reading token information"))?;
        if info.label().trim_end() == token {
            return Ok(slot);
        }
    }
    Err(Pkcs11Error::NoToken(token.to_string()))
}

/// Whether `session` is open and logged in as the user (one C_GetSessionInfo).
fn logged_in(session: &Session) -> bool {
    use cryptoki::session::SessionState;
    matches!(
        session.get_session_info().map(|i| i.session_state()),
        Ok(SessionState::RwUser)
    )
}

/// Opens a session on the token labelled `token`, logs in with the PIN in `pin_file` and makes
/// the session's wrapping key; also whether the token is in a hardware slot. The caller has the
/// module to itself.
fn open_live(ctx: &Pkcs11, token: &str, pin_file: &Path) -> Result<(Live, bool), Pkcs11Error> {
    let pin = read_pin(pin_file)?;
    let slot = find_slot(ctx, token)?;
    let hardware = ctx
        .get_slot_info(slot)
        .map_err(token_err("reading slot information"))?
        .hardware_slot();
    let session = ctx
        .open_rw_session(slot)
        .map_err(token_err("opening a session"))?;
    match session.login(UserType::User, Some(&pin)) {
        Ok(()) | Err(CkError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => {}
        Err(CkError::Pkcs11(RvError::PinIncorrect, _)) => {
            return Err(Pkcs11Error::WrongPin(token.to_string()))
        }
        Err(CkError::Pkcs11(RvError::PinLocked, _)) => {
            return Err(Pkcs11Error::PinLocked(token.to_string()))
        }
        Err(e) => return Err(token_err("logging in")(e)),
    }
    let kek = session_kek(&session)?;
    Ok((Live { session, kek }, hardware))
}

impl Pkcs11Token {
    /// Opens the token and logs in as its user. A wrong PIN is [`Pkcs11Error::WrongPin`]
    /// (start-up fails with it: the token counts failed logins, nothing retries; a later re-login
    /// after a lost session is not tried again until the PIN file changes).
    pub fn open(cfg: &TokenConfig) -> Result<Self, Pkcs11Error> {
        let module = load_module(&cfg.module)?;
        let _alone = module.lock.lock().unwrap_or_else(|p| p.into_inner());
        let (live, hardware) = open_live(&module.ctx, &cfg.token, &cfg.pin_file)?;
        let token = Pkcs11Token {
            name: format!("PKCS#11 token {}", cfg.token),
            token: cfg.token.clone(),
            level: if hardware {
                SecurityLevel::Hardware
            } else {
                SecurityLevel::Token
            },
            pin_file: cfg.pin_file.clone(),
            live: Mutex::new(live),
            last_reopen: Mutex::default(),
            found: Mutex::default(),
            psks: Mutex::default(),
            module: module.clone(),
        };
        drop(_alone);
        // A token whose keys cannot be listed would open with no PSK bindings: refuse it now.
        let psks = token
            .list()?
            .into_iter()
            .filter(|k| k.kind == KeyKind::Psk)
            .map(|k| (k.label, k.entity))
            .collect();
        *token.psks() = psks;
        Ok(token)
    }

    /// The token's label.
    pub fn token_label(&self) -> &str {
        &self.token
    }

    fn session(&self) -> SessionGuard<'_> {
        // The module first, then the session (always in this order). A panic while holding
        // them leaves nothing half-done: take them back.
        let module = self.module.lock.lock().unwrap_or_else(|p| p.into_inner());
        SessionGuard {
            live: self.live.lock().unwrap_or_else(|p| p.into_inner()),
            _module: module,
        }
    }

    /// Runs `op` on the session while this thread has the module to itself. When the session
    /// turns out to be gone (the token was reset or removed and is back, the HSM restarted), a
    /// new one is opened and logged in (the PIN file read again) and, for an operation that
    /// changes nothing in the token (`Retry::Yes`), `op` runs once more: a CSE outlives its
    /// token's resets without a restart. One that may have changed the token before the session
    /// went is not repeated: its error is returned.
    fn with_session<T>(
        &self,
        retry: Retry,
        op: impl Fn(&Session, &(ObjectHandle, Secret)) -> Result<T, Pkcs11Error>,
    ) -> Result<T, Pkcs11Error> {
        let mut guard = self.session();
        // Logged out (by a reset, or another user of the module in this process): the private
        // session objects went with the login, the wrapping key among them.
        if !logged_in(&guard.live.session) {
            self.reopen(&mut guard, "checking the session")?;
        }
        match op(&guard.live.session, &guard.live.kek) {
            Err(e @ Pkcs11Error::SessionLost { .. }) => {
                let what = match &e {
                    Pkcs11Error::SessionLost { op, .. } => *op,
                    _ => "",
                };
                self.reopen(&mut guard, what)?;
                match retry {
                    Retry::Yes => op(&guard.live.session, &guard.live.kek),
                    Retry::No => Err(e),
                }
            }
            other => other,
        }
    }

    /// A new session in place of a lost one, logged in with the PIN file read again. A login the
    /// token refused (wrong or locked PIN) is not tried again until the PIN file changes: the
    /// token counts failed logins, and uses come from handshakes anyone can start. Attempts
    /// that fail otherwise (the token still away) are at least a second apart.
    fn reopen(&self, guard: &mut SessionGuard<'_>, during: &str) -> Result<(), Pkcs11Error> {
        let pin_file_now = std::fs::metadata(&self.pin_file)
            .and_then(|m| m.modified())
            .ok();
        {
            let last = self.last_reopen.lock().unwrap_or_else(|p| p.into_inner());
            match &*last {
                Some(Failed::Login { pin_file, error }) if *pin_file == pin_file_now => {
                    return Err(error.again());
                }
                Some(Failed::Other { at }) if at.elapsed() < REOPEN_PAUSE => {
                    return Err(Pkcs11Error::SessionLost {
                        op: "opening a session",
                        detail: "the token is not back yet".into(),
                    });
                }
                _ => {}
            }
        }
        tracing::warn!(target: "audit", token = %self.token, during, "the token's session was lost: logging in again");
        let opened = open_live(&self.module.ctx, &self.token, &self.pin_file);
        let mut last = self.last_reopen.lock().unwrap_or_else(|p| p.into_inner());
        match opened {
            Ok((live, _)) => {
                *guard.live = live;
                *last = None;
                // Handles of the old session need not hold in the new one.
                self.found().clear();
                Ok(())
            }
            Err(e @ (Pkcs11Error::WrongPin(_) | Pkcs11Error::PinLocked(_))) => {
                tracing::error!(target: "audit", token = %self.token, error = %e, "the token refused the login: no more attempts until the PIN file changes");
                *last = Some(Failed::Login {
                    pin_file: pin_file_now,
                    error: e.again(),
                });
                Err(e)
            }
            Err(e) => {
                *last = Some(Failed::Other {
                    at: std::time::Instant::now(),
                });
                Err(e)
            }
        }
    }

    fn find(
        session: &Session,
        class: ObjectClass,
        label: &str,
    ) -> Result<Option<ObjectHandle>, Pkcs11Error> {
        let found = session
            .find_objects(&[
                Attribute::Class(class),
                Attribute::Label(label.as_bytes().to_vec()),
            ])
            .map_err(token_err("finding a key"))?;
        Ok(found.into_iter().next())
    }

    fn found(&self) -> std::sync::MutexGuard<'_, std::collections::HashMap<String, Found>> {
        self.found.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn psks(
        &self,
    ) -> std::sync::MutexGuard<'_, std::collections::BTreeMap<String, Option<String>>> {
        self.psks.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The secret key `label`: its handle, bound entity (CKA_ID) and length.
    fn find_secret(&self, label: &str) -> Result<Option<Found>, Pkcs11Error> {
        self.with_session(Retry::Yes, |session, _| {
            Self::find_secret_in(session, label)
        })
    }

    fn find_secret_in(session: &Session, label: &str) -> Result<Option<Found>, Pkcs11Error> {
        let Some(handle) = Self::find(session, ObjectClass::SECRET_KEY, label)? else {
            return Ok(None);
        };
        let mut found = Found {
            handle,
            entity: None,
            len: None,
        };
        for a in session
            .get_attributes(handle, &[AttributeType::Id, AttributeType::ValueLen])
            .map_err(token_err("reading a key's attributes"))?
        {
            match a {
                Attribute::Id(i) if !i.is_empty() => {
                    found.entity = Some(String::from_utf8_lossy(&i).into_owned())
                }
                Attribute::ValueLen(n) => found.len = Some(usize::from(n)),
                _ => {}
            }
        }
        Ok(Some(found))
    }

    /// The entity a PSK is bound to (its CKA_ID), without handing the key out.
    pub fn psk_entity(&self, kpsa_id: &str) -> Option<String> {
        let id = KpsaId::parse(kpsa_id).ok()?;
        let label = format!("{PSK_PREFIX}{}", id.canonical());
        if let Some(found) = self.found().get(&label) {
            return found.entity.clone();
        }
        self.find_secret(&label).ok()??.entity
    }

    /// Generates a P-256 key pair in the token under `label`: the private key sensitive and never
    /// extractable. Returns the public key (for a certificate).
    pub fn generate_ec_key(&self, label: &str) -> Result<PKey<Public>, Pkcs11Error> {
        check_label(label)?;
        self.with_session(Retry::No, |session, _| {
            Self::generate_ec_key_in(session, label)
        })
    }

    fn generate_ec_key_in(session: &Session, label: &str) -> Result<PKey<Public>, Pkcs11Error> {
        if Self::find(session, ObjectClass::PRIVATE_KEY, label)?.is_some() {
            return Err(Pkcs11Error::Exists(label.to_string()));
        }
        let id = label.as_bytes().to_vec();
        let public = [
            Attribute::Token(true),
            Attribute::Private(false),
            Attribute::Verify(true),
            Attribute::EcParams(P256_PARAMS.to_vec()),
            Attribute::Label(label.as_bytes().to_vec()),
            Attribute::Id(id.clone()),
        ];
        let private = [
            Attribute::Token(true),
            Attribute::Private(true),
            Attribute::Sensitive(true),
            Attribute::Extractable(false),
            Attribute::Sign(true),
            Attribute::Derive(false),
            Attribute::Label(label.as_bytes().to_vec()),
            Attribute::Id(id),
        ];
        let (public, _) = session
            .generate_key_pair(&Mechanism::EccKeyPairGen, &public, &private)
            .map_err(token_err("generating a key pair"))?;
        ec_public_key(session, public)
    }

    /// The public key of the P-256 key pair `label`.
    pub fn public_key(&self, label: &str) -> Result<PKey<Public>, Pkcs11Error> {
        self.with_session(Retry::Yes, |session, _| {
            let handle = Self::find(session, ObjectClass::PUBLIC_KEY, label)?
                .ok_or_else(|| Pkcs11Error::NotFound(label.to_string()))?;
            ec_public_key(session, handle)
        })
    }

    /// Whether a private key labelled `label` is in the token.
    pub fn has_private_key(&self, label: &str) -> Result<bool, Pkcs11Error> {
        self.with_session(Retry::Yes, |session, _| {
            Ok(Self::find(session, ObjectClass::PRIVATE_KEY, label)?.is_some())
        })
    }

    /// The `pkcs11:` URI of the private key `label` in this token (RFC 7512).
    pub fn private_key_uri(&self, label: &str) -> String {
        key_uri(&self.token, label)
    }

    /// Stores a PSK: sensitive (its value cannot be read), extractable only by wrapping (the
    /// handshake needs it in OpenSSL), usable for HMAC inside the token.
    pub fn import_psk(&self, entry: &PskEntry) -> Result<(), Pkcs11Error> {
        let label = format!("{PSK_PREFIX}{}", entry.kpsa_id.canonical());
        self.with_session(Retry::No, |session, _| {
            if Self::find(session, ObjectClass::SECRET_KEY, &label)?.is_some() {
                return Err(Pkcs11Error::Exists(label.clone()));
            }
            let entity = entry.entity_id.clone().unwrap_or_default().into_bytes();
            store_secret(session, &label, entity, entry.key.expose(), true)
        })?;
        self.psks().insert(label, entry.entity_id.clone());
        Ok(())
    }

    /// Stores a named secret. `extractable` false: it never leaves the token and serves
    /// [`hmac_sha256`](Self::hmac_sha256) only; true: [`SecureEnvironment::secret`] can hand it
    /// out (wrapped out, as a PSK is).
    pub fn import_secret(
        &self,
        name: &str,
        value: &Secret,
        extractable: bool,
    ) -> Result<(), Pkcs11Error> {
        check_label(name)?;
        let label = format!("{SECRET_PREFIX}{name}");
        self.with_session(Retry::No, |session, _| {
            if Self::find(session, ObjectClass::SECRET_KEY, &label)?.is_some() {
                return Err(Pkcs11Error::Exists(label.clone()));
            }
            store_secret(session, &label, Vec::new(), value.expose(), extractable)
        })
    }

    /// Generates a 32-byte named secret inside the token, never extractable: its only use is
    /// [`hmac_sha256`](Self::hmac_sha256).
    pub fn generate_secret(&self, name: &str) -> Result<(), Pkcs11Error> {
        check_label(name)?;
        let label = format!("{SECRET_PREFIX}{name}");
        self.with_session(Retry::No, |session, _| {
            if Self::find(session, ObjectClass::SECRET_KEY, &label)?.is_some() {
                return Err(Pkcs11Error::Exists(label.clone()));
            }
            session
                .generate_key(&Mechanism::GenericSecretKeyGen, &{
                    let mut template = secret_usage(&label);
                    template.extend([
                        Attribute::ValueLen(32.into()),
                        Attribute::Extractable(false),
                    ]);
                    template
                })
                .map_err(token_err("generating a secret"))?;
            Ok(())
        })
    }

    /// HMAC-SHA-256 of `data` under the named secret, computed inside the token.
    pub fn hmac_sha256(&self, name: &str, data: &[u8]) -> Result<[u8; 32], Pkcs11Error> {
        let label = format!("{SECRET_PREFIX}{name}");
        let mac = self.with_session(Retry::Yes, |session, _| {
            let key = Self::find(session, ObjectClass::SECRET_KEY, &label)?
                .ok_or_else(|| Pkcs11Error::NotFound(label.clone()))?;
            Ok(Zeroizing::new(
                session
                    .sign(&Mechanism::Sha256Hmac, key, data)
                    .map_err(token_err("HMAC-SHA-256"))?,
            ))
        })?;
        mac.as_slice()
            .try_into()
            .map_err(|_| Pkcs11Error::Invalid("HMAC-SHA-256 of another length than 32".into()))
    }

    /// Every key in the token: labels and properties, never values.
    pub fn list(&self) -> Result<Vec<KeyInfo>, Pkcs11Error> {
        self.with_session(Retry::Yes, |session, _| Self::list_in(session))
    }

    fn list_in(session: &Session) -> Result<Vec<KeyInfo>, Pkcs11Error> {
        let mut keys = Vec::new();
        for class in [
            ObjectClass::PRIVATE_KEY,
            ObjectClass::PUBLIC_KEY,
            ObjectClass::SECRET_KEY,
        ] {
            // Token objects: the session's own wrapping key is no key of the token.
            let handles = session
                .find_objects(&[Attribute::Class(class), Attribute::Token(true)])
                .map_err(token_err("listing keys"))?;
            for handle in handles {
                keys.push(key_info(session, class, handle)?);
            }
        }
        keys.sort_by(|a, b| a.label.cmp(&b.label));
        Ok(keys)
    }

    /// Destroys every key labelled `label` (a key pair's two halves, or a `kpsa:`/`secret:`
    /// key). Returns how many objects went.
    pub fn destroy(&self, label: &str) -> Result<usize, Pkcs11Error> {
        let handles = self.with_session(Retry::No, |session, _| {
            let handles = session
                .find_objects(&[Attribute::Label(label.as_bytes().to_vec())])
                .map_err(token_err("finding a key"))?;
            for &handle in &handles {
                session
                    .destroy_object(handle)
                    .map_err(token_err("destroying a key"))?;
            }
            Ok(handles)
        })?;
        self.psks().remove(label);
        self.found().remove(label);
        Ok(handles.len())
    }

    /// The value of the secret key `label`, where it may be wrapped out: found (or where it was
    /// found before, its label checked again: a token may give a handle of a destroyed key, or
    /// of an old session, to another key), wrapped under the session's wrapping key in the same
    /// session, and unwrapped here once the token is free again. None: no such key.
    ///
    /// CKA_VALUE_LEN is not secret: SoftHSM pads what it wraps to whole blocks.
    fn hand_out(&self, label: &str) -> Result<Option<(Found, Secret)>, Pkcs11Error> {
        let wrapped = self.with_session(Retry::Yes, |session, kek| {
            let cached = self.found().get(label).cloned();
            let found = match cached.filter(|f| labelled(session, f.handle, label)) {
                Some(f) => f,
                None => match Self::find_secret_in(session, label)? {
                    Some(f) => f,
                    None => return Ok(None),
                },
            };
            let wrapped = session
                .wrap_key(&Mechanism::AesKeyWrapPad, kek.0, found.handle)
                .map_err(token_err("wrapping a key"))?;
            Ok(Some((found, wrapped, kek.1.clone())))
        })?;
        let Some((found, wrapped, kek)) = wrapped else {
            self.found().remove(label);
            return Ok(None);
        };
        let value = unwrap_kwp(kek.expose(), &wrapped)?;
        let len = found.len.unwrap_or(value.len());
        let key = match value.expose().get(..len) {
            Some(key) if value.expose()[len..].iter().all(|b| *b == 0) => Secret::from_slice(key),
            _ => {
                return Err(Pkcs11Error::Invalid(
                    "an unwrapped key of the wrong length".into(),
                ))
            }
        };
        self.found().insert(label.to_owned(), found.clone());
        Ok(Some((found, key)))
    }
}

/// Whether `handle` is (still) the object labelled `label`.
fn labelled(session: &Session, handle: ObjectHandle, label: &str) -> bool {
    matches!(
        session.get_attributes(handle, &[AttributeType::Label]).as_deref(),
        Ok([Attribute::Label(l)]) if l.as_slice() == label.as_bytes()
    )
}

/// A secret key as found in the token: none of it secret.
#[derive(Clone, Debug)]
struct Found {
    handle: ObjectHandle,
    entity: Option<String>,
    len: Option<usize>,
}

/// The session's wrapping key: an AES-256 session object (it ends with the session, never on
/// the token) whose value this process reads once, so that handing a PSK to a handshake is one
/// C_WrapKey. A token that refuses to show a session key's value (FIPS mode) cannot hand PSKs
/// out this way.
fn session_kek(session: &Session) -> Result<(ObjectHandle, Secret), Pkcs11Error> {
    let kek = session
        .generate_key(
            &Mechanism::AesKeyGen,
            &[
                Attribute::Class(ObjectClass::SECRET_KEY),
                Attribute::KeyType(KeyType::AES),
                Attribute::ValueLen(32.into()),
                Attribute::Token(false),
                Attribute::Private(true),
                Attribute::Sensitive(false),
                Attribute::Extractable(true),
                Attribute::Wrap(true),
                Attribute::Unwrap(false),
                Attribute::Encrypt(false),
                Attribute::Decrypt(false),
                Attribute::Derive(false),
            ],
        )
        .map_err(token_err("making the session's wrapping key"))?;
    let value = session
        .get_attributes(kek, &[AttributeType::Value])
        .map_err(token_err("reading the session's wrapping key"))?
        .into_iter()
        .find_map(|a| match a {
            Attribute::Value(v) => Some(Secret::new(v)),
            _ => None,
        })
        .ok_or_else(|| Pkcs11Error::Invalid("the session's wrapping key shows no value".into()))?;
    Ok((kek, value))
}

/// RFC 5649 AES key wrap with padding, unwrapping side (what `CKM_AES_KEY_WRAP_PAD` made).
fn unwrap_kwp(kek: &[u8], wrapped: &[u8]) -> Result<Secret, Pkcs11Error> {
    use openssl::cipher::Cipher;
    use openssl::cipher_ctx::{CipherCtx, CipherCtxFlags};
    let fail = |_| Pkcs11Error::Invalid("unwrapping a key failed".into());
    let mut ctx = CipherCtx::new().map_err(fail)?;
    ctx.set_flags(CipherCtxFlags::FLAG_WRAP_ALLOW);
    ctx.decrypt_init(Some(Cipher::aes_256_wrap_pad()), Some(kek), None)
        .map_err(fail)?;
    let mut out = Zeroizing::new(vec![0u8; wrapped.len() + 16]);
    let n = ctx.cipher_update(wrapped, Some(&mut out)).map_err(fail)?;
    let m = ctx.cipher_final(&mut out[n..]).map_err(fail)?;
    Ok(Secret::from_slice(&out[..n + m]))
}

/// Stores a secret key: sensitive, for HMAC only (no deriving, wrapping or encrypting with
/// it). The copy of the value the template held is zeroed once the token has it.
fn store_secret(
    session: &Session,
    label: &str,
    id: Vec<u8>,
    value: &[u8],
    extractable: bool,
) -> Result<(), Pkcs11Error> {
    let mut template = secret_usage(label);
    template.extend([
        Attribute::Extractable(extractable),
        Attribute::Id(id),
        Attribute::Value(value.to_vec()),
    ]);
    let created = session.create_object(&template);
    for a in &mut template {
        if let Attribute::Value(v) = a {
            zeroize::Zeroize::zeroize(v);
        }
    }
    created.map(|_| ()).map_err(token_err("storing a key"))
}

/// What every secret key of this module is: a sensitive token object for HMAC, nothing else.
fn secret_usage(label: &str) -> Vec<Attribute> {
    vec![
        Attribute::Class(ObjectClass::SECRET_KEY),
        Attribute::KeyType(KeyType::GENERIC_SECRET),
        Attribute::Token(true),
        Attribute::Private(true),
        Attribute::Sensitive(true),
        Attribute::Sign(true),
        Attribute::Verify(true),
        Attribute::Derive(false),
        Attribute::Wrap(false),
        Attribute::Unwrap(false),
        Attribute::Encrypt(false),
        Attribute::Decrypt(false),
        Attribute::Label(label.as_bytes().to_vec()),
    ]
}

fn key_info(
    session: &Session,
    class: ObjectClass,
    handle: ObjectHandle,
) -> Result<KeyInfo, Pkcs11Error> {
    let attrs = session
        .get_attributes(
            handle,
            &[
                AttributeType::Label,
                AttributeType::Id,
                AttributeType::Sensitive,
                AttributeType::Extractable,
                AttributeType::Local,
            ],
        )
        .map_err(token_err("reading a key's attributes"))?;
    let mut info = KeyInfo {
        label: String::new(),
        kind: KeyKind::Other,
        sensitive: false,
        extractable: false,
        generated_in_token: false,
        entity: None,
    };
    let mut id = Vec::new();
    for a in attrs {
        match a {
            Attribute::Label(l) => info.label = String::from_utf8_lossy(&l).into_owned(),
            Attribute::Id(i) => id = i,
            Attribute::Sensitive(s) => info.sensitive = s,
            Attribute::Extractable(e) => info.extractable = e,
            Attribute::Local(l) => info.generated_in_token = l,
            _ => {}
        }
    }
    info.kind = if class == ObjectClass::PRIVATE_KEY {
        KeyKind::EcPrivate
    } else if class == ObjectClass::PUBLIC_KEY {
        KeyKind::EcPublic
    } else if info.label.starts_with(PSK_PREFIX) {
        KeyKind::Psk
    } else if info.label.starts_with(SECRET_PREFIX) {
        KeyKind::Secret
    } else {
        KeyKind::Other
    };
    if info.kind == KeyKind::Psk && !id.is_empty() {
        info.entity = Some(String::from_utf8_lossy(&id).into_owned());
    }
    Ok(info)
}

/// A P-256 public key object as an OpenSSL key: `CKA_EC_POINT` is the point in an OCTET STRING.
fn ec_public_key(session: &Session, handle: ObjectHandle) -> Result<PKey<Public>, Pkcs11Error> {
    let attrs = session
        .get_attributes(handle, &[AttributeType::EcParams, AttributeType::EcPoint])
        .map_err(token_err("reading a public key"))?;
    let (mut params, mut point) = (None, None);
    for a in attrs {
        match a {
            Attribute::EcParams(p) => params = Some(p),
            Attribute::EcPoint(p) => point = Some(p),
            _ => {}
        }
    }
    if params.as_deref() != Some(P256_PARAMS) {
        return Err(Pkcs11Error::Invalid("not a P-256 key".into()));
    }
    let point = point.ok_or_else(|| Pkcs11Error::Invalid("a public key without point".into()))?;
    let raw = match point.as_slice() {
        [0x04, len, rest @ ..] if usize::from(*len) == rest.len() => rest,
        other => other,
    };
    let bad = |_| Pkcs11Error::Invalid("the public key's point is not on P-256".into());
    let group =
        openssl::ec::EcGroup::from_curve_name(openssl::nid::Nid::X9_62_PRIME256V1).map_err(bad)?;
    let mut ctx = openssl::bn::BigNumContext::new().map_err(bad)?;
    let point = openssl::ec::EcPoint::from_bytes(&group, raw, &mut ctx).map_err(bad)?;
    let key = openssl::ec::EcKey::from_public_key(&group, &point).map_err(bad)?;
    PKey::from_ec_key(key).map_err(bad)
}

/// The RFC 7512 URI of a private key: token and object by label (labels checked by
/// [`check_label`]; the token label percent-encoded).
pub fn key_uri(token: &str, label: &str) -> String {
    format!(
        "pkcs11:token={};object={};type=private",
        percent_encode(token),
        percent_encode(label)
    )
}

fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'~') {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// The private key a `pkcs11:` URI names, as OpenSSL's PKCS#11 provider loads it: a PEM block
/// "PKCS#11 PROVIDER URI" holding `SEQUENCE { VisibleString "PKCS#11 Provider URI v1.0",
/// UTF8String uri }`. The block names the key; the key stays in the token.
pub fn private_key_pem(uri: &str) -> String {
    fn tlv(tag: u8, body: &[u8]) -> Vec<u8> {
        let mut out = vec![tag];
        match body.len() {
            n @ 0..=127 => out.push(n as u8),
            n @ 128..=255 => out.extend([0x81, n as u8]),
            n => out.extend([0x82, (n >> 8) as u8, n as u8]),
        }
        out.extend_from_slice(body);
        out
    }
    let mut body = tlv(0x1a, b"PKCS#11 Provider URI v1.0");
    body.extend(tlv(0x0c, uri.as_bytes()));
    let der = tlv(0x30, &body);
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut pem = String::from("-----BEGIN PKCS#11 PROVIDER URI-----\n");
    for line in b64.as_bytes().chunks(64) {
        pem.push_str(std::str::from_utf8(line).expect("base64 is ASCII"));
        pem.push('\n');
    }
    pem.push_str("-----END PKCS#11 PROVIDER URI-----\n");
    pem
}

/// Whether a configured private key names a key in a token rather than a file.
pub fn is_key_uri(key: &Path) -> bool {
    key.to_str().is_some_and(|s| s.starts_with("pkcs11:"))
}

/// Loads the private key a `pkcs11:` URI names through OpenSSL's PKCS#11 provider (which the
/// process's OpenSSL configuration must load: see [`openssl_config`]).
pub fn load_private_key(
    uri: &str,
) -> Result<PKey<openssl::pkey::Private>, openssl::error::ErrorStack> {
    PKey::private_key_from_pem(private_key_pem(uri).as_bytes())
}

/// The OpenSSL configuration that loads the PKCS#11 provider for `cfg`'s token besides the
/// default provider. Everything but the token's keys stays with the default provider
/// (`?provider=default`): the provider offers digests too, and a software token that itself
/// uses OpenSSL would otherwise call back into the provider. The PIN is named by its file.
///
/// `provider_module` is OpenSSL's `pkcs11.so` (Debian: [`DEFAULT_PROVIDER_MODULE`]).
pub fn openssl_config(cfg: &TokenConfig, provider_module: &Path) -> Result<String, Pkcs11Error> {
    check_config_path("the PKCS#11 provider", provider_module)?;
    check_config_path("the PKCS#11 module", &cfg.module)?;
    check_config_path("the PIN file", &cfg.pin_file)?;
    Ok(format!(
        "# Written by m2m: OpenSSL's PKCS#11 provider for the token {token:?}.\n\
         openssl_conf = openssl_init\n\
         [openssl_init]\n\
         providers = provider_sect\n\
         alg_section = evp_properties\n\
         [evp_properties]\n\
         default_properties = ?provider=default\n\
         [provider_sect]\n\
         default = default_sect\n\
         pkcs11 = pkcs11_sect\n\
         [default_sect]\n\
         activate = 1\n\
         [pkcs11_sect]\n\
         module = {provider}\n\
         pkcs11-module-path = {module}\n\
         pkcs11-module-token-pin = file:{pin}\n\
         pkcs11-module-quirks = no-deinit no-operation-state\n\
         activate = 1\n",
        token = cfg.token,
        provider = provider_module.display(),
        module = cfg.module.display(),
        pin = cfg.pin_file.display(),
    ))
}

/// Where Debian's `pkcs11-provider` package puts OpenSSL's PKCS#11 provider.
pub const DEFAULT_PROVIDER_MODULE: &str = "/usr/lib/x86_64-linux-gnu/ossl-modules/pkcs11.so";

impl SecureEnvironment for Pkcs11Token {
    fn psk(&self, kpsa_id: &str) -> Option<PskEntry> {
        let id = KpsaId::parse(kpsa_id).ok()?;
        let label = format!("{PSK_PREFIX}{}", id.canonical());
        if !self.psks().contains_key(&label) {
            return None;
        }
        let entry = |found: &Found, key| PskEntry {
            entity_id: found.entity.clone(),
            kpsa_id: id.clone(),
            key,
        };
        match self.hand_out(&label) {
            Ok(Some((found, key))) => Some(entry(&found, key)),
            Ok(None) => None,
            Err(e) => {
                tracing::warn!(target: "audit", environment = %self.name, key = %label, error = %e, "a PSK in the token could not be handed to the handshake");
                None
            }
        }
    }

    fn psk_entries(&self) -> Vec<(Option<String>, KpsaId)> {
        self.psks()
            .iter()
            .filter_map(|(label, entity)| {
                let id = KpsaId::parse(label.strip_prefix(PSK_PREFIX)?).ok()?;
                Some((entity.clone(), id))
            })
            .collect()
    }

    fn secret(&self, name: &str) -> Option<Secret> {
        let (_, key) = self.hand_out(&format!("{SECRET_PREFIX}{name}")).ok()??;
        Some(key)
    }

    fn name(&self) -> &str {
        &self.name
    }

    fn security_level(&self) -> SecurityLevel {
        self.level
    }

    fn derive_key(&self, name: &str, info: &[u8]) -> Option<Secret> {
        match self.hmac_sha256(name, info) {
            Ok(key) => Some(Secret::from_slice(&key)),
            Err(Pkcs11Error::NotFound(_)) => None,
            Err(e) => {
                tracing::warn!(target: "audit", environment = %self.name, secret = name, error = %e, "a key could not be derived in the token");
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pem_names_the_uri_as_the_provider_reads_it() {
        let pem = private_key_pem("pkcs11:token=m2m;object=cse-key;type=private");
        // The same bytes as the provider's own tools/uri2pem.py makes for this URI.
        assert_eq!(
            pem,
            "-----BEGIN PKCS#11 PROVIDER URI-----\n\
             MEkaGVBLQ1MjMTEgUHJvdmlkZXIgVVJJIHYxLjAMLHBrY3MxMTp0b2tlbj1tMm07\n\
             b2JqZWN0PWNzZS1rZXk7dHlwZT1wcml2YXRl\n\
             -----END PKCS#11 PROVIDER URI-----\n"
        );
    }

    #[test]
    fn labels_need_no_escaping_and_token_labels_are_escaped() {
        assert!(check_label("cse-key.2024_a").is_ok());
        for bad in ["", "kpsa:x", "a b", "a;b", "é", &"x".repeat(65)] {
            assert!(check_label(bad).is_err(), "{bad:?}");
        }
        assert_eq!(
            key_uri("my token;1", "k"),
            "pkcs11:token=my%20token%3B1;object=k;type=private"
        );
    }

    #[test]
    fn the_openssl_configuration_names_the_pin_file_not_the_pin() {
        let cfg = TokenConfig {
            module: "/usr/lib/softhsm/libsofthsm2.so".into(),
            token: "m2m".into(),
            pin_file: "/etc/m2m/pin".into(),
        };
        let text = openssl_config(&cfg, Path::new(DEFAULT_PROVIDER_MODULE)).unwrap();
        let odd = TokenConfig {
            pin_file: "/etc/m2m/$HOME/pin".into(),
            ..cfg.clone()
        };
        assert!(openssl_config(&odd, Path::new(DEFAULT_PROVIDER_MODULE)).is_err());
        assert!(text.contains("pkcs11-module-token-pin = file:/etc/m2m/pin\n"));
        assert!(text.contains("default_properties = ?provider=default\n"));
        assert!(text.contains("pkcs11-module-path = /usr/lib/softhsm/libsofthsm2.so\n"));
    }
}
