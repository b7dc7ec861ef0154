//! A product's pipelines, freshness, compliance, conditions and status,
//! and when to look again (pure).

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;
use kube::api::DynamicObject;

use super::apply::{Applied, Part};
use super::build::ProductBundle;
use super::resolve::{InputState, ResolvedConsumer, ResolvedInput};
use super::validate::ValidProduct;
use crate::api::conditions::{self, Computed, Condition, reason};
use crate::api::product::{InputStatus, PipelineMode, PipelineStatus, ResourceRef};
use crate::api::{DataDomain, DataProduct, DataProductStatus, GovernancePolicy};
use crate::keys;
use crate::storage::{self, StorageState};
use crate::write::CONFLICT_WINDOW;

/// Each pipeline's runs, from the Jobs and Deployments in the cluster (pure).
pub fn pipeline_statuses(product: &DataProduct, jobs: &[Arc<Job>], deployments: &[Arc<Deployment>]) -> Vec<PipelineStatus> {
    let time = |t: &Time| t.0.to_string();
    product
        .spec
        .pipelines
        .iter()
        .map(|pipeline| match pipeline.mode {
            PipelineMode::Batch => {
                let mut runs: Vec<&Arc<Job>> =
                    jobs.iter().filter(|j| j.labels().get(keys::LABEL_PIPELINE) == Some(&pipeline.name)).collect();
                runs.sort_by_key(|j| j.metadata.creation_timestamp.clone().map(|t| t.0));
                let succeeded = |j: &Job| {
                    j.status
                        .as_ref()
                        .and_then(|s| s.conditions.as_ref())
                        .is_some_and(|c| c.iter().any(|c| c.type_ == "Complete" && c.status == "True"))
                };
                let failed = |j: &Job| {
                    j.status
                        .as_ref()
                        .and_then(|s| s.conditions.as_ref())
                        .is_some_and(|c| c.iter().any(|c| c.type_ == "Failed" && c.status == "True"))
                };
                let last = runs.last();
                PipelineStatus {
                    name: pipeline.name.clone(),
                    kind: "CronJob".into(),
                    last_schedule_time: last
                        .and_then(|j| j.status.as_ref()?.start_time.as_ref().or(j.metadata.creation_timestamp.as_ref()).map(time)),
                    last_successful_time: runs
                        .iter()
                        .filter(|j| succeeded(j))
                        .filter_map(|j| j.status.as_ref()?.completion_time.as_ref().map(|t| t.0))
                        .max()
                        .map(|t| t.to_string()),
                    last_result: last.map(|j| {
                        if succeeded(j) {
                            "Succeeded"
                        } else if failed(j) {
                            "Failed"
                        } else {
                            "Running"
                        }
                        .to_string()
                    }),
                }
            }
            PipelineMode::Continuous => {
                let deployment = deployments.iter().find(|d| d.labels().get(keys::LABEL_PIPELINE) == Some(&pipeline.name));
                let available = deployment.and_then(|d| d.status.as_ref()?.available_replicas).unwrap_or(0);
                PipelineStatus {
                    name: pipeline.name.clone(),
                    kind: "Deployment".into(),
                    last_result: Some(if available >= pipeline.replicas { "Available" } else { "Unavailable" }.into()),
                    ..Default::default()
                }
            }
        })
        .collect()
}

