//! Compaction of the identity log. Kafka's own compaction keeps the last
//! record per key, and a link's key is its sorted ids, so on its own it only
//! drops repeats of the same link. A compaction pass reads the log to a
//! marker it appends, writes each lead once as a [`Component`] (its root,
//! its members and the roots of leads that merged into it), then writes
//! tombstones for every earlier key it covered. Kafka then removes the
//! covered records, and a reader rebuilds the same graph from far fewer.
//!
//! Why this is safe while scorers keep appending: linking is idempotent and
//! order-free, so the new records change no lead for a reader that has
//! already applied the old ones. Every tombstone comes after the component
//! records that cover its ids, and those are never tombstoned by the same
//! pass. A link appended during the pass sits after the marker and is
//! neither read nor tombstoned. Two passes at once are safe too: each only
//! tombstones keys it has covered itself.

use std::collections::{BTreeMap, BTreeSet};

use prost::Message as _;

use crate::{
    identity::IdentityGraph,
    proto::{Component, Link},
};

/// Key prefix of component records: `\0component:<root>#<chunk>`.
pub const COMPONENT_KEY_PREFIX: &str = "\u{0}component:";

/// Key of the marker record a pass appends to find the log's end.
pub const MARKER_KEY: &str = "\u{0}compaction_marker";

/// Most identifiers in one component record (a lead with more takes
/// several), keeping records well under Kafka's 1 MB default.
pub const MAX_IDS_PER_RECORD: usize = 10_000;

/// The key and value of the link record for `ids`, as stitchers append
/// it: keyed by the sorted ids, so Kafka's compaction keeps one copy of a
/// link appended twice.
pub fn link_record(ids: &[String]) -> (String, Vec<u8>) {
    let mut sorted = ids.to_vec();
    sorted.sort();
    let value = Link { ids: ids.to_vec() }.encode_to_vec();
    (sorted.join("|"), value)
}

/// One record of the identity log, as readers apply it.
#[derive(Debug, PartialEq)]
pub enum LogRecord {
    Link(Vec<String>),
    Component(Component),
    /// A tombstone or a compaction marker: nothing to apply.
    Nothing,
}

/// Reads one identity-log record by its key.
pub fn read(key: Option<&[u8]>, payload: Option<&[u8]>) -> Result<LogRecord, prost::DecodeError> {
    let Some(payload) = payload.filter(|p| !p.is_empty()) else {
        return Ok(LogRecord::Nothing);
    };
    if key.is_some_and(|k| k.starts_with(COMPONENT_KEY_PREFIX.as_bytes())) {
        return Ok(LogRecord::Component(Component::decode(payload)?));
    }
    Ok(LogRecord::Link(Link::decode(payload)?.ids))
}

/// Applies one record to the graph; false for a link without ids.
pub fn apply(graph: &mut IdentityGraph, record: &LogRecord) -> bool {
    match record {
        LogRecord::Link(ids) if ids.is_empty() => false,
        LogRecord::Link(ids) => {
            graph.link(ids);
            true
        }
        LogRecord::Component(c) => {
            graph.apply_component(c);
            true
        }
        LogRecord::Nothing => true,
    }
}

/// What a pass writes, in this order: the component records, then the
/// tombstones.
#[derive(Debug, Default)]
pub struct Plan {
    pub writes: Vec<(String, Vec<u8>)>,
    pub tombstones: Vec<String>,
    /// Identifiers and bytes of the live records read, and of those written.
    pub ids_before: usize,
    pub bytes_before: usize,
    pub bytes_after: usize,
}

