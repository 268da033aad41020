//! Trust anchor administration on the managed side (TS-0003 clause 8.3.9.9.7): the AE reads the
//! trustAnchorCred objects (`dcfg:tac`) below its `<node>`, takes each CA certificate it holds
//! already, fetches each other one by HTTPS GET (trusting the anchors it has), keeps a
//! certificate only if it is a CA whose SHA-256 fingerprint is the one the object names, and
//! switches to the new set once a handshake with its CSE succeeds under it: an administrator
//! cannot lock the device out by removing the anchor its CSE still uses, and after the switch a
//! certificate under a removed anchor opens nothing.

use crate::ae::Registered;
use crate::ae_config::{AeConfig, TrustAnchors};
use crate::association::{SaeMode, TlsPeer};
use crate::originator::{expect, pc};
use anyhow::{anyhow, bail, Context};
use m2m_core::primitive::ResultContent;
use m2m_core::{Operation, Request};
use openssl::hash::MessageDigest;
use openssl::x509::X509;
use std::collections::BTreeSet;
use std::path::Path;

/// A trustAnchorCred as the AE read it: the fingerprint it names and where the CA is.
struct Wanted {
    fingerprint: [u8; 32],
    uri: String,
}

/// Brings the AE's trust anchors in line with its trustAnchorCred objects; the fingerprints of
/// the new set when it changed. No object at all changes nothing (the AE never trusts nobody).
pub async fn refresh(
    cfg: &AeConfig,
    anchors: &TrustAnchors,
    ae: &mut Registered,
) -> anyhow::Result<Option<Vec<String>>> {
    let wanted = administered(cfg, anchors, ae).await?;
    if wanted.is_empty() {
        return Ok(None);
    }
    let peer = cfg.tls_peer();
    let current_file = peer
        .trusted_ca
        .clone()
        .context("no trusted CA to start from")?;
    let current = read_certificates(&current_file)?;
    let have: BTreeSet<[u8; 32]> = current
        .iter()
        .map(fingerprint_of)
        .collect::<Result<_, _>>()?;
    let want: BTreeSet<[u8; 32]> = wanted.iter().map(|w| w.fingerprint).collect();
    if have == want {
        return Ok(None);
    }
    // Local copies first: the anchors in use and the configured ones.
    let mut local = current;
    if let Some(configured) = &cfg.cse.trusted_ca {
        local.extend(read_certificates(configured)?);
    }
    let mut chosen = Vec::new();
    for w in &wanted {
        let copy = local
            .iter()
            .find(|c| fingerprint_of(c).is_ok_and(|f| f == w.fingerprint))
            .cloned();
        let cert = match copy {
            Some(c) => c,
            None => fetch(cfg, &peer, w)
                .await
                .with_context(|| format!("trust anchor {}", hex::encode(w.fingerprint)))?,
        };
        chosen.push(cert);
    }
    switch(cfg, anchors, ae, &peer, &chosen).await?;
    Ok(Some(want.iter().map(hex::encode).collect()))
}

