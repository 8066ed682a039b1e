use std::collections::{BTreeMap, VecDeque};

use serde_json::{Value as Json, json};

use super::*;
use crate::{event::from_plan, identity::identifiers, rules::DEFAULT_TOML};

mod expiry;
mod lifecycle;
mod merges;
mod parity;

const T0: i64 = 1_795_305_600_000;
const PARTITIONS: i32 = 4;

/// Two partitions' worth of `by_lead` traffic, routed like the real topic.
struct Harness {
    graph: IdentityGraph,
    queues: Vec<VecDeque<(i64, String, Input)>>,
    next_offset: Vec<i64>,
    processors: Vec<Processor>,
    latest: BTreeMap<String, Json>,
}

fn partition_of(lead: &str) -> usize {
    (lead.bytes().map(u32::from).sum::<u32>() % PARTITIONS as u32) as usize
}

impl Harness {
    fn new() -> Self {
        let cfg = ScoringConfig::parse(DEFAULT_TOML).unwrap();
        Self {
            graph: IdentityGraph::default(),
            queues: (0..PARTITIONS).map(|_| VecDeque::new()).collect(),
            next_offset: vec![0; PARTITIONS as usize],
            // One processor per partition: as if every partition had its own instance.
            processors: (0..PARTITIONS)
                .map(|_| Processor::new(cfg.clone(), 3_600_000, false))
                .collect(),
            latest: BTreeMap::new(),
        }
    }

    fn push(&mut self, lead: String, input: Input) {
        let p = partition_of(&lead);
        let o = self.next_offset[p];
        self.next_offset[p] += 1;
        self.queues[p].push_back((o, lead, input));
    }

    /// What the stitcher does: link, resolve, route.
    fn stitch(&mut self, e: Json) {
        let ids = identifiers(&e);
        if ids.len() > 1 {
            self.graph.link(&ids);
        }
        let lead = self.graph.resolve(&ids);
        let event = from_plan(&e);
        let anonymous = self.graph.is_anonymous(&ids);
        self.push(lead, Input::Event { event, anonymous });
    }

    fn drain(&mut self) {
        while let Some(p) = (0..PARTITIONS as usize).find(|p| !self.queues[*p].is_empty()) {
            let (offset, key, input) = self.queues[p].pop_front().unwrap();
            let outcome =
                self.processors[p].handle(p as i32, offset, &key, input, &mut self.graph, 0, None);
            for o in outcome.outputs {
                match o {
                    Output::Score { record, .. } => {
                        self.latest.insert(record.lead_id.clone(), record.to_json());
                    }
                    Output::Route(r) => {
                        let input = match r.body.unwrap() {
                            Body::Facts(f) => Input::Event {
                                anonymous: f.anonymous,
                                event: crate::event::from_facts(f).unwrap(),
                            },
                            Body::Event(_) => unreachable!("the processor forwards facts"),
                            Body::MergeRequest(m) => Input::MergeRequest { into: m.into },
                            Body::MergeState(m) => Input::MergeState {
                                from: m.from,
                                state: m.state,
                            },
                        };
                        self.push(r.lead_id, input);
                    }
                }
            }
        }
    }
}

fn ev(id: &str, anon: &str, extra: Json, event: &str, page_type: &str, minutes: i64) -> Json {
    let mut e = json!({"message_id": id, "event": event, "anonymous_id": anon,
        "timestamp": T0 + minutes * 60_000, "properties": {"page_type": page_type}});
    e.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    e
}
