//! `m2m request`: sends one oneM2M request primitive over the HTTP binding and prints the response.
//!
//! Exit codes: 0 when the response status code is a success (1xxx/2xxx), 1 when the peer answered
//! with a oneM2M error, 2 when the peer could not be reached (transport failure, timeout,
//! malformed response).

use crate::ae_config::AeConfig;
use crate::association::{
    maf_access, maf_psk_with, GbaDevice, GbaSae, MafCredential, MafSae, MefEnrolee, MefEnrolment,
    MefKpsa, SaeMode, SecretSource, TlsPeer,
};
use anyhow::{anyhow, bail, Context};
use clap::{Args, ValueEnum};
use m2m_core::primitive::{DiscResType, ResponseType};
use m2m_core::{Operation, Request, ResourceType, Response, ResultContent};
use m2m_keyservices::sae::MafAccess;
use serde_json::{json, Value};
use std::time::Duration;

/// The operation, by name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum OpArg {
    Create,
    Retrieve,
    Update,
    Delete,
    Notify,
}

impl From<OpArg> for Operation {
    fn from(op: OpArg) -> Self {
        match op {
            OpArg::Create => Operation::Create,
            OpArg::Retrieve => Operation::Retrieve,
            OpArg::Update => Operation::Update,
            OpArg::Delete => Operation::Delete,
            OpArg::Notify => Operation::Notify,
        }
    }
}

