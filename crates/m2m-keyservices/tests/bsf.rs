//! The BSF end to end in one process: Ub over real HTTP, Zn over real mutual TLS; devices with
//! software USIMs; NAFs with certificates.

mod common;

use common::{cse_leaf, Pki};
use m2m_keyservices::bsf::{self, BootstrapError, BsfConfig, SoftwareUsim, ZnClient};
use m2m_security::certificates::LeafName;
use m2m_security::gba::key_derivation::{ks_naf, ua_tls_psk, NafId};
use std::path::Path;

const SP: &str = "m2m.example.com";
const BSF: &str = "bsf.operator.example.net";
const IMPI: &str = "001010000000001@ims.mnc001.mcc001.3gppnetwork.org";
const K: [u8; 16] = [0x46; 16];
const OPC: [u8; 16] = [0xcd; 16];

fn pki() -> Pki {
    Pki::new(
        "BSF test CA",
        Some(SP),
        &[BSF.into(), "mef.keys.example.net".into()],
        &[
            ("bsf", LeafName::Fqdn(BSF.into())),
            ("in", cse_leaf("/id-in", SP)),
            ("mn", cse_leaf("/id-mn", SP)),
            ("mef", LeafName::Fqdn("mef.keys.example.net".into())),
        ],
    )
}

fn config(p: &Pki, lifetime: u64) -> BsfConfig {
    let text = format!(
        "fqdn = \"{BSF}\"\nsp_fqdn = \"{SP}\"\nub_listen = \"127.0.0.1:0\"\nzn_listen = \"127.0.0.1:0\"\n\
         certificate = \"bsf.pem\"\nprivate_key = \"bsf.key\"\ntrusted_ca = \"ca.pem\"\n\
         lifetime_seconds = {lifetime}\n[[nafs]]\nid = \"/id-in\"\n[[nafs]]\nid = \"mef.keys.example.net\"\n"
    );
    let path = p.path("bsf.toml");
    std::fs::write(&path, text).unwrap();
    BsfConfig::load(&path).unwrap()
}

/// A BSF with one subscriber (AE-ID CLock), and that subscriber's USIM.
async fn start(p: &Pki, lifetime: u64) -> (bsf::RunningBsf, SoftwareUsim) {
    let cfg = config(p, lifetime);
    bsf::open_store(&cfg)
        .unwrap()
        .add_subscriber(IMPI, Some("CLock"), &K, &OPC, [0x80, 0x00])
        .unwrap();
    let b = bsf::Bsf::new(cfg).unwrap();
    let running = b.start().await.unwrap();
    let usim = SoftwareUsim::create(&p.path("usim.json"), IMPI, &K, &OPC).unwrap();
    (running, usim)
}

fn ub(b: &bsf::RunningBsf) -> String {
    format!("http://{}", b.ub_addr)
}

fn zn(p: &Pki, b: &bsf::RunningBsf, leaf: &str) -> ZnClient {
    let ctx = ZnClient::context(
        &p.path(&format!("{leaf}.pem")),
        &p.path(&format!("{leaf}.key")),
        &p.path("ca.pem"),
    )
    .unwrap();
    ZnClient::new(&format!("https://{}", b.zn_addr), BSF, ctx)
}

fn naf(fqdn: &str) -> NafId {
    NafId {
        fqdn: fqdn.into(),
        ua_protocol: ua_tls_psk(0x00AE),
    }
}

#[tokio::test]
async fn a_device_bootstraps_and_a_known_naf_gets_the_same_key() {
    let p = pki();
    let (b, mut usim) = start(&p, 3600).await;
    let boot = bsf::bootstrap(&ub(&b), BSF, &mut usim).await.unwrap();
    assert!(boot.b_tid.ends_with(&format!("@{BSF}")), "{}", boot.b_tid);
    assert!(boot.is_fresh());
    // The USIM's SQN was saved.
    assert_eq!(
        SoftwareUsim::load(&p.path("usim.json"))
            .unwrap()
            .sqn_highest,
        1
    );
    let naf_id = naf("id-in.m2m.example.com");
    let key = zn(&p, &b, "in")
        .naf_key(&boot.b_tid, &naf_id)
        .await
        .unwrap();
    assert_eq!(&key.ks_naf[..], &boot.ks_naf(&naf_id).unwrap()[..]);
    assert_eq!(key.impi, IMPI);
    assert_eq!(key.ae_id.as_deref(), Some("CLock"));
    // The key is the one of TS 33.220 Annex B over this run's Ks and RAND.
    assert_eq!(
        &key.ks_naf[..],
        &ks_naf(&boot.ks, &boot.rand, IMPI, &naf_id).unwrap()[..]
    );
    // Another protocol identifier gives another key.
    let other = NafId {
        ua_protocol: ua_tls_psk(0xC0A8),
        ..naf_id.clone()
    };
    let key2 = zn(&p, &b, "in").naf_key(&boot.b_tid, &other).await.unwrap();
    assert_ne!(&key2.ks_naf[..], &key.ks_naf[..]);
    // The MEF, an FQDN NAF, gets its own key.
    let mef = naf("mef.keys.example.net");
    let k3 = zn(&p, &b, "mef").naf_key(&boot.b_tid, &mef).await.unwrap();
    assert_eq!(&k3.ks_naf[..], &boot.ks_naf(&mef).unwrap()[..]);
    // A second bootstrapping gives a new B-TID and a new SQN, and replaces the first key.
    let again = bsf::bootstrap(&ub(&b), BSF, &mut usim).await.unwrap();
    assert_ne!(again.b_tid, boot.b_tid);
    assert_eq!(usim.sqn_highest, 2);
    let err = zn(&p, &b, "in")
        .naf_key(&boot.b_tid, &naf_id)
        .await
        .unwrap_err();
    assert!(err.contains("404"), "{err}");
    zn(&p, &b, "in")
        .naf_key(&again.b_tid, &naf_id)
        .await
        .unwrap();
}

