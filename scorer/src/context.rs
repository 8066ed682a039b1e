//! Categorical context of a lead: where it came from, what it asked for,
//! what the call centre heard, on which device. Each slot holds one value as
//! a 32-bit FNV-1a hash, so a lead's state stays small and fixed-size;
//! models map hashes back to the values they were trained on. Most slots
//! keep the newest value by event time; the first channel and platform come
//! from the lead's first-touch fields, the month from the moment scored.

use leadstream_schemas::hash::fnv1a32;

use crate::event::{PlanField as F, PlanFields};

/// Where a slot's value comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Keep {
    /// The newest value by event time, kept in [`Categories`].
    Newest,
    /// The lead's first-touch field (channel, platform).
    FirstTouch,
    /// The moment scored (its month).
    Scored,
}

/// The categorical slots, in index order: (name, where the value comes
/// from). Kept slots come first.
pub const CATEGORY_SLOTS: [(&str, Keep); CATEGORIES] = [
    ("last_channel", Keep::Newest),
    ("utm_campaign", Keep::Newest),
    ("form_type", Keep::Newest),
    ("purchase_timeframe", Keep::Newest),
    ("call_outcome", Keep::Newest),
    ("content_action", Keep::Newest),
    ("model_interest", Keep::Newest),
    ("os", Keep::Newest),
    ("browser", Keep::Newest),
    ("locale", Keep::Newest),
    ("first_channel", Keep::FirstTouch),
    ("first_platform", Keep::FirstTouch),
    // A category, not a number: a month never seen in training (a model fit
    // on spring, scoring in autumn) gets the overall rate instead of an
    // extrapolation.
    ("month", Keep::Scored),
];
pub const CATEGORIES: usize = 13;
/// Slots a lead keeps, the first ones of [`CATEGORY_SLOTS`].
pub const KEPT: usize = 10;
pub const FIRST_CHANNEL_SLOT: usize = 10;
pub const FIRST_PLATFORM_SLOT: usize = 11;
pub const MONTH_SLOT: usize = 12;

/// Hash of "no value": slots an event does not carry.
pub const NONE: u32 = 0;

/// FNV-1a (32 bit) of a category value, never [`NONE`].
pub fn hash(value: &str) -> u32 {
    fnv1a32(value.bytes())
}

/// [`hash`] of the value as [`values`] spells it (trimmed, ASCII lower
/// case), without allocating.
pub fn hash_normalised(value: &str) -> u32 {
    let v = value.trim();
    if v.is_empty() {
        return NONE;
    }
    fnv1a32(v.bytes().map(|b| b.to_ascii_lowercase()))
}

fn text<E: PlanFields + ?Sized>(e: &E, field: F) -> Option<&str> {
    e.str_at(field).map(str::trim).filter(|s| !s.is_empty())
}

/// The category values one tracking-plan event carries, by slot. Channel
/// is `lead_channel`, else `utm_source`; first and last channel come from
/// the same value (the lead keeps the first and the newest).
pub fn values<E: PlanFields + ?Sized>(e: &E) -> [Option<String>; CATEGORIES] {
    let lower = |s: Option<&str>| s.map(str::to_ascii_lowercase);
    let channel = lower(text(e, F::LeadChannel).or_else(|| text(e, F::UtmSource)));
    let event = text(e, F::Event);
    [
        channel.clone(),
        lower(text(e, F::UtmCampaign)),
        lower(text(e, F::FormType)),
        lower(text(e, F::PurchaseTimeframe)),
        (event == Some("call_completed"))
            .then(|| lower(text(e, F::Outcome)))
            .flatten(),
        (event == Some("content_engaged"))
            .then(|| lower(text(e, F::Action)))
            .flatten(),
        text(e, F::ModelId).map(str::to_owned),
        text(e, F::Os).and_then(os_family),
        text(e, F::UserAgent).and_then(browser_family),
        lower(text(e, F::Locale)),
        channel,
        lower(text(e, F::Platform)),
        None,
    ]
}

pub const MONTH_NAMES: [&str; 12] = [
    "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
];

/// Hash of a month (1–12) as the month slot holds it.
pub fn month_hash(month: u32) -> u32 {
    MONTH_NAMES
        .get(month.wrapping_sub(1) as usize)
        .map_or(NONE, |m| hash(m))
}

/// Hashes of [`values`], computed without building the values: the live
/// scorer takes these for every event.
pub fn hashes<E: PlanFields + ?Sized>(e: &E) -> [u32; CATEGORIES] {
    let ascii_lower = |field: F| text(e, field).map_or(NONE, hash_ascii_lower);
    let channel = text(e, F::LeadChannel)
        .or_else(|| text(e, F::UtmSource))
        .map_or(NONE, hash_ascii_lower);
    let event = text(e, F::Event);
    let when = |name: &str, field: F| {
        if event == Some(name) {
            ascii_lower(field)
        } else {
            NONE
        }
    };
    [
        channel,
        ascii_lower(F::UtmCampaign),
        ascii_lower(F::FormType),
        ascii_lower(F::PurchaseTimeframe),
        when("call_completed", F::Outcome),
        when("content_engaged", F::Action),
        text(e, F::ModelId).map_or(NONE, hash),
        text(e, F::Os).and_then(first_word).map_or(NONE, hash_lower),
        text(e, F::UserAgent).map_or(NONE, browser_family_hash),
        ascii_lower(F::Locale),
        channel,
        ascii_lower(F::Platform),
        NONE,
    ]
}