/// Send one oneM2M request to a CSE over HTTP and print the response.
#[derive(Args, Clone, Debug)]
pub struct RequestArgs {
    /// Send as the AE of this configuration (`m2m ae --config`): its CSE's URL, its SAE mode and
    /// credentials, and as From the AE-ID its registration was given (else its originator).
    /// The other options override what it says. Relative paths in it are read against the
    /// file's directory, as `m2m ae` reads them.
    #[arg(long, value_name = "FILE")]
    pub ae: Option<std::path::PathBuf>,
    /// Base URL of the CSE (scheme://host:port); default http://127.0.0.1:8080 or the --ae's CSE.
    /// mqtts://host:port sends through that MQTT server (TS-0010), to the CSE of --cse-id.
    #[arg(long)]
    pub url: Option<String>,
    /// The CSE's CSE-ID (e.g. /id-in): the receiver of the MQTT topics (or the --ae's CSE).
    #[arg(long)]
    pub cse_id: Option<String>,
    /// Operation.
    #[arg(short = 'X', long, value_enum, default_value = "retrieve")]
    pub op: OpArg,
    /// The To parameter: CSE-relative (cse-in/ae1), SP-relative (/id-in/cse-in) or absolute (//sp/id-in).
    #[arg(long)]
    pub to: String,
    /// The From parameter (originator).
    #[arg(long)]
    pub from: Option<String>,
    /// Resource type of a CREATE (sent as Content-Type ty=N), e.g. 2 AE, 3 container, 4 contentInstance.
    #[arg(long)]
    pub ty: Option<u16>,
    /// Result Content (rcn).
    #[arg(long)]
    pub rcn: Option<u8>,
    /// Content as JSON text, or @FILE to read it from a file.
    #[arg(long)]
    pub body: Option<String>,
    /// Query parameter k=v (filter criteria such as fu=1, ty=3, lbl=a; also rcn, drt, rt, atrl); repeatable.
    #[arg(long = "query", short = 'q', value_name = "K=V")]
    pub query: Vec<String>,
    /// Release Version Indicator.
    #[arg(long, default_value = "3")]
    pub rvi: String,
    /// Request identifier (default: a fresh random-looking one).
    #[arg(long)]
    pub rqi: Option<String>,
    /// Print one machine-readable JSON object {rsc, rqi, pc} instead of text.
    #[arg(long)]
    pub json: bool,
    /// Timeout in seconds.
    #[arg(long, default_value_t = 10)]
    pub timeout: u64,
    /// TLS-PSK: the psk_identity (a KpsaID such as AE123456789012-Lock@in.provider.com).
    #[arg(long)]
    pub psk_identity: Option<String>,
    /// TLS-PSK: the environment variable holding the key in hex (keeps it out of the process list).
    #[arg(long)]
    pub psk_key_env: Option<String>,
    /// Certificate SAE: client certificate chain (PEM) ...
    #[arg(long, requires = "key")]
    pub cert: Option<std::path::PathBuf>,
    /// ... and its private key.
    #[arg(long)]
    pub key: Option<std::path::PathBuf>,
    /// Root of trust for the server's certificate.
    #[arg(long)]
    pub ca: Option<std::path::PathBuf>,
    /// Revocation list of that root, checked at the handshake (`m2m pki revoke` writes it).
    #[arg(long)]
    pub crl: Option<std::path::PathBuf>,
    /// The server's name for SNI and certificate verification (e.g. id-in.m2m.example.com).
    #[arg(long)]
    pub server_name: Option<String>,
    /// MAF-based SAE (with --target-cse) or MAF ESPrim (with --esprim-maf): the MAF to obtain a
    /// key Kc from (https://host:port) ...
    #[arg(long, requires = "maf_fqdn")]
    pub maf_url: Option<String>,
    /// ... its FQDN ...
    #[arg(long)]
    pub maf_fqdn: Option<String>,
    /// ... the KmID and the variable holding Km in hex (or enrol first with --mef-url) ...
    #[arg(long, requires = "km_env")]
    pub km_id: Option<String>,
    #[arg(long)]
    pub km_env: Option<String>,
    /// ... and the absolute CSE-ID of the target CSE (e.g. //m2m.example.com/id-in).
    #[arg(long)]
    pub target_cse: Option<String>,
    /// Remote provisioning: enrol at this MEF (https://host:port) first, with --kpm-id and the
    /// variable --kpm-env holding Kpm; the Km for the MAF is derived from the enrolment.
    /// With --gba-usim (--gba-ub-url, --gba-bsf-fqdn) instead of Kpm, the enrolment is
    /// authenticated by GBA; with --cert and --key, by the certificate (the MEF's checked
    /// against --ca). With --kpsa-target instead of --maf-url, the enrolment provisions
    /// a Kpsa for that CSE (KpsaID = KeID), which the CSE fetches from the MEF.
    #[arg(long, requires = "mef_fqdn")]
    pub mef_url: Option<String>,
    /// The CSE a MEF enrolment provisions Kpsa for (its CSE-ID, /id-in or //sp/id-in).
    #[arg(long, requires = "mef_url", conflicts_with = "maf_url")]
    pub kpsa_target: Option<String>,
    #[arg(long)]
    pub mef_fqdn: Option<String>,
    #[arg(long)]
    pub kpm_id: Option<String>,
    #[arg(long)]
    pub kpm_env: Option<String>,
    /// GBA-based SAE (TS-0003 clause 8.3.2.3): the device's USIM file (`m2m bsf
    /// subscriber-add` writes it); with --gba-ub-url, --gba-bsf-fqdn and --gba-naf-fqdn. The key
    /// the file keeps is used while fresh, else the device bootstraps at the BSF first.
    #[arg(long, requires_all = ["gba_ub_url", "gba_bsf_fqdn"],
          conflicts_with_all = ["psk_identity", "cert", "kpm_id"])]
    pub gba_usim: Option<std::path::PathBuf>,
    /// ... the BSF's Ub URL (http://host:port) ...
    #[arg(long)]
    pub gba_ub_url: Option<String>,
    /// ... its domain (the B-TIDs' suffix) ...
    #[arg(long)]
    pub gba_bsf_fqdn: Option<String>,
    /// ... and the CSE's NAF FQDN: its CSE-ID's public domain name (id-in.m2m.example.com).
    #[arg(long)]
    pub gba_naf_fqdn: Option<String>,
    /// Group authentication (seeds/001 clause 8.2.1): the group agent (MN-CSE, https://host:port)
    /// to obtain the round's Rand from; the request then goes to --url over TLS-PSK with
    /// (KsxId, Ksx). Also: --group-agent-to, --kpsaxm-id, --kpsaxm-env, --kpsaxi-env.
    #[arg(long, requires_all = ["group_agent_to", "kpsaxm_id", "kpsaxm_env", "kpsaxi_env"],
          conflicts_with_all = ["psk_identity", "target_cse", "cert"])]
    pub group_agent_url: Option<String>,
    /// ... the agent's CSEBase, e.g. /id-mn ...
    #[arg(long)]
    pub group_agent_to: Option<String>,
    /// ... the inner association's KpsaxmId and the variable holding Kpsaxm in hex ...
    #[arg(long)]
    pub kpsaxm_id: Option<String>,
    #[arg(long)]
    pub kpsaxm_env: Option<String>,
    /// ... and the variable holding Kpsaxi (the key shared with the IN-CSE) in hex.
    #[arg(long)]
    pub kpsaxi_env: Option<String>,
    /// ESPrim (TS-0004 7.6.2): protect the request end to end for the Target whose CSEBase this is
    /// (e.g. /id-in); it travels as NOTIFY through --url. The key: --esprim-key-id/--esprim-key-env,
    /// --esprim-maf, or --esprim-cert/--esprim-cert-key/--esprim-ca.
    #[arg(long)]
    pub esprim_to: Option<String>,
    /// ... a provisioned pairwiseESPrimKeyID and the variable holding the key in hex ...
    #[arg(long, requires_all = ["esprim_to", "esprim_key_env"])]
    pub esprim_key_id: Option<String>,
    #[arg(long, requires = "esprim_key_id")]
    pub esprim_key_env: Option<String>,
    /// ... or a key from the MAF (SUID 33 for the Target; --maf-url, --maf-fqdn, --km-id/--km-env
    /// or the --mef-* options) ...
    #[arg(long, requires_all = ["esprim_to", "maf_url"], conflicts_with_all = ["esprim_key_id", "esprim_cert"])]
    pub esprim_maf: bool,
    /// ... or ESCertKE with the Target (TS-0003 8.7): this certificate chain (PEM), its key, and the
    /// root of trust for the Target's certificate.
    #[arg(long, requires_all = ["esprim_to", "esprim_cert_key", "esprim_ca"], conflicts_with = "esprim_key_id")]
    pub esprim_cert: Option<std::path::PathBuf>,
    #[arg(long, requires = "esprim_cert")]
    pub esprim_cert_key: Option<std::path::PathBuf>,
    #[arg(long, requires = "esprim_cert")]
    pub esprim_ca: Option<std::path::PathBuf>,
}

