//! `m2m das`: a Dynamic Authorization Server (TS-0003 clause 7.3.2.2) as its own process, deciding
//! from a policy file.
//!
//! Hosting CSEs consult it with a NOTIFY over the HTTP binding whose content is `m2m:seci` sit 1
//! (m2m:dynAuthDasRequest); it answers sit 2 with the privileges the first matching rule grants
//! and their lifetime, or with no dynamicACPInfo (a refusal). It listens on TLS only and accepts
//! only CSEs: a client certificate chaining to `trusted_ca` that names a CSE-ID, among
//! `hosting_cses` when that list is not empty, speaking as itself (`From` = its CSE-ID). Every
//! decision is an audit line (`<config>.audit.log`, chained by hash like the CSE's).
//!
//! ```toml
//! listen = "0.0.0.0:8443"
//! certificate = "das.pem"          # its FQDN certificate (m2m pki issue --kind das)
//! private_key = "das.key"
//! trusted_ca = "ca/ca.pem"         # the CSEs' root of trust
//! sp_fqdn = "m2m.example.com"
//! hosting_cses = ["/id-in"]        # empty: any CSE of the SP
//!
//! [[rules]]
//! originators = ["/id-in/Cguest"]
//! targets = ["/id-in/cse-in/door/**"]
//! operations = ["retrieve"]
//! lifetime_seconds = 300
//! ```

use anyhow::Context;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use m2m_core::http_binding;
use m2m_core::{M2mError, Operation, Response, ResponseStatusCode};
use m2m_security::certificates::{identity_of, CertIdentity, CseNaming};
use m2m_security::dynamic_authorization::{decide, DasAnswer, DasRequest, Rule};
use m2m_security::tls::{Authenticated, ServerTlsConfig};
use m2m_transport::{Binder, Connection, Listener, Security, Server};
use serde::Deserialize;
use std::convert::Infallible;
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A consultation is small; anything larger is refused unread.
const MAX_BODY: usize = 64 * 1024;

#[derive(clap::Args, Debug)]
#[command(args_conflicts_with_subcommands = true)]
pub struct DasArgs {
    #[command(subcommand)]
    pub command: Option<DasCommand>,
    /// TOML configuration and policy file; relative paths in it are read against its directory.
    #[arg(long)]
    pub config: Option<PathBuf>,
}

#[derive(clap::Subcommand, Debug)]
pub enum DasCommand {
    /// Issue a token (TS-0003 7.3.2.4) signed with the DAS's token_key; prints it (its ID on stderr).
    Token(TokenArgs),
    /// Revoke tokens: add their IDs to the list a CSE reads (dynamic_authorization.revoked_tokens).
    RevokeToken(RevokeTokenArgs),
}

#[derive(clap::Args, Debug)]
pub struct TokenArgs {
    /// The DAS configuration (its issuer and token_key).
    #[arg(long)]
    pub config: PathBuf,
    /// The holder: the AE-ID or CSE-ID that may use the token (SP-relative, e.g. /id-in/Cguest).
    #[arg(long)]
    pub holder: String,
    /// The resources it grants access to (SP-relative structured addresses, `*` wildcards).
    #[arg(long = "resource")]
    pub resources: Vec<String>,
    /// The operations it grants on them: create, retrieve, update, delete, notify, discover.
    #[arg(long = "operation")]
    pub operations: Vec<String>,
    /// Role-IDs it assigns to the holder (TS-0003 clause 7.3.2.5 step 3): the policies that
    /// name a role then grant the holder what they grant the role, wherever they apply.
    #[arg(long = "role")]
    pub roles: Vec<String>,
    /// Seconds until it expires.
    #[arg(long, default_value_t = 3600)]
    pub lifetime: u64,
    /// The Hosting CSEs that may accept it (SP-relative or absolute CSE-IDs), one at least.
    #[arg(long, required = true)]
    pub audience: Vec<String>,
    /// A name for it (tokenName).
    #[arg(long)]
    pub name: Option<String>,
}

