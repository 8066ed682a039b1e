//! Golden output: a fixed file of tracking-plan events (`golden/events.ndjson`,
//! 150 synthetic people over a year: web, app, mini-program, CRM and call
//! centre ids that link and merge, duplicates, late events, bots, owners)
//! goes through the scorer's own functions — the stitcher's read, the
//! identity graph, the `by_lead` wire format, the processor, the changelog
//! and a restore from it, the time schedule, the score encoder — and must
//! give exactly the recorded `lead_score` records (`golden/scores.ndjson`).
//!
//! A change to how the scorer reads, routes, stores or writes must leave
//! this file unchanged; a deliberate change of scoring is recorded with
//! `LEADSTREAM_BLESS=1 cargo test -p leadstream-scorer --test golden` and
//! reviewed in the diff.

use std::{
    collections::{BTreeMap, VecDeque},
    sync::Arc,
};

use leadstream_common::kafka::partition_for;
use leadstream_schemas::{EmbeddedResolver, Encoder, Plan, codec::Decoder, codec::to_json};
use leadstream_scorer::{
    DAY_MS,
    identity::IdentityGraph,
    processor::{Output, Processor},
    proto::Routed,
    routing,
    rules::{DEFAULT_TOML, ScoringConfig},
    runtime::{score_loop, stitch},
};
use prost::Message as _;
use serde_json::Value as Json;

const PARTITIONS: i32 = 4;
const GRACE_MS: i64 = 360 * 60_000;
/// Records read per batch: the changelog is taken and time advanced after each.
const BATCH: usize = 64;

struct Run {
    decoder: Decoder,
    encoder: Encoder,
    graph: IdentityGraph,
    processor: Processor,
    /// `by_lead` partitions: (offset, key, wire bytes) not yet processed.
    by_lead: Vec<VecDeque<(i64, String, Vec<u8>)>>,
    /// Routed records not yet written as batch records.
    pending: Vec<Routed>,
    next_offset: Vec<i64>,
    /// The changelog, compacted: latest value per (partition, key).
    changelog: BTreeMap<(i32, String), Option<Vec<u8>>>,
    scores: Vec<String>,
}

impl Run {
    fn route(&mut self, routed: Routed) {
        self.pending.push(routed);
    }

    /// Writes the pending routed records as the stitcher and the score loop
    /// do: one batch record per partition.
    fn flush(&mut self) {
        let routes = std::mem::take(&mut self.pending)
            .into_iter()
            .map(|r| (partition_for(&r.lead_id, PARTITIONS), r));
        for (p, value) in routing::batch_records(routes, PARTITIONS) {
            let p = p as usize;
            let offset = self.next_offset[p];
            self.next_offset[p] += 1;
            self.by_lead[p].push_back((offset, routing::ROUTED_BATCH_KEY.into(), value));
        }
    }

    async fn process(&mut self) {
        self.flush();
        while let Some(p) = (0..PARTITIONS as usize).find(|p| !self.by_lead[*p].is_empty()) {
            for _ in 0..BATCH {
                let Some((offset, key, wire)) = self.by_lead[p].pop_front() else {
                    break;
                };
                let records =
                    routing::read_record(key.as_bytes(), &wire).expect("by_lead record reads");
                for (i, routed) in records.into_iter().enumerate() {
                    let Some(input) = score_loop::input_of(&self.decoder, routed.body).await else {
                        continue;
                    };
                    let outcome = self.processor.handle(
                        p as i32,
                        routing::position(offset, i),
                        &routed.lead_id,
                        input,
                        &mut self.graph,
                        routed.graph_offset,
                        None,
                    );
                    self.emit(outcome.outputs).await;
                    // What a record hands on is read after what came before it.
                    self.flush();
                }
            }
        }
        self.end_batch(None).await;
    }

    /// What the scoring loop does after a batch: run each partition's
    /// schedule, then write the changed leads to the changelog.
    async fn end_batch(&mut self, idle_now_ms: Option<i64>) {
        for p in self.processor.partitions() {
            let outputs = self.processor.advance(p, idle_now_ms, None);
            self.emit(outputs).await;
        }
        self.flush();
        for (p, records) in self.processor.take_changelog() {
            for (k, v) in records {
                self.changelog.insert((p, k), v);
            }
        }
    }

    async fn emit(&mut self, outputs: Vec<Output>) {
        for o in outputs {
            match &o {
                Output::Score { record, .. } => {
                    let framed = score_loop::encode_score(&self.encoder, record).unwrap();
                    // The typed fields encode as the JSON object they stand for.
                    let by_json = self
                        .encoder
                        .encode_derived("lead_score", &record.to_json())
                        .unwrap();
                    assert_eq!(framed, by_json.bytes, "{}", record.to_json());
                    let decoded = self.decoder.decode(&framed).await.expect("score decodes");
                    self.scores
                        .push(serde_json::to_string(&to_json(&decoded.value)).unwrap());
                }
                Output::Route(r) => self.route(r.clone()),
            }
        }
    }

    /// A restart: a new processor holding only what the changelog restores.
    fn restart(&mut self) {
        let mut processor = processor();
        for p in 0..PARTITIONS {
            processor.assign(p);
        }
        for ((p, key), value) in &self.changelog {
            processor
                .restore(*p, key, value.as_deref())
                .expect("changelog restores");
        }
        self.processor = processor;
    }
}