/// Builds the request primitive the arguments describe.
pub fn build_request(args: &RequestArgs) -> anyhow::Result<Request> {
    let rqi = args.rqi.clone().unwrap_or_else(m2m_client::next_request_id);
    let mut req = Request::new(args.op.into(), args.to.clone(), args.from.clone(), rqi);
    req.rvi = Some(args.rvi.clone());
    if let Some(ty) = args.ty {
        req.ty = Some(
            ResourceType::parse_requested(&ty.to_string())
                .map_err(|e| anyhow!("--ty {ty}: {}", e.dbg))?,
        );
    }
    if let Some(rcn) = args.rcn {
        req.rcn =
            Some(ResultContent::parse(&rcn.to_string()).map_err(|e| anyhow!("--rcn: {}", e.dbg))?);
    }
    if let Some(body) = &args.body {
        let text = match body.strip_prefix('@') {
            Some(path) => std::fs::read_to_string(path)
                .with_context(|| format!("cannot read --body file {path}"))?,
            None => body.clone(),
        };
        let v: Value = serde_json::from_str(&text).context("--body is not valid JSON")?;
        req.pc = Some(v);
    }
    for q in &args.query {
        apply_query(&mut req, q)?;
    }
    Ok(req)
}

/// Applies one `k=v` query parameter to the request.
fn apply_query(req: &mut Request, q: &str) -> anyhow::Result<()> {
    let (k, v) = q
        .split_once('=')
        .ok_or_else(|| anyhow!("--query '{q}' is not k=v"))?;
    match k {
        "rcn" => req.rcn = Some(ResultContent::parse(v).map_err(|e| anyhow!("{}", e.dbg))?),
        "drt" => {
            req.drt = match v {
                "1" => DiscResType::Structured,
                "2" => DiscResType::Unstructured,
                _ => bail!("drt '{v}' is not 1 or 2"),
            }
        }
        "rt" => {
            req.rt = match v {
                "1" => ResponseType::NonBlockingSynch,
                "2" => ResponseType::NonBlockingAsynch,
                "3" => ResponseType::Blocking,
                "4" => ResponseType::FlexBlocking,
                _ => bail!("rt '{v}' is not a response type (1-4)"),
            }
        }
        "atrl" => req.atrl.extend(
            v.split([' ', '+'])
                .filter(|s| !s.is_empty())
                .map(str::to_owned),
        ),
        // List fields are written as on the wire, `ty=3+4`; their elements are space-separated here.
        "ty" | "lbl" | "cty" => {
            req.fc
                .take_query_field(k, &v.replace('+', " "), |_| false)
                .map_err(|e| anyhow!("--query {q}: {}", e.dbg))?;
        }
        _ => {
            // Every name that is not a filter criterion is sent as an attribute condition.
            req.fc
                .take_query_field(k, v, |_| true)
                .map_err(|e| anyhow!("--query {q}: {}", e.dbg))?;
        }
    }
    Ok(())
}

