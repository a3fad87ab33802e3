//! Who a proxy's token stands for: the [`Authenticator`], which is either the file
//! backend's token registry or, in Kubernetes, the API server ([`super::token_review`]).
//!
//! In Kubernetes a proxy presents its projected service-account token and the controller
//! asks the API server (a TokenReview). With the file backend (the demo, the local test
//! suite, plain Linux hosts at the edge) the config file lists the tokens instead:
//!
//! ```yaml
//! tokens:
//!   - token: 3f6c…            # a long random secret, one per workload
//!     serviceAccount: web
//!     namespace: apps
//! ```

use super::verify::Refusal;
use serde::Deserialize;
use weft_api::{IdentityError, IdentityName};

/// Decides which identity a token may ask for.
#[derive(Debug)]
pub enum Authenticator {
    /// The config file's `tokens:`.
    Registry(TokenRegistry),
    /// TokenReview against the Kubernetes API server.
    #[cfg(feature = "kubernetes")]
    TokenReview(super::token_review::TokenReviewer),
}

impl Authenticator {
    /// The identity `token` stands for, or why it stands for none.
    pub async fn authenticate(&self, token: &str) -> Result<IdentityName, Refusal> {
        match self {
            Authenticator::Registry(r) => {
                r.identity_for(token).cloned().ok_or(Refusal::UnknownToken)
            }
            #[cfg(feature = "kubernetes")]
            Authenticator::TokenReview(r) => r.review(token).await,
        }
    }
}

/// One `tokens:` entry of the config file.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TokenEntry {
    /// The secret a proxy presents.
    pub token: String,
    /// The service account the token stands for.
    pub service_account: String,
    /// The service account's namespace.
    pub namespace: String,
}

/// Why the `tokens:` list was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokensError {
    #[error("tokens[{index}]: the token is empty")]
    Empty { index: usize },
    #[error("tokens[{index}]: the token starts or ends with whitespace; proxies trim their token file, so it could never match")]
    Whitespace { index: usize },
    #[error("tokens[{index}]: {source}")]
    Identity {
        index: usize,
        #[source]
        source: IdentityError,
    },
    #[error("tokens[{index}]: the same token is already listed as tokens[{first}]; each token must stand for exactly one service account")]
    Duplicate { index: usize, first: usize },
}

/// Tokens and the identity each one may ask for.
#[derive(Debug, Clone, Default)]
pub struct TokenRegistry {
    entries: Vec<(String, IdentityName)>,
}

impl TokenRegistry {
    /// Builds the registry, naming each token's identity under the given control-plane
    /// namespace and trust domain. Refuses empty or duplicate tokens and invalid names.
    pub fn new(
        entries: &[TokenEntry],
        control_plane_namespace: &str,
        trust_domain: &str,
    ) -> Result<Self, TokensError> {
        let mut out: Vec<(String, IdentityName)> = Vec::with_capacity(entries.len());
        for (index, e) in entries.iter().enumerate() {
            if e.token.is_empty() {
                return Err(TokensError::Empty { index });
            }
            if e.token.trim() != e.token {
                return Err(TokensError::Whitespace { index });
            }
            if let Some(first) = out.iter().position(|(t, _)| *t == e.token) {
                return Err(TokensError::Duplicate { index, first });
            }
            let id = IdentityName::new(
                &e.service_account,
                &e.namespace,
                control_plane_namespace,
                trust_domain,
            )
            .map_err(|source| TokensError::Identity { index, source })?;
            out.push((e.token.clone(), id));
        }
        Ok(Self { entries: out })
    }

    /// The identity a token stands for. Compares against every entry in constant time per
    /// entry, so response timing does not reveal how much of a token was right.
    pub fn identity_for(&self, token: &str) -> Option<&IdentityName> {
        let mut found = None;
        for (t, id) in &self.entries {
            if constant_time_eq(t.as_bytes(), token.as_bytes()) {
                found = Some(id);
            }
        }
        found
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(token: &str, sa: &str, ns: &str) -> TokenEntry {
        TokenEntry {
            token: token.into(),
            service_account: sa.into(),
            namespace: ns.into(),
        }
    }

    #[test]
    fn maps_tokens_to_identities() {
        let reg = TokenRegistry::new(
            &[entry("t-web", "web", "apps"), entry("t-db", "db", "data")],
            "weft",
            "cluster.local",
        )
        .unwrap();
        assert_eq!(reg.len(), 2);
        assert_eq!(
            reg.identity_for("t-web").unwrap().to_string(),
            "web.apps.serviceaccount.identity.weft.cluster.local"
        );
        assert_eq!(
            reg.identity_for("t-db").unwrap().to_string(),
            "db.data.serviceaccount.identity.weft.cluster.local"
        );
        for unknown in ["", "t-we", "t-web ", "T-WEB", "t-webx"] {
            assert!(reg.identity_for(unknown).is_none(), "{unknown:?}");
        }
    }

    #[test]
    fn refuses_bad_entries() {
        let cases: Vec<(Vec<TokenEntry>, &str)> = vec![
            (
                vec![entry("", "web", "apps")],
                "tokens[0]: the token is empty",
            ),
            (
                vec![entry("a", "web", "apps"), entry("b\n", "db", "apps")],
                "tokens[1]: the token starts or ends with whitespace",
            ),
            (
                vec![entry("a", "web", "apps"), entry("a", "db", "apps")],
                "tokens[1]: the same token is already listed as tokens[0]",
            ),
            (
                vec![entry("a", "web", "apps"), entry("b", "Web", "apps")],
                "tokens[1]: service account \"Web\" is not a valid DNS-1123 label",
            ),
            (
                vec![entry("a", "web", "apps_1")],
                "tokens[0]: namespace \"apps_1\" is not a valid DNS-1123 label",
            ),
        ];
        for (entries, want) in cases {
            let err = TokenRegistry::new(&entries, "weft", "cluster.local").unwrap_err();
            assert!(err.to_string().starts_with(want), "{err} / {want}");
        }
    }

    #[test]
    fn constant_time_eq_is_eq() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
        assert!(constant_time_eq(b"", b""));
    }
}
