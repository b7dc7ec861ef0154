//! A product's pipelines: a CronJob per batch pipeline, a Deployment per
//! continuous one, their pods restricted and wired to storage and inputs.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec};
use k8s_openapi::api::batch::v1::{CronJob, CronJobSpec, JobSpec, JobTemplateSpec};
use k8s_openapi::api::core::v1::{
    Capabilities, Container, EnvVar as KubeEnvVar, PodSecurityContext, PodSpec, PodTemplateSpec, ResourceRequirements, SeccompProfile,
    SecurityContext,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};

use super::{descriptor_name, labels};
use super::{meta, service_account_name, workload_name};
use crate::api::product::{CpuMemory, Pipeline, PipelineMode, StorageKind};
use crate::keys;
use crate::product::resolve::InputState;
use crate::product::resolve::ResolvedInput;
use crate::product::validate::ValidProduct;
use crate::storage::{self, Wiring};

fn quantities(cm: &Option<CpuMemory>) -> Option<BTreeMap<String, Quantity>> {
    let cm = cm.as_ref()?;
    let mut map = BTreeMap::new();
    if let Some(cpu) = &cm.cpu {
        map.insert("cpu".to_string(), cpu.clone());
    }
    if let Some(memory) = &cm.memory {
        map.insert("memory".to_string(), memory.clone());
    }
    (!map.is_empty()).then_some(map)
}

/// The pod of a pipeline: the product's ServiceAccount, Pod Security
/// `restricted` (non-root, no privilege escalation, no capabilities,
/// RuntimeDefault seccomp), its volumes, its storage's and granted inputs'
/// connection details.
pub fn render_pod(valid: &ValidProduct<'_>, pipeline: &Pipeline, inputs: &[ResolvedInput], restart_policy: &str) -> PodTemplateSpec {
    let spec = &valid.product.spec;
    let product_ref = valid.product_ref();
    let mut wiring = Wiring::default();
    for storage in &spec.storage {
        let mount = pipeline.mounts.iter().find(|m| m.storage == storage.name);
        // Volumes are wired where mounted; buckets for every pipeline.
        if storage.kind == StorageKind::Volume && mount.is_none() {
            continue;
        }
        let w = storage::backend(storage.kind).wiring(&product_ref, storage, mount);
        wiring.volumes.extend(w.volumes);
        wiring.mounts.extend(w.mounts);
        wiring.env.extend(w.env);
    }
    let mut env: Vec<KubeEnvVar> = vec![
        storage::env("MESHPLANE_PRODUCT".into(), valid.name),
        storage::env("MESHPLANE_DOMAIN".into(), valid.domain_name),
        storage::env("MESHPLANE_DESCRIPTOR".into(), format!("{}/{}", valid.namespace, descriptor_name(valid.name))),
    ];
    env.extend(wiring.env);
    for input in inputs.iter().filter(|i| pipeline.inputs.contains(&i.name) && i.state == InputState::Granted) {
        let Some(ns) = &input.namespace else { continue };
        env.push(storage::env(storage::env_name(&["MESHPLANE_INPUT", &input.name, "NAMESPACE"]), ns.clone()));
        env.push(storage::env(storage::env_name(&["MESHPLANE_INPUT", &input.name, "PRODUCT"]), input.product.clone()));
        env.push(storage::env(
            storage::env_name(&["MESHPLANE_INPUT", &input.name, "DESCRIPTOR"]),
            format!("{ns}/{}", descriptor_name(&input.product)),
        ));
    }
    env.extend(pipeline.env.iter().map(|e| storage::env(e.name.clone(), e.value.clone())));
    let mut pod_labels = labels(valid, "pipeline");
    pod_labels.insert(keys::LABEL_PIPELINE.to_string(), pipeline.name.clone());
    PodTemplateSpec {
        metadata: Some(ObjectMeta { labels: Some(pod_labels), ..Default::default() }),
        spec: Some(PodSpec {
            service_account_name: Some(service_account_name(valid.name)),
            automount_service_account_token: Some(false),
            restart_policy: Some(restart_policy.into()),
            security_context: Some(PodSecurityContext {
                run_as_non_root: Some(true),
                run_as_user: Some(65532),
                run_as_group: Some(65532),
                fs_group: Some(65532),
                seccomp_profile: Some(SeccompProfile { type_: "RuntimeDefault".into(), ..Default::default() }),
                ..Default::default()
            }),
            containers: vec![Container {
                name: pipeline.name.clone(),
                image: Some(pipeline.image.clone()),
                command: (!pipeline.command.is_empty()).then(|| pipeline.command.clone()),
                args: (!pipeline.args.is_empty()).then(|| pipeline.args.clone()),
                env: Some(env),
                resources: pipeline.resources.as_ref().map(|r| ResourceRequirements {
                    requests: quantities(&r.requests),
                    limits: quantities(&r.limits),
                    ..Default::default()
                }),
                volume_mounts: (!wiring.mounts.is_empty()).then_some(wiring.mounts),
                security_context: Some(SecurityContext {
                    allow_privilege_escalation: Some(false),
                    run_as_non_root: Some(true),
                    capabilities: Some(Capabilities { drop: Some(vec!["ALL".into()]), ..Default::default() }),
                    seccomp_profile: Some(SeccompProfile { type_: "RuntimeDefault".into(), ..Default::default() }),
                    ..Default::default()
                }),
                ..Default::default()
            }],
            volumes: (!wiring.volumes.is_empty()).then_some(wiring.volumes),
            ..Default::default()
        }),
    }
}

