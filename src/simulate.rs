//! `leadstream simulate`: realistic multi-platform journeys posted through
//! the real HTTP API in Segment format, with the ground truth written beside
//! them, and a check of how well live scores rank that truth.

use std::{
    collections::{BTreeMap, HashMap},
    path::PathBuf,
    process::ExitCode,
    time::Duration,
};

use anyhow::Context as _;
use clap::Args;
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
    /// Seed: the same seed gives the same journeys.
    #[arg(long, env = "LEADSTREAM_SIMULATE_SEED", default_value_t = 7)]
    pub seed: u64,
    /// Events per second posted (time is compressed to fit).
    #[arg(long, env = "LEADSTREAM_SIMULATE_RATE", default_value_t = 300.0)]
    pub rate: f64,
    /// Days of history the journeys span, ending now. They are replayed in
    /// seconds, so run the scorer with a grace at least this long
    /// (`--grace-minutes`, days x 1440), or it drops reordered events as late.
    #[arg(long, env = "LEADSTREAM_SIMULATE_DAYS", default_value_t = 400)]
    pub days: i64,
    /// Where the ground truth goes (one JSON line per person).
    #[arg(
        long,
        env = "LEADSTREAM_SIMULATE_TRUTH",
        default_value = ".leadstream/truth.jsonl"
    )]
    pub truth: PathBuf,
}

const DAY_MS: i64 = 86_400_000;

/// Who a simulated person is; decides their journey.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Persona {
    CasualBrowser,
    Researcher,
    HotBuyer,
    DormantWaker,
    OwnerUpgrade,
}

impl Persona {
    pub fn as_str(self) -> &'static str {
        match self {
            Persona::CasualBrowser => "casual_browser",
            Persona::Researcher => "researcher",
            Persona::HotBuyer => "hot_buyer",
            Persona::DormantWaker => "dormant_waker",
            Persona::OwnerUpgrade => "owner_upgrade",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [
            Persona::CasualBrowser,
            Persona::Researcher,
            Persona::HotBuyer,
            Persona::DormantWaker,
            Persona::OwnerUpgrade,
        ]
        .into_iter()
        .find(|p| p.as_str() == s)
    }
}

/// splitmix64: tiny, seeded, stable across platforms and versions.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn chance(&mut self, p: f64) -> bool {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64 <= p
    }
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
}

