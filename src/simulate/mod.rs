//! `leadstream simulate`: people whose journeys cross the app, the WeChat
//! mini-program, the website, the dealer CRM and the contact centre, posted
//! through the real HTTP API in Segment format, with the truth written
//! beside them; and the ranking check of live scores against that truth.
//!
//! The truth model (README, "The simulator's truth model"): each person has
//! a latent purchase intent `z` drawn by persona, and an online-ness `o`
//! (how much of their research shows up online). Whether they order is a
//! coin flip with probability sigmoid(1.6 z − 0.6); what they do online is
//! drawn from z + o with noise. No event decides the truth: buyers with low
//! online-ness never book a drive online, non-buyers with high intent do,
//! dormant leads wake without buying, owners browse without upgrading.

use std::{
    cmp::Reverse,
    collections::{BTreeMap, BinaryHeap, HashMap},
    path::PathBuf,
    process::ExitCode,
    sync::{Arc, Mutex},
    time::Duration,
};

use anyhow::Context as _;
use clap::Args;
use leadstream_scorer::clock::Clock;
use serde_json::{Value as Json, json};

#[derive(Debug, Clone, Args)]
pub struct SimulateArgs {
    /// Base URL of `leadstream ingest`.
    #[arg(
        long,
        env = "LEADSTREAM_SIMULATE_URL",
        default_value = "http://127.0.0.1:8080"
    )]
    pub url: String,
    /// People to simulate.
    #[arg(long, env = "LEADSTREAM_SIMULATE_LEADS", default_value_t = 300)]
    pub leads: usize,
    /// Seed: the same seed gives the same people.
    #[arg(long, env = "LEADSTREAM_SIMULATE_SEED", default_value_t = 7)]
    pub seed: u64,
    /// Events per second posted (time is compressed to fit).
    #[arg(long, env = "LEADSTREAM_SIMULATE_RATE", default_value_t = 300.0)]
    pub rate: f64,
    /// Days of history: people arrive over this many days, ending now. The
    /// history is replayed in seconds, so run the scorer with a grace at
    /// least this long (`--grace-minutes`, days x 1440, and
    /// `--anonymous-ttl-days` above it), or it drops reordered events as
    /// late.
    #[arg(long, env = "LEADSTREAM_SIMULATE_DAYS", default_value_t = 400)]
    pub days: i64,
    /// Where the truth goes (one JSON line per person).
    #[arg(
        long,
        env = "LEADSTREAM_SIMULATE_TRUTH",
        default_value = ".leadstream/truth.jsonl"
    )]
    pub truth: PathBuf,
}

const DAY_MS: i64 = 86_400_000;
/// Orders within this long after the check count as the truth it ranks.
pub const HORIZON_MS: i64 = 90 * DAY_MS;
/// The reactivated flag's life in the shipped scoring config.
const FLAG_MS: i64 = 14 * DAY_MS;

mod check;
mod people;
mod post;

pub use check::*;
pub use people::*;
pub use post::*;