/// [`hash`] of `s.to_ascii_lowercase()`.
fn hash_ascii_lower(s: &str) -> u32 {
    fnv1a32(s.bytes().map(|b| b.to_ascii_lowercase()))
}

/// [`hash`] of `s.to_lowercase()`; allocates only for non-ASCII text.
fn hash_lower(s: &str) -> u32 {
    if s.is_ascii() {
        hash_ascii_lower(s)
    } else {
        hash(&s.to_lowercase())
    }
}

/// [`hash`] of [`browser_family`].
fn browser_family_hash(ua: &str) -> u32 {
    match family_token(ua) {
        Some(family) => hash(family),
        None => first_product(ua).map_or(NONE, hash_lower),
    }
}

/// "iOS 17.2" and "iOS 18" are one OS to a model: the first word, lower case.
fn os_family(os: &str) -> Option<String> {
    first_word(os).map(str::to_lowercase)
}

fn first_word(os: &str) -> Option<&str> {
    os.split(|c: char| c.is_whitespace() || c == '/')
        .find(|w| !w.is_empty())
}

/// The browser family a user agent names: the common families by their
/// tokens (most specific first, since Chrome's agent also says Safari and
/// Edge's also says Chrome), else the agent's first product name.
fn browser_family(ua: &str) -> Option<String> {
    match family_token(ua) {
        Some(family) => Some(family.to_owned()),
        None => first_product(ua).map(str::to_lowercase),
    }
}

/// The common family a user agent's tokens name, most specific first.
fn family_token(ua: &str) -> Option<&'static str> {
    const FAMILIES: [(&str, &str); 11] = [
        ("MicroMessenger", "wechat"),
        ("AlipayClient", "alipay"),
        ("Edg", "edge"),
        ("OPR", "opera"),
        ("SamsungBrowser", "samsung"),
        ("UCBrowser", "uc"),
        ("QQBrowser", "qq"),
        ("Firefox", "firefox"),
        ("CriOS", "chrome"),
        ("Chrome", "chrome"),
        ("Safari", "safari"),
    ];
    FAMILIES
        .iter()
        .find(|(token, _)| ua.contains(token))
        .map(|(_, family)| *family)
}

/// A user agent's first product name.
fn first_product(ua: &str) -> Option<&str> {
    ua.split(['/', ' ', ';', '(']).find(|w| !w.is_empty())
}

/// Per-slot values of a lead with the event time each was seen at, in
/// seconds since 2000-01-01 (four bytes a slot keep a lead within its
/// memory budget).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Categories {
    pub values: [u32; KEPT],
    pub seen_s: [u32; KEPT],
}

const EPOCH_2000_S: i64 = 946_684_800;

fn seconds(ts_ms: i64) -> u32 {
    (ts_ms.div_euclid(1000) - EPOCH_2000_S).clamp(0, i64::from(u32::MAX)) as u32
}

impl Categories {
    /// Takes an event's values: each slot keeps the latest, whatever the
    /// arrival order (a tie in time goes to the larger hash, so it too does
    /// not depend on the order).
    pub fn observe(&mut self, hashes: &[u32; CATEGORIES], ts_ms: i64) {
        let at = seconds(ts_ms);
        for (i, &h) in hashes.iter().take(KEPT).enumerate() {
            if h != NONE {
                self.offer(i, h, at);
            }
        }
    }

    fn offer(&mut self, slot: usize, value: u32, at: u32) {
        let (have, seen) = (self.values[slot], self.seen_s[slot]);
        let take = have == NONE || at > seen || (at == seen && value > have);
        if take {
            self.values[slot] = value;
            self.seen_s[slot] = at;
        }
    }

    /// The lead that saw both streams: each slot as if its events came in one.
    pub fn merge(&mut self, other: &Categories) {
        for i in 0..KEPT {
            if other.values[i] != NONE {
                self.offer(i, other.values[i], other.seen_s[i]);
            }
        }
    }

