//! Who owns a key: rendezvous hashing over the live members.
//!
//! Each member gets a score from a hash of `(bucket, key, member id)`;
//! the ranking is by score, highest first. Every node that sees the same
//! members computes the same owners with no coordination, and when a
//! member joins or leaves only the keys it ranks in the top `replicas` of
//! move (about `replicas / n` of them), which is why rendezvous rather
//! than modulo hashing.

use myco_proto::NodeId;

/// FNV-1a over the bytes, then a final mix (splitmix64) so that nearby
/// inputs spread over the whole range. Stable across builds and
/// platforms: owners must agree between nodes of different releases.
fn hash(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for &b in *part {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        // A separator, so ("ab","c") and ("a","bc") differ.
        h ^= 0xff;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    mix(h)
}

fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The members ranked for `(bucket, key)`, best first. Duplicates in
/// `members` count once.
pub fn rank(bucket: &str, key: &str, members: &[NodeId]) -> Vec<NodeId> {
    let base = hash(&[bucket.as_bytes(), key.as_bytes()]);
    let mut scored: Vec<(u64, NodeId)> = members
        .iter()
        .map(|m| (mix(base ^ m.as_u64()), *m))
        .collect();
    // Ties (astronomically rare) break by id, so the order is total.
    scored.sort_unstable_by(|a, b| b.cmp(a));
    scored.dedup_by_key(|(_, id)| *id);
    scored.into_iter().map(|(_, id)| id).collect()
}

/// The owners of `(bucket, key)`: the first `replicas` of [`rank`] (all
/// members when there are fewer; at least one copy).
pub fn owners(bucket: &str, key: &str, members: &[NodeId], replicas: u8) -> Vec<NodeId> {
    let mut ranked = rank(bucket, key, members);
    ranked.truncate(usize::from(replicas.max(1)));
    ranked
}

/// What one node does with one of its entries after a membership change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Move {
    /// New owners that were not owners before: send them the entry.
    pub send_to: Vec<NodeId>,
    /// Whether this node still owns the entry (if not, it drops it once
    /// sent).
    pub keep: bool,
}

/// What `me` does with its entry `(bucket, key)` when the live members go
/// from `before` to `after`: `None` when nothing changes for it.
pub fn moves(
    me: NodeId,
    bucket: &str,
    key: &str,
    before: &[NodeId],
    after: &[NodeId],
    replicas: u8,
) -> Option<Move> {
    let old = owners(bucket, key, before, replicas);
    let new = owners(bucket, key, after, replicas);
    let keep = new.contains(&me);
    // Every holder sends to the new owners it knows lack the entry; they
    // merge by timestamp, so a copy from two holders is harmless.
    let send_to: Vec<NodeId> = new
        .iter()
        .filter(|n| **n != me && !old.contains(n))
        .copied()
        .collect();
    if send_to.is_empty() && keep {
        None
    } else {
        Some(Move { send_to, keep })
    }
}

/// The members before a change, as [`moves`] should see them: `before`
/// (ids with their life, the boot number) without those that are back in
/// a new life in `after`. A restarted node holds nothing (entries live in
/// memory), so it counts as joining even if no one saw it gone.
pub fn before_for_moves(before: &[(NodeId, u64)], after: &[(NodeId, u64)]) -> Vec<NodeId> {
    before
        .iter()
        .filter(|(id, life)| !after.iter().any(|(a, l)| a == id && l != life))
        .map(|(id, _)| *id)
        .collect()
}

