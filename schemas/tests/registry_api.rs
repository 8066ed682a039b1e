//! The registry's Confluent REST subset, over real HTTP, plus the HTTP
//! resolver and `publish` pointed at it.

use std::sync::Arc;

use leadstream_schemas::{
    Plan,
    publish::publish,
    registry,
    resolver::{HttpResolver, SchemaResolver},
};
use serde_json::{Value, json};

const CT: &str = "application/vnd.schemaregistry.v1+json";

async fn start() -> (String, Arc<Plan>) {
    let plan = Arc::new(Plan::embedded().unwrap());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(registry::serve(
        listener,
        Arc::clone(&plan),
        std::future::pending(),
    ));
    (url, plan)
}

async fn get(url: &str) -> (u16, Value) {
    let r = reqwest::get(url).await.unwrap();
    let status = r.status().as_u16();
    assert_eq!(r.headers()["content-type"], CT);
    (status, r.json().await.unwrap())
}

async fn post(url: &str, body: Value) -> (u16, Value) {
    let r = reqwest::Client::new()
        .post(url)
        .header("content-type", CT)
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

#[tokio::test]
async fn serves_subjects_versions_and_ids() {
    let (url, plan) = start().await;
    let (status, subjects) = get(&format!("{url}/subjects")).await;
    assert_eq!(status, 200);
    assert!(
        subjects
            .as_array()
            .unwrap()
            .contains(&json!("leadstream.events.PageViewed"))
    );
    assert_eq!(
        get(&format!(
            "{url}/subjects/leadstream.events.PageViewed/versions"
        ))
        .await,
        (200, json!([1, 2]))
    );

    let (status, latest) = get(&format!(
        "{url}/subjects/leadstream.events.PageViewed/versions/latest"
    ))
    .await;
    assert_eq!(status, 200);
    let pinned = plan.id_of("leadstream.events.PageViewed", 2).unwrap();
    assert_eq!(latest["version"], 2);
    assert_eq!(latest["id"], pinned);

    let (_, by_id) = get(&format!("{url}/schemas/ids/{pinned}")).await;
    assert_eq!(by_id["schema"], latest["schema"]);
    assert_eq!(
        get(&format!("{url}/schemas/ids/{pinned}/versions")).await,
        (
            200,
            json!([{"subject": "leadstream.events.PageViewed", "version": 2}])
        )
    );
    assert_eq!(
        get(&format!("{url}/config")).await,
        (200, json!({"compatibilityLevel": "BACKWARD_TRANSITIVE"}))
    );
    assert_eq!(
        get(&format!("{url}/config/leadstream.events.Alias")).await,
        (200, json!({"compatibilityLevel": "BACKWARD_TRANSITIVE"}))
    );
}

#[tokio::test]
async fn errors_use_confluent_codes() {
    let (url, _) = start().await;
    let (status, body) = get(&format!("{url}/subjects/nope/versions")).await;
    assert_eq!((status, body["error_code"].as_i64()), (404, Some(40401)));
    let (status, body) = get(&format!(
        "{url}/subjects/leadstream.events.Alias/versions/9"
    ))
    .await;
    assert_eq!((status, body["error_code"].as_i64()), (404, Some(40402)));
    let (status, body) = get(&format!("{url}/schemas/ids/99999")).await;
    assert_eq!((status, body["error_code"].as_i64()), (404, Some(40403)));
    let (status, body) = get(&format!(
        "{url}/subjects/leadstream.events.Alias/versions/zero"
    ))
    .await;
    assert_eq!((status, body["error_code"].as_i64()), (422, Some(42202)));
    let (status, body) = post(
        &format!("{url}/subjects/leadstream.events.Alias/versions"),
        json!({"schema": "{not avro"}),
    )
    .await;
    assert_eq!((status, body["error_code"].as_i64()), (422, Some(42201)));
}

#[tokio::test]
async fn register_returns_pinned_ids_and_refuses_changes() {
    let (url, plan) = start().await;
    let v1 = &plan.subjects["page_viewed"].versions[0];
    let subject_url = format!("{url}/subjects/leadstream.events.PageViewed");
    let (status, body) = post(
        &format!("{subject_url}/versions"),
        json!({"schema": v1.text}),
    )
    .await;
    assert_eq!(
        (status, body),
        (200, json!({"id": plan.id_of(&v1.subject, 1)}))
    );

    let (status, body) = post(&subject_url, json!({"schema": v1.text})).await;
    assert_eq!((status, body["version"].as_u64()), (200, Some(1)));

    // A compatible new version (optional field) is still refused: governance is code review.
    let mut compatible: Value = v1.json.clone();
    compatible["fields"]
        .as_array_mut()
        .unwrap()
        .push(json!({"name": "extra", "type": ["null", "string"], "default": null, "doc": "x"}));
    let (status, body) = post(
        &format!("{subject_url}/versions"),
        json!({"schema": compatible.to_string()}),
    )
    .await;
    assert_eq!((status, body["error_code"].as_i64()), (422, Some(42205)));
    assert!(
        body["message"].as_str().unwrap().contains("schemas/avro"),
        "{body}"
    );

    // An incompatible one gets 409 with the reason.
    let mut breaking: Value = v1.json.clone();
    breaking["fields"]
        .as_array_mut()
        .unwrap()
        .push(json!({"name": "extra", "type": "string", "doc": "x"}));
    let (status, body) = post(
        &format!("{subject_url}/versions"),
        json!({"schema": breaking.to_string()}),
    )
    .await;
    assert_eq!((status, body["error_code"].as_i64()), (409, Some(409)));
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("field_added_without_default"),
        "{body}"
    );

    let (status, body) = post(
        &format!(
            "{url}/compatibility/subjects/leadstream.events.PageViewed/versions/latest?verbose=true"
        ),
        json!({"schema": breaking.to_string()}),
    )
    .await;
    assert_eq!(
        (status, body["is_compatible"].as_bool()),
        (200, Some(false))
    );
    assert_eq!(body["messages"].as_array().unwrap().len(), 1);
    let (_, body) = post(
        &format!("{url}/compatibility/subjects/leadstream.events.PageViewed/versions/1"),
        json!({"schema": compatible.to_string()}),
    )
    .await;
    assert_eq!(body, json!({"is_compatible": true}));
}

#[tokio::test]
async fn http_resolver_and_publish_work_against_a_confluent_api() {
    let (url, plan) = start().await;
    let resolver = HttpResolver::new(&url).unwrap();
    let v2 = plan.subjects["page_viewed"].latest();
    let id = resolver.id_for(&v2.subject, &v2.text).await.unwrap();
    assert_eq!(Some(id), plan.id_of(&v2.subject, 2));
    let fetched = resolver.schema_by_id(id).await.unwrap();
    assert_eq!(fetched.subject, "leadstream.events.PageViewed");
    assert!(
        std::ptr::eq(
            fetched.schema,
            resolver.schema_by_id(id).await.unwrap().schema
        ),
        "cached, parsed once"
    );
    assert!(matches!(
        resolver.schema_by_id(4242).await,
        Err(leadstream_schemas::ResolveError::UnknownId(4242))
    ));

    // Our registry is read-only, so publish (without PUT /config) returns the pinned ids.
    let published = publish(&plan, &resolver, false).await.unwrap();
    assert_eq!(published.len(), plan.versions().count());
    for p in published {
        assert_eq!(Some(p.id), plan.id_of(&p.subject, p.version));
    }
}
