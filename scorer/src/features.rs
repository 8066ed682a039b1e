//! One lead's state: windows, decayed intent per signal, recency, sessions,
//! models, price, platforms, first touch, purchase. Updated in O(1) per
//! event from event time only; memory bounded per lead.

use crate::{
    DAY_MS,
    context::{CATEGORIES, Categories},
    event::{LeadEvent, Platform, Signal},
    window::{Span, Windows},
};

const SIGNALS: usize = Signal::ALL.len();
/// A new session starts after this much inactivity.
pub const SESSION_GAP_MS: i64 = 30 * 60_000;
/// How soon after waking high intent must show to count as reactivation.
pub const WAKE_WINDOW_MS: i64 = 30 * DAY_MS;
/// Distinct models remembered per lead (hashes); more are counted, not kept.
const MODELS: usize = 8;

/// An instant that may not have happened yet, in 8 bytes instead of the
/// 16 of `Option<i64>` (a lead keeps five of them).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct MaybeMs(i64);

impl MaybeMs {
    pub const NONE: Self = Self(i64::MIN);

    pub fn get(self) -> Option<i64> {
        (self != Self::NONE).then_some(self.0)
    }
}

impl From<Option<i64>> for MaybeMs {
    /// `Some(i64::MIN)` (before the year −292 million) reads back as none.
    fn from(v: Option<i64>) -> Self {
        v.map_or(Self::NONE, Self)
    }
}

impl std::fmt::Debug for MaybeMs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.get().fmt(f)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct LeadState {
    pub windows: Windows,
    /// Per-signal intent with exponential decay, valid as of `decayed_at_ms`.
    pub decayed: [f32; SIGNALS],
    pub decayed_at_ms: i64,
    pub first_seen_ms: i64,
    /// Newest event time seen (stream order may differ from event order).
    pub last_event_ms: i64,
    pub last_high_intent_ms: MaybeMs,
    /// First event after the lead's last dormant gap.
    pub woke_at_ms: MaybeMs,
    /// When the lead last came back from dormancy with high intent.
    pub reactivated_at_ms: MaybeMs,
    pub events: u32,
    pub sessions: u16,
    pub(crate) models: [u32; MODELS],
    pub distinct_models: u8,
    pub max_price: f32,
    /// Highest page value seen (analytics page value of product pages).
    pub max_page_value: f32,
    /// Total time on pages, seconds.
    pub duration_s: f32,
    /// Of which on model, configurator and price pages.
    pub model_page_s: f32,
    /// Bit per platform (app, mini_program, web, server, offline).
    pub platforms: u8,
    /// Platform of the earliest event (by event time) that named one.
    pub first_platform: Option<Platform>,
    pub first_channel: Option<Box<str>>,
    pub test_drive_booked: bool,
    pub lead_form_submitted: bool,
    pub last_purchase_ms: MaybeMs,
    /// Newest call outcome that said the lead is lost (not interested,
    /// bought elsewhere); intent after it wins the lead back.
    pub last_lost_ms: MaybeMs,
    /// Channel, campaign, form, call outcome, device and the like.
    pub categories: Categories,
}

/// What a model sees of a lead at one instant: [`FEATURE_NAMES`] in order,
/// and the categorical slots ([`crate::context::CATEGORY_SLOTS`]) as hashes.
#[derive(Debug, Clone, PartialEq)]
pub struct FeatureRow {
    pub numeric: Vec<f32>,
    pub categories: [u32; CATEGORIES],
}