/// The `Fresh` condition when the product has a freshness SLO, and how long
/// until it lapses (pure).
pub fn freshness(product: &DataProduct, pipelines: &[PipelineStatus], now: jiff::Timestamp) -> Option<(Computed, Option<Duration>)> {
    let slo = product.spec.quality.as_ref()?.freshness.as_deref()?;
    let limit = parse_slo(slo)?;
    let batch = pipelines.iter().any(|p| p.kind == "CronJob");
    if !batch {
        let available = pipelines.iter().all(|p| p.last_result.as_deref() == Some("Available"));
        let message = if available { "continuous pipelines are available" } else { "a continuous pipeline is unavailable" };
        return Some((Computed::new(conditions::FRESH, available, if available { "Continuous" } else { "Unavailable" }, message), None));
    }
    let last = pipelines.iter().filter_map(|p| p.last_successful_time.as_deref()?.parse::<jiff::Timestamp>().ok()).max();
    let Some(last) = last else {
        return Some((
            Computed::new(conditions::FRESH, false, reason::NO_SUCCESSFUL_RUN, format!("no successful run yet; freshness SLO {slo}")),
            None,
        ));
    };
    let age = now.duration_since(last);
    let remaining = jiff::SignedDuration::try_from(limit).ok()?.checked_sub(age)?;
    if remaining.is_positive() {
        let message = format!("last successful run at {last}, within the freshness SLO of {slo}");
        Some((Computed::new(conditions::FRESH, true, reason::WITHIN_SLO, message), Duration::try_from(remaining).ok()))
    } else {
        let message = format!("last successful run at {last} is older than the freshness SLO of {slo}");
        Some((Computed::new(conditions::FRESH, false, reason::STALE, message), None))
    }
}

fn parse_slo(s: &str) -> Option<Duration> {
    let (n, unit) = s.split_at(s.len().checked_sub(1)?);
    let n: u64 = n.parse().ok()?;
    Some(Duration::from_secs(match unit {
        "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        "d" => n * 86400,
        _ => return None,
    }))
}

/// The `PolicyCompliant` condition: every policy that selects the product's
/// domain, evaluated by the same rules the API server enforces (pure).
pub fn compliance(product: &DataProduct, domain: &DataDomain, policies: &[Arc<GovernancePolicy>], today: jiff::civil::Date) -> Computed {
    let mut applicable = 0;
    let mut violations = Vec::new();
    for policy in policies.iter().filter(|p| p.metadata.deletion_timestamp.is_none() && crate::governance::selects(p, domain)) {
        applicable += 1;
        violations.extend(crate::governance::evaluate(policy, product, today));
    }
    if violations.is_empty() {
        Computed::new(conditions::POLICY_COMPLIANT, true, reason::COMPLIANT, format!("complies with {applicable} governance policies"))
    } else {
        let messages: Vec<String> = violations.iter().map(|v| format!("{}: {}", v.field, v.message)).collect();
        Computed::new(conditions::POLICY_COMPLIANT, false, reason::POLICY_VIOLATION, messages.join("; "))
    }
}

/// What a pass found, from which a provisioned product's conditions follow.
pub struct Facts<'a> {
    pub valid: &'a ValidProduct<'a>,
    pub applied: &'a Applied,
    pub storage: &'a [(String, StorageState)],
    pub pipelines: &'a [PipelineStatus],
    pub deployments: &'a [Arc<Deployment>],
    pub inputs: &'a [ResolvedInput],
    pub consumers: &'a [ResolvedConsumer],
    /// The `Fresh` condition, when the product has a freshness SLO.
    pub fresh: Option<&'a Computed>,
    /// The `PolicyCompliant` condition (see [`compliance`]).
    pub compliance: Computed,
}

