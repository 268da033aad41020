//! Durability of a real `m2m cse`: the resource tree survives a restart and a `kill -9`, and no
//! acknowledged write is lost (DESIGN.md principle 3).

mod common;

use common::*;
use serde_json::json;
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[test]
fn resources_survive_kill_and_restart() {
    let cse = CseProcess::start_in();
    let u = cse.url().to_owned();
    let ae = register_ae(&u, "/cse-in", "Cdurable", "app", &[]);
    create_cnt(
        &u,
        "/cse-in/app",
        &ae,
        json!({ "rn": "c", "mni": 3, "lbl": ["keep"] }),
    );
    let cins: Vec<String> = (0..4)
        .map(|i| create_cin(&u, "/cse-in/app/c", &ae, &format!("v{i}")))
        .collect();
    let rx = Receiver::start();
    let (rsc, b) = create(
        &u,
        "/cse-in/app/c",
        &ae,
        23,
        json!({ "m2m:sub": { "rn": "s", "nu": [rx.url()], "enc": { "net": [3] } } }),
    );
    assert_eq!(rsc, 2001, "{b}");
    let (rsc, b) = create(
        &u,
        "/cse-in/app",
        &ae,
        9,
        json!({ "m2m:grp": { "rn": "g", "mt": 3, "mnm": 10, "mid": ["cse-in/app/c"] } }),
    );
    assert_eq!(rsc, 2001, "{b}");
    let (_, before) = retrieve(&u, "/cse-in/app/c", &ae);

    let mut cse = cse;
    cse.kill9();
    assert!(!cse.is_running(), "the CSE was killed");
    let cse = cse.restart();
    let u = cse.url().to_owned();

    let (rsc, b) = retrieve(&u, "/cse-in/app", &ae);
    assert_eq!(rsc, 2000, "the AE after a restart: {b}");
    assert_eq!(b["m2m:ae"]["aei"], json!(ae), "{b}");
    let (rsc, after) = retrieve(&u, "/cse-in/app/c", &ae);
    assert_eq!(rsc, 2000, "the container after a restart: {after}");
    for attr in ["ri", "ct", "lt", "st", "cni", "cbs", "mni", "lbl"] {
        assert_eq!(
            after["m2m:cnt"][attr], before["m2m:cnt"][attr],
            "container attribute '{attr}' changed across the restart"
        );
    }
    let (_, b) = retrieve(&u, "/cse-in/app/c/la", &ae);
    assert_eq!(b["m2m:cin"]["con"], json!("v3"), "{b}");
    let (rsc, _) = retrieve(&u, &format!("/{}", cins[0]), &ae);
    assert_eq!(rsc, 4004, "the instance dropped by mni stays dropped");
    for ri in &cins[1..] {
        let (rsc, b) = retrieve(&u, &format!("/{ri}"), &ae);
        assert_eq!(rsc, 2000, "instance {ri} after a restart: {b}");
    }
    let (rsc, b) = retrieve(&u, "/cse-in/app/g/fopt", &ae);
    assert_eq!(rsc, 2000, "the group after a restart: {b}");

    // The AE-ID is still taken, and the subscription still works.
    let r = create_full(
        &u,
        "/cse-in",
        &ae,
        2,
        json!({ "m2m:ae": { "rn": "app2", "api": "Nx", "rr": false, "srv": ["3"] } }),
    );
    assert_eq!(r.rsc, 4117, "{:?}", r.body);
    create_cin(&u, "/cse-in/app/c", &ae, "after-restart");
    let n = rx.wait_for(|r| r.net() == Some(3), WAIT);
    assert_eq!(n.rep()["m2m:cin"]["con"], json!("after-restart"));
    // The CSEBase carries the new pointOfAccess.
    let (_, b) = retrieve(&u, "/cse-in", &ae);
    assert_eq!(b["m2m:cb"]["poa"], json!([u]), "{b}");
}

#[test]
fn no_acknowledged_write_is_lost_on_kill_9() {
    let cse = CseProcess::start_in();
    let u = cse.url().to_owned();
    let ae = register_ae(&u, "/cse-in", "Cburst", "app", &[]);
    create_cnt(&u, "/cse-in/app", &ae, json!({ "rn": "c" }));

    let acked = Arc::new(Mutex::new(Vec::<String>::new()));
    let count = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (acked, count, stop, u, ae) = (
            Arc::clone(&acked),
            Arc::clone(&count),
            Arc::clone(&stop),
            u.clone(),
            ae.clone(),
        );
        std::thread::spawn(move || {
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let body = json!({ "m2m:cin": { "con": format!("n{i}") } });
                match try_request("POST", &u, "/cse-in/app/c", Some(&ae), Some(4), Some(&body)) {
                    Ok(r) if r.rsc == 2001 => {
                        let ri = r.body["m2m:cin"]["ri"]
                            .as_str()
                            .expect("an acknowledged create names its resource")
                            .to_owned();
                        acked.lock().expect("lock").push(ri);
                        count.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(r) => panic!("unexpected answer during the burst: {} {:?}", r.rsc, r.body),
                    // The process was killed under us.
                    Err(_) => break,
                }
                i += 1;
            }
        })
    };
    // Let the burst run for about a second once it is going, then kill -9.
    assert!(
        poll(WAIT, || (count.load(Ordering::Relaxed) > 0).then_some(())).is_some(),
        "the burst did not start"
    );
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(1) {
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut cse = cse;
    cse.kill9();
    stop.store(true, Ordering::Relaxed);
    writer.join().expect("the writer thread");
    let acked = acked.lock().expect("lock").clone();
    assert!(
        acked.len() > 10,
        "too few writes to be meaningful: {}",
        acked.len()
    );

    let cse = cse.restart();
    let u = cse.url().to_owned();
    let mut lost = Vec::new();
    for ri in &acked {
        let (rsc, _) = retrieve(&u, &format!("/{ri}"), &ae);
        if rsc != 2000 {
            lost.push((ri.clone(), rsc));
        }
    }
    assert!(
        lost.is_empty(),
        "{} of {} acknowledged contentInstances were lost after kill -9: {:?}",
        lost.len(),
        acked.len(),
        &lost[..lost.len().min(10)]
    );
    let (rsc, b) = get_with_query(&u, "/cse-in/app/c", &ae, "fu=1&ty=4&drt=2&lim=100000");
    assert_eq!(rsc, 2000, "{b}");
    let found: BTreeSet<String> = b["m2m:uril"]
        .as_array()
        .expect("uril")
        .iter()
        .filter_map(|v| v.as_str().map(str::to_owned))
        .collect();
    assert!(
        acked.iter().all(|ri| found.contains(ri)),
        "discovery finds every acknowledged instance"
    );
    assert!(
        found.len() <= acked.len() + 1,
        "at most the one unacknowledged in-flight create may have landed: {} found, {} acked",
        found.len(),
        acked.len()
    );
    let (_, b) = retrieve(&u, "/cse-in/app/c", &ae);
    assert_eq!(
        b["m2m:cnt"]["cni"],
        json!(found.len()),
        "currentNrOfInstances matches the instances present after the crash: {b}"
    );
    // The CSE keeps working after the crash.
    create_cin(&u, "/cse-in/app/c", &ae, "after");
    let (_, b) = retrieve(&u, "/cse-in/app/c", &ae);
    assert_eq!(b["m2m:cnt"]["cni"], json!(found.len() + 1), "{b}");
}