#[derive(clap::Args, Debug)]
pub struct RevokeTokenArgs {
    /// The revocation list (one token ID per line), created if missing, replaced by rename.
    #[arg(long)]
    pub list: PathBuf,
    /// The token IDs to revoke.
    #[arg(required = true)]
    pub token_ids: Vec<String>,
}

/// The configuration and policy of `m2m das`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DasConfig {
    pub listen: String,
    pub certificate: PathBuf,
    pub private_key: PathBuf,
    pub trusted_ca: PathBuf,
    /// Revocation lists of the trusted CAs, checked at every handshake (`m2m pki revoke`).
    #[serde(default)]
    pub crl: Option<PathBuf>,
    /// The SP whose CSEs consult it, to read their CSE-ID certificates.
    pub sp_fqdn: String,
    /// The SP's IN-CSE-ID (CSE-ID certificates are named from it, TS-0001 clause 6.5.1.1).
    #[serde(default = "default_in_cse")]
    pub in_cse_id: String,
    /// The CSEs that may consult it (SP-relative CSE-IDs); empty: any CSE of the SP.
    #[serde(default)]
    pub hosting_cses: Vec<String>,
    /// The policy: the first rule that matches grants.
    #[serde(default)]
    pub rules: Vec<Rule>,
    /// The audit trail; default: `<config>.audit.log`.
    #[serde(default)]
    pub audit_trail: Option<PathBuf>,
    /// The issuer of its tokens (`iss`, the suffix of their IDs), e.g. its FQDN.
    #[serde(default)]
    pub issuer: Option<String>,
    /// Its token-signing key: a private P-256 JWK with kid, mode 0600 (`m2m e2e keygen --kty ec`).
    #[serde(default)]
    pub token_key: Option<PathBuf>,
}

fn default_in_cse() -> String {
    "/id-in".into()
}

impl DasConfig {
    pub fn load(path: &Path) -> anyhow::Result<DasConfig> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        let mut cfg: DasConfig =
            toml::from_str(&text).with_context(|| format!("in {}", path.display()))?;
        for (i, rule) in cfg.rules.iter().enumerate() {
            rule.operation_bits()
                .map_err(|e| anyhow::anyhow!("rules[{i}]: {e}"))?;
            if rule.originators.is_empty() || rule.targets.is_empty() {
                anyhow::bail!("rules[{i}]: originators and targets must not be empty");
            }
        }
        let base = path.parent().unwrap_or(Path::new("."));
        for p in [
            Some(&mut cfg.certificate),
            Some(&mut cfg.private_key),
            Some(&mut cfg.trusted_ca),
            cfg.crl.as_mut(),
            cfg.audit_trail.as_mut(),
            cfg.token_key.as_mut(),
        ]
        .into_iter()
        .flatten()
        {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        }
        if cfg.audit_trail.is_none() {
            let mut trail = path.as_os_str().to_owned();
            trail.push(".audit.log");
            cfg.audit_trail = Some(trail.into());
        }
        Ok(cfg)
    }
}

/// The CSE a connection authenticated.
/// The CSE an association authenticated, as its certificate names it, and its SP (to read the
/// From of its requests in any form).
struct HostingCse {
    entity: m2m_core::EntityId,
    home: m2m_core::Home,
}

impl HostingCse {
    /// Its SP-relative CSE-ID, the form `trid` starts with.
    fn id(&self) -> String {
        self.entity.sp_relative()
    }
}

impl std::fmt::Display for HostingCse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "certificate -> {}", self.id())
    }
}

struct CseBinder {
    naming: CseNaming,
    home: m2m_core::Home,
    allowed: Vec<m2m_core::EntityId>,
}

impl Binder for CseBinder {
    type Association = HostingCse;

