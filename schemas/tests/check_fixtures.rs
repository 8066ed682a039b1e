//! `schemas check` against fixtures holding one kind of bad change each.

use std::path::{Path, PathBuf};

use leadstream_schemas::{Problem, check};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn problems(name: &str) -> Vec<Problem> {
    check(&fixture(name), false).unwrap()
}

fn found(problems: &[Problem]) -> Vec<(&str, Option<&str>, &'static str)> {
    problems
        .iter()
        .map(|p| (p.file.as_str(), p.field.as_deref(), p.rule))
        .collect()
}

#[test]
fn each_breaking_change_fails_naming_file_field_and_rule() {
    let cases = [
        (
            "field_removed_without_default",
            Some("properties.previous_id"),
            "field_removed_without_default",
        ),
        (
            "field_added_without_default",
            Some("properties.link_reason"),
            "field_added_without_default",
        ),
        (
            "type_changed",
            Some("properties.previous_id"),
            "type_changed",
        ),
        (
            "enum_symbol_removed",
            Some("platform"),
            "enum_symbol_removed",
        ),
        ("record_renamed", None, "record_renamed"),
    ];
    for (name, field, rule) in cases {
        let problems = problems(name);
        assert!(
            found(&problems).contains(&("avro/alias/v2.avsc", field, rule)),
            "{name}: expected {rule} on {field:?}, got {problems:#?}"
        );
    }
}

#[test]
fn lint_rules_fire() {
    let problems = problems("lint");
    let found = found(&problems);
    for expected in [
        ("avro/alias/v1.avsc", None, "missing_attribute"),
        (
            "avro/alias/v1.avsc",
            Some("properties.customerPhone"),
            "field_name",
        ),
        (
            "avro/alias/v1.avsc",
            Some("properties.customerPhone"),
            "pii_untagged",
        ),
        (
            "avro/alias/v1.avsc",
            Some("properties.wechat_id"),
            "missing_doc",
        ),
        (
            "avro/alias/v1.avsc",
            Some("properties.wechat_id"),
            "pii_untagged",
        ),
        ("avro/aliased/v1.avsc", None, "near_duplicate_event"),
    ] {
        assert!(
            found.contains(&expected),
            "missing {expected:?} in {found:#?}"
        );
    }
    assert_eq!(found.len(), 6, "{found:#?}");
}

#[test]
fn lock_drift_fails() {
    let problems = problems("lock_drift");
    assert_eq!(
        found(&problems),
        vec![
            ("avro/alias/v1.avsc", None, "published_version_edited"),
            ("avro/alias/v2.avsc", None, "lock_missing"),
        ]
    );
}

#[test]
fn compatible_evolution_and_the_shipped_plan_are_clean() {
    assert_eq!(problems("compatible_change"), vec![]);
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR"));
    assert_eq!(check(shipped, true).unwrap(), vec![]);
}

#[test]
fn problem_lines_read_file_field_rule_message() {
    let p = &problems("type_changed")[0];
    assert_eq!(
        p.to_string(),
        "avro/alias/v2.avsc: properties.previous_id: type_changed: type changed from string to int (against v1)"
    );
}
