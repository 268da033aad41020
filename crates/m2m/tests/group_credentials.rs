//! Group credentials end to end (seeds/001 clause 5.1) and secure group communication (clause 5.4)
//! between processes: an IN-CSE (M2M server) and an MN-CSE (the gateway) over mutual TLS, the
//! locks and the gateway app as AEs on the MN, and the `m2m e2e` commands the AEs run.
//!
//! The IN generates a group key for a <group> on the MN and delivers it to each member sealed under
//! the member's own key (A128KW, or ECDH-ES+A128KW to a P-256 key with the server's signature),
//! through the MN. The gateway app signs a command and encrypts it under the group key, and sends
//! it through the <group>'s fan-out. Attacks: a non-admin asks for a distribution (4103), the
//! gateway cannot read a relayed credential (its database holds no key), a member of another
//! group cannot open the command, an altered or forged command fails, the MN stores only
//! ciphertext; an old credential re-posted into a member's container after a rekey is refused
//! (the member remembers the newest version), and so is one whose version was raised.

mod common;

use common::*;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::Output;

const COMMAND: &str = r#"{"cmd":"unlock","door":"front"}"#;

/// What a successful `m2m` command printed.
fn ok(args: &[&str]) -> String {
    String::from_utf8_lossy(&m2m(args).stdout).into_owned()
}

fn p(path: &Path) -> String {
    path.display().to_string()
}

/// `m2m e2e keygen` into `dir`; returns the key file and what it printed.
fn keygen(dir: &Path, kty: &str, kid: &str, bytes: &str) -> (PathBuf, String) {
    let file = dir.join(format!("{kid}.jwk"));
    let out = ok(&[
        "e2e",
        "keygen",
        "--kty",
        kty,
        "--kid",
        kid,
        "--bytes",
        bytes,
        "--out",
        &p(&file),
    ]);
    (file, out)
}

/// The raw `k` of an oct JWK file.
fn oct_key(file: &Path) -> Vec<u8> {
    let v: Value = serde_json::from_str(&std::fs::read_to_string(file).unwrap()).unwrap();
    m2m_keyservices::maf::jwk::b64url_decode(v["k"].as_str().unwrap())
        .unwrap()
        .to_vec()
}

/// The `k` of an oct JWK file, in hex (the form of a [group_credentials] row).
fn oct_hex(file: &Path) -> String {
    hex::encode(oct_key(file))
}

fn jwk_member(file: &Path, m: &str) -> String {
    let v: Value = serde_json::from_str(&std::fs::read_to_string(file).unwrap()).unwrap();
    v[m].as_str().unwrap().to_owned()
}

struct Home {
    in_cse: CseProcess,
    mn: CseProcess,
    dir: tempfile::TempDir,
    _pki: Pki,
}

impl Home {
    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Every byte the MN-CSE keeps on disk (database and write-ahead log).
    fn mn_bytes(&self) -> Vec<u8> {
        let mut all = Vec::new();
        for e in std::fs::read_dir(self.mn.data_dir()).unwrap() {
            all.extend(std::fs::read(e.unwrap().path()).unwrap_or_default());
        }
        all
    }

    /// The latest contentInstance of `container` as its AE reads it on the MN, saved to a file.
    fn read_latest(&self, container: &str, from: &str, name: &str) -> PathBuf {
        let (rsc, b) = retrieve(self.mn.url(), &format!("{container}/la"), from);
        assert_eq!(rsc, 2000, "{container}: {b}");
        let file = self.path(name);
        std::fs::write(&file, b.to_string()).unwrap();
        file
    }
}

