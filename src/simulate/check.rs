//! The ranking check: how well live scores rank the simulated truth.

use super::*;

/// How well the scores rank one group of leads.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupCheck {
    pub name: &'static str,
    pub leads: usize,
    pub buyers: usize,
    /// ROC AUC of the blended score, the rules alone and the model alone.
    pub auc: [f64; 3],
    /// Share of buyers in the top 10 % by each of those.
    pub top_decile: [f64; 3],
}

/// How well live scores rank the truth at one instant: of the people seen
/// by then who had not ordered, who orders within [`HORIZON_MS`].
#[derive(Debug, Clone, PartialEq)]
pub struct Check {
    pub at_ms: i64,
    pub model: bool,
    pub groups: Vec<GroupCheck>,
    /// Owners graded low, (low, all), without and with upgrade behaviour.
    pub owners_low: [(usize, usize); 2],
    /// Mean score of owners without and with upgrade behaviour.
    pub owners_mean: [f64; 2],
    /// Mean score of owners who never buy again, and (count, mean) of
    /// those who go on to buy (at any time after the check).
    pub owners_buying: (f64, usize, f64),
    /// Dormant leads flagged reactivated, of those that woke with intent
    /// within the flag's life.
    pub reactivated: (usize, usize),
}

fn top_decile(pairs: &[(f64, bool)]) -> f64 {
    let mut sorted = pairs.to_vec();
    sorted.sort_by(|a, b| b.0.total_cmp(&a.0));
    let k = sorted.len().div_ceil(10).max(1);
    let hits = sorted.iter().take(k).filter(|p| p.1).count();
    hits as f64 / k.min(sorted.len()).max(1) as f64
}

pub fn check(truth: &[Truth], latest: &HashMap<String, Json>, at_ms: i64, model: bool) -> Check {
    let num = |s: &Json, k: &str| s.get(k).and_then(Json::as_f64).unwrap_or(0.0);
    let mut rows: Vec<(&'static str, [f64; 3], bool)> = Vec::new();
    let mut owners_low = [(0, 0); 2];
    let mut owners_sum = [0.0; 2];
    let mut owners_by_outcome = [(0usize, 0.0f64); 2];
    let mut reactivated = (0, 0);
    for t in truth {
        if t.first_ms > at_ms || t.order_ms.is_some_and(|o| o <= at_ms) {
            continue;
        }
        // Before all their ids are linked a person may be several leads;
        // sales sees the best of them.
        let Some(s) = t
            .lead_ids
            .iter()
            .filter_map(|l| latest.get(l))
            .max_by(|a, b| num(a, "score").total_cmp(&num(b, "score")))
        else {
            continue;
        };
        let bought = t.order_ms.is_some_and(|o| o <= at_ms + HORIZON_MS);
        let group = match s.get("stage").and_then(Json::as_str) {
            Some("new") => "new",
            Some("dormant") => "dormant",
            Some("customer" | "retained") => "owners",
            _ => "nurture",
        };
        let scores = [
            num(s, "score"),
            num(s, "rule_score"),
            100.0 * num(s, "probability"),
        ];
        rows.push((group, scores, bought));
        if t.persona == Persona::Owner {
            let shopping = usize::from(t.intent_shown_ms.is_some_and(|u| u <= at_ms));
            owners_low[shopping].1 += 1;
            owners_sum[shopping] += scores[0];
            let buys = usize::from(t.order_ms.is_some());
            owners_by_outcome[buys].0 += 1;
            owners_by_outcome[buys].1 += scores[0];
            if s.get("grade").and_then(Json::as_str) == Some("low") {
                owners_low[shopping].0 += 1;
            }
        }
        // Woken with intent within the flag's life (and a day for the
        // pipeline to catch up): the flag should be up.
        if t.persona == Persona::DormantWaker
            && t.intent_shown_ms
                .is_some_and(|w| w > at_ms - FLAG_MS && w <= at_ms - DAY_MS)
        {
            reactivated.1 += 1;
            if s.get("reactivated").and_then(Json::as_bool) == Some(true) {
                reactivated.0 += 1;
            }
        }
    }
    let groups = ["all", "new", "dormant", "owners", "nurture"]
        .into_iter()
        .map(|name| {
            let of: Vec<&(&str, [f64; 3], bool)> = rows
                .iter()
                .filter(|r| name == "all" || r.0 == name)
                .collect();
            let pairs = |i: usize| of.iter().map(|r| (r.1[i], r.2)).collect::<Vec<_>>();
            GroupCheck {
                name,
                leads: of.len(),
                buyers: of.iter().filter(|r| r.2).count(),
                auc: [0, 1, 2].map(|i| leadstream_scorer::train::roc_auc(&pairs(i))),
                top_decile: [0, 1, 2].map(|i| top_decile(&pairs(i))),
            }
        })
        .collect();
    let mean = |i: usize| owners_sum[i] / owners_low[i].1.max(1) as f64;
    let outcome_mean = |i: usize| owners_by_outcome[i].1 / owners_by_outcome[i].0.max(1) as f64;
    Check {
        at_ms,
        model,
        groups,
        owners_low,
        owners_mean: [mean(0), mean(1)],
        owners_buying: (outcome_mean(0), owners_by_outcome[1].0, outcome_mean(1)),
        reactivated,
    }
}

impl std::fmt::Display for Check {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let all = &self.groups[0];
        let when = chrono::DateTime::from_timestamp_millis(self.at_ms)
            .map_or_else(String::new, |d| d.format("%Y-%m-%d").to_string());
        writeln!(
            f,
            "ranking check over {} scored people at {when} (simulated): who orders within 90 days ({} do)",
            all.leads, all.buyers
        )?;
        writeln!(
            f,
            "  {:<8} {:>6} {:>6}   ROC AUC score / rules / model   top-10% precision score / rules / model   base rate",
            "group", "leads", "buyers"
        )?;
        let model = |x: f64| {
            if self.model {
                format!("{x:.3}")
            } else {
                "-".into()
            }
        };
        for g in &self.groups {
            if g.leads == 0 {
                continue;
            }
            writeln!(
                f,
                "  {:<8} {:>6} {:>6}   {:.3} / {:.3} / {:<5}             {:.2} / {:.2} / {:<5}                      {:.3}",
                g.name,
                g.leads,
                g.buyers,
                g.auc[0],
                g.auc[1],
                model(g.auc[2]),
                g.top_decile[0],
                g.top_decile[1],
                model(g.top_decile[2]),
                g.buyers as f64 / g.leads as f64
            )?;
        }
        let [(lo0, n0), (lo1, n1)] = self.owners_low;
        writeln!(
            f,
            "  owners without upgrade behaviour graded low: {lo0} of {n0} (mean score {:.1}); with it: {lo1} of {n1} low (mean score {:.1})",
            self.owners_mean[0], self.owners_mean[1]
        )?;
        writeln!(
            f,
            "  owners who go on to buy again ({}): mean score {:.1}; the rest {:.1}",
            self.owners_buying.1, self.owners_buying.2, self.owners_buying.0
        )?;
        write!(
            f,
            "  dormant leads that woke with intent in the last 14 days flagged reactivated: {} of {}",
            self.reactivated.0, self.reactivated.1
        )
    }
}