/// Conditions of a provisioned product: one per part (storage, pipelines,
/// access, inputs), `Fresh` when it has an SLO, `PolicyCompliant`, then
/// `Ready`, `Reconciling` and `Stalled` (pure).
pub fn provisioned(facts: Facts<'_>) -> Vec<Computed> {
    let Facts { valid, applied, storage, pipelines, deployments, inputs, consumers, fresh, compliance } = facts;
    let error = applied.result.as_ref().err().map(ToString::to_string);
    let failed = |ok: bool| if ok { None } else { error.clone() };

    // A part with a child its namespace's quota refused says so, in the API
    // server's words (the quota's name, what was requested, used, allowed).
    let refused = |part: Part| {
        let messages: Vec<&str> = applied.refused.iter().filter(|r| r.part == part).map(|r| r.message.as_str()).collect();
        (!messages.is_empty()).then(|| messages.join("; "))
    };

    let storage_condition = if let Some(e) = failed(applied.storage_ok) {
        Computed::new(conditions::STORAGE_READY, false, reason::APPLY_FAILED, e)
    } else if let Some(message) = refused(Part::Storage) {
        Computed::new(conditions::STORAGE_READY, false, reason::QUOTA_EXCEEDED, message)
    } else if let Some((_, s)) = storage.iter().find(|(_, s)| !s.ready) {
        Computed::new(conditions::STORAGE_READY, false, s.reason, &s.message)
    } else if storage.is_empty() {
        Computed::new(conditions::STORAGE_READY, true, reason::PROVISIONED, "the product declares no storage")
    } else {
        let messages: Vec<&str> = storage.iter().map(|(_, s)| s.message.as_str()).collect();
        Computed::new(conditions::STORAGE_READY, true, reason::PROVISIONED, messages.join("; "))
    };

    let pods_refused: Vec<String> = deployments
        .iter()
        .filter_map(|d| {
            let failure = d.status.as_ref()?.conditions.as_ref()?.iter().find(|c| c.type_ == "ReplicaFailure" && c.status == "True")?;
            let message = failure.message.as_deref()?;
            // Only from "exceeded quota" on: the text before names the
            // refused pod, a new name at every attempt, which would rewrite
            // the status each time.
            let message = &message[message.find("exceeded quota")?..];
            Some(format!("pipeline `{}`: pods {message}", d.labels().get(keys::LABEL_PIPELINE).map(String::as_str).unwrap_or_default()))
        })
        .collect();
    let pipelines_condition = if let Some(e) = failed(applied.pipelines_ok) {
        Computed::new(conditions::PIPELINES_READY, false, reason::APPLY_FAILED, e)
    } else if let Some(message) = refused(Part::Pipelines) {
        Computed::new(conditions::PIPELINES_READY, false, reason::QUOTA_EXCEEDED, message)
    } else if !pods_refused.is_empty() {
        // The ReplicaSet cannot create the pipeline's pods: the Deployment
        // carries the quota's refusal as its ReplicaFailure condition.
        Computed::new(conditions::PIPELINES_READY, false, reason::QUOTA_EXCEEDED, pods_refused.join("; "))
    } else if let Some(p) = pipelines.iter().find(|p| p.last_result.as_deref() == Some("Unavailable")) {
        Computed::new(
            conditions::PIPELINES_READY,
            false,
            reason::PROGRESSING,
            format!("continuous pipeline `{}` is not available yet", p.name),
        )
    } else {
        let batch = pipelines.iter().filter(|p| p.kind == "CronJob").count();
        let continuous = pipelines.len() - batch;
        Computed::new(
            conditions::PIPELINES_READY,
            true,
            reason::PROVISIONED,
            format!("{batch} scheduled and {continuous} continuous pipelines in place"),
        )
    };

    let access_condition = if let Some(e) = failed(applied.access_ok) {
        Computed::new(conditions::ACCESS_READY, false, reason::APPLY_FAILED, e)
    } else if let Some(message) = refused(Part::Access) {
        Computed::new(conditions::ACCESS_READY, false, reason::QUOTA_EXCEEDED, message)
    } else {
        let granted: Vec<String> =
            consumers.iter().filter(|c| !matches!(c, ResolvedConsumer::MissingDomain(_))).map(ResolvedConsumer::describe).collect();
        let missing: Vec<String> =
            consumers.iter().filter_map(|c| if let ResolvedConsumer::MissingDomain(d) = c { Some(d.clone()) } else { None }).collect();
        let mut message = if granted.is_empty() {
            "no consumers are granted access".to_string()
        } else {
            format!("read access granted to {}", granted.join(", "))
        };
        if !missing.is_empty() {
            message.push_str(&format!("; not yet granted to domains that do not exist: {}", missing.join(", ")));
        }
        Computed::new(conditions::ACCESS_READY, true, reason::PROVISIONED, message)
    };

    let blocked: Vec<String> =
        inputs.iter().filter(|i| i.state != InputState::Granted).map(|i| format!("{}: {}", i.name, i.message)).collect();
    let inputs_condition = if !blocked.is_empty() {
        let why = if inputs.iter().any(|i| i.state == InputState::AccessDenied) { reason::ACCESS_DENIED } else { reason::NOT_FOUND };
        Computed::new(conditions::INPUTS_READY, false, why, blocked.join("; "))
    } else if inputs.is_empty() {
        Computed::new(conditions::INPUTS_READY, true, reason::RESOLVED, "the product declares no inputs")
    } else {
        Computed::new(conditions::INPUTS_READY, true, reason::RESOLVED, format!("all {} inputs are granted", inputs.len()))
    };

    let parts = [storage_condition, pipelines_condition, access_condition, inputs_condition];
    let ready = parts.iter().all(|c| c.status);
    let mut computed: Vec<Computed> = parts.to_vec();
    if let Some(f) = fresh {
        computed.push(f.clone());
    }
    // Compliance is reported, not waited for: it does not hold back Ready.
    let waiting: Vec<&str> = computed.iter().filter(|c| !c.status && c.type_ != conditions::FRESH).map(|c| c.type_).collect();
    computed.push(compliance);
    // Yielding to another field manager needs a person: Stalled (kstatus).
    let yielded: Vec<String> = applied
        .conflicts
        .iter()
        .filter(|c| !c.restored)
        .map(|c| {
            format!(
                "meshplane stopped forcing {} {} after {} restores within {}m: {}; the other values stay until that change is undone or the object is deleted (or at most {}m)",
                c.kind,
                c.name,
                c.restores,
                CONFLICT_WINDOW.as_secs() / 60,
                c.describe(),
                CONFLICT_WINDOW.as_secs() / 60
            )
        })
        .collect();
    if !yielded.is_empty() {
        computed.extend(conditions::stalled(reason::FIELD_MANAGER_CONFLICT, yielded.join("; ")));
        return computed;
    }
    if ready {
        computed.extend(conditions::reconciled(format!("DataProduct {} in domain {} is provisioned", valid.name, valid.domain_name)));
    } else {
        let reason = if applied.result.is_err() {
            reason::APPLY_FAILED
        } else if computed.iter().any(|c| c.reason == reason::QUOTA_EXCEEDED) {
            reason::QUOTA_EXCEEDED
        } else {
            reason::PROGRESSING
        };
        computed.extend(conditions::reconciling(reason, format!("waiting for {}", waiting.join(", "))));
    }
    computed
}

