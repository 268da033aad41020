//! Discovery (TS-0004 clause 7.3.3.17) against a brute-force reference, on a CSE driven in process.
//!
//! A random tree of a few thousand resources (AEs, access control policies, nested containers,
//! contentInstances with labels, content types, sizes and names of their own) is built through
//! the CSE; then random discoveries, every filter condition combined with AND or OR, `lvl`, `ofst`
//! and `lim`, by the admin, by the AEs and by a stranger, are compared with the answer computed
//! the slow way: every resource's current representation (read with a plain RETRIEVE), kept if it
//! lies under the target within the level, matches the filter, and the originator may retrieve it
//! (the policies here grant RETRIEVE and DISCOVERY together), in name order, then `ofst`, `lim`.
//! The index planner, the streams, the leapfrog intersection, the level skips and the paging are
//! what is under test; the filter's semantics and the access decision have tests of their own.

use m2m_core::filter::{FilterCriteria, FilterOperation, FilterUsage};
use m2m_core::primitive::PARTIAL_CONTENT;
use m2m_core::{Operation, Request, ResourceType, Response, ResponseStatusCode as Rsc};
use m2m_cse::association::PlainTrust;
use m2m_cse::{Config, Cse, Peer};
use proptest::prelude::*;
use proptest::sample::{select, subsequence};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Map, Value};
use std::sync::{Arc, OnceLock};

const LABELS: [&str; 5] = ["red", "green", "blue", "room/1", "rare"];
const MEDIA: [&str; 3] = ["text/plain", "application/json", "application/senml+json"];

struct Tree {
    cse: Arc<Cse>,
    rt: tokio::runtime::Runtime,
    _dir: tempfile::TempDir,
    /// Every resource below the CSEBase: structured name and current attributes.
    resources: Vec<(String, Map<String, Value>)>,
    /// The AE-IDs of the three AEs.
    aes: Vec<String>,
    /// Targets to discover from: the CSEBase, AEs, containers.
    roots: Vec<String>,
    /// The structured name of every resource created.
    created: Vec<String>,
}

fn peer() -> Peer {
    Peer::plain(([192, 0, 2, 9], 40000).into(), PlainTrust::Trusted)
}

impl Tree {
    fn send(
        &self,
        op: Operation,
        to: &str,
        from: &str,
        ty: Option<ResourceType>,
        pc: Option<Value>,
    ) -> Response {
        let mut req = Request::new(op, to, Some(from.to_owned()), "rqi".to_owned());
        req.ty = ty;
        req.pc = pc;
        req.rvi = Some("3".into());
        self.rt.block_on(self.cse.handle(req, peer()))
    }

    fn create(&mut self, to: &str, from: &str, ty: ResourceType, pc: Value) -> Map<String, Value> {
        let r = self.send(Operation::Create, to, from, Some(ty), Some(pc));
        assert_eq!(r.rsc, Rsc::Created, "{to}: {:?}", r.pc);
        let attrs =
            r.pc.as_ref()
                .and_then(|pc| pc.get(ty.root_name()))
                .and_then(Value::as_object)
                .cloned()
                .unwrap();
        self.created
            .push(format!("{to}/{}", attrs["rn"].as_str().unwrap()));
        attrs
    }

    fn discover(&self, root: &str, from: &str, fc: &FilterCriteria) -> Response {
        let mut req = Request::new(
            Operation::Retrieve,
            root,
            Some(from.to_owned()),
            "rqi".to_owned(),
        );
        req.fc = Box::new(fc.clone());
        req.rvi = Some("3".into());
        self.rt.block_on(self.cse.handle(req, peer()))
    }

