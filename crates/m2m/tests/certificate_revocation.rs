//! Certificate status verification (TS-0003 clause 8.1.2.2): `m2m pki revoke` writes the CA's CRL,
//! a running `m2m cse` reads it again at the next handshake and refuses the revoked certificate,
//! whatever it certifies (an AE-ID, a CSE-ID), while the others keep working. The list is checked
//! by OpenSSL's own command line tools (`openssl crl`, `openssl verify -crl_check`), and a list
//! the CSE cannot trust (another CA's, deleted) refuses every certificate instead of none.

mod common;

use common::*;
use serde_json::json;
use std::path::{Path, PathBuf};
use std::process::Command;

fn pki_cmd(args: &[&str]) -> std::process::Output {
    m2m_command(args)
}

fn crl_of(pki: &Pki) -> PathBuf {
    pki.ca_dir().join("crl.pem")
}

/// A CSE whose [tls] listener checks client certificates against `pki`'s CA and its CRL.
fn cse_with_crl(pki: &Pki) -> CseProcess {
    let out = pki_cmd(&["pki", "crl", "--ca", pki.ca_dir().to_str().unwrap()]);
    assert!(out.status.success(), "{out:?}");
    CseProcess::start_temp(&format!(
        "{}crl = {:?}\n",
        in_tls_config(pki),
        crl_of(pki).display().to_string()
    ))
}

fn client(pki: &Pki, pem: &Path, key: &Path) -> TlsClient {
    TlsClient::certificate(&pki.ca_pem(), pem, key, IN_SERVER_NAME)
}

/// A RETRIEVE of the CSEBase over a new mutual-TLS association: the status code, or the
/// handshake's failure.
fn retrieve_over(c: &TlsClient, cse: &CseProcess, from: &str) -> Result<u16, String> {
    c.request(cse.https_url(), "GET", "/cse-in", Some(from), None, None)
        .map(|r| r.rsc)
}

