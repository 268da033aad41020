//! The secure environment on a PKCS#11 token (issue 18), run for real: SoftHSM2 as the token,
//! OpenSSL's PKCS#11 provider signing the CSE's handshakes inside it, curl, openssl s_client and
//! pkcs11-tool (OpenSC) as the peers and the third party that tries to read the keys out.

mod common;

use common::*;
use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::object::{Attribute, AttributeType, ObjectClass};
use cryptoki::session::UserType;
use cryptoki::types::AuthPin;
use serde_json::json;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

const MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";
const TOKEN: &str = "m2m";
const PIN: &str = "7305-pin";
const PROVIDER: &str = "/usr/lib/x86_64-linux-gnu/ossl-modules/pkcs11.so";

/// A SoftHSM token of its own (its directory, its SOFTHSM2_CONF), initialized with [`PIN`].
struct Token {
    dir: tempfile::TempDir,
    conf: String,
}

impl Token {
    /// None (skipped loudly) when SoftHSM, OpenSSL's PKCS#11 provider or OpenSC is missing
    /// outside CI; in CI they are mandatory.
    fn new() -> Option<Token> {
        let present = Path::new(MODULE).exists() && Path::new(PROVIDER).exists();
        if !present && std::env::var("CI").as_deref() == Ok("true") {
            panic!("SoftHSM2 or pkcs11-provider is not installed, and CI=true: .ci/run must install them");
        }
        if !present
            || !have_tool("softhsm2-util", "-v", "the PKCS#11 tests")
            || !have_program("pkcs11-tool", "the PKCS#11 tests")
        {
            if !present {
                eprintln!("\n!!!!!!!!!! SKIPPED: SoftHSM2 or OpenSSL's PKCS#11 provider is not installed; the PKCS#11 tests need them. In CI they are mandatory. !!!!!!!!!!\n");
            }
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let tokens = dir.path().join("tokens");
        std::fs::create_dir(&tokens).unwrap();
        let conf = dir.path().join("softhsm2.conf");
        std::fs::write(
            &conf,
            format!(
                "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
                tokens.display()
            ),
        )
        .unwrap();
        let token = Token {
            conf: conf.display().to_string(),
            dir,
        };
        let out = Command::new("softhsm2-util")
            .args(["--init-token", "--free", "--label", TOKEN])
            .args(["--pin", PIN, "--so-pin", "so-7305"])
            .env("SOFTHSM2_CONF", &token.conf)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        write_private(&token.pin_file(), &format!("{PIN}\n"));
        Some(token)
    }

    fn env(&self) -> [(&str, &str); 1] {
        [("SOFTHSM2_CONF", self.conf.as_str())]
    }

    fn pin_file(&self) -> PathBuf {
        self.dir.path().join("pin")
    }

    /// `m2m keys token --module .. --token m2m --pin-file .. ARGS`.
    fn keys(&self, args: &[&str], extra_env: &[(&str, &str)]) -> Output {
        self.keys_with_pin(&self.pin_file(), args, extra_env)
    }

    fn keys_with_pin(&self, pin_file: &Path, args: &[&str], extra_env: &[(&str, &str)]) -> Output {
        let pin = pin_file.to_str().unwrap();
        let mut all = vec![
            "keys",
            "token",
            "--module",
            MODULE,
            "--token",
            TOKEN,
            "--pin-file",
            pin,
        ];
        all.extend_from_slice(args);
        let mut env = self.env().to_vec();
        env.extend_from_slice(extra_env);
        m2m_command_env(&all, &env)
    }

    /// The `[security.pkcs11]` section for this token.
    fn section(&self) -> String {
        format!(
            "[security.pkcs11]\nmodule = {MODULE:?}\ntoken = {TOKEN:?}\npin_file = {:?}\n",
            self.pin_file().display().to_string()
        )
    }

    /// A third party with the PIN reading an object's CKA_VALUE through its own session of the
    /// module (C_GetAttributeValue): the value, if the token gives it.
    fn read_value(&self, class: ObjectClass, label: &str) -> Option<Vec<u8>> {
        // In a child process of its own: a PKCS#11 module is initialized once per process,
        // with the SOFTHSM2_CONF of that moment, and tests run in parallel.
        let probe = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "read_value_probe",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("PROBE_CONF", &self.conf)
            .env("SOFTHSM2_CONF", &self.conf)
            .env(
                "PROBE_CLASS",
                if class == ObjectClass::PRIVATE_KEY {
                    "private"
                } else {
                    "secret"
                },
            )
            .env("PROBE_LABEL", label)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&probe.stdout);
        assert!(
            text.contains("PROBE-DONE"),
            "the probe did not run: {text}\n{}",
            String::from_utf8_lossy(&probe.stderr)
        );
        text.lines()
            .find_map(|l| l.strip_prefix("PROBE-VALUE "))
            .map(|hex_value| hex::decode(hex_value.trim()).unwrap())
    }
}

