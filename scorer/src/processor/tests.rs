use std::collections::VecDeque;

use super::*;
use crate::{event::from_plan, identity::identifiers, rules::DEFAULT_TOML};

const T0: i64 = 1_795_305_600_000;
const PARTITIONS: i32 = 4;

/// Two partitions' worth of `by_lead` traffic, routed like the real topic.
struct Harness {
    graph: IdentityGraph,
    queues: Vec<VecDeque<(i64, String, Input)>>,
    next_offset: Vec<i64>,
    processors: Vec<Processor>,
    latest: BTreeMap<String, Json>,
}

fn partition_of(lead: &str) -> usize {
    (lead.bytes().map(u32::from).sum::<u32>() % PARTITIONS as u32) as usize
}

impl Harness {
    fn new() -> Self {
        let cfg = ScoringConfig::parse(DEFAULT_TOML).unwrap();
        Self {
            graph: IdentityGraph::default(),
            queues: (0..PARTITIONS).map(|_| VecDeque::new()).collect(),
            next_offset: vec![0; PARTITIONS as usize],
            // One processor per partition: as if every partition had its own instance.
            processors: (0..PARTITIONS)
                .map(|_| Processor::new(cfg.clone(), 3_600_000, false))
                .collect(),
            latest: BTreeMap::new(),
        }
    }

    fn push(&mut self, lead: String, input: Input) {
        let p = partition_of(&lead);
        let o = self.next_offset[p];
        self.next_offset[p] += 1;
        self.queues[p].push_back((o, lead, input));
    }

    /// What the stitcher does: link, resolve, route.
    fn stitch(&mut self, e: Json) {
        let ids = identifiers(&e);
        if ids.len() > 1 {
            self.graph.link(&ids);
        }
        let lead = self.graph.resolve(&ids);
        let event = from_plan(&e);
        self.push(
            lead,
            Input::Event {
                framed: e.to_string().into_bytes(),
                event,
            },
        );
    }

    fn drain(&mut self) {
        while let Some(p) = (0..PARTITIONS as usize).find(|p| !self.queues[*p].is_empty()) {
            let (offset, key, input) = self.queues[p].pop_front().unwrap();
            let outcome =
                self.processors[p].handle(p as i32, offset, &key, input, &mut self.graph, 0, None);
            for o in outcome.outputs {
                match o {
                    Output::Score {
                        lead_id, record, ..
                    } => {
                        self.latest.insert(lead_id, record);
                    }
                    Output::Route(r) => {
                        let input = match r.body.unwrap() {
                            Body::Event(framed) => {
                                let e: Json = serde_json::from_slice(&framed).unwrap();
                                Input::Event {
                                    event: from_plan(&e),
                                    framed,
                                }
                            }
                            Body::MergeRequest(m) => Input::MergeRequest { into: m.into },
                            Body::MergeState(m) => Input::MergeState {
                                from: m.from,
                                state: m.state,
                            },
                        };
                        self.push(r.lead_id, input);
                    }
                }
            }
        }
    }
}

fn ev(id: &str, anon: &str, extra: Json, event: &str, page_type: &str, minutes: i64) -> Json {
    let mut e = json!({"message_id": id, "event": event, "anonymous_id": anon,
        "timestamp": T0 + minutes * 60_000, "properties": {"page_type": page_type}});
    e.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    e
}

