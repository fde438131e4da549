//! Where Rego runs: in process with `regorus` (the default), or on an OPA server
//! (`SOMAGENT_POLICY__OPA_URL`). Both take the same compiled module and input and answer the
//! same decision document; any failure is an error the caller turns into a denial.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use serde_json::Value;

use crate::domain::rego::Compiled;

pub enum Engine {
    InProcess(InProcess),
    Opa(Opa),
}

impl Engine {
    pub fn name(&self) -> &'static str {
        match self {
            Self::InProcess(_) => "regorus",
            Self::Opa(_) => "opa",
        }
    }

    /// Readies `compiled` for decisions (parsed here, or pushed to OPA), so that the
    /// first decision under it costs no more than the next.
    pub async fn prepare(&self, compiled: &Compiled) -> anyhow::Result<()> {
        match self {
            Self::InProcess(e) => e.prepare(compiled),
            Self::Opa(e) => e.push(compiled).await,
        }
    }

    pub async fn evaluate(&self, compiled: &Compiled, input: &Value) -> anyhow::Result<Value> {
        match self {
            Self::InProcess(e) => e.evaluate(compiled, input),
            Self::Opa(e) => e.evaluate(compiled, input).await,
        }
    }

    /// Decides `question` under `compiled`, the pattern matching and an in-process
    /// evaluation on a blocking thread: the future yields while they run, so a deadline
    /// around it binds (a synchronous evaluation inside `timeout` would finish, however
    /// long it took, before the timer is ever checked).
    pub async fn decide(
        &self,
        compiled: &Arc<Compiled>,
        question: Question,
    ) -> anyhow::Result<Value> {
        let run = |f: Box<dyn FnOnce() -> anyhow::Result<Value> + Send>| async move {
            tokio::task::spawn_blocking(f).await?
        };
        match self {
            Self::InProcess(e) => {
                let (pools, compiled) = (e.pools.clone(), compiled.clone());
                run(Box::new(move || {
                    let input = question.input(&compiled)?;
                    InProcess::evaluate_in(&pools, &compiled, &input)
                }))
                .await
            }
            Self::Opa(e) => {
                let matched = compiled.clone();
                let input = run(Box::new(move || question.input(&matched))).await?;
                e.evaluate(compiled, &input).await
            }
        }
    }
}

/// What a decision is asked about, owned so it can move to a blocking thread.
pub struct Question {
    pub action: String,
    pub text: String,
    pub tool: String,
    pub roles: Vec<String>,
}

impl Question {
    fn input(&self, compiled: &Compiled) -> anyhow::Result<Value> {
        let roles: Vec<&str> = self.roles.iter().map(String::as_str).collect();
        compiled.input(&self.action, &self.text, &self.tool, &roles)
    }
}

type Pools = Mutex<HashMap<String, Vec<regorus::Engine>>>;

/// regorus, each module parsed once: parsed engines wait in a pool per module, one per
/// evaluation running at the same time, so evaluations run in parallel without
/// parsing or copying the module again.
#[derive(Default)]
pub struct InProcess {
    pools: Arc<Pools>,
}

/// Parsed engines kept per module.
const POOL: usize = 16;

impl InProcess {
    fn parse(compiled: &Compiled) -> anyhow::Result<regorus::Engine> {
        let mut engine = regorus::Engine::new();
        engine.add_policy(
            format!("{}.rego", compiled.package),
            compiled.module.clone(),
        )?;
        Ok(engine)
    }

    fn prepare(&self, compiled: &Compiled) -> anyhow::Result<()> {
        let parsed = Self::parse(compiled)?;
        Self::put_back(&self.pools, compiled, parsed);
        Ok(())
    }

    fn evaluate(&self, compiled: &Compiled, input: &Value) -> anyhow::Result<Value> {
        Self::evaluate_in(&self.pools, compiled, input)
    }

    fn evaluate_in(pools: &Pools, compiled: &Compiled, input: &Value) -> anyhow::Result<Value> {
        let pooled = pools
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get_mut(&compiled.package)
            .and_then(Vec::pop);
        let mut engine = match pooled {
            Some(engine) => engine,
            None => Self::parse(compiled)?,
        };
        engine.set_input(regorus::Value::from_json_str(&input.to_string())?);
        let decision = engine.eval_rule(compiled.decision_rule())?;
        let decision = serde_json::from_str(&decision.to_json_str()?)?;
        Self::put_back(pools, compiled, engine);
        Ok(decision)
    }

    fn put_back(pools: &Pools, compiled: &Compiled, engine: regorus::Engine) {
        let mut pools = pools.lock().unwrap_or_else(|e| e.into_inner());
        if pools.len() > 1024 {
            pools.clear();
        }
        let pool = pools.entry(compiled.package.clone()).or_default();
        if pool.len() < POOL {
            pool.push(engine);
        }
    }
}

/// An OPA server: modules are pushed once (`PUT /v1/policies/{id}`), decisions read
/// with `POST /v1/data/{path}` and the input wrapped in `{"input": ...}` (without the
/// wrapper OPA answers 200 having evaluated nothing).
pub struct Opa {
    base: String,
    http: reqwest::Client,
    pushed: Mutex<std::collections::HashSet<String>>,
}

impl Opa {
    pub fn new(base: &str) -> anyhow::Result<Self> {
        Ok(Self {
            base: base.trim_end_matches('/').to_owned(),
            http: reqwest::Client::builder()
                .timeout(std::time::Duration::from_secs(2))
                .build()?,
            pushed: Mutex::default(),
        })
    }

    /// Pushes `compiled` unless this process pushed it already.
    async fn push(&self, compiled: &Compiled) -> anyhow::Result<()> {
        let known = self
            .pushed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(&compiled.package);
        if !known {
            let response = self
                .http
                .put(format!("{}/v1/policies/{}", self.base, compiled.package))
                .header("content-type", "text/plain")
                .body(compiled.module.clone())
                .send()
                .await?;
            anyhow::ensure!(
                response.status().is_success(),
                "OPA refused the policy module: {} {}",
                response.status(),
                response.text().await.unwrap_or_default()
            );
            self.pushed
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(compiled.package.clone());
        }
        Ok(())
    }

    async fn evaluate(&self, compiled: &Compiled, input: &Value) -> anyhow::Result<Value> {
        self.push(compiled).await?;
        let response = self
            .http
            .post(format!("{}/v1/data/{}", self.base, compiled.data_path()))
            .json(&serde_json::json!({ "input": input }))
            .send()
            .await?;
        anyhow::ensure!(
            response.status().is_success(),
            "OPA answered {}",
            response.status()
        );
        let mut body: Value = response.json().await?;
        match body.get_mut("result") {
            Some(result) => Ok(result.take()),
            // An undefined decision: the module is missing (OPA restarted); push again.
            None => {
                self.pushed
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&compiled.package);
                anyhow::bail!("OPA has no decision for {}", compiled.package)
            }
        }
    }
}
