//! RFC 6902 JSON Patch, the small part of it the injector needs: `add`, `replace` and
//! `remove` operations with RFC 6901 JSON Pointer paths, as serde values (the admission
//! webhook sends them base64-encoded), and an applier used by `weft inject --manual` and by
//! the tests to check that a patch does what it says.
//!
//! The applier works on `serde_yaml::Value` so that `weft inject` keeps the order of keys in
//! the user's manifest; [`apply_json`] wraps it for JSON documents.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// One JSON Patch operation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "lowercase")]
pub enum JsonPatchOp {
    /// Adds a member, inserts into an array at an index, or appends with `-`.
    Add { path: String, value: Value },
    /// Replaces an existing value.
    Replace { path: String, value: Value },
    /// Removes an existing member or array element.
    Remove { path: String },
}

impl JsonPatchOp {
    pub fn add(path: impl Into<String>, value: Value) -> Self {
        JsonPatchOp::Add {
            path: path.into(),
            value,
        }
    }

    pub fn path(&self) -> &str {
        match self {
            JsonPatchOp::Add { path, .. }
            | JsonPatchOp::Replace { path, .. }
            | JsonPatchOp::Remove { path } => path,
        }
    }
}

/// Escapes one reference token of a JSON Pointer: `~` → `~0`, `/` → `~1` (RFC 6901 §3), so
/// that `weft.dev/inject` becomes `weft.dev~1inject`.
pub fn escape(token: &str) -> String {
    token.replace('~', "~0").replace('/', "~1")
}

fn unescape(token: &str) -> String {
    token.replace("~1", "/").replace("~0", "~")
}

/// Why a patch could not be applied; names the operation's path.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PatchError {
    #[error("JSON Pointer {0:?} does not start with '/'")]
    BadPointer(String),
    #[error("{path}: no such location in the document")]
    NotFound { path: String },
    #[error("{path}: array index {token:?} is not a number within the array")]
    BadIndex { path: String, token: String },
    #[error("{path}: the parent is neither an object nor an array")]
    NotAContainer { path: String },
    #[error("cannot convert the document: {0}")]
    Convert(String),
}

/// Applies `ops` in order to a YAML document. On error the document may be partly changed;
/// callers apply to a copy.
pub fn apply(doc: &mut serde_yaml::Value, ops: &[JsonPatchOp]) -> Result<(), PatchError> {
    for op in ops {
        apply_one(doc, op)?;
    }
    Ok(())
}

/// Applies `ops` to a JSON document and returns the result.
#[cfg_attr(not(test), allow(dead_code))]
pub fn apply_json(doc: &Value, ops: &[JsonPatchOp]) -> Result<Value, PatchError> {
    let mut y = serde_yaml::to_value(doc).map_err(|e| PatchError::Convert(e.to_string()))?;
    apply(&mut y, ops)?;
    serde_json::to_value(&y).map_err(|e| PatchError::Convert(e.to_string()))
}

fn split(path: &str) -> Result<(Vec<String>, String), PatchError> {
    let rest = path
        .strip_prefix('/')
        .ok_or_else(|| PatchError::BadPointer(path.to_string()))?;
    let mut tokens: Vec<String> = rest.split('/').map(unescape).collect();
    let last = tokens.pop().unwrap_or_default();
    Ok((tokens, last))
}

fn parent<'a>(
    doc: &'a mut serde_yaml::Value,
    tokens: &[String],
    path: &str,
) -> Result<&'a mut serde_yaml::Value, PatchError> {
    let mut cur = doc;
    for t in tokens {
        cur = match cur {
            serde_yaml::Value::Mapping(m) => m.get_mut(t.as_str()),
            serde_yaml::Value::Sequence(s) => t.parse::<usize>().ok().and_then(|i| s.get_mut(i)),
            _ => None,
        }
        .ok_or_else(|| PatchError::NotFound {
            path: path.to_string(),
        })?;
    }
    Ok(cur)
}

