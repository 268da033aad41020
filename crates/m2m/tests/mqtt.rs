//! The MQTT binding (TS-0010) against software we did not write: mosquitto as the MQTT server,
//! configured by `m2m mqtt-broker-config`; `mosquitto_rr` (mosquitto's own client) and Python
//! paho-mqtt (over TLS-PSK from sslpsk3) as the AEs. Every request travels over TLS-PSK to the
//! server; the server lets each credential publish only on its own topics, and the CSE holds
//! each request's From to the topic it came on.

mod common;

use common::*;
use serde_json::{json, Value};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const CSE_IDENTITY: &str = "cse-mqtt@in.provider.com";
const CSE_KEY: &str = "00112233445566778899aabbccddeeff";
/// The front lock: its PSK row is bound to the AE-ID Slock.
const LOCK: (&str, &str) = (
    "AE123456789012-Lock@in.provider.com",
    "1a2b3c4d5e6f7a8b1a2b3c4d5e6f7a8b",
);
/// The phone: its credential is bound to nothing; it registers on the registration topic.
const PHONE: (&str, &str) = ("phone@in.provider.com", "0f0e0d0c0b0a09080706050403020100");
/// Another holder of a valid credential, who would act as the lock.
const MALLORY: (&str, &str) = (
    "mallory@in.provider.com",
    "deadbeefdeadbeefdeadbeefdeadbeef",
);

/// The CSE's configuration for both `m2m cse` and `m2m mqtt-broker-config`.
fn config(port: u16, dir: &Path) -> String {
    format!(
        r#"
[mqtt]
broker = "mqtts://127.0.0.1:{port}"
psk_identity = "{CSE_IDENTITY}"
acl_file = {acl}
broker_pid_file = {pid}

[[security.psk]]
kpsa_id = "{CSE_IDENTITY}"
key = "{CSE_KEY}"

[[security.psk]]
entity = "Slock"
kpsa_id = "{lock}"
key = "{lock_key}"

[[security.psk]]
kpsa_id = "{phone}"
key = "{phone_key}"

[[security.psk]]
kpsa_id = "{mallory}"
key = "{mallory_key}"

[[registration.rules]]
apci = ["12-*@in.provider.com"]
aai = ["*"]
aae = ["C*", "S*"]
"#,
        acl = toml_str(&dir.join("acl")),
        pid = toml_str(&dir.join("mosquitto.pid")),
        lock = LOCK.0,
        lock_key = LOCK.1,
        phone = PHONE.0,
        phone_key = PHONE.1,
        mallory = MALLORY.0,
        mallory_key = MALLORY.1,
    )
}

fn toml_str(p: &Path) -> String {
    toml::Value::String(p.display().to_string()).to_string()
}

/// mosquitto, the CSE, and the directory of the server's files.
struct Setup {
    broker: Child,
    cse: CseProcess,
    port: u16,
    dir: tempfile::TempDir,
}

impl Drop for Setup {
    fn drop(&mut self) {
        let _ = self.broker.kill();
        let _ = self.broker.wait();
    }
}

/// Whether every peer of these tests is here (in CI they must be).
fn peers() -> bool {
    const WHY: &str = "the MQTT binding tests";
    can_start("mosquitto", WHY)
        && can_start("mosquitto_rr", WHY)
        && have_python_module("paho.mqtt.client", WHY)
        && have_python_module("sslpsk3", WHY)
        && have_python_module("cbor2", WHY)
}

