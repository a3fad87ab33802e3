//! The watched kinds, reduced to the fields discovery reads.
//!
//! The API server's JSON is deserialized straight into these small structs (unknown
//! fields are skipped), instead of into k8s-openapi's complete types: a Pod's containers
//! keep their names and ports and nothing else, and no image, env, probe or volume is
//! ever allocated. That keeps the controller's memory proportional to what it uses, and
//! leaves most of k8s-openapi's (large) deserialization code out of the binary. The
//! field names and shapes follow k8s-openapi's, so the conversions read the same; the
//! fields that are required there default to empty here, so that an odd object is
//! skipped by the conversion (with a log line) instead of failing a whole list.
//!
//! Each type implements `k8s_openapi::Resource` and `Metadata` (group, version, plural),
//! which gives it `kube::Resource`, so kube-rs watches and reflects it like any other.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use k8s_openapi::{ClusterResourceScope, NamespaceResourceScope};
use serde::Deserialize;

macro_rules! resource {
    ($ty:ident, $group:literal, $version:literal, $api_version:literal, $kind:literal, $plural:literal, $scope:ty) => {
        impl k8s_openapi::Resource for $ty {
            const API_VERSION: &'static str = $api_version;
            const GROUP: &'static str = $group;
            const KIND: &'static str = $kind;
            const VERSION: &'static str = $version;
            const URL_PATH_SEGMENT: &'static str = $plural;
            type Scope = $scope;
        }

        impl k8s_openapi::Metadata for $ty {
            type Ty = ObjectMeta;

            fn metadata(&self) -> &ObjectMeta {
                &self.metadata
            }

            fn metadata_mut(&mut self) -> &mut ObjectMeta {
                &mut self.metadata
            }
        }
    };
}

