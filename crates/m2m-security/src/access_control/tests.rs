//! Table-driven tests of [`decide`](super::decide).

use super::*;
use crate::association::Proof;
use chrono::TimeZone;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::net::IpAddr;

fn host() -> Home {
    Home::cse(
        m2m_core::SpId::parse("m2m.example.com").unwrap(),
        m2m_core::CseId::parse("id-in").unwrap(),
    )
}

/// The parsed originator (leaked: tests only).
fn id(s: &str) -> &'static EntityId {
    Box::leak(Box::new(EntityId::parse(s, &host()).expect(s)))
}

/// Groups for the tests: `grp1` = {Cae1 (SP-relative), //m2m.example.com/id-mn}, `grpGone` unavailable.
struct Groups(HashMap<&'static str, GroupLookup>);

impl Groups {
    fn new() -> Groups {
        let mut m = HashMap::new();
        m.insert(
            "grp1",
            GroupLookup::Members(vec!["/id-in/Cae1".into(), "//m2m.example.com/id-mn".into()]),
        );
        m.insert("/id-in/grp1", GroupLookup::Members(vec!["Cae1".into()]));
        m.insert("grpGone", GroupLookup::Unavailable);
        m.insert("grpEmpty", GroupLookup::Members(vec![]));
        Groups(m)
    }
}

impl GroupResolver for Groups {
    fn lookup(&self, id: &str) -> GroupLookup {
        self.0.get(id).cloned().unwrap_or(GroupLookup::NotAGroup)
    }
}

/// Monday 2024-06-03 12:00:00 UTC.
fn noon() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2024, 6, 3, 12, 0, 0).unwrap()
}

fn base() -> AccessRequest<'static> {
    AccessRequest {
        originator: id("Cae1"),
        proof: Proof::Authenticated,
        operation: AccessOperation::Retrieve,
        ip: Some("192.168.1.10".parse().unwrap()),
        time: noon(),
        location: Some(Location {
            lat: 48.8584,
            lon: 2.2945,
        }),
        target_type: 3,
        child_type: None,
        attributes: None,
        roles: &[],
    }
}

fn pv(v: Value) -> Privileges {
    Privileges::from_json(&v).expect("privileges parse")
}

fn decide1(p: &Privileges, req: &AccessRequest) -> Decision {
    decide(&[("acp1", p)], req, &host(), &Groups::new())
}

/// One rule with `acor: ["Cae1"]`, `acop: 63` and the given extra elements.
fn rule_with(extra: Value) -> Privileges {
    let mut r = json!({"acor": ["Cae1"], "acop": 63});
    if let (Value::Object(r), Value::Object(e)) = (&mut r, extra) {
        r.extend(e);
    }
    pv(json!({ "acr": [r] }))
}

fn ip(s: &str) -> Option<IpAddr> {
    Some(s.parse().unwrap())
}

#[test]
fn operations_table() {
    use AccessOperation::*;
    let cases: &[(u64, AccessOperation, bool)] = &[
        (1, Create, true),
        (2, Retrieve, true),
        (4, Update, true),
        (8, Delete, true),
        (16, Notify, true),
        (32, Discovery, true),
        (2, Discovery, false), // Discovery is not implied by Retrieve
        (32, Retrieve, false), // nor Retrieve by Discovery
        (1 + 4 + 8 + 16 + 32, Retrieve, false),
        (63, Retrieve, true),
        (0, Retrieve, false),
        (0, Create, false),
        (2 + 32, Discovery, true),
        (64, Create, false),
    ];
    for &(acop, op, want) in cases {
        let p = pv(json!({"acr": [{"acor": ["all"], "acop": acop}]}));
        let req = AccessRequest {
            operation: op,
            child_type: Some(4),
            attributes: None,
            ..base()
        };
        assert_eq!(decide1(&p, &req).permit, want, "acop {acop} op {op}");
    }
    assert_eq!(
        [Create, Retrieve, Update, Delete, Notify, Discovery].map(AccessOperation::bit),
        [1, 2, 4, 8, 16, 32]
    );
}

