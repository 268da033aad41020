//! The README's curl session works as written, against a real CSE.

mod common;

use common::CseProcess;
use std::process::Command;

/// The first ```sh block after the "A first session with curl" heading.
fn curl_session() -> String {
    let readme = include_str!("../../../README.md");
    let section = readme
        .split("## A first session with curl")
        .nth(1)
        .expect("README has the curl section");
    let block = section
        .split("```sh\n")
        .nth(1)
        .expect("the section has a sh block");
    block.split("```").next().unwrap().to_owned()
}

#[test]
fn readme_curl_session_registers_writes_and_reads_back() {
    if !common::have_tool("curl", "--version", "the README's curl session") {
        return;
    }
    let cse = CseProcess::start_temp("");
    let authority = cse.url().trim_start_matches("http://").to_owned();
    let script = curl_session().replace("127.0.0.1:8080", &authority);
    assert!(script.contains("curl"), "the session has curl commands");
    let out = Command::new("bash")
        .arg("-c")
        .arg(format!("set -e\n{script}"))
        .output()
        .expect("bash runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "session failed: {}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains(r#""aei":"Cdoorlock""#),
        "AE registered: {stdout}"
    );
    assert!(
        stdout.contains(r#""m2m:cnt""#),
        "container created: {stdout}"
    );
    // The latest read returns the instance written before it, and discovery finds the container.
    assert!(
        stdout.matches(r#""con":"LOCKED""#).count() >= 2,
        "written and read back: {stdout}"
    );
    assert!(
        stdout.contains(r#""m2m:uril":["cse-in/doorlock/state"]"#),
        "discovered: {stdout}"
    );
    assert!(!stdout.contains("m2m:dbg"), "no request failed: {stdout}");
}
