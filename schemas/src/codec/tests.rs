use std::{collections::HashMap, sync::Arc};

use serde_json::{Map, Value as Json};

use crate::plan::Plan;

use super::*;
use crate::resolver::EmbeddedResolver;
use serde_json::json;

pub(crate) fn page_view() -> Json {
    json!({
        "message_id": "m-1", "event": "page_viewed", "type": "page", "platform": "web",
        "source_id": "web-main", "tenant": "brand-a", "anonymous_id": "anon-1",
        "timestamp": "2026-11-22T08:00:00.123+08:00", "received_at": 1_795_000_000_000_i64,
        "context": {"page_path": "/models/x5/configure", "utm_source": "autohome"},
        "properties": {"page_type": "configurator", "model_id": "x5", "page_value": 12.5}
    })
}

#[tokio::test]
async fn the_borrowed_datum_renders_what_apache_avro_decodes() {
    let (encoder, decoder) = codec().await;
    let mut e = page_view();
    e["context"]["page_title"] = json!("Quote \" back\\slash \n newline \u{1} ctl 中文");
    let bytes = encoder.encode(&e).unwrap().bytes;
    let reference = decoder.decode(&bytes).await.unwrap();
    let (id, text) = decoder
        .visit_cached(&bytes, |id, d| {
            let mut text = String::new();
            d.write_json(&mut text);
            (id, text)
        })
        .expect("schema fetched by decode")
        .unwrap();
    assert_eq!(id, reference.schema.id);
    assert_eq!(text, to_json(&reference.value).to_string());
    let err = decoder
        .visit(&bytes[..bytes.len() - 3], |_, _| ())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("ends early"), "{err}");
}

/// A JSON object seen as a [`FieldView`]: strings, integers and
/// booleans as typed fields, objects as nested views.
struct JsonView {
    map: Map<String, Json>,
    names: &'static [&'static str],
    nested: HashMap<String, JsonView>,
}

impl JsonView {
    fn new(v: &Json) -> Self {
        let map = v.as_object().unwrap().clone();
        let names: Vec<&'static str> = map
            .keys()
            .map(|k| &*Box::leak(k.clone().into_boxed_str()))
            .collect();
        let nested = map
            .iter()
            .filter(|(_, v)| v.is_object())
            .map(|(k, v)| (k.clone(), JsonView::new(v)))
            .collect();
        Self {
            map,
            names: Box::leak(names.into_boxed_slice()),
            nested,
        }
    }
}

impl FieldView for JsonView {
    fn field_at(&self, i: usize) -> Field<'_> {
        let name = self.names[i];
        if let Some(n) = self.nested.get(name) {
            return Field::Record(n);
        }
        match self.map.get(name) {
            None => Field::Absent,
            Some(Json::Null) => Field::Null,
            Some(Json::String(s)) => Field::Text(s),
            Some(Json::Bool(b)) => Field::Bool(*b),
            Some(j) if j.is_i64() => Field::Long(j.as_i64().unwrap()),
            Some(j) if j.is_f64() => Field::Double(j.as_f64().unwrap()),
            Some(j) => Field::Json(j),
        }
    }
    fn names(&self) -> &'static [&'static str] {
        self.names
    }
}

#[tokio::test]
async fn a_view_encodes_as_its_json_object_does() {
    let (encoder, _) = codec().await;
    let mut bad_enum = page_view();
    bad_enum["platform"] = json!("tv");
    let mut extra = page_view();
    extra["context"]["nope"] = json!(1);
    let mut bad_ts = page_view();
    bad_ts["timestamp"] = json!("soon");
    let mut wrong_type = page_view();
    wrong_type["properties"]["duration_ms"] = json!("long");
    let mut float_for_long = page_view();
    float_for_long["properties"]["duration_ms"] = json!(1.5);
    let mut float_for_text = page_view();
    float_for_text["properties"]["model_id"] = json!(2.5);
    // Longs and booleans have typed paths of their own: where the schema
    // wants something else they must fail as the JSON value does.
    let mut long_for_text = page_view();
    long_for_text["properties"]["model_id"] = json!(7);
    let mut bool_for_long = page_view();
    bool_for_long["properties"]["duration_ms"] = json!(true);
    let mut long_for_bool = page_view();
    long_for_bool["context"]["is_bot"] = json!(1);
    let mut bool_for_ts = page_view();
    bool_for_ts["timestamp"] = json!(false);
    for e in [
        page_view(),
        bad_enum,
        extra,
        bad_ts,
        wrong_type,
        float_for_long,
        float_for_text,
        long_for_text,
        bool_for_long,
        long_for_bool,
        bool_for_ts,
    ] {
        let by_json = encoder.encode(&e).map(|x| x.bytes);
        let by_view = encoder
            .encode_view(e["event"].as_str().unwrap(), &JsonView::new(&e))
            .map(|x| x.bytes);
        assert_eq!(by_view, by_json, "{e}");
    }
    assert!(matches!(
        encoder.encode_view("nope", &JsonView::new(&page_view())),
        Err(EncodeError::UnplannedEvent { .. })
    ));
}