/// Not a test of its own: the child process of [`Token::read_value`] (does nothing unless
/// PROBE_CONF is set).
#[test]
fn read_value_probe() {
    let Ok(_) = std::env::var("PROBE_CONF") else {
        return;
    };
    let class = match std::env::var("PROBE_CLASS").unwrap().as_str() {
        "private" => ObjectClass::PRIVATE_KEY,
        _ => ObjectClass::SECRET_KEY,
    };
    let label = std::env::var("PROBE_LABEL").unwrap();
    let ctx = Pkcs11::new(MODULE).unwrap();
    ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))
        .unwrap();
    let slot = ctx
        .get_slots_with_token()
        .unwrap()
        .into_iter()
        .find(|s| ctx.get_token_info(*s).unwrap().label().trim_end() == TOKEN)
        .unwrap();
    let session = ctx.open_ro_session(slot).unwrap();
    session
        .login(UserType::User, Some(&AuthPin::from(PIN.to_string())))
        .unwrap();
    let handle = session
        .find_objects(&[
            Attribute::Class(class),
            Attribute::Label(label.into_bytes()),
        ])
        .unwrap()
        .into_iter()
        .next()
        .expect("the key is in the token");
    let value = session
        .get_attributes(handle, &[AttributeType::Value])
        .ok()
        .and_then(|attrs| {
            attrs.into_iter().find_map(|a| match a {
                Attribute::Value(v) => Some(v),
                _ => None,
            })
        });
    if let Some(v) = value {
        println!("PROBE-VALUE {}", hex::encode(v));
    }
    println!("PROBE-DONE");
}

/// Generates `label` in the token and has `pki`'s CA certify its public key with `issue`'s
/// arguments (`--kind`, `--id`, ...): returns the key's `pkcs11:` URI; the chain is
/// `pki.dir()/<out>.pem` and no key file is written.
fn certify_token_key(token: &Token, pki: &Pki, label: &str, out: &str, issue: &[&str]) -> String {
    // The key pair is made inside the token; only the public key comes out, to be certified.
    let generated = ok(&token.keys(&["generate-key", "--label", label], &[]));
    let uri = generated
        .lines()
        .find_map(|l| l.strip_prefix("private key: "))
        .expect("the key's URI")
        .to_string();
    let public = token.dir.path().join(format!("{label}.pub.pem"));
    std::fs::write(&public, &generated).unwrap();
    let (ca, prefix) = (pki.ca_dir(), pki.dir().join(out));
    let mut args = vec!["pki", "issue", "--ca", ca.to_str().unwrap()];
    args.extend_from_slice(issue);
    args.extend([
        "--public-key",
        public.to_str().unwrap(),
        "--out",
        prefix.to_str().unwrap(),
    ]);
    ok(&m2m_command(&args));
    assert!(
        !pki.dir().join(format!("{out}.key")).exists(),
        "no key file for a token key"
    );
    uri
}