fn revoke(pki: &Pki, cert: &Path) {
    let out = pki_cmd(&[
        "pki",
        "revoke",
        "--ca",
        pki.ca_dir().to_str().unwrap(),
        cert.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{out:?}");
}

#[test]
fn a_revoked_certificate_is_refused_at_the_next_handshake() {
    let pki = Pki::temp();
    let cse = cse_with_crl(&pki);
    let (phone_pem, phone_key) = pki.issue(
        &["--kind", "ae", "--id", "Cphone", "--cse", "/id-in"],
        "phone",
    );
    let (lock_pem, lock_key) = pki.issue(
        &["--kind", "ae", "--id", "Clock", "--cse", "/id-in"],
        "lock",
    );
    let (mn_pem, mn_key) = pki.cse_cert("id-mn");
    let phone = client(&pki, &phone_pem, &phone_key);
    let lock = client(&pki, &lock_pem, &lock_key);
    let mn = client(&pki, &mn_pem, &mn_key);
    let r = phone
        .request(
            cse.https_url(),
            "POST",
            "/cse-in",
            Some("Cphone"),
            Some(2),
            Some(&json!({"m2m:ae": {"rn": "phone", "api": "Nphone", "rr": false, "srv": ["3"]}})),
        )
        .expect("the phone associates before its revocation");
    assert_eq!(r.rsc, 2001, "{:?}", r.body);
    assert!(retrieve_over(&mn, &cse, "/id-mn").is_ok());

    revoke(&pki, &phone_pem);
    let refused = retrieve_over(&phone, &cse, "Cphone");
    assert!(refused.is_err(), "revoked, yet: {refused:?}");
    assert!(
        retrieve_over(&lock, &cse, "Clock").is_ok(),
        "another certificate of the same CA still associates"
    );
    assert!(
        poll(WAIT, || cse.logged("certificate revoked").then_some(())).is_some(),
        "the audit line names the reason:\n{}",
        cse.stderr()
    );

    // A CSE-ID certificate is revoked the same way.
    revoke(&pki, &mn_pem);
    assert!(retrieve_over(&mn, &cse, "/id-mn").is_err());
    assert!(
        retrieve_over(&phone, &cse, "Cphone").is_err(),
        "still revoked"
    );
    assert!(retrieve_over(&lock, &cse, "Clock").is_ok());
}

#[test]
fn a_list_the_cse_cannot_trust_refuses_every_certificate() {
    let pki = Pki::temp();
    let cse = cse_with_crl(&pki);
    let (lock_pem, lock_key) = pki.issue(
        &["--kind", "ae", "--id", "Clock", "--cse", "/id-in"],
        "lock",
    );
    let lock = client(&pki, &lock_pem, &lock_key);
    assert!(retrieve_over(&lock, &cse, "Clock").is_ok());
    let good = std::fs::read(crl_of(&pki)).unwrap();

    // Another CA's list in its place (its name differs, its signature too).
    let foreign = Pki::temp();
    let out = pki_cmd(&["pki", "crl", "--ca", foreign.ca_dir().to_str().unwrap()]);
    assert!(out.status.success());
    let put = |bytes: &[u8]| {
        let tmp = pki.ca_dir().join("next.pem");
        std::fs::write(&tmp, bytes).unwrap();
        std::fs::rename(&tmp, crl_of(&pki)).unwrap();
    };
    put(&std::fs::read(crl_of(&foreign)).unwrap());
    assert!(retrieve_over(&lock, &cse, "Clock").is_err());
    assert!(
        poll(WAIT, || cse
            .logged("certificate status unknown")
            .then_some(()))
        .is_some(),
        "{}",
        cse.stderr()
    );
    // Deleted.
    std::fs::remove_file(crl_of(&pki)).unwrap();
    assert!(retrieve_over(&lock, &cse, "Clock").is_err());
    // Restored: the certificate works again, without a restart.
    put(&good);
    assert!(retrieve_over(&lock, &cse, "Clock").is_ok());

    // A PSK association needs no certificate and no list.
    drop(cse);
    let cse = CseProcess::start_temp(&format!(
        "{}crl = {:?}\n\n{}",
        in_tls_config(&pki),
        crl_of(&pki).display().to_string(),
        psk_row_toml(&LOCK1)
    ));
    std::fs::remove_file(crl_of(&pki)).unwrap();
    let psk = TlsClient::psk(LOCK1.kpsa_id, LOCK1.key);
    assert!(retrieve_over(&psk, &cse, LOCK1.ae).is_ok());
}

#[test]
fn a_cse_refuses_to_start_on_a_list_it_cannot_trust() {
    let pki = Pki::temp();
    let foreign = Pki::temp();
    assert!(
        pki_cmd(&["pki", "crl", "--ca", foreign.ca_dir().to_str().unwrap()])
            .status
            .success()
    );
    for (crl, why) in [
        // Same CA name (the default), another key: a forged list.
        (crl_of(&foreign), "does not verify"),
        (pki.dir().join("missing.pem"), "crl"),
    ] {
        // A port of its own: the refusal must not depend on 8080 being free.
        let config = format!(
            "{}crl = {:?}\n\n[http]\nlisten = \"127.0.0.1:0\"\n",
            in_tls_config(&pki),
            crl.display().to_string()
        );
        let (ok, _, stderr) = cse_exit(&config, 0o600);
        assert!(!ok, "{config}");
        assert!(stderr.contains(why), "{stderr}");
    }
}

/// OpenSSL's own tools read the list `m2m pki` writes: its signature verifies with the CA, the
/// revoked certificate fails `openssl verify -crl_check` as revoked, the others pass.
#[test]
fn openssl_reads_the_list_as_a_crl_of_the_ca() {
    if !have_program("openssl", "the CRL interoperability check") {
        return;
    }
    let pki = Pki::temp();
    let ca = pki.ca_dir();
    let (phone, _) = pki.issue(
        &["--kind", "ae", "--id", "Cphone", "--cse", "/id-in"],
        "phone",
    );
    let (lock, _) = pki.issue(
        &["--kind", "ae", "--id", "Clock", "--cse", "/id-in"],
        "lock",
    );
    revoke(&pki, &phone);
    // Twice, and a serial given by hand: one entry each, the number increasing.
    revoke(&pki, &phone);
    let serial = Command::new("openssl")
        .args(["x509", "-noout", "-serial", "-in"])
        .arg(&lock)
        .output()
        .unwrap();
    let serial = String::from_utf8_lossy(&serial.stdout)
        .trim()
        .trim_start_matches("serial=")
        .to_owned();
    let crl = crl_of(&pki);
    let text = |args: &[&str]| {
        let out = Command::new("openssl").args(args).output().unwrap();
        (
            out.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    };
    let ca_pem = pki.ca_pem().display().to_string();
    let (ok, out) = text(&[
        "crl",
        "-noout",
        "-text",
        "-in",
        crl.to_str().unwrap(),
        "-CAfile",
        &ca_pem,
    ]);
    assert!(ok && out.contains("verify OK"), "{out}");
    assert!(
        out.contains("X509v3 CRL Number: \n                2"),
        "{out}"
    );
    assert_eq!(out.matches("Serial Number:").count(), 1, "{out}");
    let verify = |cert: &Path| {
        text(&[
            "verify",
            "-crl_check",
            "-CAfile",
            &ca_pem,
            "-CRLfile",
            crl.to_str().unwrap(),
            cert.to_str().unwrap(),
        ])
    };
    let (ok, out) = verify(&phone);
    assert!(!ok && out.contains("certificate revoked"), "{out}");
    let (ok, out) = verify(&lock);
    assert!(ok, "{out}");

    let out = pki_cmd(&[
        "pki",
        "revoke",
        "--ca",
        ca.to_str().unwrap(),
        "--serial",
        &serial,
    ]);
    assert!(out.status.success(), "{out:?}");
    let (ok, out) = verify(&lock);
    assert!(!ok && out.contains("certificate revoked"), "{out}");
    // A certificate of another CA is not this CA's to revoke.
    let foreign = Pki::temp();
    let (x, _) = foreign.issue(&["--kind", "ae", "--id", "Cx", "--cse", "/id-in"], "x");
    let out = pki_cmd(&[
        "pki",
        "revoke",
        "--ca",
        ca.to_str().unwrap(),
        x.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not issued by this CA"),
        "{out:?}"
    );
}

/// The CSE checks the certificates of the peers it connects to against the same lists: an MN-CSE
/// whose `crl` revokes its registrar's certificate does not register with it.
#[test]
fn a_cse_refuses_a_registrar_whose_certificate_is_revoked() {
    let pki = Pki::temp();
    let in_cse = CseProcess::start_temp(&in_tls_config(&pki));
    let (in_pem, _) = pki.cse_cert("id-in");
    revoke(&pki, &in_pem);
    let mn = CseProcess::start_temp(&format!(
        "{}crl = {:?}\n",
        mn_config(in_cse.https_url(), &pki),
        crl_of(&pki).display().to_string()
    ));
    assert!(
        poll(WAIT, || mn.logged("certificate revoked").then_some(())).is_some(),
        "the MN names the reason:\n{}",
        mn.stderr()
    );
    let (rsc, _) = retrieve(in_cse.url(), "/cse-in/id-mn", "CAdmin");
    assert_eq!(rsc, 4004, "the MN registered with a revoked registrar");
}

/// `m2m request --crl` checks the CSE's certificate against the list: a revoked CSE certificate
/// gets no request, the same CSE without the list does.
#[test]
fn m2m_request_refuses_a_cse_whose_certificate_is_revoked() {
    let pki = Pki::temp();
    let cse = CseProcess::start_temp(&in_tls_config(&pki));
    let (pem, key) = pki.issue(
        &["--kind", "ae", "--id", "Cphone", "--cse", "/id-in"],
        "phone",
    );
    let (in_pem, _) = pki.cse_cert("id-in");
    revoke(&pki, &in_pem);
    let ca = pki.ca_pem().display().to_string();
    let crl = crl_of(&pki).display().to_string();
    let ask = |with_crl: bool| {
        let mut args = vec![
            "request",
            "--url",
            cse.https_url(),
            "--to",
            "cse-in",
            "--from",
            "Cphone",
            "--cert",
            pem.to_str().unwrap(),
            "--key",
            key.to_str().unwrap(),
            "--ca",
            &ca,
            "--server-name",
            IN_SERVER_NAME,
        ];
        if with_crl {
            args.extend(["--crl", crl.as_str()]);
        }
        m2m_command(&args)
    };
    let out = ask(false);
    assert!(
        !String::from_utf8_lossy(&out.stderr).contains("certificate revoked"),
        "{out:?}"
    );
    let out = ask(true);
    assert!(!out.status.success(), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("certificate revoked")
            || String::from_utf8_lossy(&out.stdout).contains("certificate revoked"),
        "{out:?}"
    );
}
