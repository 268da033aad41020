//! The resource store at a million resources (issue 12), with a real `m2m cse`: a store filled
//! with 1,000,000 contentInstances keeps its write-ahead log within twice the database's size
//! while it fills, serves discovery and `la`, and loses no acknowledged write when the process is
//! killed with `kill -9` in the middle of a burst of creates from several clients.
//!
//! The million is written in process by `m2m_cse::prefill` (the CREATE path's resource assembly
//! and container bookkeeping in transactions of thousands, without HTTP): a debug build would
//! take many minutes through the binding. Everything after the fill goes through the binding.

mod common;

use common::*;
use m2m_core::{Operation, Request, ResourceType, ResponseStatusCode as Rsc};
use m2m_cse::association::PlainTrust;
use m2m_cse::{Config, Cse, Peer};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const CONTAINERS: u64 = 100;
const PER_CONTAINER: u64 = 10_000;

/// The largest WAL/database ratio seen while `run` runs (sampled every 10 ms once the database
/// has 4 MiB: below that one transaction's log is larger than twice the database whatever is done).
fn watch_log<T>(data: &Path, run: impl FnOnce() -> T) -> (T, f64) {
    let db = data.join("resources.db");
    let wal = data.join("resources.db-wal");
    let stop = Arc::new(AtomicBool::new(false));
    let worst = Arc::new(Mutex::new(0f64));
    let sampler = {
        let (stop, worst) = (Arc::clone(&stop), Arc::clone(&worst));
        std::thread::spawn(move || {
            let len = |p: &Path| std::fs::metadata(p).map_or(0, |m| m.len());
            while !stop.load(Ordering::Relaxed) {
                let (d, w) = (len(&db), len(&wal));
                if d >= 4 << 20 {
                    let mut worst = worst.lock().unwrap();
                    *worst = worst.max(w as f64 / d as f64);
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        })
    };
    let out = run();
    stop.store(true, Ordering::Relaxed);
    sampler.join().unwrap();
    let worst = *worst.lock().unwrap();
    (out, worst)
}

/// Registers the AE `scale` and its containers in process and fills them; returns the AE-ID.
fn fill(data: &Path) -> String {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut cfg = Config::from_toml("").unwrap();
    cfg.storage.path = data.to_owned();
    let cse = rt
        .block_on(async { Cse::open(cfg, &Default::default()) })
        .unwrap();
    let peer = Peer::plain(([127, 0, 0, 1], 1).into(), PlainTrust::Trusted);
    let send = |to: &str, from: &str, ty: ResourceType, pc: serde_json::Value| {
        let mut req = Request::new(
            Operation::Create,
            to,
            Some(from.to_owned()),
            "fill".to_owned(),
        );
        req.ty = Some(ty);
        req.pc = Some(pc);
        req.rvi = Some("3".into());
        let r = rt.block_on(cse.handle(req, peer.clone()));
        assert_eq!(r.rsc, Rsc::Created, "{to}: {:?}", r.pc);
        r
    };
    let r = send(
        "cse-in",
        "C",
        ResourceType::Ae,
        json!({"m2m:ae": {"rn": "scale", "api": "Nscale", "rr": false, "srv": ["3"]}}),
    );
    let ae = r.pc.unwrap()["m2m:ae"]["aei"].as_str().unwrap().to_owned();
    for c in 0..CONTAINERS {
        send(
            "cse-in/scale",
            &ae,
            ResourceType::Container,
            json!({"m2m:cnt": {"rn": format!("f{c}"), "lbl": ["scale"]}}),
        );
        m2m_cse::prefill::prefill_instances(
            &cse,
            &format!("cse-in/scale/f{c}"),
            PER_CONTAINER,
            "reading 21.5",
            Some(("rare", 1000)),
        )
        .unwrap();
    }
    drop(cse);
    rt.shutdown_timeout(Duration::from_secs(5));
    ae
}

#[test]
fn a_million_resources_keep_acknowledged_writes_and_a_bounded_log() {
    let dir = tempfile::tempdir().unwrap();
    let data: PathBuf = dir.path().join("data");
    let started = Instant::now();
    let (ae, worst_fill) = watch_log(&data, || fill(&data));
    eprintln!(
        "filled {} contentInstances in {:.1} s; largest WAL/database ratio {worst_fill:.2}",
        CONTAINERS * PER_CONTAINER,
        started.elapsed().as_secs_f64()
    );
    assert!(
        worst_fill <= 2.0,
        "the log reached {worst_fill:.2} times the database while filling"
    );

    let cse = CseProcess::start("", &data);
    let u = cse.url().to_owned();
    // The million is there and searchable.
    let (rsc, b) = get_with_query(&u, "/cse-in/scale/f99", &ae, "rcn=1");
    assert_eq!(rsc, 2000, "{b}");
    assert_eq!(b["m2m:cnt"]["cni"], json!(PER_CONTAINER), "{b}");
    let (rsc, b) = get_with_query(&u, "/cse-in", &ae, "fu=1&lbl=rare&lim=2000");
    assert_eq!(rsc, 2000, "{b}");
    let rare = b["m2m:uril"].as_array().unwrap().len() as u64;
    assert_eq!(rare, CONTAINERS * PER_CONTAINER / 1000, "{b}");

    // A burst of creates from eight clients into every container, killed in the middle.
    let acked = Arc::new(Mutex::new(Vec::<String>::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..8)
        .map(|t| {
            let (acked, stop, u, ae) =
                (Arc::clone(&acked), Arc::clone(&stop), u.clone(), ae.clone());
            std::thread::spawn(move || {
                let mut i = t;
                while !stop.load(Ordering::Relaxed) {
                    let to = format!("/cse-in/scale/f{}", i % CONTAINERS);
                    let body = json!({ "m2m:cin": { "con": format!("burst {i}") } });
                    match try_request("POST", &u, &to, Some(&ae), Some(4), Some(&body)) {
                        Ok(r) if r.rsc == 2001 => {
                            let ri = r.body["m2m:cin"]["ri"].as_str().unwrap().to_owned();
                            acked.lock().unwrap().push(ri);
                        }
                        Ok(r) => {
                            panic!("unexpected answer during the burst: {} {:?}", r.rsc, r.body)
                        }
                        Err(_) => break,
                    }
                    i += 8;
                }
            })
        })
        .collect();
    let (cse, worst_burst) = watch_log(&data, || {
        assert!(
            poll(Duration::from_secs(30), || (acked.lock().unwrap().len()
                > 200)
                .then_some(()))
            .is_some(),
            "the burst did not start"
        );
        std::thread::sleep(Duration::from_millis(700));
        let mut cse = cse;
        cse.kill9();
        cse
    });
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.join().unwrap();
    }
    assert!(
        worst_burst <= 2.0,
        "the log reached {worst_burst:.2} times the database"
    );
    let acked = acked.lock().unwrap().clone();

    let cse = cse.restart();
    let u = cse.url().to_owned();
    let lost: Vec<&String> = acked
        .iter()
        .filter(|ri| retrieve(&u, &format!("/{ri}"), &ae).0 != 2000)
        .collect();
    assert!(
        lost.is_empty(),
        "{} of {} acknowledged contentInstances were lost after kill -9: {:?}",
        lost.len(),
        acked.len(),
        &lost[..lost.len().min(10)]
    );
    // The counters agree with what is stored: at least the million and every acknowledged one.
    let total: u64 = (0..CONTAINERS)
        .map(|c| {
            let (_, b) = get_with_query(&u, &format!("/cse-in/scale/f{c}"), &ae, "rcn=1");
            b["m2m:cnt"]["cni"].as_u64().unwrap()
        })
        .sum();
    assert!(
        total >= CONTAINERS * PER_CONTAINER + acked.len() as u64,
        "{total}"
    );
}
