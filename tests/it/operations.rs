//! What operators rely on: every metric the alert rules (`deploy/prometheus`) and the
//! dashboards (`deploy/grafana`) name is one the services export, and every service
//! reports each backend's readiness as a series an alert can watch.

use std::collections::BTreeSet;
use std::path::Path;

use somagent_common::service::SERVICES;

use crate::helpers::{Platform, free_ports, metrics_page, wait_ok};

/// The metric families a `/metrics` page declares (`# TYPE <name> <type>`).
fn declared(page: &str) -> BTreeSet<String> {
    page.lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_owned)
        .collect()
}

/// The metric families `text` names: each `somagent_…` word, without the suffix a
/// counter's or a histogram's samples add to the family's name.
fn named(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("somagent_") {
        let word: String = rest[at..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        rest = &rest[at + word.len()..];
        let family = ["_total", "_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| word.strip_suffix(s))
            .unwrap_or(&word);
        names.insert(family.to_owned());
    }
    names
}

/// Every metric family the services' code registers: the first argument of each
/// `.register(` call in `crates/` and `services/`, a string literal or a constant of
/// the same file, under the registries' `somagent` prefix.
fn registered_in_source() -> BTreeSet<String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut files = Vec::new();
    let mut dirs = vec![root.join("crates"), root.join("services")];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                files.push(path);
            }
        }
    }
    let mut names = BTreeSet::new();
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        let constant = |name: &str| {
            let start = format!("pub const {name}: &str = \"");
            text.lines().find_map(|l| {
                l.trim()
                    .strip_prefix(start.as_str())
                    .and_then(|rest| rest.strip_suffix("\";"))
                    .map(str::to_owned)
            })
        };
        let mut rest = text.as_str();
        while let Some(at) = rest.find(".register(") {
            rest = &rest[at + ".register(".len()..];
            let argument = rest.trim_start();
            let name = if let Some(literal) = argument.strip_prefix('"') {
                literal.split('"').next().map(str::to_owned)
            } else {
                let ident: String = argument
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                constant(&ident)
            };
            if let Some(name) = name.filter(|n| !n.is_empty()) {
                names.insert(format!("somagent_{name}"));
            }
        }
    }
    names
}

fn deploy_files() -> Vec<(String, String)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("deploy");
    let mut files = vec![root.join("prometheus/alerts.yaml")];
    for entry in std::fs::read_dir(root.join("grafana")).unwrap() {
        files.push(entry.unwrap().path());
    }
    files
        .into_iter()
        .map(|p| {
            let text = std::fs::read_to_string(&p).unwrap();
            (p.display().to_string(), text)
        })
        .collect()
}

#[tokio::test]
async fn alerts_and_dashboards_name_only_metrics_the_services_export() {
    let data = tempfile::tempdir().unwrap();
    let ports = free_ports();
    let client = reqwest::Client::new();
    let platform = Platform::start(data.path(), &ports);
    let mut exported = BTreeSet::new();
    for spec in SERVICES {
        let base = &platform.addresses[spec.name];
        wait_ok(&client, &format!("{base}/healthz")).await;
        // A readiness report sets the backends' series (they are also refreshed in
        // the background).
        client.get(format!("{base}/readyz")).send().await.unwrap();
        let page = metrics_page(&client, base).await;
        let mut backends: Vec<&str> = spec.backends.iter().map(|b| b.name()).collect();
        if matches!(spec.name, "orchestrator" | "memory") {
            backends.push("workflows");
        }
        for backend in backends {
            let series = format!(
                "somagent_backend_ready{{service=\"{}\",backend=\"{backend}\"}} 1",
                spec.name,
            );
            assert!(
                page.contains(&series),
                "{}: no `{series}` in\n{page}",
                spec.name
            );
        }
        exported.extend(declared(&page));
    }
    // A family shows on `/metrics` once it has a series: the others are the ones the
    // services register (a counter nothing has touched yet).
    let registered = registered_in_source();
    assert!(
        exported.is_subset(&registered),
        "exported but not found registered in the source: {:?}",
        exported.difference(&registered).collect::<Vec<_>>()
    );
    let exported = registered;
    for family in [
        "somagent_backend_ready",
        "somagent_model_upstream_attempts",
        "somagent_model_upstream_failures",
        "somagent_budget_refusals",
        "somagent_consumer_dead_letters",
        "somagent_turns_ended",
    ] {
        assert!(
            exported.contains(family),
            "{family} is not registered: {exported:?}"
        );
    }
    // The check can fail.
    assert!(!named("rate(somagent_no_such_thing_total[5m])").is_subset(&exported));
    for (file, text) in deploy_files() {
        let names = named(&text);
        assert!(!names.is_empty(), "{file} names no metric");
        let unknown: Vec<_> = names.difference(&exported).collect();
        assert!(
            unknown.is_empty(),
            "{file} names metrics no service exports: {unknown:?}"
        );
    }
}
