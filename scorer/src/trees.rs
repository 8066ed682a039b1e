//! Gradient-boosted trees over the numeric features and the categorical
//! context, fit with `forust-ml` and kept in a flat form of our own: the
//! model file does not depend on the learner's serialisation, and scoring
//! one lead walks an array per tree.
//!
//! Categories enter as target encodings: each value becomes the smoothed
//! order rate of the training snapshots that carried it (rare values share
//! one "other" rate, no value has its own). While fitting, each snapshot's
//! encoding comes from the other folds only, so the trees cannot learn a
//! lead's own label through its campaign.

use std::collections::HashMap;

use forust_ml::{GradientBooster, Matrix, sampler::SampleMethod};
use serde::{Deserialize, Serialize};

use crate::{
    context::{CATEGORY_SLOTS, NONE, hash},
    features::FeatureRow,
    train::{Snapshot, Thresholds, TrainError, check_feature_columns, grade_thresholds_on},
};

/// One categorical input: the slot it reads and its encoding.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CategoryColumn {
    pub name: String,
    /// Values learnt, with their smoothed order rates.
    pub values: Vec<(String, f64)>,
    /// Rate of values not learnt (rare in training, or new).
    pub other: f64,
    /// Rate of snapshots without a value.
    pub none: f64,
    /// (hash, rate) sorted by hash: a binary search per lookup, no hashing.
    #[serde(skip)]
    rates: Vec<(u32, f64)>,
    /// Index of `name` in the slots.
    #[serde(skip)]
    slot: usize,
}

impl CategoryColumn {
    fn encode(&self, h: u32) -> f64 {
        if h == NONE {
            return self.none;
        }
        match self.rates.binary_search_by_key(&h, |r| r.0) {
            Ok(i) => self.rates[i].1,
            Err(_) => self.other,
        }
    }