/// The text printed for a response: the status line and the pretty content.
pub fn format_response(rsp: &Response) -> String {
    let mut out = rsp.rsc.to_string();
    out.push('\n');
    if let Some(pc) = &rsp.pc {
        out.push_str(&serde_json::to_string_pretty(pc).unwrap_or_default());
        out.push('\n');
    }
    out
}

/// The machine-readable form: one JSON object {rsc, rqi, pc}.
pub fn response_json(rsp: &Response) -> Value {
    json!({
        "rsc": rsp.rsc.code(),
        "rqi": rsp.rqi,
        "pc": rsp.pc.clone().unwrap_or(Value::Null),
    })
}

/// The default CSE of `m2m request`: a local IN-CSE's loopback listener.
const DEFAULT_URL: &str = "http://127.0.0.1:8080";

/// Runs `m2m request`; returns the process exit code.
pub async fn run(mut args: RequestArgs) -> anyhow::Result<i32> {
    let ae = match &args.ae {
        Some(path) => Some(AeConfig::load(path)?),
        None => None,
    };
    if let Some(ae) = &ae {
        args.from = args.from.take().or_else(|| Some(ae.from()));
    }
    let url = args
        .url
        .clone()
        .or_else(|| ae.as_ref().map(|a| a.cse.url.clone()))
        .unwrap_or_else(|| DEFAULT_URL.to_owned());
    let req = build_request(&args)?;
    let mode = sae_mode(&args, ae.as_ref())?;
    let peer = TlsPeer {
        trusted_ca: args
            .ca
            .clone()
            .or_else(|| ae.as_ref().and_then(|a| a.cse.trusted_ca.clone())),
        server_name: args
            .server_name
            .clone()
            .or_else(|| ae.as_ref().and_then(|a| a.cse.server_name.clone())),
        crl: args
            .crl
            .clone()
            .or_else(|| ae.as_ref().and_then(|a| a.cse.crl.clone())),
        cse_id: args
            .cse_id
            .clone()
            .or_else(|| ae.as_ref().map(|a| a.cse.cse_id.clone())),
    };
    // Obtaining a MAF key goes to the network: failing there is "not reached" (exit 2). The MAF
    // access (a MEF enrolment, perhaps) serves --esprim-maf too.
    let maf = match &mode {
        SaeMode::Maf(maf) => match maf_access(maf).await {
            Ok(access) => Some((access, maf.target_cse.as_str())),
            Err(e) => {
                eprintln!("m2m request: {e:#}");
                return Ok(2);
            }
        },
        _ => None,
    };
    let psk = match &maf {
        Some((access, target)) => match maf_psk_with(access, target).await {
            Ok(k) => Some(k),
            Err(e) => {
                eprintln!("m2m request: {e:#}");
                return Ok(2);
            }
        },
        None => mode.psk().await?,
    };
    // Group authentication is an SAE mode of its own (clap keeps it apart from the others).
    let psk = match psk {
        Some(k) => Some(k),
        None => match group_connection_key(&args).await {
            Ok(k) => k,
            Err(e) => {
                eprintln!("m2m request: group agent: {} {}", e.rsc, e.dbg);
                if args.json {
                    println!("{}", response_json(&Response::error(&e, req.rqi.clone())));
                }
                let unreachable = e.rsc == m2m_core::ResponseStatusCode::TargetNotReachable;
                return Ok(if unreachable { 2 } else { 1 });
            }
        },
    };
    let client = mode.client(psk, &peer, Duration::from_secs(args.timeout))?;
    let known = maf.as_ref().map(|(access, _)| access);
    let mut sent = send(&client, &args, &url, &req, known).await;
    // GBA: a kept key the CSE could not use (the BSF forgot the B-TID, or it ran out) is
    // replaced by a new bootstrapping, once.
    if let (SaeMode::Gba(gba), Err(e)) = (&mode, &sent) {
        if e.rsc == m2m_core::ResponseStatusCode::TargetNotReachable {
            eprintln!("m2m request: the association failed ({e}); bootstrapping anew");
            let psk = crate::association::gba_psk(gba, true).await?;
            let client = mode.client(Some(psk), &peer, Duration::from_secs(args.timeout))?;
            sent = send(&client, &args, &url, &req, known).await;
        }
    }
    match sent {
        Ok(rsp) => {
            if args.json {
                println!("{}", response_json(&rsp));
            } else {
                print!("{}", format_response(&rsp));
            }
            Ok(if rsp.rsc.is_success() { 0 } else { 1 })
        }
        Err(e) => {
            eprintln!("m2m request: {e}");
            if args.json {
                let rsp = Response::error(&e, req.rqi.clone());
                println!("{}", response_json(&rsp));
            }
            Ok(2)
        }
    }
}

