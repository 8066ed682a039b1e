//! Merges across partitions, late events, replays and dedupe.

use super::*;

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
    let app_drive = ev(
        "a1",
        "app-1",
        json!({"platform": "app", "union_id": "wx-1"}),
        "test_drive_booked",
        "",
        40,
    );
    h.stitch(app_drive.clone());
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
    h.stitch(app_drive);
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
            anonymous: false,
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
        q.restore(0, k, v.as_deref()).unwrap();
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
            anonymous: false,
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
        q.restore(0, k, v.as_deref()).unwrap();
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
