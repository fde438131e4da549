//! A project's plan: the deliverables a planner answers with, checked (its JSON
//! Schema, unique ids, known dependencies, no cycles, not too many), and laid out in
//! waves by topological layer; a reviewer's score. No I/O: the project workflow calls
//! these on what its steps returned, so a replay decides the same.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// One deliverable of a plan, as the planner wrote it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Deliverable {
    pub id: String,
    pub title: String,
    pub description: String,
    #[serde(default)]
    pub acceptance_criteria: Vec<String>,
    #[serde(default)]
    pub dependencies: Vec<String>,
    /// The capsule that produces it; the project's worker when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capsule: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub estimate_tokens: Option<u64>,
    /// The tools it needs (tool ids or `<tool>__<action>`); governed like its text.
    #[serde(default)]
    pub tools: Vec<String>,
}

#[derive(Deserialize)]
struct PlanDocument {
    deliverables: Vec<Deliverable>,
}

/// `[a-z0-9][a-z0-9_-]{0,63}`: a deliverable's id names its child run and its files.
pub fn valid_id(id: &str) -> bool {
    somagent_common::capsule::valid_name(id, 1)
}

/// The first JSON object in a model's answer: the whole answer, or inside a fenced
/// block, or from its first `{` to its last `}`.
pub fn json_in(answer: &str) -> Option<Value> {
    let trimmed = answer.trim();
    if let Ok(value) = serde_json::from_str::<Value>(trimmed) {
        return value.is_object().then_some(value);
    }
    let (start, end) = (trimmed.find('{')?, trimmed.rfind('}')?);
    (start < end)
        .then(|| serde_json::from_str::<Value>(&trimmed[start..=end]).ok())
        .flatten()
        .filter(Value::is_object)
}

/// The plan in a planner's answer, or every reason it is not one (what the planner is
/// told when asked again).
pub fn parse_plan(
    answer: &str,
    schema: Option<&Value>,
    max_deliverables: usize,
) -> Result<Vec<Deliverable>, Vec<String>> {
    let Some(value) = json_in(answer) else {
        return Err(vec![
            "the answer is not a JSON object; answer with the JSON object alone".into(),
        ]);
    };
    if let Some(schema) = schema {
        let validator = jsonschema::validator_for(schema)
            .map_err(|e| vec![format!("the planner's own schema does not compile: {e}")])?;
        let problems: Vec<String> = validator
            .iter_errors(&value)
            .take(20)
            .map(|e| {
                let at = e.instance_path().to_string();
                if at.is_empty() {
                    e.to_string()
                } else {
                    format!("{at}: {e}")
                }
            })
            .collect();
        if !problems.is_empty() {
            return Err(problems);
        }
    }
    let plan: PlanDocument = serde_json::from_value(value)
        .map_err(|e| vec![format!("the plan does not read as deliverables: {e}")])?;
    let mut problems = Vec::new();
    let deliverables = plan.deliverables;
    if deliverables.is_empty() {
        problems.push("a plan has at least one deliverable".into());
    }
    if deliverables.len() > max_deliverables {
        problems.push(format!(
            "the plan has {} deliverables; at most {max_deliverables} are allowed",
            deliverables.len()
        ));
    }
    let mut seen = std::collections::HashSet::new();
    for d in &deliverables {
        if !valid_id(&d.id) {
            problems.push(format!(
                "deliverable id `{}` is not [a-z0-9][a-z0-9_-]{{0,63}}",
                d.id
            ));
        }
        if !seen.insert(d.id.as_str()) {
            problems.push(format!("deliverable id `{}` appears twice", d.id));
        }
    }
    for d in &deliverables {
        for dep in &d.dependencies {
            if dep == &d.id {
                problems.push(format!("`{}` depends on itself", d.id));
            } else if !seen.contains(dep.as_str()) {
                problems.push(format!(
                    "`{}` depends on `{dep}`, which is not in the plan",
                    d.id
                ));
            }
        }
    }
    if problems.is_empty()
        && let Err(cycle) = layers(
            &deliverables
                .iter()
                .map(|d| (d.id.clone(), d.dependencies.clone()))
                .collect::<Vec<_>>(),
        )
    {
        problems.push(format!(
            "the dependencies form a cycle through {}",
            cycle.join(", ")
        ));
    }
    if problems.is_empty() {
        Ok(deliverables)
    } else {
        Err(problems)
    }
}