    fn bind(
        &self,
        proof: Authenticated,
        _ssl: &openssl::ssl::SslRef,
        _peer: SocketAddr,
    ) -> Result<HostingCse, String> {
        let Authenticated::Certificate { leaf_der } = proof else {
            return Err("a Hosting CSE authenticates with its certificate".into());
        };
        let cert = openssl::x509::X509::from_der(&leaf_der).map_err(|e| e.to_string())?;
        let CertIdentity::Entity(entity) = identity_of(&cert, &self.naming)? else {
            return Err("the certificate names no CSE".into());
        };
        if !entity.is_cse() {
            return Err("the certificate names no CSE".into());
        }
        if !self.allowed.is_empty() && !self.allowed.contains(&entity) {
            return Err(format!("{entity} is not among hosting_cses"));
        }
        Ok(HostingCse {
            entity,
            home: self.home.clone(),
        })
    }
}

/// Runs the DAS until Ctrl-C; prints `m2m-das listening https://ADDR` once it accepts connections.
pub async fn run(args: DasArgs) -> anyhow::Result<()> {
    match args.command {
        Some(DasCommand::Token(a)) => return issue_token(a),
        Some(DasCommand::RevokeToken(a)) => return revoke_tokens(a),
        None => {}
    }
    let config = args.config.context("--config is required")?;
    let cfg = DasConfig::load(&config)?;
    crate::init_logging_with_trail(cfg.audit_trail.as_deref().expect("set by load"), "das")?;
    m2m_security::secure_environment::check_private_file(&cfg.private_key)
        .map_err(anyhow::Error::msg)?;
    let revocation = m2m_security::revocation::RevocationList::open_configured(
        cfg.crl.as_deref(),
        Some(&cfg.trusted_ca),
    )
    .map_err(|e| anyhow::anyhow!("crl: {e}"))?;
    let context = m2m_security::tls::server_context(&ServerTlsConfig {
        cipher_suites: m2m_security::tls::CERTIFICATE_SUITES
            .iter()
            .map(|s| s.to_string())
            .collect(),
        tls13: false,
        certificate_chain: Some(cfg.certificate.clone()),
        private_key: Some(cfg.private_key.clone()),
        trusted_ca: Some(cfg.trusted_ca.clone()),
        psk: None,
        revocation,
    })
    .map_err(|e| anyhow::anyhow!("TLS: {e}"))?;
    let naming = CseNaming::new(&cfg.sp_fqdn, &cfg.in_cse_id).map_err(anyhow::Error::msg)?;
    let tcp = tokio::net::TcpListener::bind(&cfg.listen)
        .await
        .with_context(|| format!("cannot listen on {}", cfg.listen))?;
    let home = m2m_core::Home::sp(
        m2m_core::SpId::parse(&cfg.sp_fqdn).map_err(|e| anyhow::anyhow!("sp_fqdn: {}", e.dbg))?,
    );
    let allowed = cfg
        .hosting_cses
        .iter()
        .map(|c| {
            m2m_core::EntityId::parse(c, &home)
                .ok()
                .filter(m2m_core::EntityId::is_cse)
                .ok_or_else(|| anyhow::anyhow!("hosting_cses: '{c}' is not a CSE-ID"))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let binder = Arc::new(CseBinder {
        naming,
        home,
        allowed,
    });
    // Rules that answer with a token need the issuer and its key, loaded once.
    let signer = if cfg.rules.iter().any(|r| r.token) {
        Some(TokenSigner::load(&cfg).context("a rule answers with a token")?)
    } else {
        None
    };
    let policy = Arc::new((cfg.rules, signer));
    let server = Server::spawn(
        Listener {
            name: "das",
            tcp,
            security: Security::Tls(context),
            limits: m2m_transport::Limits::default(),
        },
        binder,
        move |conn: Connection<HostingCse>| serve(Arc::clone(&policy), conn),
    )
    .map_err(|e| anyhow::anyhow!("DAS listener: {e}"))?;
    tracing::info!(addr = %server.local_addr, "DAS started");
    println!("m2m-das listening https://{}", server.local_addr);
    std::io::stdout().flush()?;
    crate::shutdown::requested().await?;
    server.shutdown(std::time::Duration::from_secs(2)).await;
    Ok(())
}

/// The DAS's token issuer: its identity (`iss`) and its token-signing key.
pub struct TokenSigner {
    issuer: String,
    key: m2m_security::e2e::jose::EcKeyPair,
}

impl TokenSigner {
    /// The configuration's `issuer` and `token_key` (mode 0600).
    fn load(cfg: &DasConfig) -> anyhow::Result<TokenSigner> {
        let issuer = cfg
            .issuer
            .clone()
            .context("the DAS configuration names no issuer")?;
        let key_path = cfg
            .token_key
            .clone()
            .context("the DAS configuration names no token_key")?;
        m2m_security::secure_environment::check_private_file(&key_path)
            .map_err(anyhow::Error::msg)?;
        let jwk = zeroize::Zeroizing::new(
            std::fs::read_to_string(&key_path)
                .with_context(|| format!("cannot read {}", key_path.display()))?,
        );
        let key = m2m_security::e2e::jose::EcKeyPair::from_jwk(&jwk)
            .map_err(|e| anyhow::anyhow!("{}: {}", key_path.display(), e.reason))?;
        Ok(TokenSigner { issuer, key })
    }

    /// A token for `holder`: `acop` on `resources` (none: no privileges) and `roles`, valid for
    /// `lifetime` seconds from now, for the `audience` CSEs; the token and its ID.
    fn sign(
        &self,
        holder: &str,
        (resources, acop): (Vec<String>, u32),
        roles: Vec<String>,
        lifetime: u64,
        audience: Vec<String>,
        name: Option<String>,
    ) -> anyhow::Result<(String, String)> {
        use m2m_security::token::{Permission, Permissions, TokenClaims};
        let mut permissions = Vec::new();
        if !resources.is_empty() {
            permissions.push(Permission {
                resources,
                privileges: Some(serde_json::json!({
                    "acr": [{ "acor": [holder], "acop": acop }]
                })),
                roles: Vec::new(),
            });
        }
        if !roles.is_empty() {
            permissions.push(Permission {
                resources: Vec::new(),
                privileges: None,
                roles,
            });
        }
        let now = chrono::Utc::now().timestamp();
        let token_id = format!(
            "{}@{}",
            hex::encode(rand::random::<[u8; 12]>()),
            self.issuer
        );
        let claims = TokenClaims {
            version: m2m_security::token::VERSION.into(),
            token_id: token_id.clone(),
            holder: holder.to_owned(),
            issuer: self.issuer.clone(),
            not_before: now,
            not_after: now.saturating_add(i64::try_from(lifetime).unwrap_or(i64::MAX)),
            name,
            audience,
            permissions: Some(Permissions { permissions }),
            extension: None,
        };
        let token = m2m_security::token::issue(&claims, &self.key).map_err(anyhow::Error::msg)?;
        Ok((token, token_id))
    }
}

/// `m2m das token`: a token for `holder` over `resources` and roles, signed ES256 with the
/// token key.
fn issue_token(a: TokenArgs) -> anyhow::Result<()> {
    let cfg = DasConfig::load(&a.config)?;
    let signer = TokenSigner::load(&cfg)?;
    if a.resources.is_empty() != a.operations.is_empty() {
        anyhow::bail!("--resource and --operation go together");
    }
    if a.resources.is_empty() && a.roles.is_empty() {
        anyhow::bail!("a token grants something: --resource with --operation, or --role");
    }
    for r in &a.roles {
        m2m_core::RoleId::parse(r).map_err(|e| anyhow::anyhow!("--role {r}: {}", e.dbg))?;
    }
    let acop = Rule {
        originators: vec![a.holder.clone()],
        targets: a.resources.clone(),
        operations: a.operations.clone(),
        lifetime_seconds: a.lifetime,
        token: true,
    }
    .operation_bits()
    .map_err(anyhow::Error::msg)?;
    let (token, token_id) = signer.sign(
        &a.holder,
        (a.resources, acop),
        a.roles,
        a.lifetime,
        a.audience,
        a.name,
    )?;
    eprintln!("token ID: {token_id}");
    println!("{token}");
    Ok(())
}

/// `m2m das revoke-token`: the list with these IDs added, written by rename (a CSE reading it
/// sees the old list or the new one).
fn revoke_tokens(a: RevokeTokenArgs) -> anyhow::Result<()> {
    let mut text = match std::fs::read_to_string(&a.list) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => anyhow::bail!("cannot read {}: {e}", a.list.display()),
    };
    let present: std::collections::HashSet<String> =
        text.lines().map(|l| l.trim().to_owned()).collect();
    for id in &a.token_ids {
        if id.trim().is_empty() || id.contains(char::is_whitespace) {
            anyhow::bail!("'{id}' is not a token ID");
        }
        if !present.contains(id) {
            if !text.is_empty() && !text.ends_with('\n') {
                text.push('\n');
            }
            text.push_str(id);
            text.push('\n');
        }
    }
    let dir = match a.list.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let mut tmp = tempfile::NamedTempFile::new_in(dir)
        .with_context(|| format!("cannot write in {}", dir.display()))?;
    std::io::Write::write_all(&mut tmp, text.as_bytes()).context("cannot write the list")?;
    {
        use std::os::unix::fs::PermissionsExt;
        // Token IDs are no secret; the CSE reading the list may run as another user.
        tmp.as_file()
            .set_permissions(std::fs::Permissions::from_mode(0o644))
            .context("cannot write the list")?;
    }
    tmp.as_file().sync_all().context("cannot write the list")?;
    tmp.persist(&a.list)
        .map_err(|e| anyhow::anyhow!("cannot replace {}: {}", a.list.display(), e.error))?;
    println!(
        "{}: {} token ID(s) revoked",
        a.list.display(),
        a.token_ids.len()
    );
    Ok(())
}

/// The rules, and the signer of the tokens some of them answer with.
type Policy = (Vec<Rule>, Option<TokenSigner>);

async fn serve(policy: Arc<Policy>, conn: Connection<HostingCse>) {
    let Some(cse) = conn.association.clone() else {
        return;
    };
    let peer = conn.peer;
    let svc = service_fn(move |req| {
        let (policy, cse) = (Arc::clone(&policy), Arc::clone(&cse));
        async move { Ok::<_, Infallible>(handle(&policy, &cse, peer, req).await) }
    });
    m2m_transport::http::serve(conn, svc).await
}

async fn handle(
    (rules, signer): &Policy,
    cse: &HostingCse,
    peer: SocketAddr,
    req: hyper::Request<Incoming>,
) -> hyper::Response<Full<Bytes>> {
    let (parts, body) = req.into_parts();
    let rqi = http_binding::request_identifier(&parts.headers);
    let rsp = match Limited::new(body, MAX_BODY).collect().await {
        Err(_) => Response::error(&M2mError::bad_request("request too large"), rqi),
        Ok(body) => match consultation(&parts, &body.to_bytes(), cse) {
            Err(e) => Response::error(&e, rqi),
            Ok(ask) => {
                let now = chrono::Utc::now().timestamp();
                let (mut answer, rule) = decide(rules, &ask, now);
                match rule {
                    Some(i) if rules[i].token => {
                        answer = token_answer(&rules[i], signer.as_ref(), &ask, cse);
                        tracing::info!(target: "audit", peer = %peer, hosting_cse = %cse.id(), originator = %ask.originator, operation = ask.operation, target = %ask.target, rule = i, granted = matches!(answer, DasAnswer::Tokens(_)), "dynamic authorization answered with a token")
                    }
                    Some(i) => {
                        tracing::info!(target: "audit", peer = %peer, hosting_cse = %cse.id(), originator = %ask.originator, operation = ask.operation, target = %ask.target, rule = i, "dynamic authorization granted")
                    }
                    None => {
                        tracing::info!(target: "audit", peer = %peer, hosting_cse = %cse.id(), originator = %ask.originator, operation = ask.operation, target = %ask.target, "dynamic authorization refused: no rule grants")
                    }
                }
                Response::new(ResponseStatusCode::Ok, rqi, Some(answer.to_content()))
            }
        },
    };
    let (parts, body) =
        http_binding::encode_response(&rsp, m2m_core::serialization::Serialization::Json)
            .into_parts();
    hyper::Response::from_parts(parts, Full::new(body))
}

/// A token for the originator the consultation names, the operation it asks on the resource it
/// names, the asking CSE its only audience (TS-0003 clause 7.3.2.2 step 3.1); a refusal when it cannot be
/// signed.
fn token_answer(
    rule: &Rule,
    signer: Option<&TokenSigner>,
    ask: &DasRequest,
    cse: &HostingCse,
) -> DasAnswer {
    let Some(signer) = signer else {
        return DasAnswer::Refused;
    };
    // What was asked and nothing more: the operation on the resource the consultation names
    // (the rule matched both), as a privileges answer would grant.
    let Some(op) = ask.access_operation() else {
        return DasAnswer::Refused;
    };
    match signer.sign(
        &ask.originator,
        (vec![ask.target.clone()], op.bit()),
        Vec::new(),
        rule.lifetime_seconds,
        vec![cse.id()],
        None,
    ) {
        Ok((token, token_id)) => {
            tracing::info!(target: "audit", token_id = %token_id, holder = %ask.originator, "token issued");
            DasAnswer::Tokens(m2m_core::Tokens(vec![token]))
        }
        Err(e) => {
            tracing::warn!(error = %e, "token not signed; refused");
            DasAnswer::Refused
        }
    }
}

/// The dynamic authorization request a NOTIFY carries, from the CSE the association names.
fn consultation(
    parts: &http::request::Parts,
    body: &[u8],
    cse: &HostingCse,
) -> Result<DasRequest, M2mError> {
    let req =
        http_binding::decode_request(&parts.method, &parts.uri, &parts.headers, body, |_| false)?;
    if req.op != Operation::Notify {
        return Err(M2mError::new(
            ResponseStatusCode::OperationNotAllowed,
            "a Dynamic Authorization Server answers NOTIFY only",
        ));
    }
    let from = req
        .from
        .as_deref()
        .and_then(|f| m2m_core::EntityId::parse(f, &cse.home).ok());
    if from.as_ref() != Some(&cse.entity) {
        tracing::warn!(target: "audit", hosting_cse = %cse.id(), from = ?req.from, "consultation refused: From is not the CSE of the association");
        return Err(M2mError::new(
            ResponseStatusCode::OriginatorNotAuthenticated,
            "From is not the CSE this association authenticated",
        ));
    }
    let pc = req
        .pc
        .as_ref()
        .ok_or_else(|| M2mError::bad_request("no content"))?;
    let ask = DasRequest::from_content(pc).map_err(M2mError::bad_request)?;
    // A CSE asks about its own resources only: no policy of another CSE is enumerated through it.
    if !ask.target.starts_with(&format!("{}/", cse.id())) {
        tracing::warn!(target: "audit", hosting_cse = %cse.id(), target = %ask.target, "consultation refused: the target is not the asking CSE's");
        return Err(M2mError::new(
            ResponseStatusCode::OriginatorHasNoPrivilege,
            "the targeted resource is not hosted by the asking CSE",
        ));
    }
    Ok(ask)
}