#[test]
fn originators_table() {
    // (acor, originator, permit)
    let cases: &[(&[&str], &str, bool)] = &[
        (&["all"], "Cae1", true),
        (&["all"], "/id-mn", true),
        (&["all"], "/Swhatever", true),
        (&[], "Cae1", false),
        (&["Cae2"], "Cae1", false),
        (&["Cae2", "Cae1"], "Cae1", true),
        // Every form of the same AE, both directions.
        (&["Cae1"], "/id-in/Cae1", true),
        (&["Cae1"], "//m2m.example.com/id-in/Cae1", true),
        (&["/id-in/Cae1"], "Cae1", true),
        (&["/id-in/Cae1"], "//m2m.example.com/id-in/Cae1", true),
        (&["//m2m.example.com/id-in/Cae1"], "Cae1", true),
        (&["//m2m.example.com/id-in/Cae1"], "/id-in/Cae1", true),
        // The same stem under another CSE or SP is another AE.
        (&["Cae1"], "/id-mn/Cae1", false),
        (&["Cae1"], "//other.org/id-in/Cae1", false),
        // SP domain entries.
        (&["m2m.example.com"], "Cae1", true),
        (&["//m2m.example.com"], "/id-mn", true),
        (&["//m2m.example.com"], "//other.org/id-in/Cae1", false),
        (&["//other.org"], "//other.org/id-in/Cae1", true),
        // CSE-ID vs the AEs under it.
        (&["/id-in"], "Cae1", false),
        (&["/id-in"], "/id-in", true),
        (&["//m2m.example.com/id-mn"], "/id-mn", true),
        (&["/id-mn"], "/id-mn/Cx", false),
        // Wildcards never cross '/'.
        (&["/id-in/C*"], "Cae1", true),
        (&["//*/id-in"], "/id-in", true),
        (&["/myCSE*/C98*"], "/myCSE1/C9886", true),
        (&["/myCSE*/C98*"], "/myCSE1/C9786", false),
        (&["*"], "Cae1", false),
        (&["//*"], "Cae1", false),
        // Groups.
        (&["grp1"], "Cae1", true),
        (&["grp1"], "/id-in/Cae1", true),
        (&["grp1"], "/id-mn", true),
        (&["grp1"], "Cae2", false),
        (&["grp1"], "/id-mn/Cae1", false),
        (&["/id-in/grp1"], "//m2m.example.com/id-in/Cae1", true),
        (&["grpEmpty"], "Cae1", false),
        (&["grpGone"], "Cae1", false),
        (&["grpGone", "Cae1"], "Cae1", true),
        // Not IDs.
        (&["admin"], "Cadmin", false),
        (&["CAdmin"], "CAdmin", true),
    ];
    for &(acor, originator, want) in cases {
        let p = pv(json!({"acr": [{"acor": acor, "acop": 2}]}));
        let req = AccessRequest {
            originator: id(originator),
            ..base()
        };
        let d = decide1(&p, &req);
        assert_eq!(
            d.permit, want,
            "acor {acor:?} originator {originator}: {}",
            d.reason
        );
    }
}

#[test]
fn group_unavailable_is_reported() {
    let p = pv(json!({"acr": [{"acor": ["grpGone"], "acop": 2}]}));
    let d = decide1(&p, &base());
    assert!(!d.permit);
    assert!(
        d.reason.contains("group grpGone cannot be retrieved"),
        "{}",
        d.reason
    );
}

#[test]
fn wildcard_entries_are_not_looked_up_as_groups() {
    struct Panicky;
    impl GroupResolver for Panicky {
        fn lookup(&self, id: &str) -> GroupLookup {
            assert!(id != "all" && !id.contains('*'), "looked up {id}");
            GroupLookup::NotAGroup
        }
    }
    let p = pv(json!({"acr": [{"acor": ["/id-in/C*", "Cx", "all"], "acop": 2}]}));
    assert!(decide(&[("acp1", &p)], &base(), &host(), &Panicky).permit);
}

#[test]
fn authentication_flag_table() {
    // (acaf, authenticated, permit) — TS-0003 table 7.1.5-1
    let cases = [
        (Some(true), true, true),
        (Some(true), false, false),
        (Some(false), true, true),
        (Some(false), false, true),
        (None, true, true),
        (None, false, true),
    ];
    for (acaf, authenticated, want) in cases {
        let proof = if authenticated {
            Proof::Authenticated
        } else {
            Proof::Vouched
        };
        let p = match acaf {
            Some(f) => rule_with(json!({ "acaf": f })),
            None => rule_with(json!({})),
        };
        let req = AccessRequest { proof, ..base() };
        let d = decide1(&p, &req);
        assert_eq!(d.permit, want, "acaf {acaf:?} authn {authenticated}");
        if !want {
            assert!(d.reason.contains("authenticated"), "{}", d.reason);
        }
    }
}