#[tokio::test]
async fn nafs_get_keys_only_for_themselves_and_only_live_b_tids() {
    let p = pki();
    let (b, mut usim) = start(&p, 3600).await;
    let boot = bsf::bootstrap(&ub(&b), BSF, &mut usim).await.unwrap();
    // A CSE the BSF does not know, with a valid certificate of the same CA.
    let err = zn(&p, &b, "mn")
        .naf_key(&boot.b_tid, &naf("id-mn.id-in.m2m.example.com"))
        .await
        .unwrap_err();
    assert!(err.contains("403") && err.contains("not a NAF"), "{err}");
    // A known NAF asking for another NAF's key.
    let err = zn(&p, &b, "in")
        .naf_key(&boot.b_tid, &naf("mef.keys.example.net"))
        .await
        .unwrap_err();
    assert!(err.contains("403"), "{err}");
    // A B-TID nobody bootstrapped, and one of another BSF.
    for b_tid in [
        "AAAAAAAAAAAAAAAAAAAAAA==@bsf.operator.example.net".to_owned(),
        boot.b_tid.replace(BSF, "bsf.other.example.net"),
    ] {
        let err = zn(&p, &b, "in")
            .naf_key(&b_tid, &naf("id-in.m2m.example.com"))
            .await
            .unwrap_err();
        assert!(err.contains("404"), "{err}");
    }
}

#[tokio::test]
async fn an_expired_b_tid_gives_no_key() {
    let p = pki();
    let (b, mut usim) = start(&p, 1).await;
    let boot = bsf::bootstrap(&ub(&b), BSF, &mut usim).await.unwrap();
    assert!(!boot.is_fresh(), "a 1 s key is not fresh enough to use");
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    let err = zn(&p, &b, "in")
        .naf_key(&boot.b_tid, &naf("id-in.m2m.example.com"))
        .await
        .unwrap_err();
    assert!(err.contains("404"), "{err}");
}

#[tokio::test]
async fn a_wrong_k_an_unknown_impi_and_a_stale_usim() {
    let p = pki();
    let (b, _) = start(&p, 3600).await;
    // A USIM with another K: its check of AUTN fails (not the home network), and the BSF ends
    // the run when the device says so.
    let mut wrong = SoftwareUsim::create(&p.path("wrong.json"), IMPI, &[0x47; 16], &OPC).unwrap();
    let err = bsf::bootstrap(&ub(&b), BSF, &mut wrong).await.unwrap_err();
    assert!(matches!(err, BootstrapError::NotTheNetwork), "{err}");
    // An IMPI the BSF has no subscriber for.
    let mut nobody =
        SoftwareUsim::create(&p.path("nobody.json"), "999@ims.example", &K, &OPC).unwrap();
    let err = bsf::bootstrap(&ub(&b), BSF, &mut nobody).await.unwrap_err();
    assert!(
        matches!(err, BootstrapError::Refused { status: 403, .. }),
        "{err}"
    );
    // A USIM that has seen SQNs far above the BSF's (a replayed or stale AUTN for it): it asks
    // for resynchronisation with AUTS, the BSF moves on, and the run succeeds above it.
    let mut ahead = SoftwareUsim::create(&p.path("ahead.json"), IMPI, &K, &OPC).unwrap();
    ahead.sqn_highest = 5000;
    ahead.save().unwrap();
    let boot = bsf::bootstrap(&ub(&b), BSF, &mut ahead).await.unwrap();
    assert!(ahead.sqn_highest > 5000, "{}", ahead.sqn_highest);
    assert!(boot.is_fresh());
}

