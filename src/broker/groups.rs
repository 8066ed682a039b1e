//! A consumer group that lost its leader must elect another.
//!
//! Tansu 0.6's coordinator drops members that missed their heartbeat. When
//! that happens inside a heartbeat of a *stable* group, it removes the
//! members but leaves the group stable with the dropped member still named
//! leader; the next join turns the group into a forming one that keeps that
//! leader. Every live member's SyncGroup is then answered "rebalance in
//! progress" (only the leader may sync), the member rejoins, is dropped
//! itself six seconds later, and so on for ever: found by killing a scorer
//! right after a broker stall (`tests/e2e_faults.rs`). Kafka's coordinator
//! never keeps a leader that is not a member: the group rebalances and the
//! first member to rejoin leads. [`without_lost_leader`] restores that
//! invariant on every group state the coordinator stores.
//!
//! A second invariant, found by the same test: a stable group's assignment
//! covers every member. Tansu could store a stable group with a member the
//! leader never assigned anything (it joined between the leader's join and
//! its sync); that member's SyncGroup then succeeded with nothing, and no
//! rebalance ever followed, so its partitions stayed unread. Kafka starts a
//! rebalance when a member joins a stable group. [`with_every_member_assigned`]
//! turns such a state into a forming group one generation on, so every
//! member rejoins and the leader assigns them all.

/// `detail` fixed to keep both invariants; None when it keeps them.
pub fn fixed(detail: &GroupDetail) -> Option<GroupDetail> {
    without_lost_leader(detail).or_else(|| with_every_member_assigned(detail))
}

/// A stable `detail` with a member outside its assignment, as a forming
/// group one generation on (same leader); None when it needs no change.
pub fn with_every_member_assigned(detail: &GroupDetail) -> Option<GroupDetail> {
    let GroupState::Formed {
        protocol_type,
        protocol_name,
        leader,
        assignments,
    } = &detail.state
    else {
        return None;
    };
    if detail.members.keys().all(|m| assignments.contains_key(m)) {
        return None;
    }
    let mut fixed = detail.clone();
    fixed.generation_id += 1;
    fixed.state = GroupState::Forming {
        protocol_type: Some(protocol_type.clone()),
        protocol_name: Some(protocol_name.clone()),
        leader: Some(leader.clone()),
    };
    Some(fixed)
}

use tansu_storage::{GroupDetail, GroupState};

/// `detail` as a forming group without a leader, when its leader is no
/// longer a member; None when it needs no change.
pub fn without_lost_leader(detail: &GroupDetail) -> Option<GroupDetail> {
    let leader = detail.state.leader()?;
    if detail.members.contains_key(&leader) {
        return None;
    }
    let mut fixed = detail.clone();
    fixed.state = GroupState::Forming {
        protocol_type: detail.state.protocol_type(),
        protocol_name: detail.state.protocol_name(),
        leader: None,
    };
    Some(fixed)
}

#[cfg(test)]
mod tests {

    use tansu_storage::{GroupMember, Storage, StorageContainer, UpdateError};

    use super::*;
    use crate::broker::storage::DevStorage;

    fn stable(leader: &str, members: &[&str]) -> GroupDetail {
        GroupDetail {
            session_timeout_ms: 6_000,
            members: members
                .iter()
                .map(|m| ((*m).to_owned(), GroupMember::default()))
                .collect(),
            generation_id: 7,
            state: GroupState::Formed {
                protocol_type: "consumer".into(),
                protocol_name: "range".into(),
                leader: leader.into(),
                assignments: members
                    .iter()
                    .map(|m| ((*m).to_owned(), Default::default()))
                    .collect(),
            },
            ..GroupDetail::default()
        }
    }

    #[test]
    fn a_group_whose_leader_left_forms_again_without_it() {
        assert_eq!(without_lost_leader(&stable("a", &["a", "b"])), None);
        let fixed = without_lost_leader(&stable("gone", &["b"])).unwrap();
        assert_eq!(
            fixed.state,
            GroupState::Forming {
                protocol_type: Some("consumer".into()),
                protocol_name: Some("range".into()),
                leader: None,
            }
        );
        assert_eq!(fixed.members.len(), 1);
        assert_eq!(fixed.generation_id, 7);
        let leaderless = GroupDetail::default();
        assert_eq!(without_lost_leader(&leaderless), None);
    }

    #[test]
    fn a_stable_group_with_an_unassigned_member_rebalances() {
        let assigned = stable("a", &["a", "b"]);
        assert_eq!(fixed(&assigned), None);
        let mut one_short = assigned.clone();
        one_short.members.insert("c".into(), GroupMember::default());
        let again = fixed(&one_short).unwrap();
        assert_eq!(again.generation_id, 8);
        assert_eq!(again.state.leader().as_deref(), Some("a"));
        assert!(matches!(again.state, GroupState::Forming { .. }));
        assert_eq!(fixed(&again), None, "forming groups have no assignment yet");
    }

    /// Through the storage the coordinator writes to: the fixed state is
    /// stored, and the coordinator's next write under the version it got
    /// back is refused with that fixed state, so it reloads it.
    #[tokio::test]
    async fn the_coordinator_is_made_to_reload_the_fixed_group() {
        let inner = StorageContainer::builder()
            .cluster_id("groups-test")
            .node_id(1)
            .advertised_listener(url::Url::parse("tcp://127.0.0.1:9092").unwrap())
            .storage(url::Url::parse("memory://tansu/").unwrap())
            .build()
            .await
            .unwrap();
        let storage = DevStorage::new(inner);
        let v0 = storage
            .update_group("g", stable("a", &["a", "b"]), None)
            .await
            .unwrap();
        let v1 = storage
            .update_group("g", stable("a", &["b"]), Some(v0))
            .await
            .unwrap();
        match storage
            .update_group("g", stable("a", &["b"]), Some(v1))
            .await
        {
            Err(UpdateError::Outdated { current, version }) => {
                assert_eq!(current.state.leader(), None);
                assert_eq!(current.members.len(), 1);
                let forming = GroupDetail {
                    state: current.state.clone(),
                    ..stable("b", &["b"])
                };
                storage
                    .update_group("g", forming, Some(version))
                    .await
                    .expect("the reloaded state is current");
            }
            other => panic!("expected the stale write to be refused: {other:?}"),
        }
    }
}