fn start() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let port = unused_port();
    let text = config(port, dir.path());
    let cfg = dir.path().join("cse.toml");
    std::fs::write(&cfg, &text).unwrap();
    std::fs::set_permissions(&cfg, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let out = m2m(&[
        "mqtt-broker-config",
        "--config",
        cfg.to_str().unwrap(),
        "--out",
        dir.path().join("mqtt").to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let psk_file = dir.path().join("mqtt/psk_file");
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(&psk_file).unwrap().permissions(),
    );
    assert_eq!(mode & 0o077, 0, "the PSK file is private");
    // mosquitto started as root drops to the user `mosquitto`, which cannot read this test's
    // private files: run it as the user running the tests instead.
    if std::os::unix::fs::MetadataExt::uid(&std::fs::metadata("/proc/self").unwrap()) == 0 {
        let conf = dir.path().join("mqtt/mosquitto.conf");
        let text = std::fs::read_to_string(&conf).unwrap();
        std::fs::write(&conf, format!("{text}user root\n")).unwrap();
    }
    let broker_log = std::fs::File::create(dir.path().join("mosquitto.log")).unwrap();
    let broker = Command::new("mosquitto")
        .arg("-c")
        .arg(dir.path().join("mqtt/mosquitto.conf"))
        .arg("-v")
        .env("OPENSSL_CONF", dir.path().join("mqtt/openssl.cnf"))
        .stdout(Stdio::null())
        .stderr(broker_log)
        .spawn()
        .expect("mosquitto runs");
    poll(WAIT, || {
        std::net::TcpStream::connect(("127.0.0.1", port)).ok()
    })
    .expect("mosquitto listens");
    let data = tempfile::tempdir().unwrap();
    let cse = CseProcess::start(&text, data.path());
    std::mem::forget(data);
    let setup = Setup {
        broker,
        cse,
        port,
        dir,
    };
    poll(WAIT, || {
        setup.cse.logged("MQTT server associated").then_some(())
    })
    .unwrap_or_else(|| panic!("the CSE did not reach mosquitto:\n{}", setup.cse.stderr()));
    setup
}

/// One request with mosquitto_rr as `who`: published on `topic`, the answer read from `answer`.
fn mosquitto_rr(
    s: &Setup,
    who: (&str, &str),
    topic: &str,
    answer: &str,
    req: &Value,
) -> Option<Value> {
    let out = Command::new("mosquitto_rr")
        .args(["-h", "127.0.0.1", "-p", &s.port.to_string()])
        .args(["--psk", who.1, "--psk-identity", who.0])
        .args(["-q", "1", "-W", "5"])
        .args(["-t", topic, "-e", answer])
        .args(["-m", &req.to_string()])
        .stdin(Stdio::null())
        .output()
        .expect("mosquitto_rr runs");
    let text = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(text.trim()).ok()
}

/// The paho-mqtt client of these tests: connects as `identity` over TLS-PSK (sslpsk3 wraps the
/// socket), subscribes, then for each step publishes a request primitive (JSON or CBOR) and
/// waits for one message; prints the subscriptions' return codes and the answers as JSON.
const PAHO: &str = r#"
import json, queue, socket, ssl, sys
import cbor2, sslpsk3
import paho.mqtt.client as mqtt

spec = json.loads(sys.argv[1])

class PskClient(mqtt.Client):
    def _create_socket_connection(self):
        sock = socket.create_connection((self._host, self._port), timeout=10)
        return sslpsk3.wrap_socket(sock, psk=(bytes.fromhex(spec["key"]), spec["identity"].encode()),
                                   ciphers="PSK-AES128-CBC-SHA256", ssl_version=ssl.PROTOCOL_TLSv1_2)

c = PskClient(mqtt.CallbackAPIVersion.VERSION2, client_id=spec["client_id"])
messages, granted = queue.Queue(), queue.Queue()
c.on_message = lambda c, u, m: messages.put((m.topic, m.payload))
c.on_subscribe = lambda c, u, mid, codes, p: granted.put([rc.value for rc in codes])
c.connect("127.0.0.1", spec["port"], keepalive=30)
c.loop_start()
out = {"granted": [], "answers": []}
for f in spec["subscribe"]:
    c.subscribe(f, qos=1)
    out["granted"].append(granted.get(timeout=10)[0])
print("subscribed", flush=True)
for step in spec["steps"]:
    if "listen" in step:
        try:
            topic, payload = messages.get(timeout=step["listen"])
            out["answers"].append({"topic": topic, "overheard": payload.decode("utf-8", "replace")})
        except queue.Empty:
            out["answers"].append(None)
        continue
    body = json.dumps(step["rqp"]).encode() if step["ser"] == "json" else cbor2.dumps(step["rqp"])
    c.publish(step["topic"], body, qos=1).wait_for_publish(5)
    try:
        topic, payload = messages.get(timeout=step.get("wait", 10))
        rsp = json.loads(payload) if topic.endswith("/json") else cbor2.loads(payload)
        out["answers"].append({"topic": topic, "rsp": rsp})
    except queue.Empty:
        out["answers"].append(None)
c.loop_stop()
c.disconnect()
print(json.dumps(out))
"#;

/// Starts the paho client; returns once it has subscribed.
fn paho_spawn(
    s: &Setup,
    who: (&str, &str),
    client_id: &str,
    subscribe: &[&str],
    steps: &[Value],
) -> (
    Child,
    std::io::Lines<std::io::BufReader<std::process::ChildStdout>>,
) {
    use std::io::BufRead;
    let script = s.dir.path().join("mqtt_ae.py");
    std::fs::write(&script, PAHO).unwrap();
    let spec = json!({
        "identity": who.0, "key": who.1, "client_id": client_id, "port": s.port,
        "subscribe": subscribe, "steps": steps,
    });
    let mut child = Command::new("python3")
        .arg(&script)
        .arg(spec.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3 runs");
    let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let first = lines.next().and_then(Result::ok).unwrap_or_default();
    assert_eq!(first, "subscribed", "the paho client did not connect");
    (child, lines)
}

/// The paho client's output once it is done.
fn paho_result(
    mut child: Child,
    mut lines: std::io::Lines<std::io::BufReader<std::process::ChildStdout>>,
) -> Value {
    let last = lines.next().and_then(Result::ok).unwrap_or_default();
    assert!(child.wait().unwrap().success(), "the paho client failed");
    serde_json::from_str(&last).expect("the paho client prints JSON")
}

fn paho(
    s: &Setup,
    who: (&str, &str),
    client_id: &str,
    subscribe: &[&str],
    steps: &[Value],
) -> Value {
    let (child, lines) = paho_spawn(s, who, client_id, subscribe, steps);
    paho_result(child, lines)
}

fn rqp(op: u8, to: &str, fr: Option<&str>, rqi: &str, ty: Option<u16>, pc: Option<Value>) -> Value {
    let mut v = json!({"op": op, "to": to, "rqi": rqi, "rvi": "3"});
    if let Some(fr) = fr {
        v["fr"] = json!(fr);
    }
    if let Some(ty) = ty {
        v["ty"] = json!(ty);
    }
    if let Some(pc) = pc {
        v["pc"] = pc;
    }
    v
}

fn ae_body(api: &str) -> Value {
    json!({"m2m:ae": {"api": api, "rr": false, "srv": ["3"]}})
}

#[test]
fn mosquitto_clients_get_the_cse_answers_over_tls_psk_and_topics_name_their_sender() {
    if !peers() {
        return;
    }
    let s = start();
    let (req, resp) = (
        "/oneM2M/req/Slock/id-in/json",
        "/oneM2M/resp/Slock/id-in/json",
    );
    // The lock registers as the AE its credential is bound to, on its own request topic.
    let r = mosquitto_rr(
        &s,
        LOCK,
        req,
        resp,
        &rqp(
            1,
            "cse-in",
            Some("Slock"),
            "reg1",
            Some(2),
            Some(ae_body("Nlock")),
        ),
    )
    .expect("the CSE answers the registration");
    assert_eq!(r["rsc"], 2001, "{r}");
    assert_eq!(r["rqi"], "reg1");
    assert_eq!(r["pc"]["m2m:ae"]["aei"], "Slock");
    let r = mosquitto_rr(
        &s,
        LOCK,
        req,
        resp,
        &rqp(
            1,
            "cse-in/Slock",
            Some("Slock"),
            "c1",
            Some(3),
            Some(json!({"m2m:cnt": {"rn": "state"}})),
        ),
    )
    .unwrap();
    assert_eq!(r["rsc"], 2001, "{r}");

    // Its own topic, another From: the CSE refuses (4106), whatever other entity is named.
    for from in [
        "Cphone",
        "/id-in",
        "Smallory",
        "/id-in/Cx",
        "//m2m.example.com/id-in/Slock2",
    ] {
        let r = mosquitto_rr(
            &s,
            LOCK,
            req,
            resp,
            &rqp(2, "cse-in/Slock", Some(from), "x", None, None),
        )
        .unwrap_or_else(|| panic!("no answer for From {from}"));
        assert_eq!(r["rsc"], 4106, "From {from}: {r}");
    }
    // No From at all, on a topic that names a sender: refused too.
    let r = mosquitto_rr(
        &s,
        LOCK,
        req,
        resp,
        &rqp(2, "cse-in", None, "x", None, None),
    )
    .unwrap();
    assert_eq!(r["rsc"], 4106, "{r}");

    // Another credential on the lock's topics: the MQTT server's ACL lets nothing through,
    // neither the request nor the subscription to the lock's answers.
    let r = mosquitto_rr(
        &s,
        MALLORY,
        req,
        resp,
        &rqp(4, "cse-in/Slock/state", Some("Slock"), "del", None, None),
    );
    assert!(
        r.is_none(),
        "mallory got an answer on the lock's topic: {r:?}"
    );
    let r = mosquitto_rr(
        &s,
        LOCK,
        req,
        resp,
        &rqp(2, "cse-in/Slock/state", Some("Slock"), "r", None, None),
    )
    .unwrap();
    assert_eq!(
        r["rsc"], 2000,
        "the container mallory tried to delete is still there: {r}"
    );
    // Nor does mallory overhear the lock's requests or the CSE's answers to it, whatever she
    // subscribes to (mosquitto checks each message against her read rights).
    let (child, lines) = paho_spawn(
        &s,
        MALLORY,
        "A::mallory",
        &[
            "/oneM2M/resp/Slock/#",
            "/oneM2M/req/+/id-in/#",
            "/oneM2M/#",
            "#",
        ],
        &[json!({"listen": 4})],
    );
    let r = mosquitto_rr(
        &s,
        LOCK,
        req,
        resp,
        &rqp(2, "cse-in/Slock", Some("Slock"), "seen", None, None),
    )
    .unwrap();
    assert_eq!(r["rsc"], 2000, "{r}");
    let out = paho_result(child, lines);
    assert!(out["answers"][0].is_null(), "mallory overheard: {out}");
    // Nor does she answer in the CSE's place: the lock, listening for its answers, hears none.
    let (child, lines) = paho_spawn(
        &s,
        LOCK,
        "A::Slock-listener",
        &[resp],
        &[json!({"listen": 3})],
    );
    paho(
        &s,
        MALLORY,
        "A::mallory2",
        &[],
        &[
            json!({"topic": resp, "ser": "json", "wait": 0.5, "rqp": {"rsc": 2000, "rqi": "forged"}}),
        ],
    );
    let out = paho_result(child, lines);
    assert!(
        out["answers"][0].is_null(),
        "the lock took a forged answer: {out}"
    );
    // Another credential connecting with the CSE's client identifier takes nothing over: the
    // server names each client by its credential, and the CSE still answers.
    let (child, lines) = paho_spawn(&s, MALLORY, "C::id-in", &[], &[json!({"listen": 1})]);
    let _ = paho_result(child, lines);
    let r = mosquitto_rr(
        &s,
        LOCK,
        req,
        resp,
        &rqp(2, "cse-in", Some("Slock"), "after", None, None),
    )
    .expect("the CSE still answers");
    assert_eq!(r["rsc"], 2000, "{r}");
    assert!(
        !s.cse.logged("MQTT connection ended"),
        "the CSE's session was taken over"
    );

    // A rule on the originator's IP address never matches a request the MQTT server delivered,
    // though the server's own address (127.0.0.1) would.
    let r = mosquitto_rr(
        &s,
        LOCK,
        req,
        resp,
        &rqp(1, "cse-in/Slock", Some("Slock"), "acp", Some(1), Some(json!({"m2m:acp": {"rn": "byIp",
            "pv": {"acr": [{"acor": ["all"], "acop": 2, "acco": [{"acip": {"ipv4": ["127.0.0.0/8"]}}]}]},
            "pvs": {"acr": [{"acor": ["Slock"], "acop": 63}]}}}))),
    )
    .unwrap();
    assert_eq!(r["rsc"], 2001, "{r}");
    let r = mosquitto_rr(
        &s,
        LOCK,
        req,
        resp,
        &rqp(
            1,
            "cse-in/Slock",
            Some("Slock"),
            "cnt",
            Some(3),
            Some(json!({"m2m:cnt": {"rn": "byIpBox", "acpi": ["cse-in/Slock/byIp"]}})),
        ),
    )
    .unwrap();
    assert_eq!(r["rsc"], 2001, "{r}");
    let r = mosquitto_rr(
        &s,
        LOCK,
        req,
        resp,
        &rqp(2, "cse-in/Slock/byIpBox", Some("Slock"), "ip", None, None),
    )
    .unwrap();
    assert_eq!(
        r["rsc"], 4103,
        "an IP rule matched the MQTT server's address: {r}"
    );
    let (code, b) = retrieve(s.cse.url(), "/cse-in/Slock/byIpBox", "Slock");
    assert_eq!(
        code, 2000,
        "the same rule grants over HTTP from 127.0.0.1: {b}"
    );

    // mosquitto_pub publishes a request and the CSE acts on it (no answer read: one connection
    // per credential, and mosquitto_pub does not subscribe).
    let body = rqp(
        1,
        "cse-in/Slock/state",
        Some("Slock"),
        "pub",
        Some(4),
        Some(json!({"m2m:cin": {"con": "FROM-MOSQUITTO-PUB"}})),
    );
    let out = Command::new("mosquitto_pub")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &s.port.to_string(),
            "--psk",
            LOCK.1,
            "--psk-identity",
            LOCK.0,
        ])
        .args(["-q", "1", "-t", req, "-m", &body.to_string()])
        .output()
        .expect("mosquitto_pub runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let la = poll(WAIT, || {
        let (code, b) = retrieve(s.cse.url(), "/cse-in/Slock/state/la", "Slock");
        (code == 2000 && b["m2m:cin"]["con"] == "FROM-MOSQUITTO-PUB").then_some(b)
    });
    assert!(
        la.is_some(),
        "the request mosquitto_pub published was not carried out"
    );

    // mosquitto_sub, as the lock, hears the CSE's notification on the lock's own request topic
    // (its pointOfAccess is the MQTT server).
    let r = mosquitto_rr(
        &s,
        LOCK,
        req,
        resp,
        &rqp(
            3,
            "cse-in/Slock",
            Some("Slock"),
            "poa",
            None,
            Some(json!({"m2m:ae": {"poa": [format!("mqtts://127.0.0.1:{}", s.port)], "rr": true}})),
        ),
    )
    .unwrap();
    assert_eq!(r["rsc"], 2004, "{r}");
    let r = mosquitto_rr(
        &s,
        LOCK,
        req,
        resp,
        &rqp(
            1,
            "cse-in/Slock/state",
            Some("Slock"),
            "sub",
            Some(23),
            Some(json!({"m2m:sub": {"rn": "lockWatch", "nu": ["Slock"], "enc": {"net": [3]}}})),
        ),
    )
    .unwrap();
    assert_eq!(r["rsc"], 2001, "{r}");
    // Line-buffered (stdbuf): a piped mosquitto_sub would hold its SUBACK line until it exits.
    let mut sub = Command::new("stdbuf")
        .args(["-oL", "mosquitto_sub"])
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &s.port.to_string(),
            "--psk",
            LOCK.1,
            "--psk-identity",
            LOCK.0,
        ])
        .args([
            "-q",
            "1",
            "-t",
            "/oneM2M/req/+/Slock/#",
            "-C",
            "1",
            "-W",
            "10",
            "-d",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .expect("mosquitto_sub runs");
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(sub.stdout.take().unwrap()));
    let mut seen: Vec<String> = Vec::new();
    for line in lines.by_ref().map_while(Result::ok) {
        let suback = line.contains("SUBACK");
        seen.push(line);
        if suback {
            break;
        }
    }
    let (code, _) = create(
        s.cse.url(),
        "/cse-in/Slock/state",
        "Slock",
        4,
        json!({"m2m:cin": {"con": "RINGING"}}),
    );
    assert_eq!(code, 2001);
    seen.extend(lines.map_while(Result::ok));
    let heard: Value = seen
        .iter()
        .find(|l| l.starts_with('{'))
        .and_then(|l| serde_json::from_str(l).ok())
        .unwrap_or_else(|| panic!("mosquitto_sub printed no notification: {seen:#?}"));
    let _ = sub.wait();
    assert_eq!(heard["op"], 5, "{heard}");
    assert_eq!(
        heard["pc"]["m2m:sgn"]["nev"]["rep"]["m2m:cin"]["con"], "RINGING",
        "{heard}"
    );

    // The server's psk file holds the keys, the ACL none.
    let acl = std::fs::read_to_string(s.dir.path().join("acl")).unwrap();
    for key in [CSE_KEY, LOCK.1, PHONE.1, MALLORY.1] {
        assert!(!acl.contains(key));
        assert!(!s.cse.stderr().contains(key) && !s.cse.stdout().contains(key));
    }
}