/// Keys: lock1 and lock3 and the gateway app share a key with the server, lock2 has a P-256 key;
/// the server signs with its own P-256 key. The IN's [group_credentials] names them.
fn start_home() -> Home {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (lock1, _) = keygen(d, "oct", "lock1-e2e", "16");
    let (_, lock2_pub) = keygen(d, "ec", "lock2-e2e", "32");
    std::fs::write(d.join("lock2.pub.jwk"), &lock2_pub).unwrap();
    let (lock3, _) = keygen(d, "oct", "lock3-e2e", "16");
    let (gw, _) = keygen(d, "oct", "gw-e2e", "16");
    let (server, server_pub) = keygen(d, "ec", "in-server", "32");
    std::fs::write(d.join("server.pub.jwk"), &server_pub).unwrap();
    let pki = Pki::temp();
    let cfg = format!(
        "{}\n[group_credentials]\nsigning_key = {:?}\n\n\
         [[group_credentials.members]]\nmember = \"/id-mn/Clock1\"\nkid = \"lock1-e2e\"\nkey = \"{}\"\n\n\
         [[group_credentials.members]]\nmember = \"/id-mn/Clock2\"\npublic_jwk = {:?}\n\n\
         [[group_credentials.members]]\nmember = \"/id-mn/Clock3\"\nkid = \"lock3-e2e\"\nkey = \"{}\"\n\n\
         [[group_credentials.members]]\nmember = \"/id-mn/Cgw\"\nkid = \"gw-e2e\"\nkey = \"{}\"\n",
        in_tls_config(&pki),
        p(&server),
        oct_hex(&lock1),
        p(&d.join("lock2.pub.jwk")),
        oct_hex(&lock3),
        oct_hex(&gw),
    );
    let in_cse = CseProcess::start_temp(&cfg);
    let mn = CseProcess::start_temp(&mn_config(in_cse.https_url(), &pki));
    wait_registered(&in_cse, &mn);
    let home = Home {
        in_cse,
        mn,
        dir,
        _pki: pki,
    };
    setup_aes(&home);
    home
}

/// The AEs on the MN: each grants the M2M server (/id-in) retrieve on itself and create on its
/// credential container, and the gateway app create on its command container.
fn setup_aes(home: &Home) {
    let u = home.mn.url();
    for (aei, rn) in [
        ("Cgw", "gw"),
        ("Clock1", "lock1"),
        ("Clock2", "lock2"),
        ("Clock3", "lock3"),
    ] {
        assert_eq!(register_ae(u, "/cse-mn", aei, rn, &[]), aei);
        let parent = format!("/cse-mn/{rn}");
        let acp = create_acp(
            u,
            &parent,
            aei,
            "server",
            vec![
                acr(&["/id-in", "Cgw"], OP_RETRIEVE | OP_CREATE),
                acr(&[aei], OP_ALL),
            ],
            vec![acr(&[aei], OP_ALL)],
        );
        let (rsc, b) = update(u, &parent, aei, json!({ "m2m:ae": { "acpi": [acp] } }));
        assert_eq!(rsc, 2004, "{b}");
        for cnt in ["credentials", "cmd"] {
            create_cnt(u, &parent, aei, json!({ "rn": cnt, "acpi": [acp] }));
        }
    }
    // The groups, hosted on the MN by the gateway app; the server's admin may read them.
    let gacp = create_acp(
        u,
        "/cse-mn/gw",
        "Cgw",
        "groups",
        vec![acr(&["/id-in/CAdmin"], OP_RETRIEVE), acr(&["Cgw"], OP_ALL)],
        vec![acr(&["Cgw"], OP_ALL)],
    );
    for (rn, mid) in [
        ("grpA", vec!["/id-mn/cse-mn/lock1", "/id-mn/cse-mn/lock2"]),
        ("grpB", vec!["/id-mn/cse-mn/lock3"]),
    ] {
        let r = create_full(
            u,
            "/cse-mn/gw",
            "Cgw",
            9,
            json!({ "m2m:grp": { "rn": rn, "mt": 2, "mnm": 10, "mid": mid, "acpi": [gacp] } }),
        );
        assert_eq!(r.rsc, 2001, "{:?}", r.body);
        assert_eq!(r.body["m2m:grp"]["cnm"], json!(mid.len()), "{:?}", r.body);
    }
}

/// The admin asks the IN-CSE to distribute a key for `grp` (and to the gateway app as sender);
/// returns the answer (`m2m:gcRsp`).
fn distribute(home: &Home, grp: &str, kid: &str) -> Value {
    let (rsc, b) = notify(
        home.in_cse.url(),
        "/cse-in",
        "CAdmin",
        json!({ "m2m:gcReq": { "grp": grp, "kid": kid, "snd": ["/id-mn/cse-mn/gw"] } }),
    );
    assert_eq!(rsc, 2000, "{b}");
    let dlv = b["m2m:gcRsp"]["dlv"].as_array().unwrap().clone();
    assert!(dlv.iter().all(|d| d["rsc"] == json!(2001)), "{b}");
    b
}

