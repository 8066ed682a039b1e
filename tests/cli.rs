//! The `leadstream` binary's governance commands, as a developer runs them.

use std::process::Command;

fn leadstream(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_leadstream"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap()
}

#[test]
fn schemas_check_passes_on_the_shipped_plan() {
    let out = leadstream(&["schemas", "check"]);
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.stdout.is_empty());
}

#[test]
fn schemas_check_fails_with_one_line_per_problem() {
    let out = leadstream(&[
        "schemas",
        "check",
        "--no-docs",
        "--dir",
        "schemas/tests/fixtures/field_removed_without_default",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert_eq!(
        stdout.lines().collect::<Vec<_>>(),
        [
            "avro/alias/v2.avsc: properties.previous_id: field_removed_without_default: field was removed but had no default, so consumers still on the earlier version cannot read new data (against v1)"
        ]
    );
}

#[test]
fn committed_docs_match_the_rendering() {
    let out = leadstream(&["schemas", "docs", "--stdout"]);
    assert!(out.status.success());
    let committed = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/schemas/TRACKING_PLAN.md"
    ))
    .unwrap();
    assert_eq!(String::from_utf8(out.stdout).unwrap(), committed);
}