/// Train/serve parity: `leadstream train` computes features from the
/// exported history (final identity graph, events sorted by time, each
/// message id once); the live processor from the stream (ids linked as
/// they arrive, merges across partitions, a re-delivered event, an event
/// arriving late within the grace period). At the end of every active
/// day, once the ids are linked, both give the model the same row.
#[test]
fn live_features_equal_training_features_at_the_same_instants() {
    let web = json!({"platform": "web", "context": {"utm_source": "autohome", "utm_campaign": "ev-launch",
        "os": "Windows 10", "user_agent": "Mozilla/5.0 Chrome/120.0 Safari/537.36", "locale": "zh-CN"}});
    let with = |extra: Json, more: Json| {
        let mut e = extra.clone();
        e.as_object_mut()
            .unwrap()
            .extend(more.as_object().unwrap().clone());
        e
    };
    let day = 24 * 60;
    let mut form = ev(
        "d1-form",
        "web-9",
        with(web.clone(), json!({"phone_hash": "ph-9"})),
        "lead_form_submitted",
        "",
        50,
    );
    form["properties"] = json!({"form_id": "f", "form_type": "quote", "purchase_timeframe": "1-3m", "model_id": "x5"});
    let mut call = ev(
        "d3-call",
        "web-9",
        json!({"platform": "server", "user_id": "u-9"}),
        "call_completed",
        "",
        2 * day + 600,
    );
    call["properties"] =
        json!({"outcome": "appointment_set", "direction": "outbound", "duration_seconds": 90});
    let mut content = ev(
        "d2-content",
        "mp-9",
        json!({"platform": "mini_program", "union_id": "wx-9"}),
        "content_engaged",
        "",
        day + 300,
    );
    content["properties"] = json!({"content_id": "c1", "action": "share", "duration_ms": 40_000});
    let reread = ev(
        "d1-c",
        "web-9",
        web.clone(),
        "page_viewed",
        "configurator",
        70,
    );
    let days: Vec<Vec<Json>> = vec![
        // Web, then the mini-program in a later session; the CRM's
        // identify links them. (Sessions of two ids that interleave
        // before they are linked are an estimate live: LeadState::merge.)
        vec![
            ev(
                "d1-a",
                "web-9",
                web.clone(),
                "page_viewed",
                "model_detail",
                10,
            ),
            form,
            reread.clone(),
            ev(
                "d1-b",
                "mp-9",
                json!({"platform": "mini_program", "union_id": "wx-9", "context": {"lead_channel": "wechat_ads"}}),
                "page_viewed",
                "price",
                200,
            ),
            json!({"message_id": "d1-id", "event": "identify", "type": "identify", "timestamp": T0 + 210 * 60_000,
                   "user_id": "u-9", "phone_hash": "ph-9", "union_id": "wx-9", "platform": "server"}),
        ],
        vec![
            ev(
                "d2-b",
                "mp-9",
                json!({"platform": "mini_program", "union_id": "wx-9"}),
                "page_viewed",
                "finance",
                day + 320,
            ),
            content,
            // Re-delivered: the live path skips it, the export lists it once.
            reread.clone(),
            // Arrives after d2-b although it happened before (same session).
            ev(
                "d2-a",
                "app-9",
                json!({"platform": "app", "union_id": "wx-9"}),
                "page_viewed",
                "model_detail",
                day + 310,
            ),
        ],
        vec![
            call,
            ev(
                "d3-a",
                "app-9",
                json!({"platform": "app", "union_id": "wx-9"}),
                "test_drive_booked",
                "",
                2 * day + 700,
            ),
        ],
    ];
    let cfg = ScoringConfig::parse(DEFAULT_TOML).unwrap();
    let all: Vec<Json> = days.iter().flatten().cloned().collect();
    let training = crate::train::snapshots(&all, &cfg, 30 * crate::DAY_MS);
    assert_eq!(
        training
            .iter()
            .map(|s| &s.lead_id)
            .collect::<std::collections::BTreeSet<_>>()
            .len(),
        1,
        "one person: {training:#?}"
    );
    let mut h = Harness::new();
    let mut compared = 0;
    for events in &days {
        // As a stream: each event stitched and scored before the next.
        for e in events {
            h.stitch(e.clone());
            h.drain();
        }
        let lead = h
            .graph
            .current_lead(&crate::identity::lead_id_of("a:web-9"));
        let p = partition_of(&lead);
        let state = &h.processors[p]
            .lead(p as i32, &lead)
            .unwrap_or_else(|| panic!("{lead} lives on partition {p}"))
            .state;
        let at = state.last_event_ms;
        let live = state.feature_row(at, cfg.half_life_ms());
        let trained = training
            .iter()
            .find(|s| s.ts_ms == at)
            .unwrap_or_else(|| panic!("no training snapshot at {at}: {training:#?}"));
        assert_eq!(
            live.categories, trained.features.categories,
            "categories at {at}"
        );
        for (i, (a, b)) in live
            .numeric
            .iter()
            .zip(&trained.features.numeric)
            .enumerate()
        {
            assert!(
                (a - b).abs() <= 1e-4 * a.abs().max(1.0),
                "{} at {at}: live {a} vs training {b}",
                crate::features::FEATURE_NAMES[i]
            );
        }
        compared += 1;
    }
    assert_eq!(compared, 3);
    let last = &training.last().unwrap().features;
    let slot = |n: &str| {
        crate::context::CATEGORY_SLOTS
            .iter()
            .position(|(s, _)| *s == n)
            .unwrap()
    };
    assert_eq!(
        last.categories[slot("call_outcome")],
        crate::context::hash("appointment_set")
    );
    assert_eq!(
        last.categories[slot("first_channel")],
        crate::context::hash("autohome")
    );
    assert_eq!(
        last.categories[slot("last_channel")],
        crate::context::hash("wechat_ads")
    );
}

