//! Operator-wide settings that shape what a domain gets.

/// Operator-wide settings that shape what a domain gets.
#[derive(Clone, Debug)]
pub struct DomainSettings {
    /// Prefix of a domain's default namespace name.
    pub namespace_prefix: String,
    /// The namespace meshplane runs in; Strict domains admit traffic from it.
    pub platform_namespace: String,
}

impl Default for DomainSettings {
    fn default() -> Self {
        DomainSettings { namespace_prefix: "dm-".into(), platform_namespace: "meshplane-system".into() }
    }
}
