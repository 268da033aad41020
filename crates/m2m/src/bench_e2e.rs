//! `m2m bench-e2e`: the end-to-end security library on one core (m2m_security::e2e, kdf::ksx): ESPrim
//! protect + unprotect of a 1 kB inner primitive, JWS sign/verify (HS256, ES256), JWE encrypt/decrypt,
//! and Ksx group-key derivations per second. Targets (issue 7): ESPrim < 20 µs, 1 million Ksx < 2 s.

use chrono::{Duration as ChronoDuration, Utc};
use m2m_core::security_info::EsprimProtocolAndAlgId;
use m2m_security::credentials::Secret;
use m2m_security::e2e::esprim::{EsprimReceiver, EsprimSession, PairwiseKey};
use m2m_security::e2e::jose::{
    self, ContentEnc, DecryptionKey, EcKeyPair, HeaderParams, Recipient, SigningKey, SymmetricKey,
    VerifyingKey,
};
use m2m_security::kdf;
use std::collections::HashMap;
use std::hint::black_box;
use std::time::{Duration, Instant};

#[derive(clap::Args, Debug)]
pub struct BenchE2eArgs {
    /// Measured duration of each figure (milliseconds).
    #[arg(long, default_value_t = 1000)]
    pub millis: u64,
    /// Ksx derivations in the group-key figure (one per member).
    #[arg(long, default_value_t = 1_000_000)]
    pub members: u32,
    /// Size of the inner primitive in the ESPrim figure (bytes).
    #[arg(long, default_value_t = 1024)]
    pub primitive_bytes: usize,
}

/// Runs `op` repeatedly for `budget`; returns the mean time per call.
fn measure(budget: Duration, mut op: impl FnMut()) -> Duration {
    for _ in 0..10 {
        op();
    }
    let start = Instant::now();
    let mut n: u32 = 0;
    while start.elapsed() < budget {
        for _ in 0..16 {
            op();
        }
        n += 16;
    }
    start.elapsed() / n
}

fn row(figure: &str, per_op: Duration) {
    let us = per_op.as_secs_f64() * 1e6;
    println!("{figure:<48} {us:>10.2} {:>12.0}", 1e6 / us);
}

/// An inner request primitive of about `bytes` bytes of JSON.
fn inner_primitive(bytes: usize) -> Vec<u8> {
    let pad = "x".repeat(bytes.saturating_sub(110));
    serde_json::json!({"op": 1, "to": "/in-cse/cse-mn/lock1/state", "fr": "CAE1", "rqi": "bench",
        "rvi": "3", "ty": 4, "pc": {"m2m:cin": {"con": pad}}})
    .to_string()
    .into_bytes()
}

