//! `m2m cse|maf|mef|ae --print-default-config`: the file an operator starts from shows every
//! setting with a comment, the optional ones commented out, and loads as it is.

mod common;

use m2m_core::config_text::{each_uncommented, outline};

fn printed(command: &str) -> String {
    let out = common::m2m(&[command, "--print-default-config"]);
    String::from_utf8(out.stdout).expect("UTF-8")
}

#[test]
fn every_printed_configuration_documents_each_setting_and_shows_optional_ones() {
    for command in ["cse", "maf", "mef", "ae"] {
        let text = printed(command);
        let o = outline(&text).unwrap_or_else(|e| panic!("m2m {command}: {e}"));
        assert!(
            o.undocumented().is_empty(),
            "m2m {command}: {:?}",
            o.undocumented()
        );
        assert!(
            o.optional.iter().any(|p| p.lines.len() > 1),
            "m2m {command} shows no optional table or rows"
        );
        assert!(!each_uncommented(&text, &[]).unwrap().is_empty());
    }
}

#[test]
fn the_printed_configurations_load_as_they_are() {
    let cse = m2m_cse::Config::from_toml(&printed("cse")).unwrap();
    assert_eq!(
        format!("{cse:?}"),
        format!("{:?}", m2m_cse::Config::default())
    );
    let text = printed("cse");
    for optional in ["# [tls]", "# [[security.psk]]", "# [maf]", "# [registrar]"] {
        assert!(text.contains(optional), "{optional}");
    }
    m2m_keyservices::maf::MafConfig::from_toml_str(&printed("maf")).unwrap();
    m2m_keyservices::mef::MefConfig::from_toml_str(&printed("mef")).unwrap();
}
