//! A domain's tenant, applied part by part through the writer.

use kube::runtime::events::EventType;
use kube::{Resource, ResourceExt};

use super::build::DomainBundle;
use super::events::record;
use super::validate::ValidDomain;
use crate::api::DataDomain;
use crate::error::{Error, Result};
use crate::operator::Context;

/// What applying the bundle achieved: how far it got and how it ended.
pub struct Applied {
    /// Parts fully applied, in order: namespace, access, quota, network
    /// (see [`super::status::PARTS`]).
    pub done: usize,
    pub result: Result<()>,
}

pub async fn apply(domain: &DataDomain, valid: &ValidDomain<'_>, bundle: &DomainBundle, ctx: &Context) -> Applied {
    let mut done = 0;
    let result = async {
        let c = &ctx.caches;
        let a = &ctx.write.applier;
        record(domain, ctx, &bundle.namespace, a.apply(&c.namespaces, &bundle.namespace).await?).await;
        done += 1;
        for rb in &bundle.role_bindings {
            record(domain, ctx, rb, a.apply(&c.role_bindings, rb).await?).await;
        }
        done += 1;
        record(domain, ctx, &bundle.quota, a.apply(&c.quotas, &bundle.quota).await?).await;
        record(domain, ctx, &bundle.limit_range, a.apply(&c.limit_ranges, &bundle.limit_range).await?).await;
        done += 1;
        for np in &bundle.network_policies {
            record(domain, ctx, np, a.apply(&c.network_policies, np).await?).await;
        }
        // Prune only after every apply succeeded: policies the spec no longer
        // asks for (isolation turned Open, egress CIDRs removed).
        let keep: Vec<String> = bundle.network_policies.iter().map(|p| p.name_any()).collect();
        let owned = c.indexes.network_policies.get(&c.network_policies, valid.uid);
        let pruned = a.prune(owned.into_iter().filter(|np| is_child(np.as_ref(), valid)).collect(), &keep).await?;
        for name in pruned {
            let note = format!("Deleted NetworkPolicy {name} from namespace {}", valid.namespace);
            ctx.write.publish(domain, EventType::Normal, "Deleted", "Prune", note, None).await;
        }
        done += 1;
        Ok::<(), Error>(())
    }
    .await;
    Applied { done, result }
}

fn is_child<K: Resource>(object: &K, domain: &ValidDomain<'_>) -> bool {
    object.meta().namespace.as_deref() == Some(domain.namespace.as_str())
        && object.meta().owner_references.iter().flatten().any(|o| o.uid == domain.uid)
}