#[test]
fn ids_on_different_partitions_merge_into_one_lead_with_all_history() {
    let mut h = Harness::new();
    // The union id and the mini-program anonymous id arrive together: the smaller names the lead.
    let mp_lead = crate::identity::lead_id_of("a:mp-1");
    let web = (1..)
        .map(|i| format!("web-{i}"))
        .find(|a| {
            partition_of(&crate::identity::lead_id_of(&format!("a:{a}"))) != partition_of(&mp_lead)
        })
        .unwrap();
    let web = web.as_str();
    // Web and mini-program history before anyone knows they are one person.
    for i in 0..5 {
        h.stitch(ev(
            &format!("w{i}"),
            web,
            json!({"platform": "web"}),
            "page_viewed",
            "configurator",
            i,
        ));
        h.stitch(ev(
            &format!("m{i}"),
            "mp-1",
            json!({"platform": "mini_program", "union_id": "wx-1"}),
            "page_viewed",
            "price",
            10 + i,
        ));
    }
    h.drain();
    let web_lead = crate::identity::lead_id_of(&format!("a:{web}"));
    assert_eq!(h.graph.resolve(&["w:wx-1".into()]), mp_lead);
    assert_ne!(
        partition_of(&web_lead),
        partition_of(&mp_lead),
        "the case under test: two partitions"
    );
    // The lead form links the web visitor to a phone; the CRM links the phone to the union id.
    h.stitch(ev(
        "f1",
        web,
        json!({"platform": "web", "phone_hash": "ph-1"}),
        "lead_form_submitted",
        "",
        30,
    ));
    h.stitch(json!({"message_id": "i1", "event": "identify", "type": "identify", "timestamp": T0 + 31 * 60_000,
                    "user_id": "u-1", "phone_hash": "ph-1", "union_id": "wx-1", "platform": "server"}));
    // Later app traffic under the union id only.
    h.stitch(ev(
        "a1",
        "app-1",
        json!({"platform": "app", "union_id": "wx-1"}),
        "test_drive_booked",
        "",
        40,
    ));
    h.drain();

    let survivor = h.graph.current_lead(&web_lead);
    assert_eq!(h.graph.current_lead(&mp_lead), survivor);
    let s = &h.latest[&survivor];
    assert_eq!(s["event_count"], 13, "every event of every linked id: {s}");
    assert_eq!(
        s["platforms"],
        json!(["app", "mini_program", "web", "server"])
    );
    assert_eq!(s["first_platform"], "web", "the earliest history is web's");
    assert_eq!(s["grade"], "high");
    for old in [&web_lead, &mp_lead] {
        if *old != survivor {
            assert_eq!(h.latest[old]["merged_into"], json!(survivor), "{old}");
        }
    }
    // Re-delivery of an applied event changes nothing.
    h.stitch(ev(
        "a1",
        "app-1",
        json!({"platform": "app", "union_id": "wx-1"}),
        "test_drive_booked",
        "",
        40,
    ));
    h.drain();
    assert_eq!(h.latest[&survivor]["event_count"], 13);
}

