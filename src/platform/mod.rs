//! DataPlatform: a data engine the platform team registers. A pass reads
//! the admin login from its Secret, connects to the engine and checks what
//! meshplane needs of it, and reports that as the status.
//!
//! A pass: observe (the Secret, the engine) -> status (pure, then one patch
//! if it changed). meshplane makes nothing on the engine for the platform
//! itself; products' storage on it is theirs.

pub mod names;
pub mod observe;
pub mod status;

use std::future::Future;
use std::sync::Arc;

use kube::ResourceExt;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;

use crate::api::DataPlatform;
use crate::api::conditions;
use crate::error::Result;
use crate::operator::Context;
use crate::operator::reconciler;
use crate::operator::watched::Watched;

pub const KIND: &str = "DataPlatform";

/// The DataPlatform controller, ready to be awaited: woken by its platforms.
/// An engine coming back or a Secret being fixed is no event of theirs, so
/// a platform that is not Ready looks again now and then.
pub fn controller<S>(ctx: Arc<Context>, watched: &mut Watched, shutdown: S) -> impl Future<Output = ()> + use<S>
where
    S: Future<Output = ()> + Send + Sync + 'static,
{
    let controller = reconciler::controller(&ctx, watched.platforms.take(&ctx.leadership), ctx.caches.platforms.clone());
    reconciler::run(controller, ctx, shutdown, KIND, reconcile)
}

/// One pass over a platform.
async fn reconcile(platform: Arc<DataPlatform>, ctx: Arc<Context>) -> Result<Action> {
    if platform.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let found = observe::engine(&platform, &ctx).await?;
    let computed = status::conditions(&found);
    let current = platform.status.as_ref().map(|s| s.conditions.as_slice()).unwrap_or_default();
    if let Some((why, message)) = status::warning(current, &computed) {
        tracing::warn!(platform = %platform.name_any(), reason = why, "{message}");
        ctx.write.publish(platform.as_ref(), EventType::Warning, why, "Connect", message, None).await;
    }
    let next = status::next(&platform, &found, &computed, &conditions::now());
    ctx.write.status(platform.as_ref(), platform.status.as_ref(), &next).await?;
    Ok(Action::requeue(status::requeue(&found, ctx.settings.resync)))
}

#[cfg(test)]
mod tests;
