//! The code tool a tenant may turn on: Python and shell run in the platform's sandbox
//! (no network unless the tenant allows it, a private directory, limits on time,
//! memory and output). Off until a tenant admin creates it.

use std::time::Duration;

use serde_json::json;

use crate::domain::manifest::{Action, AuthScheme, SandboxPolicy, ToolManifest};

/// The most code one call may carry.
pub const MAX_CODE: usize = 100_000;

/// How a runner runs code: the program, its arguments, and the file the code is
/// written to in the private directory.
pub fn runner(name: &str) -> Option<(&'static str, &'static [&'static str], &'static str)> {
    match name {
        // `-I`: isolated mode, no user site-packages nor environment variables.
        "python" => Some(("/usr/bin/python3", &["-I", "main.py"], "main.py")),
        "shell" => Some(("/bin/sh", &["main.sh"], "main.sh")),
        _ => None,
    }
}

/// The code tool `id`: `run_python` and `run_shell`, each call at most `timeout`.
pub fn code_tool(id: &str, network: bool, timeout: Duration, price_micros: i64) -> ToolManifest {
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
        sandbox: Some(SandboxPolicy { network }),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_code_tool_is_a_valid_manifest_whose_runners_exist() {
        let m = code_tool("code", false, Duration::from_secs(20), 0);
        m.check().unwrap();
        for action in &m.actions {
            assert!(
                runner(action.remote.as_deref().unwrap()).is_some(),
                "{}",
                action.name
            );
        }
        assert_eq!(m.sandbox, Some(SandboxPolicy { network: false }));
        assert!(runner("ruby").is_none());
    }
}