/// The processor as the scorer builds it by default (shipped rules, no bots).
fn processor() -> Processor {
    Processor::new(ScoringConfig::parse(DEFAULT_TOML).unwrap(), GRACE_MS, false)
}

fn golden(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(name)
}

#[tokio::test]
async fn the_fixed_event_file_scores_exactly_as_recorded() {
    let plan = Plan::embedded().unwrap();
    let resolver = Arc::new(EmbeddedResolver::new(&plan).unwrap());
    let mut run = Run {
        decoder: Decoder::new(resolver.clone()),
        encoder: Encoder::build(&plan, resolver.as_ref()).await.unwrap(),
        graph: IdentityGraph::default(),
        processor: processor(),
        by_lead: (0..PARTITIONS).map(|_| VecDeque::new()).collect(),
        pending: Vec::new(),
        next_offset: vec![0; PARTITIONS as usize],
        changelog: BTreeMap::new(),
        scores: Vec::new(),
    };
    let text = std::fs::read_to_string(golden("events.ndjson")).unwrap();
    let events: Vec<Json> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let mut last_ms = 0;
    for (i, e) in events.iter().enumerate() {
        last_ms = last_ms.max(e["timestamp"].as_i64().unwrap());
        let framed = run.encoder.encode(e).expect("fixture event is valid").bytes;
        let read = stitch::read(&run.decoder, &framed).await.unwrap();
        if read.ids.is_empty() {
            continue;
        }
        if read.ids.len() > 1 && !run.graph.already_linked(&read.ids) {
            run.graph.link(&read.ids);
        }
        let routed = Routed {
            lead_id: run.graph.resolve(&read.ids),
            graph_offset: i as u64,
            body: Some(read.body),
        };
        run.route(routed);
        if i % BATCH == BATCH - 1 {
            run.process().await;
        }
        if i == events.len() / 2 {
            run.process().await;
            run.restart();
        }
    }
    run.process().await;
    // The stream goes quiet: a year of wall-clock time, a week at a time.
    for week in 1..=52 {
        run.end_batch(Some(last_ms + week * 7 * DAY_MS)).await;
    }

    let path = golden("scores.ndjson");
    let got = run.scores.join("\n") + "\n";
    if std::env::var_os("LEADSTREAM_BLESS").is_some() {
        std::fs::write(&path, &got).unwrap();
        return;
    }
    let want = std::fs::read_to_string(&path).unwrap();
    if got != want {
        let (g, w): (Vec<&str>, Vec<&str>) = (got.lines().collect(), want.lines().collect());
        let first = g.iter().zip(&w).position(|(a, b)| a != b);
        panic!(
            "{} score records, {} recorded; first difference at record {}:\n got {}\nwant {}",
            g.len(),
            w.len(),
            first.map_or(g.len().min(w.len()), |i| i) + 1,
            first.map_or("(end)", |i| g[i]),
            first.map_or("(end)", |i| w[i]),
        );
    }
    assert!(run.scores.len() > 1_000, "the fixture exercises the scorer");
}

/// Training maps events from JSON, the live scorer from the Avro datum;
/// for every fixture event both give the same identifiers and facts, and
/// the facts survive the `by_lead` wire format. An event framed as the
/// scorer wrote it before facts existed reads the same.
#[tokio::test]
async fn json_and_datum_map_every_fixture_event_alike() {
    use leadstream_scorer::{
        event::{PLAN_PATHS, Projected, from_facts, from_plan, to_facts},
        identity::identifiers,
        processor::Input,
        proto::Body,
    };
    let plan = Plan::embedded().unwrap();
    let resolver = Arc::new(EmbeddedResolver::new(&plan).unwrap());
    let encoder = Encoder::build(&plan, resolver.as_ref()).await.unwrap();
    let decoder = Decoder::new(resolver);
    let text = std::fs::read_to_string(golden("events.ndjson")).unwrap();
    let mut scorable = 0;
    for line in text.lines() {
        let json: Json = serde_json::from_str(line).unwrap();
        let framed = encoder.encode(&json).unwrap().bytes;
        // What training reads: the JSON the sink and ClickHouse give back.
        let decoded = to_json(&decoder.decode(&framed).await.unwrap().value);
        let (ids, event) = decoder
            .visit(&framed, |_, d| (identifiers(d), from_plan(d)))
            .await
            .unwrap();
        assert_eq!(ids, identifiers(&decoded), "{line}");
        assert_eq!(event, from_plan(&decoded), "{line}");
        // The stitcher's projection of the same bytes reads the same.
        let projected = decoder
            .project(&framed, PLAN_PATHS, |_, values| {
                let e = Projected(values);
                (identifiers(&e), from_plan(&e))
            })
            .await
            .unwrap();
        assert_eq!(projected, (ids.clone(), event.clone()), "{line}");
        let wire = to_facts(event.clone()).encode_to_vec();
        let facts = leadstream_scorer::proto::EventFacts::decode(wire.as_slice()).unwrap();
        assert_eq!(from_facts(facts).unwrap(), event);
        let Some(Input::Event { event: old, .. }) =
            score_loop::input_of(&decoder, Some(Body::Event(framed))).await
        else {
            panic!("an old by_lead event is an event input");
        };
        assert_eq!(old, event);
        scorable += usize::from(event.is_some());
    }
    assert!(scorable > 1_500, "{scorable} scorable fixture events");
}
