//! Every label, annotation, finalizer and name that meshplane writes or reads on
//! cluster objects, in one place so they can be grepped and never drift apart.
//! Constants only: nothing here talks to a cluster.

/// The API group of meshplane's own resources.
pub const GROUP: &str = "meshplane.dev";
/// The one API version served today.
pub const VERSION: &str = "v1alpha1";

/// The field manager of every server-side apply meshplane sends: one writer.
pub const FIELD_MANAGER: &str = "meshplane";
/// Name under which meshplane reports Events.
pub const EVENT_REPORTER: &str = "meshplane";

/// `app.kubernetes.io/managed-by` marks every object meshplane provisions.
pub const LABEL_MANAGED_BY: &str = "app.kubernetes.io/managed-by";
/// Value of [`LABEL_MANAGED_BY`].
pub const MANAGED_BY: &str = "meshplane";
/// The DataDomain an object belongs to.
pub const LABEL_DOMAIN: &str = "meshplane.dev/domain";
/// The DataProduct an object belongs to.
pub const LABEL_PRODUCT: &str = "meshplane.dev/product";
/// Which part of a domain or product an object implements (namespace, access, quota, network).
pub const LABEL_COMPONENT: &str = "meshplane.dev/component";

/// Label selector matching everything meshplane provisions; the watches use it
/// so their caches hold only meshplane's objects.
pub const MANAGED_SELECTOR: &str = "app.kubernetes.io/managed-by=meshplane";

/// Pod Security admission labels set on every domain namespace.
pub const POD_SECURITY_ENFORCE: &str = "pod-security.kubernetes.io/enforce";
pub const POD_SECURITY_ENFORCE_VERSION: &str = "pod-security.kubernetes.io/enforce-version";
pub const POD_SECURITY_WARN: &str = "pod-security.kubernetes.io/warn";
pub const POD_SECURITY_WARN_VERSION: &str = "pod-security.kubernetes.io/warn-version";
pub const POD_SECURITY_AUDIT: &str = "pod-security.kubernetes.io/audit";
/// The Pod Security level enforced in domain namespaces.
pub const POD_SECURITY_LEVEL: &str = "restricted";
/// Pinned so a cluster upgrade cannot silently change what domains may run.
pub const POD_SECURITY_VERSION: &str = "v1.34";

/// The label Kubernetes sets on every namespace with its own name.
pub const LABEL_NAMESPACE_NAME: &str = "kubernetes.io/metadata.name";

/// Finalizer on a DataDomain: its deletion policy runs before it goes.
pub const FINALIZER_DOMAIN: &str = "meshplane.dev/domain-protection";

/// meshplane's own ClusterRoles that domain RoleBindings refer to. The operator
/// may `bind` exactly these (RBAC escalation rules hold for it too).
pub const CLUSTER_ROLE_DOMAIN_ADMIN: &str = "meshplane-domain-admin";
pub const CLUSTER_ROLE_DOMAIN_MEMBER: &str = "meshplane-domain-member";
pub const CLUSTER_ROLE_DOMAIN_VIEWER: &str = "meshplane-domain-viewer";

/// Names of the objects a domain provisions in its namespace.
pub const ROLE_BINDING_OWNERS: &str = "meshplane-domain-owners";
pub const ROLE_BINDING_MEMBERS: &str = "meshplane-domain-members";
pub const ROLE_BINDING_VIEWERS: &str = "meshplane-domain-viewers";
pub const RESOURCE_QUOTA: &str = "meshplane-domain-quota";
pub const LIMIT_RANGE: &str = "meshplane-domain-defaults";
pub const NETWORK_POLICY_DEFAULT_DENY: &str = "meshplane-default-deny";
pub const NETWORK_POLICY_SAME_DOMAIN: &str = "meshplane-allow-same-domain";
pub const NETWORK_POLICY_PLATFORM: &str = "meshplane-allow-platform";
pub const NETWORK_POLICY_DNS: &str = "meshplane-allow-dns";
pub const NETWORK_POLICY_EGRESS_CIDRS: &str = "meshplane-allow-egress-cidrs";

/// The storage entry of a product an object implements.
pub const LABEL_STORAGE: &str = "meshplane.dev/storage";
/// The pipeline of a product a workload (and its Jobs and pods) runs.
pub const LABEL_PIPELINE: &str = "meshplane.dev/pipeline";
/// Set on storage a deleted product left behind under `Retain`.
pub const LABEL_ORPHANED: &str = "meshplane.dev/orphaned";
/// On orphaned storage: which product (namespace/name, uid) it belonged to.
pub const ANNOTATION_ORPHANED_FROM: &str = "meshplane.dev/orphaned-from";
/// On a grant (RoleBinding, NetworkPolicy): the consumer it is for.
pub const ANNOTATION_CONSUMER: &str = "meshplane.dev/consumer";

/// Finalizer on a DataProduct: each storage's deletion policy runs first.
pub const FINALIZER_PRODUCT: &str = "meshplane.dev/storage-protection";

/// The GovernancePolicy an admission object was compiled from.
pub const LABEL_POLICY: &str = "meshplane.dev/policy";

/// The lists of a child kind of which every entry grants access (a
/// binding's subjects, a role's rules, a network policy's rules), by path.
/// Such a list is meshplane's whole, empty included: an entry another
/// writer added is seen and removed, never kept as someone else's field.
pub fn granting_fields(kind: &str) -> &'static [&'static [&'static str]] {
    match kind {
        "RoleBinding" | "ClusterRoleBinding" => &[&["subjects"]],
        "Role" | "ClusterRole" => &[&["rules"]],
        "NetworkPolicy" => &[&["spec", "ingress"], &["spec", "egress"]],
        _ => &[],
    }
}
