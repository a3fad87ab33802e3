//! The environment variables `weft-await` reads, through a lookup trait.
//!
//! Reading goes through [`Lookup`] so tests pass a map instead of mutating
//! the process environment (which is global and racy; the workspace's
//! clippy configuration forbids `std::env::set_var`).

use std::collections::HashMap;

/// Any non-empty value skips the readiness wait and the shutdown call.
pub const DISABLED_VAR: &str = "WEFT_AWAIT_DISABLED";

/// A source of environment variables.
pub trait Lookup {
    /// The variable's value, if set and valid UTF-8.
    fn get(&self, name: &str) -> Option<String>;
}

/// The process environment.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcessEnv;

impl Lookup for ProcessEnv {
    fn get(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }
}

impl Lookup for HashMap<&str, &str> {
    fn get(&self, name: &str) -> Option<String> {
        HashMap::get(self, name).map(|value| (*value).to_owned())
    }
}

/// Why waiting is disabled, if it is: `Some("WEFT_AWAIT_DISABLED=…")`.
pub fn disabled_reason(env: &dyn Lookup) -> Option<String> {
    env.get(DISABLED_VAR)
        .filter(|value| !value.is_empty())
        .map(|value| format!("{DISABLED_VAR}={value}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disabled_table() {
        type Vars = &'static [(&'static str, &'static str)];
        let cases: &[(Vars, Option<&str>)] = &[
            (&[], None),
            (&[("WEFT_AWAIT_DISABLED", "")], None),
            (
                &[("WEFT_AWAIT_DISABLED", "1")],
                Some("WEFT_AWAIT_DISABLED=1"),
            ),
            (
                &[("WEFT_AWAIT_DISABLED", "false")],
                Some("WEFT_AWAIT_DISABLED=false"),
            ),
            (&[("LINKERD_AWAIT_DISABLED", "1")], None),
        ];
        for (vars, want) in cases {
            let env: HashMap<&str, &str> = vars.iter().copied().collect();
            assert_eq!(disabled_reason(&env).as_deref(), *want, "{vars:?}");
        }
    }

    #[test]
    fn process_env_reads_real_variables() {
        // PATH is set in any test environment; a random name is not.
        assert!(ProcessEnv.get("PATH").is_some());
        assert_eq!(ProcessEnv.get("WEFT_AWAIT_TEST_SURELY_UNSET_1234"), None);
    }
}