    /// The tree, built once for every case (seeded: the same tree on every run).
    fn get() -> &'static Tree {
        static TREE: OnceLock<Tree> = OnceLock::new();
        TREE.get_or_init(Tree::build)
    }

    fn build() -> Tree {
        let dir = tempfile::tempdir().unwrap();
        // The results are compared whole: a busy machine must not cut a discovery short (the
        // budget has a test of its own below).
        let mut cfg = Config::from_toml("[limits]\ndiscovery_budget_ms = 60000\n").unwrap();
        cfg.storage.path = dir.path().join("db");
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let cse = rt
            .block_on(async { Cse::open(cfg, &Default::default()) })
            .unwrap();
        let mut t = Tree {
            cse,
            rt,
            _dir: dir,
            resources: Vec::new(),
            aes: Vec::new(),
            roots: vec!["cse-in".into()],
            // What the CSE makes itself: the system default notificationTargetPolicy.
            created: vec!["cse-in/defaultNTP".into()],
        };
        let mut rng = StdRng::seed_from_u64(12);
        let labels = |rng: &mut StdRng| -> Vec<&str> {
            LABELS
                .iter()
                .copied()
                .filter(|_| rng.gen_bool(0.25))
                .collect()
        };
        for i in 0..3 {
            let ae = t.create(
                "cse-in",
                "C",
                ResourceType::Ae,
                json!({"m2m:ae": {"rn": format!("ae{i}"), "api": "Ntest", "rr": false, "srv": ["3"], "lbl": labels(&mut rng)}}),
            );
            t.aes.push(ae["aei"].as_str().unwrap().to_owned());
            t.roots.push(format!("cse-in/ae{i}"));
        }
        let mut containers = Vec::new();
        for (i, me) in t.aes.clone().iter().enumerate() {
            let others: Vec<String> = t.aes.iter().filter(|a| *a != me).cloned().collect();
            // One policy for the other two AEs, one for one of them; RETRIEVE and DISCOVERY.
            let mut acps = Vec::new();
            for (j, grantees) in [others.clone(), vec![others[0].clone()]].iter().enumerate() {
                let acp = t.create(
                    &format!("cse-in/ae{i}"),
                    me,
                    ResourceType::AccessControlPolicy,
                    json!({"m2m:acp": {"rn": format!("acp{j}"),
                        "pv": {"acr": [{"acor": grantees, "acop": 34}, {"acor": [me], "acop": 63}]},
                        "pvs": {"acr": [{"acor": [me], "acop": 63}, {"acor": [others[1]], "acop": 34}]}}}),
                );
                acps.push(acp["ri"].as_str().unwrap().to_owned());
            }
            for c in 0..4 {
                let mut parent = format!("cse-in/ae{i}");
                for depth in 0..rng.gen_range(1..=3) {
                    let rn = format!("c{c}d{depth}");
                    let acpi: Vec<&String> = match rng.gen_range(0..3) {
                        0 => vec![],
                        1 => vec![&acps[0]],
                        _ => vec![&acps[1]],
                    };
                    let mut cnt = json!({"rn": rn, "lbl": labels(&mut rng)});
                    if !acpi.is_empty() {
                        cnt["acpi"] = json!(acpi);
                    }
                    t.create(
                        &parent,
                        me,
                        ResourceType::Container,
                        json!({"m2m:cnt": cnt}),
                    );
                    // Siblings whose names extend this one with characters that sort next to
                    // `/` ('-', '.', '0'): a subtree or level bound off by one takes them in.
                    for ext in ["-", ".x", "0"] {
                        if rng.gen_bool(0.4) {
                            let cnt = json!({"rn": format!("{rn}{ext}"), "lbl": labels(&mut rng)});
                            t.create(
                                &parent,
                                me,
                                ResourceType::Container,
                                json!({"m2m:cnt": cnt}),
                            );
                            containers.push((format!("{parent}/{rn}{ext}"), me.clone()));
                        }
                    }
                    parent = format!("{parent}/{rn}");
                    containers.push((parent.clone(), me.clone()));
                    t.roots.push(parent.clone());
                }
            }
        }
        for (n, (cnt, owner)) in containers.iter().enumerate() {
            for k in 0..rng.gen_range(0..200) {
                let mut cin = json!({
                    "con": "x".repeat(rng.gen_range(0..40)),
                    "cnf": format!("{}:0", MEDIA[rng.gen_range(0..MEDIA.len())]),
                    "lbl": labels(&mut rng),
                });
                if rng.gen_bool(0.05) {
                    // A name of its own, sometimes the same in several containers.
                    cin["rn"] = json!(format!("named{}", (n + k) % 12));
                }
                let r = t.send(
                    Operation::Create,
                    cnt,
                    owner,
                    Some(ResourceType::ContentInstance),
                    Some(json!({"m2m:cin": cin})),
                );
                match r.rsc {
                    Rsc::Created => {
                        let rn = r.pc.as_ref().unwrap()["m2m:cin"]["rn"].as_str().unwrap();
                        t.created.push(format!("{cnt}/{rn}"));
                    }
                    Rsc::Conflict => {}
                    other => panic!("{cnt}: {other:?} {:?}", r.pc),
                }
            }
        }
        // The reference: every resource created, as it is now (a plain RETRIEVE of each).
        for srn in t.created.clone() {
            let r = t.send(Operation::Retrieve, &srn, "CAdmin", None, None);
            if r.rsc == Rsc::NotFound {
                continue;
            }
            assert_eq!(r.rsc, Rsc::Ok, "{srn}");
            let pc = r.pc.unwrap();
            let attrs = pc.as_object().unwrap().values().next().unwrap();
            t.resources.push((srn, attrs.as_object().unwrap().clone()));
        }
        assert!(t.resources.len() > 2500, "{} resources", t.resources.len());
        t
    }

    /// Whether `who` may retrieve `srn` (the policies grant DISCOVERY with RETRIEVE).
    fn may_see(&self, who: &str, srn: &str) -> bool {
        static SEEN: OnceLock<std::sync::Mutex<std::collections::HashMap<(String, String), bool>>> =
            OnceLock::new();
        let cache = SEEN.get_or_init(Default::default);
        let key = (who.to_owned(), srn.to_owned());
        if let Some(v) = cache.lock().unwrap().get(&key) {
            return *v;
        }
        let ok = self.send(Operation::Retrieve, srn, who, None, None).rsc == Rsc::Ok;
        cache.lock().unwrap().insert(key, ok);
        ok
    }

    /// The answer, the slow way: (names in order, whether more follow).
    fn reference(&self, root: &str, who: &str, fc: &FilterCriteria) -> (Vec<String>, bool) {
        let base = root.matches('/').count();
        let prefix = format!("{root}/");
        let mut all: Vec<&String> = self
            .resources
            .iter()
            .filter(|(srn, attrs)| {
                srn.starts_with(&prefix)
                    && fc
                        .level
                        .is_none_or(|l| srn.matches('/').count() - base <= l as usize)
                    && fc.matches(attrs)
            })
            .map(|(srn, _)| srn)
            .filter(|srn| self.may_see(who, srn))
            .collect();
        all.sort();
        let rest: Vec<String> = all
            .into_iter()
            .skip(fc.offset.unwrap_or(0) as usize)
            .cloned()
            .collect();
        let lim = fc.limit.unwrap_or(u64::MAX) as usize;
        let more = rest.len() > lim;
        (rest.into_iter().take(lim).collect(), more)
    }

    /// Values of an attribute across the tree, to draw thresholds from.
    fn values(&self, attr: &str) -> Vec<Value> {
        let mut v: Vec<Value> = self
            .resources
            .iter()
            .filter_map(|(_, a)| a.get(attr).cloned())
            .collect();
        v.sort_by_key(|x| x.to_string());
        v.dedup();
        v
    }
}