/// What `me` does with its entry `(bucket, key)` when the time comes to
/// drop it (a grace after a move, or a periodic pass over strays):
/// `None` when it owns the entry under `live` after all (it became an
/// owner again, so it keeps it); else the owners to hand the entry to
/// before dropping it. The handoff carries a version that arrived during
/// the grace (a write made with an older view of the members) or that
/// only this non-owner holds; owners merge it by timestamp.
pub fn handoff(
    me: NodeId,
    bucket: &str,
    key: &str,
    live: &[NodeId],
    replicas: u8,
) -> Option<Vec<NodeId>> {
    let owners = owners(bucket, key, live, replicas);
    if owners.contains(&me) {
        None
    } else {
        Some(owners)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(n: u8) -> Vec<NodeId> {
        (1..=n).map(|i| NodeId([i, 7, 0, 0, 0, 0, 0, i])).collect()
    }

    #[test]
    fn ranking_is_a_pure_function_of_the_member_set() {
        let m = ids(5);
        let mut shuffled = m.clone();
        shuffled.reverse();
        shuffled.push(m[0]);
        for k in 0..100 {
            let key = format!("k{k}");
            let a = rank("b", &key, &m);
            assert_eq!(a, rank("b", &key, &shuffled));
            assert_eq!(a.len(), 5);
        }
        // Buckets are separate key spaces.
        let differ = (0..100)
            .filter(|k| rank("a", &format!("k{k}"), &m)[0] != rank("b", &format!("k{k}"), &m)[0])
            .count();
        assert!(
            differ > 50,
            "only {differ} of 100 keys moved between buckets"
        );
    }

    #[test]
    fn primaries_spread_evenly() {
        let m = ids(4);
        let mut counts = [0usize; 4];
        for k in 0..4000 {
            let p = owners("s", &format!("key-{k}"), &m, 1)[0];
            counts[m.iter().position(|x| *x == p).unwrap()] += 1;
        }
        for c in counts {
            assert!((800..1200).contains(&c), "uneven spread: {counts:?}");
        }
    }

    #[test]
    fn a_join_moves_only_keys_the_newcomer_owns() {
        let before = ids(4);
        let after = ids(5);
        let newcomer = after[4];
        let mut moved = 0;
        for k in 0..2000 {
            let key = format!("k{k}");
            let old = owners("s", &key, &before, 2);
            let new = owners("s", &key, &after, 2);
            if old != new {
                assert!(new.contains(&newcomer), "{key}: {old:?} -> {new:?}");
                moved += 1;
            }
            for holder in &old {
                let mv = moves(*holder, "s", &key, &before, &after, 2);
                if new.contains(&newcomer) {
                    let mv = mv.expect("the newcomer must be sent the entry");
                    assert_eq!(mv.send_to, vec![newcomer]);
                    assert_eq!(mv.keep, new.contains(holder));
                } else {
                    assert_eq!(mv, None);
                }
            }
        }
        // About replicas / n = 2/5 of the keys.
        assert!((600..1000).contains(&moved), "moved {moved} of 2000");
    }

    #[test]
    fn a_leave_hands_keys_to_the_next_ranked() {
        let before = ids(3);
        let after = vec![before[0], before[1]];
        for k in 0..300 {
            let key = format!("k{k}");
            let old = owners("s", &key, &before, 2);
            if !old.contains(&before[2]) {
                assert_eq!(moves(before[0], "s", &key, &before, &after, 2), None);
                continue;
            }
            let survivor = *old.iter().find(|n| **n != before[2]).unwrap();
            let mv = moves(survivor, "s", &key, &before, &after, 2).unwrap();
            assert!(mv.keep);
            assert_eq!(mv.send_to.len(), 1);
            assert_ne!(mv.send_to[0], before[2]);
        }
    }

    /// What the agent's stand-in writes rest on: when a member goes, every
    /// other member keeps its place in a key's ranking, so the member just
    /// past the owners is the owner the key gets once the silent one is
    /// seen gone.
    #[test]
    fn the_next_ranked_member_is_the_owner_a_key_gets_when_one_goes() {
        let m = ids(6);
        for k in 0..200 {
            let key = format!("k{k}");
            let ranked = rank("s", &key, &m);
            for replicas in 1..=3u8 {
                let r = usize::from(replicas);
                for gone in &ranked[..r] {
                    let rest: Vec<NodeId> = m.iter().filter(|n| *n != gone).copied().collect();
                    let mut expected: Vec<NodeId> = ranked[..=r]
                        .iter()
                        .filter(|n| *n != gone)
                        .copied()
                        .collect();
                    let mut after = owners("s", &key, &rest, replicas);
                    expected.sort_unstable();
                    after.sort_unstable();
                    assert_eq!(after, expected, "{key}, {replicas} replicas");
                }
            }
        }
    }

    #[test]
    fn owners_are_capped_by_members_and_at_least_one() {
        let m = ids(2);
        assert_eq!(owners("b", "k", &m, 5).len(), 2);
        assert_eq!(owners("b", "k", &m, 0).len(), 1);
        assert!(owners("b", "k", &[], 2).is_empty());
    }

    #[test]
    fn handoff_keeps_what_is_owned_again_and_hands_the_rest_over() {
        let m = ids(4);
        let key = (0..100)
            .map(|k| format!("k{k}"))
            .find(|k| owners("b", k, &m, 2)[0] == m[0])
            .unwrap();
        assert_eq!(handoff(m[0], "b", &key, &m, 2), None);
        let stray = owners("b", &key, &m, 2);
        let outsider = *m.iter().find(|n| !stray.contains(n)).unwrap();
        assert_eq!(handoff(outsider, "b", &key, &m, 2), Some(stray));
    }

    #[test]
    fn a_node_back_in_a_new_life_counts_as_joining() {
        let m = ids(3);
        let before = [(m[0], 1), (m[1], 1), (m[2], 1)];
        let after = [(m[0], 1), (m[1], 2), (m[2], 1)];
        assert_eq!(before_for_moves(&before, &after), vec![m[0], m[2]]);
        assert_eq!(before_for_moves(&before, &before), m);
    }
}
