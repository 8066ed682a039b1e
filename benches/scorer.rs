//! Per-event cost of the scorer's pure stages and the state size per lead.
//!   cargo bench --bench scorer

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use leadstream_scorer::{
    DAY_MS,
    event::{LeadEvent, Platform, Signal},
    features::LeadState,
    rules::{DEFAULT_TOML, ScoringConfig},
    score::{Model, score},
    train::{LogisticModel, Thresholds},
};

const T0: i64 = 1_795_305_600_000;

fn event(i: i64) -> LeadEvent {
    LeadEvent {
        message_id: String::new(),
        event: "page_viewed".into(),
        ts_ms: T0 + i * 90_000,
        platform: Some(if i % 3 == 0 {
            Platform::MiniProgram
        } else {
            Platform::Web
        }),
        signals: vec![Signal::PageView, Signal::ALL[(i % 8) as usize]],
        model_id: Some(["x3", "x5", "i4", "ix"][(i % 4) as usize].into()),
        price: None,
        channel: Some("autohome".into()),
        session_id: None,
        is_bot: false,
        order: false,
        lost: false,
        purchase_ms: None,
        duration_ms: Some(30_000),
        page_value: None,
    }
}

fn bench(c: &mut Criterion) {
    let cfg = ScoringConfig::parse(DEFAULT_TOML).unwrap();
    let (hl, dormant) = (cfg.half_life_ms(), cfg.dormant_after_ms());
    let events: Vec<LeadEvent> = (0..4096).map(event).collect();

    // State size: a typical lead (40 events over a month) and a heavy one.
    let mut typical = LeadState::new(T0);
    for i in 0..40 {
        let mut e = event(i);
        e.ts_ms = T0 + i * (30 * DAY_MS / 40);
        typical.apply(&e, hl, dormant);
    }
    let mut heavy = LeadState::new(T0);
    for e in &events {
        heavy.apply(e, hl, dormant);
    }
    println!(
        "state bytes per lead: typical (40 events) {}, heavy (4096 events) {}",
        typical.bytes(),
        heavy.bytes()
    );

    let mut group = c.benchmark_group("scorer");
    group.throughput(Throughput::Elements(1));
    group.bench_function("window_update_and_score", |b| {
        let mut state = LeadState::new(T0);
        let mut i = 0usize;
        b.iter(|| {
            let e = &events[i % events.len()];
            i += 1;
            state.apply(black_box(e), hl, dormant);
            black_box(score(&state, e.ts_ms, &cfg, None))
        })
    });
    group.bench_function("window_update_only", |b| {
        let mut state = LeadState::new(T0);
        let mut i = 0usize;
        b.iter(|| {
            let e = &events[i % events.len()];
            i += 1;
            state.apply(black_box(e), hl, dormant);
        })
    });
    group.bench_function("feature_vector", |b| {
        b.iter(|| black_box(heavy.features(black_box(T0 + 10 * DAY_MS), hl)))
    });
    // A model over every feature, as `leadstream train` writes it.
    let n = leadstream_scorer::features::FEATURE_NAMES.len();
    let model = LogisticModel {
        features: leadstream_scorer::features::FEATURE_NAMES
            .iter()
            .map(|s| s.to_string())
            .collect(),
        columns: (0..n).collect(),
        mean: vec![0.5; n],
        std: vec![2.0; n],
        coefficients: (0..n).map(|i| (i as f64 - 17.0) / 10.0).collect(),
        intercept: -3.0,
        horizon_days: 30.0,
        thresholds: Thresholds {
            high: 0.5,
            medium: 0.2,
        },
    };
    let features = heavy.features(T0 + 10 * DAY_MS, hl);
    group.bench_function("model_inference", |b| {
        b.iter(|| black_box(model.probability(black_box(&features))))
    });
    let blended = ScoringConfig {
        model_weight: 0.5,
        ..cfg.clone()
    };
    group.bench_function("window_update_and_score_with_model", |b| {
        let mut state = LeadState::new(T0);
        let mut i = 0usize;
        b.iter(|| {
            let e = &events[i % events.len()];
            i += 1;
            state.apply(black_box(e), hl, dormant);
            black_box(score(&state, e.ts_ms, &blended, Some(&model)))
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
