//! Time moving leads through their stages, across a crash.

use super::*;

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
    let mut changelog: BTreeMap<String, Option<Vec<u8>>> = BTreeMap::new();
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
                    anonymous: false,
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
                produced.push(record.to_json());
            }
        }
        if crash_at == Some(k) && !crashed {
            crashed = true;
            p = new();
            for (key, v) in &changelog {
                p.restore(0, key, v.as_deref()).unwrap();
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
