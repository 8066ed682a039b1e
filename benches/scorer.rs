//! Per-event cost of the scorer's pure stages, what the processor keeps per
//! lead (measured by allocation), and how fast time alone re-scores leads.
//!   cargo bench --bench scorer

use std::{alloc::System, hint::black_box, time::Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use leadstream_scorer::{
    DAY_MS,
    event::LeadEvent,
    features::LeadState,
    identity::IdentityGraph,
    processor::{Input, Output, Processor},
    rules::{DEFAULT_TOML, ScoringConfig},
    score::{Model, score},
    train::{LogisticModel, Snapshot, Thresholds, TrainedModel},
    trees::{self, TreeParams},
};
use stats_alloc::{INSTRUMENTED_SYSTEM, StatsAlloc};

mod harness;

// Counts every allocation, so per-lead memory is what the processor really
// holds (maps, the schedule, dedupe ids), not a size_of estimate.
#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

use harness::{T0, event, typical_events};

/// Feeds `leads` typical leads through one partition's processor; returns
/// it, the net bytes allocated, and the nanoseconds per event.
fn processor_with(leads: u64) -> (Processor, usize, f64) {
    let cfg = ScoringConfig::parse(DEFAULT_TOML).unwrap();
    let mut graph = IdentityGraph::default();
    let inputs: Vec<(String, Vec<LeadEvent>)> = (0..leads)
        .map(|l| (format!("L{:016x}", l * 0x9e37_79b9), typical_events(l)))
        .collect();
    // Interleave leads as a partition would see them: event i of every lead, then i + 1.
    let ((p, ns), net) = harness::live_bytes_after(GLOBAL, || {
        let mut p = Processor::new(cfg, 6 * 3_600_000, false);
        p.assign(0);
        let started = Instant::now();
        let mut offset = 0;
        for i in 0..40 {
            for (key, events) in &inputs {
                let input = Input::Event {
                    event: Some(events[i].clone()),
                    anonymous: false,
                };
                black_box(p.handle(0, offset, key, input, &mut graph, 0, None));
                offset += 1;
            }
        }
        let ns = started.elapsed().as_nanos() as f64 / offset as f64;
        // The changelog is taken every batch; leaving it would count its records.
        drop(p.take_changelog());
        (p, ns)
    });
    (p, net, ns)
}

/// Runs the idle clock a day at a time over `days`: the re-scores time
/// alone makes, and their rate.
fn time_driven(p: &mut Processor, days: i64) -> (usize, f64) {
    let started = Instant::now();
    let mut emitted = 0;
    for d in 31..31 + days {
        emitted += p
            .advance(0, Some(T0 + d * DAY_MS), None)
            .iter()
            .filter(|o| matches!(o, Output::Score { .. }))
            .count();
    }
    (emitted, emitted as f64 / started.elapsed().as_secs_f64())
}

/// New anonymous visitors, `per_day` a day for `days` days, one event
/// each, through one partition's processor with the idle clock run at the
/// end of each day: how many leads it holds at the end under an anonymous
/// TTL of `ttl_days` (None: kept forever).
fn anonymous_visitors(per_day: i64, days: i64, ttl_days: Option<i64>) -> usize {
    let cfg = ScoringConfig::parse(DEFAULT_TOML).unwrap();
    let mut p = Processor::new(cfg, 6 * 3_600_000, false)
        .with_anonymous_ttl(ttl_days.map(|d| d * DAY_MS))
        .unwrap();
    p.assign(0);
    let mut graph = IdentityGraph::default();
    let mut offset = 0;
    for day in 0..days {
        for v in 0..per_day {
            let mut e = harness::event(v);
            e.ts_ms = T0 + day * DAY_MS + v * 1_000;
            e.message_id = format!("v{day}-{v}");
            let input = Input::Event {
                event: Some(e),
                anonymous: true,
            };
            let key = format!("a:visitor-{day}-{v}");
            black_box(p.handle(0, offset, &key, input, &mut graph, 0, None));
            offset += 1;
        }
        black_box(p.advance(0, Some(T0 + (day + 1) * DAY_MS), None));
        drop(p.take_changelog());
    }
    p.leads()
}

fn bench(c: &mut Criterion) {
    // What the processor holds per typical lead, by allocation: the lead
    // (state, dedupe ids, bookkeeping), its map entry and schedule entry.
    // `cargo test` runs benches once without `--bench`: a small population
    // keeps that quick in a debug build.
    let full = std::env::args().any(|a| a == "--bench");
    let leads: u64 = if full { 100_000 } else { 1_000 };
    let (mut p, bytes, ns_per_event) = processor_with(leads);
    let per_lead = bytes as f64 / leads as f64;
    let schedule = p.scheduled();
    let (rescored, per_s) = time_driven(&mut p, 400);
    println!(
        "processor: {leads} typical leads (40 events each) hold {per_lead:.0} bytes per lead by allocation \
         ({schedule} schedule entries); {ns_per_event:.0} ns per event through Processor::handle"
    );
    println!(
        "time-driven re-scores: {rescored} over 400 idle days ({:.1} per lead), {per_s:.0} per second",
        rescored as f64 / leads as f64
    );
    drop(p);
    // Visitors who never log in: without expiry the leads grow with every
    // device ever seen; with the default TTL they stop at about TTL days'
    // worth.
    let (per_day, days) = if full { (500, 800) } else { (20, 500) };
    let kept = anonymous_visitors(per_day, days, None);
    let held = anonymous_visitors(per_day, days, Some(400));
    assert!(held < kept, "expiry bounds anonymous leads");
    println!(
        "anonymous visitors: {per_day} a day for {days} days, one event each: {held} leads held with the 400-day TTL, {kept} without"
    );

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
    // A logistic regression over every feature, as `leadstream train
    // --learner logistic` writes it.
    let n = leadstream_scorer::features::FEATURE_NAMES.len();
    let logistic = LogisticModel {
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
    // Trees as `leadstream train` writes them by default (its default size),
    // fit on snapshots of typical leads.
    let model = TrainedModel::Trees(tree_model(hl, dormant));
    let row = heavy.feature_row(T0 + 10 * DAY_MS, hl);
    group.bench_function("model_inference_logistic", |b| {
        b.iter(|| black_box(logistic.probability(black_box(&row))))
    });
    group.bench_function("model_inference", |b| {
        b.iter(|| black_box(model.probability(black_box(&row))))
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
    // A score as the scorer writes it to Kafka: the lead's record after an
    // intent-heavy run of events, encoded and framed.
    let record = {
        let mut p = Processor::new(cfg.clone(), 6 * 3_600_000, false);
        p.assign(0);
        let mut graph = IdentityGraph::default();
        let mut last = None;
        for (i, e) in typical_events(7).into_iter().enumerate() {
            let input = Input::Event {
                event: Some(e),
                anonymous: false,
            };
            for o in p
                .handle(0, i as i64, "Lbench", input, &mut graph, 0, None)
                .outputs
            {
                if let Output::Score { record, .. } = o {
                    last = Some(record);
                }
            }
        }
        last.expect("a typical lead scores")
    };
    let encoder = tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(harness::plan_encoder());
    group.bench_function("encode_score", |b| {
        b.iter(|| {
            black_box(leadstream_scorer::runtime::score_loop::encode_score(
                &encoder,
                black_box(&record),
            ))
        })
    });
    group.finish();

    // The summary line scripts read; update + score timed by hand here so
    // the line does not depend on criterion's output format.
    let mut state = LeadState::new(T0);
    let started = Instant::now();
    let rounds = if full { 2_000_000 } else { 20_000 };
    for e in events.iter().cycle().take(rounds) {
        state.apply(e, hl, dormant);
        black_box(score(&state, e.ts_ms, &cfg, None));
    }
    let update_score_ns = started.elapsed().as_nanos() as f64 / rounds as f64;
    let blended = ScoringConfig {
        model_weight: 0.5,
        ..cfg.clone()
    };
    let mut state = LeadState::new(T0);
    let started = Instant::now();
    for e in events.iter().cycle().take(rounds) {
        state.apply(e, hl, dormant);
        black_box(score(&state, e.ts_ms, &blended, Some(&model)));
    }
    let with_model_ns = started.elapsed().as_nanos() as f64 / rounds as f64;
    let trees = match &model {
        TrainedModel::Trees(t) => t.trees.len(),
        TrainedModel::Logistic(_) => 0,
    };
    println!(
        "scorer update_score_ns={update_score_ns:.0} events_per_s_per_core={:.0} update_score_with_model_ns={with_model_ns:.0} model_events_per_s_per_core={:.0} model_trees={trees} processor_event_ns={ns_per_event:.0} bytes_per_lead={per_lead:.0} time_rescores_per_s={per_s:.0} anonymous_leads_held={held} anonymous_leads_kept={kept}",
        1e9 / update_score_ns,
        1e9 / with_model_ns
    );
}

/// A tree model of the default size fit on 2,000 typical leads, each cut
/// after a varying number of its events, labelled by how far it got.
fn tree_model(hl: i64, dormant: i64) -> leadstream_scorer::trees::TreeModel {
    let snapshots: Vec<Snapshot> = (0..2_000u64)
        .map(|lead| {
            let mut s = LeadState::new(T0);
            let seen = 1 + (lead * 7_919 % 40) as usize;
            for e in typical_events(lead).iter().take(seen) {
                s.apply(e, hl, dormant);
            }
            Snapshot {
                lead_id: format!("L{lead}"),
                ts_ms: s.last_event_ms,
                features: s.feature_row(s.last_event_ms, hl),
                label: seen > 25 || lead % 11 == 0,
                idle: false,
            }
        })
        .collect();
    trees::fit(&snapshots, &[], &[], 30.0, &TreeParams::default()).expect("fit")
}

criterion_group!(benches, bench);
criterion_main!(benches);