/// `openssl s_client` (no provider) with a client certificate against `addr` presenting
/// `server_name`: what it printed.
fn s_client(addr: &str, server_name: &str, pki: &Pki, cert: &Path, key: &Path) -> String {
    let out = Command::new("openssl")
        .args(["s_client", "-connect", addr, "-servername", server_name])
        .args([
            "-verify_hostname",
            server_name,
            "-verify_return_error",
            "-CAfile",
        ])
        .arg(pki.ca_pem())
        .arg("-cert")
        .arg(cert)
        .arg("-key")
        .arg(key)
        .env("OPENSSL_CONF", "/dev/null")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "stdout: {}\nstderr: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn a_cse_whose_key_is_in_the_token_completes_mutual_tls_with_curl() {
    let Some(token) = Token::new() else { return };
    if !have_tool("curl", "--version", "mutual TLS with a token key") {
        return;
    }
    let pki = Pki::temp_ca_permitting_dns("localhost");
    let uri = certify_token_key(
        &token,
        &pki,
        "cse-key",
        "id-in",
        &[
            "--kind",
            "cse",
            "--id",
            "/id-in",
            "--sp",
            SP_FQDN,
            "--dns",
            "localhost",
        ],
    );
    assert_eq!(uri, "pkcs11:token=m2m;object=cse-key;type=private");
    let (phone_pem, phone_key) = pki.issue(&["--kind", "ae", "--id", "/id-in/Cphone"], "phone");
    // The CSE's temporary directory, to see what it leaves there.
    let tmp = tempfile::tempdir().unwrap();
    let tmp_path = tmp.path().display().to_string();
    let config = format!(
        "[tls]\nlisten = \"127.0.0.1:0\"\ncertificate = {:?}\nprivate_key = {uri:?}\ntrusted_ca = {:?}\n\n{}\
         [security]\nrequired_level = \"token\"\n",
        pki.dir().join("id-in.pem").display().to_string(),
        pki.ca_pem().display().to_string(),
        token.section(),
    );
    let env = [token.env()[0], ("TMPDIR", tmp_path.as_str())];
    let cse = CseProcess::start_temp_with_env(&config, &env);
    assert!(
        cse.logged("secure environment: PKCS#11 token"),
        "{}",
        cse.stderr()
    );
    let url = format!("https://localhost:{}/cse-in", cse.https_port());
    let curl = Command::new("curl")
        .args(["-s", "-o", "-", "-w", "\n%{http_code}", "--cacert"])
        .arg(pki.ca_pem())
        .arg("--cert")
        .arg(&phone_pem)
        .arg("--key")
        .arg(&phone_key)
        .args([
            "-H",
            "X-M2M-Origin: Cphone",
            "-H",
            "X-M2M-RI: token-1",
            "-H",
            "X-M2M-RVI: 3",
        ])
        .args(["-H", "Content-Type: application/json;ty=2", "-d"])
        .arg(
            json!({"m2m:ae": {"rn": "phone", "api": "Nphone", "rr": false, "srv": ["3"]}})
                .to_string(),
        )
        .arg(&url)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&curl.stdout);
    assert!(
        text.ends_with("\n201"),
        "curl: {text}\n{}",
        String::from_utf8_lossy(&curl.stderr)
    );
    // The handshake signed in the token, so OpenSSL had read the configuration that loads the
    // provider; the file itself (it names the PIN file) is gone.
    let left: Vec<String> = std::fs::read_dir(tmp.path())
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("m2m-openssl-pkcs11-"))
        .collect();
    assert!(left.is_empty(), "left in the temporary directory: {left:?}");
    assert!(text.contains("\"aei\":\"Cphone\""), "{text}");
    // The server's certificate is the token key's: nothing else could have signed the handshake.
    let shown = s_client(
        &format!("127.0.0.1:{}", cse.https_port()),
        "localhost",
        &pki,
        &phone_pem,
        &phone_key,
    );
    assert!(shown.contains("Verify return code: 0 (ok)"), "{shown}");

    // The key cannot be read out of the token: C_GetAttributeValue(CKA_VALUE) is refused.
    assert_eq!(
        token.read_value(ObjectClass::PRIVATE_KEY, "cse-key"),
        None,
        "C_GetAttributeValue(CKA_VALUE) of the private key"
    );
    let listed = ok(&token.keys(&["list"], &[]));
    assert!(
        listed.contains(
            "ec-private\tcse-key\tsensitive, never leaves the token, generated in the token"
        ),
        "{listed}"
    );
    // No private key in any file the CSE has, nor in what it logged.
    for (path, bytes) in files_under(cse.data_dir())
        .into_iter()
        .chain(files_under(pki.dir()))
    {
        if path
            .file_name()
            .is_some_and(|n| n == "ca.key" || n == "phone.key")
        {
            continue;
        }
        assert!(
            !contains(&bytes, b"PRIVATE KEY"),
            "{} holds a private key",
            path.display()
        );
    }
    assert!(!cse.stderr().contains("PRIVATE KEY") && !cse.stdout().contains("PRIVATE KEY"));
}

