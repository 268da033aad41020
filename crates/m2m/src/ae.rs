//! `m2m ae`: an AE as its own long-running process (TS-0001 clause 10.2.2 registration, 10.2.10
//! subscription and notification): it associates with its CSE in the configured SAE mode,
//! registers or reuses its registration, creates what its configuration lists, subscribes, and
//! prints each notification it receives as one JSON line on stdout until SIGINT or SIGTERM.
//!
//! stdout: first `{"ready":{...}}` once everything is set up, then `{"notification":{...}}` per
//! notification. Logs go to stderr.

use crate::ae_config::{AeConfig, AeState, NotificationBinding};
use crate::notification_receiver::{
    self, subscription_reference, Notification, NotificationReceiver, OwnSubscriptions,
};
use crate::originator::{code, expect, pc, send};
use anyhow::{bail, Context};
use m2m_client::Client;
use m2m_core::{Operation, ResourceType};
use serde_json::{json, Value};
use std::path::PathBuf;
use std::time::Duration;
use tokio::signal::unix::{signal, SignalKind};

#[derive(clap::Args, Debug)]
pub struct AeArgs {
    /// The AE configuration (TOML); `--print-default-config` shows every setting. Relative paths
    /// in it are read against the file's directory.
    #[arg(long, required_unless_present = "print_default_config")]
    pub config: Option<PathBuf>,
    /// Print the default configuration and exit.
    #[arg(long)]
    pub print_default_config: bool,
}

/// The AE as it runs: its client (the association) and its AE-ID.
pub(crate) struct Registered {
    pub(crate) client: Client,
    pub(crate) aei: String,
    reused: bool,
}

pub async fn run(args: AeArgs) -> anyhow::Result<()> {
    let path = args.config.context("--config is required")?;
    let cfg = AeConfig::load(&path)?;
    if let Some(c) = &cfg.credentials {
        use crate::association::SaeMode;
        let psk = matches!(cfg.sae, SaeMode::Psk { .. });
        if c.kpsa.is_some() && !psk {
            bail!("[credentials] object (Kpsa rotation) needs [security] mode psk");
        }
        if c.trust_anchors.is_some() && cfg.cse.trusted_ca.is_none() {
            bail!("[credentials] trust_anchors replaces [cse] trusted_ca, which it needs to start from");
        }
        if c.trust_anchors.is_some() && (psk || matches!(cfg.sae, SaeMode::Maf(_))) {
            bail!("[credentials] trust_anchors: in mode psk or maf the CSE proves itself with the key, not a certificate");
        }
    }
    // Installed before anything else, so that a stop during the setup is clean too.
    let mut term = signal(SignalKind::terminate()).context("cannot watch SIGTERM")?;
    // The receiver listens first: its address is the pointOfAccess of the registration. An AE
    // that polls has none: its channel is made once it is registered.
    let listening = match &cfg.notifications {
        Some(n) => {
            let (r, scheme) = match n.binding {
                NotificationBinding::Http => {
                    (notification_receiver::start(&n.listen).await?, "http")
                }
                NotificationBinding::Coap => {
                    (notification_receiver::start_coap(&n.listen).await?, "coap")
                }
                NotificationBinding::Coaps => {
                    let security = cfg.receiver_security()?;
                    (
                        notification_receiver::start_coaps(&n.listen, &security).await?,
                        "coaps",
                    )
                }
                NotificationBinding::Polling
                | NotificationBinding::Mqtt
                | NotificationBinding::Websocket => {
                    return run_registered(cfg, None, &mut term).await;
                }
            };
            let addr = r.addr.context("a listening receiver has an address")?;
            let poa = n
                .poa
                .clone()
                .unwrap_or_else(|| format!("{scheme}://{addr}"));
            Some((poa, r))
        }
        None => None,
    };
    run_registered(cfg, listening, &mut term).await
}