/// The items in waves: each wave holds what depends only on earlier waves, in the
/// items' own order. A cycle is an error naming the items on it.
pub fn layers(items: &[(String, Vec<String>)]) -> Result<Vec<Vec<String>>, Vec<String>> {
    let mut placed: std::collections::HashSet<&str> = std::collections::HashSet::new();
    let mut waves = Vec::new();
    while placed.len() < items.len() {
        let wave: Vec<String> = items
            .iter()
            .filter(|(id, deps)| {
                !placed.contains(id.as_str()) && deps.iter().all(|d| placed.contains(d.as_str()))
            })
            .map(|(id, _)| id.clone())
            .collect();
        if wave.is_empty() {
            return Err(items
                .iter()
                .filter(|(id, _)| !placed.contains(id.as_str()))
                .map(|(id, _)| id.clone())
                .collect());
        }
        for id in &wave {
            if let Some((id, _)) = items.iter().find(|(i, _)| i == id) {
                placed.insert(id.as_str());
            }
        }
        waves.push(wave);
    }
    Ok(waves)
}

/// A reviewer's verdict: its score (0-100) and notes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Review {
    pub score: u32,
    pub notes: String,
}

/// The review in a reviewer's answer, if it holds one.
pub fn parse_review(answer: &str) -> Option<Review> {
    let value = json_in(answer)?;
    let score = value.get("score")?.as_u64().filter(|s| *s <= 100)?;
    Some(Review {
        score: u32::try_from(score).ok()?,
        notes: value
            .get("notes")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn plan(items: Value) -> String {
        json!({ "deliverables": items }).to_string()
    }

    fn d(id: &str, deps: &[&str]) -> Value {
        json!({"id": id, "title": id, "description": "do it", "acceptance_criteria": ["done"],
               "dependencies": deps})
    }

    #[test]
    fn a_plan_is_read_from_the_answer_even_fenced() {
        let answer = format!(
            "Here you go:\n```json\n{}\n```",
            plan(json!([d("api", &[]), d("ui", &["api"])]))
        );
        let parsed = parse_plan(&answer, None, 12).unwrap();
        assert_eq!(parsed.len(), 2);
        assert_eq!(parsed[1].dependencies, ["api"]);
    }

    #[test]
    fn every_problem_of_a_plan_is_named() {
        let schema = json!({"type": "object", "required": ["deliverables"],
            "properties": {"deliverables": {"type": "array", "items": {"type": "object", "required": ["title"]}}}});
        let errors = parse_plan(
            &json!({"deliverables": [{"id": "a"}]}).to_string(),
            Some(&schema),
            12,
        )
        .unwrap_err();
        assert!(errors.iter().any(|e| e.contains("title")), "{errors:?}");
        assert!(parse_plan("no plan here", None, 12).unwrap_err()[0].contains("not a JSON object"));
        let errors =
            parse_plan(&plan(json!([d("a", &["b"]), d("b", &["a"])])), None, 12).unwrap_err();
        assert!(errors[0].contains("cycle"), "{errors:?}");
        let errors =
            parse_plan(&plan(json!([d("a", &["ghost"]), d("a", &[])])), None, 12).unwrap_err();
        assert!(errors.iter().any(|e| e.contains("twice")), "{errors:?}");
        assert!(errors.iter().any(|e| e.contains("ghost")), "{errors:?}");
        let errors = parse_plan(
            &plan(json!([d("a", &[]), d("b", &[]), d("c", &[])])),
            None,
            2,
        )
        .unwrap_err();
        assert!(errors[0].contains("at most 2"), "{errors:?}");
    }

    #[test]
    fn waves_follow_the_dependencies_in_plan_order() {
        let items = vec![
            ("docs".to_owned(), vec!["api".to_owned(), "ui".to_owned()]),
            ("api".to_owned(), vec![]),
            ("ui".to_owned(), vec!["api".to_owned()]),
            ("ops".to_owned(), vec![]),
        ];
        assert_eq!(
            layers(&items).unwrap(),
            vec![vec!["api", "ops"], vec!["ui"], vec!["docs"]]
        );
    }

    #[test]
    fn a_review_is_a_score_and_notes() {
        assert_eq!(
            parse_review("{\"score\": 55, \"notes\": \"add tests\"}"),
            Some(Review {
                score: 55,
                notes: "add tests".into()
            })
        );
        assert_eq!(parse_review("{\"score\": 101}"), None);
        assert_eq!(parse_review("looks great"), None);
    }
}