#[test]
fn psk_handshakes_use_keys_stored_in_the_token() {
    let Some(token) = Token::new() else { return };
    const KPSA_ID: &str = "lock1@in.m2m.example.com";
    const KPSA: &str = "8f1e6d2c4b3a29180716f5e4d3c2b1a0ffeeddccbbaa99887766554433221100";
    let added = ok(&token.keys(
        &[
            "add-psk",
            "--kpsa-id",
            KPSA_ID,
            "--entity",
            "Clock-AE1",
            "--key-env",
            "KPSA",
        ],
        &[("KPSA", KPSA)],
    ));
    assert!(
        added.contains("added PSK lock1@in.m2m.example.com (32 bytes) for Clock-AE1"),
        "{added}"
    );
    let config = format!(
        "[tls]\nlisten = \"127.0.0.1:0\"\n\n{}[security]\nrequired_level = \"token\"\n",
        token.section()
    );
    let cse = CseProcess::start_temp_with_env(&config, &token.env());
    let register = |key: &str| {
        let out = Command::new(env!("CARGO_BIN_EXE_m2m"))
            .args([
                "request",
                "--url",
                cse.https_url(),
                "--from",
                "Clock-AE1",
                "--json",
            ])
            .args(["-X", "create", "--to", "cse-in", "--ty", "2", "--body"])
            .arg(
                json!({"m2m:ae": {"rn": "lock", "api": "Nlock", "rr": false, "srv": ["3"]}})
                    .to_string(),
            )
            .args(["--psk-identity", KPSA_ID, "--psk-key-env", "KPSA"])
            .env("KPSA", key)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        out
    };
    let created = json_stdout(&register(KPSA));
    assert_eq!(created["rsc"], 2001, "{created}");
    assert_eq!(created["pc"]["m2m:ae"]["aei"], "Clock-AE1", "{created}");
    assert!(cse.logged("association established"), "{}", cse.stderr());
    // Another key under the same identity opens nothing.
    let refused = register(&"00".repeat(32));
    assert!(
        !refused.status.success(),
        "a wrong key was accepted: {refused:?}"
    );
    // A third-party TLS client with the key (openssl s_client, TLS 1.2 PSK suite).
    let s_client = Command::new("openssl")
        .args([
            "s_client",
            "-connect",
            &format!("127.0.0.1:{}", cse.https_port()),
        ])
        .args([
            "-tls1_2",
            "-cipher",
            "PSK-AES128-CBC-SHA256",
            "-psk_identity",
            KPSA_ID,
            "-psk",
            KPSA,
        ])
        .env("OPENSSL_CONF", "/dev/null")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let shown = String::from_utf8_lossy(&s_client.stdout);
    assert!(
        shown.contains("Cipher is PSK-AES128-CBC-SHA256"),
        "{shown}\n{}",
        String::from_utf8_lossy(&s_client.stderr)
    );
    // The key is in no file of the CSE and in nothing it logged; the token refuses to show it.
    let raw = hex::decode(KPSA).unwrap();
    for (path, bytes) in files_under(cse.data_dir()) {
        assert!(
            !contains(&bytes, &raw) && !contains(&bytes, KPSA.as_bytes()),
            "{} holds the PSK",
            path.display()
        );
    }
    assert!(!cse.stderr().contains(KPSA) && !cse.stdout().contains(KPSA));
    assert_eq!(
        token.read_value(ObjectClass::SECRET_KEY, &format!("kpsa:{KPSA_ID}")),
        None,
        "C_GetAttributeValue(CKA_VALUE) of the PSK"
    );
    // OpenSC's pkcs11-tool, as a third party, gets nothing either.
    let read = Command::new("pkcs11-tool")
        .args([
            "--module",
            MODULE,
            "--token-label",
            TOKEN,
            "--login",
            "--pin",
            PIN,
        ])
        .args(["--read-object", "--type", "secrkey", "--label"])
        .arg(format!("kpsa:{KPSA_ID}"))
        .env("SOFTHSM2_CONF", &token.conf)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!read.status.success(), "pkcs11-tool read the PSK: {read:?}");
    assert!(!contains(&read.stdout, &raw), "pkcs11-tool read the PSK");
}