/// One person's journey: Segment calls with their simulated times.
pub struct Journey {
    pub person: usize,
    pub persona: Persona,
    pub will_order: bool,
    /// The lead id the scorer gives this person once every id is linked.
    pub lead_id: String,
    pub calls: Vec<(i64, &'static str, Json)>,
}

const MODELS: [&str; 4] = ["x3", "x5", "i4", "ix"];
const PAGES: [&str; 4] = ["Home", "Article", "Model Detail", "Video"];

/// Builds every journey for `args`, times relative to `end_ms`.
pub fn journeys(args: &SimulateArgs, end_ms: i64) -> Vec<Journey> {
    let mut rng = Rng(args.seed);
    (0..args.leads)
        .map(|person| {
            let persona = match rng.below(100) {
                0..=39 => Persona::CasualBrowser,
                40..=64 => Persona::Researcher,
                65..=77 => Persona::HotBuyer,
                78..=89 => Persona::DormantWaker,
                _ => Persona::OwnerUpgrade,
            };
            journey(&mut rng, person, persona, args, end_ms)
        })
        .collect()
}

fn journey(
    rng: &mut Rng,
    person: usize,
    persona: Persona,
    args: &SimulateArgs,
    end_ms: i64,
) -> Journey {
    let tag = format!("{}-{person}", args.seed);
    let web = format!("web-{tag}");
    let mp = format!("mp-{tag}");
    let app = format!("app-{tag}");
    let union = format!("union-{tag}");
    let phone = format!("138{:08}", (person as u64 * 7919 + args.seed) % 100_000_000);
    let model = *rng.pick(&MODELS);
    let channel = *rng.pick(&["autohome", "dongchedi", "baidu", "wechat_moments", "douyin"]);
    let mut calls: Vec<(i64, &'static str, Json)> = Vec::new();
    let mut seq = 0usize;
    let mut push = |calls: &mut Vec<(i64, &'static str, Json)>,
                    t: i64,
                    platform: &'static str,
                    mut body: Json| {
        seq += 1;
        body["messageId"] = json!(format!("sim-{tag}-{seq}"));
        body["timestamp"] = json!(t);
        match platform {
            "web" => body["anonymousId"] = json!(web),
            "mini_program" => {
                body["anonymousId"] = json!(mp);
                body["context"]["wechat"] = json!({"unionId": union});
            }
            "app" => {
                body["anonymousId"] = json!(app);
                body["context"]["wechat"] = json!({"unionId": union});
            }
            _ => {}
        }
        body["context"]["campaign"] = json!({"source": channel});
        calls.push((t, platform, body));
    };
    let page = |name: &str| json!({"type": "page", "name": name, "properties": {"model_id": model}, "context": {}});
    let track = |event: &str, props: Json| json!({"type": "track", "event": event, "properties": props, "context": {}});
    let test_drive = |dealer: &str| {
        track(
            "Test Drive Booked",
            json!({"model_id": model, "dealer_id": dealer, "contact_phone": phone}),
        )
    };
    let span = args.days.max(30) * DAY_MS;
    let start = end_ms - span;
    // Somewhere in the window, leaving room for the journey.
    let mut t = start + rng.below((span - 30 * DAY_MS).max(1) as u64) as i64;
    let session = |rng: &mut Rng| rng.below(40 * 60_000) as i64 + 60_000;
    let mut will_order = false;
    match persona {
        Persona::CasualBrowser => {
            for _ in 0..=rng.below(2) {
                for _ in 0..2 + rng.below(3) {
                    push(
                        &mut calls,
                        t,
                        "web",
                        page(PAGES[rng.below(PAGES.len() as u64) as usize]),
                    );
                    t += session(rng);
                }
                t += rng.below(20) as i64 * DAY_MS;
            }
        }
        Persona::Researcher => {
            // Whether they will order is settled first and shows in what
            // they do, as in life: buyers come back more, price it out and
            // book a test drive; some who never buy do price it out too.
            will_order = rng.chance(0.15);
            // Room for up to seven visits a week apart.
            t = t.min(end_ms - 60 * DAY_MS);
            let visits = if will_order {
                5 + rng.below(3)
            } else {
                2 + rng.below(4)
            };
            for _ in 0..visits {
                let platform = *rng.pick(&["web", "mini_program"]);
                for name in ["Model Detail", "Configurator", "Price"] {
                    push(&mut calls, t, platform, page(name));
                    t += session(rng);
                }
                if rng.chance(if will_order { 0.6 } else { 0.25 }) {
                    push(
                        &mut calls,
                        t,
                        platform,
                        track(
                            "Finance Calculated",
                            json!({"model_id": model, "price": 350000.0, "down_payment": 60000, "term_months": 36}),
                        ),
                    );
                }
                t += (2 + rng.below(6)) as i64 * DAY_MS;
            }
            if will_order {
                // The decision is recent: a test drive in the last weeks.
                t = t
                    .max(end_ms - (3 + rng.below(18)) as i64 * DAY_MS)
                    .min(end_ms - DAY_MS);
                push(&mut calls, t, "web", test_drive("bj-002"));
            }
        }
        Persona::HotBuyer => {
            // Hot now: the week-long journey ends within the last few days.
            t = end_ms - (8 + rng.below(5)) as i64 * DAY_MS;
            push(&mut calls, t, "web", page("Model Detail"));
            t += session(rng);
            push(&mut calls, t, "web", page("Configurator"));
            push(
                &mut calls,
                t + 60_000,
                "web",
                track(
                    "Vehicle Configured",
                    json!({"model_id": model, "price": 420000.0}),
                ),
            );
            t += DAY_MS;
            push(&mut calls, t, "mini_program", page("Finance"));
            push(
                &mut calls,
                t + 60_000,
                "mini_program",
                track(
                    "Finance Calculated",
                    json!({"model_id": model, "price": 420000.0, "down_payment": 120000, "term_months": 36}),
                ),
            );
            t += 2 * DAY_MS;
            push(&mut calls, t, "app", test_drive("sh-001"));
            t += DAY_MS;
            push(
                &mut calls,
                t,
                "web",
                track(
                    "Lead Form Submitted",
                    json!({"form_id": "quote", "model_id": model, "phone": phone}),
                ),
            );
            t += 2 * DAY_MS;
            // The dealer's CRM knows the customer by phone; the visit is logged against the CRM id.
            push(
                &mut calls,
                t - 60_000,
                "server",
                json!({"type": "identify", "userId": format!("crm-{tag}"), "traits": {"phone": phone}, "context": {}}),
            );
            push(
                &mut calls,
                t,
                "offline",
                json!({"type": "track", "event": "Store Visited", "properties": {"dealer_id": "sh-001", "visit_type": "test_drive"}, "context": {}, "userId": format!("crm-{tag}")}),
            );
            will_order = true;
            // Those far enough along have already signed: the order is history.
            if t + 2 * DAY_MS < end_ms {
                push(
                    &mut calls,
                    t + 2 * DAY_MS,
                    "server",
                    json!({"type": "track", "event": "Order Placed", "userId": format!("crm-{tag}"),
                    "properties": {"order_id": format!("o-{tag}"), "model_id": model, "order_type": "deposit", "amount": 5000.0}, "context": {}}),
                );
            }
        }
        Persona::DormantWaker => {
            t = end_ms - (150 + rng.below(60)) as i64 * DAY_MS;
            push(&mut calls, t, "web", page("Model Detail"));
            push(
                &mut calls,
                t + 120_000,
                "web",
                track(
                    "Lead Form Submitted",
                    json!({"form_id": "brochure", "model_id": model, "phone": phone}),
                ),
            );
            // Months of silence, then intent again.
            t = end_ms - rng.below(10) as i64 * DAY_MS - DAY_MS;
            // Mini-program login with the WeChat phone number links it to the old lead form.
            push(
                &mut calls,
                t - 60_000,
                "mini_program",
                json!({"type": "identify", "traits": {"phone": phone}, "context": {}}),
            );
            push(&mut calls, t, "mini_program", page("Configurator"));
            push(&mut calls, t + 60_000, "mini_program", page("Price"));
            push(
                &mut calls,
                t + 120_000,
                "mini_program",
                track(
                    "Vehicle Configured",
                    json!({"model_id": model, "price": 380000.0}),
                ),
            );
            // Woken for real: the ones who will order also book a drive.
            will_order = rng.chance(0.4);
            if will_order || rng.chance(0.1) {
                push(
                    &mut calls,
                    t + 600_000,
                    "mini_program",
                    test_drive("sh-001"),
                );
            }
        }
        Persona::OwnerUpgrade => {
            let bought = end_ms - (26 + rng.below(12)) as i64 * 30 * DAY_MS;
            push(
                &mut calls,
                end_ms - 60 * DAY_MS,
                "server",
                json!({"type": "identify", "userId": format!("crm-{tag}"),
                "traits": {"phone": phone, "owned_model_id": "x3", "purchase_date": bought, "union_id": union}, "context": {}}),
            );
            t = end_ms - rng.below(20) as i64 * DAY_MS - DAY_MS;
            // Due for a replacement, but only the ones who will upgrade go
            // past a look at the new models.
            will_order = rng.chance(0.5);
            let pages: &[&str] = if will_order {
                &["Model Detail", "Configurator", "Finance"]
            } else {
                &["Model Detail"]
            };
            for name in pages {
                push(&mut calls, t, "app", page(name));
                t += session(rng);
            }
            if will_order {
                push(&mut calls, t, "app", test_drive("sh-001"));
            }
        }
    }
    // The smallest identifier names the lead once linked (see scorer::identity).
    let mut anon: Vec<String> = calls
        .iter()
        .filter_map(|(_, _, b)| {
            b.get("anonymousId")
                .and_then(Json::as_str)
                .map(|a| format!("a:{a}"))
        })
        .collect();
    anon.sort();
    let lead_id = anon
        .first()
        .map(|a| leadstream_scorer::identity::lead_id_of(a))
        .unwrap_or_default();
    calls.sort_by_key(|c| c.0);
    Journey {
        person,
        persona,
        will_order,
        lead_id,
        calls,
    }
}

pub fn write_key(platform: &str) -> &'static str {
    match platform {
        "app" => "dev-app-key",
        "mini_program" => "dev-mp-key",
        "server" => "dev-server-key",
        "offline" => "dev-offline-key",
        _ => "dev-web-key",
    }
}

/// What the simulator has posted so far.
#[derive(Debug, Default, Clone)]
pub struct Progress {
    pub posted: u64,
    pub rejected: u64,
}

/// Posts every journey in time order at `args.rate`, in Segment batches per
/// source; writes the truth first. Returns the journeys.
pub async fn run_journeys(
    args: &SimulateArgs,
    progress: tokio::sync::watch::Sender<Progress>,
) -> anyhow::Result<Vec<Journey>> {
    let end_ms = chrono::Utc::now().timestamp_millis();
    let people = journeys(args, end_ms);
    if let Some(dir) = args.truth.parent() {
        std::fs::create_dir_all(dir).ok();
    }
    let truth: String = people
        .iter()
        .map(|j| {
            json!({"person": j.person, "persona": j.persona.as_str(), "will_order": j.will_order, "lead_id": j.lead_id, "events": j.calls.len()})
                .to_string()
                + "\n"
        })
        .collect();
    std::fs::write(&args.truth, truth)
        .with_context(|| format!("writing the truth to {}", args.truth.display()))?;
    let mut all: Vec<&(i64, &'static str, Json)> =
        people.iter().flat_map(|j| j.calls.iter()).collect();
    all.sort_by_key(|c| c.0);
    let client = reqwest::Client::new();
    let mut sent = Progress::default();
    let chunk = ((args.rate / 5.0).ceil() as usize).clamp(1, 500);
    let started = tokio::time::Instant::now();
    for window in all.chunks(chunk) {
        let mut by_source: BTreeMap<&str, Vec<Json>> = BTreeMap::new();
        for (_, platform, body) in window {
            by_source.entry(platform).or_default().push(body.clone());
        }
        for (platform, batch) in by_source {
            let n = batch.len() as u64;
            let resp = client
                .post(format!("{}/v1/batch", args.url.trim_end_matches('/')))
                .basic_auth(write_key(platform), Some(""))
                .json(&json!({"batch": batch}))
                .send()
                .await
                .with_context(|| format!("posting to {}", args.url))?;
            let status = resp.status();
            let body: Json = resp.json().await.unwrap_or(Json::Null);
            anyhow::ensure!(status.is_success(), "ingest answered {status}: {body}");
            let rejected = body
                .get("rejected")
                .and_then(Json::as_array)
                .map_or(0, |r| r.len() as u64);
            sent.posted += n;
            sent.rejected += rejected;
        }
        progress.send_replace(sent.clone());
        let due = started + Duration::from_secs_f64(sent.posted as f64 / args.rate.max(1.0));
        tokio::time::sleep_until(due).await;
    }
    Ok(people)
}

/// How well the latest scores rank the truth.
pub struct Check {
    pub auc: f64,
    pub scored: usize,
    /// Persona → grade → leads.
    pub grades: BTreeMap<&'static str, BTreeMap<String, usize>>,
    pub dormant_flagged: (usize, usize),
}

pub fn check(people: &[(Persona, bool, String)], latest: &HashMap<String, Json>) -> Check {
    let mut pairs = Vec::new();
    let mut grades: BTreeMap<&'static str, BTreeMap<String, usize>> = BTreeMap::new();
    let mut dormant = (0, 0);
    for (persona, will_order, lead) in people {
        let Some(s) = latest.get(lead) else { continue };
        let score = s.get("score").and_then(Json::as_f64).unwrap_or(0.0);
        pairs.push((score, *will_order));
        let grade = s
            .get("grade")
            .and_then(Json::as_str)
            .unwrap_or("?")
            .to_owned();
        *grades
            .entry(persona.as_str())
            .or_default()
            .entry(grade)
            .or_default() += 1;
        if *persona == Persona::DormantWaker {
            dormant.1 += 1;
            if s.get("reactivated").and_then(Json::as_bool) == Some(true) {
                dormant.0 += 1;
            }
        }
    }
    Check {
        auc: leadstream_scorer::train::roc_auc(&pairs),
        scored: pairs.len(),
        grades,
        dormant_flagged: dormant,
    }
}

impl std::fmt::Display for Check {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "ranking check over {} scored people: ROC AUC {:.3} (goal >= 0.90)",
            self.scored, self.auc
        )?;
        for (persona, grades) in &self.grades {
            let mix: Vec<String> = grades.iter().map(|(g, n)| format!("{g} {n}")).collect();
            writeln!(f, "  {persona:<15} {}", mix.join(", "))?;
        }
        write!(
            f,
            "  dormant leads that woke up flagged reactivated: {} of {}",
            self.dormant_flagged.0, self.dormant_flagged.1
        )
    }
}

/// Reads the truth file back.
pub fn read_truth(path: &PathBuf) -> anyhow::Result<Vec<(Persona, bool, String)>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    text.lines()
        .map(|l| {
            let v: Json = serde_json::from_str(l)?;
            let persona = v["persona"]
                .as_str()
                .and_then(Persona::parse)
                .context("truth line without a persona")?;
            Ok((
                persona,
                v["will_order"].as_bool().unwrap_or(false),
                v["lead_id"].as_str().unwrap_or_default().to_owned(),
            ))
        })
        .collect()
}