#[test]
fn time_window_edges() {
    let at = |h, m, s| Utc.with_ymd_and_hms(2024, 6, 3, h, m, s).unwrap();
    let daily = "* 0-29 9 * * * *"; // 09:00:00-09:29:59
    let weekdays = "* * 8-17 * * 1-5 *";
    let sat = Utc.with_ymd_and_hms(2024, 6, 8, 12, 0, 0).unwrap();
    let step = "0-29/10 * * * * * *"; // seconds 0, 10, 20
    let cases: &[(&[&str], DateTime<Utc>, bool)] = &[
        (&[daily], at(8, 59, 59), false),
        (&[daily], at(9, 0, 0), true),
        (&[daily], at(9, 29, 59), true),
        (&[daily], at(9, 30, 0), false),
        (&[weekdays], at(12, 0, 0), true),
        (&[weekdays], sat, false),
        (&[step], at(12, 0, 10), true),
        (&[step], at(12, 0, 11), false),
        (&[step], at(12, 0, 30), false),
        // Any window of the list.
        (&[daily, weekdays], at(9, 10, 0), true),
        (&[daily, weekdays], sat, false),
        (&["* * * * * 6 *", daily], sat, true),
        // A malformed window matches nothing, not everything.
        (&["bogus"], at(12, 0, 0), false),
        (&["* * * * * *"], at(12, 0, 0), false),
        (&["bogus", weekdays], at(12, 0, 0), true),
    ];
    for &(windows, time, want) in cases {
        let p = rule_with(json!({"acco": [{"actw": windows}]}));
        let req = AccessRequest { time, ..base() };
        let d = decide1(&p, &req);
        assert_eq!(d.permit, want, "{windows:?} at {time}: {}", d.reason);
        if !want {
            assert!(
                d.reason.contains("outside accessControlWindow"),
                "{}",
                d.reason
            );
        }
    }
}

#[test]
fn ip_table() {
    let nets = json!({"ipv4": ["192.168.1.0/24", "10.0.0.1"], "ipv6": ["2001:db8::/32"]});
    let cases = [
        (nets.clone(), ip("192.168.1.10"), true),
        (nets.clone(), ip("192.168.2.10"), false),
        (nets.clone(), ip("10.0.0.1"), true),
        (nets.clone(), ip("10.0.0.2"), false),
        (nets.clone(), ip("2001:db8::5"), true),
        (nets.clone(), ip("2001:db9::5"), false),
        (nets.clone(), ip("::ffff:192.168.1.10"), true),
        (nets.clone(), ip("::ffff:10.0.0.2"), false),
        (nets.clone(), None, false),
        (json!({"ipv4": ["0.0.0.0/0"]}), ip("203.0.113.7"), true),
        (json!({"ipv4": ["0.0.0.0/0"]}), ip("::1"), false),
        (json!({"ipv4": ["0.0.0.0/0"]}), None, false),
        (json!({"ipv6": ["::/0"]}), ip("::1"), true),
        (json!({"ipv6": ["::1/128"]}), ip("::1"), true),
        (json!({"ipv6": ["::1/128"]}), ip("::2"), false),
        (json!({}), ip("192.168.1.10"), false),
        (json!({"ipv4": []}), ip("192.168.1.10"), false),
        (
            json!({"ipv4": ["not-an-ip", "192.168.1.0/24"]}),
            ip("192.168.1.10"),
            true,
        ),
        (json!({"ipv4": ["not-an-ip"]}), ip("192.168.1.10"), false),
        (
            json!({"ipv4": ["192.168.1.0/24"], "ipx": []}),
            ip("192.168.1.10"),
            false,
        ),
    ];
    for (acip, addr, want) in cases {
        let p = rule_with(json!({"acco": [{"acip": acip}]}));
        let req = AccessRequest { ip: addr, ..base() };
        let d = decide1(&p, &req);
        assert_eq!(d.permit, want, "{acip} {addr:?}: {}", d.reason);
    }
}

