//! A tracking-plan event reduced to what scoring needs.

use leadstream_schemas::datum::{Datum, Paths};

use crate::proto::EventFacts;
use serde_json::Value as Json;

/// Intent signals the windows count, in a fixed order (array index).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Signal {
    PageView,
    ModelDetail,
    Configurator,
    PriceFinance,
    TestDrive,
    LeadForm,
    StoreVisit,
    Engagement,
}

impl Signal {
    pub const ALL: [Signal; 8] = [
        Signal::PageView,
        Signal::ModelDetail,
        Signal::Configurator,
        Signal::PriceFinance,
        Signal::TestDrive,
        Signal::LeadForm,
        Signal::StoreVisit,
        Signal::Engagement,
    ];

    pub fn index(self) -> usize {
        self as usize
    }

    /// Bounded reason code for this signal.
    pub fn code(self) -> &'static str {
        match self {
            Signal::PageView => "page_views",
            Signal::ModelDetail => "model_detail_views",
            Signal::Configurator => "configurator",
            Signal::PriceFinance => "price_finance",
            Signal::TestDrive => "test_drive_booked",
            Signal::LeadForm => "lead_form_submitted",
            Signal::StoreVisit => "store_visit",
            Signal::Engagement => "content_engagement",
        }
    }

    /// Signals that show purchase intent (used for reactivation).
    pub fn is_high_intent(self) -> bool {
        matches!(
            self,
            Signal::Configurator
                | Signal::PriceFinance
                | Signal::TestDrive
                | Signal::LeadForm
                | Signal::StoreVisit
        )
    }
}

pub use leadstream_schemas::Platform;

/// What scoring needs from one event.
#[derive(Debug, Clone, PartialEq)]
pub struct LeadEvent {
    pub message_id: String,
    pub event: String,
    pub ts_ms: i64,
    pub platform: Option<Platform>,
    pub signals: Vec<Signal>,
    pub model_id: Option<String>,
    pub price: Option<f64>,
    pub channel: Option<String>,
    pub session_id: Option<String>,
    pub is_bot: bool,
    pub order: bool,
    /// A call outcome that says the lead is lost for now (not interested,
    /// or already bought elsewhere): the lead moves to nurture.
    pub lost: bool,
    /// Purchase date from the CRM (identify), for lifecycle stage.
    pub purchase_ms: Option<i64>,
    /// Time on the page, when the SDK reports it.
    pub duration_ms: Option<i64>,
    /// Analytics page value of the page, when the source provides it.
    pub page_value: Option<f64>,
    /// Hashed categorical context ([`crate::context::CATEGORY_SLOTS`]).
    pub categories: [u32; crate::context::CATEGORIES],
}

/// The tracking-plan fields scoring reads (identity, scoring meaning,
/// categorical context), each at its path in the event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlanField {
    MessageId,
    Event,
    Timestamp,
    Platform,
    UserId,
    UnionId,
    PhoneHash,
    AnonymousId,
    PreviousId,
    PageType,
    VisitType,
    Outcome,
    ModelId,
    OwnedModelId,
    Price,
    PurchaseDate,
    DurationMs,
    PageValue,
    FormType,
    PurchaseTimeframe,
    Action,
    LeadChannel,
    UtmSource,
    UtmCampaign,
    SessionId,
    IsBot,
    Os,
    UserAgent,
    Locale,
}

/// The path of each [`PlanField`], in its order: the live scorer reads
/// events through a projection of these paths.
pub static PLAN_PATHS: &Paths = &[
    &["message_id"],
    &["event"],
    &["timestamp"],
    &["platform"],
    &["user_id"],
    &["union_id"],
    &["phone_hash"],
    &["anonymous_id"],
    &["properties", "previous_id"],
    &["properties", "page_type"],
    &["properties", "visit_type"],
    &["properties", "outcome"],
    &["properties", "model_id"],
    &["properties", "owned_model_id"],
    &["properties", "price"],
    &["properties", "purchase_date"],
    &["properties", "duration_ms"],
    &["properties", "page_value"],
    &["properties", "form_type"],
    &["properties", "purchase_timeframe"],
    &["properties", "action"],
    &["context", "lead_channel"],
    &["context", "utm_source"],
    &["context", "utm_campaign"],
    &["context", "session_id"],
    &["context", "is_bot"],
    &["context", "os"],
    &["context", "user_agent"],
    &["context", "locale"],
];

impl PlanField {
    pub fn path(self) -> &'static [&'static str] {
        PLAN_PATHS[self as usize]
    }
}

/// A decoded tracking-plan event read by field. Training reads events as
/// JSON (files, ClickHouse rows); the live scorer reads the borrowed Avro
/// datum. Both answer alike (JSON in the plan's shape is what
/// `leadstream_schemas::codec::to_json` makes of the datum), so one mapping
/// serves training and serving and the two cannot drift apart.
pub trait PlanFields {
    fn str_at(&self, field: PlanField) -> Option<&str>;
    fn i64_at(&self, field: PlanField) -> Option<i64>;
    fn f64_at(&self, field: PlanField) -> Option<f64>;
    fn bool_at(&self, field: PlanField) -> Option<bool>;
}