#[test]
fn paho_registers_on_the_registration_topic_then_speaks_json_and_cbor_as_its_ae() {
    if !peers() {
        return;
    }
    let s = start();
    let cred = "12-phone@in.provider.com";
    // Registration with no AE-ID yet: the topic names the credential (TS-0010 clause 6.4.4).
    let out = paho(
        &s,
        PHONE,
        "A::phone",
        &[&format!("/oneM2M/reg_resp/{cred}/#")],
        &[json!({
            "topic": format!("/oneM2M/reg_req/{cred}/id-in/json"),
            "ser": "json",
            "rqp": rqp(1, "cse-in", Some("C"), "reg", Some(2), Some(ae_body("Nphone"))),
        })],
    );
    assert_eq!(out["granted"], json!([1]), "{out}");
    let answer = &out["answers"][0];
    assert_eq!(
        answer["topic"],
        format!("/oneM2M/reg_resp/{cred}/id-in/json")
    );
    let rsp = &answer["rsp"];
    assert_eq!(rsp["rsc"], 2001, "{rsp}");
    let aei = rsp["pc"]["m2m:ae"]["aei"].as_str().unwrap().to_owned();
    assert!(aei.starts_with('C'), "{aei}");

    // The CSE wrote the server's ACL again for the new AE and signalled it: the phone's own
    // request topics open, in CBOR too, with its AE-ID as From.
    let topic = |ser: &str| format!("/oneM2M/req/{aei}/id-in/{ser}");
    let mut quiet = rqp(
        1,
        &format!("cse-in/{aei}"),
        Some(&aei),
        "q1",
        Some(3),
        Some(json!({"m2m:cnt": {"rn": "quiet"}})),
    );
    quiet["rt"] = json!({"rtv": 5});
    let steps = [
        json!({"topic": topic("cbor"), "ser": "cbor", "rqp": rqp(2, "cse-in", Some(&aei), "r1", None, None)}),
        json!({"topic": topic("json"), "ser": "json",
               "rqp": rqp(1, &format!("cse-in/{aei}"), Some(&aei), "c1", Some(3), Some(json!({"m2m:cnt": {"rn": "inbox"}})))}),
        // Response Type noResponse: carried out, nothing published back.
        json!({"topic": topic("json"), "ser": "json", "wait": 2, "rqp": quiet}),
        json!({"topic": topic("json"), "ser": "json",
               "rqp": rqp(2, &format!("cse-in/{aei}/quiet"), Some(&aei), "r2", None, None)}),
        // Its topic, the lock's From.
        json!({"topic": topic("json"), "ser": "json", "rqp": rqp(2, "cse-in/Slock", Some("Slock"), "x1", None, None)}),
        // A malformed primitive: 4000 on the same response topic.
        json!({"topic": topic("json"), "ser": "json", "rqp": {"op": 2, "rqi": "x2", "fr": aei}}),
    ];
    let answers = poll(WAIT, || {
        let out = paho(
            &s,
            PHONE,
            &format!("A::{aei}"),
            &[&format!("/oneM2M/resp/{aei}/#")],
            &steps,
        );
        (out["granted"] == json!([1]) && !out["answers"][0].is_null()).then_some(out)
    })
    .unwrap_or_else(|| {
        panic!(
            "the phone's topics never opened; ACL:\n{}",
            std::fs::read_to_string(s.dir.path().join("acl")).unwrap_or_default()
        )
    });
    let a = &answers["answers"];
    assert_eq!(a[0]["topic"], format!("/oneM2M/resp/{aei}/id-in/cbor"));
    assert_eq!(a[0]["rsp"]["rsc"], 2000, "{a}");
    assert_eq!(a[0]["rsp"]["pc"]["m2m:cb"]["csi"], "/id-in");
    assert_eq!(a[1]["rsp"]["rsc"], 2001, "{a}");
    assert!(a[2].is_null(), "an answer to noResponse: {a}");
    assert_eq!(
        a[3]["rsp"]["rsc"], 2000,
        "the noResponse CREATE was done: {a}"
    );
    assert_eq!(a[4]["rsp"]["rsc"], 4106, "{a}");
    assert_eq!(a[5]["rsp"]["rsc"], 4000, "{a}");
    assert_eq!(a[5]["rsp"]["rqi"], "x2");

    // The registration topic of the phone's credential is the phone's only: the lock cannot
    // register under it.
    let out = paho(
        &s,
        LOCK,
        "A::lock2",
        &[],
        &[json!({
            "topic": format!("/oneM2M/reg_req/{cred}/id-in/json"),
            "ser": "json", "wait": 2,
            "rqp": rqp(1, "cse-in", Some("C"), "reg2", Some(2), Some(ae_body("Nfake"))),
        })],
    );
    assert!(out["answers"][0].is_null(), "{out}");

    // The phone's credential, bound to nothing, registering as the administrator: refused, and
    // the administrator's topics are not opened to it.
    let out = paho(
        &s,
        PHONE,
        "A::phone3",
        &[&format!("/oneM2M/reg_resp/{cred}/#")],
        &[json!({
            "topic": format!("/oneM2M/reg_req/{cred}/id-in/json"),
            "ser": "json",
            "rqp": rqp(1, "cse-in", Some("CAdmin"), "reg3", Some(2), Some(ae_body("Nadmin"))),
        })],
    );
    assert_eq!(out["answers"][0]["rsp"]["rsc"], 4106, "{out}");
    let acl = std::fs::read_to_string(s.dir.path().join("acl")).unwrap();
    assert!(!acl.contains("CAdmin"), "{acl}");
    let (code, found) = get_with_query(s.cse.url(), "/cse-in", "CAdmin", "fu=1&ty=2");
    assert_eq!(code, 2000, "{found}");
    assert_eq!(
        found["m2m:uril"],
        json!([format!("cse-in/{aei}")]),
        "only the phone registered"
    );
}

