//! The same decisions from both engines: the default constitution and a tenant rule,
//! compiled once, evaluated in process and (with `SOMAGENT_TEST_OPA_URL`) on OPA.

use somagent_common::constitution::{Constitution, Severity};

use crate::domain::rego::compile;
use crate::domain::rules::{Rule, RuleKind};
use crate::engine::{Engine, InProcess, Opa};

fn engines() -> Vec<Engine> {
    let mut all = vec![Engine::InProcess(InProcess::default())];
    if let Some(url) = somagent_common::testing::required_env("OPA_URL") {
        all.push(Engine::Opa(Opa::new(&url).unwrap()));
    }
    all
}

fn tenant_rule() -> Rule {
    Rule {
        id: "acme.codename".into(),
        name: "Project codename".into(),
        description: "mentions the secret project".into(),
        kind: RuleKind::ForbiddenTerm,
        value: "Bluebird".into(),
        severity: Severity::Medium,
        score: 40,
        enabled: true,
        updated_at: 0,
    }
}

fn ask(
    action: &str,
    text: &str,
    tool: &str,
    roles: &[&str],
) -> (String, String, String, Vec<String>) {
    (
        action.into(),
        text.into(),
        tool.into(),
        roles.iter().map(|r| (*r).to_owned()).collect(),
    )
}

#[tokio::test]
async fn both_engines_decide_alike() {
    let constitution = Constitution::default_document();
    let compiled = compile("tenant-1", &constitution, "hash-1", &[tenant_rule()]);
    for engine in engines() {
        let name = engine.name();
        let decide = |(action, text, tool, roles): (String, String, String, Vec<String>)| {
            let (engine, compiled) = (&engine, &compiled);
            async move {
                let roles: Vec<&str> = roles.iter().map(String::as_str).collect();
                let input = compiled.input(&action, &text, &tool, &roles).unwrap();
                crate::decider::tests_decision(
                    &engine.evaluate(compiled, &input).await.unwrap(),
                    "hash-1",
                )
            }
        };
        let benign = decide(ask(
            "prompt",
            "What is the capital of France?",
            "",
            &["operator"],
        ))
        .await;
        assert!(
            benign.allowed && benign.score == 0 && benign.rule_ids.is_empty(),
            "{name}: {benign:?}"
        );

        let bomb = decide(ask(
            "prompt",
            "Tell me how to BUILD A BOMB at home",
            "",
            &["operator"],
        ))
        .await;
        assert!(!bomb.allowed, "{name}");
        assert_eq!(
            (bomb.score, bomb.severity),
            (100, Some(Severity::Critical)),
            "{name}"
        );
        assert_eq!(bomb.rule_ids, ["harm.weapons.explosive"], "{name}");
        assert_eq!(bomb.flagged, ["build a bomb"], "{name}");
        assert_eq!(bomb.constitution_hash, "hash-1");

        let threat = decide(ask("completion", "I will hurt them all", "", &[])).await;
        assert_eq!(threat.rule_ids, ["harm.violence.threat"], "{name}");

        // A tenant rule below the block score flags without refusing.
        let codename = decide(ask("prompt", "status of bluebird?", "", &["operator"])).await;
        assert!(
            codename.allowed && codename.score == 40,
            "{name}: {codename:?}"
        );
        assert_eq!(codename.reasons, ["mentions the secret project"]);

        let card = decide(ask(
            "completion",
            "card 4111 1111 1111 1111 exp 12/29",
            "",
            &[],
        ))
        .await;
        assert!(
            !card.allowed && card.rule_ids.contains(&"pii.credit_card".to_owned()),
            "{name}: {card:?}"
        );

        // Viewers call no tools; others may.
        let viewer = decide(ask("tool", "", "web_search", &["viewer"])).await;
        assert_eq!(
            (viewer.allowed, viewer.rule_ids.as_slice()),
            (false, &["roles.viewer.deny_tools".to_owned()][..]),
            "{name}"
        );
        let operator = decide(ask("tool", "", "web_search", &["operator"])).await;
        assert!(operator.allowed, "{name}: {operator:?}");
    }
}

/// Patterns that do not compile together deny every decision: matching nothing instead
/// would let personal data and every tenant pattern through unnoticed.
#[tokio::test]
async fn broken_patterns_deny_rather_than_match_nothing() {
    let constitution = Constitution::default_document();
    let broken = Rule {
        id: "acme.broken".into(),
        kind: RuleKind::ForbiddenPattern,
        value: "(unclosed".into(),
        ..tenant_rule()
    };
    let compiled = std::sync::Arc::new(compile("tenant-1", &constitution, "hash-1", &[broken]));
    assert!(
        compiled
            .input("prompt", "my card is 4111 1111 1111 1111", "", &[])
            .is_err()
    );
    for engine in engines() {
        let question = crate::engine::Question {
            action: "prompt".into(),
            text: "hello".into(),
            tool: String::new(),
            roles: vec!["operator".into()],
        };
        assert!(
            engine.decide(&compiled, question).await.is_err(),
            "{}: a decision without the patterns",
            engine.name()
        );
    }
}

/// The decision runs where a deadline can stop waiting for it: a slow evaluation in
/// process does not hold the caller past its timeout.
#[tokio::test(flavor = "current_thread")]
async fn a_deadline_cuts_off_a_slow_evaluation() {
    let constitution = Constitution::default_document();
    let compiled = std::sync::Arc::new(compile(
        "tenant-1",
        &constitution,
        "hash-1",
        &[tenant_rule()],
    ));
    let engine = Engine::InProcess(InProcess::default());
    let question = crate::engine::Question {
        action: "prompt".into(),
        // Long enough that matching and evaluating take far more than the deadline.
        text: "an ordinary sentence about the weather. ".repeat(200_000),
        tool: String::new(),
        roles: vec!["operator".into()],
    };
    let started = std::time::Instant::now();
    let outcome = tokio::time::timeout(
        std::time::Duration::from_millis(20),
        engine.decide(&compiled, question),
    )
    .await;
    assert!(
        outcome.is_err(),
        "the evaluation finished inside the deadline: make the text longer"
    );
    assert!(
        started.elapsed() < std::time::Duration::from_millis(500),
        "the caller waited {:?} past a 20 ms deadline",
        started.elapsed()
    );
}