fn apply_one(doc: &mut serde_yaml::Value, op: &JsonPatchOp) -> Result<(), PatchError> {
    let path = op.path();
    let (tokens, last) = split(path)?;
    let target = parent(doc, &tokens, path)?;
    let bad_index = || PatchError::BadIndex {
        path: path.to_string(),
        token: last.clone(),
    };
    let not_found = || PatchError::NotFound {
        path: path.to_string(),
    };
    let to_yaml = |v: &Value| {
        serde_yaml::to_value(v)
            .map(name_first)
            .map_err(|e| PatchError::Convert(e.to_string()))
    };
    match (op, target) {
        (JsonPatchOp::Add { value, .. }, serde_yaml::Value::Mapping(m)) => {
            m.insert(serde_yaml::Value::String(last.clone()), to_yaml(value)?);
        }
        (JsonPatchOp::Add { value, .. }, serde_yaml::Value::Sequence(s)) => {
            let v = to_yaml(value)?;
            if last == "-" {
                s.push(v);
            } else {
                let i = last
                    .parse::<usize>()
                    .ok()
                    .filter(|i| *i <= s.len())
                    .ok_or_else(bad_index)?;
                s.insert(i, v);
            }
        }
        (JsonPatchOp::Replace { value, .. }, serde_yaml::Value::Mapping(m)) => {
            let slot = m.get_mut(last.as_str()).ok_or_else(not_found)?;
            *slot = to_yaml(value)?;
        }
        (JsonPatchOp::Replace { value, .. }, serde_yaml::Value::Sequence(s)) => {
            let i = last.parse::<usize>().map_err(|_| bad_index())?;
            let slot = s.get_mut(i).ok_or_else(bad_index)?;
            *slot = to_yaml(value)?;
        }
        (JsonPatchOp::Remove { .. }, serde_yaml::Value::Mapping(m)) => {
            m.remove(last.as_str()).ok_or_else(not_found)?;
        }
        (JsonPatchOp::Remove { .. }, serde_yaml::Value::Sequence(s)) => {
            let i = last
                .parse::<usize>()
                .ok()
                .filter(|i| *i < s.len())
                .ok_or_else(bad_index)?;
            s.remove(i);
        }
        _ => {
            return Err(PatchError::NotAContainer {
                path: path.to_string(),
            })
        }
    }
    Ok(())
}

/// Moves `name` to the front of every mapping, so added containers, variables and volumes
/// read like hand-written ones (serde_json sorts keys).
fn name_first(v: serde_yaml::Value) -> serde_yaml::Value {
    match v {
        serde_yaml::Value::Mapping(m) => {
            let mut out = serde_yaml::Mapping::new();
            let mut rest = Vec::new();
            for (k, v) in m {
                if k.as_str() == Some("name") {
                    out.insert(k, name_first(v));
                } else {
                    rest.push((k, name_first(v)));
                }
            }
            out.extend(rest);
            serde_yaml::Value::Mapping(out)
        }
        serde_yaml::Value::Sequence(s) => {
            serde_yaml::Value::Sequence(s.into_iter().map(name_first).collect())
        }
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn escapes_pointer_tokens() {
        assert_eq!(escape("weft.dev/inject"), "weft.dev~1inject");
        assert_eq!(escape("a~b/c"), "a~0b~1c");
        assert_eq!(unescape(&escape("a~1/~0")), "a~1/~0");
    }

    #[test]
    fn serialises_as_rfc6902() {
        let ops = vec![
            JsonPatchOp::add("/a", json!(1)),
            JsonPatchOp::Replace {
                path: "/b".into(),
                value: json!("x"),
            },
            JsonPatchOp::Remove { path: "/c".into() },
        ];
        assert_eq!(
            serde_json::to_value(&ops).unwrap(),
            json!([
                {"op": "add", "path": "/a", "value": 1},
                {"op": "replace", "path": "/b", "value": "x"},
                {"op": "remove", "path": "/c"},
            ])
        );
    }

    #[test]
    fn applies_add_replace_remove() {
        let doc = json!({"m": {"a/b": 1}, "l": [1, 2]});
        let ops = vec![
            JsonPatchOp::add("/m/x", json!({"y": true})),
            JsonPatchOp::add("/l/0", json!(0)),
            JsonPatchOp::add("/l/-", json!(3)),
            JsonPatchOp::Replace {
                path: "/m/a~1b".into(),
                value: json!(2),
            },
            JsonPatchOp::Remove {
                path: "/l/1".into(),
            },
        ];
        assert_eq!(
            apply_json(&doc, &ops).unwrap(),
            json!({"m": {"a/b": 2, "x": {"y": true}}, "l": [0, 2, 3]})
        );
    }

    #[test]
    fn refuses_bad_paths() {
        let doc = json!({"l": [1]});
        let cases = [
            (
                JsonPatchOp::add("nope", json!(1)),
                PatchError::BadPointer("nope".into()),
            ),
            (
                JsonPatchOp::add("/x/y", json!(1)),
                PatchError::NotFound {
                    path: "/x/y".into(),
                },
            ),
            (
                JsonPatchOp::add("/l/5", json!(1)),
                PatchError::BadIndex {
                    path: "/l/5".into(),
                    token: "5".into(),
                },
            ),
            (
                JsonPatchOp::Remove { path: "/q".into() },
                PatchError::NotFound { path: "/q".into() },
            ),
            (
                JsonPatchOp::add("/l/0/z", json!(1)),
                PatchError::NotAContainer {
                    path: "/l/0/z".into(),
                },
            ),
        ];
        for (op, want) in cases {
            assert_eq!(apply_json(&doc, &[op]).unwrap_err(), want);
        }
    }
}