/// Plans a pass over the log's records up to the marker, in log order
/// (key, value; `None` is a tombstone).
pub fn plan(log: impl IntoIterator<Item = (String, Option<Vec<u8>>)>) -> Plan {
    let mut graph = IdentityGraph::default();
    // Live key → its size and an identifier it holds (none for a marker).
    let mut live: BTreeMap<String, (usize, Option<String>)> = BTreeMap::new();
    let mut ids_before = 0;
    for (key, value) in log {
        let record = read(Some(key.as_bytes()), value.as_deref());
        match (&value, record) {
            (None, _) => {
                live.remove(&key);
            }
            (Some(v), Ok(record)) => {
                let some_id = match &record {
                    LogRecord::Link(ids) => {
                        ids_before += ids.len();
                        ids.first().cloned()
                    }
                    LogRecord::Component(c) => Some(c.root.clone()),
                    LogRecord::Nothing => None,
                };
                apply(&mut graph, &record);
                live.insert(key.clone(), (key.len() + v.len(), some_id));
            }
            // Unreadable: left alone, neither applied nor covered.
            (Some(_), Err(e)) => {
                tracing::error!(%key, error = %e, "unreadable identity record left as it is")
            }
        }
    }
    // A lead that one live record already holds whole is left as it is: that
    // record alone rebuilds it (anything else that touched it was a repeat
    // of the same key). Rewriting it would only add a record.
    let mut records_of: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut markers = Vec::new();
    for (key, (_, id)) in &live {
        match id.as_ref().and_then(|id| graph.lead_root(id)) {
            Some(root) => records_of.entry(root).or_default().push(key.clone()),
            None => markers.push(key.clone()),
        }
    }
    let mut plan = Plan {
        ids_before,
        bytes_before: live.values().map(|(n, _)| n).sum(),
        ..Plan::default()
    };
    let mut written = BTreeSet::new();
    for c in graph.components() {
        let records = records_of.remove(&c.root).unwrap_or_default();
        if let [only] = records.as_slice() {
            plan.bytes_after += live[only].0;
            continue;
        }
        for (key, record) in chunks(c) {
            let value = record.encode_to_vec();
            plan.bytes_after += key.len() + value.len();
            written.insert(key.clone());
            plan.writes.push((key, value));
        }
        plan.tombstones
            .extend(records.into_iter().filter(|k| !written.contains(k)));
    }
    plan.tombstones.extend(markers);
    plan
}

