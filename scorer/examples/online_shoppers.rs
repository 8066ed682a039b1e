//! Converts the UCI Online Shoppers Purchasing Intention dataset (Sakar et
//! al. 2019, doi:10.24432/C5F88Q, CC BY 4.0) into tracking-plan events, one
//! anonymous web visitor per session, every event validated by the codec.
//!
//!   cargo run -p leadstream-scorer --example online_shoppers -- \
//!     ../shared/datasets/online_shoppers_intention/online_shoppers_intention.csv > /tmp/oss.ndjson
//!
//! Mapping: Administrative pages → page_viewed(owner_service), Informational
//! → page_viewed(article), ProductRelated → page_viewed(model_detail) with the
//! session's PageValues as `page_value`; each page gets the page type's
//! average duration; Revenue = 1 → order_placed after the last page.
//! Every column the tracking plan has a place for is carried, as a real SDK
//! would send it: TrafficType → `context.lead_channel`, OperatingSystems →
//! `context.os`, Browser → `context.user_agent`, Region → `context.locale`
//! (the data's codes, e.g. `os-2`, `browser-4`, `pt-r3`); a returning visitor
//! has an earlier session (one home page view two hours before); the data
//! has a month and a weekend flag but no year or day: sessions are placed in
//! 2025 on a day of that month (by row number) that is a weekend day exactly
//! when the flag says so. BounceRates and ExitRates (Google Analytics page
//! aggregates, not events) and SpecialDay (a distance to holidays, not an
//! attribute of the visit) stay out.

use std::io::{BufRead, Write};

use leadstream_schemas::{EmbeddedResolver, Encoder, Plan};
use serde_json::{Value, json};

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "June", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// A day of `month` in 2025 picked by `row`, on a weekend exactly when
/// `weekend` is set.
fn day_in_month(month: u32, row: u32, weekend: bool) -> Option<chrono::NaiveDate> {
    use chrono::Datelike;
    let days: Vec<chrono::NaiveDate> = (1..=31)
        .filter_map(|d| chrono::NaiveDate::from_ymd_opt(2025, month, d))
        .filter(|d| (d.weekday().number_from_monday() >= 6) == weekend)
        .collect();
    days.get(row as usize % days.len().max(1)).copied()
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let path = std::env::args()
        .nth(1)
        .ok_or("usage: online_shoppers <online_shoppers_intention.csv>")?;
    let plan = Plan::embedded()?;
    let resolver = EmbeddedResolver::new(&plan)?;
    let encoder = tokio::runtime::Runtime::new()?.block_on(Encoder::build(&plan, &resolver))?;
    let file = std::io::BufReader::new(std::fs::File::open(&path)?);
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let (mut sessions, mut events) = (0u64, 0u64);
    for (row, line) in file.lines().enumerate().skip(1) {
        let line = line?;
        let c: Vec<&str> = line.split(',').collect();
        let num = |i: usize| -> f64 { c[i].parse().unwrap_or(0.0) };
        let month = MONTHS
            .iter()
            .position(|m| *m == c[10])
            .ok_or_else(|| format!("row {row}: unknown month {}", c[10]))?
            as u32
            + 1;
        let weekend = c[16].trim().eq_ignore_ascii_case("true");
        let date = day_in_month(month, row as u32, weekend).ok_or("bad date")?;
        let start = date
            .and_hms_opt(8 + (row as u32 % 12), 0, 0)
            .ok_or("bad date")?
            .and_utc()
            .timestamp_millis();
        let anon = format!("oss-{row}");
        let context = json!({
            "lead_channel": format!("traffic_type_{}", c[14]),
            "session_id": anon,
            "os": format!("os-{}", c[11]),
            "user_agent": format!("browser-{}", c[12]),
            "locale": format!("pt-r{}", c[13]),
        });
        let mut ts = start;
        let mut emit = |event: &str,
                        kind: &str,
                        ts: i64,
                        props: Value,
                        n: &mut u64|
         -> Result<(), Box<dyn std::error::Error>> {
            *n += 1;
            let e = json!({
                "message_id": format!("{anon}-{n}"), "event": event, "type": kind, "platform": "web",
                "source_id": "uci-online-shoppers", "tenant": "uci", "anonymous_id": anon,
                "timestamp": ts, "received_at": ts,
                "context": context,
                "properties": props,
            });
            encoder
                .encode(&e)
                .map_err(|err| format!("row {row}: {err}"))?;
            writeln!(out, "{e}")?;
            Ok(())
        };
        let mut n = 0u64;
        if c[15].trim() == "Returning_Visitor" {
            emit(
                "page_viewed",
                "page",
                start - 2 * 3_600_000,
                json!({"page_type": "home"}),
                &mut n,
            )?;
        }
        let page_value = num(8);
        let groups = [
            (0, 1, "owner_service"),
            (2, 3, "article"),
            (4, 5, "model_detail"),
        ];
        let mut any = false;
        for (count_col, dur_col, page_type) in groups {
            let count = num(count_col) as u64;
            let per_page_ms = if count > 0 {
                (num(dur_col).max(0.0) * 1000.0 / count as f64) as i64
            } else {
                0
            };
            for _ in 0..count {
                let mut props = json!({"page_type": page_type, "duration_ms": per_page_ms});
                if page_type == "model_detail" && page_value > 0.0 {
                    props["page_value"] = json!(page_value);
                }
                emit("page_viewed", "page", ts, props, &mut n)?;
                ts += per_page_ms.max(1_000);
                any = true;
            }
        }
        if !any {
            emit(
                "page_viewed",
                "page",
                ts,
                json!({"page_type": "home"}),
                &mut n,
            )?;
        }
        if c[17].trim() == "1" {
            emit(
                "order_placed",
                "track",
                ts + 60_000,
                json!({"order_id": format!("{anon}-order"), "order_type": "order", "model_id": "unknown", "amount": 0.0}),
                &mut n,
            )?;
        }
        sessions += 1;
        events += n;
    }
    out.flush()?;
    eprintln!("{sessions} sessions → {events} tracking-plan events");
    Ok(())
}