/// Runs `m2m cse` on `config` until it exits (a CSE that cannot start exits at once).
fn cse_refusing(config: &str, env: &[(&str, &str)]) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cse.toml");
    write_private(
        &path,
        &format!(
            "[http]\nlisten = \"127.0.0.1:0\"\n[storage]\npath = {:?}\n{config}",
            dir.path().join("data").display().to_string()
        ),
    );
    let mut child = Command::new(env!("CARGO_BIN_EXE_m2m"))
        .args(["cse", "--config", path.to_str().unwrap()])
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("the CSE started although it must refuse:\n{config}");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_wrong_pin_or_a_weaker_key_stops_the_cse_at_start_with_a_clear_error() {
    let Some(token) = Token::new() else { return };
    let wrong_pin = token.dir.path().join("wrong-pin");
    write_private(&wrong_pin, "1111-wrong\n");
    let section = token.section().replace(
        &token.pin_file().display().to_string(),
        &wrong_pin.display().to_string(),
    );
    let (code, err) = cse_refusing(&section, &token.env());
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("security.pkcs11: PKCS#11 token \"m2m\": wrong PIN"),
        "{err}"
    );
    assert!(!err.contains("1111-wrong") && !err.contains(PIN), "{err}");
    // `m2m keys token` says the same, and the right PIN still opens the token afterwards.
    let out = token.keys_with_pin(&wrong_pin, &["list"], &[]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("wrong PIN"));
    ok(&token.keys(&["list"], &[]));
    // A PIN file others may read is refused before the token is asked.
    let open_pin = token.dir.path().join("open-pin");
    std::fs::write(&open_pin, PIN).unwrap();
    let section = token.section().replace(
        &token.pin_file().display().to_string(),
        &open_pin.display().to_string(),
    );
    let (_, err) = cse_refusing(&section, &token.env());
    assert!(err.contains("chmod 600"), "{err}");
    // Keys kept below the required level: PSK rows in the configuration, a key file, SoftHSM
    // for "hardware".
    let rows = "[security]\nrequired_level = \"token\"\n[[security.psk]]\nkpsa_id = \"a@b.example.com\"\nkey = \"00112233445566778899aabbccddeeff\"\n";
    let (_, err) = cse_refusing(rows, &token.env());
    assert!(
        err.contains(
            "security.required_level is token, but [[security.psk]] keeps keys at level software"
        ),
        "{err}"
    );
    let hardware = format!(
        "{}[security]\nrequired_level = \"hardware\"\n",
        token.section()
    );
    let (_, err) = cse_refusing(&hardware, &token.env());
    assert!(err.contains("the token m2m is at level token"), "{err}");
    let pki = Pki::temp();
    let key_file = format!(
        "{}{}[security]\nrequired_level = \"token\"\n",
        tls_section(&pki, "id-in"),
        token.section()
    );
    let (_, err) = cse_refusing(&key_file, &token.env());
    assert!(err.contains("tls.private_key (a file)"), "{err}");
}