/// `m2m ae` over MQTT end to end: it registers on the registration topic of its credential,
/// subscribes to the lock's door on its own request topic, and hears the lock's contentInstance
/// on its own topic (`[notifications] binding = "mqtt"`, pointOfAccess `mqtts://`); then
/// `m2m request --ae` reads through the MQTT server too. No HTTP on either side.
#[test]
fn m2m_ae_registers_subscribes_and_hears_its_notification_over_mqtt() {
    if !peers() {
        return;
    }
    let s = start();
    let (req, resp) = (
        "/oneM2M/req/Slock/id-in/json",
        "/oneM2M/resp/Slock/id-in/json",
    );
    // The lock: registered, its door readable (and subscribed to) by all, written by itself.
    for (rqi, to, ty, pc) in [
        ("l1", "cse-in", 2, ae_body("Nlock")),
        (
            "l2",
            "cse-in/Slock",
            1,
            json!({"m2m:acp": {"rn": "doorAcp",
                "pv": {"acr": [
                    {"acor": ["Slock"], "acop": 63},
                    {"acor": ["all"], "acop": 2},
                    {"acor": ["all"], "acop": 1, "acod": [{"chty": [23]}]}]},
                "pvs": {"acr": [{"acor": ["Slock"], "acop": 63}]}}}),
        ),
        (
            "l3",
            "cse-in/Slock",
            3,
            json!({"m2m:cnt": {"rn": "door", "acpi": ["cse-in/Slock/doorAcp"]}}),
        ),
    ] {
        let r = mosquitto_rr(
            &s,
            LOCK,
            req,
            resp,
            &rqp(1, to, Some("Slock"), rqi, Some(ty), Some(pc)),
        )
        .unwrap_or_else(|| panic!("no answer to {rqi}"));
        assert_eq!(r["rsc"], 2001, "{rqi}: {r}");
    }
    let key = s.dir.path().join("phone.kpsa");
    std::fs::write(&key, PHONE.1).unwrap();
    std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let config = s.dir.path().join("phone.toml");
    std::fs::write(
        &config,
        format!(
            "[ae]\nresource_name = \"phone\"\napp_id = \"Nphone\"\noriginator = \"C\"\n\
             [cse]\nurl = \"mqtts://127.0.0.1:{port}\"\ncse_id = \"/id-in\"\nresource_name = \"cse-in\"\ntimeout_seconds = 5\n\
             [security]\nmode = \"psk\"\nkpsa_id = \"{id}\"\nkey_file = {key:?}\n\
             [notifications]\nbinding = \"mqtt\"\n\
             [[subscribe]]\nto = \"cse-in/Slock/door\"\nrn = \"phoneWatch\"\n",
            port = s.port,
            id = PHONE.0,
        ),
    )
    .unwrap();
    let ae = AeProcess::start(&config);
    let ready = ae.ready(&s.cse);
    let aei = ready["aei"].as_str().expect("an AE-ID").to_owned();
    assert!(aei.starts_with('C'), "{ready}");
    assert_eq!(
        ready["poa"],
        json!(format!("mqtts://127.0.0.1:{}", s.port)),
        "{ready}"
    );
    let r = mosquitto_rr(
        &s,
        LOCK,
        req,
        resp,
        &rqp(
            1,
            "cse-in/Slock/door",
            Some("Slock"),
            "l4",
            Some(4),
            Some(json!({"m2m:cin": {"con": "UNLOCKED"}})),
        ),
    )
    .unwrap();
    assert_eq!(r["rsc"], 2001, "{r}");
    let note = ae.event(&s.cse);
    assert_eq!(
        note["notification"]["sgn"]["nev"]["rep"]["m2m:cin"]["con"],
        json!("UNLOCKED"),
        "{note}"
    );
    // The lock cannot speak as the phone on the phone's topic: its credential is not the
    // phone's, so the MQTT server drops it.
    let r = mosquitto_rr(
        &s,
        LOCK,
        &format!("/oneM2M/req/{aei}/id-in/json"),
        &format!("/oneM2M/resp/{aei}/id-in/json"),
        &rqp(4, "cse-in/phone", Some(&aei), "forged", None, None),
    );
    assert!(r.is_none(), "{r:?}");
    assert_eq!(ae.silent_for(Duration::from_millis(500)), None);
    // One MQTT connection per credential (the server's client identifier is the identity): the
    // AE stops before `m2m request` speaks as it.
    drop(ae);
    let out = m2m_command(&[
        "request",
        "--ae",
        config.to_str().unwrap(),
        "--to",
        "cse-in/phone",
        "--json",
    ]);
    let answer: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|_| panic!("{}", String::from_utf8_lossy(&out.stderr)));
    assert_eq!(
        answer["rsc"], 2000,
        "the phone is still registered: {answer}"
    );
    assert_eq!(answer["pc"]["m2m:ae"]["aei"], json!(aei));
}

