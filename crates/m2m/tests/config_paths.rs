//! Relative paths inside the configurations of `m2m cse`, `m2m maf`, `m2m mef`, `m2m ae` and
//! `m2m request --ae`, run from a working directory that is not the configuration's: a CSE reads
//! them against its working directory, the key services and the AEs against their configuration
//! file's directory, as their `--help` and the README say. Each file a configuration names
//! exists at one of the two places only, so the other reading would fail to start.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

const M2M: &str = env!("CARGO_BIN_EXE_m2m");
const SP: &str = "m2m.example.com";
const START_TIMEOUT: Duration = Duration::from_secs(20);
/// The AE's Kpsa (a test value) and its KpsaID at the CSE.
const AE_KEY: &str = "00112233445566778899aabbccddeeff";
const AE_KPSA_ID: &str = "paths-ae@in.provider.com";

/// A child process, killed when dropped.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `m2m ARGS` in `cwd`, which must succeed.
fn m2m_in(cwd: &Path, args: &[&str]) -> std::process::Output {
    let out = Command::new(M2M)
        .args(args)
        .current_dir(cwd)
        .stdin(Stdio::null())
        .output()
        .expect("run m2m");
    assert!(
        out.status.success(),
        "m2m {}: {}\n{}\n{}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Starts `m2m ARGS` in `cwd` and waits for a stdout line starting with `prefix`; returns the
/// process and the rest of that line. Panics with the process's stderr if it never comes.
fn start_in(cwd: &Path, args: &[&str], prefix: &str) -> (Proc, String) {
    let log = cwd.join(format!("{}.log", args[0]));
    let mut child = Command::new(M2M)
        .args(args)
        .current_dir(cwd)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log).expect("log file"))
        .spawn()
        .expect("start m2m");
    let stdout = child.stdout.take().expect("stdout");
    let proc = Proc(child);
    let (tx, rx) = mpsc::channel();
    let wanted = prefix.to_owned();
    std::thread::spawn(move || {
        let mut found = false;
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if !found {
                if let Some(rest) = line.strip_prefix(&wanted) {
                    found = true;
                    let _ = tx.send(rest.to_owned());
                }
            }
        }
    });
    match rx.recv_timeout(START_TIMEOUT) {
        Ok(rest) => (proc, rest),
        Err(_) => panic!(
            "m2m {} did not print {prefix:?}:\n{}",
            args.join(" "),
            std::fs::read_to_string(&log).unwrap_or_default()
        ),
    }
}