/// An attacker who recorded a whole run replays both requests: the challenge it answers is gone,
/// so the BSF challenges afresh and issues no B-TID; a device fed a recorded challenge refuses it.
#[tokio::test]
async fn replayed_answers_and_challenges_are_refused() {
    use m2m_security::gba::bootstrapping::{self, UeAnswer};
    let p = pki();
    let (b, usim) = start(&p, 3600).await;
    let url = ub(&b);
    let client = reqwest_like::Client::new(&url);
    let first = client
        .get(&format!(
            "Digest username=\"{IMPI}\", realm=\"{BSF}\", nonce=\"\", uri=\"/\", response=\"\""
        ))
        .await;
    assert_eq!(first.0, 401);
    let www = first.1.unwrap();
    let mut highest = 0;
    let req = bootstrapping::Request {
        method: "GET",
        uri: "/",
        body: b"",
    };
    let UeAnswer::Authenticated { authorization, .. } =
        bootstrapping::answer(&usim.milenage(), &mut highest, IMPI, &www, req, "c0ffee").unwrap()
    else {
        panic!("the fresh challenge is accepted");
    };
    let ok = client.get(&authorization).await;
    assert_eq!(ok.0, 200);
    let replay = client.get(&authorization).await;
    assert_eq!(replay.0, 401, "a replayed answer bootstraps nothing");
    // The device has accepted this SQN: the same challenge again is refused (resynchronisation).
    let again =
        bootstrapping::answer(&usim.milenage(), &mut highest, IMPI, &www, req, "c0ffee").unwrap();
    assert!(matches!(again, UeAnswer::Resynchronising { .. }));
}

/// A tiny HTTP client for the replay test: the raw requests an eavesdropper would resend.
mod reqwest_like {
    use http_body_util::{BodyExt, Empty};
    use hyper_util::rt::TokioIo;

    pub struct Client {
        addr: String,
    }

    impl Client {
        pub fn new(url: &str) -> Client {
            Client {
                addr: url.trim_start_matches("http://").to_owned(),
            }
        }

        /// `GET /` with this Authorization: the status and the WWW-Authenticate.
        pub async fn get(&self, authorization: &str) -> (u16, Option<String>) {
            let tcp = tokio::net::TcpStream::connect(&self.addr).await.unwrap();
            let (mut s, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
                .await
                .unwrap();
            tokio::spawn(conn);
            let req = hyper::Request::get("/")
                .header("host", "bsf")
                .header("authorization", authorization)
                .body(Empty::<bytes::Bytes>::new())
                .unwrap();
            let resp = s.send_request(req).await.unwrap();
            let www = resp
                .headers()
                .get("www-authenticate")
                .map(|v| v.to_str().unwrap().to_owned());
            let status = resp.status().as_u16();
            let _ = resp.into_body().collect().await;
            (status, www)
        }
    }
}

#[tokio::test]
async fn the_store_holds_no_key_in_clear() {
    let p = pki();
    let (b, mut usim) = start(&p, 3600).await;
    let boot = bsf::bootstrap(&ub(&b), BSF, &mut usim).await.unwrap();
    drop(b);
    let dir = p.path("bsf-data");
    let mut all = Vec::new();
    for e in std::fs::read_dir(&dir).unwrap() {
        all.extend(std::fs::read(e.unwrap().path()).unwrap());
    }
    for secret in [&K[..], &OPC[..], &boot.ks.expose()[..]] {
        assert!(
            !all.windows(secret.len()).any(|w| w == secret),
            "a key in clear in the store"
        );
    }
    assert_private(&dir);
}

fn assert_private(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(dir).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700);
}

/// Asking for a challenge spends no SQN: whoever names the IMPI gets the live challenge again, so
/// an attacker cannot push the subscriber's SQN out of the USIM's window that way; and a BSF
/// that is far ahead of the USIM anyway (its store restored, say) comes back to it through the
/// USIM's AUTS.
#[tokio::test]
async fn naming_an_impi_spends_no_sqn_and_a_bsf_far_ahead_recovers() {
    let p = pki();
    let (b, mut usim) = start(&p, 3600).await;
    let client = reqwest_like::Client::new(&ub(&b));
    let initial = format!(
        "Digest username=\"{IMPI}\", realm=\"{BSF}\", nonce=\"\", uri=\"/\", response=\"\""
    );
    let first = client.get(&initial).await;
    for _ in 0..20 {
        let again = client.get(&initial).await;
        assert_eq!(again, first, "the same challenge, no new SQN");
    }
    // The device answers that very challenge: SQN 1.
    bsf::bootstrap(&ub(&b), BSF, &mut usim).await.unwrap();
    assert_eq!(usim.sqn_highest, 1);
    // The BSF's counter far beyond the USIM's window (2^28 ahead).
    let db = rusqlite::Connection::open(p.path("bsf-data").join("bsf.sqlite")).unwrap();
    db.execute("UPDATE subscribers SET next_sqn = 400000000", [])
        .unwrap();
    let boot = bsf::bootstrap(&ub(&b), BSF, &mut usim).await.unwrap();
    assert_eq!(usim.sqn_highest, 2, "resynchronised down to the USIM's SQN");
    assert!(boot.is_fresh());
}