    fn index(&mut self) {
        self.slot = slot_of(&self.name).unwrap_or(usize::MAX);
        self.rates = self.values.iter().map(|(v, r)| (hash(v), *r)).collect();
        self.rates.sort_by_key(|r| r.0);
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Node {
    /// Input index (numeric columns first, then categories); unused by leaves.
    pub input: u32,
    pub threshold: f64,
    pub left: u32,
    pub right: u32,
    pub missing: u32,
    pub value: f32,
    pub leaf: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TreeModel {
    /// Numeric inputs: names, and their indices in
    /// [`crate::features::FEATURE_NAMES`].
    pub features: Vec<String>,
    pub columns: Vec<usize>,
    pub categories: Vec<CategoryColumn>,
    pub base_score: f64,
    pub trees: Vec<Vec<Node>>,
    pub horizon_days: f64,
    pub thresholds: Thresholds,
    /// Each input's share of the trees' total split gain, largest first.
    pub importance: Vec<(String, f64)>,
    #[serde(skip)]
    compiled: Compiled,
}

/// The trees as scoring walks them: each one completed to the depth of the
/// deepest (a leaf above it repeated over its whole subtree), so every walk
/// is the same number of branch-free steps: left when the input is below
/// the threshold. Inputs are never missing (every feature and encoding is a
/// number), so the missing branch is not needed here.
#[derive(Debug, Clone, Default, PartialEq)]
struct Compiled {
    depth: u32,
    /// Per tree, `2^depth - 1` splits in breadth-first order (f64, as the
    /// learner compared, so no input lands on the other side of a split).
    splits: Vec<(u16, f64)>,
    /// Per tree, `2^depth` leaf values.
    leaves: Vec<f32>,
}

/// Deeper trees would make the completed form large; none is this deep by
/// default (depth 4), and `fit` refuses deeper settings.
pub const MAX_DEPTH: usize = 10;

impl Compiled {
    /// Fails on a tree deeper than [`MAX_DEPTH`] (or a cycle, in a damaged
    /// file); node indices must already be checked.
    fn of(trees: &[Vec<Node>]) -> Result<Self, String> {
        fn depth(tree: &[Node], i: usize, level: u32) -> Option<u32> {
            let n = &tree[i];
            if n.leaf {
                Some(level)
            } else if level as usize >= MAX_DEPTH {
                None
            } else {
                Some(depth(tree, n.left as usize, level + 1)?.max(depth(
                    tree,
                    n.right as usize,
                    level + 1,
                )?))
            }
        }
        let mut d = 0;
        for (t, tree) in trees.iter().enumerate() {
            d =
                d.max(depth(tree, 0, 0).ok_or_else(|| {
                    format!("tree {t} is deeper than {MAX_DEPTH} levels (or loops)")
                })?);
        }
        let (inner, outer) = ((1usize << d) - 1, 1usize << d);
        let mut c = Compiled {
            depth: d,
            splits: Vec::with_capacity(trees.len() * inner),
            leaves: Vec::with_capacity(trees.len() * outer),
        };
        for tree in trees {
            let mut splits = vec![(0u16, f64::INFINITY); inner];
            let mut leaves = vec![0f32; outer];
            // (node, position in the complete tree, its level)
            let mut stack = vec![(0usize, 0usize, 0u32)];
            while let Some((i, pos, level)) = stack.pop() {
                let n = &tree[i];
                if n.leaf {
                    // Every leaf below this position holds the value.
                    let (first, count) = ((pos + 1) << (d - level), 1usize << (d - level));
                    let from = first - 1 - inner;
                    leaves[from..from + count].fill(n.value);
                } else {
                    splits[pos] = (n.input as u16, n.threshold);
                    stack.push((n.left as usize, 2 * pos + 1, level + 1));
                    stack.push((n.right as usize, 2 * pos + 2, level + 1));
                }
            }
            c.splits.extend(splits);
            c.leaves.extend(leaves);
        }
        Ok(c)
    }

    fn margin(&self, x: &[f64]) -> f32 {
        if self.depth == 0 {
            return self.leaves.iter().sum();
        }
        let inner = (1usize << self.depth) - 1;
        let mut z = 0.0;
        for (splits, leaves) in self
            .splits
            .chunks_exact(inner)
            .zip(self.leaves.chunks_exact(inner + 1))
        {
            let mut pos = 0usize;
            for _ in 0..self.depth {
                let (input, threshold) = splits[pos];
                // Right unless below; inputs are never NaN.
                pos = 2 * pos + 1 + usize::from(x[usize::from(input)] >= threshold);
            }
            z += leaves[pos - inner];
        }
        z
    }
}

/// The learner's settings. The defaults are common, conservative choices
/// for tabular data (shallow trees, a small step, row and column sampling),
/// checked by cross-validation on the public and simulated data rather
/// than tuned to either.
#[derive(Debug, Clone, Copy)]
pub struct TreeParams {
    pub trees: usize,
    pub learning_rate: f32,
    pub max_depth: usize,
    pub min_leaf_weight: f32,
    pub subsample: f32,
    pub colsample: f64,
    /// Occurrences a category value needs to get its own rate.
    pub min_count: usize,
    /// Pseudo-count pulling each value's rate towards the overall rate.
    pub smoothing: f64,
    /// Weight of a snapshot of a quiet lead against one of an active day.
    pub idle_weight: f64,
}

impl Default for TreeParams {
    fn default() -> Self {
        Self {
            trees: 150,
            learning_rate: 0.1,
            max_depth: 4,
            min_leaf_weight: 5.0,
            subsample: 0.8,
            colsample: 0.8,
            min_count: 20,
            smoothing: 20.0,
            idle_weight: 0.3,
        }
    }
}

/// Folds for the out-of-fold category encoding.
const ENCODING_FOLDS: u64 = 5;

impl TreeModel {
    /// The inputs of `row` in this model's order.
    fn inputs(&self, row: &FeatureRow, out: &mut Vec<f64>) {
        out.clear();
        out.extend(self.columns.iter().map(|&c| f64::from(row.numeric[c])));
        for c in &self.categories {
            out.push(c.encode(row.categories[c.slot]));
        }
    }

    pub fn probability(&self, row: &FeatureRow) -> f64 {
        thread_local! {
            static INPUTS: std::cell::RefCell<Vec<f64>> = const { std::cell::RefCell::new(Vec::new()) };
        }
        INPUTS.with_borrow_mut(|x| {
            self.inputs(row, x);
            sigmoid(self.base_score + f64::from(self.compiled.margin(x)))
        })
    }

    /// Refuses a model from another feature set or a damaged file, and
    /// builds the value lookups.
    pub fn prepare(&mut self) -> Result<(), String> {
        check_feature_columns(&self.features, &self.columns)?;
        for c in &mut self.categories {
            if slot_of(&c.name).is_none() {
                return Err(format!(
                    "it was trained on another feature set: category `{}` does not exist in this build; retrain it with `leadstream train`",
                    c.name
                ));
            }
            c.index();
        }
        let inputs = (self.columns.len() + self.categories.len()) as u32;
        for (t, tree) in self.trees.iter().enumerate() {
            let n = tree.len() as u32;
            if tree.is_empty() || tree.len() >= usize::from(u16::MAX) {
                return Err(format!("tree {t} has {n} nodes"));
            }
            if let Some(bad) = tree.iter().position(|node| {
                !node.leaf
                    && (node.input >= inputs
                        || node.left >= n
                        || node.right >= n
                        || node.missing >= n)
            }) {
                return Err(format!("tree {t} node {bad} points outside the tree"));
            }
        }
        self.compiled = Compiled::of(&self.trees)?;
        Ok(())
    }
}

fn sigmoid(z: f64) -> f64 {
    1.0 / (1.0 + (-z).exp())
}

fn slot_of(name: &str) -> Option<usize> {
    CATEGORY_SLOTS.iter().position(|(n, _)| *n == name)
}

/// Per-value (count, positives) of one slot over `rows`.
fn tally<'a>(rows: impl Iterator<Item = &'a Snapshot>, slot: usize) -> HashMap<u32, (f64, f64)> {
    let mut t: HashMap<u32, (f64, f64)> = HashMap::new();
    for s in rows {
        let e = t.entry(s.features.categories[slot]).or_default();
        e.0 += 1.0;
        e.1 += f64::from(u8::from(s.label));
    }
    t
}

/// The encoding of one slot learnt from `counts`.
fn encoding(
    name: &str,
    counts: &HashMap<u32, (f64, f64)>,
    names: Option<&HashMap<u32, String>>,
    p: &TreeParams,
) -> CategoryColumn {
    let (n, pos) = counts
        .values()
        .fold((0.0, 0.0), |a, (n, k)| (a.0 + n, a.1 + k));
    let prior = if n > 0.0 { pos / n } else { 0.0 };
    let rate = |n: f64, k: f64| (k + p.smoothing * prior) / (n + p.smoothing);
    let (mut other_n, mut other_k) = (0.0, 0.0);
    let mut values = Vec::new();
    for (&h, &(n, k)) in counts {
        if h == NONE {
            continue;
        }
        match names.and_then(|m| m.get(&h)) {
            Some(v) if n >= p.min_count as f64 => values.push((v.clone(), rate(n, k))),
            _ => {
                other_n += n;
                other_k += k;
            }
        }
    }
    // Same file for the same data, whatever the hash map's order.
    values.sort_by(|a, b| a.0.cmp(&b.0));
    let none = counts.get(&NONE).map_or(prior, |&(n, k)| rate(n, k));
    let mut c = CategoryColumn {
        name: name.to_owned(),
        values,
        other: rate(other_n, other_k),
        none,
        rates: Vec::new(),
        slot: 0,
    };
    c.index();
    c
}

/// Fits trees on `train`: numeric features except `exclude`, and every
/// categorical slot not in `exclude` that carries at least two values, with
/// value names from `names` (per slot: hash → value).
pub fn fit(
    train: &[Snapshot],
    names: &[HashMap<u32, String>],
    exclude: &[String],
    horizon_days: f64,
    params: &TreeParams,
) -> Result<TreeModel, TrainError> {
    let columns = crate::train::columns_except(exclude)?;
    let positives = train.iter().filter(|s| s.label).count();
    if positives == 0 || positives == train.len() {
        return Err(TrainError::NotEnoughData(format!(
            "{} snapshots, {positives} positive: need both classes",
            train.len()
        )));
    }
    if !(1..=MAX_DEPTH).contains(&params.max_depth) {
        return Err(TrainError::Fit(format!(
            "a tree depth of {} is outside 1–{MAX_DEPTH}",
            params.max_depth
        )));
    }
    let fold = |s: &Snapshot| crate::fnv1a64(&s.lead_id) % ENCODING_FOLDS;
    let mut categories = Vec::new();
    // Per kept slot, the encoding each training row gets (out of fold).
    let mut oof: Vec<Vec<f64>> = Vec::new();
    for (slot, (name, _)) in CATEGORY_SLOTS.iter().enumerate() {
        if exclude.iter().any(|e| e == name) {
            continue;
        }
        // Rates from the active-day snapshots: a quiet lead's snapshots
        // would count its channel once per quiet spell.
        let all = tally(train.iter().filter(|s| !s.idle), slot);
        // One value (or none at all) everywhere cannot split anything.
        if all.len() < 2 {
            continue;
        }
        let per_fold: Vec<CategoryColumn> = (0..ENCODING_FOLDS)
            .map(|f| {
                let counts = tally(train.iter().filter(|s| !s.idle && fold(s) != f), slot);
                encoding(name, &counts, names.get(slot), params)
            })
            .collect();
        oof.push(
            train
                .iter()
                .map(|s| per_fold[fold(s) as usize].encode(s.features.categories[slot]))
                .collect(),
        );
        categories.push(encoding(name, &all, names.get(slot), params));
    }
    let mut model = TreeModel {
        features: crate::train::feature_names(&columns),
        columns,
        categories,
        base_score: 0.0,
        trees: Vec::new(),
        horizon_days,
        thresholds: Thresholds {
            high: 1.0,
            medium: 1.0,
        },
        importance: Vec::new(),
        compiled: Compiled::default(),
    };
    let (rows, numeric) = (train.len(), model.columns.len());
    let width = numeric + model.categories.len();
    // forust takes column-major data.
    let mut data = vec![0.0f64; rows * width];
    for (j, &c) in model.columns.iter().enumerate() {
        for (r, s) in train.iter().enumerate() {
            data[j * rows + r] = f64::from(s.features.numeric[c]);
        }
    }
    for (k, col) in oof.iter().enumerate() {
        data[(numeric + k) * rows..(numeric + k + 1) * rows].copy_from_slice(col);
    }
    let y: Vec<f64> = train.iter().map(|s| f64::from(u8::from(s.label))).collect();
    // Quiet snapshots teach how time since the last event matters without
    // outweighing the active days (a lead has up to five per quiet spell).
    let weights: Vec<f64> = train
        .iter()
        .map(|s| if s.idle { params.idle_weight } else { 1.0 })
        .collect();
    let mut booster = GradientBooster::default()
        .set_iterations(params.trees)
        .set_learning_rate(params.learning_rate)
        .set_max_depth(params.max_depth)
        .set_min_leaf_weight(params.min_leaf_weight)
        .set_sample_method(SampleMethod::Random)
        .set_subsample(params.subsample)
        .set_colsample_bytree(params.colsample)
        .set_seed(0);
    booster
        .fit(&Matrix::new(&data, rows, width), &y, &weights, None)
        .map_err(|e| TrainError::Fit(e.to_string()))?;
    model.base_score = booster.base_score;
    model.trees = booster.trees.iter().map(flatten).collect();
    let mut gain = vec![0.0f64; width];
    for t in &booster.trees {
        for n in t.nodes.iter().filter(|n| !n.is_leaf) {
            gain[n.split_feature] += f64::from(n.split_gain.max(0.0));
        }
    }
    let total: f64 = gain.iter().sum::<f64>().max(f64::MIN_POSITIVE);
    let mut importance: Vec<(String, f64)> = model
        .features
        .iter()
        .cloned()
        .chain(model.categories.iter().map(|c| c.name.clone()))
        .zip(gain.iter().map(|g| g / total))
        .collect();
    importance.sort_by(|a, b| b.1.total_cmp(&a.1));
    model.importance = importance;
    model.compiled = Compiled::of(&model.trees).map_err(TrainError::Fit)?;
    // The flattened, completed trees must score as the learner does (leaf
    // values are f32 in both), checked on the training rows as fitted
    // (out-of-fold encodings).
    let learner = booster.predict(&Matrix::new(&data, rows, width), false);
    let mut x = vec![0f64; width];
    for r in (0..rows).step_by((rows / 500).max(1)) {
        for (j, v) in x.iter_mut().enumerate() {
            *v = data[j * rows + r];
        }
        let ours = model.base_score + f64::from(model.compiled.margin(&x));
        if (ours - learner[r]).abs() > 1e-3 * (1.0 + learner[r].abs()) {
            return Err(TrainError::Fit(format!(
                "the flattened trees score row {r} {ours} where the learner says {}",
                learner[r]
            )));
        }
    }
    model.thresholds = grade_thresholds_on(train, |f| model.probability(f));
    Ok(model)
}

/// forust's nodes (indexed by `num`, root 0) as our flat nodes.
fn flatten(tree: &forust_ml::tree::Tree) -> Vec<Node> {
    let nodes = &tree.nodes;
    let at: HashMap<usize, u32> = nodes
        .iter()
        .enumerate()
        .map(|(k, n)| (n.num, k as u32))
        .collect();
    let mut out: Vec<Node> = nodes
        .iter()
        .map(|n| Node {
            input: n.split_feature as u32,
            threshold: n.split_value,
            left: at.get(&n.left_child).copied().unwrap_or(0),
            right: at.get(&n.right_child).copied().unwrap_or(0),
            missing: at.get(&n.missing_node).copied().unwrap_or(0),
            value: n.weight_value,
            leaf: n.is_leaf,
        })
        .collect();
    // The walk starts at index 0: make it the root.
    if let Some(root) = nodes.iter().position(|n| n.num == 0)
        && root != 0
    {
        out.swap(0, root);
        for n in &mut out {
            for i in [&mut n.left, &mut n.right, &mut n.missing] {
                if *i == 0 {
                    *i = root as u32;
                } else if *i == root as u32 {
                    *i = 0;
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{context::CATEGORIES, features::FEATURE_NAMES, train::roc_auc};

    /// Leads whose label depends on a campaign (categorical) and on the
    /// configurator count (numeric), with a rare campaign seen too seldom to
    /// learn.
    fn snapshots(n: usize) -> (Vec<Snapshot>, Vec<HashMap<u32, String>>) {
        let campaign = CATEGORY_SLOTS
            .iter()
            .position(|(s, _)| *s == "utm_campaign")
            .unwrap();
        let configurator = FEATURE_NAMES
            .iter()
            .position(|f| *f == "configurator_7d")
            .unwrap();
        let values = ["spring-ev", "brand", "retargeting", "one-off"];
        let mut names = vec![HashMap::new(); CATEGORIES];
        for v in values {
            names[campaign].insert(hash(v), v.to_owned());
        }
        let snaps = (0..n)
            .map(|i| {
                let mut numeric = vec![0.0f32; FEATURE_NAMES.len()];
                let c = (i * 7 % 5) as f32;
                numeric[configurator] = c;
                let mut categories = [NONE; CATEGORIES];
                let v = if i % 997 == 0 { 3 } else { i % 3 };
                if i % 10 != 0 {
                    categories[campaign] = hash(values[v]);
                }
                // Retargeting buys, brand rarely; more configurator use helps.
                let label = (v == 2 && c >= 1.0) || (v == 0 && c >= 3.0) || i % 29 == 0;
                Snapshot {
                    lead_id: format!("L{i}"),
                    ts_ms: i as i64,
                    features: FeatureRow {
                        numeric,
                        categories,
                    },
                    label,
                    idle: false,
                }
            })
            .collect();
        (snaps, names)
    }

    #[test]
    fn trees_learn_categories_and_numbers_and_survive_their_file() {
        let (snaps, names) = snapshots(3_000);
        let (train, test) = snaps.split_at(2_000);
        let model = fit(train, &names, &[], 30.0, &TreeParams::default()).unwrap();
        let campaign = model
            .categories
            .iter()
            .find(|c| c.name == "utm_campaign")
            .expect("the campaign is an input");
        assert_eq!(
            campaign
                .values
                .iter()
                .map(|v| v.0.as_str())
                .collect::<Vec<_>>(),
            ["brand", "retargeting", "spring-ev"],
            "the rare value is `other`"
        );
        let scored: Vec<(f64, bool)> = test
            .iter()
            .map(|s| (model.probability(&s.features), s.label))
            .collect();
        assert!(roc_auc(&scored) > 0.9, "{}", roc_auc(&scored));

        let file =
            serde_json::to_string(&crate::train::TrainedModel::Trees(model.clone())).unwrap();
        let loaded = crate::train::TrainedModel::parse(&file).unwrap();
        for s in test.iter().take(50) {
            assert_eq!(
                crate::score::Model::probability(&loaded, &s.features),
                model.probability(&s.features)
            );
        }
        let renamed = file.replace("\"utm_campaign\"", "\"utm_flavour\"");
        let err = crate::train::TrainedModel::parse(&renamed).unwrap_err();
        assert!(err.contains("another feature set"), "{err}");
        let moved = file.replace("\"configurator_7d\"", "\"configurator_30d\"");
        assert!(
            crate::train::TrainedModel::parse(&moved)
                .unwrap_err()
                .contains("another feature set")
        );
    }

    #[test]
    fn a_model_file_from_before_learners_were_named_is_a_logistic_regression() {
        let lr = crate::train::LogisticModel {
            features: vec![FEATURE_NAMES[0].to_owned()],
            columns: vec![0],
            mean: vec![0.0],
            std: vec![1.0],
            coefficients: vec![1.0],
            intercept: 0.0,
            horizon_days: 30.0,
            thresholds: Thresholds {
                high: 0.6,
                medium: 0.3,
            },
        };
        let old = serde_json::to_string(&lr).unwrap();
        assert!(!old.contains("\"kind\""));
        assert_eq!(
            crate::train::TrainedModel::parse(&old).unwrap(),
            crate::train::TrainedModel::Logistic(lr)
        );
    }
}