impl LeadState {
    pub fn new(first_seen_ms: i64) -> Self {
        Self {
            windows: Windows::default(),
            decayed: [0.0; SIGNALS],
            decayed_at_ms: first_seen_ms,
            first_seen_ms,
            last_event_ms: first_seen_ms,
            last_high_intent_ms: MaybeMs::NONE,
            woke_at_ms: MaybeMs::NONE,
            reactivated_at_ms: MaybeMs::NONE,
            events: 0,
            sessions: 0,
            models: [0; MODELS],
            distinct_models: 0,
            max_price: 0.0,
            max_page_value: 0.0,
            duration_s: 0.0,
            model_page_s: 0.0,
            platforms: 0,
            first_platform: None,
            first_channel: None,
            test_drive_booked: false,
            lead_form_submitted: false,
            last_purchase_ms: MaybeMs::NONE,
            last_lost_ms: MaybeMs::NONE,
            categories: Categories::default(),
        }
    }

    /// Decay factor for `dt` at `half_life_ms`.
    fn decay(dt_ms: i64, half_life_ms: i64) -> f32 {
        if dt_ms <= 0 {
            1.0
        } else {
            0.5f32.powf(dt_ms as f32 / half_life_ms as f32)
        }
    }

    /// Decayed intent of each signal at `now_ms`.
    pub fn intent_at(&self, now_ms: i64, half_life_ms: i64) -> [f32; SIGNALS] {
        let f = Self::decay(now_ms - self.decayed_at_ms, half_life_ms);
        self.decayed.map(|d| d * f)
    }

    /// Applies one event. `dormant_after_ms`: a gap this long before a
    /// high-intent event marks the lead reactivated.
    pub fn apply(&mut self, e: &LeadEvent, half_life_ms: i64, dormant_after_ms: i64) {
        let ts = e.ts_ms;
        let previous_activity = self.last_event_ms;
        let is_first = self.events == 0;
        let earliest = is_first || ts < self.first_seen_ms;
        self.events = self.events.saturating_add(1);
        if ts < self.first_seen_ms {
            self.first_seen_ms = ts;
        }
        if is_first || ts - previous_activity > SESSION_GAP_MS {
            self.sessions = self.sessions.saturating_add(1);
        }
        // Decay moves forward only; a late event adds its weight already
        // decayed to the current reference time.
        if ts > self.decayed_at_ms {
            let f = Self::decay(ts - self.decayed_at_ms, half_life_ms);
            for d in &mut self.decayed {
                *d *= f;
            }
            self.decayed_at_ms = ts;
        }
        let weight = Self::decay(self.decayed_at_ms - ts, half_life_ms);
        let mut high_intent = false;
        for s in &e.signals {
            self.windows.add(*s, ts);
            self.decayed[s.index()] += weight;
            high_intent |= s.is_high_intent();
            match s {
                Signal::TestDrive => self.test_drive_booked = true,
                Signal::LeadForm => self.lead_form_submitted = true,
                _ => {}
            }
        }
        if !is_first && ts - previous_activity >= dormant_after_ms {
            self.woke_at_ms = MaybeMs::from(Some(ts));
        }
        if high_intent {
            // High intent within a month of waking from dormancy.
            if self
                .woke_at_ms
                .get()
                .is_some_and(|w| ts >= w && ts - w <= WAKE_WINDOW_MS)
            {
                self.reactivated_at_ms = MaybeMs::from(Some(ts));
            }
            self.last_high_intent_ms = MaybeMs::from(Some(
                self.last_high_intent_ms.get().map_or(ts, |h| h.max(ts)),
            ));
        }
        if ts > self.last_event_ms {
            self.last_event_ms = ts;
        }
        if let Some(m) = &e.model_id {
            self.see_model(m);
        }
        if let Some(p) = e.price {
            self.max_price = self.max_price.max(p as f32);
        }
        if let Some(v) = e.page_value {
            self.max_page_value = self.max_page_value.max(v as f32);
        }
        if let Some(d) = e.duration_ms {
            let s = d.max(0) as f32 / 1000.0;
            self.duration_s += s;
            if e.signals.iter().any(|s| {
                matches!(
                    s,
                    Signal::ModelDetail | Signal::Configurator | Signal::PriceFinance
                )
            }) {
                self.model_page_s += s;
            }
        }
        self.categories.observe(&e.categories, ts);
        if let Some(p) = e.platform {
            self.platforms |= 1 << (p as u8);
            // A late event older than everything seen is the real first touch.
            if earliest || self.first_platform.is_none() {
                self.first_platform = Some(p);
            }
        }
        if let Some(c) = e.channel.as_deref()
            && (earliest || self.first_channel.is_none())
        {
            self.first_channel = Some(c.into());
        }
        if e.order {
            self.last_purchase_ms =
                MaybeMs::from(Some(self.last_purchase_ms.get().map_or(ts, |p| p.max(ts))));
        }
        if e.lost {
            self.last_lost_ms =
                MaybeMs::from(Some(self.last_lost_ms.get().map_or(ts, |l| l.max(ts))));
        }
        if let Some(p) = e.purchase_ms {
            self.last_purchase_ms =
                MaybeMs::from(Some(self.last_purchase_ms.get().map_or(p, |q| q.max(p))));
        }
    }