pub async fn run(args: SimulateArgs) -> anyhow::Result<ExitCode> {
    let (truth, end_ms, progress) = run_history(&args).await?;
    let buyers = truth
        .iter()
        .filter(|t| {
            t.order_ms
                .is_some_and(|o| o > end_ms && o <= end_ms + HORIZON_MS)
        })
        .count();
    println!(
        "posted {} events for {} people to {} ({} rejected); truth in {} ({buyers} order within 90 days of now)",
        progress.posted,
        truth.len(),
        args.url,
        progress.rejected,
        args.truth.display()
    );
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    const END: i64 = 1_795_305_600_000;

    fn args(seed: u64, leads: usize) -> SimulateArgs {
        SimulateArgs {
            url: String::new(),
            leads,
            seed,
            rate: 1.0,
            days: 400,
            truth: PathBuf::new(),
        }
    }

    #[test]
    fn people_are_reproducible_and_cover_every_persona() {
        let a = people(&args(7, 300), END);
        let b = people(&args(7, 300), END);
        assert_eq!(
            a.iter().map(|j| j.calls.clone()).collect::<Vec<_>>(),
            b.iter().map(|j| j.calls.clone()).collect::<Vec<_>>()
        );
        assert_ne!(a[0].calls, people(&args(8, 300), END)[0].calls);
        for p in [
            Persona::CasualBrowser,
            Persona::Researcher,
            Persona::HotBuyer,
            Persona::DormantWaker,
            Persona::Owner,
        ] {
            assert!(a.iter().any(|j| j.persona == p), "{p:?}");
        }
        for j in &a {
            assert!(j.calls.windows(2).all(|w| w[0].0 <= w[1].0), "time ordered");
            assert!(!j.lead_id.is_empty(), "every person has an anonymous id");
        }
    }

    /// The truth is a coin flip on latent intent: for every event that
    /// signals intent, some buyers never send it and some who send it never
    /// buy, so no event alone decides who buys.
    #[test]
    fn no_single_event_decides_who_buys() {
        let all = people(&args(11, 4000), END);
        let did = |p: &Person, e: &str| {
            p.calls.iter().any(|(t, _, b)| {
                p.order_ms.is_none_or(|o| *t < o) && (b["event"] == e || b["name"] == e)
            })
        };
        let buyers: Vec<&Person> = all.iter().filter(|p| p.order_ms.is_some()).collect();
        assert!(buyers.len() > 200, "{} buyers", buyers.len());
        for e in [
            "Test Drive Booked",
            "Lead Form Submitted",
            "Configurator",
            "Finance Calculated",
            "Store Visited",
        ] {
            let with: Vec<&Person> = all.iter().filter(|p| did(p, e)).collect();
            let bought = with.iter().filter(|p| p.order_ms.is_some()).count();
            let share_buy = bought as f64 / with.len().max(1) as f64;
            let share_sent =
                buyers.iter().filter(|p| did(p, e)).count() as f64 / buyers.len() as f64;
            assert!(
                share_buy < 0.85,
                "{e}: {share_buy:.2} of those who send it buy"
            );
            assert!(share_sent < 0.9, "{e}: {share_sent:.2} of buyers send it");
            assert!(with.len() > 50, "{e} is rare: {}", with.len());
        }
        let of = |persona: Persona| all.iter().filter(move |p| p.persona == persona);
        assert!(
            of(Persona::DormantWaker).any(|p| p.order_ms.is_none()),
            "wakers who do not buy"
        );
        let owners: Vec<&Person> = of(Persona::Owner).collect();
        let browsing_only = owners
            .iter()
            .filter(|p| p.intent_shown_ms.is_some() && p.order_ms.is_none())
            .count();
        assert!(
            browsing_only > 5,
            "owners who shop without upgrading: {browsing_only}"
        );
        let rate = |shown: bool| {
            let g: Vec<&&Person> = owners
                .iter()
                .filter(|p| p.intent_shown_ms.is_some() == shown)
                .collect();
            g.iter().filter(|p| p.order_ms.is_some()).count() as f64 / g.len().max(1) as f64
        };
        assert!(
            rate(true) > 2.0 * rate(false),
            "shoppers {} vs others {}",
            rate(true),
            rate(false)
        );
    }

    #[test]
    fn the_check_ranks_by_stage_and_reports_top_decile_precision() {
        let truth: Vec<Truth> = (0..20)
            .map(|i| Truth {
                persona: if i < 10 {
                    Persona::Researcher
                } else {
                    Persona::Owner
                },
                lead_id: format!("L{i}"),
                lead_ids: vec![format!("L{i}")],
                intent: 0.0,
                first_ms: 0,
                order_ms: (i % 10 >= 8).then_some(DAY_MS),
                intent_shown_ms: (i >= 15).then_some(0),
            })
            .collect();
        let latest: HashMap<String, Json> = (0..20)
            .map(|i| {
                let owner = i >= 10;
                let score = (i % 10) as f64 * 10.0;
                (format!("L{i}"), json!({"score": score, "rule_score": score, "probability": 0.5,
                    "stage": if owner { "retained" } else { "new" }, "grade": if score >= 40.0 { "medium" } else { "low" }}))
            })
            .collect();
        let c = check(&truth, &latest, 0, true);
        let g = |n: &str| c.groups.iter().find(|g| g.name == n).unwrap().clone();
        assert_eq!((g("all").leads, g("all").buyers), (20, 4));
        assert_eq!(g("new").auc[0], 1.0, "the two buyers have the top scores");
        assert_eq!(g("new").top_decile[0], 1.0);
        assert_eq!(g("owners").auc[2], 0.5, "the model said 0.5 for everyone");
        assert_eq!(c.owners_low, [(4, 5), (0, 5)]);
        assert!(c.to_string().contains("top-10% precision"));
    }
}

#[cfg(test)]
mod plan_tests {
    use super::*;
    use leadstream_ingest::{
        IngestConfig,
        pipeline::{Raw, Verdict},
        segment::Incoming,
        sources::Sources,
        wire::SegmentEvent,
    };

    /// Every simulated call passes ingest's real validation: the simulator
    /// speaks the tracking plan, so rejects in a run mean a real problem.
    #[tokio::test]
    async fn every_simulated_call_is_accepted_by_the_ingest_pipeline() {
        let mut cfg = IngestConfig::defaults("unused:9092", "simulator-test-pepper");
        cfg.sources = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/config/sources.toml").into();
        cfg.spool_dir = std::env::temp_dir().join(format!("sim-spool-{}", std::process::id()));
        let publisher =
            std::sync::Arc::new(leadstream_ingest::publish::KafkaPublisher::new(&cfg).unwrap());
        let state = leadstream_ingest::build_state(&cfg, publisher)
            .await
            .unwrap();
        let sources = Sources::load(&cfg.sources).unwrap();
        let a = SimulateArgs {
            url: String::new(),
            leads: 400,
            seed: 11,
            rate: 1.0,
            days: 400,
            truth: PathBuf::new(),
        };
        for j in people(&a, 1_795_305_600_000) {
            for (i, (_, platform, body)) in j.calls.iter().enumerate() {
                let source = sources.authenticate(write_key(platform)).unwrap();
                let inc = Incoming {
                    source,
                    received_at_ms: 1_795_305_600_000,
                    max_skew_ms: 0,
                    batch_context: None,
                    batch_sent_at: None,
                };
                let text = body.to_string();
                let event = SegmentEvent::parse(&text).unwrap();
                let raw = Raw {
                    text: &text,
                    route_type: None,
                };
                if let Verdict::Rejected { rejection, .. } =
                    state.pipeline.process(&event, &raw, i, &inc)
                {
                    panic!(
                        "{:?} {platform} call rejected: {rejection:?}\n{body}",
                        j.persona
                    );
                }
            }
        }
        let _ = std::fs::remove_dir_all(&cfg.spool_dir);
    }
}