/// Semantic query and semantic discovery over MQTT (the neighbours of the HTTP and CoAP tests):
/// `sqi` and `fc.smf` arrive in the request primitive, and the lock, proven by its credential,
/// is answered from the descriptors it may read only. It shuts itself out of its vault (an ACP
/// granting only the admin); the vault's descriptor is then in no answer.
#[test]
fn semantic_queries_over_mqtt_read_only_the_descriptors_one_may_read() {
    if !peers() {
        return;
    }
    let s = start();
    let (req, resp) = (
        "/oneM2M/req/Slock/id-in/json",
        "/oneM2M/resp/Slock/id-in/json",
    );
    let ask = |n: usize, v: Value| -> Value {
        let mut v = v;
        v["rqi"] = json!(format!("s{n}"));
        mosquitto_rr(&s, LOCK, req, resp, &v).unwrap_or_else(|| panic!("no answer to {v}"))
    };
    let b64 = |t: &str| {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(t)
    };
    let prefixes = "PREFIX m2m: <https://git.onem2m.org/MAS/BaseOntology/raw/master/base_ontology.owl#> PREFIX ex: <http://example.com/> ";
    let turtle = |name: &str, battery: u8| {
        format!("@prefix m2m: <https://git.onem2m.org/MAS/BaseOntology/raw/master/base_ontology.owl#> .\n@prefix ex: <http://example.com/> .\nex:{name} a m2m:Device ; ex:battery {battery} .")
    };
    let mut n = 0;
    let mut step = |v: Value, rsc: u64| -> Value {
        n += 1;
        let r = ask(n, v);
        assert_eq!(r["rsc"], rsc, "step {n}: {r}");
        r
    };
    step(
        rqp(
            1,
            "cse-in",
            Some("Slock"),
            "",
            Some(2),
            Some(ae_body("Nlock")),
        ),
        2001,
    );
    let mut descriptors = Vec::new();
    for (cnt, name, battery) in [("front", "frontDoor", 12), ("vault", "safe", 5)] {
        step(
            rqp(
                1,
                "cse-in/Slock",
                Some("Slock"),
                "",
                Some(3),
                Some(json!({"m2m:cnt": {"rn": cnt}})),
            ),
            2001,
        );
        let d = step(
            rqp(
                1,
                &format!("cse-in/Slock/{cnt}"),
                Some("Slock"),
                "",
                Some(24),
                Some(
                    json!({"m2m:smd": {"rn": "d", "dcrp": 5, "dsp": b64(&turtle(name, battery))}}),
                ),
            ),
            2001,
        );
        descriptors.push(d["pc"]["m2m:smd"]["ri"].as_str().unwrap().to_owned());
    }
    // A group of both descriptors, made while the lock could still read both.
    let g = step(
        rqp(
            1,
            "cse-in/Slock",
            Some("Slock"),
            "",
            Some(9),
            Some(json!({"m2m:grp": {"rn": "both", "mt": 24, "mnm": 10, "mid": descriptors}})),
        ),
        2001,
    );
    assert_eq!(g["pc"]["m2m:grp"]["cnm"], json!(2), "{g}");
    let acp = step(
        rqp(
            1,
            "cse-in/Slock",
            Some("Slock"),
            "",
            Some(1),
            Some(json!({"m2m:acp": {
                "rn": "adminOnly",
                "pv": {"acr": [{"acor": ["CAdmin"], "acop": 63}]},
                "pvs": {"acr": [{"acor": ["Slock"], "acop": 63}]},
            }})),
        ),
        2001,
    );
    let acp_ri = acp["pc"]["m2m:acp"]["ri"]
        .as_str()
        .expect("acp ri")
        .to_owned();
    for (path, root) in [
        ("cse-in/Slock/vault/d", "m2m:smd"),
        ("cse-in/Slock/vault", "m2m:cnt"),
    ] {
        step(
            rqp(
                3,
                path,
                Some("Slock"),
                "",
                None,
                Some(json!({ root: {"acpi": [acp_ri]} })),
            ),
            2004,
        );
    }
    let devices = format!("{prefixes}SELECT ?d WHERE {{ ?d a m2m:Device }}");
    for to in ["cse-in", "cse-in/Slock", "/id-in/cse-in"] {
        let mut q = rqp(2, to, Some("Slock"), "", None, None);
        q["sqi"] = json!(true);
        q["fc"] = json!({"smf": [devices]});
        let r = step(q, 2000);
        let text = r["pc"]["m2m:qres"].as_str().expect("qres is text");
        assert!(text.contains("frontDoor"), "{to}: {text}");
        assert!(
            !text.contains("safe"),
            "{to}: the vault's descriptor: {text}"
        );
    }
    let low = format!("{prefixes}SELECT ?d WHERE {{ ?d ex:battery ?b FILTER(?b < 20) }}");
    let mut q = rqp(2, "cse-in", Some("Slock"), "", None, None);
    q["fc"] = json!({"fu": 1, "smf": [low]});
    let r = step(q, 2000);
    assert_eq!(r["pc"]["m2m:uril"], json!(["cse-in/Slock/front"]), "{r}");
    // Through the group's semanticFanOutPoint the members are retrieved as the lock: the
    // vault's descriptor, a member it may no longer read, adds nothing.
    let mut q = rqp(2, "cse-in/Slock/both/sfop", Some("Slock"), "", None, None);
    q["sqi"] = json!(true);
    q["fc"] = json!({"smf": [devices]});
    let r = step(q, 2000);
    let text = r["pc"]["m2m:qres"].as_str().expect("qres is text");
    assert!(text.contains("frontDoor"), "{text}");
    assert!(!text.contains("safe"), "the vault's descriptor: {text}");
    let mut q = rqp(2, "cse-in/Slock/both/sfop", Some("Slock"), "", None, None);
    q["fc"] = json!({"smf": [low]});
    let r = step(q, 2000);
    assert_eq!(r["pc"]["m2m:uril"], json!([descriptors[0]]), "{r}");
}