async fn codec() -> (Encoder, Decoder) {
    let plan = Plan::embedded().unwrap();
    let resolver = Arc::new(EmbeddedResolver::new(&plan).unwrap());
    (
        Encoder::build(&plan, resolver.as_ref()).await.unwrap(),
        Decoder::new(resolver),
    )
}

#[tokio::test]
async fn round_trips_through_confluent_framing() {
    let (enc, dec) = codec().await;
    let encoded = enc.encode(&page_view()).unwrap();
    assert_eq!(encoded.bytes[0], 0);
    let decoded = dec.decode(&encoded.bytes).await.unwrap();
    assert_eq!(decoded.schema.id, encoded.schema_id);
    let back = to_json(&decoded.value);
    assert_eq!(back["properties"]["page_type"], "configurator");
    assert_eq!(back["properties"]["page_value"], 12.5);
    assert_eq!(back["timestamp"], 1_795_305_600_123_i64);
    assert_eq!(back["context"]["is_bot"], false);
    assert_eq!(back["user_id"], Json::Null);
}

#[tokio::test]
async fn errors_name_the_field_and_reason() {
    let (enc, _) = codec().await;
    type Mutation = Box<dyn Fn(&mut Json)>;
    let cases: Vec<(Mutation, &str, Option<&str>)> = vec![
        (
            Box::new(|e| e["event"] = json!("page_veiwed")),
            "unplanned_event",
            Some("event"),
        ),
        (
            Box::new(|e| {
                e.as_object_mut().unwrap().remove("message_id");
            }),
            "missing_required",
            Some("message_id"),
        ),
        (
            Box::new(|e| e["properties"]["model_id"] = json!(5)),
            "type_mismatch",
            Some("properties.model_id"),
        ),
        (
            Box::new(|e| e["properties"]["colour"] = json!("red")),
            "additional_property",
            Some("properties.colour"),
        ),
        (
            Box::new(|e| e["properties"]["page_type"] = json!("checkout")),
            "invalid_value",
            Some("properties.page_type"),
        ),
        (
            Box::new(|e| e["platform"] = json!("tv")),
            "invalid_value",
            Some("platform"),
        ),
        (
            Box::new(|e| e["timestamp"] = json!("yesterday")),
            "invalid_value",
            Some("timestamp"),
        ),
        (Box::new(|e| *e = json!([1, 2])), "bad_json", None),
    ];
    for (mutate, reason, field) in cases {
        let mut event = page_view();
        mutate(&mut event);
        let err = enc.encode(&event).unwrap_err();
        assert_eq!((err.reason(), err.field()), (reason, field), "{err}");
    }
}

#[tokio::test]
async fn arrays_enums_ints_and_booleans_round_trip_through_apache_avro() {
    let (enc, dec) = codec().await;
    let mut visit = page_view();
    visit["event"] = json!("store_visited");
    visit["type"] = json!("track");
    visit["platform"] = json!("offline");
    visit["context"]["is_bot"] = json!(true);
    visit["properties"] = json!({"dealer_id": "d-9", "visit_type": "walk_in", "duration_minutes": -45, "models_seen": ["x5", "x3", "i4"]});
    let back = to_json(
        &dec.decode(&enc.encode(&visit).unwrap().bytes)
            .await
            .unwrap()
            .value,
    );
    assert_eq!(back["properties"], visit["properties"]);
    assert_eq!(back["context"]["is_bot"], true);
    assert_eq!(back["platform"], "offline");
    visit["properties"]["models_seen"] = json!([]);
    let back = to_json(
        &dec.decode(&enc.encode(&visit).unwrap().bytes)
            .await
            .unwrap()
            .value,
    );
    assert_eq!(back["properties"]["models_seen"], json!([]));
    let mut call = page_view();
    call["event"] = json!("call_completed");
    call["properties"] = json!({"direction": "outbound", "outcome": "appointment_set", "duration_seconds": 184, "agent_id": null});
    let back = to_json(
        &dec.decode(&enc.encode(&call).unwrap().bytes)
            .await
            .unwrap()
            .value,
    );
    assert_eq!(
        back["properties"],
        json!({"dealer_id": null, "direction": "outbound", "outcome": "appointment_set", "duration_seconds": 184, "agent_id": null})
    );
}

#[test]
fn framing_is_length_checked() {
    assert_eq!(split_frame(&[0, 0, 0]), Err(FrameError::TooShort(3)));
    assert_eq!(split_frame(&[1, 0, 0, 0, 7]), Err(FrameError::BadMagic(1)));
    assert_eq!(split_frame(&[0, 0, 0, 1, 2, 9]), Ok((258, &[9][..])));
}

#[tokio::test]
async fn unknown_schema_id_is_a_typed_error() {
    let (_, dec) = codec().await;
    let err = dec.decode(&[0, 0, 0, 0x7f, 0xff, 2]).await.unwrap_err();
    assert!(
        matches!(err, DecodeError::Resolve { id: 32767, .. }),
        "{err}"
    );
}