/// A random filter over the tree's own values.
fn filter() -> impl Strategy<Value = FilterCriteria> {
    let t = Tree::get();
    let times = |attr: &str| {
        let v: Vec<String> = t
            .values(attr)
            .iter()
            .filter_map(|v| v.as_str().map(|s| m2m_core::time::normalize(s).unwrap()))
            .collect();
        prop::option::weighted(0.2, select(v))
    };
    let sizes: Vec<u64> = t.values("cs").iter().filter_map(Value::as_u64).collect();
    let names: Vec<String> = t
        .values("rn")
        .iter()
        .filter_map(|v| v.as_str().map(str::to_owned))
        .chain(["named3".to_owned(), "nothing".to_owned()])
        .collect();
    let creators: Vec<String> = t.aes.clone();
    (
        (
            prop::option::weighted(0.5, subsequence(vec![1u16, 2, 3, 4], 1..=2)),
            prop::option::weighted(0.4, subsequence(LABELS.to_vec(), 1..=2)),
            prop::option::weighted(0.2, subsequence(MEDIA.to_vec(), 1..=2)),
            prop::option::weighted(0.15, select(names)),
            prop::option::weighted(0.1, select(creators)),
        ),
        (
            times("ct"),
            times("ct"),
            times("lt"),
            times("lt"),
            times("et"),
            times("et"),
        ),
        (
            prop::option::weighted(0.15, select(sizes.clone())),
            prop::option::weighted(0.15, select(sizes)),
            prop::option::weighted(0.1, 0u64..6),
        ),
        (
            prop::bool::weighted(0.25),
            prop::option::weighted(0.3, 1u32..4),
            prop::option::weighted(0.3, 0u64..40),
            prop::option::weighted(0.8, 1u64..120),
        ),
    )
        .prop_map(
            |(
                (ty, lbl, cty, rn, cr),
                (cra, crb, ms, us, exa, exb),
                (sza, szb, stb),
                (or, lvl, ofst, lim),
            )| {
                let mut fc = FilterCriteria {
                    resource_types: ty.unwrap_or_default(),
                    labels: lbl
                        .unwrap_or_default()
                        .into_iter()
                        .map(str::to_owned)
                        .collect(),
                    content_types: cty
                        .unwrap_or_default()
                        .into_iter()
                        .map(str::to_owned)
                        .collect(),
                    created_after: cra,
                    created_before: crb,
                    modified_since: ms,
                    unmodified_since: us,
                    expire_after: exa,
                    expire_before: exb,
                    size_above: sza,
                    size_below: szb,
                    state_tag_bigger: stb,
                    filter_usage: Some(FilterUsage::Discovery),
                    filter_operation: if or {
                        FilterOperation::Or
                    } else {
                        FilterOperation::And
                    },
                    level: lvl,
                    offset: ofst,
                    limit: lim,
                    ..FilterCriteria::default()
                };
                if let Some(rn) = rn {
                    fc.attributes.push(("rn".into(), rn));
                }
                if let Some(cr) = cr {
                    fc.attributes.push(("cr".into(), cr));
                }
                fc
            },
        )
}

