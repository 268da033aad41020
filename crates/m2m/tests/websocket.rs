//! The WebSocket binding (TS-0020) against a client we did not write: Python `websockets` over
//! TLS with an AE certificate from `m2m pki` (a SAEF before the WebSocket handshake, clause 7),
//! subprotocol `oneM2M.json`. The AE registers on its connection and receives its notification
//! on it; another AE's connection neither speaks for it nor hears its notifications.

mod common;

use common::*;
use serde_json::{json, Value};
use std::io::BufRead;
use std::process::{Child, Command, Stdio};

fn python_has(module: &str) -> bool {
    have_python_module(module, "the WebSocket binding tests")
}

/// The Python client: connects over TLS with its certificate, sends each step and answers any
/// request the CSE sends meanwhile (notifications, verification included); a step with Response
/// Type noResponse (5) is not waited for, and an answer to no step being waited for is kept as
/// `stray`; prints `{"ready": ...}`, then waits for `events` event notifications and prints
/// everything.
const CLIENT: &str = r#"
import asyncio, json, ssl, sys
import websockets

spec = json.loads(sys.argv[1])

async def main():
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(spec["ca"])
    ctx.load_cert_chain(spec["cert"], spec["key"])
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_ciphers("ECDHE-ECDSA-AES128-SHA256")
    out = {"answers": [], "notifications": [], "stray": []}
    async with websockets.connect(spec["url"], ssl=ctx, server_hostname=spec["server_name"],
                                  subprotocols=spec.get("subprotocols", ["oneM2M.json"])) as ws:
        out["subprotocol"] = ws.subprotocol

        async def read_one(timeout):
            msg = json.loads(await asyncio.wait_for(ws.recv(), timeout))
            if "op" in msg:
                out["notifications"].append(msg)
                await ws.send(json.dumps({"rsc": 2000, "rqi": msg["rqi"]}))
                return None
            return msg

        for step in spec["steps"]:
            await ws.send(json.dumps(step))
            if step.get("rt", {}).get("rtv") == 5:
                continue
            while True:
                msg = await read_one(10)
                if msg is None:
                    continue
                if msg.get("rqi") == step["rqi"]:
                    out["answers"].append(msg)
                    break
                out["stray"].append(msg)
        print(json.dumps({"ready": out}), flush=True)
        events = lambda: [n for n in out["notifications"] if not n.get("pc", {}).get("m2m:sgn", {}).get("vrq")]
        try:
            while len(events()) < spec.get("events", 0):
                msg = await read_one(spec.get("wait", 10))
                if msg is not None:
                    out["stray"].append(msg)
        except asyncio.TimeoutError:
            pass
    print(json.dumps(out), flush=True)

asyncio.run(main())
"#;

/// The port of the CSE's `wss://` listener, from its listening line.
fn wss_port(cse: &CseProcess) -> u16 {
    poll(WAIT, || {
        cse.stdout().lines().find_map(|l| {
            l.strip_prefix("m2m-cse listening wss://")
                .and_then(|a| a.rsplit(':').next())
                .and_then(|p| p.trim().parse().ok())
        })
    })
    .expect("the CSE prints its wss listener")
}

struct PyClient {
    child: Child,
    lines: std::io::Lines<std::io::BufReader<std::process::ChildStdout>>,
}

