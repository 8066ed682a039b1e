//! Identity stitching: the app, mini-program and web ids of one person
//! (user id, WeChat union id, phone hash, anonymous ids, aliases) form one
//! lead. Union-find with a canonical lead id that does not depend on the
//! order links arrive in (the smallest identifier of the set), so replays
//! and different instances agree.

use std::collections::HashMap;

use crate::{
    event::{PlanField, PlanFields},
    proto::Component,
};

/// Prefix of anonymous (device, cookie, mini-program) identifiers.
pub const ANONYMOUS: &str = "a:";

/// Identifiers an event carries, typed so ids from different namespaces
/// never collide ("u:" user, "w:" WeChat union, "p:" phone hash, "a:" anonymous).
pub fn identifiers<E: PlanFields + ?Sized>(event: &E) -> Vec<String> {
    let mut out = Vec::with_capacity(4);
    let mut push = |prefix: &str, v: Option<&str>| {
        if let Some(s) = v.filter(|s| !s.is_empty()) {
            out.push(format!("{prefix}{s}"));
        }
    };
    push("u:", event.str_at(PlanField::UserId));
    push("w:", event.str_at(PlanField::UnionId));
    push("p:", event.str_at(PlanField::PhoneHash));
    push(ANONYMOUS, event.str_at(PlanField::AnonymousId));
    if event.str_at(PlanField::Event) == Some("alias") {
        // The earlier id of an alias is usually an anonymous id.
        push(ANONYMOUS, event.str_at(PlanField::PreviousId));
    }
    out
}

/// The result of linking an event's identifiers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Linked {
    pub lead_id: String,
    /// Leads that ceased to exist because they merged into `lead_id`.
    pub merged: Vec<String>,
}

#[derive(Debug, Default, Clone)]
pub struct IdentityGraph {
    parent: HashMap<String, String>,
    /// Lead id → the identifier it was derived from, for every identifier
    /// that was ever a root, so a lead id can be followed to today's lead.
    canonical: HashMap<String, String>,
    /// Root → the lead ids that merged into it (transitively).
    absorbed: HashMap<String, Vec<String>>,
}

impl IdentityGraph {
    fn find(&mut self, id: &str) -> String {
        let mut root = id.to_owned();
        while let Some(p) = self.parent.get(&root).filter(|p| **p != root) {
            root = p.clone();
        }
        // Path compression keeps later lookups short.
        let mut cur = id.to_owned();
        while cur != root {
            let next = self.parent.insert(cur, root.clone()).expect("on the path");
            cur = next;
        }
        root
    }

    /// Links all `ids` into one lead and returns its id plus the leads that
    /// merged into it. Empty `ids` is a caller bug.
    pub fn link(&mut self, ids: &[String]) -> Linked {
        assert!(!ids.is_empty(), "an event needs at least one identifier");
        let mut roots: Vec<String> = ids
            .iter()
            .map(|id| {
                self.parent.entry(id.clone()).or_insert_with(|| id.clone());
                self.find(id)
            })
            .collect();
        roots.sort();
        roots.dedup();
        let canonical = roots[0].clone();
        for r in &roots {
            self.canonical
                .entry(lead_id_of(r))
                .or_insert_with(|| r.clone());
        }
        for r in &roots[1..] {
            self.parent.insert(r.clone(), canonical.clone());
            let mut moved = self.absorbed.remove(r).unwrap_or_default();
            moved.push(lead_id_of(r));
            self.absorbed
                .entry(canonical.clone())
                .or_default()
                .extend(moved);
        }
        Linked {
            lead_id: lead_id_of(&canonical),
            merged: roots[1..].iter().map(|r| lead_id_of(r)).collect(),
        }
    }

    pub fn lead_of(&mut self, id: &str) -> Option<String> {
        self.parent
            .contains_key(id)
            .then(|| lead_id_of(&self.find(id)))
    }

