//! `m2m bench` end to end: a fill at scale (`CxN`, labels for discovery), the storage sampling of
//! a spawned CSE, and the discovery phases (TS-0004 clause 7.3.3.17) next to `la` retrieves.

mod common;

use common::*;
use serde_json::Value;

#[test]
fn a_spawned_cse_is_filled_sampled_and_discovered() {
    let out = m2m(&[
        "bench",
        "--fill",
        "3x50",
        "--duration",
        "300ms",
        "--warmup",
        "100ms",
        "--clients",
        "2",
        "--phases",
        "create,la,discovery",
        "--json",
    ]);
    let r = json_stdout(&out);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(r["encrypted_store"], false, "{r}");
    let fill = &r["fill"];
    assert_eq!(fill["count"], 150, "{r}");
    assert_eq!(fill["containers"], 3);
    assert_eq!(fill["per_container"], 50);
    assert_eq!(fill["rare"], 1);
    assert_eq!(fill["errors"], 0, "{r}");
    assert!(
        stderr.contains("3 containers cse-in/bench/fill0..fill2, 50 each"),
        "{stderr}"
    );
    // The storage of the spawned CSE, sampled during the fill and after it.
    let st = &fill["storage"];
    assert!(st["samples"].as_u64().unwrap() >= 2, "{st}");
    let db = st["final_db_bytes"].as_u64().unwrap();
    let wal = st["final_wal_bytes"].as_u64().unwrap();
    assert!(db > 0, "{st}");
    assert!(st["max_wal_bytes"].as_u64().unwrap() >= wal, "{st}");
    assert!(st["db_bytes_at_max_wal"].as_u64().is_some(), "{st}");
    // A database this small is below the size ratios count from.
    assert_eq!(st["max_wal_db_ratio"], Value::Null, "{st}");
    assert!(r["rss"]["after_fill_kib"].as_u64().unwrap() > 0, "{r}");

    let phases = r["phases"].as_array().unwrap();
    let names: Vec<(&str, u64)> = phases
        .iter()
        .map(|p| (p["phase"].as_str().unwrap(), p["clients"].as_u64().unwrap()))
        .collect();
    assert_eq!(
        names,
        [
            ("cin create", 2),
            ("la retrieve", 2),
            ("disc type", 1),
            ("disc label", 1),
            ("la + 2 disc", 2),
            ("2 disc + la", 2),
        ]
    );
    for p in phases {
        assert!(p["requests"].as_u64().unwrap() > 0, "{p}");
        assert_eq!(p["errors"], 0, "{p}");
        assert!(p["p99_ms"].as_f64().unwrap() >= p["p50_ms"].as_f64().unwrap());
    }
    // Type discovery stops at lim=100 of the 150+ instances; one fill instance is rare.
    assert_eq!(phases[2]["found"], 100, "{}", phases[2]);
    assert_eq!(phases[3]["found"], 1, "{}", phases[3]);
    let mixed = &r["la_under_discovery"];
    assert_eq!(mixed["la_clients"], 2);
    assert_eq!(mixed["disc_clients"], 2);
    assert_eq!(mixed["la_req_per_s"], phases[4]["req_per_s"]);
    assert_eq!(mixed["disc_p99_ms"], phases[5]["p99_ms"]);
    let ratio = mixed["la_ratio_to_alone"].as_f64().unwrap();
    let expected =
        phases[4]["req_per_s"].as_f64().unwrap() / phases[1]["req_per_s"].as_f64().unwrap();
    assert!((ratio - expected).abs() < 0.01, "{ratio} vs {expected}");
}

/// `--encrypted-store`: the spawned CSE's store is encrypted at rest (its database is no plain
/// SQLite file) and the run says so.
#[test]
fn a_spawned_cse_with_an_encrypted_store_is_measured() {
    let out = m2m(&[
        "bench",
        "--encrypted-store",
        "--fill",
        "20",
        "--duration",
        "200ms",
        "--warmup",
        "50ms",
        "--clients",
        "2",
        "--json",
    ]);
    let r = json_stdout(&out);
    assert_eq!(r["encrypted_store"], true, "{r}");
    assert_eq!(r["fill"]["errors"], 0, "{r}");
    assert!(
        r["fill"]["storage"]["final_db_bytes"].as_u64().unwrap() > 0,
        "{r}"
    );
    for p in r["phases"].as_array().unwrap() {
        assert!(p["requests"].as_u64().unwrap() > 0, "{p}");
        assert_eq!(p["errors"], 0, "{p}");
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("its store encrypted at rest"), "{stderr}");
}

#[test]
fn a_fill_on_a_running_cse_is_labelled_and_kept() {
    let cse = CseProcess::start_in();
    let url = cse.url().to_owned();
    let out = m2m(&[
        "bench", "--url", &url, "--fill", "3x50", "--phases", "none", "--keep",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("filled 150 contentInstances"), "{stdout}");
    // Sizes and memory are unknown for a CSE the bench did not start; no phase ran.
    assert!(!stdout.contains("WAL"), "{stdout}");
    assert!(!stdout.contains("RSS"), "{stdout}");
    assert!(!stdout.contains("req/s"), "{stdout}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("kept cse-in/bench"), "{stderr}");

    // Every fill container carries bench/fill, one instance in 1000 bench/rare.
    let (rsc, b) = get_with_query(&url, "/cse-in", "CAdmin", "fu=1&lbl=bench/fill");
    assert_eq!(rsc, 2000, "{b}");
    let mut found = uril(&b);
    found.sort();
    assert_eq!(
        found,
        [
            "cse-in/bench/fill0",
            "cse-in/bench/fill1",
            "cse-in/bench/fill2"
        ]
    );
    let (rsc, b) = get_with_query(&url, "/cse-in", "CAdmin", "fu=1&lbl=bench/rare");
    assert_eq!(rsc, 2000, "{b}");
    let rare = uril(&b);
    assert_eq!(rare.len(), 1, "{b}");
    assert!(rare[0].starts_with("cse-in/bench/fill0/"), "{rare:?}");
    for c in 0..3 {
        let (rsc, b) = retrieve(&url, &format!("/cse-in/bench/fill{c}"), "CAdmin");
        assert_eq!(rsc, 2000, "{b}");
        assert_eq!(b["m2m:cnt"]["cni"], 50, "{b}");
    }

    // Kept: a second run finds the AE and says what to do.
    let again = m2m_command(&["bench", "--url", &url, "--phases", "none"]);
    assert!(!again.status.success());
    let e = String::from_utf8_lossy(&again.stderr);
    assert!(
        e.contains("already exists") && e.contains("delete cse-in/bench first"),
        "{e}"
    );
    // Bad forms are refused before anything is sent.
    for (args, why) in [
        (
            vec!["--fill", "3x"],
            "the count per container '' is not a positive integer",
        ),
        (
            vec!["--fill", "0x5"],
            "the container count must be at least 1",
        ),
        (vec!["--phases", "create,disc"], "unknown phase 'disc'"),
        (vec!["--keep"], "--keep only applies with --url"),
    ] {
        let out = m2m_command(&[&["bench"], args.as_slice()].concat());
        assert!(!out.status.success(), "{args:?}");
        let e = String::from_utf8_lossy(&out.stderr);
        assert!(e.contains(why), "{args:?}: {e}");
    }
}