/// An AE-ID stays with the credential it registered with over MQTT too (docs/SECURITY.md "An
/// AE-ID stays with its credential"): the phone registers `Cphone7` on its registration topic
/// and deregisters; mallory, with a valid credential of her own, registering that AE-ID on her
/// registration topic gets 4106 in every form of the ID; the phone registers it again.
#[test]
fn an_ae_id_stays_with_the_credential_it_registered_with_over_mqtt() {
    if !peers() {
        return;
    }
    let s = start();
    let registration = |who: (&str, &str), from: &str, rqi: &str| {
        let cred = format!("12-{}", who.0);
        mosquitto_rr(
            &s,
            who,
            &format!("/oneM2M/reg_req/{cred}/id-in/json"),
            &format!("/oneM2M/reg_resp/{cred}/id-in/json"),
            &rqp(
                1,
                "cse-in",
                Some(from),
                rqi,
                Some(2),
                Some(ae_body("Nphone")),
            ),
        )
        .unwrap_or_else(|| panic!("no answer to {rqi}:\n{}", s.cse.stderr()))
    };
    let r = registration(PHONE, "Cphone7", "reg1");
    assert_eq!(r["rsc"], 2001, "{r}");
    assert_eq!(r["pc"]["m2m:ae"]["aei"], "Cphone7", "{r}");
    let rn = r["pc"]["m2m:ae"]["rn"].as_str().expect("rn").to_owned();
    let r = mosquitto_rr(
        &s,
        PHONE,
        "/oneM2M/req/Cphone7/id-in/json",
        "/oneM2M/resp/Cphone7/id-in/json",
        &rqp(
            4,
            &format!("cse-in/{rn}"),
            Some("Cphone7"),
            "dereg",
            None,
            None,
        ),
    )
    .expect("the CSE answers the deregistration");
    assert_eq!(r["rsc"], 2002, "{r}");
    for from in [
        "Cphone7",
        "/id-in/Cphone7",
        "//m2m.example.com/id-in/Cphone7",
    ] {
        let r = registration(MALLORY, from, "steal");
        assert_eq!(r["rsc"], 4106, "mallory as {from}: {r}");
    }
    assert!(
        s.cse
            .logged("registered before with credential 12-phone@in.provider.com"),
        "{}",
        s.cse.stderr()
    );
    let r = registration(PHONE, "Cphone7", "reg2");
    assert_eq!(r["rsc"], 2001, "its own credential again: {r}");
}