#[test]
fn location_table() {
    // The Eiffel tower is ~4.1 km from Notre-Dame (48.8530, 2.3499).
    let eiffel = Some(Location {
        lat: 48.8584,
        lon: 2.2945,
    });
    let cases = [
        (json!({"accr": [48.8530, 2.3499, 5000.0]}), eiffel, true),
        (json!({"accr": [48.8530, 2.3499, 3000.0]}), eiffel, false),
        (json!({"accr": [48.8584, 2.2945, 0.0]}), eiffel, true),
        (json!({"accr": [48.8530, 2.3499, 5000.0]}), None, false),
        (
            json!({"accr": [48.8530, 2.3499, 5000.0]}),
            Some(Location {
                lat: f64::NAN,
                lon: 2.0,
            }),
            false,
        ),
        (json!({"accc": ["FR"]}), eiffel, false),
        (json!({"accr": [48.8530, 2.3499]}), eiffel, false),
        (json!({"xyz": [1]}), eiffel, false),
    ];
    for (aclr, loc, want) in cases {
        let p = rule_with(json!({"acco": [{"aclr": aclr}]}));
        let req = AccessRequest {
            location: loc,
            ..base()
        };
        let d = decide1(&p, &req);
        assert_eq!(d.permit, want, "{aclr} {loc:?}: {}", d.reason);
    }
    let p = rule_with(json!({"acco": [{"aclr": {"accc": ["FR"]}}]}));
    let d = decide1(&p, &base());
    assert!(
        d.reason
            .contains("country-code regions cannot be evaluated"),
        "{}",
        d.reason
    );
}

#[test]
fn haversine() {
    // One degree of latitude on this sphere: 2*pi*R/360.
    let d = distance_m(0.0, 0.0, 1.0, 0.0);
    assert!((d - 111_195.08).abs() < 1.0, "{d}");
    // Antipodes: half the circumference.
    let d = distance_m(0.0, 0.0, 0.0, 180.0);
    assert!((d - std::f64::consts::PI * 6_371_008.8).abs() < 1.0, "{d}");
    // Across the antimeridian.
    let d = distance_m(0.0, 179.9, 0.0, -179.9);
    assert!((d - 22_239.0).abs() < 1.0, "{d}");
}

#[test]
fn contexts_table() {
    let win_ok = "* * * * * * *";
    let win_no = "* * * * * * 2000";
    let cases = [
        // No acco, or an empty one: any context.
        (json!(null), true),
        (json!([]), true),
        (json!([{}]), true),
        // AND inside one element.
        (
            json!([{"actw": [win_ok], "acip": {"ipv4": ["192.168.1.0/24"]}}]),
            true,
        ),
        (
            json!([{"actw": [win_no], "acip": {"ipv4": ["192.168.1.0/24"]}}]),
            false,
        ),
        (
            json!([{"actw": [win_ok], "acip": {"ipv4": ["10.0.0.0/8"]}}]),
            false,
        ),
        (
            json!([{"actw": [win_ok], "acip": {"ipv4": ["192.168.1.0/24"]},
                    "aclr": {"accr": [48.8584, 2.2945, 10.0]}}]),
            true,
        ),
        (
            json!([{"actw": [win_ok], "acip": {"ipv4": ["192.168.1.0/24"]},
                    "aclr": {"accc": ["FR"]}}]),
            false,
        ),
        // OR across elements.
        (
            json!([{"actw": [win_no]}, {"acip": {"ipv4": ["192.168.1.0/24"]}}]),
            true,
        ),
        (
            json!([{"actw": [win_no]}, {"acip": {"ipv4": ["10.0.0.0/8"]}}]),
            false,
        ),
        // Unknown context kinds deny, even beside a good part; another element may still admit.
        (json!([{"actw": [win_ok], "acfoo": 1}]), false),
        (json!([{"acfoo": 1}]), false),
        (json!([{"acfoo": 1}, {"actw": [win_ok]}]), true),
        (json!([null]), false),
        (json!([[]]), false),
        (json!(["* * * * * * *"]), false),
    ];
    for (acco, want) in cases {
        let p = if acco.is_null() {
            rule_with(json!({}))
        } else {
            rule_with(json!({ "acco": acco }))
        };
        let d = decide1(&p, &base());
        assert_eq!(d.permit, want, "{acco}: {}", d.reason);
    }
    let d = decide1(&rule_with(json!({"acco": [{"acfoo": 1}]})), &base());
    assert!(
        d.reason.contains("unknown context element 'acfoo'"),
        "{}",
        d.reason
    );
}

