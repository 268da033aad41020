//! `m2m ttp` end to end: `m2m maf` runs as a process; a gateway (MN-CSE certificate) registers its
//! device's credentials with `m2m ttp register`, the authorized application retrieves them with
//! `m2m ttp get`, and the refusals are what a user sees: exit code 1 and `{"rsc", "error"}`.

mod common;

use common::{assert_no_secret, json_stdout, start_maf_process, unhex, Pki, ServiceProcess};
use serde_json::{json, Value};
use std::path::PathBuf;
use std::process::{Command, Output};

const MAF_FQDN: &str = "maf.keys.example.net";
const APP_KM_ID: &str = "app@maf.keys.example.net";
const OTHER_KM_ID: &str = "other@maf.keys.example.net";
const APP_KM: &str = "1111111111111111111111111111111111111111111111111111111111111111";
const OTHER_KM: &str = "2222222222222222222222222222222222222222222222222222222222222222";

struct Setup {
    pki: Pki,
}

impl Setup {
    /// A CA, the MAF's FQDN certificate and the gateways' CSE-ID certificates, made by `m2m pki`.
    fn new() -> Setup {
        let pki = Pki::temp_ca_permitting_dns("keys.example.net");
        pki.issue(&["--kind", "maf", "--id", MAF_FQDN], "maf");
        for id in ["mn-cse-123456", "mn-cse-999"] {
            pki.issue(&["--kind", "cse", "--id", &format!("/{id}")], id);
        }
        Setup { pki }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.pki.dir().join(name)
    }

    /// `m2m maf` with the gateway delegated for the AEs registered with it; its log goes to a file.
    fn start_maf(&self) -> ServiceProcess {
        start_maf_process(
            &self.pki,
            MAF_FQDN,
            &format!(
                r#"[[km]]
client_id = "/Sapp"
km_id = "{APP_KM_ID}"
key = "{APP_KM}"
[[km]]
client_id = "/Sother"
km_id = "{OTHER_KM_ID}"
key = "{OTHER_KM}"
[ttp]
max_lifetime = 86400
[[ttp.delegations]]
delegate = "/mn-cse-123456"
subjects = ["/mn-cse-123456/C*"]
"#
            ),
        )
    }

    /// `m2m ttp` as the gateway `name` (certificate).
    fn as_gateway(&self, url: &str, name: &str, args: &[&str]) -> Output {
        let (cert, key, ca) = (
            self.path(&format!("{name}.pem")),
            self.path(&format!("{name}.key")),
            self.path("ca/ca.pem"),
        );
        Command::new(env!("CARGO_BIN_EXE_m2m"))
            .args(["ttp", "--maf-url", url, "--maf-fqdn", MAF_FQDN])
            .arg("--cert")
            .arg(cert)
            .arg("--key")
            .arg(key)
            .arg("--ca")
            .arg(ca)
            .args(args)
            .output()
            .unwrap()
    }

    /// `m2m ttp` as an application (TLS-PSK on Km from the environment).
    fn as_app(&self, url: &str, km_id: &str, km: &str, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_m2m"))
            .args(["ttp", "--maf-url", url, "--maf-fqdn", MAF_FQDN])
            .args(["--km-id", km_id, "--km-env", "TEST_KM"])
            .args(args)
            .env("TEST_KM", km)
            .output()
            .unwrap()
    }
}

/// The JSON `m2m ttp` printed, and its exit code.
fn answer(out: &Output) -> (i32, Value) {
    (out.status.code().unwrap(), json_stdout(out))
}

fn b64url(bytes: &[u8]) -> String {
    m2m_keyservices::maf::jwk::b64url(bytes).to_string()
}

/// A sensor's EC P-256 key pair as JWKs (public, private).
fn sensor_jwk() -> (Value, Value) {
    use openssl::bn::{BigNum, BigNumContext};
    use openssl::ec::{EcGroup, EcKey};
    let group = EcGroup::from_curve_name(openssl::nid::Nid::X9_62_PRIME256V1).unwrap();
    let key = EcKey::generate(&group).unwrap();
    let (mut x, mut y) = (BigNum::new().unwrap(), BigNum::new().unwrap());
    key.public_key()
        .affine_coordinates(&group, &mut x, &mut y, &mut BigNumContext::new().unwrap())
        .unwrap();
    let public = json!({
        "kty": "EC", "crv": "P-256",
        "x": b64url(&x.to_vec_padded(32).unwrap()),
        "y": b64url(&y.to_vec_padded(32).unwrap()),
    });
    let mut private = public.clone();
    private["d"] = json!(b64url(&key.private_key().to_vec_padded(32).unwrap()));
    (public, private)
}