fn json_at<'a>(v: &'a Json, path: &[&str]) -> Option<&'a Json> {
    path.iter().try_fold(v, |v, k| v.get(k))
}

impl PlanFields for Json {
    fn str_at(&self, field: PlanField) -> Option<&str> {
        json_at(self, field.path())?.as_str()
    }
    fn i64_at(&self, field: PlanField) -> Option<i64> {
        json_at(self, field.path())?.as_i64()
    }
    fn f64_at(&self, field: PlanField) -> Option<f64> {
        json_at(self, field.path())?.as_f64()
    }
    fn bool_at(&self, field: PlanField) -> Option<bool> {
        json_at(self, field.path())?.as_bool()
    }
}

/// A record's field or a map's entry (unions are already unwrapped).
fn datum_child<'d, 'a>(d: &'d Datum<'a>, key: &str) -> Option<&'d Datum<'a>> {
    match d {
        Datum::Record(..) => d.field(key),
        Datum::Map(entries) => entries.iter().find(|(k, _)| *k == key).map(|(_, v)| v),
        _ => None,
    }
}

fn datum_at<'d, 'a>(d: &'d Datum<'a>, path: &[&str]) -> Option<&'d Datum<'a>> {
    path.iter().try_fold(d, |d, k| datum_child(d, k))
}

impl PlanFields for Datum<'_> {
    fn str_at(&self, field: PlanField) -> Option<&str> {
        datum_at(self, field.path())?.as_str()
    }
    fn i64_at(&self, field: PlanField) -> Option<i64> {
        datum_at(self, field.path())?.as_i64()
    }
    fn f64_at(&self, field: PlanField) -> Option<f64> {
        datum_at(self, field.path())?.as_f64()
    }
    fn bool_at(&self, field: PlanField) -> Option<bool> {
        datum_at(self, field.path())?.as_bool()
    }
}

/// An event read through the projection of [`PLAN_PATHS`]
/// ([`leadstream_schemas::Decoder::project`]): each field by its index.
pub struct Projected<'d, 'a>(pub &'d [Datum<'a>]);

impl PlanFields for Projected<'_, '_> {
    fn str_at(&self, field: PlanField) -> Option<&str> {
        self.0.get(field as usize)?.as_str()
    }
    fn i64_at(&self, field: PlanField) -> Option<i64> {
        self.0.get(field as usize)?.as_i64()
    }
    fn f64_at(&self, field: PlanField) -> Option<f64> {
        self.0.get(field as usize)?.as_f64()
    }
    fn bool_at(&self, field: PlanField) -> Option<bool> {
        self.0.get(field as usize)?.as_bool()
    }
}

/// A non-empty string at `field`.
fn s<E: PlanFields + ?Sized>(e: &E, field: PlanField) -> Option<String> {
    e.str_at(field).filter(|s| !s.is_empty()).map(str::to_owned)
}

/// Maps a decoded tracking-plan event to its scoring meaning.
pub fn from_plan<E: PlanFields + ?Sized>(e: &E) -> Option<LeadEvent> {
    use PlanField as F;
    let event = s(e, F::Event)?;
    let ts_ms = e.i64_at(F::Timestamp)?;
    let page_type = s(e, F::PageType);
    let mut signals = Vec::with_capacity(2);
    match event.as_str() {
        "page_viewed" => {
            signals.push(Signal::PageView);
            match page_type.as_deref() {
                Some("model_detail") => signals.push(Signal::ModelDetail),
                Some("configurator") => signals.push(Signal::Configurator),
                Some("price" | "finance") => signals.push(Signal::PriceFinance),
                Some("test_drive" | "dealer_locator") => signals.push(Signal::ModelDetail),
                // Owners reading service pages: engagement, not purchase intent.
                Some("article" | "video" | "owner_service") => signals.push(Signal::Engagement),
                _ => {}
            }
        }
        "vehicle_configured" => signals.push(Signal::Configurator),
        "finance_calculated" => signals.push(Signal::PriceFinance),
        "test_drive_booked" => signals.push(Signal::TestDrive),
        "lead_form_submitted" => signals.push(Signal::LeadForm),
        // A service visit keeps an owner engaged; it is not a showroom visit.
        "store_visited" => signals.push(if s(e, F::VisitType).as_deref() == Some("service") {
            Signal::Engagement
        } else {
            Signal::StoreVisit
        }),
        "content_engaged" | "coupon_claimed" => signals.push(Signal::Engagement),
        "call_completed" => {
            if matches!(
                s(e, F::Outcome).as_deref(),
                Some("interested" | "appointment_set" | "callback_requested")
            ) {
                signals.push(Signal::Engagement);
            }
        }
        _ => {}
    }
    let lost = event == "call_completed"
        && matches!(
            s(e, F::Outcome).as_deref(),
            Some("not_interested" | "already_bought")
        );
    let platform = s(e, F::Platform).as_deref().and_then(Platform::parse);
    Some(LeadEvent {
        message_id: s(e, F::MessageId).unwrap_or_default(),
        ts_ms,
        platform,
        signals,
        model_id: s(e, F::ModelId).or_else(|| s(e, F::OwnedModelId)),
        price: e.f64_at(F::Price),
        channel: s(e, F::LeadChannel).or_else(|| s(e, F::UtmSource)),
        session_id: s(e, F::SessionId),
        is_bot: e.bool_at(F::IsBot).unwrap_or(false),
        order: event == "order_placed" || event == "vehicle_delivered",
        lost,
        purchase_ms: e.i64_at(F::PurchaseDate),
        duration_ms: e.i64_at(F::DurationMs),
        page_value: e.f64_at(F::PageValue),
        categories: crate::context::hashes(e),
        event,
    })
}

