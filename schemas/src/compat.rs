//! Compatibility of each version with every earlier one (BACKWARD_TRANSITIVE:
//! the new schema must read data written with any older one), plus the one
//! forward rule consumers need during a rolling upgrade: a field the old
//! schema required may not disappear.

use apache_avro::{
    schema::{RecordSchema, Schema},
    schema_compatibility::SchemaCompatibility,
};

use crate::{
    plan::{Plan, SchemaVersion},
    problem::Problem,
};

pub fn check_plan(plan: &Plan) -> Vec<Problem> {
    let mut problems = Vec::new();
    for subject in plan.all_subjects() {
        for (i, new) in subject.versions.iter().enumerate() {
            for old in &subject.versions[..i] {
                problems.extend(check_pair(old, new));
            }
        }
    }
    problems
}

/// Problems reading `old` data with `new`, reported against `new`'s file.
pub fn check_pair(old: &SchemaVersion, new: &SchemaVersion) -> Vec<Problem> {
    incompatibilities(&old.schema, &new.schema)
        .into_iter()
        .map(|(field, rule, msg)| {
            let p = Problem::new(&new.file, rule, format!("{msg} (against v{})", old.version));
            if field.is_empty() { p } else { p.at(field) }
        })
        .collect()
}

/// Field-named findings from [`diff`]; when it finds none, Avro's own
/// resolution check has the last word.
pub fn incompatibilities(old: &Schema, new: &Schema) -> Vec<(String, &'static str, String)> {
    let mut found = diff(old, new, "");
    if found.is_empty()
        && let Err(e) = SchemaCompatibility::can_read(old, new)
    {
        found.push((
            String::new(),
            "backward_incompatible",
            format!("cannot read data written with the earlier schema: {e}"),
        ));
    }
    found
}

/// Schema-aware comparison that names the field at fault.
pub fn diff(old: &Schema, new: &Schema, path: &str) -> Vec<(String, &'static str, String)> {
    match (old, new) {
        (Schema::Record(o), Schema::Record(n)) => diff_records(o, n, path),
        (Schema::Enum(o), Schema::Enum(n)) => {
            let removed: Vec<&String> = o
                .symbols
                .iter()
                .filter(|s| !n.symbols.contains(s))
                .collect();
            if !removed.is_empty() && n.default.is_none() {
                vec![(
                    path.to_owned(),
                    "enum_symbol_removed",
                    format!(
                        "symbols {removed:?} were removed and the enum has no default to read them as"
                    ),
                )]
            } else {
                Vec::new()
            }
        }
        (Schema::Union(o), Schema::Union(n)) => {
            let mut out = Vec::new();
            for ov in o.variants() {
                match n.variants().iter().find(|nv| same_kind(ov, nv)) {
                    Some(nv) => out.extend(diff(ov, nv, path)),
                    None if n.variants().iter().any(|nv| promotes(ov, nv)) => {}
                    None => out.push((
                        path.to_owned(),
                        "type_changed",
                        format!("union branch {} was removed", kind(ov)),
                    )),
                }
            }
            out
        }
        (o, Schema::Union(n)) => match n.variants().iter().find(|nv| same_kind(o, nv)) {
            Some(nv) => diff(o, nv, path),
            None if n.variants().iter().any(|nv| promotes(o, nv)) => Vec::new(),
            None => vec![(
                path.to_owned(),
                "type_changed",
                format!("type changed from {} to a union without it", kind(o)),
            )],
        },
        (Schema::Array(o), Schema::Array(n)) => diff(&o.items, &n.items, path),
        (Schema::Map(o), Schema::Map(n)) => diff(&o.types, &n.types, path),
        (o, n) if same_kind(o, n) || promotes(o, n) => Vec::new(),
        (o, n) => vec![(
            path.to_owned(),
            "type_changed",
            format!("type changed from {} to {}", kind(o), kind(n)),
        )],
    }
}

fn diff_records(
    o: &RecordSchema,
    n: &RecordSchema,
    path: &str,
) -> Vec<(String, &'static str, String)> {
    let mut out = Vec::new();
    if o.name.fullname(None) != n.name.fullname(None) {
        out.push((
            path.trim_end_matches('.').to_owned(),
            "record_renamed",
            format!(
                "record {} was renamed to {}",
                o.name.fullname(None),
                n.name.fullname(None)
            ),
        ));
        return out;
    }
    let prefix = if path.is_empty() {
        String::new()
    } else {
        format!("{path}.")
    };
    for nf in &n.fields {
        let field_path = format!("{prefix}{}", nf.name);
        let old = o
            .fields
            .iter()
            .find(|of| of.name == nf.name || nf.aliases.contains(&of.name));
        match old {
            Some(of) => out.extend(diff(&of.schema, &nf.schema, &field_path)),
            None if nf.default.is_none() => out.push((
                field_path,
                "field_added_without_default",
                "new field has no default, so data written before it existed cannot be read"
                    .to_owned(),
            )),
            None => {}
        }
    }
    for of in &o.fields {
        let kept = n
            .fields
            .iter()
            .any(|nf| nf.name == of.name || nf.aliases.contains(&of.name));
        if !kept && of.default.is_none() {
            out.push((
                format!("{prefix}{}", of.name),
                "field_removed_without_default",
                "field was removed but had no default, so consumers still on the earlier version cannot read new data".to_owned(),
            ));
        }
    }
    out
}

