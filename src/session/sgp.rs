//! SAM2-SGP (the seed paper) on top of SAM2's memory bank: choosing supports by the cosine similarity of their
//! image features to the query slice, and the similarity-based eviction rule for tracked memories. Pure
//! arithmetic on vectors read from the device, so it is tested here without a model.

use super::bank_snapshot::{Admission, Outcome, Place, PoolMember, SupportScore, rank_supports};
use super::read_f32;
use crate::sam2::sam2_base::ImageFeatures;

/// The SGP similarity vector of a slice: its stride-16 features, flattened and L2-normalised, read to the CPU.
pub(super) async fn similarity_vector(features: &ImageFeatures) -> Result<Vec<f32>, String> {
    let top = features.backbone_fpn.last().expect("three FPN levels").clone();
    let mut v = read_f32(top.flatten::<1>(0, 3)).await?;
    normalize(&mut v);
    Ok(v)
}

pub(super) fn cosine(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// The `k` candidates most similar to `query`, least similar first (so the most similar ends closest to
/// the query in time, and a conditioning cap keeps it).
#[cfg(test)]
fn most_similar(candidates: &[usize], vectors: &[Vec<f32>], query: &[f32], k: usize) -> Vec<usize> {
    chosen_supports(&scored_supports(candidates, vectors, query, k))
}

/// Every candidate's cosine score and rank, the `k` most similar marked chosen (what the teaching view shows).
pub(super) fn scored_supports(candidates: &[usize], vectors: &[Vec<f32>], query: &[f32], k: usize) -> Vec<SupportScore> {
    rank_supports(candidates, |i| cosine(&vectors[i], query), k)
}

/// The chosen supports, least similar first.
pub(super) fn chosen_supports(scores: &[SupportScore]) -> Vec<usize> {
    scores.iter().filter(|s| s.chosen).rev().map(|s| s.support).collect()
}

/// A tracked memory kept by the similarity eviction.
pub(super) struct Kept {
    pub(super) frame: usize,
    pub(super) vector: Vec<f32>,
    pub(super) iou: f32,
}

/// SAM2-SGP's rule for a new memory and a pool of at most `capacity`; returns the decision with the numbers
/// it was made on (`place` names frames for the teaching view).
pub(super) fn admit(pool: &mut Vec<Kept>, new: Kept, capacity: usize, place: impl Fn(usize) -> Place) -> Admission {
    let sim_new = |k: &Kept| cosine(&k.vector, &new.vector);
    let mut decision = Admission {
        new: place(new.frame),
        new_iou: new.iou,
        capacity,
        pool: pool.iter().map(|k| PoolMember { at: place(k.frame), iou: k.iou, similarity_to_new: sim_new(k) }).collect(),
        outcome: Outcome::Rejected,
        least_similar: None,
        closest_to_it: None,
    };
    if pool.len() < capacity {
        pool.push(new);
        decision.outcome = Outcome::Added;
        return decision;
    }
    let Some(i) = (0..pool.len()).min_by(|&a, &b| sim_new(&pool[a]).total_cmp(&sim_new(&pool[b]))) else { return decision };
    decision.least_similar = Some((place(pool[i].frame), sim_new(&pool[i])));
    let sim_i = |j: usize| cosine(&pool[i].vector, &pool[j].vector);
    let Some(j) = (0..pool.len()).filter(|&j| j != i).max_by(|&a, &b| sim_i(a).total_cmp(&sim_i(b))) else {
        return decision;
    };
    decision.closest_to_it = Some((place(pool[j].frame), sim_i(j)));
    if sim_new(&pool[i]) < sim_i(j) && new.iou > pool[j].iou - 0.1 {
        pool[j] = new;
        decision.outcome = Outcome::Replaced;
    }
    decision
}

pub(super) fn normalize(v: &mut [f32]) {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
    v.iter_mut().for_each(|x| *x /= norm);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kept(frame: usize, vector: Vec<f32>, iou: f32) -> Kept {
        Kept { frame, vector, iou }
    }

    #[test]
    fn similarity_eviction_replaces_the_redundant_memory() {
        // 0 and 1 are alike, 2 is different; a new memory unlike 2 replaces 2's nearest (1 or 0).
        let mut pool = vec![kept(0, vec![1.0, 0.0], 0.9), kept(1, vec![0.99, 0.14], 0.9), kept(2, vec![0.0, 1.0], 0.9)];
        let d = admit(&mut pool, kept(3, vec![1.0, 0.0], 0.9), 3, Place::Slice);
        assert_eq!((d.outcome, d.least_similar, d.closest_to_it), (Outcome::Replaced, Some((Place::Slice(2), 0.0)), Some((Place::Slice(1), 0.14))));
        // Least similar to the new (1, 0) is 2; most similar to 2 is 1; sim(new, 2) = 0 < sim(2, 1) = 0.14.
        assert_eq!(pool.iter().map(|k| k.frame).collect::<Vec<_>>(), vec![0, 3, 2]);
        // A new memory whose predicted IoU is more than 0.1 below the one it would replace is not kept.
        let mut pool = vec![kept(0, vec![1.0, 0.0], 0.9), kept(1, vec![0.6, 0.8], 0.9), kept(2, vec![0.0, 1.0], 0.9)];
        let d = admit(&mut pool, kept(3, vec![1.0, 0.0], 0.75), 3, Place::Slice);
        assert_eq!(d.outcome, Outcome::Rejected);
        assert_eq!(pool.iter().map(|k| k.frame).collect::<Vec<_>>(), vec![0, 1, 2]);
        admit(&mut pool, kept(4, vec![1.0, 0.0], 0.85), 3, Place::Slice);
        assert_eq!(pool.iter().map(|k| k.frame).collect::<Vec<_>>(), vec![0, 4, 2]);
        // Room left: always kept.
        let mut small = vec![];
        assert_eq!(admit(&mut small, kept(5, vec![1.0], 0.1), 2, Place::Slice).outcome, Outcome::Added);
        assert_eq!(small.len(), 1);
    }

    #[test]
    fn most_similar_orders_least_similar_first() {
        let vectors = vec![vec![1.0, 0.0], vec![0.0, 1.0], vec![0.6, 0.8]];
        assert_eq!(most_similar(&[0, 1, 2], &vectors, &[1.0, 0.0], 2), vec![2, 0]);
        assert_eq!(most_similar(&[1, 2], &vectors, &[1.0, 0.0], 5), vec![1, 2]);
    }
}