#[test]
fn the_secure_storage_and_the_resource_store_seal_under_keys_the_token_derives() {
    let Some(token) = Token::new() else { return };
    ok(&token.keys(&["generate-secret", "--name", "secure-storage"], &[]));
    ok(&token.keys(&["generate-secret", "--name", "store-key"], &[]));
    let listed = ok(&token.keys(&["list"], &[]));
    assert!(
        listed.contains("secret\tsecret:secure-storage\tsensitive, never leaves the token, generated in the token"),
        "{listed}"
    );
    const KPSA_ID: &str = "keeper@in.m2m.example.com";
    const KPSA: &str = "5a5a5a5a0123456789abcdef0123456789abcdef0123456789abcdef01234567";
    ok(&token.keys(
        &[
            "add-psk",
            "--kpsa-id",
            KPSA_ID,
            "--entity",
            "Ckeeper",
            "--key-env",
            "KPSA",
        ],
        &[("KPSA", KPSA)],
    ));
    let config = format!(
        "[tls]\nlisten = \"127.0.0.1:0\"\n\n{}[secure_storage]\nsecret = \"secure-storage\"\n\
         [storage]\nencryption_secret = \"store-key\"\n",
        token.section()
    );
    let cse = CseProcess::start_temp_with_env(&config, &token.env());
    const SECRET: &str = "door-code-8841-in-the-token";
    // An AE proven by its PSK (in the token too) stores and reads its secret.
    let request = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_m2m"))
            .args([
                "request",
                "--url",
                cse.https_url(),
                "--from",
                "Ckeeper",
                "--json",
            ])
            .args(["--psk-identity", KPSA_ID, "--psk-key-env", "KPSA"])
            .args(args)
            .env("KPSA", KPSA)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        json_stdout(&out)
    };
    let ae = json!({"m2m:ae": {"rn": "keeper", "api": "Nkeeper", "rr": false, "srv": ["3"]}});
    let registered = request(&[
        "-X",
        "create",
        "--to",
        "cse-in",
        "--ty",
        "2",
        "--body",
        &ae.to_string(),
    ]);
    assert_eq!(registered["rsc"], 2001, "{registered}");
    let sdo = json!({"m2m:sdo": {"con": SECRET}}).to_string();
    let stored = request(&[
        "-X",
        "update",
        "--to",
        "cse-in/secureStorage/door-code",
        "--body",
        &sdo,
    ]);
    assert_eq!(stored["rsc"], 2001, "{stored}");
    let read = request(&["--to", "cse-in/secureStorage/door-code"]);
    assert_eq!(read["pc"]["m2m:sdo"]["con"], SECRET, "{read}");
    for (path, bytes) in files_under(cse.data_dir()) {
        assert!(
            !contains(&bytes, SECRET.as_bytes()),
            "{} holds the secret",
            path.display()
        );
        // The resource store, encrypted under the token's key: not even the AE's App-ID.
        if path
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with("resources.db"))
        {
            assert!(
                !contains(&bytes, b"Nkeeper") && !contains(&bytes, b"SQLite format 3"),
                "{} is in the clear",
                path.display()
            );
        }
    }
    assert!(cse.data_dir().join("resources.db-wal").exists());
    // Without the token's secret the storage does not open: the CSE refuses to start.
    drop(cse);
    ok(&token.keys(&["destroy", "--label", "secret:secure-storage"], &[]));
    let (code, err) = cse_refusing(
        &format!(
            "{}[secure_storage]\nsecret = \"secure-storage\"\n",
            token.section()
        ),
        &token.env(),
    );
    assert_eq!(code, Some(1));
    assert!(
        err.contains("no secure environment holds the secret \"secure-storage\""),
        "{err}"
    );
}

#[test]
fn a_maf_whose_certificate_key_is_in_the_token_completes_mutual_tls() {
    let Some(token) = Token::new() else { return };
    const MAF_FQDN: &str = "maf.keys.example.net";
    let pki = Pki::temp_ca_permitting_dns("keys.example.net");
    let uri = certify_token_key(
        &token,
        &pki,
        "maf-key",
        "maf",
        &["--kind", "maf", "--id", MAF_FQDN],
    );
    let (cse_pem, cse_key) = pki.issue(&["--kind", "cse", "--id", "/id-in"], "id-in");
    let storage_key = pki.dir().join("storage.key");
    write_private(&storage_key, &"cd".repeat(32));
    let config = format!(
        "fqdn = \"{MAF_FQDN}\"\nsp_fqdn = \"{SP_FQDN}\"\nlisten = \"127.0.0.1:0\"\n\
         certificate = {:?}\nprivate_key = {uri:?}\n\
         trusted_ca = {:?}\nstorage = {:?}\nstorage_key_file = {:?}\n\n[pkcs11]\nmodule = {MODULE:?}\n\
         token = {TOKEN:?}\npin_file = {:?}\n",
        pki.dir().join("maf.pem").display().to_string(),
        pki.ca_pem().display().to_string(),
        pki.dir().join("maf-data").display().to_string(),
        storage_key.display().to_string(),
        token.pin_file().display().to_string(),
    );
    let maf = ServiceProcess::start_with_env("maf", pki.dir(), &config, &token.env());
    // openssl s_client as the CSE: the MAF proves its name with the key in the token.
    let shown = s_client(maf.addr(), MAF_FQDN, &pki, &cse_pem, &cse_key);
    assert!(
        shown.contains("Verify return code: 0 (ok)"),
        "{shown}\n{}",
        maf.stderr()
    );
    assert!(shown.contains("Cipher is ECDHE-ECDSA"), "{shown}");
    assert_eq!(token.read_value(ObjectClass::PRIVATE_KEY, "maf-key"), None);
}