/// `v1` Pod.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Pod {
    #[serde(default)]
    pub metadata: ObjectMeta,
    pub spec: Option<PodSpec>,
    pub status: Option<PodStatus>,
}
resource!(Pod, "", "v1", "v1", "Pod", "pods", NamespaceResourceScope);

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodSpec {
    #[serde(default)]
    pub containers: Vec<Container>,
    pub init_containers: Option<Vec<Container>>,
    pub host_network: Option<bool>,
    pub service_account_name: Option<String>,
    pub restart_policy: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Container {
    #[serde(default)]
    pub name: String,
    pub ports: Option<Vec<ContainerPort>>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerPort {
    pub name: Option<String>,
    #[serde(default)]
    pub container_port: i32,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodStatus {
    pub phase: Option<String>,
    #[serde(rename = "podIP")]
    pub pod_ip: Option<String>,
    #[serde(rename = "podIPs")]
    pub pod_ips: Option<Vec<PodIp>>,
    pub container_statuses: Option<Vec<ContainerStatus>>,
}

/// A container's state: only whether (and how) it terminated is read.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct ContainerStatus {
    #[serde(default)]
    pub name: String,
    pub state: Option<ContainerState>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct ContainerState {
    pub terminated: Option<ContainerTerminated>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerTerminated {
    #[serde(default)]
    pub exit_code: i32,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct PodIp {
    #[serde(default)]
    pub ip: String,
}

/// `v1` Service.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct Service {
    #[serde(default)]
    pub metadata: ObjectMeta,
    pub spec: Option<ServiceSpec>,
}
resource!(
    Service,
    "",
    "v1",
    "v1",
    "Service",
    "services",
    NamespaceResourceScope
);

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct ServiceSpec {
    #[serde(rename = "type")]
    pub type_: Option<String>,
    #[serde(rename = "clusterIP")]
    pub cluster_ip: Option<String>,
    #[serde(rename = "clusterIPs")]
    pub cluster_ips: Option<Vec<String>>,
    pub ports: Option<Vec<ServicePort>>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServicePort {
    pub name: Option<String>,
    #[serde(default)]
    pub port: i32,
    pub protocol: Option<String>,
    pub target_port: Option<IntOrString>,
    pub app_protocol: Option<String>,
}

/// `discovery.k8s.io/v1` EndpointSlice.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EndpointSlice {
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub address_type: String,
    #[serde(default)]
    pub endpoints: Vec<Endpoint>,
    pub ports: Option<Vec<EndpointPort>>,
}
resource!(
    EndpointSlice,
    "discovery.k8s.io",
    "v1",
    "discovery.k8s.io/v1",
    "EndpointSlice",
    "endpointslices",
    NamespaceResourceScope
);

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Endpoint {
    #[serde(default)]
    pub addresses: Vec<String>,
    pub conditions: Option<EndpointConditions>,
    pub target_ref: Option<TargetRef>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct EndpointConditions {
    pub ready: Option<bool>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct TargetRef {
    pub kind: Option<String>,
    pub name: Option<String>,
    pub namespace: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct EndpointPort {
    pub name: Option<String>,
    pub port: Option<i32>,
    pub protocol: Option<String>,
}

/// `v1` Namespace (its metadata is all discovery reads).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct Namespace {
    #[serde(default)]
    pub metadata: ObjectMeta,
}
resource!(
    Namespace,
    "",
    "v1",
    "v1",
    "Namespace",
    "namespaces",
    ClusterResourceScope
);

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reads_only_what_it_needs_from_full_objects() {
        let pod: Pod = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "web-1", "namespace": "apps"},
            "spec": {
                "serviceAccountName": "web", "nodeName": "node-1",
                "containers": [{"name": "app", "image": "web:1", "env": [{"name": "A", "value": "b"}],
                                "ports": [{"name": "http", "containerPort": 8080, "protocol": "TCP"}],
                                "livenessProbe": {"httpGet": {"path": "/", "port": 8080}}}],
                "volumes": [{"name": "data", "emptyDir": {}}]
            },
            "status": {"phase": "Running", "podIP": "198.18.0.1", "podIPs": [{"ip": "198.18.0.1"}],
                       "conditions": [{"type": "Ready", "status": "True"}]}
        }))
        .unwrap();
        assert_eq!(
            pod.spec,
            Some(PodSpec {
                containers: vec![Container {
                    name: "app".into(),
                    ports: Some(vec![ContainerPort {
                        name: Some("http".into()),
                        container_port: 8080
                    }]),
                }],
                init_containers: None,
                host_network: None,
                service_account_name: Some("web".into()),
                restart_policy: None,
            })
        );
        assert_eq!(
            pod.status.unwrap().pod_ips,
            Some(vec![PodIp {
                ip: "198.18.0.1".into()
            }])
        );
        // Missing "required" fields do not fail the object.
        let odd: EndpointSlice =
            serde_json::from_value(json!({"metadata": {"name": "x"}, "endpoints": [{}]})).unwrap();
        assert_eq!(odd.address_type, "");
        assert!(odd.endpoints[0].addresses.is_empty());
    }

    #[test]
    fn kube_knows_where_they_live() {
        use kube::Resource;
        assert_eq!(
            Pod::url_path(&(), Some("apps")),
            "/api/v1/namespaces/apps/pods"
        );
        assert_eq!(Service::url_path(&(), None), "/api/v1/services");
        assert_eq!(
            EndpointSlice::url_path(&(), Some("apps")),
            "/apis/discovery.k8s.io/v1/namespaces/apps/endpointslices"
        );
        assert_eq!(Namespace::url_path(&(), None), "/api/v1/namespaces");
    }
}

/// Gateway API `gateway.networking.k8s.io/v1` HTTPRoute: the parent references, and each
/// rule's matches and backends (filters, timeouts and the rest are not read).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HttpRoute {
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: HttpRouteSpec,
}
resource!(
    HttpRoute,
    "gateway.networking.k8s.io",
    "v1",
    "gateway.networking.k8s.io/v1",
    "HTTPRoute",
    "httproutes",
    NamespaceResourceScope
);

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HttpRouteSpec {
    pub parent_refs: Option<Vec<RouteRef>>,
    pub rules: Option<Vec<HttpRouteRule>>,
}

/// A `parentRefs` or `backendRefs` entry (the fields both have, plus `weight`).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RouteRef {
    pub group: Option<String>,
    pub kind: Option<String>,
    #[serde(default)]
    pub name: String,
    pub namespace: Option<String>,
    pub port: Option<i32>,
    pub weight: Option<i32>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HttpRouteRule {
    pub matches: Option<Vec<HttpRouteMatch>>,
    pub backend_refs: Option<Vec<RouteRef>>,
}

/// One match: read only to tell "every request" (no match, or path prefix `/` alone)
/// from anything narrower.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HttpRouteMatch {
    pub path: Option<HttpPathMatch>,
    pub headers: Option<Vec<serde_json::Value>>,
    pub query_params: Option<Vec<serde_json::Value>>,
    pub method: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HttpPathMatch {
    #[serde(rename = "type")]
    pub type_: Option<String>,
    pub value: Option<String>,
}