fn who() -> impl Strategy<Value = String> {
    let t = Tree::get();
    let mut who: Vec<String> = t.aes.clone();
    who.push("CAdmin".into());
    who.push("Cstranger".into());
    select(who)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn discovery_equals_the_reference(
        root in select(Tree::get().roots.clone()),
        who in who(),
        fc in filter(),
    ) {
        let t = Tree::get();
        let r = t.discover(&root, &who, &fc);
        let (expected, more) = t.reference(&root, &who, &fc);
        if r.rsc != Rsc::Ok {
            // Only the root itself may be hidden from the originator.
            prop_assert!(!t.may_see(&who, &root), "{root} as {who}: {:?} {:?}", r.rsc, r.pc);
            return Ok(());
        }
        let got: Vec<String> = r.pc.as_ref().unwrap()["m2m:uril"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().to_owned())
            .collect();
        prop_assert_eq!(&got, &expected, "{} as {} with {:?}", root, who, fc);
        prop_assert_eq!(r.cts == Some(PARTIAL_CONTENT), more, "partial content flag");
        if more {
            prop_assert_eq!(r.cto, Some(fc.offset.unwrap_or(0) + got.len() as u64));
        }
    }
}

/// Paging through a large result with the Content Offset of each answer gives every result once.
#[test]
fn paging_with_the_content_offset_lists_everything_once() {
    let t = Tree::get();
    let mut fc = FilterCriteria {
        resource_types: vec![4],
        filter_usage: Some(FilterUsage::Discovery),
        limit: Some(97),
        ..FilterCriteria::default()
    };
    let (all, _) = t.reference(
        "cse-in",
        "CAdmin",
        &FilterCriteria {
            limit: None,
            ..fc.clone()
        },
    );
    assert!(all.len() > 1000, "{} contentInstances", all.len());
    let mut got = Vec::new();
    loop {
        let r = t.discover("cse-in", "CAdmin", &fc);
        assert_eq!(r.rsc, Rsc::Ok);
        got.extend(
            r.pc.as_ref().unwrap()["m2m:uril"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_str().unwrap().to_owned()),
        );
        match r.cto {
            Some(next) => fc.offset = Some(next),
            None => break,
        }
    }
    assert_eq!(got, all);
}