impl PyClient {
    fn start(dir: &std::path::Path, spec: Value) -> PyClient {
        let script = dir.join("ws_ae.py");
        std::fs::write(&script, CLIENT).unwrap();
        let mut child = Command::new("python3")
            .arg(&script)
            .arg(spec.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3 runs");
        let lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
        PyClient { child, lines }
    }

    fn line(&mut self) -> Value {
        let l = self
            .lines
            .next()
            .and_then(Result::ok)
            .unwrap_or_else(|| panic!("the websockets client printed nothing more"));
        serde_json::from_str(&l).unwrap_or_else(|e| panic!("{e}: {l}"))
    }

    fn finish(mut self) -> Value {
        let v = self.line();
        assert!(self.child.wait().unwrap().success());
        v
    }
}

fn rqp(op: u8, to: &str, fr: &str, rqi: &str, ty: Option<u16>, pc: Option<Value>) -> Value {
    let mut v = json!({"op": op, "to": to, "fr": fr, "rqi": rqi, "rvi": "3"});
    if let Some(ty) = ty {
        v["ty"] = json!(ty);
    }
    if let Some(pc) = pc {
        v["pc"] = pc;
    }
    v
}

#[test]
fn a_python_websockets_client_registers_and_hears_its_notification_over_wss() {
    if !python_has("websockets") {
        return;
    }
    let pki = Pki::temp();
    let mut tls = tls_section(&pki, "id-in");
    tls.push_str("wss_listen = \"127.0.0.1:0\"\nwss_origins = [\"https://app.m2m.example.com\"]\n");
    let cse = CseProcess::start_temp(&tls);
    let port = wss_port(&cse);
    let url = format!("wss://127.0.0.1:{port}/");
    let (phone_pem, phone_key) = pki.issue(
        &["--kind", "ae", "--id", "Cphone", "--cse", "/id-in"],
        "phone",
    );
    let (lock_pem, lock_key) = pki.issue(
        &["--kind", "ae", "--id", "Clock", "--cse", "/id-in"],
        "lock",
    );
    let base = |cert: &std::path::Path, key: &std::path::Path| json!({"url": url, "ca": pki.ca_pem(), "cert": cert, "key": key, "server_name": IN_SERVER_NAME});

    // The phone: registers, makes its door and subscribes to it, all on its connection; then
    // a CREATE with Response Type noResponse: carried out, and no message comes back for it.
    let mut quiet = rqp(
        1,
        "cse-in/phone",
        "Cphone",
        "quiet",
        Some(3),
        Some(json!({"m2m:cnt": {"rn": "quiet"}})),
    );
    quiet["rt"] = json!({"rtv": 5});
    let mut spec = base(&phone_pem, &phone_key);
    spec["steps"] = json!([
        rqp(
            1,
            "cse-in",
            "Cphone",
            "reg",
            Some(2),
            Some(json!({"m2m:ae": {"rn": "phone", "api": "Nphone", "rr": false, "srv": ["3"]}}))
        ),
        rqp(
            1,
            "cse-in/phone",
            "Cphone",
            "cnt",
            Some(3),
            Some(json!({"m2m:cnt": {"rn": "door"}}))
        ),
        rqp(
            1,
            "cse-in/phone/door",
            "Cphone",
            "sub",
            Some(23),
            Some(json!({"m2m:sub": {"rn": "watch", "nu": ["Cphone"], "enc": {"net": [3]}}}))
        ),
        quiet,
        rqp(2, "cse-in/phone/quiet", "Cphone", "after-quiet", None, None),
    ]);
    spec["events"] = json!(1);
    let mut phone = PyClient::start(pki.dir(), spec);
    let ready = phone.line();
    let r = &ready["ready"];
    assert_eq!(r["subprotocol"], "oneM2M.json", "{r}");
    let codes: Vec<&Value> = r["answers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| &a["rsc"])
        .collect();
    // The requests of one connection are carried out concurrently: the RETRIEVE after the
    // noResponse CREATE may come first; what counts is that the CREATE was done, unanswered.
    assert_eq!(
        codes[..3],
        [&json!(2001), &json!(2001), &json!(2001)],
        "{r}"
    );
    assert_eq!(
        r["stray"],
        json!([]),
        "an answer to the noResponse request: {r}"
    );
    let done = poll(WAIT, || {
        (retrieve(cse.url(), "/cse-in/phone/quiet", "Cphone").0 == 2000).then_some(())
    });
    assert!(done.is_some(), "the noResponse CREATE was not carried out");
    assert_eq!(r["answers"][0]["pc"]["m2m:ae"]["aei"], "Cphone");

    // The lock, on a connection of its own: it cannot speak as the phone there, and hears none
    // of the phone's notifications.
    let mut spec = base(&lock_pem, &lock_key);
    spec["steps"] = json!([
        rqp(2, "cse-in/phone/door", "Cphone", "as-phone", None, None),
        rqp(
            1,
            "cse-in",
            "Clock",
            "reg-lock",
            Some(2),
            Some(json!({"m2m:ae": {"rn": "lock", "api": "Nlock", "rr": false, "srv": ["3"]}}))
        ),
    ]);
    spec["events"] = json!(1);
    spec["wait"] = json!(2);
    let mut lock = PyClient::start(pki.dir(), spec);
    let lr = lock.line();
    assert_eq!(lr["ready"]["answers"][0]["rsc"], 4106, "{lr}");
    assert_eq!(lr["ready"]["answers"][1]["rsc"], 2001, "{lr}");

    // The door unlocks (over HTTP): the phone hears it on its WebSocket.
    let _ = create_cin(cse.url(), "/cse-in/phone/door", "Cphone", "UNLOCKED");
    let out = phone.finish();
    let events: Vec<&Value> = out["notifications"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|n| n["pc"]["m2m:sgn"]["vrq"].is_null())
        .collect();
    assert_eq!(events.len(), 1, "{out}");
    assert_eq!(
        out["stray"],
        json!([]),
        "an answer to the noResponse request: {out}"
    );
    assert_eq!(
        events[0]["pc"]["m2m:sgn"]["nev"]["rep"]["m2m:cin"]["con"],
        "UNLOCKED"
    );
    assert_eq!(events[0]["op"], 5);
    let lock_out = lock.finish();
    assert!(
        lock_out["notifications"].as_array().unwrap().is_empty(),
        "the lock heard: {lock_out}"
    );
}

#[test]
fn the_handshake_needs_tls_a_one_m2m_subprotocol_and_the_root_path() {
    if !python_has("websockets") {
        return;
    }
    let pki = Pki::temp();
    let mut tls = tls_section(&pki, "id-in");
    tls.push_str("wss_listen = \"127.0.0.1:0\"\nwss_origins = [\"https://app.m2m.example.com\"]\n");
    let cse = CseProcess::start_temp(&tls);
    let port = wss_port(&cse);
    let (pem, key) = pki.issue(
        &["--kind", "ae", "--id", "Cphone", "--cse", "/id-in"],
        "phone",
    );
    let probe = r#"
import asyncio, json, ssl, sys
import websockets
spec = json.loads(sys.argv[1])
async def main():
    ctx = None
    if spec["tls"]:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.load_verify_locations(spec["ca"])
        ctx.load_cert_chain(spec["cert"], spec["key"])
        ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    try:
        kw = {"ssl": ctx, "server_hostname": spec["server_name"]} if ctx else {}
        if spec.get("origin"):
            kw["origin"] = spec["origin"]
        async with websockets.connect(spec["url"], subprotocols=spec["subprotocols"], open_timeout=5, **kw) as ws:
            print(json.dumps({"open": ws.subprotocol}))
    except Exception as e:
        status = getattr(e, "status_code", None) or getattr(getattr(e, "response", None), "status_code", None)
        print(json.dumps({"refused": type(e).__name__, "status": status}))
asyncio.run(main())
"#;
    let script = pki.dir().join("probe.py");
    std::fs::write(&script, probe).unwrap();
    let run_from = |url: String, tls: bool, subprotocols: Value, origin: Option<&str>| -> Value {
        let spec = json!({"url": url, "tls": tls, "ca": pki.ca_pem(), "cert": pem, "key": key,
                          "server_name": IN_SERVER_NAME, "subprotocols": subprotocols, "origin": origin});
        let out = Command::new("python3")
            .arg(&script)
            .arg(spec.to_string())
            .output()
            .unwrap();
        serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|_| panic!("{}", String::from_utf8_lossy(&out.stderr)))
    };
    let run = |url: String, tls: bool, subprotocols: Value| run_from(url, tls, subprotocols, None);
    // A browser page of another origin cannot open one (cross-site WebSocket hijacking); a listed
    // origin can.
    let r = run_from(
        format!("wss://127.0.0.1:{port}/"),
        true,
        json!(["oneM2M.json"]),
        Some("https://evil.example"),
    );
    assert_eq!(r["status"], 403, "{r}");
    let r = run_from(
        format!("wss://127.0.0.1:{port}/"),
        true,
        json!(["oneM2M.json"]),
        Some("https://app.m2m.example.com"),
    );
    assert_eq!(r["open"], "oneM2M.json", "{r}");
    let ok = run(
        format!("wss://127.0.0.1:{port}/"),
        true,
        json!(["oneM2M.xml", "oneM2M.cbor", "oneM2M.json"]),
    );
    assert_eq!(
        ok["open"], "oneM2M.cbor",
        "the client's first the CSE speaks: {ok}"
    );
    let r = run(format!("wss://127.0.0.1:{port}/"), true, json!(["chat"]));
    assert_eq!(r["status"], 400, "no oneM2M subprotocol: {r}");
    let r = run(
        format!("wss://127.0.0.1:{port}/other"),
        true,
        json!(["oneM2M.json"]),
    );
    assert_eq!(r["status"], 404, "not the root path: {r}");
    let r = run(
        format!("ws://127.0.0.1:{port}/"),
        false,
        json!(["oneM2M.json"]),
    );
    assert!(r.get("open").is_none(), "no WebSocket without TLS: {r}");
}

/// `m2m ae` over `wss://` (certificate mode): registers, creates and subscribes on its WebSocket,
/// and prints the notification the CSE sends on it; `[notifications] binding = "websocket"`
/// announces no pointOfAccess.
#[test]
fn m2m_ae_hears_its_notifications_on_its_websocket() {
    let pki = Pki::temp();
    let mut tls = tls_section(&pki, "id-in");
    tls.push_str("wss_listen = \"127.0.0.1:0\"\nwss_origins = [\"https://app.m2m.example.com\"]\n");
    let cse = CseProcess::start_temp(&tls);
    let port = wss_port(&cse);
    let (pem, key) = pki.issue(
        &["--kind", "ae", "--id", "Cphone", "--cse", "/id-in"],
        "phone",
    );
    let config = pki.dir().join("phone.toml");
    std::fs::write(
        &config,
        format!(
            "[ae]\nresource_name = \"phone\"\napp_id = \"Nphone\"\noriginator = \"Cphone\"\n\
             [cse]\nurl = \"wss://127.0.0.1:{port}\"\ncse_id = \"/id-in\"\nresource_name = \"cse-in\"\n\
             trusted_ca = {ca:?}\nserver_name = \"{IN_SERVER_NAME}\"\ntimeout_seconds = 5\n\
             [security]\nmode = \"certificate\"\ncertificate = {pem:?}\nprivate_key = {key:?}\n\
             [notifications]\nbinding = \"websocket\"\n\
             [[create]]\nty = 3\ncontent = {{ \"m2m:cnt\" = {{ rn = \"door\" }} }}\n\
             [[subscribe]]\nto = \"cse-in/phone/door\"\nrn = \"watch\"\n",
            ca = pki.ca_pem(),
        ),
    )
    .unwrap();
    let ae = AeProcess::start(&config);
    let ready = ae.ready(&cse);
    assert_eq!(ready["aei"], "Cphone", "{ready}");
    assert_eq!(ready["poa"], Value::Null, "no pointOfAccess: {ready}");
    let _ = create_cin(cse.url(), "/cse-in/phone/door", "Cphone", "UNLOCKED");
    let note = ae.event(&cse);
    assert_eq!(
        note["notification"]["sgn"]["nev"]["rep"]["m2m:cin"]["con"],
        json!("UNLOCKED"),
        "{note}"
    );
}

/// Semantic query and semantic discovery over WebSocket (the neighbours of the HTTP, CoAP and
/// MQTT tests): `sqi` and `fc.smf` in the request primitive, each AE proven by its certificate
/// and answered from its own descriptors only, never the other AE's.
#[test]
fn semantic_queries_over_wss_read_only_the_originators_descriptors() {
    if !python_has("websockets") {
        return;
    }
    let pki = Pki::temp();
    let mut tls = tls_section(&pki, "id-in");
    tls.push_str("wss_listen = \"127.0.0.1:0\"\n");
    let cse = CseProcess::start_temp(&tls);
    let port = wss_port(&cse);
    let url = format!("wss://127.0.0.1:{port}/");
    let b64 = |t: &str| {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(t)
    };
    let prefixes = "PREFIX m2m: <https://git.onem2m.org/MAS/BaseOntology/raw/master/base_ontology.owl#> PREFIX ex: <http://example.com/> ";
    let turtle = |name: &str, battery: u8| {
        format!("@prefix m2m: <https://git.onem2m.org/MAS/BaseOntology/raw/master/base_ontology.owl#> .\n@prefix ex: <http://example.com/> .\nex:{name} a m2m:Device ; ex:battery {battery} .")
    };
    let certificates: std::collections::HashMap<&str, _> = ["Cphone", "Clock"]
        .into_iter()
        .map(|who| {
            (
                who,
                pki.issue(&["--kind", "ae", "--id", who, "--cse", "/id-in"], who),
            )
        })
        .collect();
    let run = |who: &str, steps: Vec<Value>| -> Vec<Value> {
        let (pem, key) = &certificates[who];
        let spec = json!({
            "url": url, "ca": pki.ca_pem(), "cert": pem, "key": key,
            "server_name": IN_SERVER_NAME, "steps": steps,
        });
        let mut client = PyClient::start(pki.dir(), spec);
        let ready = client.line();
        client.finish();
        ready["ready"]["answers"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    };
    let mut descriptors = Vec::new();
    for (who, rn, name, battery) in [
        ("Cphone", "phone", "frontDoor", 12),
        ("Clock", "lock", "safe", 5),
    ] {
        let answers = run(
            who,
            vec![
                rqp(
                    1,
                    "cse-in",
                    who,
                    "reg",
                    Some(2),
                    Some(json!({"m2m:ae": {"rn": rn, "api": "Nx", "rr": false, "srv": ["3"]}})),
                ),
                rqp(
                    1,
                    &format!("cse-in/{rn}"),
                    who,
                    "cnt",
                    Some(3),
                    Some(json!({"m2m:cnt": {"rn": "c"}})),
                ),
                rqp(
                    1,
                    &format!("cse-in/{rn}/c"),
                    who,
                    "smd",
                    Some(24),
                    Some(
                        json!({"m2m:smd": {"rn": "d", "dcrp": 5, "dsp": b64(&turtle(name, battery))}}),
                    ),
                ),
            ],
        );
        let codes: Vec<&Value> = answers.iter().map(|a| &a["rsc"]).collect();
        assert_eq!(codes, [2001, 2001, 2001], "{who}: {answers:?}");
        descriptors.push(
            answers[2]["pc"]["m2m:smd"]["ri"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    // The admin (on the loopback listener) groups both descriptors; both AEs may read the
    // group, each only its own descriptor.
    let acp = create_acp(
        cse.url(),
        "/cse-in",
        "CAdmin",
        "readers",
        vec![acr(&["Cphone", "Clock"], OP_RETRIEVE)],
        vec![acr(&["CAdmin"], OP_ALL)],
    );
    let (rsc, b) = create(
        cse.url(),
        "/cse-in",
        "CAdmin",
        9,
        json!({ "m2m:grp": { "rn": "both", "mt": 24, "mnm": 10, "mid": descriptors, "acpi": [acp] } }),
    );
    assert_eq!(rsc, 2001, "{b}");
    let devices = format!("{prefixes}SELECT ?d WHERE {{ ?d a m2m:Device }}");
    let low = format!("{prefixes}SELECT ?d WHERE {{ ?d ex:battery ?b FILTER(?b < 20) }}");
    for (who, own, other, own_cnt) in [
        ("Cphone", "frontDoor", "safe", "cse-in/phone/c"),
        ("Clock", "safe", "frontDoor", "cse-in/lock/c"),
    ] {
        let mut query = rqp(2, "cse-in", who, "q", None, None);
        query["sqi"] = json!(true);
        query["fc"] = json!({"smf": [devices]});
        let mut discovery = rqp(2, "cse-in", who, "fu", None, None);
        discovery["fc"] = json!({"fu": 1, "smf": [low]});
        // Through the group's semanticFanOutPoint: each member retrieved as the AE.
        let mut fan_out = rqp(2, "cse-in/both/sfop", who, "sfop", None, None);
        fan_out["sqi"] = json!(true);
        fan_out["fc"] = json!({"smf": [devices]});
        let answers = run(who, vec![query, discovery, fan_out]);
        assert_eq!(answers.len(), 3, "{who}: {answers:?}");
        // The query through sfop (2) and the direct one (0) each find the AE's own descriptor only.
        for (i, how) in [(2, "through sfop"), (0, "directly")] {
            assert_eq!(answers[i]["rsc"], 2000, "{who} {how}: {answers:?}");
            let text = answers[i]["pc"]["m2m:qres"].as_str().expect("qres is text");
            assert!(text.contains(own), "{who} {how}: {text}");
            assert!(
                !text.contains(other),
                "{who} read another's descriptor {how}: {text}"
            );
        }
        assert_eq!(answers[1]["rsc"], 2000, "{who}: {answers:?}");
        assert_eq!(
            answers[1]["pc"]["m2m:uril"],
            json!([own_cnt]),
            "{who}: {answers:?}"
        );
    }
}