#[test]
fn m2m_ttp_registers_for_a_device_and_only_the_authorized_app_gets_it() {
    let setup = Setup::new();
    let mut maf = setup.start_maf();
    let url = maf.url().to_owned();
    let (public, private) = sensor_jwk();
    let jwk_file = setup.path("sensor1.pub.jwk");
    std::fs::write(&jwk_file, public.to_string()).unwrap();
    let jwk_arg = format!("@{}", jwk_file.display());
    let gw = "mn-cse-123456";

    // The gateway registers the sensor's public key for the application.
    let reg = setup.as_gateway(
        &url,
        gw,
        &[
            "register",
            "--subject",
            "/mn-cse-123456/Csensor1",
            "--usage",
            "esdata-integrity",
            "--jwk",
            &jwk_arg,
            "--requester",
            "/Sapp",
        ],
    );
    let (code, v) = answer(&reg);
    assert_eq!(code, 0, "{v}");
    assert_eq!(
        v["subjectID"],
        json!("//m2m.example.com/mn-cse-123456/Csensor1")
    );
    assert_eq!(v["requesterIDs"], json!(["//m2m.example.com/Sapp"]));
    let id = v["credentialID"].as_str().unwrap().to_owned();
    assert!(id.ends_with("@maf.keys.example.net"), "{id}");

    // The application gets the identical JWK by the credential ID.
    let (code, v) = answer(&setup.as_app(&url, APP_KM_ID, APP_KM, &["get", &id]));
    assert_eq!(code, 0, "{v}");
    assert_eq!(v["jwk"], public);
    assert_eq!(v["usage"], json!("esdata-integrity"));

    // Another application is refused exactly like an unknown ID.
    let (code, v) = answer(&setup.as_app(&url, OTHER_KM_ID, OTHER_KM, &["get", &id]));
    assert_eq!(
        (code, &v),
        (1, &json!({"rsc": 4004, "error": "no such credential"}))
    );

    // A gateway may not register for devices it is not delegated for.
    let (code, v) = answer(&setup.as_gateway(
        &url,
        "mn-cse-999",
        &[
            "register",
            "--subject",
            "/mn-cse-123456/Csensor1",
            "--usage",
            "esdata-integrity",
            "--jwk",
            &jwk_arg,
            "--requester",
            "/Sother",
        ],
    ));
    assert_eq!((code, v["rsc"].clone()), (1, json!(4103)), "{v}");

    // The device's private key is refused before anything is sent.
    let private_file = setup.path("sensor1.jwk");
    std::fs::write(&private_file, private.to_string()).unwrap();
    let out = setup.as_gateway(
        &url,
        gw,
        &[
            "register",
            "--subject",
            "/mn-cse-123456/Csensor1",
            "--usage",
            "esprim",
            "--jwk",
            &format!("@{}", private_file.display()),
            "--requester",
            "/Sapp",
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("private key d"));

    // A symmetric key generated by the TTP: the registrant and the application see the same one.
    let (code, v) = answer(&setup.as_gateway(
        &url,
        gw,
        &[
            "register",
            "--subject",
            "/mn-cse-123456/Csensor1",
            "--usage",
            "esdata-confidentiality",
            "--requester",
            "/Sapp",
        ],
    ));
    assert_eq!(code, 0, "{v}");
    let generated = v["jwk"].clone();
    assert_eq!(generated["kty"], json!("oct"));
    let enc_id = v["credentialID"].as_str().unwrap().to_owned();
    let (_, v) = answer(&setup.as_app(&url, APP_KM_ID, APP_KM, &["get", &enc_id]));
    assert_eq!(v["jwk"], generated);

    // Only the registrant deletes; afterwards nobody gets it.
    let (code, v) = answer(&setup.as_app(&url, APP_KM_ID, APP_KM, &["delete", &id]));
    assert_eq!((code, v["rsc"].clone()), (1, json!(4103)), "{v}");
    let (code, _) = answer(&setup.as_gateway(&url, gw, &["delete", &id]));
    assert_eq!(code, 0);
    let (code, v) = answer(&setup.as_app(&url, APP_KM_ID, APP_KM, &["get", &id]));
    assert_eq!((code, v["rsc"].clone()), (1, json!(4004)));

    // A wrong Km opens no association: exit 2.
    let out = setup.as_app(&url, APP_KM_ID, OTHER_KM, &["get", &enc_id]);
    assert_eq!(out.status.code(), Some(2));

    let _ = maf.kill();
    let _ = maf.wait();
    // The MAF audited it all and logged no key.
    let log = std::fs::read_to_string(setup.path("maf.log")).unwrap();
    assert!(log.contains("TTP credential registered"), "{log}");
    assert!(log.contains("TTP credential retrieval refused"));
    assert!(log.contains("TTP credential registration refused"));
    // No key in it: neither the generated one nor the applications' Km.
    let k = m2m_keyservices::maf::jwk::b64url_decode(generated["k"].as_str().unwrap()).unwrap();
    assert_no_secret(&[log], &[k.to_vec(), unhex(APP_KM), unhex(OTHER_KM)]);
}

#[test]
fn the_default_maf_configuration_shows_the_ttp() {
    let out = common::m2m(&["maf", "--print-default-config"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("[ttp]") && text.contains("[[ttp.delegations]]"));
    m2m_keyservices::maf::MafConfig::from_toml_str(&text).unwrap();
}
