//! GBA-based security association establishment (TS-0003 clause 8.3.2.3 with 3GPP TS 33.220 /
//! 33.222), every party a process: `m2m bsf` (the operator's BSF and HSS), a CSE that is its NAF,
//! devices with software USIMs (`m2m request`), and `openssl s_client` as a device we did not
//! write, keyed with a Ks_NAF that Python computes.

mod common;

use common::{CseProcess, Pki, ServiceProcess};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

const BSF_FQDN: &str = "bsf.operator.example.net";
const MEF_FQDN: &str = "mef.operator.example.net";
const MAF_FQDN: &str = "maf.operator.example.net";
const IMPI: &str = "001010000000001@ims.mnc001.mcc001.3gppnetwork.org";
const IN_NAF: &str = "id-in.m2m.example.com";
const REGISTRATION: &str = r#"{"m2m:ae":{"rn":"lock","api":"Nlock","rr":false,"srv":["3"]}}"#;

struct Setup {
    pki: Pki,
}

impl Setup {
    /// A CA for the SP's CSEs and the operator's BSF, and their certificates.
    fn new() -> Setup {
        let pki = Pki::temp_ca_permitting_dns("operator.example.net");
        pki.issue(&["--kind", "mef", "--id", BSF_FQDN], "bsf");
        pki.issue(&["--kind", "mef", "--id", MEF_FQDN], "mef");
        pki.issue(&["--kind", "maf", "--id", MAF_FQDN], "maf");
        for id in ["/id-in", "/id-mn"] {
            pki.issue(&["--kind", "cse", "--id", id], &id[1..]);
        }
        Setup { pki }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.pki.dir().join(name)
    }

    fn bsf_config(&self, lifetime: u64) -> String {
        format!(
            "fqdn = \"{BSF_FQDN}\"\nsp_fqdn = \"m2m.example.com\"\nub_listen = \"127.0.0.1:0\"\n\
             zn_listen = \"127.0.0.1:0\"\ncertificate = {:?}\nprivate_key = {:?}\ntrusted_ca = {:?}\n\
             storage = {:?}\nstorage_key = {:?}\nlifetime_seconds = {lifetime}\n[[nafs]]\nid = \"/id-in\"\n\
             [[nafs]]\nid = \"{MEF_FQDN}\"\n",
            self.path("bsf.pem").display().to_string(),
            self.path("bsf.key").display().to_string(),
            self.pki.ca_pem().display().to_string(),
            self.path("bsf-data").display().to_string(),
            self.path("bsf-storage.key").display().to_string(),
        )
    }