/// Registers (announcing `listening`'s pointOfAccess), makes the polling channel when the AE
/// polls, creates and subscribes, then prints notifications until stopped.
async fn run_registered(
    cfg: AeConfig,
    listening: Option<(String, NotificationReceiver)>,
    term: &mut tokio::signal::unix::Signal,
) -> anyhow::Result<()> {
    // Over MQTT the pointOfAccess is the CSE's MQTT server; the AE's topic is opened once the
    // AE-ID is known.
    let mqtt = cfg
        .notifications
        .as_ref()
        .filter(|n| n.binding == NotificationBinding::Mqtt)
        .map(|n| n.poa.clone().unwrap_or_else(|| cfg.cse.url.clone()));
    let poa = listening.as_ref().map(|(p, _)| p.clone()).or(mqtt.clone());
    let polls = cfg
        .notifications
        .as_ref()
        .is_some_and(|n| n.binding == NotificationBinding::Polling);
    let websocket = cfg
        .notifications
        .as_ref()
        .is_some_and(|n| n.binding == NotificationBinding::Websocket);
    let mut receiver = listening.map(|(_, r)| r);
    let setup = async {
        let ae = associate_and_register(&cfg, poa.as_deref()).await?;
        if polls {
            receiver = Some(open_polling_channel(&cfg, &ae).await?);
        }
        if mqtt.is_some() {
            receiver = Some(
                notification_receiver::start_mqtt(
                    ae.client.clone(),
                    cfg.cse.url.clone(),
                    ae.aei.clone(),
                )
                .await?,
            );
        }
        if websocket {
            receiver = Some(
                notification_receiver::start_websocket(
                    ae.client.clone(),
                    cfg.cse.url.clone(),
                    ae.aei.clone(),
                    format!("{}/{}", cfg.cse.resource_name, cfg.resource_name),
                )
                .await?,
            );
        }
        let created = create_resources(&cfg, &ae).await?;
        let own = receiver.as_ref().map(|r| &r.subscriptions);
        let subscriptions = subscribe(&cfg, &ae, own).await?;
        Ok::<_, anyhow::Error>((ae, created, subscriptions))
    };
    let (mut ae, created, subscriptions) = tokio::select! {
        r = setup => r?,
        _ = tokio::signal::ctrl_c() => return Ok(()),
        _ = term.recv() => return Ok(()),
    };
    println!(
        "{}",
        json!({ "ready": {
            "aei": ae.aei, "registration": if ae.reused { "reused" } else { "created" },
            "sae": cfg.sae.name(), "poa": poa, "polling": polls, "created": created,
            "subscriptions": subscriptions,
        }})
    );
    tracing::info!(aei = %ae.aei, "AE ready");
    // The receiver stays whole: a CoAP receiver's listener, or the poller, lives as long as it does.
    let mut notes = receiver.as_mut().map(|r| &mut r.notes);
    // The KpsaID in use, for the rotation watch only (asked only then: in modes maf, mef and gba
    // asking means a key service round, an enrolment or a bootstrapping).
    let mut current = match cfg.credentials.as_ref().and_then(|c| c.kpsa.as_ref()) {
        Some(_) => cfg
            .current_psk()
            .await?
            .map(|p| p.identity)
            .unwrap_or_default(),
        None => String::new(),
    };
    let mut check = cfg
        .credentials
        .as_ref()
        .map(|c| tokio::time::interval(c.poll));
    loop {
        tokio::select! {
            Some(note) = next(&mut notes) => println!("{}", note_line(&note)),
            _ = tick(&mut check) => {
                let creds = cfg.credentials.as_ref().expect("ticks only with [credentials]");
                if let Some(kpsa) = &creds.kpsa {
                    match rotate(&cfg, kpsa, &mut ae, &current).await {
                        Ok(Some(id)) => {
                            println!("{}", json!({ "credential": { "kpsa_id": id } }));
                            current = id;
                        }
                        Ok(None) => {}
                        Err(e) => tracing::warn!(error = %format!("{e:#}"), "Kpsa rotation not applied"),
                    }
                }
                if let Some(anchors) = &creds.trust_anchors {
                    match crate::trust_anchors::refresh(&cfg, anchors, &mut ae).await {
                        Ok(Some(fingerprints)) => {
                            println!("{}", json!({ "trust_anchors": { "fingerprints": fingerprints } }));
                        }
                        Ok(None) => {}
                        Err(e) => tracing::warn!(error = %format!("{e:#}"), "trust anchors not changed"),
                    }
                }
            }
            r = tokio::signal::ctrl_c() => { r?; break; }
            _ = term.recv() => break,
        }
    }
    tracing::info!(aei = %ae.aei, "AE stopped; its registration is kept for the next run");
    Ok(())
}

/// The next check of the credentials object, or never without `[credentials]`.
async fn tick(interval: &mut Option<tokio::time::Interval>) {
    match interval {
        Some(i) => {
            i.tick().await;
        }
        None => std::future::pending().await,
    }
}