pub async fn run(args: SimulateArgs) -> anyhow::Result<ExitCode> {
    let (tx, _rx) = tokio::sync::watch::channel(Progress::default());
    let people = run_journeys(&args, tx).await?;
    let events: usize = people.iter().map(|j| j.calls.len()).sum();
    println!(
        "posted {events} events for {} people to {}; truth in {}",
        people.len(),
        args.url,
        args.truth.display()
    );
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(seed: u64) -> SimulateArgs {
        SimulateArgs {
            url: String::new(),
            leads: 200,
            seed,
            rate: 1.0,
            days: 400,
            truth: PathBuf::new(),
        }
    }

    #[test]
    fn journeys_are_reproducible_and_cover_every_persona() {
        let end = 1_795_305_600_000;
        let a = journeys(&args(7), end);
        let b = journeys(&args(7), end);
        assert_eq!(
            a.iter().map(|j| j.calls.clone()).collect::<Vec<_>>(),
            b.iter().map(|j| j.calls.clone()).collect::<Vec<_>>()
        );
        assert_ne!(a[0].calls, journeys(&args(8), end)[0].calls);
        for p in [
            Persona::CasualBrowser,
            Persona::Researcher,
            Persona::HotBuyer,
            Persona::DormantWaker,
            Persona::OwnerUpgrade,
        ] {
            assert!(a.iter().any(|j| j.persona == p), "{p:?}");
        }
        for j in &a {
            assert!(
                j.calls
                    .iter()
                    .all(|c| c.0 <= end && c.0 >= end - 400 * DAY_MS),
                "inside the window"
            );
            assert!(j.calls.windows(2).all(|w| w[0].0 <= w[1].0), "time ordered");
        }
        let hot = a.iter().find(|j| j.persona == Persona::HotBuyer).unwrap();
        let platforms: std::collections::BTreeSet<&str> = hot.calls.iter().map(|c| c.1).collect();
        assert!(
            platforms.len() >= 4,
            "a hot buyer crosses platforms: {platforms:?}"
        );
        assert!(hot.will_order);
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
            leads: 300,
            seed: 11,
            rate: 1.0,
            days: 400,
            truth: PathBuf::new(),
        };
        for j in journeys(&a, 1_795_305_600_000) {
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
