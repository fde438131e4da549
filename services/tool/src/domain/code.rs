//! The tools a tenant may turn on that run in the platform's sandbox (no network unless
//! the tenant allows it, a private directory per call, limits on time, memory and
//! output): the code tool (Python and shell) and Terraform (the `terraform` CLI:
//! validate, plan, apply after a person's approval). Off until a tenant admin creates
//! one: a Terraform configuration can run commands too (`local-exec`).

use std::time::Duration;

use serde_json::json;

use crate::domain::manifest::{Action, AuthScheme, SandboxPolicy, ToolManifest};

/// The most code one call may carry.
pub const MAX_CODE: usize = 100_000;

/// The most files one Terraform call may carry.
pub const MAX_FILES: usize = 50;
/// Where the `terraform` CLI is looked for.
pub const TERRAFORM: &[&str] = &["/usr/local/bin/terraform", "/usr/bin/terraform"];

/// A sandboxed run: the program, its arguments, the files written to its private
/// directory first, and its standard input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Run {
    pub program: String,
    pub args: Vec<String>,
    pub files: Vec<(String, String)>,
    pub stdin: String,
}

fn text(arguments: &serde_json::Map<String, serde_json::Value>, key: &str) -> String {
    arguments
        .get(key)
        .and_then(serde_json::Value::as_str)
        .unwrap_or_default()
        .to_owned()
}

/// The Terraform subcommands each runner ends with, after `init`.
fn terraform_steps(runner: &str) -> Option<&'static str> {
    Some(match runner {
        "terraform-validate" => "terraform validate -no-color",
        "terraform-plan" => "terraform plan -input=false -no-color -lock=false",
        "terraform-apply" => {
            "terraform apply -input=false -no-color -lock=false -auto-approve && terraform output -no-color -json"
        }
        _ => return None,
    })
}

/// How runner `runner` runs a call with `arguments` (already checked against the
/// action's schema); `terraform` is the CLI's path, when installed.
pub fn prepare_run(
    runner: &str,
    arguments: &serde_json::Map<String, serde_json::Value>,
    terraform: Option<&str>,
) -> Result<Run, String> {
    let single = |program: &str, args: &[&str], file: &str| Run {
        program: program.into(),
        args: args.iter().map(|a| (*a).to_owned()).collect(),
        files: vec![(file.into(), text(arguments, "code"))],
        stdin: text(arguments, "stdin"),
    };
    match runner {
        // `-I`: isolated mode, no user site-packages nor environment variables.
        "python" => Ok(single("/usr/bin/python3", &["-I", "main.py"], "main.py")),
        "shell" => Ok(single("/bin/sh", &["main.sh"], "main.sh")),
        _ => {
            let steps = terraform_steps(runner).ok_or_else(|| format!("no runner `{runner}`"))?;
            let terraform =
                terraform.ok_or("the terraform CLI is not installed on this platform")?;
            let mut files = Vec::new();
            for (name, content) in arguments
                .get("files")
                .and_then(serde_json::Value::as_object)
                .into_iter()
                .flatten()
            {
                let named = !name.starts_with('.')
                    && name
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
                    && [".tf", ".tf.json", ".tfvars", ".tfvars.json"]
                        .iter()
                        .any(|e| name.ends_with(e));
                if !named {
                    return Err(format!(
                        "file `{name}` is a Terraform file name (main.tf, vars.tfvars)"
                    ));
                }
                files.push((
                    name.clone(),
                    content.as_str().unwrap_or_default().to_owned(),
                ));
            }
            let bin = std::path::Path::new(terraform)
                .parent()
                .map(|p| p.display().to_string())
                .unwrap_or_default();
            let script = format!(
                "export PATH={bin}:$PATH CHECKPOINT_DISABLE=1 TF_IN_AUTOMATION=1; \
                 terraform init -input=false -no-color > init.log || {{ cat init.log >&2; exit 1; }}; {steps}"
            );
            Ok(Run {
                program: "/bin/sh".into(),
                args: vec!["-c".into(), script],
                files,
                stdin: String::new(),
            })
        }
    }
}

/// Why a tool cannot run on this platform, if it cannot (its CLI is not installed).
/// `terraform` finds the CLI, asked only for a tool that needs it: every turn's tool
/// list asks this of every tool.
pub fn unavailable(
    manifest: &ToolManifest,
    terraform: impl FnOnce() -> Option<&'static str>,
) -> Option<String> {
    let needs_terraform = manifest.sandbox.is_some()
        && manifest.actions.iter().any(|a| {
            a.remote
                .as_deref()
                .is_some_and(|r| r.starts_with("terraform"))
        });
    (needs_terraform && terraform().is_none())
        .then(|| "the terraform CLI is not installed on this platform".to_owned())
}

/// The `terraform` CLI on this machine, if installed.
pub fn find_terraform() -> Option<&'static str> {
    TERRAFORM
        .iter()
        .copied()
        .find(|p| std::path::Path::new(p).exists())
}