/// The `by_lead` form of an event's scoring meaning; `None` is an event
/// that maps to nothing scorable (still routed: it advances its lead).
pub fn to_facts(event: Option<LeadEvent>) -> EventFacts {
    let Some(e) = event else {
        return EventFacts {
            unscorable: true,
            ..EventFacts::default()
        };
    };
    EventFacts {
        unscorable: false,
        message_id: e.message_id,
        event: e.event,
        ts_ms: e.ts_ms,
        platform: e.platform.map(|p| p as u32),
        signals: e.signals.iter().map(|s| s.index() as u32).collect(),
        model_id: e.model_id,
        price: e.price,
        channel: e.channel,
        session_id: e.session_id,
        is_bot: e.is_bot,
        order: e.order,
        lost: e.lost,
        purchase_ms: e.purchase_ms,
        duration_ms: e.duration_ms,
        page_value: e.page_value,
        categories: e.categories.to_vec(),
        // Only the stitcher knows; it sets this after routing.
        anonymous: false,
    }
}

/// Why `by_lead` facts were refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FactsError {
    #[error("signal index {0} is not a known signal")]
    Signal(u32),
    #[error("platform index {0} is not a known platform")]
    Platform(u32),
    #[error("{0} category hashes, expected {n}", n = crate::context::CATEGORIES)]
    Categories(usize),
}

/// The event `facts` stand for (`None`: unscorable).
pub fn from_facts(facts: EventFacts) -> Result<Option<LeadEvent>, FactsError> {
    if facts.unscorable {
        return Ok(None);
    }
    let signals = facts
        .signals
        .iter()
        .map(|&i| {
            Signal::ALL
                .get(i as usize)
                .copied()
                .ok_or(FactsError::Signal(i))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let platform = facts
        .platform
        .map(|i| Platform::from_index(i).ok_or(FactsError::Platform(i)))
        .transpose()?;
    let n = facts.categories.len();
    let categories = facts
        .categories
        .try_into()
        .map_err(|_| FactsError::Categories(n))?;
    Ok(Some(LeadEvent {
        message_id: facts.message_id,
        event: facts.event,
        ts_ms: facts.ts_ms,
        platform,
        signals,
        model_id: facts.model_id,
        price: facts.price,
        channel: facts.channel,
        session_id: facts.session_id,
        is_bot: facts.is_bot,
        order: facts.order,
        lost: facts.lost,
        purchase_ms: facts.purchase_ms,
        duration_ms: facts.duration_ms,
        page_value: facts.page_value,
        categories,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn maps_events_to_signals() {
        let e = json!({"event": "page_viewed", "timestamp": 5, "platform": "mini_program", "message_id": "m",
                       "context": {"utm_source": "autohome", "is_bot": false}, "properties": {"page_type": "finance", "model_id": "x5"}});
        let le = from_plan(&e).unwrap();
        assert_eq!(le.signals, vec![Signal::PageView, Signal::PriceFinance]);
        assert_eq!(
            (le.platform, le.channel.as_deref(), le.model_id.as_deref()),
            (Some(Platform::MiniProgram), Some("autohome"), Some("x5"))
        );
        let call = json!({"event": "call_completed", "timestamp": 5, "properties": {"outcome": "no_answer"}});
        assert!(from_plan(&call).unwrap().signals.is_empty());
        let lost = json!({"event": "call_completed", "timestamp": 5, "properties": {"outcome": "already_bought"}});
        assert!(from_plan(&lost).unwrap().lost);
        let service = json!({"event": "store_visited", "timestamp": 5, "properties": {"visit_type": "service"}});
        assert_eq!(
            from_plan(&service).unwrap().signals,
            vec![Signal::Engagement]
        );
        assert!(
            from_plan(&json!({"event": "order_placed", "timestamp": 1}))
                .unwrap()
                .order
        );
        assert!(from_plan(&json!({"event": "x"})).is_none(), "no timestamp");
    }
}