    /// Folds the state of a lead that was stitched into this one: counts
    /// add up, extremes take the extreme, flags OR, decayed intent is brought
    /// to the later reference time before adding.
    pub fn merge(&mut self, other: &LeadState, half_life_ms: i64, dormant_after_ms: i64) {
        if other.events == 0 {
            return;
        }
        // Two histories with a dormant gap between them (an old web lead
        // and a new mini-program session of the same person): the later one
        // woke the lead, and high intent there is a reactivation.
        let (earlier, later) = if self.first_seen_ms <= other.first_seen_ms {
            (&*self, other)
        } else {
            (other, &*self)
        };
        let woke = (self.events > 0
            && earlier.last_event_ms + dormant_after_ms <= later.first_seen_ms)
            .then_some(later.first_seen_ms);
        // An id that joins during the other's activity (a log-in, the app
        // opened under the same union id) continues that session rather
        // than starting one: one stream would have counted one session.
        // Exact when the later id's first session starts within the gap of
        // the earlier id's newest activity; an estimate otherwise.
        let continues = self.events > 0
            && later.first_seen_ms <= earlier.last_event_ms.saturating_add(SESSION_GAP_MS);
        let reactivated = woke.and_then(|w| {
            later
                .last_high_intent_ms
                .get()
                .filter(|h| *h >= w && *h - w <= WAKE_WINDOW_MS)
        });
        self.windows.merge(&other.windows);
        let at = self.decayed_at_ms.max(other.decayed_at_ms);
        let mine = self.intent_at(at, half_life_ms);
        let theirs = other.intent_at(at, half_life_ms);
        for (d, (a, b)) in self.decayed.iter_mut().zip(mine.iter().zip(&theirs)) {
            *d = a + b;
        }
        self.decayed_at_ms = at;
        if other.first_seen_ms < self.first_seen_ms || self.events == 0 {
            self.first_channel = other.first_channel.clone().or(self.first_channel.take());
            self.first_platform = other.first_platform.or(self.first_platform);
        } else {
            self.first_platform = self.first_platform.or(other.first_platform);
        }
        self.first_seen_ms = self.first_seen_ms.min(other.first_seen_ms);
        self.last_event_ms = self.last_event_ms.max(other.last_event_ms);
        let later = |a: Option<i64>, b: Option<i64>| a.max(b);
        self.last_high_intent_ms = MaybeMs::from(later(
            self.last_high_intent_ms.get(),
            other.last_high_intent_ms.get(),
        ));
        self.woke_at_ms = MaybeMs::from(later(
            later(self.woke_at_ms.get(), other.woke_at_ms.get()),
            woke,
        ));
        self.reactivated_at_ms = MaybeMs::from(later(
            later(self.reactivated_at_ms.get(), other.reactivated_at_ms.get()),
            reactivated,
        ));
        self.last_purchase_ms = MaybeMs::from(later(
            self.last_purchase_ms.get(),
            other.last_purchase_ms.get(),
        ));
        self.last_lost_ms = MaybeMs::from(later(self.last_lost_ms.get(), other.last_lost_ms.get()));
        self.events = self.events.saturating_add(other.events);
        self.sessions = self
            .sessions
            .saturating_add(other.sessions)
            .saturating_sub(u16::from(continues));
        let before = self.models.iter().filter(|m| **m != 0).count() as u8;
        let overflow_self = self.distinct_models.saturating_sub(before);
        let overflow_other = other
            .distinct_models
            .saturating_sub(other.models.iter().filter(|m| **m != 0).count() as u8);
        for &h in other.models.iter().filter(|m| **m != 0) {
            if self.models.contains(&h) {
                continue;
            }
            if let Some(slot) = self.models.iter_mut().find(|m| **m == 0) {
                *slot = h;
            } else {
                self.distinct_models = self.distinct_models.saturating_add(1);
            }
        }
        let kept = self.models.iter().filter(|m| **m != 0).count() as u8;
        // Models past the remembered few may overlap; count them once each side.
        self.distinct_models = self.distinct_models.max(
            kept.saturating_add(overflow_self)
                .saturating_add(overflow_other),
        );
        self.max_price = self.max_price.max(other.max_price);
        self.max_page_value = self.max_page_value.max(other.max_page_value);
        self.duration_s += other.duration_s;
        self.model_page_s += other.model_page_s;
        self.categories.merge(&other.categories);
        self.platforms |= other.platforms;
        self.test_drive_booked |= other.test_drive_booked;
        self.lead_form_submitted |= other.lead_form_submitted;
    }