#[test]
fn internal_requests_fail_ip_contexts_only() {
    let req = AccessRequest {
        ip: None,
        location: None,
        ..base()
    };
    assert!(decide1(&rule_with(json!({})), &req).permit);
    assert!(
        decide1(
            &rule_with(json!({"acco": [{"actw": ["* * * * * * *"]}]})),
            &req
        )
        .permit
    );
    let d = decide1(
        &rule_with(json!({"acco": [{"acip": {"ipv4": ["0.0.0.0/0"]}}]})),
        &req,
    );
    assert!(!d.permit);
    assert!(d.reason.contains("no source IP address"), "{}", d.reason);
}

#[test]
fn object_details_table() {
    use AccessOperation::*;
    // (acod, operation, target ty, child ty, permit)
    let cases: &[(Value, AccessOperation, u16, Option<u16>, bool)] = &[
        (json!([{"chty": [4]}]), Create, 3, Some(4), true),
        (json!([{"chty": [4]}]), Create, 3, Some(23), false),
        (json!([{"chty": [4, 23]}]), Create, 3, Some(23), true),
        (json!([{"ty": 3, "chty": [4]}]), Create, 3, Some(4), true),
        (json!([{"ty": 2, "chty": [4]}]), Create, 3, Some(4), false),
        (
            json!([{"ty": 2, "chty": [4]}, {"ty": 3, "chty": [4]}]),
            Create,
            3,
            Some(4),
            true,
        ),
        (json!([{"chty": [4]}]), Create, 3, None, false),
        (json!([{"chty": []}]), Create, 3, Some(4), false),
        (
            json!([{"ty": 28, "spty": "org.onem2m.x", "chty": [28]}]),
            Create,
            28,
            Some(28),
            false,
        ),
        (json!([{"chty": [4], "zz": 1}]), Create, 3, Some(4), false),
        (json!([{"chty": ["4"]}]), Create, 3, Some(4), false),
        (json!([]), Create, 3, Some(4), true),
        (json!(null), Create, 3, Some(4), true),
        (json!(null), Create, 3, None, true),
        // acod applies to CREATE only.
        (json!([{"chty": [4]}]), Retrieve, 3, None, true),
        (json!([{"ty": 2, "chty": [4]}]), Update, 3, None, true),
        (json!([{"chty": [4]}]), Delete, 3, None, true),
        (json!([{"spty": "x", "chty": [4]}]), Retrieve, 3, None, true),
    ];
    for (acod, op, target_type, child_type, want) in cases {
        let p = if acod.is_null() {
            rule_with(json!({}))
        } else {
            rule_with(json!({ "acod": acod }))
        };
        let req = AccessRequest {
            operation: *op,
            target_type: *target_type,
            child_type: *child_type,
            attributes: None,
            ..base()
        };
        let d = decide1(&p, &req);
        assert_eq!(
            d.permit, *want,
            "{acod} {op} {target_type} {child_type:?}: {}",
            d.reason
        );
    }
}

#[test]
fn permit_overrides_across_policies() {
    let deny_all = pv(json!({"acr": [{"acor": ["Cother"], "acop": 63}]}));
    let grant = pv(json!({"acr": [
        {"acor": ["Cae1"], "acop": 4},
        {"acor": ["Cae1"], "acop": 2}
    ]}));
    let d = decide(
        &[("acpA", &deny_all), ("acpB", &grant)],
        &base(),
        &host(),
        &NoGroups,
    );
    assert!(d.permit);
    assert_eq!(d.reason, "permitted by rule 2 of acpB");
    let d = decide(
        &[("acpB", &grant), ("acpA", &deny_all)],
        &base(),
        &host(),
        &NoGroups,
    );
    assert!(d.permit);
    // A rule that fails (a defective one, a context that fails) does not veto another that permits.
    let broken = pv(json!({"acr": [{"acor": ["all"], "acop": 2, "aca": ["x"]},
                                   {"acor": ["all"], "acop": 2, "acco": [{"actw": ["bogus"]}]}]}));
    let d = decide(
        &[("acpX", &broken), ("acpB", &grant)],
        &base(),
        &host(),
        &NoGroups,
    );
    assert!(d.permit, "{}", d.reason);
    let d = decide(&[("acpX", &broken)], &base(), &host(), &NoGroups);
    assert!(!d.permit);
}