/// The code tool `id`: `run_python` and `run_shell`, each call at most `timeout`.
pub fn code_tool(
    id: &str,
    policy: SandboxPolicy,
    timeout: Duration,
    price_micros: i64,
) -> ToolManifest {
    let network = policy.network;
    let parameters = |what: &str| {
        json!({
            "type": "object",
            "required": ["code"],
            "additionalProperties": false,
            "properties": {
                "code": {"type": "string", "maxLength": MAX_CODE, "description": what},
                "stdin": {"type": "string", "maxLength": 1_000_000, "description": "Text given on standard input."},
            },
        })
    };
    let action = |name: &str, runner: &str, description: &str, what: &str| Action {
        name: name.into(),
        description: description.into(),
        parameters: parameters(what),
        capability: "tools:invoke".into(),
        rate_limit_per_minute: 60,
        timeout,
        price_micros,
        requires_approval: false,
        http: Default::default(),
        remote: Some(runner.into()),
    };
    let network_note = if network {
        "with network access"
    } else {
        "without network access"
    };
    ToolManifest {
        id: id.into(),
        name: "Code".into(),
        description: format!(
            "Runs Python or shell in a sandbox {network_note}: a fresh private directory each call, limits on CPU time, memory and output."
        ),
        version: "1".into(),
        base_url: "sandbox:".into(),
        site_required: false,
        auth: AuthScheme::None,
        headers: Default::default(),
        pagination: None,
        mcp: false,
        browser: false,
        memory: false,
        sandbox: Some(policy),
        actions: vec![
            action(
                "run_python",
                "python",
                "Run a Python 3 program; returns its exit code, stdout and stderr. Print what you need to see.",
                "The Python program.",
            ),
            action(
                "run_shell",
                "shell",
                "Run a POSIX shell script; returns its exit code, stdout and stderr.",
                "The shell script.",
            ),
        ],
    }
}

/// The Terraform tool `id`: `validate`, `plan` and `apply` (after a person's approval)
/// of a configuration given as files, each call in a fresh directory (state lives in
/// the configuration's own backend, if it names one).
pub fn terraform_tool(
    id: &str,
    policy: SandboxPolicy,
    timeout: Duration,
    price_micros: i64,
) -> ToolManifest {
    let parameters = json!({
        "type": "object",
        "required": ["files"],
        "additionalProperties": false,
        "properties": {
            "files": {
                "type": "object",
                "minProperties": 1,
                "maxProperties": MAX_FILES,
                "additionalProperties": {"type": "string", "maxLength": MAX_CODE},
                "description": "The configuration: file name (main.tf, variables.tf, terraform.tfvars) to its text.",
            },
        },
    });
    let action = |name: &str, runner: &str, description: &str, approval: bool| Action {
        name: name.into(),
        description: description.into(),
        parameters: parameters.clone(),
        capability: "tools:invoke".into(),
        rate_limit_per_minute: 30,
        timeout,
        price_micros,
        requires_approval: approval,
        http: Default::default(),
        remote: Some(runner.into()),
    };
    ToolManifest {
        id: id.into(),
        name: "Terraform".into(),
        description: "Runs the terraform CLI on a configuration in a sandbox: validate, plan, and apply once a person approves.".into(),
        version: "1".into(),
        base_url: "sandbox:".into(),
        site_required: false,
        auth: AuthScheme::None,
        headers: Default::default(),
        pagination: None,
        mcp: false,
        browser: false,
        memory: false,
        sandbox: Some(policy),
        actions: vec![
            action("validate", "terraform-validate", "Check a configuration: syntax, references, types.", false),
            action("plan", "terraform-plan", "Show what applying a configuration would change.", false),
            action("apply", "terraform-apply", "Apply a configuration, then print its outputs as JSON.", true),
        ],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(v: serde_json::Value) -> serde_json::Map<String, serde_json::Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn the_sandbox_tools_are_valid_manifests_whose_runners_exist() {
        let code = code_tool("code", SandboxPolicy::default(), Duration::from_secs(20), 0);
        let online = SandboxPolicy {
            network: true,
            allow_hosts: vec![],
        };
        let terraform = terraform_tool("terraform", online, Duration::from_secs(60), 0);
        for m in [&code, &terraform] {
            m.check().unwrap();
            for action in &m.actions {
                let runner = action.remote.as_deref().unwrap();
                let given = args(json!({"code": "x", "files": {"main.tf": ""}}));
                let ran = prepare_run(runner, &given, Some("/usr/bin/terraform"));
                assert!(ran.is_ok(), "{}: {ran:?}", action.name);
            }
        }
        assert_eq!(code.sandbox, Some(SandboxPolicy::default()));
        assert!(terraform.action("apply").unwrap().requires_approval);
        assert!(prepare_run("ruby", &args(json!({})), None).is_err());
    }

    #[test]
    fn terraform_takes_only_terraform_files_and_needs_its_cli() {
        let config = "output \"a\" { value = 1 }";
        let given = args(json!({"files": {"main.tf": config}}));
        let plan = prepare_run("terraform-plan", &given, Some("/usr/local/bin/terraform")).unwrap();
        assert_eq!(plan.files, [("main.tf".to_owned(), config.to_owned())]);
        assert!(plan.args[1].contains("terraform plan") && plan.args[1].contains("/usr/local/bin"));
        for bad in ["../main.tf", "main.sh", ".terraformrc", "sub/main.tf"] {
            let given = args(json!({"files": {bad: ""}}));
            assert!(
                prepare_run("terraform-plan", &given, Some("/t")).is_err(),
                "{bad}"
            );
        }
        let given = args(json!({"files": {"main.tf": ""}}));
        let missing = prepare_run("terraform-plan", &given, None).unwrap_err();
        assert!(missing.contains("not installed"), "{missing}");
        let online = SandboxPolicy {
            network: true,
            allow_hosts: vec!["registry.terraform.io".into()],
        };
        let tf = terraform_tool("terraform", online, Duration::from_secs(60), 0);
        assert!(unavailable(&tf, || None).is_some());
        assert!(unavailable(&tf, || Some("/t")).is_none());
        let code = code_tool("code", SandboxPolicy::default(), Duration::from_secs(1), 0);
        assert!(unavailable(&code, || panic!("asked for terraform without needing it")).is_none());
    }
}