    fn see_model(&mut self, model: &str) {
        // Stable across processes, so replays give the same state.
        let h = crate::context::hash(model);
        if self.models.contains(&h) {
            return;
        }
        if let Some(slot) = self.models.iter_mut().find(|m| **m == 0) {
            *slot = h;
        }
        self.distinct_models = self.distinct_models.saturating_add(1);
    }

    pub fn platform_count(&self) -> u32 {
        self.platforms.count_ones()
    }

    /// The platforms the lead used, in [`Platform::ALL`] order.
    pub fn platforms_used(&self) -> impl Iterator<Item = Platform> + '_ {
        Platform::ALL
            .into_iter()
            .filter(|p| self.platforms & (1 << (*p as u8)) != 0)
    }

    /// Bytes this state occupies (inline plus heap), for the memory budget.
    pub fn bytes(&self) -> usize {
        std::mem::size_of::<Self>() + self.first_channel.as_ref().map_or(0, |c| c.len())
    }

    /// The model's feature vector at `now_ms`, in [`FEATURE_NAMES`] order.
    pub fn features(&self, now_ms: i64, half_life_ms: i64) -> Vec<f32> {
        let mut f = Vec::with_capacity(FEATURE_NAMES.len());
        for s in [
            Signal::PageView,
            Signal::ModelDetail,
            Signal::Configurator,
            Signal::PriceFinance,
            Signal::Engagement,
        ] {
            // Counts are heavy-tailed (a session can hold hundreds of page
            // views); logs keep a linear model from being dominated by them.
            for span in [Span::Day, Span::Week, Span::Month] {
                f.push((self.windows.count(s, span, now_ms) as f32).ln_1p());
            }
        }
        let intent = self.intent_at(now_ms, half_life_ms);
        for s in Signal::ALL {
            f.push(intent[s.index()]);
        }
        let days = |ms: i64| (ms.max(0) as f32) / DAY_MS as f32;
        f.push(days(now_ms - self.last_event_ms));
        f.push(days(now_ms - self.first_seen_ms));
        f.push(f32::from(self.sessions));
        f.push(f32::from(self.distinct_models));
        f.push(self.max_price / 100_000.0);
        f.push(self.platform_count() as f32);
        f.push(f32::from(u8::from(self.test_drive_booked)));
        f.push(f32::from(u8::from(self.lead_form_submitted)));
        f.push(f32::from(u8::from(self.last_purchase_ms.get().is_some())));
        f.push(self.max_page_value.ln_1p());
        f.push((1.0 + self.duration_s / 60.0).ln());
        f.push((1.0 + self.model_page_s / 60.0).ln());
        f.push((self.events as f32).ln_1p());
        // Weekday of the moment scored (UTC; 1970-01-01 was a Thursday, 0
        // is Monday). Its month is a category (see the context slots).
        f.push((now_ms.div_euclid(DAY_MS) + 3).rem_euclid(7) as f32);
        f
    }

    /// [`Self::features`] with the categorical context.
    pub fn feature_row(&self, now_ms: i64, half_life_ms: i64) -> FeatureRow {
        FeatureRow {
            numeric: self.features(now_ms, half_life_ms),
            categories: self.categories.row(
                self.first_channel.as_deref(),
                self.first_platform.map(Platform::as_str),
                month_of_day(now_ms.div_euclid(DAY_MS)),
            ),
        }
    }
}