#[test]
fn late_events_beyond_grace_are_counted_not_applied_and_replays_are_skipped() {
    let cfg = ScoringConfig::parse(DEFAULT_TOML).unwrap();
    let mut p = Processor::new(cfg, 3_600_000, false);
    let mut g = IdentityGraph::default();
    let input = |id: &str, minutes: i64| {
        let e = ev(id, "x", json!({}), "page_viewed", "home", minutes);
        Input::Event {
            event: from_plan(&e),
            framed: vec![],
        }
    };
    let lead = crate::identity::lead_id_of("a:x");
    assert!(
        p.handle(0, 0, &lead, input("1", 600), &mut g, 0, None)
            .skipped
            .is_none()
    );
    assert!(
        p.handle(0, 1, &lead, input("2", 560), &mut g, 0, None)
            .skipped
            .is_none(),
        "inside grace"
    );
    assert_eq!(
        p.handle(0, 2, &lead, input("3", 400), &mut g, 0, None)
            .skipped,
        Some(Skipped::Late)
    );
    assert_eq!(
        p.handle(0, 1, &lead, input("4", 600), &mut g, 0, None)
            .skipped,
        Some(Skipped::Replayed)
    );
    let l = p.lead(0, &lead).unwrap();
    assert_eq!((l.state.events, l.late_events), (2, 1));

    // The changelog restores the same lead on another instance.
    let log = p.take_changelog();
    let mut q = Processor::new(
        ScoringConfig::parse(DEFAULT_TOML).unwrap(),
        3_600_000,
        false,
    );
    for (k, v) in &log[&0] {
        q.restore(0, k, v).unwrap();
    }
    assert_eq!(
        q.lead(0, &lead).map(Lead::to_snapshot),
        p.lead(0, &lead).map(Lead::to_snapshot)
    );
    assert!(p.take_changelog().is_empty(), "nothing changed since");
    assert_eq!(
        q.handle(0, 2, &lead, input("5", 600), &mut g, 0, None)
            .skipped,
        Some(Skipped::Replayed)
    );
}

/// A lead with 1,000 events (one every 10 s, so all within the grace
/// period) delivered twice in full, as a stitcher rewind or an ingest
/// spool re-sent after a produce timeout delivers them: at new offsets,
/// interleaved with new events, and again after a changelog restore on
/// another instance. Every event counts once; the ids the lead keeps
/// shrink once stream time moves past them.
#[test]
fn a_replay_of_a_thousand_events_counts_each_once() {
    let cfg = ScoringConfig::parse(DEFAULT_TOML).unwrap();
    let grace = 6 * 3_600_000;
    let mut p = Processor::new(cfg.clone(), grace, false);
    let mut g = IdentityGraph::default();
    let lead = crate::identity::lead_id_of("a:busy");
    let event = |i: i64| {
        let mut e = ev(
            &format!("m{i}"),
            "busy",
            json!({}),
            "page_viewed",
            "home",
            0,
        );
        e["timestamp"] = json!(T0 + i * 10_000);
        Input::Event {
            event: from_plan(&e),
            framed: vec![],
        }
    };
    let mut offset = 0;
    let mut feed = |p: &mut Processor, g: &mut IdentityGraph, i: i64| {
        offset += 1;
        p.handle(0, offset, &lead, event(i), g, 0, None).skipped
    };
    for i in 0..1_000 {
        assert_eq!(feed(&mut p, &mut g, i), None);
    }
    for i in 0..1_000 {
        assert_eq!(feed(&mut p, &mut g, i), Some(Skipped::Duplicate), "m{i}");
        if i % 100 == 0 {
            assert_eq!(feed(&mut p, &mut g, 1_000 + i / 100), None);
        }
    }
    assert_eq!(p.lead(0, &lead).unwrap().state.events, 1_010);

    let mut q = Processor::new(cfg, grace, false);
    for (k, v) in &p.take_changelog()[&0] {
        q.restore(0, k, v).unwrap();
    }
    for i in (0..1_010).rev() {
        assert_eq!(feed(&mut q, &mut g, i), Some(Skipped::Duplicate), "m{i}");
    }
    let l = q.lead(0, &lead).unwrap();
    assert_eq!((l.state.events, l.late_events), (1_010, 0));
    assert_eq!(l.seen.len(), 1_010);

    // A day later only the ids still inside the grace period are kept,
    // and a copy of an older event is late rather than counted.
    assert_eq!(feed(&mut q, &mut g, 1_010 + 8_640), None);
    assert_eq!(feed(&mut q, &mut g, 1_011 + 8_640), None);
    let l = q.lead(0, &lead).unwrap();
    assert_eq!(l.seen.len(), 2, "only the last two: {:?}", l.seen);
    assert_eq!(feed(&mut q, &mut g, 5), Some(Skipped::Late));
    assert_eq!(q.lead(0, &lead).unwrap().state.events, 1_012);
}