/// `m2m e2e open-credential` as the member `aei` (key `<rn>-e2e.jwk`, state `<rn>.state` unless
/// `--state` is in `extra`) on the saved contentInstance `cin`, writing the group key to `out`.
fn try_open(home: &Home, rn: &str, aei: &str, cin: &Path, out: &Path, extra: &[&str]) -> Output {
    let member = format!("/id-mn/{aei}");
    let key = p(&home.path(&format!("{rn}-e2e.jwk")));
    let cin = format!("@{}", p(cin));
    let state = p(&home.path(&format!("{rn}.state")));
    let state = match extra.iter().position(|a| *a == "--state") {
        Some(i) => extra[i + 1].to_owned(),
        None => state,
    };
    let extra: Vec<&str> = match extra.iter().position(|a| *a == "--state") {
        Some(i) => [&extra[..i], &extra[i + 2..]].concat(),
        None => extra.to_vec(),
    };
    let out = p(out);
    let mut args = vec![
        "e2e",
        "open-credential",
        "--member-id",
        &member,
        "--key",
        &key,
        "--cin",
        &cin,
        "--out",
        &out,
        "--state",
        &state,
    ];
    args.extend(extra);
    m2m_command(&args)
}

/// A member opens its latest credential; returns the group key file.
fn open_credential(home: &Home, rn: &str, aei: &str, extra: &[&str]) -> PathBuf {
    let cin = home.read_latest(
        &format!("/cse-mn/{rn}/credentials"),
        aei,
        &format!("{rn}-cred.json"),
    );
    let out = home.path(&format!("{rn}-group.jwk"));
    let done = try_open(home, rn, aei, &cin, &out, extra);
    assert!(
        done.status.success(),
        "{}",
        String::from_utf8_lossy(&done.stderr)
    );
    out
}

