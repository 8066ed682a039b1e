//! Validate + encode of one tracking-plan event, the per-event cost ingest pays.
//!   cargo bench --bench codec

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use leadstream_schemas::{EmbeddedResolver, Encoder, Plan};
use serde_json::json;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn bench(c: &mut Criterion) {
    let plan = Plan::embedded().unwrap();
    let resolver = EmbeddedResolver::new(&plan).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let encoder = rt.block_on(Encoder::build(&plan, &resolver)).unwrap();
    let event = json!({
        "message_id": "0d5b7c1e-4d8a-4c1b-9f0e-2a7f3c9d1b11", "event": "page_viewed", "type": "page",
        "platform": "web", "source_id": "web-main", "tenant": "brand-a",
        "anonymous_id": "a3f1c2d4-5e6f-4a1b-8c9d-0e1f2a3b4c5d", "user_id": null,
        "timestamp": 1_795_305_600_123_i64, "sent_at": 1_795_305_600_500_i64, "received_at": 1_795_305_600_600_i64,
        "context": {
            "sdk_name": "analytics.js", "sdk_version": "5.2.0", "page_url": "https://brand.example/models/x5/configure?utm_source=autohome",
            "page_path": "/models/x5/configure", "page_referrer": "https://www.autohome.com.cn/", "utm_source": "autohome",
            "utm_medium": "cpc", "utm_campaign": "x5-launch", "lead_channel": "vertical_media",
            "user_agent": "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15", "ip": "203.0.113.0",
            "session_id": "s-42"
        },
        "properties": {"page_type": "configurator", "model_id": "x5", "duration_ms": 42000, "page_value": 18.5}
    });
    let size = encoder.encode(&event).unwrap().bytes.len();
    let mut group = c.benchmark_group("codec");
    group.throughput(Throughput::Elements(1));
    group.bench_function(format!("validate_encode_page_viewed_{size}B"), |b| {
        b.iter(|| encoder.encode(black_box(&event)).unwrap())
    });
    let text = event.to_string();
    group.bench_function("parse_validate_encode_page_viewed", |b| {
        b.iter(|| {
            let parsed: serde_json::Value = serde_json::from_str(black_box(&text)).unwrap();
            encoder.encode(&parsed).unwrap()
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
