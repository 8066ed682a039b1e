//! A tracking-plan event reduced to what scoring needs.

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

fn s(v: &Json, path: &[&str]) -> Option<String> {
    path.iter()
        .try_fold(v, |v, k| v.get(k))
        .and_then(Json::as_str)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
}

/// Maps a decoded tracking-plan event (as JSON) to its scoring meaning.
pub fn from_plan(e: &Json) -> Option<LeadEvent> {
    let event = s(e, &["event"])?;
    let ts_ms = e.get("timestamp")?.as_i64()?;
    let props = e.get("properties").cloned().unwrap_or(Json::Null);
    let page_type = s(&props, &["page_type"]);
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
        "store_visited" => signals.push(
            if s(&props, &["visit_type"]).as_deref() == Some("service") {
                Signal::Engagement
            } else {
                Signal::StoreVisit
            },
        ),
        "content_engaged" | "coupon_claimed" => signals.push(Signal::Engagement),
        "call_completed" => {
            if matches!(
                s(&props, &["outcome"]).as_deref(),
                Some("interested" | "appointment_set" | "callback_requested")
            ) {
                signals.push(Signal::Engagement);
            }
        }
        _ => {}
    }
    let lost = event == "call_completed"
        && matches!(
            s(&props, &["outcome"]).as_deref(),
            Some("not_interested" | "already_bought")
        );
    let platform = s(e, &["platform"]).as_deref().and_then(Platform::parse);
    Some(LeadEvent {
        message_id: s(e, &["message_id"]).unwrap_or_default(),
        ts_ms,
        platform,
        signals,
        model_id: s(&props, &["model_id"]).or_else(|| s(&props, &["owned_model_id"])),
        price: props.get("price").and_then(Json::as_f64),
        channel: s(e, &["context", "lead_channel"]).or_else(|| s(e, &["context", "utm_source"])),
        session_id: s(e, &["context", "session_id"]),
        is_bot: e
            .pointer("/context/is_bot")
            .and_then(Json::as_bool)
            .unwrap_or(false),
        order: event == "order_placed" || event == "vehicle_delivered",
        lost,
        purchase_ms: props.get("purchase_date").and_then(Json::as_i64),
        duration_ms: props.get("duration_ms").and_then(Json::as_i64),
        page_value: props.get("page_value").and_then(Json::as_f64),
        categories: crate::context::hashes(e),
        event,
    })
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