/// A refusal of `m2m e2e`: exit code 1 and the `{"rsc", "error"}` it printed.
fn refusal(out: &Output) -> (u16, String) {
    assert_eq!(
        out.status.code(),
        Some(1),
        "{} {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let v = json_stdout(out);
    (
        v["rsc"].as_u64().unwrap() as u16,
        v["error"].as_str().unwrap().to_owned(),
    )
}

#[test]
fn the_server_distributes_group_keys_that_only_the_members_can_open() {
    let home = start_home();
    let answer = distribute(&home, "/id-mn/cse-mn/gw/grpA", "grpA-1");
    assert_eq!(answer["m2m:gcRsp"]["kid"], json!("grpA-1"));
    let server_pub = p(&home.path("server.pub.jwk"));

    let k1 = open_credential(&home, "lock1", "Clock1", &[]);
    let k2 = open_credential(&home, "lock2", "Clock2", &["--server", &server_pub]);
    let kg = open_credential(&home, "gw", "Cgw", &[]);
    let group_key = jwk_member(&k1, "k");
    assert_eq!(jwk_member(&k1, "kid"), "grpA-1");
    assert_eq!(
        jwk_member(&k2, "k"),
        group_key,
        "every member holds the same group key"
    );
    assert_eq!(jwk_member(&kg, "k"), group_key);

    // The gateway relayed and stores the credentials, but not the key: not in its database,
    // not in what it serves.
    let stored = home.mn_bytes();
    assert!(
        !stored
            .windows(group_key.len())
            .any(|w| w == group_key.as_bytes()),
        "the MN's files hold the group key"
    );
    let served = std::fs::read_to_string(home.path("lock1-cred.json")).unwrap();
    assert!(!served.contains(&group_key), "{served}");

    // Another member's key opens nothing (lock3 tries lock1's credential).
    let stolen = home.path("lock1-cred.json");
    let out = m2m_command(&[
        "e2e",
        "open-credential",
        "--member-id",
        "/id-mn/Clock3",
        "--key",
        &p(&home.path("lock3-e2e.jwk")),
        "--cin",
        &format!("@{}", p(&stolen)),
        "--out",
        &p(&home.path("stolen.jwk")),
        "--state",
        &p(&home.path("lock3.state")),
    ]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!home.path("stolen.jwk").exists());
    assert!(!String::from_utf8_lossy(&out.stdout).contains(&group_key));

    // Only the admin triggers a distribution.
    assert_eq!(
        register_ae(home.in_cse.url(), "/cse-in", "Cmallory", "mallory", &[]),
        "Cmallory"
    );
    let (rsc, b) = notify(
        home.in_cse.url(),
        "/cse-in",
        "Cmallory",
        json!({ "m2m:gcReq": { "grp": "/id-mn/cse-mn/gw/grpA" } }),
    );
    assert_eq!(rsc, 4103, "{b}");
    // The logs name the distribution, never the group key or a member's key.
    let logs = [
        home.in_cse.stderr(),
        home.in_cse.stdout(),
        home.mn.stderr(),
        home.mn.stdout(),
    ];
    let group = m2m_keyservices::maf::jwk::b64url_decode(&group_key).unwrap();
    let members =
        ["lock1-e2e", "lock3-e2e", "gw-e2e"].map(|kid| oct_key(&home.path(&format!("{kid}.jwk"))));
    assert_no_secret(&logs, &[group]);
    assert_no_secret(&logs, &members);
}

#[test]
fn members_open_the_gateways_group_command_and_others_cannot() {
    let home = start_home();
    distribute(&home, "/id-mn/cse-mn/gw/grpA", "grpA-1");
    distribute(&home, "/id-mn/cse-mn/gw/grpB", "grpB-1");
    let server_pub = p(&home.path("server.pub.jwk"));
    let k1 = open_credential(&home, "lock1", "Clock1", &[]);
    let k2 = open_credential(&home, "lock2", "Clock2", &["--server", &server_pub]);
    let k3 = open_credential(&home, "lock3", "Clock3", &[]);
    // The gateway app's latest credential is grpB's; it sends to grpA with grpA's key, which
    // the test takes from lock1 (the same key the gateway got first).
    let (gw_sig, gw_pub) = keygen(home.dir.path(), "ec", "gw-sig", "32");
    std::fs::write(home.path("gw-sig.pub.jwk"), &gw_pub).unwrap();
    let gw_pub = p(&home.path("gw-sig.pub.jwk"));

    let body = ok(&[
        "e2e",
        "seal-command",
        "--signer",
        &p(&gw_sig),
        "--group-key",
        &p(&k1),
        "--content",
        COMMAND,
    ]);
    assert!(!body.contains("unlock"), "{body}");
    let out = ok(&[
        "request",
        "--url",
        home.mn.url(),
        "-X",
        "create",
        "--ty",
        "4",
        "--to",
        "cse-mn/gw/grpA/fopt/cmd",
        "--from",
        "Cgw",
        "--json",
        "--body",
        body.trim(),
    ]);
    let v: Value = serde_json::from_str(out.trim()).unwrap();
    let rsps = v["pc"]["m2m:agr"]["m2m:rsp"].as_array().unwrap();
    assert_eq!(rsps.len(), 2, "{v}");
    assert!(rsps.iter().all(|r| r["rsc"] == json!(2001)), "{v}");

    // Both members of grpA open and verify it.
    for (rn, aei, key) in [("lock1", "Clock1", &k1), ("lock2", "Clock2", &k2)] {
        let cin = home.read_latest(&format!("/cse-mn/{rn}/cmd"), aei, &format!("{rn}-cmd.json"));
        let opened = ok(&[
            "e2e",
            "open-command",
            "--group-key",
            &p(key),
            "--signer",
            &gw_pub,
            "--cin",
            &format!("@{}", p(&cin)),
        ]);
        assert_eq!(opened.trim(), COMMAND);
    }
    // The MN stored only ciphertext.
    let stored = home.mn_bytes();
    assert!(
        !stored.windows(6).any(|w| w == b"unlock"),
        "plaintext in the MN's files"
    );

    let cmd = home.path("lock1-cmd.json");
    let refused = |key: &Path, cin: &Path| {
        let out = m2m_command(&[
            "e2e",
            "open-command",
            "--group-key",
            &p(key),
            "--signer",
            &gw_pub,
            "--cin",
            &format!("@{}", p(cin)),
        ]);
        assert_eq!(
            out.status.code(),
            Some(1),
            "{}",
            String::from_utf8_lossy(&out.stdout)
        );
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(!stdout.contains("unlock"), "{stdout}");
        stdout
    };
    // A member of another group (grpB's key) cannot decrypt it.
    refused(&k3, &cmd);

    // Altered on the way: one character of the ciphertext.
    let mut v: Value = serde_json::from_str(&std::fs::read_to_string(&cmd).unwrap()).unwrap();
    let con = v["m2m:cin"]["con"].as_str().unwrap().to_owned();
    let mut parts: Vec<String> = con.split('.').map(str::to_owned).collect();
    let first = if parts[3].starts_with('A') { "B" } else { "A" };
    parts[3].replace_range(0..1, first);
    v["m2m:cin"]["con"] = json!(parts.join("."));
    let altered = home.path("altered.json");
    std::fs::write(&altered, v.to_string()).unwrap();
    refused(&k1, &altered);

    // Forged: a member holding the group key signs a command under the gateway's kid.
    let forger = home.path("forger.jwk");
    ok(&[
        "e2e",
        "keygen",
        "--kty",
        "ec",
        "--kid",
        "gw-sig",
        "--out",
        &p(&forger),
    ]);
    let forged = ok(&[
        "e2e",
        "seal-command",
        "--signer",
        &p(&forger),
        "--group-key",
        &p(&k2),
        "--content",
        COMMAND,
    ]);
    let forged_file = home.path("forged.json");
    std::fs::write(&forged_file, forged).unwrap();
    let why = refused(&k1, &forged_file);
    assert!(why.contains("4106"), "{why}");
}

/// The credential con of a saved contentInstance (`m2m:cin`).
fn con_of(cin: &Path) -> String {
    let v: Value = serde_json::from_str(&std::fs::read_to_string(cin).unwrap()).unwrap();
    v["m2m:cin"]["con"].as_str().unwrap().to_owned()
}

#[test]
fn a_member_refuses_an_old_credential_re_posted_after_a_rekey() {
    let home = start_home();
    let server_pub = p(&home.path("server.pub.jwk"));
    let v1 = distribute(&home, "/id-mn/cse-mn/gw/grpA", "grpA-1")["m2m:gcRsp"].clone();
    assert_eq!(v1["gid"], json!("/id-mn/cse-mn/gw/grpA"));
    let cred1 = home.read_latest("/cse-mn/lock1/credentials", "Clock1", "lock1-v1.json");
    let cred1_ec = home.read_latest("/cse-mn/lock2/credentials", "Clock2", "lock2-v1.json");
    let opened = json_stdout(&try_open(
        &home,
        "lock1",
        "Clock1",
        &cred1,
        &home.path("lock1-k1.jwk"),
        &[],
    ));
    assert_eq!(opened["ver"], v1["ver"], "{opened}");
    assert_eq!(opened["gid"], v1["gid"], "{opened}");
    assert_eq!(opened["kid"], json!("grpA-1"));
    // The state file remembers it, private to the member.
    let state = home.path("lock1.state");
    assert!(std::fs::read_to_string(&state)
        .unwrap()
        .contains("/id-mn/cse-mn/gw/grpA"));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&state).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }

    // The rekey (e.g. after a member left): a higher version, opened over the first.
    let v2 = distribute(&home, "/id-mn/cse-mn/gw/grpA", "grpA-2")["m2m:gcRsp"].clone();
    assert!(
        v2["ver"].as_u64().unwrap() > v1["ver"].as_u64().unwrap(),
        "{v1} {v2}"
    );
    let cred2 = home.read_latest("/cse-mn/lock1/credentials", "Clock1", "lock1-v2.json");
    let opened = json_stdout(&try_open(
        &home,
        "lock1",
        "Clock1",
        &cred2,
        &home.path("lock1-k2.jwk"),
        &["--max-age", "3600", "--group", "/id-mn/cse-mn/gw/grpA"],
    ));
    assert_eq!(opened["ver"], v2["ver"], "{opened}");
    assert_eq!(opened["kid"], json!("grpA-2"));
    let cred2_ec = home.read_latest("/cse-mn/lock2/credentials", "Clock2", "lock2-v2.json");
    let ec = ["--server", server_pub.as_str()];
    let opened = json_stdout(&try_open(
        &home,
        "lock2",
        "Clock2",
        &cred2_ec,
        &home.path("lock2-k2.jwk"),
        &ec,
    ));
    assert_eq!(opened["ver"], v2["ver"], "{opened}");

    // Someone who may write the credential containers (here the gateway app) re-posts the real
    // sealed v1 bytes: they become the latest instance, and the members refuse them.
    let u = home.mn.url();
    for (rn, aei, cred, extra) in [
        ("lock1", "Clock1", &cred1, &[][..]),
        ("lock2", "Clock2", &cred1_ec, &ec[..]),
    ] {
        let old = con_of(cred);
        let r = create_full(
            u,
            &format!("/cse-mn/{rn}/credentials"),
            "Cgw",
            4,
            json!({ "m2m:cin": { "cnf": "application/jose:0:1", "con": old } }),
        );
        assert_eq!(r.rsc, 2001, "{:?}", r.body);
        let replayed = home.read_latest(
            &format!("/cse-mn/{rn}/credentials"),
            aei,
            &format!("{rn}-replayed.json"),
        );
        assert_eq!(
            con_of(&replayed),
            old,
            "the latest instance is the old credential"
        );
        let out = home.path(&format!("{rn}-rolled-back.jwk"));
        let (rsc, why) = refusal(&try_open(&home, rn, aei, &replayed, &out, extra));
        assert_eq!(rsc, 4106, "{why}");
        assert!(why.contains("replayed or out of order"), "{why}");
        assert!(why.contains(v1["ver"].to_string().as_str()), "{why}");
        assert!(!out.exists(), "no key was written");
        // Equal is refused too: the member's current v2, opened again.
        let again = if rn == "lock1" { &cred2 } else { &cred2_ec };
        let (_, why) = refusal(&try_open(&home, rn, aei, again, &out, extra));
        assert!(why.contains("replayed or out of order"), "{why}");
    }
    // The replay is a genuine credential: a member without that state would have rolled back.
    let fresh = json_stdout(&try_open(
        &home,
        "lock1",
        "Clock1",
        &cred1,
        &home.path("naive.jwk"),
        &["--state", &p(&home.path("naive.state"))],
    ));
    assert_eq!(fresh["kid"], json!("grpA-1"));

    // Raising the version of the real v1 breaks the seal (the JWE header is authenticated) ...
    let mut forged: Value =
        serde_json::from_str(&std::fs::read_to_string(&cred1).unwrap()).unwrap();
    let raised = v2["ver"].as_u64().unwrap() + 1_000_000;
    forged["m2m:cin"]["con"] = json!(with_header(&con_of(&cred1), "ver", json!(raised)));
    let forged_file = home.path("lock1-forged.json");
    std::fs::write(&forged_file, forged.to_string()).unwrap();
    let out = home.path("lock1-forged.jwk");
    let (rsc, why) = refusal(&try_open(&home, "lock1", "Clock1", &forged_file, &out, &[]));
    assert_eq!(rsc, 4106, "{why}");
    assert!(
        !why.contains("replayed"),
        "a seal failure, not a freshness one: {why}"
    );
    assert!(!out.exists());

    // ... another group than the one asked for, and a credential past --max-age, are refused.
    let (_, why) = refusal(&try_open(
        &home,
        "lock1",
        "Clock1",
        &cred2,
        &out,
        &[
            "--group",
            "/id-mn/cse-mn/gw/grpB",
            "--state",
            &p(&home.path("other.state")),
        ],
    ));
    assert!(why.contains("not \"/id-mn/cse-mn/gw/grpB\""), "{why}");
    std::thread::sleep(std::time::Duration::from_millis(2100));
    let (_, why) = refusal(&try_open(
        &home,
        "lock1",
        "Clock1",
        &cred2,
        &out,
        &["--max-age", "1", "--state", &p(&home.path("other.state"))],
    ));
    assert!(why.contains("older than the maximum age of 1 s"), "{why}");
}