/// Remote Kpsa rotation (docs/SECURITY.md): reads the credentials object over the current
/// association; a new KpsaID there comes with its Kpsa in `crse`, a JWE for this device. The new
/// key is tried (a RETRIEVE of the AE over a new association), kept (mode 0600), then used.
async fn rotate(
    cfg: &AeConfig,
    creds: &crate::ae_config::KpsaRotation,
    ae: &mut Registered,
    current: &str,
) -> anyhow::Result<Option<String>> {
    use m2m_security::e2e::jose::{self, ContentEnc, DecryptionKey, EcKeyPair};
    let r = send(
        &ae.client,
        &cfg.cse.url,
        Operation::Retrieve,
        &creds.object,
        &ae.aei,
        None,
        None,
    )
    .await;
    let r = expect(r, 2000, "reading the credentials object")?;
    let obj = &pc(&r)["dcfg:crds"];
    if obj["pur"].as_str() != Some("kpsa") {
        bail!("the credentials object is not a Kpsa's (pur \"kpsa\")");
    }
    let Some(crid) = obj["crid"].as_str() else {
        return Ok(None);
    };
    if crid == current {
        return Ok(None);
    }
    let crse = obj["crse"]
        .as_str()
        .context("the new KpsaID comes without crse")?;
    m2m_security::secure_environment::check_private_file(&creds.private_jwk)
        .map_err(anyhow::Error::msg)?;
    let jwk = zeroize::Zeroizing::new(
        std::fs::read_to_string(&creds.private_jwk)
            .with_context(|| format!("cannot read {}", creds.private_jwk.display()))?,
    );
    let pair = EcKeyPair::from_jwk(&jwk).map_err(|e| anyhow::anyhow!("{}", e.reason))?;
    let opened = jose::decrypt_compact(
        crse,
        DecryptionKey::EcdhEs(&pair),
        &[
            ContentEnc::A128Gcm,
            ContentEnc::A192Gcm,
            ContentEnc::A256Gcm,
        ],
    )
    .map_err(|e| anyhow::anyhow!("crse: {}", e.reason))?;
    let hex_key = std::str::from_utf8(&opened.payload).context("crse holds no key")?;
    let key = m2m_security::credentials::Secret::from_hex(hex_key.trim())
        .map_err(|_| anyhow::anyhow!("crse holds no key"))?;
    let client = cfg.sae.client(
        Some(crate::association::PskCredential::new(
            crid.to_owned(),
            zeroize::Zeroizing::new(key.expose().to_vec()),
        )),
        &cfg.tls_peer(),
        cfg.timeout(),
    )?;
    // Kept before it is tried: the CSE retires the old key at the first handshake with the new
    // one, so a crash after the trial must not leave the device with the old key only. Written
    // whole and renamed into place; put back as it was if the trial fails.
    let previous = std::fs::read(&creds.state)
        .ok()
        .map(zeroize::Zeroizing::new);
    let mut state = crate::ae_config::KpsaState {
        kpsa_id: crid.to_owned(),
        key: key.to_hex().to_string(),
    };
    let text = zeroize::Zeroizing::new(serde_json::to_vec(&state)?);
    zeroize::Zeroize::zeroize(&mut state.key);
    keep_state(&creds.state, &text)?;
    let ae_path = format!("{}/{}", cfg.cse.resource_name, cfg.resource_name);
    let tried = send(
        &client,
        &cfg.cse.url,
        Operation::Retrieve,
        &ae_path,
        &ae.aei,
        None,
        None,
    )
    .await;
    if let Err(e) = expect(tried, 2000, "associating with the new Kpsa") {
        match &previous {
            Some(p) => keep_state(&creds.state, p)?,
            None => std::fs::remove_file(&creds.state)
                .with_context(|| format!("cannot remove {}", creds.state.display()))?,
        }
        return Err(e);
    }
    ae.client = client;
    tracing::info!(target: "audit", kpsa_id = %crid, "credential changed: associating with the rotated Kpsa");
    Ok(Some(crid.to_owned()))
}

