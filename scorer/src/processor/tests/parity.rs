//! Train/serve parity of the features.

use super::*;

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
