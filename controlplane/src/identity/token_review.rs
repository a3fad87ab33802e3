//! Authenticating proxies in Kubernetes: the token a proxy presents is its projected
//! service-account token (audience [`TOKEN_AUDIENCE`]), and the controller asks the API
//! server about it with a `TokenReview` (`authentication.k8s.io/v1`).
//!
//! The API server checks the signature, the expiry, that the token's pod and service
//! account still exist, and the audience (the review names Weft's, so a token minted for
//! anything else — including the default API-server token every pod has — is refused).
//! What comes back is turned into an identity by [`identity_from_review`], a pure function:
//!
//! | review status | refusal |
//! |---|---|
//! | the call failed or timed out (5 s) | `503` token review unavailable |
//! | `authenticated` is not true | `401` token rejected, with the API server's reason |
//! | `audiences` is present and lacks Weft's | `401` token rejected |
//! | the user is not `system:serviceaccount:<namespace>:<name>` | `403` not a service account |
//! | the namespace or name is not a DNS-1123 label | `403` not a service account |
//!
//! Nothing is cached: a proxy asks about once a day per certificate, and every answer is
//! then as fresh as the API server's.

use super::verify::Refusal;
use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec, TokenReviewStatus};
use kube::api::PostParams;
use kube::{Api, Client};
use std::time::Duration;
use weft_api::certify::TOKEN_AUDIENCE;
use weft_api::IdentityName;

/// How long one review may take before the request is answered `503`.
pub const REVIEW_TIMEOUT: Duration = Duration::from_secs(5);

/// The prefix of a service account's user name.
const SERVICE_ACCOUNT_USER: &str = "system:serviceaccount:";

/// Asks the API server who a token belongs to.
#[derive(Clone)]
pub struct TokenReviewer {
    client: Client,
    control_plane_namespace: String,
    trust_domain: String,
}

impl std::fmt::Debug for TokenReviewer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenReviewer")
            .field("audience", &TOKEN_AUDIENCE)
            .finish_non_exhaustive()
    }
}

impl TokenReviewer {
    pub fn new(client: Client, control_plane_namespace: &str, trust_domain: &str) -> Self {
        TokenReviewer {
            client,
            control_plane_namespace: control_plane_namespace.to_string(),
            trust_domain: trust_domain.to_string(),
        }
    }

    /// The identity `token` stands for, according to the API server.
    pub async fn review(&self, token: &str) -> Result<IdentityName, Refusal> {
        if token.is_empty() {
            return Err(Refusal::TokenRejected("the token is empty".into()));
        }
        let review = TokenReview {
            spec: TokenReviewSpec {
                token: Some(token.to_string()),
                audiences: Some(vec![TOKEN_AUDIENCE.to_string()]),
            },
            ..TokenReview::default()
        };
        let api: Api<TokenReview> = Api::all(self.client.clone());
        let answer =
            tokio::time::timeout(REVIEW_TIMEOUT, api.create(&PostParams::default(), &review))
                .await
                .map_err(|_| {
                    Refusal::TokenReviewUnavailable(format!(
                        "the API server did not answer within {}s",
                        REVIEW_TIMEOUT.as_secs()
                    ))
                })?
                .map_err(|e| Refusal::TokenReviewUnavailable(e.to_string()))?;
        identity_from_review(
            answer.status.as_ref(),
            &self.control_plane_namespace,
            &self.trust_domain,
        )
    }
}