/// A lead's component records: every one names the root, so each applies
/// on its own.
fn chunks(c: Component) -> Vec<(String, Component)> {
    let Component {
        root,
        members,
        former_roots,
    } = c;
    let n = (members.len() + former_roots.len())
        .div_ceil(MAX_IDS_PER_RECORD)
        .max(1);
    let mut out: Vec<(String, Component)> = (0..n)
        .map(|i| {
            (
                format!("{COMPONENT_KEY_PREFIX}{root}#{i}"),
                Component {
                    root: root.clone(),
                    ..Component::default()
                },
            )
        })
        .collect();
    for (i, m) in members.into_iter().enumerate() {
        out[i / MAX_IDS_PER_RECORD].1.members.push(m);
    }
    // Former roots fill up from the last chunk, which has room left.
    for (i, f) in former_roots.into_iter().enumerate() {
        out[n - 1 - (i / MAX_IDS_PER_RECORD).min(n - 1)]
            .1
            .former_roots
            .push(f);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::lead_id_of;

    /// A history with merges across platforms and leads that merge into
    /// leads that merge again: (key, value) records as the stitcher writes.
    fn history(people: usize) -> Vec<(String, Option<Vec<u8>>)> {
        let mut log = Vec::new();
        let mut link = |ids: Vec<String>| {
            let (key, value) = link_record(&ids);
            log.push((key, Some(value)));
        };
        for p in 0..people {
            let web = format!("a:web-{p}");
            let app = format!("a:app-{p}");
            let union = format!("w:wx-{p}");
            let phone = format!("p:ph-{p}");
            link(vec![app.clone(), union.clone()]);
            link(vec![web.clone(), phone.clone()]);
            // The same link again (two instances raced), then the merge.
            link(vec![app.clone(), union.clone()]);
            link(vec![union.clone(), phone.clone(), format!("u:user-{p}")]);
            if p % 3 == 0 {
                link(vec![format!("a:web-{p}-b"), phone.clone()]);
            }
            if p % 7 == 0 && p > 0 {
                // Two people turn out to be one (a shared phone).
                link(vec![phone.clone(), format!("p:ph-{}", p - 1)]);
            }
        }
        log
    }

    fn rebuild(log: &[(String, Option<Vec<u8>>)]) -> IdentityGraph {
        let mut g = IdentityGraph::default();
        for (k, v) in log {
            apply(&mut g, &read(Some(k.as_bytes()), v.as_deref()).unwrap());
        }
        g
    }

    /// What Kafka keeps of a log once compaction ran: the last record of
    /// each key, in log order, and no key whose last record is a tombstone.
    fn kafka_compacted(log: &[(String, Option<Vec<u8>>)]) -> Vec<(String, Option<Vec<u8>>)> {
        let last: BTreeMap<&str, usize> = log
            .iter()
            .enumerate()
            .map(|(i, (k, _))| (k.as_str(), i))
            .collect();
        log.iter()
            .enumerate()
            .filter(|(i, (k, v))| last[k.as_str()] == *i && v.is_some())
            .map(|(_, r)| r.clone())
            .collect()
    }

    fn assert_same_leads(a: &mut IdentityGraph, b: &mut IdentityGraph, ids: &[String]) {
        assert_eq!(a.len(), b.len(), "identifiers");
        for id in ids {
            let lead = a.lead_of(id);
            assert_eq!(lead, b.lead_of(id), "{id}");
            // Every lead id this identifier ever gave leads to the same lead,
            // with the same leads absorbed.
            let old = lead_id_of(id);
            assert_eq!(a.current_lead(&old), b.current_lead(&old), "{id}");
            let mut x = a.absorbed_into(&old).to_vec();
            let mut y = b.absorbed_into(&old).to_vec();
            x.sort();
            y.sort();
            assert_eq!(x, y, "absorbed into {old}");
        }
    }

    #[test]
    fn a_compacted_log_rebuilds_the_same_leads_merges_and_old_lead_ids() {
        let mut log = history(300);
        let ids: Vec<String> = {
            let mut g = rebuild(&log);
            let mut all: Vec<String> = g
                .components()
                .into_iter()
                .flat_map(|c| std::iter::once(c.root).chain(c.members))
                .collect();
            all.sort();
            all
        };
        let mut before = rebuild(&log);
        let pass = plan(log.clone());
        assert!(
            pass.bytes_after < pass.bytes_before,
            "{} -> {}",
            pass.bytes_before,
            pass.bytes_after
        );
        log.extend(
            pass.writes
                .iter()
                .map(|(k, v)| (k.clone(), Some(v.clone()))),
        );
        // A reader between the writes and the tombstones, and one after.
        assert_same_leads(&mut before, &mut rebuild(&log), &ids);
        log.extend(pass.tombstones.iter().map(|k| (k.clone(), None)));
        // Links appended while the pass ran land after its records.
        log.push((
            "a:late|a:web-5".into(),
            Some(
                Link {
                    ids: vec!["a:late".into(), "a:web-5".into()],
                }
                .encode_to_vec(),
            ),
        ));
        before.link(&["a:late".into(), "a:web-5".into()]);
        let mut ids = ids;
        ids.push("a:late".into());
        let compacted = kafka_compacted(&log);
        assert!(
            compacted.len() < history(300).len() / 2,
            "{} records left",
            compacted.len()
        );
        assert_same_leads(&mut before, &mut rebuild(&compacted), &ids);
        // A second pass over the compacted log changes nothing.
        let again = plan(compacted.clone());
        let mut twice = compacted;
        twice.extend(again.writes.into_iter().map(|(k, v)| (k, Some(v))));
        twice.extend(again.tombstones.into_iter().map(|k| (k, None)));
        assert_same_leads(&mut before, &mut rebuild(&kafka_compacted(&twice)), &ids);
    }

    #[test]
    fn leads_of_one_record_each_are_left_as_they_are() {
        let log: Vec<(String, Option<Vec<u8>>)> = (0..100)
            .map(|p| {
                let (k, v) = link_record(&[format!("a:web-{p}"), format!("w:wx-{p}")]);
                (k, Some(v))
            })
            .chain([(MARKER_KEY.to_owned(), Some(Vec::new()))])
            .collect();
        let pass = plan(log);
        assert!(
            pass.writes.is_empty(),
            "{} records written",
            pass.writes.len()
        );
        assert_eq!(pass.tombstones, vec![MARKER_KEY.to_owned()]);
        assert!(pass.bytes_after < pass.bytes_before);
    }

    #[test]
    fn a_lead_larger_than_a_record_is_split_and_every_part_names_the_root() {
        let members: Vec<String> = (0..25_000).map(|i| format!("a:{i:06}")).collect();
        let parts = chunks(Component {
            root: "a:".into(),
            members: members.clone(),
            former_roots: vec!["a:000001".into()],
        });
        assert_eq!(parts.len(), 3);
        assert!(
            parts
                .iter()
                .all(|(k, c)| c.root == "a:" && k.starts_with(COMPONENT_KEY_PREFIX))
        );
        let got: Vec<String> = parts.iter().flat_map(|(_, c)| c.members.clone()).collect();
        assert_eq!(got, members);
    }

    #[test]
    fn tombstones_and_markers_apply_nothing_and_records_read_by_key() {
        assert_eq!(read(Some(b"x"), None).unwrap(), LogRecord::Nothing);
        assert_eq!(
            read(Some(MARKER_KEY.as_bytes()), Some(b"")).unwrap(),
            LogRecord::Nothing
        );
        let link = Link {
            ids: vec!["a:1".into()],
        }
        .encode_to_vec();
        assert_eq!(
            read(Some(b"a:1"), Some(&link)).unwrap(),
            LogRecord::Link(vec!["a:1".into()])
        );
        let c = Component {
            root: "a:1".into(),
            members: vec!["u:2".into()],
            former_roots: vec![],
        };
        let key = format!("{COMPONENT_KEY_PREFIX}a:1#0");
        assert_eq!(
            read(Some(key.as_bytes()), Some(&c.encode_to_vec())).unwrap(),
            LogRecord::Component(c)
        );
    }
}
