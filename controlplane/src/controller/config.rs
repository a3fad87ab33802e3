//! The file backend's config file (`weft controller --config FILE`).
//!
//! One YAML file describes a mesh without Kubernetes: the identity token registry
//! (`tokens:`) and the file discovery backend's `workloads:` and `services:` (their schema
//! and checks live in [`crate::discovery::file`]). Unknown top-level keys are accepted
//! (and logged at debug), so a file written for a newer controller still loads; unknown
//! keys *inside* an entry are refused, so a typo such as `serviceAcount` is caught instead
//! of silently ignored.

use crate::discovery::file::{ServiceSpec, WorkloadSpec};
use crate::identity::tokens::TokenEntry;
use serde::Deserialize;
use std::path::PathBuf;

/// The parsed file.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct FileConfig {
    /// Bearer tokens proxies present to get a certificate.
    #[serde(default)]
    pub tokens: Vec<TokenEntry>,
    /// Pods or hosts that may run a proxy (file discovery backend).
    #[serde(default)]
    pub workloads: Vec<WorkloadSpec>,
    /// Virtual addresses in front of workloads or listed endpoints (file discovery backend).
    #[serde(default)]
    pub services: Vec<ServiceSpec>,
    /// Top-level keys this controller does not know (reported, not refused).
    #[serde(skip)]
    pub unknown_keys: Vec<String>,
}

/// The top-level keys this controller reads.
const KNOWN_KEYS: &[&str] = &["tokens", "workloads", "services"];

/// Why the config file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigFileError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
}

impl FileConfig {
    /// Parses YAML text. An empty document is an empty config.
    pub fn parse(text: &str) -> Result<Self, String> {
        let value: serde_yaml::Value = serde_yaml::from_str(text).map_err(|e| e.to_string())?;
        let unknown_keys = match &value {
            serde_yaml::Value::Null => return Ok(Self::default()),
            serde_yaml::Value::Mapping(m) => m
                .keys()
                .map(|k| match k {
                    serde_yaml::Value::String(s) => s.clone(),
                    other => format!("{other:?}"),
                })
                .filter(|k| !KNOWN_KEYS.contains(&k.as_str()))
                .collect(),
            _ => {
                return Err("expected a mapping at the top level (e.g. `tokens: [...]`)".to_string())
            }
        };
        // Parsed again from the text (not from `value`) so errors keep their line numbers.
        let mut config: Self = serde_yaml::from_str(text).map_err(|e| e.to_string())?;
        config.unknown_keys = unknown_keys;
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_tokens_and_accepts_unknown_top_level_keys() {
        let c = FileConfig::parse(
            r#"
tokens:
  - token: s3cret
    serviceAccount: web
    namespace: apps
services: []
workloads: []
policies: []
"#,
        )
        .unwrap();
        assert_eq!(
            c.tokens,
            vec![TokenEntry {
                token: "s3cret".into(),
                service_account: "web".into(),
                namespace: "apps".into(),
            }]
        );
        assert_eq!(c.unknown_keys, ["policies"]);
    }

    #[test]
    fn empty_file_is_empty_config() {
        for text in ["", "\n", "# nothing yet\n", "{}"] {
            let c = FileConfig::parse(text).unwrap();
            assert!(c.tokens.is_empty(), "{text:?}");
        }
    }

    #[test]
    fn refuses_malformed_files() {
        let cases = [
            ("- a\n- b\n", "expected a mapping"),
            ("tokens: 3\n", "tokens"),
            (
                "tokens:\n  - token: a\n    serviceAcount: web\n    namespace: apps\n",
                "unknown field `serviceAcount`",
            ),
            (
                "tokens:\n  - token: a\n    namespace: apps\n",
                "missing field `serviceAccount`",
            ),
            (
                "tokens:\n  - token: a\n    serviceAccount: [x]\n    namespace: apps\n",
                "line 3",
            ),
            ("tokens: [\n", "line"),
        ];
        for (text, want) in cases {
            let err = FileConfig::parse(text).unwrap_err();
            assert!(err.contains(want), "{text:?}: {err}");
        }
    }
}