/// Writes the Kpsa state whole (mode 0600), synced, then renames it into place.
fn keep_state(path: &std::path::Path, bytes: &[u8]) -> anyhow::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    if tmp.exists() {
        std::fs::remove_file(&tmp).with_context(|| format!("cannot replace {}", tmp.display()))?;
    }
    crate::files::write_private(&tmp, bytes)?;
    std::fs::File::open(&tmp)
        .and_then(|f| f.sync_all())
        .with_context(|| format!("cannot sync {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))
}

/// The AE's `<pollingChannel>` `pch` (TS-0004 clause 7.4.21), made or kept from an earlier run,
/// and the receiver that long-polls its `pcu`.
async fn open_polling_channel(
    cfg: &AeConfig,
    ae: &Registered,
) -> anyhow::Result<NotificationReceiver> {
    let ae_path = format!("{}/{}", cfg.cse.resource_name, cfg.resource_name);
    let rsp = send(
        &ae.client,
        &cfg.cse.url,
        Operation::Create,
        &ae_path,
        &ae.aei,
        Some(ResourceType::PollingChannel),
        Some(json!({ "m2m:pch": { "rn": POLLING_CHANNEL_NAME } })),
    )
    .await;
    match rsp {
        // Kept from an earlier run of the same registration.
        Ok(r) if code(&r) == 4105 => {}
        other => {
            expect(other, 2001, "creating the pollingChannel")?;
        }
    }
    // A poll waits at the CSE for less than the client waits for its answer.
    let wait = cfg
        .timeout()
        .saturating_sub(Duration::from_secs(2))
        .clamp(Duration::from_secs(1), Duration::from_secs(30));
    Ok(notification_receiver::start_polling(
        notification_receiver::PollingChannel {
            client: ae.client.clone(),
            cse_url: cfg.cse.url.clone(),
            pcu: format!("{ae_path}/{POLLING_CHANNEL_NAME}/pcu"),
            aei: ae.aei.clone(),
            wait,
        },
    ))
}

/// The resourceName of the AE's `<pollingChannel>`.
const POLLING_CHANNEL_NAME: &str = "pch";

/// The next notification, or never when the AE has no receiver.
async fn next(
    rx: &mut Option<&mut tokio::sync::mpsc::Receiver<Notification>>,
) -> Option<Notification> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

fn note_line(note: &Notification) -> Value {
    json!({ "notification": {
        "received": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        "from": note.from,
        "verification": note.is_verification(),
        "sgn": note.sgn,
    }})
}

/// Opens the association and registers, or reuses the registration the state file names when
/// the CSE still holds it.
async fn associate_and_register(cfg: &AeConfig, poa: Option<&str>) -> anyhow::Result<Registered> {
    let psk = cfg
        .current_psk()
        .await
        .with_context(|| format!("security association ({})", cfg.sae.name()))?;
    let client = cfg.sae.client(psk, &cfg.tls_peer(), cfg.timeout())?;
    let ae_path = format!("{}/{}", cfg.cse.resource_name, cfg.resource_name);
    if let Some(state) = cfg
        .saved_state()
        .filter(|s| s.resource_name == cfg.resource_name && s.cse_url == cfg.cse.url)
    {
        let rsp = send(
            &client,
            &cfg.cse.url,
            Operation::Retrieve,
            &ae_path,
            &state.aei,
            None,
            None,
        )
        .await;
        match rsp {
            Ok(r) if code(&r) == 2000 && pc(&r)["m2m:ae"]["aei"] == state.aei.as_str() => {
                if let Some(poa) = poa {
                    // The receiver may listen on another port than last time.
                    let body = json!({ "m2m:ae": { "poa": [poa], "rr": true } });
                    let r = send(
                        &client,
                        &cfg.cse.url,
                        Operation::Update,
                        &ae_path,
                        &state.aei,
                        None,
                        Some(body),
                    )
                    .await;
                    expect(r, 2004, "updating the pointOfAccess")?;
                }
                tracing::info!(aei = %state.aei, "registration reused");
                return Ok(Registered {
                    client,
                    aei: state.aei,
                    reused: true,
                });
            }
            Ok(r) if code(&r) == 4004 => {
                tracing::info!(aei = %state.aei, "the CSE no longer holds the registration; registering again");
            }
            other => {
                expect(other, 2000, "checking the kept registration")?;
            }
        }
    }
    let mut ae =
        json!({ "rn": cfg.resource_name, "api": cfg.app_id, "rr": poa.is_some(), "srv": ["3"] });
    if let Some(poa) = poa {
        ae["poa"] = json!([poa]);
    }
    let rsp = send(
        &client,
        &cfg.cse.url,
        Operation::Create,
        &cfg.cse.resource_name,
        &cfg.originator,
        Some(ResourceType::Ae),
        Some(json!({ "m2m:ae": ae })),
    )
    .await;
    let rsp = expect(rsp, 2001, &format!("registration at {}", cfg.cse.url))?;
    let Some(aei) = pc(&rsp)["m2m:ae"]["aei"].as_str().map(str::to_owned) else {
        bail!("the registration's answer names no AE-ID");
    };
    cfg.save_state(&AeState {
        aei: aei.clone(),
        resource_name: cfg.resource_name.clone(),
        cse_url: cfg.cse.url.clone(),
    })?;
    tracing::info!(aei = %aei, "registered");
    Ok(Registered {
        client,
        aei,
        reused: false,
    })
}

/// Creates the configured resources below the AE; one that exists already (4105) is kept.
async fn create_resources(cfg: &AeConfig, ae: &Registered) -> anyhow::Result<Vec<Value>> {
    let mut done = Vec::new();
    for c in &cfg.create {
        let mut to = format!("{}/{}", cfg.cse.resource_name, cfg.resource_name);
        if !c.parent.is_empty() {
            to = format!("{to}/{}", c.parent);
        }
        let content = with_aei(&c.content, &ae.aei);
        let what = format!("creating {} under {to}", c.ty.root_name());
        let rsp = send(
            &ae.client,
            &cfg.cse.url,
            Operation::Create,
            &to,
            &ae.aei,
            Some(c.ty),
            Some(content),
        )
        .await;
        let outcome = match rsp {
            Ok(r) if code(&r) == 4105 => "exists".to_owned(),
            other => {
                let r = expect(other, 2001, &what)?;
                let ri = pc(&r)[c.ty.root_name()]["ri"]
                    .as_str()
                    .unwrap_or("")
                    .to_owned();
                format!("created {ri}")
            }
        };
        done.push(json!({ "parent": to, "ty": c.ty.code(), "outcome": outcome }));
    }
    Ok(done)
}

/// Subscribes to each configured target with the AE's own AE-ID as notification target; the
/// receiver (`own`) accepts the notifications of these subscriptions only.
async fn subscribe(
    cfg: &AeConfig,
    ae: &Registered,
    own: Option<&OwnSubscriptions>,
) -> anyhow::Result<Vec<Value>> {
    // SP-relative, so that a CSE other than the AE's registrar routes the notification here.
    let nu = if ae.aei.starts_with('/') {
        ae.aei.clone()
    } else {
        format!("{}/{}", cfg.cse.cse_id, ae.aei)
    };
    let mut done = Vec::new();
    for (i, s) in cfg.subscribe.iter().enumerate() {
        let rn =
            s.rn.clone()
                .unwrap_or_else(|| format!("{}-sub-{}", cfg.resource_name, i + 1));
        let body = json!({ "m2m:sub": { "rn": rn, "nu": [nu], "enc": { "net": s.net } } });
        let rsp = send(
            &ae.client,
            &cfg.cse.url,
            Operation::Create,
            &s.to,
            &ae.aei,
            Some(ResourceType::Subscription),
            Some(body),
        )
        .await;
        let (outcome, sub) = match rsp {
            Ok(r) if code(&r) == 4105 => {
                // Kept from an earlier run: its resource ID is needed to accept its notifications.
                let existing = send(
                    &ae.client,
                    &cfg.cse.url,
                    Operation::Retrieve,
                    &format!("{}/{rn}", s.to),
                    &ae.aei,
                    None,
                    None,
                )
                .await;
                (
                    "exists",
                    expect(existing, 2000, &format!("reading {}/{rn}", s.to))?,
                )
            }
            other => (
                "created",
                expect(other, 2001, &format!("subscribing to {}", s.to))?,
            ),
        };
        if let Some(own) = own {
            let ri = pc(&sub)["m2m:sub"]["ri"]
                .as_str()
                .context("the subscription has no ri")?;
            own.add(subscription_reference(&s.to, ri, &cfg.cse.cse_id));
        }
        done.push(json!({ "to": s.to, "rn": rn, "nu": nu, "outcome": outcome }));
    }
    Ok(done)
}

/// The content with every "{aei}" in its strings replaced by the AE-ID.
fn with_aei(v: &Value, aei: &str) -> Value {
    match v {
        Value::String(s) => Value::String(s.replace("{aei}", aei)),
        Value::Array(a) => Value::Array(a.iter().map(|x| with_aei(x, aei)).collect()),
        Value::Object(o) => Value::Object(
            o.iter()
                .map(|(k, x)| (k.clone(), with_aei(x, aei)))
                .collect(),
        ),
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ae_id_goes_into_content_strings() {
        let v = json!({ "m2m:acp": { "pv": { "acr": [{ "acor": ["{aei}", "/id-in/Cphone"], "acop": 63 }] } } });
        assert_eq!(
            with_aei(&v, "Clock-AE1"),
            json!({ "m2m:acp": { "pv": { "acr": [{ "acor": ["Clock-AE1", "/id-in/Cphone"], "acop": 63 }] } } })
        );
    }
}