/// Every target at every level, with nothing else asked: the level and subtree bounds keep the
/// siblings whose names extend a listed one ('-', '.', '0' sort next to '/').
#[test]
fn every_target_at_every_level() {
    let t = Tree::get();
    for root in &t.roots {
        for level in [None, Some(1), Some(2), Some(3)] {
            let fc = FilterCriteria {
                filter_usage: Some(FilterUsage::Discovery),
                level,
                ..FilterCriteria::default()
            };
            let r = t.discover(root, "CAdmin", &fc);
            let got: Vec<&str> = r.pc.as_ref().unwrap()["m2m:uril"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_str().unwrap())
                .collect();
            let (expected, _) = t.reference(root, "CAdmin", &fc);
            assert_eq!(got, expected, "{root} at level {level:?}");
        }
    }
}

/// A discovery that runs out of its time budget answers what it found so far as partial content
/// with the offset to go on from, or 4008 when it found nothing yet; it never runs unbounded.
#[test]
fn the_time_budget_cuts_a_discovery_short() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = Config::from_toml("[limits]\ndiscovery_budget_ms = 0\n").unwrap();
    cfg.storage.path = dir.path().join("db");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let cse = rt
        .block_on(async { Cse::open(cfg, &Default::default()) })
        .unwrap();
    let mut t = Tree {
        cse,
        rt,
        _dir: dir,
        resources: Vec::new(),
        aes: Vec::new(),
        roots: Vec::new(),
        created: Vec::new(),
    };
    let ae = t.create(
        "cse-in",
        "C",
        ResourceType::Ae,
        json!({"m2m:ae": {"rn": "ae", "api": "Ntest", "rr": false, "srv": ["3"]}}),
    )["aei"]
        .as_str()
        .unwrap()
        .to_owned();
    t.create(
        "cse-in/ae",
        &ae,
        ResourceType::Container,
        json!({"m2m:cnt": {"rn": "c"}}),
    );
    for i in 0..300 {
        t.create(
            "cse-in/ae/c",
            &ae,
            ResourceType::ContentInstance,
            json!({"m2m:cin": {"con": format!("{i}")}}),
        );
    }
    let mut fc = FilterCriteria {
        filter_usage: Some(FilterUsage::Discovery),
        ..FilterCriteria::default()
    };
    // The clock is read every 64 candidates: the first look finds the budget spent.
    let r = t.discover("cse-in", &ae, &fc);
    assert_eq!(r.rsc, Rsc::Ok, "{:?}", r.pc);
    let got = r.pc.as_ref().unwrap()["m2m:uril"].as_array().unwrap().len() as u64;
    assert!((1..64).contains(&got), "{got} results");
    assert_eq!((r.cts, r.cto), (Some(PARTIAL_CONTENT), Some(got)));
    // Skipping 200 results spends the budget before anything is found.
    fc.offset = Some(200);
    let r = t.discover("cse-in", &ae, &fc);
    assert_eq!(r.rsc, Rsc::RequestTimeout, "{:?}", r.pc);
    assert!(
        r.dbg().unwrap_or("").contains("time budget"),
        "{:?}",
        r.dbg()
    );
    // A listing of children is bounded the same way.
    let mut req = Request::new(
        Operation::Retrieve,
        "cse-in/ae/c",
        Some(ae.clone()),
        "rqi".to_owned(),
    );
    req.rvi = Some("3".into());
    req.rcn = Some(m2m_core::ResultContent::ChildResourceReferences);
    let r = t.rt.block_on(t.cse.handle(req, peer()));
    assert_eq!(r.rsc, Rsc::Ok);
    assert_eq!(r.cts, Some(PARTIAL_CONTENT));
}