    /// The lead `lead_id` belongs to now: itself unless it merged into
    /// another lead. Lead ids the graph never saw are their own lead.
    pub fn current_lead(&mut self, lead_id: &str) -> String {
        match self.canonical.get(lead_id).cloned() {
            Some(id) => lead_id_of(&self.find(&id)),
            None => lead_id.to_owned(),
        }
    }

    /// Lead ids that merged (directly or through others) into `lead_id`,
    /// when it is a current lead.
    pub fn absorbed_into(&self, lead_id: &str) -> &[String] {
        self.canonical
            .get(lead_id)
            .and_then(|id| self.absorbed.get(id))
            .map_or(&[], Vec::as_slice)
    }

    /// Whether all `ids` already belong to one lead (linking them would
    /// change nothing).
    pub fn already_linked(&mut self, ids: &[String]) -> bool {
        let mut root = None;
        for id in ids {
            if !self.parent.contains_key(id) {
                return false;
            }
            let r = self.find(id);
            if root.get_or_insert_with(|| r.clone()) != &r {
                return false;
            }
        }
        true
    }

    /// Whether an event with these identifiers is anonymous: its only
    /// identifier is an anonymous id the graph has never linked, so nobody
    /// knows whose device it is.
    pub fn is_anonymous(&self, ids: &[String]) -> bool {
        matches!(ids, [only] if only.starts_with(ANONYMOUS) && !self.parent.contains_key(only))
    }

    /// The lead of an event with these identifiers, without changing the graph.
    pub fn resolve(&mut self, ids: &[String]) -> String {
        let first = ids.first().expect("an event needs at least one identifier");
        self.lead_of(first).unwrap_or_else(|| lead_id_of(first))
    }

    /// Applies a lead as a compaction wrote it: every member joins `root`'s
    /// lead, each former root as the separate lead it once was (so its old
    /// lead id still leads here and counts as absorbed). Members the graph
    /// does not know are attached without ever having been a root.
    pub fn apply_component(&mut self, c: &Component) {
        let root = c.root.clone();
        self.parent
            .entry(root.clone())
            .or_insert_with(|| root.clone());
        for f in &c.former_roots {
            if !self.parent.contains_key(f) {
                self.parent.insert(f.clone(), f.clone());
            }
            if self.find(f) != self.find(&root) {
                self.link(&[root.clone(), f.clone()]);
            }
        }
        for m in &c.members {
            if !self.parent.contains_key(m) {
                let r = self.find(&root);
                self.parent.insert(m.clone(), r);
            } else if self.find(m) != self.find(&root) {
                self.link(&[root.clone(), m.clone()]);
            }
        }
    }

    /// The root identifier of `id`'s lead, if the graph holds `id`.
    pub fn lead_root(&mut self, id: &str) -> Option<String> {
        self.parent.contains_key(id).then(|| self.find(id))
    }

    /// Every lead of the graph as (root, other members, former roots), in
    /// root order: what a compaction writes.
    pub fn components(&mut self) -> Vec<Component> {
        let ids: Vec<String> = self.parent.keys().cloned().collect();
        let mut by_root: std::collections::BTreeMap<String, Vec<String>> = Default::default();
        for id in ids {
            let r = self.find(&id);
            if r != id {
                by_root.entry(r).or_default().push(id);
            } else {
                by_root.entry(r).or_default();
            }
        }
        by_root
            .into_iter()
            .map(|(root, mut members)| {
                members.sort();
                let mut former_roots: Vec<String> = self
                    .absorbed
                    .get(&root)
                    .into_iter()
                    .flatten()
                    .filter_map(|lead| self.canonical.get(lead).cloned())
                    .collect();
                former_roots.sort();
                former_roots.dedup();
                Component {
                    root,
                    members,
                    former_roots,
                }
            })
            .collect()
    }

    pub fn len(&self) -> usize {
        self.parent.len()
    }

    pub fn is_empty(&self) -> bool {
        self.parent.is_empty()
    }
}

