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
    /// least this long (`--grace-minutes`, days x 1440), or it drops
    /// reordered events as late.
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

/// Who a simulated person is: sets the distribution of their intent and the
/// shape of their journey, not whether they buy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Persona {
    CasualBrowser,
    Researcher,
    HotBuyer,
    DormantWaker,
    Owner,
}

impl Persona {
    pub fn as_str(self) -> &'static str {
        match self {
            Persona::CasualBrowser => "casual_browser",
            Persona::Researcher => "researcher",
            Persona::HotBuyer => "hot_buyer",
            Persona::DormantWaker => "dormant_waker",
            Persona::Owner => "owner",
        }
    }

    /// Mean and spread of the latent intent z.
    fn intent(self) -> (f64, f64) {
        match self {
            Persona::CasualBrowser => (-2.5, 0.8),
            Persona::Researcher => (-0.7, 1.0),
            Persona::HotBuyer => (0.9, 0.8),
            Persona::DormantWaker => (-0.3, 1.0),
            Persona::Owner => (-1.3, 1.2),
        }
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
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
    fn chance(&mut self, p: f64) -> bool {
        self.unit() < p
    }
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
    /// Standard normal (Box-Muller).
    fn normal(&mut self) -> f64 {
        let u = self.unit().max(1e-12);
        let v = self.unit();
        (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
    }
    /// Milliseconds uniformly within [lo, hi) days.
    fn days(&mut self, lo: f64, hi: f64) -> i64 {
        ((lo + (hi - lo) * self.unit()) * DAY_MS as f64) as i64
    }
}

fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

/// Probability that a person with latent intent `z` orders.
pub fn order_probability(z: f64) -> f64 {
    sigmoid(1.6 * z - 0.6)
}

/// One simulated person: their Segment calls with simulated times, and the
/// truth the ranking check compares scores with.
#[derive(Debug, Clone)]
pub struct Person {
    pub persona: Persona,
    /// Latent purchase (owners: upgrade) intent.
    pub intent: f64,
    /// When they order, if they do (an Order Placed call at that time).
    pub order_ms: Option<i64>,
    /// Owners: when they first showed upgrade behaviour online
    /// (configurator, price or finance, a test drive); dormant leads: when
    /// they first showed intent after waking. If ever.
    pub intent_shown_ms: Option<i64>,
    /// The lead id the scorer gives this person once every id is linked.
    pub lead_id: String,
    /// Every lead id the scorer may know this person by before all their
    /// ids are linked (one per identifier they use).
    pub lead_ids: Vec<String>,
    pub first_ms: i64,
    pub calls: Vec<(i64, &'static str, Json)>,
}

const MODELS: [&str; 4] = ["x3", "x5", "i4", "ix"];
const CHANNELS: [&str; 5] = ["autohome", "dongchedi", "baidu", "wechat_moments", "douyin"];

/// Builds person `person` (of run `seed`) arriving at `start_ms`.
pub fn person(seed: u64, person: usize, start_ms: i64) -> Person {
    // Each person has their own stream: the same person whatever else runs.
    let mut rng = Rng(seed ^ (person as u64).wrapping_mul(0xa076_1d64_78bd_642f));
    let persona = match rng.below(100) {
        0..=39 => Persona::CasualBrowser,
        40..=64 => Persona::Researcher,
        65..=74 => Persona::HotBuyer,
        75..=87 => Persona::DormantWaker,
        _ => Persona::Owner,
    };
    let (mean, spread) = persona.intent();
    let z = mean + spread * rng.normal();
    // How much of the research happens online: independent of intent.
    let online = 0.8 * rng.normal();
    let buys = rng.chance(order_probability(z));
    let mut j = JourneyBuilder::new(seed, person, &mut rng);
    let mut t = start_ms;
    let mut intent_shown = None;
    match persona {
        Persona::CasualBrowser | Persona::Researcher | Persona::HotBuyer => {
            t = j.research(&mut rng, t, z, online, &mut None);
        }
        Persona::DormantWaker => {
            // An old lead: a look and a brochure form, then months of silence.
            j.page(t, "web", "Model Detail");
            j.form(t + 120_000, "web", "brochure");
            t += rng.days(120.0, 200.0);
            // Waking on the mini-program, logged in with the WeChat phone.
            j.call(
                t - 60_000,
                "mini_program",
                json!({"type": "identify", "traits": {"phone": j.phone}, "context": {}}),
            );
            t = j.research(&mut rng, t, z, online, &mut intent_shown);
        }
        Persona::Owner => {
            let bought = start_ms - rng.days(24.0 * 30.0, 38.0 * 30.0);
            j.call(
                t,
                "server",
                json!({"type": "identify", "userId": j.crm, "traits": {"phone": j.phone, "owned_model_id": "x3",
                    "purchase_date": bought, "union_id": j.union}, "context": {}}),
            );
            t += rng.days(0.5, 5.0);
            t = j.owner(&mut rng, t, z, online, &mut intent_shown);
        }
    }
    let order_ms = buys.then(|| t + rng.days(1.0, 14.0));
    if let Some(at) = order_ms {
        j.order(at);
    }
    // Non-buyers with some intent are often called by the contact centre;
    // some say no.
    if !buys && persona != Persona::CasualBrowser && rng.chance(0.25) {
        let outcome = if rng.chance(0.5) {
            "not_interested"
        } else {
            "no_answer"
        };
        j.call_outcome(t + rng.days(1.0, 10.0), outcome);
    }
    j.finish(persona, z, order_ms, intent_shown)
}

/// Collects one person's calls.
struct JourneyBuilder {
    tag: String,
    web: String,
    mp: String,
    app: String,
    union: String,
    crm: String,
    phone: String,
    model: &'static str,
    channel: &'static str,
    calls: Vec<(i64, &'static str, Json)>,
    identified: bool,
}

impl JourneyBuilder {
    fn new(seed: u64, person: usize, rng: &mut Rng) -> Self {
        let tag = format!("{seed}-{person}");
        Self {
            web: format!("web-{tag}"),
            mp: format!("mp-{tag}"),
            app: format!("app-{tag}"),
            union: format!("union-{tag}"),
            crm: format!("crm-{tag}"),
            phone: format!("138{:08}", (person as u64 * 7919 + seed) % 100_000_000),
            model: *rng.pick(&MODELS),
            channel: *rng.pick(&CHANNELS),
            calls: Vec::new(),
            identified: false,
            tag,
        }
    }

    fn call(&mut self, t: i64, platform: &'static str, mut body: Json) {
        body["messageId"] = json!(format!("sim-{}-{}", self.tag, self.calls.len() + 1));
        body["timestamp"] = json!(t);
        match platform {
            "web" => body["anonymousId"] = json!(self.web),
            "mini_program" => {
                body["anonymousId"] = json!(self.mp);
                body["context"]["wechat"] = json!({"unionId": self.union});
            }
            "app" => {
                body["anonymousId"] = json!(self.app);
                body["context"]["wechat"] = json!({"unionId": self.union});
            }
            _ => {}
        }
        body["context"]["campaign"] = json!({"source": self.channel});
        self.calls.push((t, platform, body));
    }

    fn page(&mut self, t: i64, platform: &'static str, name: &str) {
        let model = self.model;
        self.call(
            t,
            platform,
            json!({"type": "page", "name": name, "properties": {"model_id": model}, "context": {}}),
        );
    }

    fn track(&mut self, t: i64, platform: &'static str, event: &str, props: Json) {
        self.call(
            t,
            platform,
            json!({"type": "track", "event": event, "properties": props, "context": {}}),
        );
    }

    fn form(&mut self, t: i64, platform: &'static str, form: &str) {
        let (model, phone) = (self.model, self.phone.clone());
        self.track(
            t,
            platform,
            "Lead Form Submitted",
            json!({"form_id": form, "model_id": model, "phone": phone}),
        );
    }

    /// The dealer CRM learns who the person is (by phone).
    fn crm_identify(&mut self, t: i64) {
        if !self.identified {
            self.identified = true;
            // The customer scans the dealer's WeChat code: the CRM record
            // carries the union id too.
            let (crm, phone, union) = (self.crm.clone(), self.phone.clone(), self.union.clone());
            self.call(
                t - 60_000,
                "server",
                json!({"type": "identify", "userId": crm, "traits": {"phone": phone, "union_id": union}, "context": {}}),
            );
        }
    }

    fn server_track(&mut self, t: i64, platform: &'static str, event: &str, props: Json) {
        let crm = self.crm.clone();
        self.call(t, platform, json!({"type": "track", "event": event, "userId": crm, "properties": props, "context": {}}));
    }

    /// Sessions of a shopper with intent `z` and online-ness `online`;
    /// returns the time after the last session.
    fn research(
        &mut self,
        rng: &mut Rng,
        mut t: i64,
        z: f64,
        online: f64,
        shown: &mut Option<i64>,
    ) -> i64 {
        let sessions =
            1 + rng.below((2.0 + 2.0 * (z + online).max(-1.0)).max(1.0) as u64 + 1) as usize;
        let mut drive_booked = false;
        for s in 0..sessions {
            let platform = *rng.pick(&["web", "web", "mini_program", "app"]);
            let act = |rng: &mut Rng, bias: f64| {
                let noise = 0.5 * rng.normal();
                rng.chance(sigmoid(z + online + bias + noise))
            };
            let opener = *rng.pick(&["Home", "Article", "Video", "Model Detail"]);
            self.page(t, platform, opener);
            t += rng.days(0.0, 0.01);
            if act(rng, 0.5) {
                self.page(t, platform, "Model Detail");
                t += rng.days(0.0, 0.01);
            }
            if act(rng, -0.3) {
                self.page(t, platform, "Configurator");
                let (model, price) = (self.model, 300_000.0 + 20_000.0 * rng.below(8) as f64);
                self.track(
                    t + 60_000,
                    platform,
                    "Vehicle Configured",
                    json!({"model_id": model, "price": price}),
                );
                shown.get_or_insert(t);
                t += rng.days(0.0, 0.01);
            }
            if act(rng, -0.8) {
                self.page(
                    t,
                    platform,
                    if rng.chance(0.5) { "Price" } else { "Finance" },
                );
                let model = self.model;
                self.track(t + 60_000, platform, "Finance Calculated",
                    json!({"model_id": model, "price": 350000.0, "down_payment": 60000, "term_months": 36}));
                shown.get_or_insert(t);
                t += rng.days(0.0, 0.01);
            }
            if !drive_booked && s + 1 >= sessions / 2 && act(rng, -1.8) {
                drive_booked = true;
                let (model, phone) = (self.model, self.phone.clone());
                self.track(
                    t,
                    platform,
                    "Test Drive Booked",
                    json!({"model_id": model, "dealer_id": "sh-001", "contact_phone": phone}),
                );
                shown.get_or_insert(t);
            }
            if act(rng, -1.5) {
                self.form(
                    t + 120_000,
                    platform,
                    if rng.chance(0.3) { "trade_in" } else { "quote" },
                );
            }
            // Showroom visits show up only once the CRM knows the person.
            if rng.chance(sigmoid(z - 1.0)) {
                self.crm_identify(t + DAY_MS);
                self.server_track(
                    t + DAY_MS,
                    "offline",
                    "Store Visited",
                    json!({"dealer_id": "sh-001", "visit_type": "walk_in"}),
                );
            }
            // More intent, shorter gaps between sessions.
            t += rng.days(1.0, 2.0 + 12.0 * sigmoid(-z));
        }
        t
    }

    /// An owner's sessions in the app: service pages for most, upgrade
    /// shopping as intent allows.
    fn owner(
        &mut self,
        rng: &mut Rng,
        mut t: i64,
        z: f64,
        online: f64,
        shown: &mut Option<i64>,
    ) -> i64 {
        for _ in 0..1 + rng.below(4) {
            self.page(
                t,
                "app",
                if rng.chance(0.7) {
                    "Owner Service"
                } else {
                    "Home"
                },
            );
            if rng.chance(0.4) {
                self.crm_identify(t);
                self.server_track(
                    t + DAY_MS,
                    "offline",
                    "Store Visited",
                    json!({"dealer_id": "sh-001", "visit_type": "service"}),
                );
            }
            t += rng.days(5.0, 40.0);
        }
        if rng.chance(sigmoid(z + online + 0.5)) {
            t = self.research(rng, t, z, online, shown);
        }
        t
    }

    fn order(&mut self, t: i64) {
        self.crm_identify(t);
        let (tag, model) = (self.tag.clone(), self.model);
        self.server_track(t, "server", "Order Placed",
            json!({"order_id": format!("o-{tag}"), "model_id": model, "order_type": "deposit", "amount": 5000.0, "currency": "CNY"}));
    }

    fn call_outcome(&mut self, t: i64, outcome: &str) {
        self.crm_identify(t);
        self.server_track(t, "server", "Call Completed",
            json!({"direction": "outbound", "outcome": outcome, "duration_seconds": 95, "dealer_id": "sh-001"}));
    }

    fn finish(
        mut self,
        persona: Persona,
        intent: f64,
        order_ms: Option<i64>,
        intent_shown_ms: Option<i64>,
    ) -> Person {
        self.calls.sort_by_key(|c| c.0);
        // The smallest identifier names the lead once linked (see scorer::identity).
        let mut ids: Vec<String> = self
            .calls
            .iter()
            .filter_map(|(_, _, b)| b.get("anonymousId").and_then(Json::as_str))
            .map(|a| format!("a:{a}"))
            .collect();
        ids.push(format!("u:{}", self.crm));
        ids.push(format!("w:{}", self.union));
        ids.sort();
        ids.dedup();
        let lead_ids: Vec<String> = ids
            .iter()
            .map(|i| leadstream_scorer::identity::lead_id_of(i))
            .collect();
        let lead_id = lead_ids.first().cloned().unwrap_or_default();
        Person {
            lead_ids,
            persona,
            intent,
            order_ms,
            intent_shown_ms,
            lead_id,
            first_ms: self.calls.first().map_or(0, |c| c.0),
            calls: self.calls,
        }
    }
}

/// `args.leads` people arriving over `args.days` ending at `end_ms`.
pub fn people(args: &SimulateArgs, end_ms: i64) -> Vec<Person> {
    let mut rng = Rng(args.seed);
    let span = args.days.max(1) * DAY_MS;
    (0..args.leads)
        .map(|i| person(args.seed, i, end_ms - span + rng.below(span as u64) as i64))
        .collect()
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
    /// Simulated time of the newest call posted.
    pub sim_ms: i64,
    pub people: u64,
}

/// Posts calls to ingest in Segment batches per source.
pub struct Poster {
    client: reqwest::Client,
    url: String,
    pub progress: Progress,
}

impl Poster {
    pub fn new(url: &str) -> Self {
        Self {
            client: reqwest::Client::new(),
            url: format!("{}/v1/batch", url.trim_end_matches('/')),
            progress: Progress::default(),
        }
    }

    pub async fn post(&mut self, calls: &[(i64, &'static str, Json)]) -> anyhow::Result<()> {
        let mut by_source: BTreeMap<&str, Vec<&Json>> = BTreeMap::new();
        for (t, platform, body) in calls {
            by_source.entry(platform).or_default().push(body);
            self.progress.sim_ms = self.progress.sim_ms.max(*t);
        }
        for (platform, batch) in by_source {
            for chunk in batch.chunks(500) {
                let resp = self
                    .client
                    .post(&self.url)
                    .basic_auth(write_key(platform), Some(""))
                    .json(&json!({"batch": chunk}))
                    .send()
                    .await
                    .with_context(|| format!("posting to {}", self.url))?;
                let status = resp.status();
                let body: Json = resp.json().await.unwrap_or(Json::Null);
                anyhow::ensure!(status.is_success(), "ingest answered {status}: {body}");
                self.progress.posted += chunk.len() as u64;
                self.progress.rejected += body
                    .get("rejected")
                    .and_then(Json::as_array)
                    .map_or(0, |r| r.len() as u64);
            }
        }
        Ok(())
    }
}

/// One line of the truth file.
#[derive(Debug, Clone, PartialEq)]
pub struct Truth {
    pub persona: Persona,
    pub lead_id: String,
    pub lead_ids: Vec<String>,
    pub intent: f64,
    pub first_ms: i64,
    pub order_ms: Option<i64>,
    pub intent_shown_ms: Option<i64>,
}

impl Truth {
    pub fn of(p: &Person) -> Self {
        Self {
            persona: p.persona,
            lead_id: p.lead_id.clone(),
            lead_ids: p.lead_ids.clone(),
            intent: p.intent,
            first_ms: p.first_ms,
            order_ms: p.order_ms,
            intent_shown_ms: p.intent_shown_ms,
        }
    }

    fn to_line(&self) -> String {
        json!({"persona": self.persona.as_str(), "lead_id": self.lead_id, "lead_ids": self.lead_ids, "intent": (self.intent * 1000.0).round() / 1000.0,
               "first_ms": self.first_ms, "order_ms": self.order_ms, "intent_shown_ms": self.intent_shown_ms})
        .to_string()
    }
}

pub fn write_truth(path: &PathBuf, truth: &[Truth]) -> anyhow::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).ok();
    }
    let text: String = truth.iter().map(|t| t.to_line() + "\n").collect();
    std::fs::write(path, text).with_context(|| format!("writing the truth to {}", path.display()))
}

/// Posts `args.leads` people's history ending now, in time order at
/// `args.rate`; writes the truth first. The batch mode of `simulate`.
pub async fn run_history(args: &SimulateArgs) -> anyhow::Result<(Vec<Truth>, i64, Progress)> {
    let end_ms = chrono::Utc::now().timestamp_millis();
    let people = people(args, end_ms);
    let truth: Vec<Truth> = people.iter().map(Truth::of).collect();
    write_truth(&args.truth, &truth)?;
    let mut all: Vec<(i64, &'static str, Json)> = people
        .into_iter()
        .flat_map(|p| p.calls)
        .filter(|c| c.0 <= end_ms)
        .collect();
    all.sort_by_key(|c| c.0);
    let mut poster = Poster::new(&args.url);
    let chunk = ((args.rate / 5.0).ceil() as usize).clamp(1, 500);
    let started = tokio::time::Instant::now();
    for window in all.chunks(chunk) {
        poster.post(window).await?;
        let due =
            started + Duration::from_secs_f64(poster.progress.posted as f64 / args.rate.max(1.0));
        tokio::time::sleep_until(due).await;
    }
    Ok((truth, end_ms, poster.progress))
}

/// The continuous mode (quickstart): people keep arriving in simulated time
/// so that about `rate` events a second are posted, each call when the
/// clock passes it, until `stop`. At most `cap` people when given.
pub struct Live {
    pub seed: u64,
    pub rate: f64,
    pub cap: Option<usize>,
    pub truth: Arc<Mutex<Vec<Truth>>>,
}

impl Live {
    pub async fn run(
        &self,
        url: &str,
        clock: Arc<dyn Clock>,
        progress: tokio::sync::watch::Sender<Progress>,
        mut stop: tokio::sync::watch::Receiver<bool>,
    ) -> anyhow::Result<()> {
        const TICK: Duration = Duration::from_millis(200);
        let mut poster = Poster::new(url);
        let mut pending: BinaryHeap<Reverse<(i64, u64)>> = BinaryHeap::new();
        let mut bodies: HashMap<u64, (&'static str, Json)> = HashMap::new();
        let mut seq = 0u64;
        let mut budget = 0.0f64;
        let mut mean_calls = 12.0f64;
        let mut last = clock.now_ms();
        let mut next_person = 0usize;
        let mut rng = Rng(self.seed ^ 0x5eed);
        let mut ticker = tokio::time::interval(TICK);
        loop {
            tokio::select! {
                _ = ticker.tick() => {}
                _ = stop.changed() => {}
            }
            if *stop.borrow() {
                return Ok(());
            }
            let now = clock.now_ms();
            // Arrivals: the events they will post, over their journeys,
            // match the rate once the first journeys have run their course.
            budget += self.rate * TICK.as_secs_f64();
            while budget > 0.0 && self.cap.is_none_or(|c| next_person < c) {
                let start = last + rng.below((now - last).max(1) as u64) as i64;
                let p = person(self.seed, next_person, start);
                next_person += 1;
                mean_calls = 0.98 * mean_calls + 0.02 * p.calls.len() as f64;
                budget -= mean_calls;
                self.truth.lock().expect("truth lock").push(Truth::of(&p));
                for (t, platform, body) in p.calls {
                    seq += 1;
                    bodies.insert(seq, (platform, body));
                    pending.push(Reverse((t, seq)));
                }
            }
            budget = budget.min(self.rate);
            last = now;
            let mut due = Vec::new();
            while let Some(Reverse((t, id))) = pending.peek().copied()
                && t <= now
            {
                pending.pop();
                if let Some((platform, body)) = bodies.remove(&id) {
                    due.push((t, platform, body));
                }
            }
            poster.post(&due).await?;
            poster.progress.sim_ms = now;
            poster.progress.people = next_person as u64;
            progress.send_replace(poster.progress.clone());
        }
    }
}
/// How well the scores rank one group of leads.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupCheck {
    pub name: &'static str,
    pub leads: usize,
    pub buyers: usize,
    /// ROC AUC of the blended score, the rules alone and the model alone.
    pub auc: [f64; 3],
    /// Share of buyers in the top 10 % by each of those.
    pub top_decile: [f64; 3],
}

/// How well live scores rank the truth at one instant: of the people seen
/// by then who had not ordered, who orders within [`HORIZON_MS`].
#[derive(Debug, Clone, PartialEq)]
pub struct Check {
    pub at_ms: i64,
    pub model: bool,
    pub groups: Vec<GroupCheck>,
    /// Owners graded low, (low, all), without and with upgrade behaviour.
    pub owners_low: [(usize, usize); 2],
    /// Mean score of owners without and with upgrade behaviour.
    pub owners_mean: [f64; 2],
    /// Mean score of owners who never buy again, and (count, mean) of
    /// those who go on to buy (at any time after the check).
    pub owners_buying: (f64, usize, f64),
    /// Dormant leads flagged reactivated, of those that woke with intent
    /// within the flag's life.
    pub reactivated: (usize, usize),
}

fn top_decile(pairs: &[(f64, bool)]) -> f64 {
    let mut sorted = pairs.to_vec();
    sorted.sort_by(|a, b| b.0.total_cmp(&a.0));
    let k = sorted.len().div_ceil(10).max(1);
    let hits = sorted.iter().take(k).filter(|p| p.1).count();
    hits as f64 / k.min(sorted.len()).max(1) as f64
}

pub fn check(truth: &[Truth], latest: &HashMap<String, Json>, at_ms: i64, model: bool) -> Check {
    let num = |s: &Json, k: &str| s.get(k).and_then(Json::as_f64).unwrap_or(0.0);
    let mut rows: Vec<(&'static str, [f64; 3], bool)> = Vec::new();
    let mut owners_low = [(0, 0); 2];
    let mut owners_sum = [0.0; 2];
    let mut owners_by_outcome = [(0usize, 0.0f64); 2];
    let mut reactivated = (0, 0);
    for t in truth {
        if t.first_ms > at_ms || t.order_ms.is_some_and(|o| o <= at_ms) {
            continue;
        }
        // Before all their ids are linked a person may be several leads;
        // sales sees the best of them.
        let Some(s) = t
            .lead_ids
            .iter()
            .filter_map(|l| latest.get(l))
            .max_by(|a, b| num(a, "score").total_cmp(&num(b, "score")))
        else {
            continue;
        };
        let bought = t.order_ms.is_some_and(|o| o <= at_ms + HORIZON_MS);
        let group = match s.get("stage").and_then(Json::as_str) {
            Some("new") => "new",
            Some("dormant") => "dormant",
            Some("customer" | "retained") => "owners",
            _ => "nurture",
        };
        let scores = [
            num(s, "score"),
            num(s, "rule_score"),
            100.0 * num(s, "probability"),
        ];
        rows.push((group, scores, bought));
        if t.persona == Persona::Owner {
            let shopping = usize::from(t.intent_shown_ms.is_some_and(|u| u <= at_ms));
            owners_low[shopping].1 += 1;
            owners_sum[shopping] += scores[0];
            let buys = usize::from(t.order_ms.is_some());
            owners_by_outcome[buys].0 += 1;
            owners_by_outcome[buys].1 += scores[0];
            if s.get("grade").and_then(Json::as_str) == Some("low") {
                owners_low[shopping].0 += 1;
            }
        }
        // Woken with intent within the flag's life (and a day for the
        // pipeline to catch up): the flag should be up.
        if t.persona == Persona::DormantWaker
            && t.intent_shown_ms
                .is_some_and(|w| w > at_ms - FLAG_MS && w <= at_ms - DAY_MS)
        {
            reactivated.1 += 1;
            if s.get("reactivated").and_then(Json::as_bool) == Some(true) {
                reactivated.0 += 1;
            }
        }
    }
    let groups = ["all", "new", "dormant", "owners", "nurture"]
        .into_iter()
        .map(|name| {
            let of: Vec<&(&str, [f64; 3], bool)> = rows
                .iter()
                .filter(|r| name == "all" || r.0 == name)
                .collect();
            let pairs = |i: usize| of.iter().map(|r| (r.1[i], r.2)).collect::<Vec<_>>();
            GroupCheck {
                name,
                leads: of.len(),
                buyers: of.iter().filter(|r| r.2).count(),
                auc: [0, 1, 2].map(|i| leadstream_scorer::train::roc_auc(&pairs(i))),
                top_decile: [0, 1, 2].map(|i| top_decile(&pairs(i))),
            }
        })
        .collect();
    let mean = |i: usize| owners_sum[i] / owners_low[i].1.max(1) as f64;
    let outcome_mean = |i: usize| owners_by_outcome[i].1 / owners_by_outcome[i].0.max(1) as f64;
    Check {
        at_ms,
        model,
        groups,
        owners_low,
        owners_mean: [mean(0), mean(1)],
        owners_buying: (outcome_mean(0), owners_by_outcome[1].0, outcome_mean(1)),
        reactivated,
    }
}

impl std::fmt::Display for Check {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let all = &self.groups[0];
        let when = chrono::DateTime::from_timestamp_millis(self.at_ms)
            .map_or_else(String::new, |d| d.format("%Y-%m-%d").to_string());
        writeln!(
            f,
            "ranking check over {} scored people at {when} (simulated): who orders within 90 days ({} do)",
            all.leads, all.buyers
        )?;
        writeln!(
            f,
            "  {:<8} {:>6} {:>6}   ROC AUC score / rules / model   top-10% precision score / rules / model   base rate",
            "group", "leads", "buyers"
        )?;
        let model = |x: f64| {
            if self.model {
                format!("{x:.3}")
            } else {
                "-".into()
            }
        };
        for g in &self.groups {
            if g.leads == 0 {
                continue;
            }
            writeln!(
                f,
                "  {:<8} {:>6} {:>6}   {:.3} / {:.3} / {:<5}             {:.2} / {:.2} / {:<5}                      {:.3}",
                g.name,
                g.leads,
                g.buyers,
                g.auc[0],
                g.auc[1],
                model(g.auc[2]),
                g.top_decile[0],
                g.top_decile[1],
                model(g.top_decile[2]),
                g.buyers as f64 / g.leads as f64
            )?;
        }
        let [(lo0, n0), (lo1, n1)] = self.owners_low;
        writeln!(
            f,
            "  owners without upgrade behaviour graded low: {lo0} of {n0} (mean score {:.1}); with it: {lo1} of {n1} low (mean score {:.1})",
            self.owners_mean[0], self.owners_mean[1]
        )?;
        writeln!(
            f,
            "  owners who go on to buy again ({}): mean score {:.1}; the rest {:.1}",
            self.owners_buying.1, self.owners_buying.2, self.owners_buying.0
        )?;
        write!(
            f,
            "  dormant leads that woke with intent in the last 14 days flagged reactivated: {} of {}",
            self.reactivated.0, self.reactivated.1
        )
    }
}

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