/// Month (1–12) of a day counted from 1970-01-01 (civil-from-days).
fn month_of_day(days: i64) -> u32 {
    let z = days + 719_468;
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    (if mp < 10 { mp + 3 } else { mp - 9 }) as u32
}

/// Names of [`LeadState::features`], for model files and reports.
pub const FEATURE_NAMES: [&str; 37] = [
    "page_views_24h",
    "page_views_7d",
    "page_views_30d",
    "model_detail_24h",
    "model_detail_7d",
    "model_detail_30d",
    "configurator_24h",
    "configurator_7d",
    "configurator_30d",
    "price_finance_24h",
    "price_finance_7d",
    "price_finance_30d",
    "engagement_24h",
    "engagement_7d",
    "engagement_30d",
    "intent_page_views",
    "intent_model_detail",
    "intent_configurator",
    "intent_price_finance",
    "intent_test_drive",
    "intent_lead_form",
    "intent_store_visit",
    "intent_engagement",
    "days_since_last_event",
    "days_since_first_seen",
    "sessions",
    "distinct_models",
    "max_price_100k",
    "platforms",
    "test_drive_booked",
    "lead_form_submitted",
    "prior_purchase",
    "log_page_value",
    "log_minutes_on_pages",
    "log_minutes_model_pages",
    "log_events",
    "weekday",
];

#[cfg(test)]
mod tests {
    use super::*;

    const T0: i64 = 1_795_305_600_000;
    const HL: i64 = 7 * DAY_MS;

    fn ev(ts: i64, signals: &[Signal]) -> LeadEvent {
        LeadEvent {
            message_id: String::new(),
            event: String::new(),
            ts_ms: ts,
            platform: Some(Platform::Web),
            signals: signals.to_vec(),
            model_id: Some("x5".into()),
            price: None,
            channel: Some("autohome".into()),
            session_id: None,
            is_bot: false,
            order: false,
            lost: false,
            purchase_ms: None,
            duration_ms: None,
            page_value: None,
            categories: [0; crate::context::CATEGORIES],
        }
    }

