//! `leadstream schemas check`: everything governance asks of the plan.

use std::{fs, path::Path};

use crate::{compat, docs, lint, lock, plan::Plan, problem::Problem};

/// Checks the plan under `dir` (`dir/avro/**`, and `dir/TRACKING_PLAN.md`
/// when `check_docs`). Returns every problem found; empty means clean.
pub fn check(dir: &Path, check_docs: bool) -> Result<Vec<Problem>, crate::PlanError> {
    let (plan, mut problems) = Plan::read_dir_lenient(dir)?;
    problems.extend(lint::lint(&plan));
    problems.extend(compat::check_plan(&plan));
    problems.extend(lock::drift(&plan));
    if check_docs {
        let rendered = docs::render(&plan);
        match fs::read_to_string(dir.join(docs::DOCS_FILE)) {
            Ok(current) if current == rendered => {}
            Ok(_) => problems.push(Problem::new(
                docs::DOCS_FILE,
                "docs_stale",
                "the rendered tracking plan is out of date; run `leadstream schemas docs` and commit it",
            )),
            Err(_) => problems.push(Problem::new(
                docs::DOCS_FILE,
                "docs_missing",
                "the rendered tracking plan is missing; run `leadstream schemas docs` and commit it",
            )),
        }
    }
    Ok(problems)
}