/// Sends the request, protected with ESPrim when --esprim-to is given (the printed response is then
/// the verified inner one; the Target's ESPrim refusals come back as errors with their codes).
async fn send(
    client: &m2m_client::Client,
    args: &RequestArgs,
    url: &str,
    req: &Request,
    known: Option<&MafAccess>,
) -> m2m_core::M2mResult<Response> {
    let Some(to) = &args.esprim_to else {
        return client.send(url, req).await;
    };
    let from = args.from.as_deref().unwrap_or("");
    let route = crate::esprim_keys::Route {
        client,
        url,
        to,
        from,
    };
    let protected = async {
        let source = esprim_key_source(args)
            .map_err(|e| m2m_core::M2mError::bad_request(format!("{e:#}")))?;
        let (kid, key) = crate::esprim_keys::obtain(&source, &route, known).await?;
        let target = m2m_client::esprim::EsprimTarget {
            url,
            to,
            from,
            kid: &kid,
            key: &key,
        };
        m2m_client::esprim::send_protected(client, &target, req).await
    };
    match protected.await {
        // An answer of the Target (or a CSE on the way) is a response, as for a plain request.
        Err(e) if e.rsc != m2m_core::ResponseStatusCode::TargetNotReachable => {
            Ok(Response::error(&e, req.rqi.clone()))
        }
        other => other,
    }
}

/// Where `--esprim-to`'s pairwiseESPrimKey comes from: exactly one of the three sources.
fn esprim_key_source(args: &RequestArgs) -> anyhow::Result<crate::esprim_keys::EsprimKeySource> {
    use crate::esprim_keys::EsprimKeySource;
    if let (Some(kid), Some(var)) = (&args.esprim_key_id, &args.esprim_key_env) {
        return Ok(EsprimKeySource::Provisioned {
            kid: kid.clone(),
            key: SecretSource::Env(var.clone()),
        });
    }
    if args.esprim_maf {
        let (Some(url), Some(fqdn), Some(target)) =
            (&args.maf_url, &args.maf_fqdn, &args.esprim_to)
        else {
            bail!("--esprim-maf needs --maf-url and --maf-fqdn");
        };
        return Ok(EsprimKeySource::Maf(MafSae {
            url: url.clone(),
            fqdn: fqdn.clone(),
            target_cse: target.clone(),
            credential: maf_credential(args)?,
        }));
    }
    if let (Some(c), Some(k), Some(ca)) =
        (&args.esprim_cert, &args.esprim_cert_key, &args.esprim_ca)
    {
        return Ok(EsprimKeySource::Certificate {
            certificate: c.clone(),
            private_key: k.clone(),
            trusted_ca: ca.clone(),
        });
    }
    bail!("--esprim-to needs a key: --esprim-key-id/--esprim-key-env, --esprim-maf, or --esprim-cert/--esprim-cert-key/--esprim-ca")
}

/// The credential towards the MAF: an enrolment at the MEF, else a Km.
fn maf_credential(args: &RequestArgs) -> anyhow::Result<MafCredential> {
    if args.mef_url.is_some() {
        return Ok(MafCredential::Enrolment(mef_enrolment(args)?));
    }
    match (&args.km_id, &args.km_env) {
        (Some(km_id), Some(var)) => Ok(MafCredential::Km {
            km_id: km_id.clone(),
            km: SecretSource::Env(var.clone()),
        }),
        _ => bail!("the MAF needs --km-id/--km-env or an enrolment (--mef-url ...)"),
    }
}

/// The device of --gba-usim, --gba-ub-url and --gba-bsf-fqdn, when --gba-usim is given.
fn gba_device(args: &RequestArgs) -> anyhow::Result<Option<GbaDevice>> {
    let Some(usim) = &args.gba_usim else {
        return Ok(None);
    };
    Ok(Some(GbaDevice {
        usim: usim.clone(),
        ub_url: args
            .gba_ub_url
            .clone()
            .context("--gba-usim needs --gba-ub-url")?,
        bsf_fqdn: args
            .gba_bsf_fqdn
            .clone()
            .context("--gba-usim needs --gba-bsf-fqdn")?,
    }))
}