    #[test]
    fn merging_two_leads_equals_one_lead_that_saw_both_streams() {
        let web = [
            ev(T0, &[Signal::PageView]),
            ev(T0 + DAY_MS, &[Signal::Configurator]),
        ];
        let mut app = [
            ev(T0 + 3 * DAY_MS, &[Signal::TestDrive]),
            ev(T0 + 4 * DAY_MS, &[Signal::PriceFinance]),
        ];
        app[0].platform = Some(Platform::App);
        app[0].model_id = Some("i4".into());
        app[0].channel = Some("wechat".into());
        let apply_all = |events: &[&LeadEvent]| {
            let mut s = LeadState::new(events[0].ts_ms);
            for e in events {
                s.apply(e, HL, 90 * DAY_MS);
            }
            s
        };
        let mut a = apply_all(&web.iter().collect::<Vec<_>>());
        let b = apply_all(&app.iter().collect::<Vec<_>>());
        let both = apply_all(&web.iter().chain(&app).collect::<Vec<_>>());
        a.merge(&b, HL, 90 * DAY_MS);
        let now = T0 + 5 * DAY_MS;
        for (x, y) in a.features(now, HL).iter().zip(both.features(now, HL)) {
            assert!((x - y).abs() < 1e-4, "{x} vs {y}");
        }
        assert_eq!(
            (a.events, a.platform_count(), a.first_channel.as_deref()),
            (4, 2, Some("autohome"))
        );
        assert_eq!(a.first_platform, both.first_platform);
        let mut b_into_later = b.clone();
        b_into_later.merge(&apply_all(&web.iter().collect::<Vec<_>>()), HL, 90 * DAY_MS);
        assert_eq!(
            b_into_later.first_platform, both.first_platform,
            "the older history's platform wins, whichever side absorbs"
        );
        let mut empty = LeadState::new(now);
        empty.merge(&LeadState::new(T0), HL, 90 * DAY_MS);
        assert_eq!(
            empty,
            LeadState::new(now),
            "merging nothing changes nothing"
        );
    }

    #[test]
    fn merging_an_old_lead_into_a_new_high_intent_one_is_a_reactivation() {
        let mut old = LeadState::new(T0);
        old.apply(&ev(T0, &[Signal::LeadForm]), HL, 90 * DAY_MS);
        let wake = T0 + 150 * DAY_MS;
        let mut new = LeadState::new(wake);
        new.apply(&ev(wake, &[Signal::Configurator]), HL, 90 * DAY_MS);
        assert_eq!(
            new.reactivated_at_ms.get(),
            None,
            "alone, the new id has no history"
        );
        new.merge(&old, HL, 90 * DAY_MS);
        assert_eq!(
            (new.woke_at_ms.get(), new.reactivated_at_ms.get()),
            (Some(wake), Some(wake))
        );
    }

    #[test]
    fn intent_halves_every_half_life() {
        let mut s = LeadState::new(T0);
        s.apply(&ev(T0, &[Signal::TestDrive]), HL, 90 * DAY_MS);
        let now = s.intent_at(T0, HL)[Signal::TestDrive.index()];
        let later = s.intent_at(T0 + HL, HL)[Signal::TestDrive.index()];
        assert!(
            (now - 1.0).abs() < 1e-6 && (later - 0.5).abs() < 1e-6,
            "{now} {later}"
        );
    }

    #[test]
    fn a_late_event_counts_as_already_decayed() {
        let mut s = LeadState::new(T0);
        s.apply(&ev(T0 + HL, &[Signal::Configurator]), HL, 90 * DAY_MS);
        s.apply(&ev(T0, &[Signal::Configurator]), HL, 90 * DAY_MS);
        let v = s.intent_at(T0 + HL, HL)[Signal::Configurator.index()];
        assert!((v - 1.5).abs() < 1e-5, "{v}");
        assert_eq!(s.last_event_ms, T0 + HL);
    }