pub fn render_pipelines(valid: &ValidProduct<'_>, inputs: &[ResolvedInput]) -> (Vec<CronJob>, Vec<Deployment>) {
    let mut cron_jobs = Vec::new();
    let mut deployments = Vec::new();
    for pipeline in &valid.product.spec.pipelines {
        let name = workload_name(valid.name, &pipeline.name);
        let mut workload_meta = meta(valid, name, "pipeline");
        workload_meta.labels.get_or_insert_default().insert(keys::LABEL_PIPELINE.into(), pipeline.name.clone());
        match pipeline.mode {
            PipelineMode::Batch => {
                let pod = render_pod(valid, pipeline, inputs, "Never");
                cron_jobs.push(CronJob {
                    metadata: workload_meta,
                    spec: Some(CronJobSpec {
                        schedule: pipeline.schedule.clone().unwrap_or_default(),
                        concurrency_policy: Some("Forbid".into()),
                        successful_jobs_history_limit: Some(3),
                        failed_jobs_history_limit: Some(3),
                        job_template: JobTemplateSpec {
                            // Jobs carry the pipeline's labels, so meshplane's
                            // cache sees them and reports their runs.
                            metadata: Some(ObjectMeta {
                                labels: pod.metadata.as_ref().and_then(|m| m.labels.clone()),
                                ..Default::default()
                            }),
                            spec: Some(JobSpec { backoff_limit: Some(2), template: pod, ..Default::default() }),
                        },
                        ..Default::default()
                    }),
                    ..Default::default()
                });
            }
            PipelineMode::Continuous => {
                let pod = render_pod(valid, pipeline, inputs, "Always");
                let mut selector = BTreeMap::from([(keys::LABEL_PRODUCT.to_string(), valid.name.to_string())]);
                selector.insert(keys::LABEL_PIPELINE.to_string(), pipeline.name.clone());
                deployments.push(Deployment {
                    metadata: workload_meta,
                    spec: Some(DeploymentSpec {
                        replicas: Some(pipeline.replicas),
                        selector: LabelSelector { match_labels: Some(selector), ..Default::default() },
                        template: pod,
                        ..Default::default()
                    }),
                    ..Default::default()
                });
            }
        }
    }
    (cron_jobs, deployments)
}