#[test]
fn deny_without_policies_or_rules() {
    let d = decide(&[], &base(), &host(), &NoGroups);
    assert!(!d.permit);
    assert_eq!(d.reason, "no accessControlPolicy applies to the target");
    let empty = pv(json!({"acr": []}));
    let d = decide(
        &[("acpA", &empty), ("acpB", &empty)],
        &base(),
        &host(),
        &NoGroups,
    );
    assert!(!d.permit);
    assert_eq!(
        d.reason,
        "no rule of acpA, acpB grants RETRIEVE to //m2m.example.com/id-in/Cae1"
    );
}

#[test]
fn reasons() {
    let p = pv(json!({"acr": [
        {"acor": ["Cae1"], "acop": 2, "acco": [{"actw": ["* * 0-5 * * * *"]}]},
        {"acor": ["Cae1"], "acop": 2, "acaf": true},
        {"acor": ["Cother"], "acop": 63},
    ]}));
    let req = AccessRequest {
        originator: id("/id-in/Cae1"),
        proof: Proof::Vouched,
        ..base()
    };
    let d = decide(&[("acpA", &p)], &req, &host(), &NoGroups);
    assert!(!d.permit);
    assert_eq!(
        d.reason,
        "no rule of acpA grants RETRIEVE to //m2m.example.com/id-in/Cae1; \
         rule 1 of acpA: 2024-06-03T12:00:00Z is outside accessControlWindow; \
         rule 2 of acpA: requires an authenticated originator (acaf)"
    );
    let d = decide(
        &[("acpA", &p)],
        &AccessRequest {
            proof: Proof::Claimed,
            ..base()
        },
        &host(),
        &NoGroups,
    );
    assert!(d.reason.contains("only \"all\" can match"), "{}", d.reason);
    // Many notes are capped.
    let many = pv(
        json!({"acr": (0..10).map(|_| json!({"acor": ["Cae1"], "acop": 2, "acaf": true})).collect::<Vec<_>>()}),
    );
    let req = AccessRequest {
        proof: Proof::Vouched,
        ..base()
    };
    let d = decide(&[("acpA", &many)], &req, &host(), &NoGroups);
    assert!(d.reason.ends_with("; 7 more"), "{}", d.reason);
    assert_eq!(d.to_string(), format!("deny: {}", d.reason));
}

#[test]
fn hostile_policies_never_panic_and_never_permit() {
    let shapes = [
        json!({"acr": [null, 1, "x", [], {}]}),
        json!({"acr": [{"acor": null, "acop": null}]}),
        json!({"acr": [{"acor": [null, 1, {}], "acop": 63}]}),
        json!({"acr": [{"acor": ["all"], "acop": "63"}]}),
        json!({"acr": [{"acor": ["all"], "acop": -63}]}),
        json!({"acr": [{"acor": ["all"], "acop": 63, "acco": [null]}]}),
        json!({"acr": [{"acor": ["all"], "acop": 63, "acco": [{"actw": [null]}]}]}),
        json!({"acr": [{"acor": ["all"], "acop": 63, "acco": [{"actw": "x"}]}]}),
        json!({"acr": [{"acor": ["all"], "acop": 63, "acco": [{"acip": {"ipv4": [["10.0.0.1"]]}}]}]}),
        json!({"acr": [{"acor": ["all"], "acop": 63, "acco": [{"aclr": {"accr": [1e308, 1e308, 1e308]}}]}]}),
        json!({"acr": [{"acor": ["all"], "acop": 63, "acaf": 1}]}),
        json!({"acr": [{"acor": ["all"], "acop": 1, "acod": [{"chty": [null]}]}]}),
        json!({"acr": [{"acor": ["*", "//*", "/*/*/*/*", "", "//", "/", "C", "S", "..", "//./.."], "acop": 63}]}),
    ];
    let originators = ["Cae1", "/id-mn", "/Sx", "//a.b/c", "//a.b/c/Cd"];
    for v in &shapes {
        let p = Privileges::from_json(v).unwrap();
        for o in originators {
            for op in [AccessOperation::Create, AccessOperation::Retrieve] {
                let req = AccessRequest {
                    originator: id(o),
                    operation: op,
                    child_type: Some(4),
                    attributes: None,
                    ..base()
                };
                let d = decide1(&p, &req);
                assert!(!d.permit, "{v} {o:?}: {}", d.reason);
            }
        }
    }
}