fn write_private(path: &Path, text: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

/// The working directory `cwd` holds `pki/` (the CA, the IN-CSE's certificate); `cwd/conf/`
/// holds the key services' and the AE's configurations with the files they name beside them.
fn layout(cwd: &Path) {
    m2m_in(
        cwd,
        &[
            "pki",
            "ca",
            "--out",
            "pki/ca",
            "--sp",
            SP,
            "--permit-dns",
            "keys.example.net",
        ],
    );
    std::fs::create_dir(cwd.join("conf")).unwrap();
    for (out, kind, id) in [
        ("pki/in", "cse", "/id-in"),
        ("conf/maf", "maf", "maf.keys.example.net"),
        ("conf/mef", "mef", "mef.keys.example.net"),
    ] {
        let mut args = vec![
            "pki", "issue", "--ca", "pki/ca", "--kind", kind, "--id", id, "--out", out,
        ];
        if kind == "cse" {
            args.extend(["--sp", SP]);
        }
        m2m_in(cwd, &args);
    }
    std::fs::copy(cwd.join("pki/ca/ca.pem"), cwd.join("conf/ca.pem")).unwrap();
}

#[test]
fn relative_paths_in_configurations_are_read_where_the_documentation_says() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let cwd = tmp.path();
    let conf = cwd.join("conf");
    layout(cwd);

    // The MAF: relative to its configuration's directory.
    write_private(&conf.join("maf-storage.key"), &"ab".repeat(32));
    write_private(
        &conf.join("maf.toml"),
        "fqdn = \"maf.keys.example.net\"\nsp_fqdn = \"m2m.example.com\"\nlisten = \"127.0.0.1:0\"\n\
         certificate = \"maf.pem\"\nprivate_key = \"maf.key\"\ntrusted_ca = \"ca.pem\"\n\
         storage = \"maf-data\"\nstorage_key_file = \"maf-storage.key\"\n",
    );
    let (_maf, _) = start_in(
        cwd,
        &["maf", "--config", "conf/maf.toml"],
        "m2m-maf listening https://",
    );
    assert!(
        conf.join("maf-data").is_dir(),
        "the MAF's storage beside its file"
    );
    assert!(
        !cwd.join("maf-data").exists(),
        "not in the working directory"
    );

    // The MEF: likewise; it creates its storage key where the file says.
    write_private(
        &conf.join("mef.toml"),
        "fqdn = \"mef.keys.example.net\"\nsp_fqdn = \"m2m.example.com\"\nlisten = \"127.0.0.1:0\"\n\
         certificate = \"mef.pem\"\nprivate_key = \"mef.key\"\ntrusted_ca = \"ca.pem\"\n\
         storage = \"mef-data/enrolments.json\"\nstorage_key = \"mef-storage.key\"\n",
    );
    let (_mef, _) = start_in(
        cwd,
        &["mef", "--config", "conf/mef.toml"],
        "m2m-mef listening https://",
    );
    assert!(
        conf.join("mef-storage.key").is_file(),
        "the MEF's key beside its file"
    );
    assert!(
        !cwd.join("mef-storage.key").exists(),
        "not in the working directory"
    );

    // The CSE: relative to the working directory (its certificate is in cwd/pki, not conf/pki).
    write_private(
        &conf.join("cse.toml"),
        &format!(
            "[http]\nlisten = \"\"\n[storage]\npath = \"cse-data\"\n\
             [tls]\nlisten = \"127.0.0.1:0\"\ncertificate = \"pki/in.pem\"\nprivate_key = \"pki/in.key\"\n\
             trusted_ca = \"pki/ca/ca.pem\"\n\
             [[security.psk]]\nentity = \"Cpaths\"\nkpsa_id = \"{AE_KPSA_ID}\"\nkey = \"{AE_KEY}\"\n"
        ),
    );
    let (_cse, addr) = start_in(
        cwd,
        &["cse", "--config", "conf/cse.toml"],
        "m2m-cse listening https://",
    );
    assert!(
        cwd.join("cse-data").is_dir(),
        "the CSE's data in the working directory"
    );
    assert!(!conf.join("cse-data").exists(), "not beside its file");

    // The AE: its key file and state file relative to its configuration's directory.
    write_private(&conf.join("ae.kpsa"), AE_KEY);
    write_private(
        &conf.join("ae.toml"),
        &format!(
            "[ae]\nresource_name = \"paths\"\napp_id = \"Npaths\"\nstate_file = \"ae.state.json\"\n\
             [cse]\nurl = \"https://{addr}\"\ncse_id = \"/id-in\"\nresource_name = \"cse-in\"\n\
             [security]\nmode = \"psk\"\nkpsa_id = \"{AE_KPSA_ID}\"\nkey_file = \"ae.kpsa\"\n"
        ),
    );
    let (_ae, ready) = start_in(cwd, &["ae", "--config", "conf/ae.toml"], "{\"ready\":");
    assert!(ready.contains("\"aei\":\"Cpaths\""), "{ready}");
    assert!(
        conf.join("ae.state.json").is_file(),
        "the AE's state beside its file"
    );
    assert!(
        !cwd.join("ae.state.json").exists(),
        "not in the working directory"
    );

    // `m2m request --ae` reads the same file the same way: its key, and its AE-ID from the state.
    let out = m2m_in(
        cwd,
        &[
            "request",
            "--json",
            "--ae",
            "conf/ae.toml",
            "--to",
            "cse-in/paths",
        ],
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("\"rsc\":2000"), "{text}");
    assert!(text.contains("\"aei\":\"Cpaths\""), "{text}");
}