/// Turns the API server's answer into the identity the token may ask for.
pub fn identity_from_review(
    status: Option<&TokenReviewStatus>,
    control_plane_namespace: &str,
    trust_domain: &str,
) -> Result<IdentityName, Refusal> {
    let Some(status) = status else {
        return Err(Refusal::TokenRejected(
            "the API server's review has no status".into(),
        ));
    };
    if status.authenticated != Some(true) {
        let why = status
            .error
            .as_deref()
            .filter(|e| !e.is_empty())
            .unwrap_or("the API server did not authenticate it");
        return Err(Refusal::TokenRejected(why.to_string()));
    }
    if let Some(audiences) = &status.audiences {
        if !audiences.iter().any(|a| a == TOKEN_AUDIENCE) {
            return Err(Refusal::TokenRejected(format!(
                "the token is for audiences {audiences:?}, not {TOKEN_AUDIENCE:?}"
            )));
        }
    }
    let user = status
        .user
        .as_ref()
        .and_then(|u| u.username.as_deref())
        .unwrap_or("");
    let not_sa = || Refusal::NotServiceAccount(user.to_string());
    let rest = user.strip_prefix(SERVICE_ACCOUNT_USER).ok_or_else(not_sa)?;
    let (namespace, name) = rest.split_once(':').ok_or_else(not_sa)?;
    IdentityName::new(name, namespace, control_plane_namespace, trust_domain).map_err(|_| not_sa())
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::authentication::v1::UserInfo;

    fn status(
        authenticated: Option<bool>,
        user: Option<&str>,
        audiences: Option<&[&str]>,
        error: Option<&str>,
    ) -> TokenReviewStatus {
        TokenReviewStatus {
            authenticated,
            user: user.map(|u| UserInfo {
                username: Some(u.to_string()),
                ..UserInfo::default()
            }),
            audiences: audiences.map(|a| a.iter().map(|s| s.to_string()).collect()),
            error: error.map(str::to_string),
        }
    }

    #[test]
    fn review_table() {
        let ours: &[&str] = &[TOKEN_AUDIENCE];
        let ok = |id: &str| Ok::<String, (u16, &'static str, String)>(id.to_string());
        let err = |r: Refusal| Err((r.status(), r.reason(), r.to_string()));
        type Want = Result<String, (u16, &'static str, String)>;
        let cases: Vec<(&str, Option<TokenReviewStatus>, Want)> = vec![
            (
                "a service account with our audience",
                Some(status(Some(true), Some("system:serviceaccount:apps:web"), Some(ours), None)),
                ok("web.apps.serviceaccount.identity.weft.cluster.local"),
            ),
            (
                "audiences left out (older servers): the spec asked for ours",
                Some(status(Some(true), Some("system:serviceaccount:apps:web"), None, None)),
                ok("web.apps.serviceaccount.identity.weft.cluster.local"),
            ),
            (
                "no status at all",
                None,
                err(Refusal::TokenRejected("the API server's review has no status".into())),
            ),
            (
                "not authenticated, with the server's reason",
                Some(status(Some(false), None, None, Some("token has expired"))),
                err(Refusal::TokenRejected("token has expired".into())),
            ),
            (
                "not authenticated, no reason",
                Some(status(None, None, None, None)),
                err(Refusal::TokenRejected("the API server did not authenticate it".into())),
            ),
            (
                "authenticated for another audience",
                Some(status(Some(true), Some("system:serviceaccount:apps:web"), Some(&["https://kubernetes.default.svc"]), None)),
                err(Refusal::TokenRejected("the token is for audiences [\"https://kubernetes.default.svc\"], not \"identity.weft.dev\"".into())),
            ),
            (
                "a person, not a service account",
                Some(status(Some(true), Some("alice"), Some(ours), None)),
                err(Refusal::NotServiceAccount("alice".into())),
            ),
            (
                "a node",
                Some(status(Some(true), Some("system:node:pi-1"), Some(ours), None)),
                err(Refusal::NotServiceAccount("system:node:pi-1".into())),
            ),
            (
                "no user name",
                Some(status(Some(true), None, Some(ours), None)),
                err(Refusal::NotServiceAccount(String::new())),
            ),
            (
                "no name part",
                Some(status(Some(true), Some("system:serviceaccount:apps"), Some(ours), None)),
                err(Refusal::NotServiceAccount("system:serviceaccount:apps".into())),
            ),
            (
                "a name that cannot be an identity",
                Some(status(Some(true), Some("system:serviceaccount:apps:web:x"), Some(ours), None)),
                err(Refusal::NotServiceAccount("system:serviceaccount:apps:web:x".into())),
            ),
        ];
        for (what, st, want) in cases {
            let got = identity_from_review(st.as_ref(), "weft", "cluster.local")
                .map(|id| id.to_string())
                .map_err(|r| (r.status(), r.reason(), r.to_string()));
            assert_eq!(got, want, "{what}");
        }
    }

    #[test]
    fn refusal_codes() {
        let r = Refusal::TokenRejected("x".into());
        assert_eq!((r.status(), r.reason()), (401, "token_rejected"));
        assert_eq!(
            r.to_string(),
            "token rejected by the Kubernetes API server: x"
        );
        let r = Refusal::NotServiceAccount("alice".into());
        assert_eq!((r.status(), r.reason()), (403, "not_a_service_account"));
        assert_eq!(
            r.to_string(),
            "the token belongs to \"alice\", not to a service account"
        );
        let r = Refusal::TokenReviewUnavailable("connection refused".into());
        assert_eq!((r.status(), r.reason()), (503, "token_review_unavailable"));
    }

    /// Against a real API server: a token requested for Weft's audience is accepted as its
    /// service account, the same account's token for the API server's audience is refused.
    /// Creates a namespace `weft-test-token-…` and deletes it.
    #[tokio::test]
    #[ignore = "needs a real API server: KUBECONFIG=… cargo test -p weft-controlplane -- --ignored real_token_review"]
    async fn real_token_review() {
        use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
        use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
        use kube::api::DeleteParams;
        let client = Client::try_default()
            .await
            .expect("a client from KUBECONFIG (or ~/.kube/config)");
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let ns = format!("weft-test-token-{nanos}");
        let pp = PostParams::default();
        let namespace: Namespace =
            serde_json::from_value(serde_json::json!({"metadata": {"name": ns}})).unwrap();
        Api::<Namespace>::all(client.clone())
            .create(&pp, &namespace)
            .await
            .expect("create the namespace");
        let sa: ServiceAccount =
            serde_json::from_value(serde_json::json!({"metadata": {"name": "web"}})).unwrap();
        let sas: Api<ServiceAccount> = Api::namespaced(client.clone(), &ns);
        sas.create(&pp, &sa)
            .await
            .expect("create the service account");
        let token = |audiences: Vec<String>| {
            let sas = sas.clone();
            async move {
                let req = TokenRequest {
                    spec: TokenRequestSpec {
                        audiences,
                        expiration_seconds: Some(600),
                        ..TokenRequestSpec::default()
                    },
                    ..TokenRequest::default()
                };
                sas.create_token_request("web", &PostParams::default(), &req)
                    .await
                    .expect("request a token")
                    .status
                    .expect("a token")
                    .token
            }
        };
        let ours = token(vec![TOKEN_AUDIENCE.to_string()]).await;
        let api_only = token(vec![]).await;
        let reviewer = TokenReviewer::new(client.clone(), "weft", "cluster.local");
        let accepted = reviewer.review(&ours).await.map(|id| id.to_string());
        let refused = reviewer.review(&api_only).await;
        let _ = Api::<Namespace>::all(client)
            .delete(&ns, &DeleteParams::default())
            .await;
        assert_eq!(
            accepted,
            Ok(format!(
                "web.{ns}.serviceaccount.identity.weft.cluster.local"
            ))
        );
        let refused = refused.expect_err("a token for the API server's audience");
        assert_eq!(refused.reason(), "token_rejected", "{refused}");
    }
}