pub fn resources_of(bundle: &ProductBundle, applied: &Applied) -> Vec<ResourceRef> {
    let r = |kind: &str, name: Option<&String>| ResourceRef { kind: kind.into(), name: name.cloned().unwrap_or_default() };
    let mut out =
        vec![r("ServiceAccount", bundle.service_account.metadata.name.as_ref()), r("ConfigMap", bundle.descriptor.metadata.name.as_ref())];
    for (name, _, objects) in &bundle.storage {
        if applied.missing_backends.contains(name) {
            continue;
        }
        out.extend(objects.iter().map(|o| r(&o.types.as_ref().map(|t| t.kind.clone()).unwrap_or_default(), o.metadata.name.as_ref())));
    }
    out.push(r("Role", bundle.role.metadata.name.as_ref()));
    out.extend(bundle.role_bindings.iter().map(|o| r("RoleBinding", o.metadata.name.as_ref())));
    out.extend(bundle.network_policies.iter().map(|o| r("NetworkPolicy", o.metadata.name.as_ref())));
    out.extend(bundle.cron_jobs.iter().map(|o| r("CronJob", o.metadata.name.as_ref())));
    out.extend(bundle.deployments.iter().map(|o| r("Deployment", o.metadata.name.as_ref())));
    out
}

/// What the status records of a provisioned product beyond its conditions.
pub struct Observed<'a> {
    pub domain: String,
    pub pipelines: Vec<PipelineStatus>,
    pub inputs: &'a [ResolvedInput],
    pub resources: Vec<ResourceRef>,
}