fn same_kind(a: &Schema, b: &Schema) -> bool {
    match (a, b) {
        (Schema::Record(x), Schema::Record(y)) => x.name.name() == y.name.name(),
        (Schema::Enum(x), Schema::Enum(y)) => x.name.name() == y.name.name(),
        (Schema::Fixed(x), Schema::Fixed(y)) => x.name.name() == y.name.name() && x.size == y.size,
        _ => std::mem::discriminant(a) == std::mem::discriminant(b),
    }
}

/// Avro's type promotions (a reader of `b` can read data written as `a`).
fn promotes(a: &Schema, b: &Schema) -> bool {
    matches!(
        (a, b),
        (Schema::Int, Schema::Long | Schema::Float | Schema::Double)
            | (Schema::Long, Schema::Float | Schema::Double)
            | (Schema::Float, Schema::Double)
            | (Schema::String, Schema::Bytes)
            | (Schema::Bytes, Schema::String)
    )
}

fn kind(s: &Schema) -> String {
    match s {
        Schema::Record(r) => format!("record {}", r.name.name()),
        Schema::Enum(e) => format!("enum {}", e.name.name()),
        Schema::Union(_) => "union".to_owned(),
        Schema::Array(_) => "array".to_owned(),
        Schema::Map(_) => "map".to_owned(),
        other => format!("{other:?}")
            .split(['(', ' ', '{'])
            .next()
            .unwrap_or("?")
            .to_lowercase(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> Schema {
        Schema::parse_str(json).unwrap()
    }

    fn rules(old: &str, new: &str) -> Vec<(String, &'static str)> {
        diff(&parse(old), &parse(new), "")
            .into_iter()
            .map(|(f, r, _)| (f, r))
            .collect()
    }

    const BASE: &str = r#"{"type":"record","name":"E","fields":[{"name":"a","type":"string"},{"name":"k","type":{"type":"enum","name":"K","symbols":["x","y"]}}]}"#;

    #[test]
    fn catches_each_breaking_change_and_names_the_field() {
        let added = r#"{"type":"record","name":"E","fields":[{"name":"a","type":"string"},{"name":"k","type":{"type":"enum","name":"K","symbols":["x","y"]}},{"name":"b","type":"int"}]}"#;
        assert_eq!(
            rules(BASE, added),
            vec![("b".into(), "field_added_without_default")]
        );
        let removed = r#"{"type":"record","name":"E","fields":[{"name":"k","type":{"type":"enum","name":"K","symbols":["x","y"]}}]}"#;
        assert_eq!(
            rules(BASE, removed),
            vec![("a".into(), "field_removed_without_default")]
        );
        let retyped = r#"{"type":"record","name":"E","fields":[{"name":"a","type":"int"},{"name":"k","type":{"type":"enum","name":"K","symbols":["x","y"]}}]}"#;
        assert_eq!(rules(BASE, retyped), vec![("a".into(), "type_changed")]);
        let symbol = r#"{"type":"record","name":"E","fields":[{"name":"a","type":"string"},{"name":"k","type":{"type":"enum","name":"K","symbols":["x"]}}]}"#;
        assert_eq!(
            rules(BASE, symbol),
            vec![("k".into(), "enum_symbol_removed")]
        );
        let renamed = BASE.replacen("\"E\"", "\"F\"", 1);
        assert_eq!(
            rules(BASE, &renamed),
            vec![(String::new(), "record_renamed")]
        );
    }

    #[test]
    fn allows_what_avro_resolution_allows() {
        let ok = r#"{"type":"record","name":"E","fields":[{"name":"a","type":["null","string"],"default":null},{"name":"k","type":{"type":"enum","name":"K","symbols":["x","y","z"]}},{"name":"b","type":"long","default":0}]}"#;
        assert!(rules(BASE, ok).is_empty());
        let symbol_with_default = r#"{"type":"record","name":"E","fields":[{"name":"a","type":"string"},{"name":"k","type":{"type":"enum","name":"K","symbols":["x"],"default":"x"}}]}"#;
        assert!(rules(BASE, symbol_with_default).is_empty());
        let promoted = r#"{"type":"record","name":"E","fields":[{"name":"a","type":"string"},{"name":"n","type":"int","default":0}]}"#;
        let wider = r#"{"type":"record","name":"E","fields":[{"name":"a","type":"string"},{"name":"n","type":"long","default":0}]}"#;
        assert!(rules(promoted, wider).is_empty());
    }
}