/// The enrolment at --mef-url: on Kpm (--kpm-id, --kpm-env), by GBA (--gba-usim ...) or with a
/// certificate (--cert, --key; the MEF's certificate checked against --ca).
fn mef_enrolment(args: &RequestArgs) -> anyhow::Result<MefEnrolment> {
    let enrolee = match (gba_device(args)?, &args.kpm_id, &args.kpm_env, &args.cert) {
        (Some(device), None, None, None) => MefEnrolee::Gba(device),
        (None, Some(kpm_id), Some(var), None) => MefEnrolee::Kpm {
            kpm_id: kpm_id.clone(),
            kpm: SecretSource::Env(var.clone()),
        },
        (None, None, None, Some(certificate)) => MefEnrolee::Certificate {
            certificate: certificate.clone(),
            private_key: args.key.clone().context("--cert needs --key")?,
            trusted_ca: args
                .ca
                .clone()
                .context("an enrolment with a certificate needs --ca (the MEF's root of trust)")?,
        },
        _ => bail!("--mef-url needs one enrolee credential: --kpm-id and --kpm-env, --gba-usim, or --cert and --key"),
    };
    Ok(MefEnrolment {
        mef_url: args.mef_url.clone().context("no --mef-url")?,
        mef_fqdn: args
            .mef_fqdn
            .clone()
            .context("--mef-url needs --mef-fqdn")?,
        enrolee,
    })
}

/// Group authentication in one call: Rand from the group agent over the inner association
/// (KpsaxmId/Kpsaxm), then Ksx from Kpsaxi; returns (KsxId, Ksx) to open TLS-PSK with.
async fn group_connection_key(
    args: &RequestArgs,
) -> m2m_core::M2mResult<Option<crate::association::PskCredential>> {
    use m2m_client::group_authentication::{derive, request_key_material, GroupAgent};
    let (Some(url), Some(to), Some(kpsaxm_id), Some(kpsaxm_env), Some(kpsaxi_env)) = (
        &args.group_agent_url,
        &args.group_agent_to,
        &args.kpsaxm_id,
        &args.kpsaxm_env,
        &args.kpsaxi_env,
    ) else {
        return Ok(None);
    };
    let env = |var: &str| {
        SecretSource::Env(var.to_owned())
            .load()
            .map_err(|e| m2m_core::M2mError::bad_request(e.to_string()))
    };
    let agent = GroupAgent {
        url,
        to,
        from: args.from.as_deref().unwrap_or(""),
        kpsaxm_id,
        kpsaxm: &env(kpsaxm_env)?,
    };
    let client = m2m_client::Client::new().with_timeout(Duration::from_secs(args.timeout));
    let material = request_key_material(&agent, client).await?;
    let key = derive(material, &env(kpsaxi_env)?)?;
    Ok(Some(crate::association::PskCredential::new(
        key.ksx_id.clone(),
        zeroize::Zeroizing::new(key.ksx.expose().to_vec()),
    )))
}