/// The status a pass computed (pure), given the current one.
pub fn next(
    product: &DataProduct,
    observed: Option<Observed<'_>>,
    domain: Option<String>,
    computed: &[Computed],
    now: &Time,
) -> DataProductStatus {
    let current = product.status.clone().unwrap_or_default();
    let conditions = conditions::merge(&current.conditions, computed, product.metadata.generation, now);
    let stalled = conditions::status_of(&conditions, conditions::STALLED) == Some("True");
    let ready = conditions::status_of(&conditions, conditions::READY) == Some("True");
    let phase = if stalled {
        "Stalled"
    } else if ready {
        "Ready"
    } else {
        "Pending"
    };
    let (pipelines, inputs, resources, domain) = match observed {
        Some(o) => (
            o.pipelines,
            o.inputs
                .iter()
                .map(|i| InputStatus {
                    name: i.name.clone(),
                    domain: i.domain.clone(),
                    product: i.product.clone(),
                    state: i.state.as_str().into(),
                    message: Some(i.message.clone()),
                })
                .collect(),
            o.resources,
            Some(o.domain),
        ),
        None => (Vec::new(), Vec::new(), Vec::new(), domain),
    };
    DataProductStatus {
        phase: Some(phase.into()),
        domain,
        observed_generation: product.metadata.generation,
        conditions,
        pipelines,
        inputs,
        resources,
    }
}

/// The Warning Events a status computed from `computed` is news for, given
/// the `current` conditions, as (reason, action, note) (pure).
pub fn warnings(current: &[Condition], computed: &[Computed]) -> Vec<(&'static str, &'static str, String)> {
    // Stalled is news when true, PolicyCompliant when false.
    let kinds = [
        (conditions::STALLED, true, reason::FIELD_MANAGER_CONFLICT, "Yield"),
        (conditions::POLICY_COMPLIANT, false, reason::POLICY_VIOLATION, "Govern"),
    ];
    kinds
        .into_iter()
        .filter_map(|(type_, news, reason, action)| {
            let found = computed.iter().find(|c| c.type_ == type_ && c.status == news)?;
            (!conditions::records(current, found)).then(|| (reason, action, found.message.clone()))
        })
        .collect()
}

/// Whether storage is all a product waits for: every other part is ready,
/// it complies, and nothing needs a person. (Ready and Reconciling follow the
/// parts; freshness is not judged before a first run.)
pub fn waits_only_for_storage(computed: &[Computed]) -> bool {
    let others_fine = computed.iter().all(|c| match c.type_ {
        conditions::STALLED => !c.status,
        conditions::STORAGE_READY | conditions::READY | conditions::RECONCILING | conditions::FRESH => true,
        _ => c.status,
    });
    others_fine && computed.iter().any(|c| c.type_ == conditions::STORAGE_READY && !c.status)
}

/// How long storage made of `current` has left of [`storage::SETTLING`],
/// counted from its newest object; `None` once settled (or not all made).
pub fn settling_left(current: &[Option<DynamicObject>], now: jiff::Timestamp) -> Option<Duration> {
    let newest = current.iter().map(|o| o.as_ref()?.metadata.creation_timestamp.as_ref().map(|t| t.0)).collect::<Option<Vec<_>>>()?;
    let newest = newest.into_iter().max()?;
    let age = Duration::try_from(now.duration_since(newest)).unwrap_or(Duration::ZERO);
    storage::SETTLING.checked_sub(age).filter(|left| !left.is_zero())
}

/// How soon a product whose storage backend is not installed looks again.
pub const BACKEND_RETRY: Duration = Duration::from_secs(10);

/// How soon a product with a child its quota refused looks again.
pub const QUOTA_RETRY: Duration = Duration::from_secs(30);