#[test]
fn a_claim_matches_only_all() {
    // (acor, acaf, permit) for an originator nobody proved: its ID earns nothing granted to that ID.
    let cases: &[(&[&str], bool, bool)] = &[
        (&["all"], false, true),
        (&["all"], true, false),
        (&["Cae1"], false, false),
        (&["/id-in/Cae1"], false, false),
        (&["//m2m.example.com/id-in/Cae1"], false, false),
        (&["m2m.example.com"], false, false),
        (&["//m2m.example.com"], false, false),
        (&["/id-in/C*"], false, false),
        (&["C*"], false, false),
        (&["grp1"], false, false),
        (&["Cae1", "all"], false, true),
    ];
    for &(acor, acaf, want) in cases {
        let p = pv(json!({"acr": [{"acor": acor, "acop": 63, "acaf": acaf}]}));
        let req = AccessRequest {
            proof: Proof::Claimed,
            ..base()
        };
        let d = decide1(&p, &req);
        assert_eq!(d.permit, want, "acor {acor:?} acaf {acaf}: {}", d.reason);
        // A relayed originator (an authenticated CSE vouches for it) matches IDs, but not acaf.
        let relayed = decide1(
            &p,
            &AccessRequest {
                proof: Proof::Vouched,
                ..base()
            },
        );
        assert_eq!(relayed.permit, !acaf, "relayed acor {acor:?} acaf {acaf}");
    }
}

/// accessControlAttributes (Release 4): a rule limited to some attributes grants only what
/// touches no other, only to its own originators, and together with others of its kind.
#[test]
fn rules_limited_to_attributes() {
    let names = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect::<Vec<String>>();
    let p = pv(json!({"acr": [
        {"acor": ["Cae1"], "acop": 2, "aca": ["lbl", "rn"]},
        {"acor": ["Cae1"], "acop": 2, "aca": ["ty"]},
        {"acor": ["Cother"], "acop": 2, "aca": ["cr"]},
    ]}));
    let ask = |touched: Option<&[String]>| {
        let req = AccessRequest {
            attributes: touched,
            ..base()
        };
        decide1(&p, &req)
    };
    let within = names(&["lbl", "ty"]);
    let d = ask(Some(&within));
    assert!(d.permit, "{d}");
    let mut granted = d.attributes.clone().expect("a limited grant");
    granted.sort();
    assert_eq!(
        granted,
        names(&["lbl", "rn", "ty"]),
        "only the own rules' attributes"
    );
    assert!(
        !ask(Some(&names(&["lbl", "cr"]))).permit,
        "cr is another originator's"
    );
    assert!(
        !ask(Some(&names(&["lbl", "ct"]))).permit,
        "ct is in no rule"
    );
    assert!(!ask(None).permit, "unknown attributes: no limited grant");
    // Another operation than the rules': nothing.
    let update = AccessRequest {
        operation: AccessOperation::Update,
        attributes: Some(&within),
        ..base()
    };
    assert!(!decide1(&p, &update).permit);
    // A rule covering everything wins: no limit on the answer.
    let both = pv(json!({"acr": [
        {"acor": ["Cae1"], "acop": 2, "aca": ["lbl"]},
        {"acor": ["Cae1"], "acop": 2},
    ]}));
    let d = decide1(
        &both,
        &AccessRequest {
            attributes: Some(&within),
            ..base()
        },
    );
    assert!(d.permit && d.attributes.is_none(), "{d}");
    // An empty list covers nothing.
    let none = pv(json!({"acr": [{"acor": ["Cae1"], "acop": 2, "aca": []}]}));
    assert!(
        !decide1(
            &none,
            &AccessRequest {
                attributes: Some(&within),
                ..base()
            }
        )
        .permit
    );
    assert!(
        decide1(
            &none,
            &AccessRequest {
                attributes: Some(&[]),
                ..base()
            }
        )
        .permit
    );
}