    /// Every slot's value: the kept ones, the first-touch channel and
    /// platform, and the month (1–12) scored.
    pub fn row(
        &self,
        first_channel: Option<&str>,
        first_platform: Option<&str>,
        month: u32,
    ) -> [u32; CATEGORIES] {
        let mut out = [NONE; CATEGORIES];
        out[..KEPT].copy_from_slice(&self.values);
        out[FIRST_CHANNEL_SLOT] = first_channel.map_or(NONE, hash_normalised);
        out[FIRST_PLATFORM_SLOT] = first_platform.map_or(NONE, hash_normalised);
        out[MONTH_SLOT] = month_hash(month);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn events_name_their_context_and_families_are_coarse() {
        let e = json!({"event": "lead_form_submitted", "platform": "web",
            "context": {"utm_source": "Autohome", "utm_campaign": "EV-Launch", "os": "iOS 17.2",
                        "user_agent": "Mozilla/5.0 (iPhone) AppleWebKit Version/17.2 Mobile/15E148 Safari/604.1 MicroMessenger/8.0",
                        "locale": "zh-CN"},
            "properties": {"form_type": "Quote", "purchase_timeframe": "1-3m", "model_id": "x5"}});
        let v = values(&e);
        let at =
            |name: &str| v[CATEGORY_SLOTS.iter().position(|(n, _)| *n == name).unwrap()].as_deref();
        assert_eq!(at("last_channel"), Some("autohome"));
        assert_eq!(at("first_channel"), Some("autohome"));
        assert_eq!(at("utm_campaign"), Some("ev-launch"));
        assert_eq!(at("form_type"), Some("quote"));
        assert_eq!(at("purchase_timeframe"), Some("1-3m"));
        assert_eq!(at("call_outcome"), None, "only calls have an outcome");
        assert_eq!(at("model_interest"), Some("x5"));
        assert_eq!(at("os"), Some("ios"));
        assert_eq!(at("browser"), Some("wechat"));
        assert_eq!(at("locale"), Some("zh-cn"));
        assert_eq!(at("first_platform"), Some("web"));
        assert_eq!(at("month"), None, "the month is the scoring moment's");
        // A lead's first touch, hashed where it is kept, matches the value.
        assert_eq!(hash_normalised(" Autohome"), hash("autohome"));
        let chrome = "Mozilla/5.0 (Windows NT 10.0) AppleWebKit/537.36 Chrome/120.0 Safari/537.36";
        assert_eq!(browser_family(chrome).as_deref(), Some("chrome"));
        assert_eq!(
            browser_family("Edg/120 Chrome/120").as_deref(),
            Some("edge")
        );
        assert_eq!(browser_family("okhttp/4.9").as_deref(), Some("okhttp"));
        let call = json!({"event": "call_completed", "properties": {"outcome": "appointment_set"}});
        assert_eq!(values(&call)[4].as_deref(), Some("appointment_set"));
    }

    /// The live scorer's allocation-free hashes are the hashes of the
    /// values training sees, whatever the case, spacing or script.
    #[test]
    fn hashes_are_the_hashes_of_the_values() {
        let events = [
            json!({}),
            json!({"event": " call_completed ", "platform": " WEB ",
                "context": {"lead_channel": "  ", "utm_source": " Bitauto", "os": "Android/14",
                            "user_agent": "  ", "locale": "ZH-cn", "utm_campaign": ""},
                "properties": {"outcome": " Not_Interested", "model_id": " X5 ", "action": "share"}}),
            json!({"event": "content_engaged", "platform": "mini_program",
                "context": {"lead_channel": "Dealer Walk-In", "os": "  ÉOS Ünïx 3", "user_agent": "Ärger/1.0 (X)",
                            "locale": "DE-ÄT"},
                "properties": {"action": "Video_Play", "outcome": "ignored", "form_type": "Türkçe İ",
                               "purchase_timeframe": " 3-6M "}}),
            json!({"event": "page_viewed",
                "context": {"user_agent": "Mozilla/5.0 (Linux) Chrome/120 SamsungBrowser/23 Safari/537"},
                "properties": {"model_id": "ÄÖ"}}),
            json!({"event": "page_viewed", "context": {"user_agent": "(;/ ", "os": "/ /"}}),
        ];
        for e in events {
            let want = values(&e).map(|v| v.as_deref().map_or(NONE, hash));
            assert_eq!(hashes(&e), want, "{e}");
        }
    }

    #[test]
    fn the_newest_value_does_not_depend_on_arrival_order() {
        const T: i64 = 1_795_305_600_000;
        let (a, b) = (hash("a"), hash("b"));
        let mut early = [NONE; CATEGORIES];
        early[0] = a;
        early[1] = a;
        let mut late = [NONE; CATEGORIES];
        late[0] = b;
        late[1] = b;
        let mut in_order = Categories::default();
        in_order.observe(&early, T + 10_000);
        in_order.observe(&late, T + 20_000);
        let mut reversed = Categories::default();
        reversed.observe(&late, T + 20_000);
        reversed.observe(&early, T + 10_000);
        assert_eq!(in_order, reversed);
        assert_eq!((in_order.values[0], in_order.values[1]), (b, b));
        let (mut left, mut right) = (Categories::default(), Categories::default());
        left.observe(&late, T + 20_000);
        right.observe(&early, T + 10_000);
        left.merge(&right);
        assert_eq!(left, in_order, "merging two streams equals one stream");
    }
}