/// One step of a partition's life: an input record, or the shell's
/// idle tick with the (injected) wall clock at `day`.
enum Step {
    Event(Json),
    Tick(i64),
}

const DAY_MIN: i64 = 24 * 60;

fn lifecycle_steps() -> Vec<Step> {
    let day = |d: i64| d * DAY_MIN;
    vec![
        Step::Event(ev(
            "a1",
            "a",
            json!({}),
            "page_viewed",
            "configurator",
            day(0),
        )),
        Step::Event(ev("b1", "b", json!({}), "order_placed", "", day(0))),
        Step::Tick(1),
        Step::Tick(100),
        Step::Event(ev(
            "a2",
            "a",
            json!({}),
            "page_viewed",
            "configurator",
            day(150),
        )),
        Step::Tick(150),
        Step::Tick(170),
        Step::Tick(500),
        Step::Tick(800),
    ]
}

/// Runs `steps` on one partition as the shell does: each step is a
/// batch whose outputs are produced, then its changelog written. With
/// `crash_at = Some(k)`, step k's outputs are produced but the process
/// dies before its changelog is written; a new processor restores the
/// changelog and goes on from step k. Returns every produced score.
fn run_steps(steps: &[Step], crash_at: Option<usize>) -> Vec<Json> {
    let cfg = ScoringConfig::parse(DEFAULT_TOML).unwrap();
    let new = || Processor::new(cfg.clone(), 3_600_000, false);
    let mut p = new();
    let mut g = IdentityGraph::default();
    let mut changelog: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    let mut produced = Vec::new();
    let mut k = 0;
    let mut crashed = false;
    while k < steps.len() {
        let mut outputs = Vec::new();
        match &steps[k] {
            Step::Event(e) => {
                let lead = g.resolve(&identifiers(e));
                let input = Input::Event {
                    event: from_plan(e),
                    framed: vec![],
                };
                outputs.extend(p.handle(0, k as i64, &lead, input, &mut g, 0, None).outputs);
            }
            Step::Tick(d) => {
                p.assign(0);
                outputs.extend(p.advance(0, Some(T0 + d * 86_400_000), None));
            }
        }
        for o in outputs {
            if let Output::Score { record, .. } = o {
                produced.push(record);
            }
        }
        if crash_at == Some(k) && !crashed {
            crashed = true;
            p = new();
            for (key, v) in &changelog {
                p.restore(0, key, v).unwrap();
            }
            continue; // step k is read again
        }
        for (key, v) in p.take_changelog().remove(&0).unwrap_or_default() {
            changelog.insert(key, v);
        }
        k += 1;
    }
    produced
}