    /// `m2m bsf subscriber-add`: the subscriber in the BSF's store, its USIM file for the device.
    fn add_subscriber(&self, impi: &str, ae_id: &str, usim: &str) -> PathBuf {
        let config = self.path("bsf.toml");
        let out = m2m(&[
            "bsf",
            "subscriber-add",
            "--config",
            config.to_str().unwrap(),
            "--impi",
            impi,
            "--ae-id",
            ae_id,
            "--usim-out",
            self.path(usim).to_str().unwrap(),
        ]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        self.path(usim)
    }

    /// The BSF with one subscriber (the lock, AE-ID CLock) and its Ub URL.
    fn start_bsf(&self, lifetime: u64) -> (ServiceProcess, String, PathBuf) {
        common::write_private(&self.path("bsf.toml"), &self.bsf_config(lifetime));
        let usim = self.add_subscriber(IMPI, "CLock", "lock.usim");
        let bsf = ServiceProcess::start("bsf", self.pki.dir(), &self.bsf_config(lifetime));
        let ub = bsf
            .preamble
            .iter()
            .find_map(|l| l.strip_prefix("m2m-bsf ub "))
            .expect("the Ub line")
            .to_owned();
        (bsf, ub, usim)
    }

    /// A CSE that is a NAF of the BSF (TLS and DTLS listeners, its certificate for Zn).
    fn start_cse(&self, cse: &str, zn_url: &str) -> CseProcess {
        CseProcess::start_temp(&format!(
            "[cse]\ncse_id = \"/{cse}\"\n[tls]\nlisten = \"127.0.0.1:0\"\ndtls_listen = \"127.0.0.1:0\"\n\
             certificate = \"{}\"\nprivate_key = \"{}\"\ntrusted_ca = \"{}\"\n\
             [gba]\nzn_url = \"{zn_url}\"\nbsf_fqdn = \"{BSF_FQDN}\"\n",
            self.path(&format!("{cse}.pem")).display(),
            self.path(&format!("{cse}.key")).display(),
            self.pki.ca_pem().display(),
        ))
    }
}

impl Setup {
    /// `m2m mef` accepting GBA-authenticated enrolments (a NAF of the BSF at `zn_url`) and
    /// serving Km to the MAF.
    fn start_mef(&self, zn_url: &str) -> ServiceProcess {
        ServiceProcess::start(
            "mef",
            self.pki.dir(),
            &format!(
                "fqdn = \"{MEF_FQDN}\"\nsp_fqdn = \"m2m.example.com\"\nlisten = \"127.0.0.1:0\"\n\
                 certificate = {:?}\nprivate_key = {:?}\ntrusted_ca = {:?}\nstorage = {:?}\n\
                 storage_key = {:?}\n[gba]\nzn_url = \"{zn_url}\"\nbsf_fqdn = \"{BSF_FQDN}\"\n\
                 [[targets]]\nid = \"{MAF_FQDN}\"\nsuids = [11]\n",
                self.path("mef.pem").display().to_string(),
                self.path("mef.key").display().to_string(),
                self.pki.ca_pem().display().to_string(),
                self.path("mef-enrolments.json").display().to_string(),
                self.path("mef-storage.key").display().to_string(),
            ),
        )
    }
}

fn m2m(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_m2m"))
        .args(args)
        .output()
        .expect("run m2m")
}

/// `m2m request` over GBA-PSK: a CREATE of the lock's AE, or a RETRIEVE of `to`.
fn gba_request(url: &str, usim: &Path, ub: &str, naf: &str, op: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_m2m"))
        .args(["request", "--url", url, "--json", "--timeout", "5"])
        .args(op)
        .args(["--gba-usim", usim.to_str().unwrap(), "--gba-ub-url", ub])
        .args(["--gba-bsf-fqdn", BSF_FQDN, "--gba-naf-fqdn", naf])
        .output()
        .expect("run m2m request")
}

fn register_lock(url: &str, usim: &Path, ub: &str) -> Output {
    gba_request(
        url,
        usim,
        ub,
        IN_NAF,
        &[
            "-X",
            "create",
            "--to",
            "cse-in",
            "--from",
            "CLock",
            "--ty",
            "2",
            "--body",
            REGISTRATION,
        ],
    )
}

fn json_of(out: &Output) -> Value {
    let stdout = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(stdout.trim()).unwrap_or_else(|_| {
        panic!(
            "not JSON: {stdout}\nstderr: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// The key the device keeps in its USIM file: B-TID, Ks, RAND.
fn kept_key(usim: &Path) -> (String, String, String) {
    let v: Value = serde_json::from_str(&std::fs::read_to_string(usim).unwrap()).unwrap();
    let b = &v["bootstrapped"];
    (
        b["bTid"].as_str().unwrap().to_owned(),
        b["ks"].as_str().unwrap().to_owned(),
        b["rand"].as_str().unwrap().to_owned(),
    )
}

/// Ks_NAF = HMAC-SHA-256(Ks, 0x01 || "gba-me" || L || RAND || L || IMPI || L || NAF_Id || L)
/// (TS 33.220 Annex B), NAF_Id = FQDN || (0x01, 0x00, 0x01, suite): Python's hmac, not ours.
fn python_ks_naf(ks_hex: &str, rand_hex: &str, impi: &str, naf: &str, suite: u16) -> String {
    let script = format!(
        r#"
import hmac, hashlib, unicodedata
def p(b): return b + len(b).to_bytes(2, "big")
ks = bytes.fromhex("{ks_hex}")
naf_id = unicodedata.normalize("NFKC", "{naf}").encode() + bytes([1, 0, 1]) + ({suite}).to_bytes(2, "big")
s = b"\x01" + p(b"gba-me") + p(bytes.fromhex("{rand_hex}")) + p(unicodedata.normalize("NFKC", "{impi}").encode()) + p(naf_id)
print(hmac.new(ks, s, hashlib.sha256).hexdigest())
"#
    );
    let out = Command::new("python3")
        .args(["-c", &script])
        .output()
        .expect("python3 (installed by .ci/run)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// `openssl s_client` over TLS-PSK with this identity and key, sending one HTTP request: the
/// lock's registration (CREATE of its AE); its stdout.
fn s_client(port: u16, identity: &str, key_hex: &str) -> String {
    use std::io::Write;
    let mut child = Command::new("openssl")
        .args([
            "s_client",
            "-connect",
            &format!("127.0.0.1:{port}"),
            "-tls1_2",
        ])
        .args(["-cipher", "PSK-AES128-CBC-SHA256", "-psk", key_hex])
        .args(["-psk_identity", identity, "-quiet", "-ign_eof"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("openssl");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(
            format!(
                "POST /cse-in HTTP/1.1\r\nHost: x\r\nX-M2M-Origin: CLock\r\nX-M2M-RI: 1\r\n\
                 X-M2M-RVI: 3\r\nAccept: application/json\r\nContent-Type: application/json;ty=2\r\n\
                 Content-Length: {}\r\nConnection: close\r\n\r\n{REGISTRATION}",
                REGISTRATION.len()
            )
            .as_bytes(),
        )
        .unwrap();
    let out = child.wait_with_output().unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn a_device_bootstraps_associates_by_gba_psk_and_registers() {
    let setup = Setup::new();
    let (bsf, ub, usim) = setup.start_bsf(3600);
    let cse = setup.start_cse("id-in", bsf.url());

    let out = register_lock(cse.https_url(), &usim, &ub);
    let rsp = json_of(&out);
    assert_eq!(rsp["rsc"], json!(2001), "{rsp}\n{}", cse.stderr());
    // The association is bound to the AE-ID the BSF's subscriber record names, and named by the
    // subscriber (Credential-ID 97-IMPI), never by the B-TID.
    assert_eq!(rsp["pc"]["m2m:ae"]["aei"], json!("CLock"), "{rsp}");
    assert!(
        cse.logged(&format!("97-{IMPI} -> //m2m.example.com/id-in/CLock")),
        "{}",
        cse.stderr()
    );
    let (b_tid, _, _) = kept_key(&usim);
    assert!(b_tid.ends_with(&format!("@{BSF_FQDN}")), "{b_tid}");
    assert!(bsf.logged("NAF key delivered"), "{}", bsf.stderr());

    // The next request uses the key the USIM file keeps: no second bootstrapping.
    let out = gba_request(
        cse.https_url(),
        &usim,
        &ub,
        IN_NAF,
        &["--to", "cse-in/lock", "--from", "CLock"],
    );
    assert_eq!(json_of(&out)["rsc"], json!(2000));
    assert_eq!(
        bsf.stderr().matches("bootstrapped").count(),
        1,
        "{}",
        bsf.stderr()
    );

    // The same key material over DTLS: Ks_NAF for the CCM_8 suite (another NAF_Id).
    let out = gba_request(
        &format!("coaps://127.0.0.1:{}", cse.coaps_port()),
        &usim,
        &ub,
        IN_NAF,
        &["--to", "cse-in/lock", "--from", "CLock"],
    );
    assert_eq!(json_of(&out)["rsc"], json!(2000), "{}", cse.stderr());

    // Four handshakes, four Ks_NAF fetches: over one Zn connection the CSE keeps open.
    let zn_associations = bsf
        .stderr()
        .lines()
        .filter(|l| l.contains("association established") && l.contains("bsf-zn"))
        .count();
    assert_eq!(zn_associations, 1, "{}", bsf.stderr());
    // Bound: the B-TID's association cannot act as another AE (4106).
    let out = gba_request(
        cse.https_url(),
        &usim,
        &ub,
        IN_NAF,
        &["--to", "cse-in", "--from", "CAdmin"],
    );
    assert_eq!(json_of(&out)["rsc"], json!(4106));
    // The USIM's secrets never reach the CSE's or the BSF's log.
    let file: Value = serde_json::from_str(&std::fs::read_to_string(&usim).unwrap()).unwrap();
    common::assert_no_secret(
        &[cse.stderr(), bsf.stderr()],
        &[
            file["k"].as_str().unwrap(),
            file["opc"].as_str().unwrap(),
            file["bootstrapped"]["ks"].as_str().unwrap(),
        ],
    );
}

/// `openssl s_client` (a TLS stack we did not write) gets in with the B-TID and a Ks_NAF Python
/// derived from the device's Ks; with another key, or the key of the other suite, it does not.
#[test]
fn openssl_gets_in_with_the_ks_naf_python_computes_and_not_otherwise() {
    let setup = Setup::new();
    let (bsf, ub, usim) = setup.start_bsf(3600);
    let cse = setup.start_cse("id-in", bsf.url());
    let out = m2m(&[
        "bsf",
        "bootstrap",
        "--usim",
        usim.to_str().unwrap(),
        "--ub-url",
        &ub,
        "--bsf-fqdn",
        BSF_FQDN,
        "--ks-naf-for",
        IN_NAF,
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (b_tid, ks, rand) = kept_key(&usim);
    let printed = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(printed.contains(&b_tid));

    let key = python_ks_naf(&ks, &rand, IMPI, IN_NAF, 0x00AE);
    // What `m2m bsf bootstrap --ks-naf-for` prints is Python's Ks_NAF for each suite.
    assert!(
        printed.contains(&format!("Ks_NAF PSK-AES128-CBC-SHA256 {key}")),
        "{printed}"
    );
    let ccm8 = python_ks_naf(&ks, &rand, IMPI, IN_NAF, 0xC0A8);
    assert!(
        printed.contains(&format!("Ks_NAF PSK-AES128-CCM8 {ccm8}")),
        "{printed}"
    );
    let answer = s_client(cse.https_port(), &b_tid, &key);
    assert!(
        answer.starts_with("HTTP/1.1 201"),
        "{answer}\n{}",
        cse.stderr()
    );
    assert!(answer.contains(r#""aei":"CLock""#), "{answer}");

    for wrong in [
        python_ks_naf(&ks, &rand, IMPI, IN_NAF, 0xC0A8),
        python_ks_naf(&ks, &rand, IMPI, "id-mn.id-in.m2m.example.com", 0x00AE),
        python_ks_naf(&"00".repeat(32), &rand, IMPI, IN_NAF, 0x00AE),
    ] {
        let answer = s_client(cse.https_port(), &b_tid, &wrong);
        assert!(!answer.contains("HTTP/1.1"), "{answer}");
    }
}

#[test]
fn unknown_nafs_expired_b_tids_and_foreign_usims_open_nothing() {
    let setup = Setup::new();
    let (bsf, ub, usim) = setup.start_bsf(3);
    let cse = setup.start_cse("id-in", bsf.url());
    // A CSE the BSF does not know (a valid certificate of the same CA, not among its NAFs).
    let mn = setup.start_cse("id-mn", bsf.url());
    let out = register_lock(mn.https_url(), &usim, &ub);
    assert_ne!(json_of(&out)["rsc"], json!(2001));
    assert!(mn.logged("not a NAF of this BSF"), "{}", mn.stderr());
    assert!(bsf.logged("NAF key refused"), "{}", bsf.stderr());

    // The lock registers; once its B-TID has expired the BSF gives no key for it: a device
    // keeping it is refused, and `m2m request` bootstraps anew by itself.
    let out = register_lock(cse.https_url(), &usim, &ub);
    assert_eq!(json_of(&out)["rsc"], json!(2001), "{}", cse.stderr());
    let (old_b_tid, ks, rand) = kept_key(&usim);
    std::thread::sleep(std::time::Duration::from_millis(3500));
    let key = python_ks_naf(&ks, &rand, IMPI, IN_NAF, 0x00AE);
    assert!(!s_client(cse.https_port(), &old_b_tid, &key).contains("HTTP/1.1"));
    assert!(cse.logged("unknown or expired B-TID"), "{}", cse.stderr());
    let out = gba_request(
        cse.https_url(),
        &usim,
        &ub,
        IN_NAF,
        &["--to", "cse-in/lock", "--from", "CLock"],
    );
    assert_eq!(
        json_of(&out)["rsc"],
        json!(2000),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_ne!(kept_key(&usim).0, old_b_tid, "a new bootstrapping");

    // A USIM with the right IMPI and another K: the device refuses the BSF's challenge (AUTN),
    // nothing is bootstrapped and nothing associated.
    let forged = setup.path("forged.usim");
    let mut file: Value = serde_json::from_str(&std::fs::read_to_string(&usim).unwrap()).unwrap();
    file["k"] = json!("00112233445566778899aabbccddeeff");
    file.as_object_mut().unwrap().remove("bootstrapped");
    common::write_private(&forged, &file.to_string());
    let out = register_lock(cse.https_url(), &forged, &ub);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("did not authenticate the home network"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(bsf.logged("the network was not authenticated"));
}

/// GBA-based remote provisioning (TS-0003 clause 8.3.2.3): the device enrols at the MEF with its
/// B-TID (the MEF a NAF of the BSF, the enrolee the AE-ID of the subscriber record), derives Km
/// for the MAF, gets a connection key from the MAF and registers at the IN-CSE on it.
#[test]
fn a_device_enrols_at_the_mef_by_gba_and_reaches_the_maf_flow() {
    let setup = Setup::new();
    let (bsf, ub, usim) = setup.start_bsf(3600);
    let mef = setup.start_mef(bsf.url());
    let maf = common::start_maf_process(
        &setup.pki,
        MAF_FQDN,
        &format!(
            "[mef]\nurl = \"{}\"\nfqdn = \"{MEF_FQDN}\"\ntimeout_ms = 5000\n",
            mef.url()
        ),
    );
    let cse = CseProcess::start_temp(&format!(
        "[cse]\ncse_id = \"/id-in\"\n[tls]\nlisten = \"127.0.0.1:0\"\ncertificate = \"{}\"\n\
         private_key = \"{}\"\ntrusted_ca = \"{}\"\n[maf]\nurl = \"{}\"\nfqdn = \"{MAF_FQDN}\"\n",
        setup.path("id-in.pem").display(),
        setup.path("id-in.key").display(),
        setup.pki.ca_pem().display(),
        maf.url(),
    ));
    let enrol = |usim: &Path| {
        Command::new(env!("CARGO_BIN_EXE_m2m"))
            .args([
                "request",
                "--url",
                cse.https_url(),
                "--json",
                "--timeout",
                "5",
            ])
            .args([
                "-X", "create", "--to", "cse-in", "--from", "CLock", "--ty", "2",
            ])
            .args(["--body", REGISTRATION])
            .args(["--mef-url", mef.url(), "--mef-fqdn", MEF_FQDN])
            .args(["--gba-usim", usim.to_str().unwrap(), "--gba-ub-url", &ub])
            .args(["--gba-bsf-fqdn", BSF_FQDN])
            .args(["--maf-url", maf.url(), "--maf-fqdn", MAF_FQDN])
            .args(["--target-cse", "//m2m.example.com/id-in"])
            .output()
            .unwrap()
    };
    let out = enrol(&usim);
    let rsp = json_of(&out);
    assert_eq!(
        rsp["rsc"],
        json!(2001),
        "{rsp}\nMEF: {}\nMAF: {}",
        mef.stderr(),
        maf.stderr()
    );
    assert_eq!(rsp["pc"]["m2m:ae"]["aei"], json!("CLock"), "{rsp}");
    // The MEF authenticated the subscriber by GBA and enrolled the AE-ID its record names.
    assert!(
        mef.stderr()
            .contains(&format!("GBA 97-{IMPI} -> /id-in/CLock")),
        "{}",
        mef.stderr()
    );
    assert!(mef.logged("enrolment created"));
    assert!(bsf.logged("NAF key delivered"));

    // A USIM with another K enrols nothing.
    let forged = setup.path("forged.usim");
    let mut file: Value = serde_json::from_str(&std::fs::read_to_string(&usim).unwrap()).unwrap();
    file["k"] = json!("00112233445566778899aabbccddeeff");
    file.as_object_mut().unwrap().remove("bootstrapped");
    common::write_private(&forged, &file.to_string());
    let out = enrol(&forged);
    assert!(!out.status.success());
    assert_eq!(mef.stderr().matches("enrolment created").count(), 1);
}

/// `m2m ae` in mode gba: the lock as a process registers over its SIM's key and says it is
/// ready; its AE-ID is the subscriber record's.
#[test]
fn m2m_ae_runs_on_its_sim() {
    let setup = Setup::new();
    let (bsf, ub, usim) = setup.start_bsf(3600);
    let cse = setup.start_cse("id-in", bsf.url());
    let config = setup.path("lock-ae.toml");
    std::fs::write(
        &config,
        format!(
            "[ae]\nresource_name = \"lock\"\napp_id = \"Nlock\"\noriginator = \"CLock\"\n\
             [cse]\nurl = \"{}\"\ncse_id = \"/id-in\"\nresource_name = \"cse-in\"\n\
             [security]\nmode = \"gba\"\nusim = {:?}\nub_url = \"{ub}\"\nbsf_fqdn = \"{BSF_FQDN}\"\n\
             naf_fqdn = \"{IN_NAF}\"\n",
            cse.https_url(),
            usim.display().to_string(),
        ),
    )
    .unwrap();
    let ae = common::AeProcess::start(&config);
    let ready = ae.ready(&cse);
    assert_eq!(ready["aei"], json!("CLock"), "{ready}");
    assert!(
        cse.logged(&format!("97-{IMPI} -> //m2m.example.com/id-in/CLock")),
        "{}",
        cse.stderr()
    );
}

/// A BSF is another operator's trust domain: a subscriber record naming the CSE's administrator
/// (or an AE-ID a configured PSK row binds) opens nothing at the CSE.
#[test]
fn a_bsf_cannot_hand_out_the_administrator() {
    let setup = Setup::new();
    let (bsf, ub, _) = setup.start_bsf(3600);
    let admin_usim = setup.add_subscriber("001010000000666@ims.example", "CAdmin", "admin.usim");
    let cse = setup.start_cse("id-in", bsf.url());
    let out = gba_request(
        cse.https_url(),
        &admin_usim,
        &ub,
        IN_NAF,
        &["--to", "cse-in", "--from", "CAdmin"],
    );
    assert!(
        !out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(
        cse.logged("a key service named the administrator"),
        "{}",
        cse.stderr()
    );
}

/// A USIM that has accepted SQNs far above the BSF's (a stale challenge for it): it answers
/// with AUTS, the BSF resynchronises, and the device still associates on this run.
#[test]
fn a_usim_ahead_of_the_bsf_resynchronises_and_associates() {
    let setup = Setup::new();
    let (bsf, ub, usim) = setup.start_bsf(3600);
    let cse = setup.start_cse("id-in", bsf.url());
    let mut file: Value = serde_json::from_str(&std::fs::read_to_string(&usim).unwrap()).unwrap();
    file["sqnHighest"] = json!(5000);
    common::write_private(&usim, &file.to_string());
    let out = register_lock(cse.https_url(), &usim, &ub);
    assert_eq!(json_of(&out)["rsc"], json!(2001), "{}", cse.stderr());
    let file: Value = serde_json::from_str(&std::fs::read_to_string(&usim).unwrap()).unwrap();
    assert!(file["sqnHighest"].as_u64().unwrap() > 5000, "{file}");
    assert!(bsf.logged("SQN resynchronised"), "{}", bsf.stderr());
}