/// The trustAnchorCred children of the AE's `<node>` (one RETRIEVE, rcn 8).
async fn administered(
    cfg: &AeConfig,
    anchors: &TrustAnchors,
    ae: &Registered,
) -> anyhow::Result<Vec<Wanted>> {
    let mut req = Request::new(
        Operation::Retrieve,
        anchors.node.as_str(),
        Some(ae.aei.clone()),
        m2m_client::next_request_id(),
    );
    req.rcn = Some(ResultContent::ChildResources);
    let r = expect(
        ae.client.send(&cfg.cse.url, &req).await,
        2000,
        "reading the node's trust anchors",
    )?;
    let objects = pc(&r)["m2m:nod"]["dcfg:tac"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    objects
        .iter()
        .map(|o| {
            let cfp = o["cfp"].as_str().unwrap_or_default();
            let fingerprint = m2m_core::mgmt_obj::fingerprint(cfp)
                .ok_or_else(|| anyhow!("a trustAnchorCred with a malformed cfp"))?;
            let uri = o["uri"].as_str().unwrap_or_default().to_owned();
            Ok(Wanted { fingerprint, uri })
        })
        .collect()
}

/// The CA certificate of `w`, fetched by HTTPS GET from its URI, the server checked against the
/// anchors the AE has now; refused unless it is a CA with the fingerprint `w` names.
async fn fetch(cfg: &AeConfig, peer: &TlsPeer, w: &Wanted) -> anyhow::Result<X509> {
    if !w
        .uri
        .get(..8)
        .is_some_and(|s| s.eq_ignore_ascii_case("https://"))
    {
        bail!("its uri is not https");
    }
    let fetching = TlsPeer {
        trusted_ca: peer.trusted_ca.clone(),
        server_name: None,
        crl: peer.crl.clone(),
        cse_id: None,
    };
    let client = SaeMode::None.client(None, &fetching, cfg.timeout())?;
    let body = client
        .fetch(&w.uri)
        .await
        .map_err(|e| anyhow!("HTTPS GET {}: {}", w.uri, e.dbg))?;
    let certificates = if body.starts_with(b"-----BEGIN") {
        X509::stack_from_pem(&body).unwrap_or_default()
    } else {
        X509::from_der(&body).map(|c| vec![c]).unwrap_or_default()
    };
    let cert = certificates
        .into_iter()
        .find(|c| fingerprint_of(c).is_ok_and(|f| f == w.fingerprint))
        .ok_or_else(|| anyhow!("{} serves no certificate with that fingerprint", w.uri))?;
    if !is_ca(&cert)? {
        bail!("{} serves a certificate that is not a CA", w.uri);
    }
    Ok(cert)
}

/// Writes the new set beside the file, tries it (a handshake with the CSE and a RETRIEVE of
/// the AE), then renames it into place and uses it; left as it was when the trial fails.
async fn switch(
    cfg: &AeConfig,
    anchors: &TrustAnchors,
    ae: &mut Registered,
    peer: &TlsPeer,
    chosen: &[X509],
) -> anyhow::Result<()> {
    let mut pem = Vec::new();
    for c in chosen {
        pem.extend(c.to_pem().context("PEM")?);
    }
    // A file of its own beside the anchors (created anew, never through a link), renamed into
    // place once the trial passes; removed when it fails.
    let dir = match anchors.file.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let mut tmp = tempfile::Builder::new()
        .prefix(".anchors-")
        .suffix(".pem")
        .tempfile_in(dir)
        .with_context(|| format!("cannot write in {}", dir.display()))?;
    std::io::Write::write_all(&mut tmp, &pem).context("cannot write the new anchors")?;
    tmp.as_file()
        .sync_all()
        .context("cannot write the new anchors")?;
    let trial = TlsPeer {
        trusted_ca: Some(tmp.path().to_owned()),
        ..peer.clone()
    };
    let tried = async {
        let psk = cfg.current_psk().await?;
        let client = cfg.sae.client(psk, &trial, cfg.timeout())?;
        let ae_path = format!("{}/{}", cfg.cse.resource_name, cfg.resource_name);
        let r = crate::originator::send(
            &client,
            &cfg.cse.url,
            Operation::Retrieve,
            &ae_path,
            &ae.aei,
            None,
            None,
        )
        .await;
        expect(
            r,
            2000,
            "a handshake with the CSE under the new trust anchors",
        )?;
        Ok::<_, anyhow::Error>(client)
    }
    .await;
    // (a failed trial drops `tmp`, which removes it)
    let client = tried?;
    tmp.persist(&anchors.file)
        .map_err(|e| anyhow!("cannot write {}: {}", anchors.file.display(), e.error))?;
    // The rename itself made durable, and a mark that the AE follows administered anchors from
    // now on: if the file is ever lost it trusts nothing rather than its first CA again.
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    std::fs::write(anchors.marker(), b"administered trust anchors in use\n")
        .with_context(|| format!("cannot write {}", anchors.marker().display()))?;
    ae.client = client;
    tracing::info!(target: "audit", anchors = chosen.len(), "credential changed: trust anchors replaced");
    Ok(())
}

fn read_certificates(path: &Path) -> anyhow::Result<Vec<X509>> {
    let pem = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    X509::stack_from_pem(&pem).with_context(|| format!("{}: not PEM certificates", path.display()))
}

/// The SHA-256 fingerprint of a certificate (of its DER).
fn fingerprint_of(cert: &X509) -> anyhow::Result<[u8; 32]> {
    let d = cert.digest(MessageDigest::sha256()).context("digest")?;
    <[u8; 32]>::try_from(&d[..]).map_err(|_| anyhow!("digest"))
}

/// Whether the certificate is a CA: basicConstraints cA TRUE (read from its DER), and
/// keyCertSign when it has a keyUsage.
fn is_ca(cert: &X509) -> anyhow::Result<bool> {
    let der = cert.to_der().context("DER")?;
    let signs_certificates = cert
        .key_usage()
        .is_none_or(|ku| ku.contains(openssl::x509::X509KeyUsage::KEY_CERT_SIGN));
    Ok(m2m_security::certificates::is_ca_certificate(&der) && signs_certificates)
}