/// The SAE mode: the options when they name one (overriding the --ae configuration's parts they
/// name), else the --ae configuration's, else none.
fn sae_mode(args: &RequestArgs, ae: Option<&AeConfig>) -> anyhow::Result<SaeMode> {
    if let (Some(url), Some(fqdn), Some(target)) = (&args.maf_url, &args.maf_fqdn, &args.target_cse)
    {
        return Ok(SaeMode::Maf(MafSae {
            url: url.clone(),
            fqdn: fqdn.clone(),
            target_cse: target.clone(),
            credential: maf_credential(args)?,
        }));
    }
    if let (Some(_), Some(target)) = (&args.mef_url, &args.kpsa_target) {
        return Ok(SaeMode::MefKpsa(MefKpsa {
            enrolment: mef_enrolment(args)?,
            target: crate::ae_config::sp_relative_cse(target)?,
        }));
    }
    if args.mef_url.is_some() {
        bail!("--mef-url needs --maf-url (the MAF's Km) or --kpsa-target (a Kpsa for a CSE)");
    }
    if let Some(device) = gba_device(args)? {
        let naf = args.gba_naf_fqdn.clone().context(
            "--gba-usim needs --gba-naf-fqdn (GBA-based SAE with the CSE), or --mef-url (an enrolment)",
        )?;
        return Ok(SaeMode::Gba(GbaSae {
            device,
            naf_fqdn: naf,
        }));
    }
    if args.maf_url.is_some() && !args.esprim_maf {
        bail!("--maf-url needs --target-cse (MAF-based SAE) or --esprim-maf (MAF ESPrim)");
    }
    let configured = ae.map(|a| a.sae.clone()).unwrap_or(SaeMode::None);
    if args.psk_identity.is_some() || args.psk_key_env.is_some() {
        let (id, key) = match configured {
            SaeMode::Psk { kpsa_id, key } => (Some(kpsa_id), Some(key)),
            _ => (None, None),
        };
        return Ok(SaeMode::Psk {
            kpsa_id: args
                .psk_identity
                .clone()
                .or(id)
                .context("--psk-key-env needs --psk-identity (or an --ae in psk mode)")?,
            key: args
                .psk_key_env
                .clone()
                .map(SecretSource::Env)
                .or(key)
                .context("--psk-identity needs --psk-key-env (or an --ae in psk mode)")?,
        });
    }
    if let (Some(certificate), Some(private_key)) = (&args.cert, &args.key) {
        return Ok(SaeMode::Certificate {
            certificate: certificate.clone(),
            private_key: private_key.clone(),
        });
    }
    Ok(configured)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use m2m_core::filter::FilterUsage;
    use m2m_core::ResponseStatusCode;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: RequestArgs,
    }

    fn parse(argv: &[&str]) -> RequestArgs {
        Cli::try_parse_from(std::iter::once("m2m-request").chain(argv.iter().copied()))
            .unwrap()
            .args
    }

    #[test]
    fn group_authentication_is_a_mode_of_its_own() {
        let group = [
            "--to",
            "x",
            "--group-agent-url",
            "https://127.0.0.1:1",
            "--group-agent-to",
            "/id-mn",
            "--kpsaxm-id",
            "m@x",
            "--kpsaxm-env",
            "M",
            "--kpsaxi-env",
            "I",
        ];
        assert!(Cli::try_parse_from(std::iter::once("r").chain(group)).is_ok());
        for other in [
            &["--psk-identity", "a@b", "--psk-key-env", "K"][..],
            &["--target-cse", "//sp/id-in"],
            &["--cert", "c.pem", "--key", "c.key"],
        ] {
            let argv = std::iter::once("r")
                .chain(group)
                .chain(other.iter().copied());
            assert!(Cli::try_parse_from(argv).is_err(), "{other:?}");
        }
    }

    #[test]
    fn defaults() {
        let a = parse(&["--to", "cse-in"]);
        assert_eq!(a.url, None);
        assert_eq!(a.ae, None);
        assert_eq!(a.op, OpArg::Retrieve);
        assert_eq!(a.rvi, "3");
        assert!(!a.json);
        let r = build_request(&a).unwrap();
        assert_eq!(r.op, Operation::Retrieve);
        assert_eq!(r.to, "cse-in");
        assert_eq!(r.from, None);
        assert!(!r.rqi.is_empty());
        assert_eq!(r.rvi.as_deref(), Some("3"));
        assert!(
            Cli::try_parse_from(["m2m-request"]).is_err(),
            "--to is required"
        );
    }

    #[test]
    fn create_with_body_and_ty() {
        let a = parse(&[
            "-X",
            "create",
            "--to",
            "/id-in/cse-in",
            "--from",
            "C",
            "--ty",
            "2",
            "--rcn",
            "1",
            "--body",
            r#"{"m2m:ae":{"rn":"a","api":"Na","rr":false,"srv":["3"]}}"#,
            "--rqi",
            "req-1",
            "--rvi",
            "4",
            "--json",
        ]);
        let r = build_request(&a).unwrap();
        assert_eq!(r.op, Operation::Create);
        assert_eq!(r.ty, Some(ResourceType::Ae));
        assert_eq!(r.rcn, Some(ResultContent::Attributes));
        assert_eq!(r.pc.unwrap()["m2m:ae"]["api"], "Na");
        assert_eq!(r.rqi, "req-1");
        assert_eq!(r.rvi.as_deref(), Some("4"));
        assert_eq!(r.from.as_deref(), Some("C"));
        assert!(a.json);
    }

    #[test]
    fn body_from_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("b.json");
        std::fs::write(&p, r#"{"m2m:cin":{"con":"21.5"}}"#).unwrap();
        let at = format!("@{}", p.display());
        let a = parse(&["--op", "create", "--to", "x", "--ty", "4", "--body", &at]);
        assert_eq!(
            build_request(&a).unwrap().pc.unwrap()["m2m:cin"]["con"],
            "21.5"
        );
        let a = parse(&["--to", "x", "--body", "@/nonexistent/file"]);
        assert!(build_request(&a).is_err());
        let a = parse(&["--to", "x", "--body", "{not json"]);
        assert!(build_request(&a).is_err());
    }

    #[test]
    fn queries_become_filter_criteria() {
        let a = parse(&[
            "--to",
            "cse-in",
            "--query",
            "fu=1",
            "--query",
            "ty=3+4",
            "-q",
            "lbl=a",
            "-q",
            "lim=5",
            "-q",
            "drt=2",
            "-q",
            "atrl=rn ct",
            "-q",
            "cr=Cx",
        ]);
        let r = build_request(&a).unwrap();
        assert_eq!(r.fc.filter_usage, Some(FilterUsage::Discovery));
        assert_eq!(r.fc.resource_types, vec![3, 4]);
        assert_eq!(r.fc.labels, vec!["a"]);
        assert_eq!(r.fc.limit, Some(5));
        assert_eq!(r.drt, DiscResType::Unstructured);
        assert_eq!(r.atrl, vec!["rn", "ct"]);
        assert_eq!(r.fc.attributes, vec![("cr".to_owned(), "Cx".to_owned())]);
        for bad in ["fu=9", "noequals", "drt=3", "lim=x"] {
            let a = parse(&["--to", "cse-in", "--query", bad]);
            assert!(build_request(&a).is_err(), "{bad}");
        }
    }

    #[test]
    fn options_override_the_ae_configuration() {
        let dir = tempfile::tempdir().unwrap();
        let ae = AeConfig::parse(
            "[security]\nmode = \"psk\"\nkpsa_id = \"AE1-Lock@in.provider.com\"\nkey_file = \"k\"\n",
            dir.path(),
            "lock",
        )
        .unwrap();
        let configured = sae_mode(&parse(&["--to", "x"]), Some(&ae)).unwrap();
        assert_eq!(configured, ae.sae);
        // A guessed identity with the configured key; the configured identity with another key.
        let SaeMode::Psk { kpsa_id, key } = sae_mode(
            &parse(&["--to", "x", "--psk-identity", "AE9-Lock@x"]),
            Some(&ae),
        )
        .unwrap() else {
            panic!("not psk")
        };
        assert_eq!(kpsa_id, "AE9-Lock@x");
        assert_eq!(key, SecretSource::File(dir.path().join("k")));
        let SaeMode::Psk { kpsa_id, key } =
            sae_mode(&parse(&["--to", "x", "--psk-key-env", "WRONG"]), Some(&ae)).unwrap()
        else {
            panic!("not psk")
        };
        assert_eq!(kpsa_id, "AE1-Lock@in.provider.com");
        assert_eq!(key, SecretSource::Env("WRONG".into()));
        // Without a configuration a half PSK is an error, not a plain request.
        assert!(sae_mode(&parse(&["--to", "x", "--psk-identity", "a@b"]), None).is_err());
        assert_eq!(
            sae_mode(&parse(&["--to", "x"]), None).unwrap(),
            SaeMode::None
        );
    }

    #[test]
    fn bad_values_are_rejected() {
        assert!(build_request(&parse(&["--to", "x", "--ty", "777"])).is_err());
        assert!(build_request(&parse(&["--to", "x", "--rcn", "42"])).is_err());
        assert!(Cli::try_parse_from(["m", "--to", "x", "-X", "patch"]).is_err());
    }

    #[test]
    fn output_formats() {
        let rsp = Response::new(
            ResponseStatusCode::Created,
            "r1",
            Some(json!({"m2m:cnt": {"rn": "c"}})),
        );
        let text = format_response(&rsp);
        assert!(text.starts_with("2001 CREATED\n{\n"), "{text}");
        assert!(text.contains("\"rn\": \"c\""));
        assert_eq!(
            response_json(&rsp),
            json!({"rsc": 2001, "rqi": "r1", "pc": {"m2m:cnt": {"rn": "c"}}})
        );
        let rsp = Response::new(ResponseStatusCode::Deleted, "r2", None);
        assert_eq!(format_response(&rsp), "2002 DELETED\n");
        assert_eq!(response_json(&rsp)["pc"], Value::Null);
    }
}