#[test]
fn time_moves_leads_through_their_lifecycle_once_even_across_a_crash() {
    let steps = lifecycle_steps();
    let clean = run_steps(&steps, None);
    let a = crate::identity::lead_id_of("a:a");
    let b = crate::identity::lead_id_of("a:b");
    let story = |lead: &str, records: &[Json]| -> Vec<(String, String, bool, bool)> {
        records
            .iter()
            .filter(|r| r["lead_id"] == lead && r["change_reason"] != "decayed")
            .map(|r| {
                (
                    r["change_reason"].as_str().unwrap().to_owned(),
                    r["stage"].as_str().unwrap().to_owned(),
                    r["reactivated"].as_bool().unwrap(),
                    r["churn_risk"].as_bool().unwrap(),
                )
            })
            .collect()
    };
    let s = |r: &str, st: &str, re: bool, ch: bool| (r.to_owned(), st.to_owned(), re, ch);
    assert_eq!(
        story(&a, &clean),
        [
            s("event", "new", false, false),
            s("went_dormant", "dormant", false, false),
            s("event", "new", true, false),
            s("reactivation_expired", "new", false, false),
            s("went_dormant", "dormant", false, false),
            s("went_nurture", "nurture", false, false),
        ],
        "{clean:#?}"
    );
    assert_eq!(
        story(&b, &clean),
        [
            s("event", "customer", false, false),
            s("churn_risk", "customer", false, true),
            s("became_retained", "retained", false, true),
        ]
    );
    // The dormant transition is stamped at the boundary, not at the tick.
    let dormant = clean
        .iter()
        .find(|r| r["lead_id"] == a && r["change_reason"] == "went_dormant")
        .unwrap();
    assert_eq!(dormant["updated_at"], T0 + 90 * 86_400_000);
    assert_eq!(dormant["previous_stage"], "new");
    assert_eq!(dormant["grade"], "low", "a silent lead is not high");

    // A crash after any step: re-emitted records repeat a version with
    // the same content, and the versions emitted are exactly the clean run's.
    let by_version = |records: &[Json]| {
        let mut m: BTreeMap<(String, i64), Json> = BTreeMap::new();
        for r in records {
            let key = (
                r["lead_id"].as_str().unwrap().to_owned(),
                r["version"].as_i64().unwrap(),
            );
            if let Some(prev) = m.insert(key.clone(), r.clone()) {
                assert_eq!(prev, *r, "version {key:?} emitted with different content");
            }
        }
        m
    };
    let want = by_version(&clean);
    for k in 0..steps.len() {
        assert_eq!(
            by_version(&run_steps(&steps, Some(k))),
            want,
            "crash at step {k}"
        );
    }
}

#[test]
fn a_dormant_lead_that_wakes_on_another_platform_is_flagged_reactivated() {
    let mut h = Harness::new();
    let day = 24 * 60;
    h.stitch(ev(
        "f1",
        "web-9",
        json!({"platform": "web", "phone_hash": "ph-9"}),
        "lead_form_submitted",
        "",
        0,
    ));
    h.drain();
    // 150 days later: a mini-program login with the same phone, then intent.
    h.stitch(ev(
        "i1",
        "mp-9",
        json!({"platform": "mini_program", "phone_hash": "ph-9", "union_id": "wx-9"}),
        "identify",
        "",
        150 * day,
    ));
    h.stitch(ev(
        "c1",
        "mp-9",
        json!({"platform": "mini_program", "union_id": "wx-9"}),
        "page_viewed",
        "configurator",
        150 * day + 5,
    ));
    h.drain();
    let lead = h.graph.resolve(&["a:mp-9".into()]);
    let s = &h.latest[&lead];
    assert_eq!(s["event_count"], 3, "{s}");
    assert_eq!(s["reactivated"], true, "{s}");
    assert_eq!(s["stage"], "new", "{s}");
}