/// ESPrim: the Originator protects, the Receiver unprotects (new IV every time, so the replay cache
/// works as in production; the session is restarted before it is used up).
fn esprim(args: &BenchE2eArgs, budget: Duration) -> anyhow::Result<Duration> {
    let kid = "13-bench@in.example.com";
    let pairwise = Secret::new(vec![7; 32]);
    let inner = inner_primitive(args.primitive_bytes);
    let mut keys = HashMap::new();
    keys.insert(
        kid.to_string(),
        PairwiseKey {
            key: pairwise.clone(),
            entity: "CAE1".into(),
            expires: None,
        },
    );
    let now = Utc::now();
    let mut rx = EsprimReceiver::default();
    // Steady state: after one answered exchange the Receiver knows the originator rand, so the objects
    // carry its ID only (as in production after the first primitive).
    let start = |rx: &mut EsprimReceiver| -> Result<EsprimSession, m2m_core::M2mError> {
        let ero = rx.issue_rand(now, ChronoDuration::hours(1));
        let mut s = EsprimSession::start(
            kid,
            &pairwise,
            &ero,
            now,
            ChronoDuration::hours(1),
            Some(EsprimProtocolAndAlgId::JweA128Gcm),
        )?;
        let first = rx.unprotect_request(&keys, &s.protect_request(&inner, now)?, now)?;
        let rsp = rx.protect_response(&first.session, br#"{"rsc":2001,"rqi":"bench"}"#, now)?;
        s.unprotect_response(&rsp, now)?;
        Ok(s)
    };
    let mut session = start(&mut rx).map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut used = 0usize;
    let mut failed = false;
    let t = measure(budget, || {
        if used == m2m_security::e2e::esprim::MAX_OBJECTS_PER_SESSION - 1 {
            session = start(&mut rx).expect("session");
            used = 0;
        }
        used += 1;
        let jwe = session.protect_request(&inner, now).expect("protect");
        failed |= rx.unprotect_request(&keys, black_box(&jwe), now).is_err();
    });
    anyhow::ensure!(!failed, "an ESPrim object did not unprotect");
    Ok(t)
}

pub fn run(args: BenchE2eArgs) -> anyhow::Result<()> {
    let budget = Duration::from_millis(args.millis);
    let none = HeaderParams::new();
    let payload = vec![b'a'; 256];
    let hs = SymmetricKey::generate("hs", 32);
    let ec = EcKeyPair::generate("ec").map_err(|e| anyhow::anyhow!("{e}"))?;
    let ec_pub = ec.public_key();
    let kw = SymmetricKey::generate("kw", 16);
    let dir = SymmetricKey::generate("dir", 16);

    println!(
        "{:<48} {:>10} {:>12}",
        "figure (one core)", "us/op", "ops/second"
    );
    row(
        &format!(
            "ESPrim protect+unprotect, {} B primitive",
            args.primitive_bytes
        ),
        esprim(&args, budget)?,
    );
    for (name, s, v) in [
        ("HS256", SigningKey::Hmac(&hs), VerifyingKey::Hmac(&hs)),
        ("ES256", SigningKey::Ec(&ec), VerifyingKey::Ec(&ec_pub)),
    ] {
        let token = jose::sign_compact(&payload, s, &none)?;
        row(
            &format!("JWS sign {name}, 256 B"),
            measure(budget, || {
                black_box(jose::sign_compact(&payload, s, &none).expect("sign"));
            }),
        );
        row(
            &format!("JWS verify {name}, 256 B"),
            measure(budget, || {
                black_box(jose::verify_compact(&token, v).expect("verify"));
            }),
        );
    }
    let ec_enc_pub = ec.public_key();
    for (name, to, dk) in [
        ("dir", Recipient::Direct(&dir), DecryptionKey::Direct(&dir)),
        (
            "A128KW",
            Recipient::KeyWrap(&kw),
            DecryptionKey::KeyWrap(&kw),
        ),
        (
            "ECDH-ES+A128KW",
            Recipient::EcdhEs(&ec_enc_pub),
            DecryptionKey::EcdhEs(&ec),
        ),
    ] {
        let enc = ContentEnc::A128Gcm;
        let token = jose::encrypt_compact(&payload, to, enc, &none)?;
        row(
            &format!("JWE encrypt {name} A128GCM, 256 B"),
            measure(budget, || {
                black_box(jose::encrypt_compact(&payload, to, enc, &none).expect("encrypt"));
            }),
        );
        row(
            &format!("JWE decrypt {name} A128GCM, 256 B"),
            measure(budget, || {
                black_box(jose::decrypt_compact(&token, dk, &[enc]).expect("decrypt"));
            }),
        );
    }
    ksx(args.members);
    Ok(())
}

/// `members` Ksx derivations as the IN-CSE makes per group: one Kpsa for all (the cost does not
/// depend on the key) and up to 100,000 distinct identifiers, cycled.
fn ksx(members: u32) {
    let rand = kdf::new_group_rand();
    let kpsa = Secret::new(vec![0x5a; 16]);
    let ids: Vec<String> = (0..members.min(100_000))
        .map(|i| format!("CAE{i:012}-Meter"))
        .collect();
    let start = Instant::now();
    for i in 0..members as usize {
        black_box(kdf::ksx(&kpsa, &ids[i % ids.len()], &rand));
    }
    let el = start.elapsed();
    println!(
        "{:<48} {:>10.2} {:>12.0}",
        format!(
            "Ksx derivation ({members} members: {:.2} s)",
            el.as_secs_f64()
        ),
        el.as_secs_f64() * 1e6 / f64::from(members.max(1)),
        f64::from(members) / el.as_secs_f64()
    );
}