/// Lead ids are opaque: a stable hash of the canonical identifier, so no
/// personal id (even hashed) is exposed as the key sales see.
pub fn lead_id_of(canonical: &str) -> String {
    format!("L{:016x}", crate::fnv1a64(canonical))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn app_mini_program_and_web_ids_become_one_lead_in_any_order() {
        let web = json!({"anonymous_id": "web-1"});
        let mp = json!({"anonymous_id": "mp-1", "union_id": "wx-9"});
        let app = json!({"anonymous_id": "app-1", "union_id": "wx-9", "user_id": "u-7"});
        let form = json!({"anonymous_id": "web-1", "phone_hash": "ph-3"});
        let crm = json!({"user_id": "u-7", "phone_hash": "ph-3", "event": "identify"});
        let events = [web, mp, app, form, crm];
        let mut forward = IdentityGraph::default();
        let ids_fwd: Vec<String> = events
            .iter()
            .map(|e| forward.link(&identifiers(e)).lead_id)
            .collect();
        let mut backward = IdentityGraph::default();
        for e in events.iter().rev() {
            backward.link(&identifiers(e));
        }
        let final_fwd = forward.lead_of("a:web-1").unwrap();
        assert_eq!(
            final_fwd,
            backward.lead_of("a:web-1").unwrap(),
            "order does not matter"
        );
        for id in ["a:mp-1", "a:app-1", "w:wx-9", "u:u-7", "p:ph-3"] {
            assert_eq!(forward.lead_of(id).unwrap(), final_fwd, "{id}");
        }
        assert_eq!(ids_fwd[4], final_fwd);
    }

    /// The graph holds only identifiers that were linked: the anonymous id
    /// of a visitor who never logs in, fills a form or opens the
    /// mini-program costs it nothing, however many such visitors come.
    #[test]
    fn an_identifier_never_linked_takes_no_place_in_the_graph() {
        let mut g = IdentityGraph::default();
        for i in 0..1000 {
            let ids = identifiers(&json!({"anonymous_id": format!("web-{i}")}));
            assert_eq!(g.resolve(&ids), lead_id_of(&format!("a:web-{i}")));
        }
        assert!(g.is_empty());
        g.link(&identifiers(
            &json!({"anonymous_id": "web-1", "union_id": "wx-1"}),
        ));
        assert_eq!(g.len(), 2);
    }

    #[test]
    fn merges_report_the_lead_that_disappeared() {
        let mut g = IdentityGraph::default();
        let a = g.link(&["a:1".into()]).lead_id;
        let b = g.link(&["a:2".into()]).lead_id;
        let linked = g.link(&["a:2".into(), "a:1".into()]);
        assert_eq!(linked.lead_id, a);
        assert_eq!(linked.merged, vec![b]);
        let alias =
            json!({"event": "alias", "user_id": "u", "properties": {"previous_id": "anon"}});
        assert_eq!(identifiers(&alias), vec!["u:u", "a:anon"]);
    }

    #[test]
    fn old_lead_ids_lead_to_the_surviving_lead_through_chains_of_merges() {
        let mut g = IdentityGraph::default();
        let web = lead_id_of("a:web");
        let mp = lead_id_of("w:mp");
        let phone = lead_id_of("p:ph");
        assert_eq!(
            g.resolve(&["a:web".into()]),
            web,
            "unknown ids are their own lead"
        );
        assert_eq!(g.current_lead(&web), web);
        g.link(&["w:mp".into(), "p:ph".into()]);
        assert_eq!(g.current_lead(&mp), phone);
        assert_eq!(g.absorbed_into(&phone), std::slice::from_ref(&mp));
        assert!(!g.already_linked(&["a:web".into(), "p:ph".into()]));
        let linked = g.link(&["a:web".into(), "p:ph".into()]);
        assert_eq!(linked.lead_id, web);
        for old in [&mp, &phone] {
            assert_eq!(&g.current_lead(old), &web);
        }
        let mut absorbed = g.absorbed_into(&web).to_vec();
        absorbed.sort();
        let mut expected = vec![mp, phone];
        expected.sort();
        assert_eq!(absorbed, expected);
        assert!(g.already_linked(&["w:mp".into(), "a:web".into()]));
        assert_eq!(g.resolve(&["w:mp".into()]), web);
    }
}