    #[test]
    fn sessions_models_platforms_and_first_touch() {
        let mut s = LeadState::new(T0);
        s.apply(&ev(T0, &[Signal::PageView]), HL, 90 * DAY_MS);
        s.apply(&ev(T0 + 60_000, &[Signal::PageView]), HL, 90 * DAY_MS);
        let mut app = ev(T0 + 2 * 3_600_000, &[Signal::PageView]);
        app.platform = Some(Platform::App);
        app.model_id = Some("i4".into());
        app.channel = Some("wechat".into());
        s.apply(&app, HL, 90 * DAY_MS);
        assert_eq!(
            (s.sessions, s.distinct_models, s.platform_count()),
            (2, 2, 2)
        );
        assert_eq!(s.first_channel.as_deref(), Some("autohome"));
        assert_eq!(s.first_platform, Some(Platform::Web));
        // A mini-program visit from before the web one, delivered late, is
        // the first touch.
        let mut early = ev(T0 - 86_400_000, &[Signal::PageView]);
        early.platform = Some(Platform::MiniProgram);
        early.channel = Some("wechat_ad".into());
        s.apply(&early, HL, 90 * DAY_MS);
        assert_eq!(s.first_platform, Some(Platform::MiniProgram));
        assert_eq!(s.first_channel.as_deref(), Some("wechat_ad"));
        let mut no_platform = ev(T0 - 2 * 86_400_000, &[Signal::PageView]);
        no_platform.platform = None;
        no_platform.channel = None;
        s.apply(&no_platform, HL, 90 * DAY_MS);
        assert_eq!(
            (s.first_platform, s.first_channel.as_deref()),
            (Some(Platform::MiniProgram), Some("wechat_ad")),
            "an event without a platform or channel leaves them"
        );
        assert_eq!(
            s.features(T0 + 3 * 3_600_000, HL).len(),
            FEATURE_NAMES.len()
        );
    }

    #[test]
    fn high_intent_after_a_dormant_gap_reactivates() {
        let mut s = LeadState::new(T0);
        s.apply(&ev(T0, &[Signal::LeadForm]), HL, 90 * DAY_MS);
        s.apply(&ev(T0 + 100 * DAY_MS, &[Signal::PageView]), HL, 90 * DAY_MS);
        assert_eq!(
            s.reactivated_at_ms.get(),
            None,
            "browsing alone does not reactivate"
        );
        s.apply(
            &ev(T0 + 101 * DAY_MS, &[Signal::Configurator]),
            HL,
            90 * DAY_MS,
        );
        assert_eq!(
            s.reactivated_at_ms.get(),
            Some(T0 + 101 * DAY_MS),
            "woke up, then high intent"
        );
        let mut t = LeadState::new(T0);
        t.apply(&ev(T0, &[Signal::LeadForm]), HL, 90 * DAY_MS);
        t.apply(
            &ev(T0 + 60 * DAY_MS, &[Signal::Configurator]),
            HL,
            90 * DAY_MS,
        );
        assert_eq!(
            t.reactivated_at_ms.get(),
            None,
            "60 days quiet is not dormant"
        );
        t.apply(&ev(T0 + 200 * DAY_MS, &[Signal::PageView]), HL, 90 * DAY_MS);
        t.apply(
            &ev(T0 + 240 * DAY_MS, &[Signal::TestDrive]),
            HL,
            90 * DAY_MS,
        );
        assert_eq!(t.reactivated_at_ms.get(), None, "too long after waking");
    }

    #[test]
    fn state_stays_within_a_kilobyte() {
        let mut s = LeadState::new(T0);
        for i in 0..10_000 {
            let mut e = ev(T0 + i * 60_000, &[Signal::PageView, Signal::Configurator]);
            e.model_id = Some(format!("model-{}", i % 40));
            s.apply(&e, HL, 90 * DAY_MS);
        }
        assert!(s.bytes() <= 1024, "{} bytes", s.bytes());
    }

    #[test]
    fn month_and_weekday_are_the_calendars() {
        let at = |y, m, d| {
            chrono::NaiveDate::from_ymd_opt(y, m, d)
                .unwrap()
                .and_hms_opt(12, 0, 0)
                .unwrap()
                .and_utc()
                .timestamp_millis()
        };
        let col = |name: &str| FEATURE_NAMES.iter().position(|f| *f == name).unwrap();
        for (y, m, d, weekday) in [(2026, 12, 5, 5.0), (2024, 2, 29, 3.0), (1999, 1, 1, 4.0)] {
            let t = at(y, m, d);
            let row = LeadState::new(t).feature_row(t, HL);
            assert_eq!(
                row.categories[crate::context::MONTH_SLOT],
                crate::context::month_hash(m),
                "{y}-{m}-{d}"
            );
            assert_eq!(row.numeric[col("weekday")], weekday, "{y}-{m}-{d}");
        }
    }
}
