//! Anonymous leads expiring after the anonymous TTL.

use super::*;

const DAY_MS: i64 = 86_400_000;
const DAY_MIN: i64 = 24 * 60;

fn harness(ttl_days: i64) -> Harness {
    let mut h = Harness::new();
    for p in &mut h.processors {
        let taken = std::mem::replace(
            p,
            Processor::new(ScoringConfig::parse(DEFAULT_TOML).unwrap(), 0, false),
        );
        *p = taken.with_anonymous_ttl(Some(ttl_days * DAY_MS)).unwrap();
    }
    h
}

/// The idle tick of every partition at `day`, as the shell runs it;
/// returns the time-driven scores as JSON.
fn tick(h: &mut Harness, day: i64) -> Vec<Json> {
    let mut scores = Vec::new();
    for (p, processor) in h.processors.iter_mut().enumerate() {
        processor.assign(p as i32);
        for o in processor.advance(p as i32, Some(T0 + day * DAY_MS), None) {
            if let Output::Score { record, .. } = o {
                scores.push(record.to_json());
            }
        }
    }
    scores
}

fn lead_of(h: &Harness, lead: &str) -> Option<Lead> {
    h.processors[partition_of(lead)]
        .lead(partition_of(lead) as i32, lead)
        .cloned()
}

fn changelog(h: &mut Harness, lead: &str) -> Vec<(String, Option<Vec<u8>>)> {
    let p = partition_of(lead);
    h.processors[p]
        .take_changelog()
        .remove(&(p as i32))
        .unwrap_or_default()
}

#[test]
fn an_anonymous_lead_expires_after_the_ttl_and_its_return_is_a_new_lead_above_old_versions() {
    let mut h = harness(120);
    let lead = crate::identity::lead_id_of("a:web-1");
    h.stitch(ev(
        "m1",
        "web-1",
        json!({}),
        "page_viewed",
        "configurator",
        0,
    ));
    h.stitch(ev(
        "m2",
        "web-1",
        json!({}),
        "page_viewed",
        "configurator",
        10,
    ));
    h.drain();
    assert!(lead_of(&h, &lead).unwrap().anonymous);
    let snapshot = changelog(&mut h, &lead)
        .into_iter()
        .find_map(|(k, v)| (k == lead).then_some(v).flatten())
        .expect("the lead's snapshot");

    // Time's changes before the expiry are still emitted: dormant at 90 days.
    let scores = tick(&mut h, 119);
    assert!(
        scores
            .iter()
            .any(|s| s["lead_id"] == lead.as_str() && s["change_reason"] == "went_dormant"),
        "{scores:?}"
    );
    assert!(
        lead_of(&h, &lead).is_some(),
        "not yet: 120 days after the last event"
    );
    let last_version = scores
        .iter()
        .map(|s| s["version"].as_i64().unwrap())
        .max()
        .unwrap();

    tick(&mut h, 121);
    assert!(lead_of(&h, &lead).is_none(), "expired");
    let written = changelog(&mut h, &lead);
    assert!(
        written.contains(&(lead.clone(), None)),
        "the changelog key gets a tombstone: {written:?}"
    );

    // A restore that reads the snapshot, then the tombstone, holds no lead.
    let mut q = Processor::new(ScoringConfig::parse(DEFAULT_TOML).unwrap(), 0, false)
        .with_anonymous_ttl(Some(120 * DAY_MS))
        .unwrap();
    let p = partition_of(&lead) as i32;
    q.restore(p, &lead, Some(&snapshot)).unwrap();
    assert!(q.lead(p, &lead).is_some());
    q.restore(p, &lead, None).unwrap();
    assert!(q.lead(p, &lead).is_none());

    // The device comes back: a new lead, whose versions supersede the old ones.
    h.stitch(ev(
        "m3",
        "web-1",
        json!({}),
        "page_viewed",
        "home",
        200 * DAY_MIN,
    ));
    h.drain();
    let back = lead_of(&h, &lead).unwrap();
    assert_eq!(back.state.events, 1, "the expired history is gone");
    assert!(h.latest[&lead]["version"].as_i64().unwrap() > last_version);
}

#[test]
fn identified_and_linked_leads_never_expire() {
    let mut h = harness(30);
    // A user id alone: someone known, though never linked.
    h.stitch(ev(
        "k1",
        "",
        json!({"user_id": "u-1"}),
        "page_viewed",
        "home",
        0,
    ));
    // An anonymous device that later logs in: linked from then on.
    h.stitch(ev("d1", "dev-2", json!({}), "page_viewed", "home", 0));
    h.stitch(ev(
        "d2",
        "dev-2",
        json!({"phone_hash": "ph-2"}),
        "page_viewed",
        "home",
        60,
    ));
    // An anonymous device that stays anonymous.
    h.stitch(ev("x1", "dev-3", json!({}), "page_viewed", "home", 0));
    h.drain();
    let known = crate::identity::lead_id_of("u:u-1");
    let linked = crate::identity::lead_id_of("a:dev-2");
    let anon = crate::identity::lead_id_of("a:dev-3");
    assert!(!lead_of(&h, &known).unwrap().anonymous);
    assert!(!lead_of(&h, &linked).unwrap().anonymous);
    assert!(lead_of(&h, &anon).unwrap().anonymous);
    // Its anonymous events after the link do not make it anonymous again.
    h.stitch(ev("d3", "dev-2", json!({}), "page_viewed", "home", 120));
    h.drain();
    assert!(!lead_of(&h, &linked).unwrap().anonymous);

    tick(&mut h, 400);
    assert!(lead_of(&h, &known).is_some());
    assert!(lead_of(&h, &linked).is_some());
    assert!(lead_of(&h, &anon).is_none());
}

#[test]
fn without_a_ttl_anonymous_leads_stay() {
    let mut h = Harness::new();
    h.stitch(ev("x1", "dev-3", json!({}), "page_viewed", "home", 0));
    h.drain();
    tick(&mut h, 2_000);
    assert!(lead_of(&h, &crate::identity::lead_id_of("a:dev-3")).is_some());
}

#[test]
fn a_ttl_within_the_grace_period_is_refused() {
    let cfg = ScoringConfig::parse(DEFAULT_TOML).unwrap();
    let err = Processor::new(cfg, 6 * 3_600_000, false)
        .with_anonymous_ttl(Some(3_600_000))
        .err()
        .expect("refused");
    assert!(err.to_string().contains("grace"), "{err}");
}