/// When a pass looks again without an event: after `resync`, or sooner for
/// what no watched event announces.
pub fn requeue(applied: &Applied, settling: Option<Duration>, fresh_for: Option<Duration>, resync: Duration) -> Duration {
    let mut requeue = resync;
    if applied.created {
        // Report once the new children have settled.
        requeue = Duration::from_secs(1);
    }
    if let Some(left) = settling {
        // The claim's binding wakes the product; if it has not bound by
        // then, look again to report it and say why.
        requeue = requeue.min(left + Duration::from_millis(100));
    }
    if !applied.missing_backends.is_empty() {
        // A backend's CRDs being installed is no event of this product's
        // (meshplane does not watch CRDs): look again now and then.
        requeue = requeue.min(BACKEND_RETRY);
    }
    if !applied.refused.is_empty() {
        // Quota frees up when something else in the namespace goes, which
        // is no event of this product's: look again now and then.
        requeue = requeue.min(QUOTA_RETRY);
    }
    if let Some(retry) = applied.conflicts.iter().filter_map(|c| c.retry_after).min() {
        requeue = requeue.min(retry + Duration::from_secs(1));
    }
    if let Some(expires) = fresh_for {
        // Wake up the moment freshness lapses instead of polling.
        requeue = requeue.min(expires + Duration::from_millis(500));
    }
    requeue
}

#[cfg(test)]
mod tests {
    use super::*;

    fn product(freshness: &str) -> DataProduct {
        let yaml = format!(
            "metadata: {{name: p, namespace: n}}\nspec: {{quality: {{freshness: {freshness}}}, pipelines: [{{name: b, image: i, schedule: '@daily'}}]}}"
        );
        serde_saphyr::from_str(&yaml).unwrap()
    }

    fn job(name: &str, created: i64, completed: Option<i64>, failed: bool) -> Arc<Job> {
        let condition = match (completed, failed) {
            (Some(_), _) => r#"[{"type": "Complete", "status": "True"}]"#,
            (None, true) => r#"[{"type": "Failed", "status": "True"}]"#,
            _ => "[]",
        };
        let ts = |s: i64| jiff::Timestamp::from_second(s).unwrap().to_string();
        let json = format!(
            r#"{{"metadata": {{"name": "{name}", "creationTimestamp": "{}", "labels": {{"meshplane.dev/pipeline": "b"}}}},
               "status": {{"startTime": "{}", {} "conditions": {condition}}}}}"#,
            ts(created),
            ts(created),
            completed.map(|c| format!(r#""completionTime": "{}","#, ts(c))).unwrap_or_default()
        );
        Arc::new(serde_json::from_str(&json).unwrap())
    }

    #[test]
    fn runs_are_read_from_the_jobs() {
        let p = product("1h");
        let jobs = [job("a", 100, Some(110), false), job("b", 200, None, true)];
        let status = &pipeline_statuses(&p, &jobs, &[])[0];
        assert_eq!(status.last_result.as_deref(), Some("Failed"), "the newest run decides the result");
        assert_eq!(status.last_successful_time.as_deref(), Some(jiff::Timestamp::from_second(110).unwrap().to_string().as_str()));
        assert_eq!(status.last_schedule_time.as_deref(), Some(jiff::Timestamp::from_second(200).unwrap().to_string().as_str()));
    }

    #[test]
    fn freshness_lapses_and_says_when() {
        let p = product("20s");
        let pipelines = pipeline_statuses(&p, &[job("a", 100, Some(110), false)], &[]);
        let at = |s| jiff::Timestamp::from_second(s).unwrap();
        let (fresh, expires) = freshness(&p, &pipelines, at(120)).unwrap();
        assert!(fresh.status && fresh.reason == reason::WITHIN_SLO);
        assert_eq!(expires, Some(Duration::from_secs(10)));
        let (stale, expires) = freshness(&p, &pipelines, at(131)).unwrap();
        assert!(!stale.status && stale.reason == reason::STALE && expires.is_none());
        let (never, _) = freshness(&p, &pipeline_statuses(&p, &[], &[]), at(0)).unwrap();
        assert_eq!(never.reason, reason::NO_SUCCESSFUL_RUN);
        // A message must not change from pass to pass, or status is rewritten each time.
        assert_eq!(freshness(&p, &pipelines, at(121)).unwrap().0, fresh);
    }