/// An AE whose certificate key was generated in the token registers over mutual TLS: `m2m
/// request --ae` (and `m2m ae`, the same configuration) loads OpenSSL's PKCS#11 provider for its
/// `[security.pkcs11]`, and the handshake signs inside the token. Without the token section the
/// configuration is refused; another AE-ID is refused by the CSE (the certificate names the AE).
#[test]
fn an_ae_whose_certificate_key_is_in_the_token_registers_over_mutual_tls() {
    let Some(token) = Token::new() else { return };
    let pki = Pki::temp();
    let uri = certify_token_key(
        &token,
        &pki,
        "phone-key",
        "phone",
        &[
            "--kind", "ae", "--id", "Cphone", "--cse", "/id-in", "--sp", SP_FQDN,
        ],
    );
    let cse = CseProcess::start_temp(&in_tls_config(&pki));
    let ae_config = |with_token: bool| {
        let path = token.dir.path().join(format!("phone-{with_token}.toml"));
        write_private(
            &path,
            &format!(
                "[ae]\nresource_name = \"phone\"\napp_id = \"Nphone\"\noriginator = \"Cphone\"\n\
                 [cse]\nurl = \"{}\"\ncse_id = \"/id-in\"\nresource_name = \"cse-in\"\n\
                 trusted_ca = {:?}\nserver_name = \"{IN_SERVER_NAME}\"\ntimeout_seconds = 5\n\
                 [security]\nmode = \"certificate\"\ncertificate = {:?}\nprivate_key = {uri:?}\n{}",
                cse.https_url(),
                pki.ca_pem(),
                pki.dir().join("phone.pem"),
                if with_token {
                    token.section()
                } else {
                    String::new()
                }
            ),
        );
        path
    };
    let request = |config: &Path, from: &str| {
        Command::new(env!("CARGO_BIN_EXE_m2m"))
            .args(["request", "--ae", config.to_str().unwrap(), "--from", from])
            .args(["-X", "create", "--to", "cse-in", "--ty", "2", "--json"])
            .args([
                "--body",
                r#"{"m2m:ae": {"rn": "phone", "api": "Nphone", "rr": false, "srv": ["3"]}}"#,
            ])
            .envs(token.env())
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    let with_token = ae_config(true);
    let out = request(&with_token, "Cphone");
    let created = json_stdout(&out);
    assert_eq!(created["rsc"], 2001, "{created}");
    assert_eq!(created["pc"]["m2m:ae"]["aei"], "Cphone", "{created}");
    // The certificate names Cphone: another AE-ID over it is refused by the CSE.
    let other = json_stdout(&request(&with_token, "Cother"));
    assert_eq!(other["rsc"], 4106, "{other}");
    // The key is the token's: no file holds it, and without the token's section nothing starts.
    assert!(!pki.dir().join("phone.key").exists());
    let out = request(&ae_config(false), "Cphone");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("private_key names a key in a token (pkcs11:): configure the token in [security.pkcs11]"),
        "{err}"
    );
    // A PIN file others may read is refused before OpenSSL's provider is given it.
    let open_pin = token.dir.path().join("open-pin");
    std::fs::write(&open_pin, PIN).unwrap();
    let open = token.dir.path().join("phone-open-pin.toml");
    let text = std::fs::read_to_string(&with_token).unwrap().replace(
        &token.pin_file().display().to_string(),
        &open_pin.display().to_string(),
    );
    write_private(&open, &text);
    let out = request(&open, "Cphone");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("[security.pkcs11] pin_file"),
        "{err}"
    );
}
