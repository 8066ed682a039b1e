//! Who the simulated people are and what they do: personas, latent intent,
//! journeys as Segment calls.

use super::*;

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
pub(super) struct Rng(pub(super) u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    pub(super) fn below(&mut self, n: u64) -> u64 {
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
    let who = Shopper { intent: z, online };
    let buys = rng.chance(order_probability(z));
    let mut j = JourneyBuilder::new(seed, person, &mut rng);
    let mut t = start_ms;
    let mut intent_shown = None;
    match persona {
        Persona::CasualBrowser | Persona::Researcher | Persona::HotBuyer => {
            t = j.research(&mut rng, t, who, &mut None);
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
            t = j.research(&mut rng, t, who, &mut intent_shown);
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
            t = j.owner(&mut rng, t, who, &mut intent_shown);
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

/// What drives a shopper's sessions: purchase intent and how much of the
/// research happens online.
#[derive(Debug, Clone, Copy)]
struct Shopper {
    intent: f64,
    online: f64,
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
        who: Shopper,
        shown: &mut Option<i64>,
    ) -> i64 {
        let Shopper { intent: z, online } = who;
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
    fn owner(&mut self, rng: &mut Rng, mut t: i64, who: Shopper, shown: &mut Option<i64>) -> i64 {
        let Shopper { intent: z, online } = who;
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
            t = self.research(rng, t, who, shown);
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