    #[test]
    fn storage_settles_from_its_newest_object() {
        let at = |s: i64| jiff::Timestamp::from_second(s).unwrap();
        let object = |created: i64| {
            let json =
                format!(r#"{{"apiVersion": "v1", "kind": "X", "metadata": {{"name": "x", "creationTimestamp": "{}"}}}}"#, at(created));
            Some(serde_json::from_str::<DynamicObject>(&json).unwrap())
        };
        assert_eq!(settling_left(&[object(100), object(104)], at(106)), Some(storage::SETTLING - Duration::from_secs(2)));
        assert_eq!(settling_left(&[object(100)], at(100) + storage::SETTLING), None, "settled");
        assert_eq!(settling_left(&[object(100), None], at(101)), None, "not all made: nothing to wait for yet");
    }

    #[test]
    fn only_storage_may_hold_back_a_first_status() {
        let part = |type_, ready| Computed::new(type_, ready, if ready { reason::PROVISIONED } else { "ClaimPending" }, "");
        let pass = |storage, pipelines, compliant, stalled| {
            vec![
                part(conditions::STORAGE_READY, storage),
                part(conditions::PIPELINES_READY, pipelines),
                part(conditions::ACCESS_READY, true),
                part(conditions::INPUTS_READY, true),
                part(conditions::FRESH, false),
                part(conditions::POLICY_COMPLIANT, compliant),
                part(conditions::READY, false),
                part(conditions::RECONCILING, true),
                part(conditions::STALLED, stalled),
            ]
        };
        assert!(waits_only_for_storage(&pass(false, true, true, false)));
        assert!(!waits_only_for_storage(&pass(true, true, true, false)), "nothing to wait for");
        assert!(!waits_only_for_storage(&pass(false, false, true, false)), "a pipeline waits too");
        assert!(!waits_only_for_storage(&pass(false, true, false, false)), "a violation is reported at once");
        assert!(!waits_only_for_storage(&pass(false, true, true, true)), "a stall is reported at once");
    }

    #[test]
    fn a_warning_is_published_once_its_status_would_record_something_new() {
        let pass = |compliant: bool, violation: &str, stalled: bool| {
            vec![
                Computed::new(conditions::POLICY_COMPLIANT, compliant, reason::POLICY_VIOLATION, violation),
                Computed::new(conditions::STALLED, stalled, reason::FIELD_MANAGER_CONFLICT, if stalled { "yielded" } else { "" }),
            ]
        };
        let reasons =
            |current: &[Condition], computed: &[Computed]| warnings(current, computed).into_iter().map(|w| w.0).collect::<Vec<_>>();
        let violating = pass(false, "no owner", false);
        assert_eq!(reasons(&[], &violating), [reason::POLICY_VIOLATION], "a new product's violation is news");
        let recorded = conditions::merge(&[], &violating, Some(1), &conditions::now());
        assert!(reasons(&recorded, &violating).is_empty(), "a status that records it already is no news");
        assert_eq!(reasons(&recorded, &pass(false, "no owner; no description", false)), [reason::POLICY_VIOLATION], "a new message is");
        assert!(reasons(&[], &pass(true, "", false)).is_empty(), "compliance is no warning");
        assert_eq!(reasons(&recorded, &pass(false, "no owner", true)), [reason::FIELD_MANAGER_CONFLICT]);
    }

    #[test]
    fn slo_durations() {
        assert_eq!(parse_slo("90m"), Some(Duration::from_secs(5400)));
        assert_eq!(parse_slo("2d"), Some(Duration::from_secs(172800)));
        assert_eq!(parse_slo("soon"), None);
    }
}
