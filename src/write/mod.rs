//! The only module that changes the cluster. Everything else reads caches
//! and the API server, and decides; what it decided is written here:
//! children by server-side apply ([`apply`]), statuses, finalizers, storage
//! released or taken back or deleted, Events. A unit test below fails when a
//! mutating call appears anywhere else under `src/`.

pub mod apply;
pub mod conflict;
pub mod grants;

use k8s_openapi::api::core::v1::ObjectReference;
use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams};
use kube::core::ApiResource;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::{Client, Resource};
use serde::Serialize;
use serde_json::{Value, json};

pub use apply::{Applier, Drift, Guarded, Outcome};
pub use conflict::{CONFLICT_LIMIT, CONFLICT_WINDOW, Conflict};

use crate::error::{Error, Result};
use crate::keys;
use crate::telemetry::Metrics;

/// What every reconciler writes with: the applier for children, and the
/// few other writes a pass makes.
pub struct Writer {
    client: Client,
    pub applier: Applier,
    /// Who publishes Events (see [`Writer::publish`]).
    reporter: Reporter,
}

/// An API for `object`'s kind, in its namespace if it has one.
fn api_of<K: Resource<DynamicType = ()>>(client: &Client, namespace: Option<&str>) -> Api<DynamicObject> {
    dynamic(client, &ApiResource::erase::<K>(&()), namespace)
}

fn dynamic(client: &Client, resource: &ApiResource, namespace: Option<&str>) -> Api<DynamicObject> {
    match namespace {
        Some(ns) => Api::namespaced_with(client.clone(), ns, resource),
        None => Api::all_with(client.clone(), resource),
    }
}

/// Under meshplane's own field manager, not the client's default
/// ("unknown"), so an object's managedFields show who wrote it.
fn as_meshplane() -> PatchParams {
    PatchParams { field_manager: Some(keys::FIELD_MANAGER.into()), ..Default::default() }
}

impl Writer {
    pub fn new(client: Client, metrics: &Metrics) -> Self {
        let instance = std::env::var("POD_NAME").ok();
        Writer {
            applier: Applier::new(client.clone(), metrics.child_reads.clone(), metrics.drift.clone()),
            reporter: Reporter { controller: keys::EVENT_REPORTER.into(), instance },
            client,
        }
    }

    /// Writes `status` as the object's status (server-side apply, forced:
    /// the status is meshplane's alone), unless it already is.
    pub async fn status<K, S>(&self, object: &K, current: Option<&S>, status: &S) -> Result<()>
    where
        K: Resource<DynamicType = ()>,
        S: Serialize + PartialEq,
    {
        if current == Some(status) {
            return Ok(());
        }
        let meta = object.meta();
        let name = meta.name.clone().unwrap_or_default();
        let kind = K::kind(&());
        let patch = json!({"apiVersion": K::api_version(&()), "kind": kind, "status": status});
        api_of::<K>(&self.client, meta.namespace.as_deref())
            .patch_status(&name, &PatchParams::apply(keys::FIELD_MANAGER).force(), &Patch::Apply(&patch))
            .await
            .map_err(Error::kube(format!("patching status of {kind} {name}")))?;
        Ok(())
    }

    /// Adds `finalizer` to the object unless it has it.
    pub async fn add_finalizer<K: Resource<DynamicType = ()>>(&self, object: &K, finalizer: &str) -> Result<()> {
        if object.meta().finalizers.iter().flatten().any(|f| f == finalizer) {
            return Ok(());
        }
        let mut finalizers = object.meta().finalizers.clone().unwrap_or_default();
        finalizers.push(finalizer.to_string());
        self.set_finalizers(object, finalizers).await
    }

    /// Removes `finalizer` from the object, letting its deletion finish;
    /// its children are no longer drift to correct.
    pub async fn remove_finalizer<K: Resource<DynamicType = ()>>(&self, object: &K, finalizer: &str) -> Result<()> {
        if let Some(uid) = &object.meta().uid {
            self.applier.forget(uid);
        }
        let remaining = object.meta().finalizers.iter().flatten().filter(|f| *f != finalizer).cloned().collect();
        self.set_finalizers(object, remaining).await
    }

    /// Replaces the finalizer list, guarded by the resourceVersion it was read
    /// at, so a concurrent change is retried instead of overwritten.
    async fn set_finalizers<K: Resource<DynamicType = ()>>(&self, object: &K, finalizers: Vec<String>) -> Result<()> {
        let meta = object.meta();
        let name = meta.name.clone().unwrap_or_default();
        let patch = json!({"metadata": {"finalizers": finalizers, "resourceVersion": meta.resource_version}});
        api_of::<K>(&self.client, meta.namespace.as_deref())
            .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map_err(Error::kube(format!("updating finalizers of {} {name}", K::kind(&()))))?;
        Ok(())
    }

    /// Deletes an object (its dependents in the background). False when it
    /// was gone already.
    pub async fn delete(&self, resource: &ApiResource, namespace: Option<&str>, name: &str) -> Result<bool> {
        match dynamic(&self.client, resource, namespace).delete(name, &DeleteParams::background()).await {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(s)) if s.code == 404 => Ok(false),
            Err(e) => Err(Error::kube(format!("deleting {} {name}", resource.kind))(e)),
        }
    }

    /// Lets a product's storage outlive it (`deletionPolicy: Retain`): the
    /// product's owner reference goes, so garbage collection spares the
    /// object, and a label and annotation say whose it was.
    pub async fn release(&self, resource: &ApiResource, object: &DynamicObject, owner_uid: &str, from: &str) -> Result<()> {
        let owners: Vec<_> = object.metadata.owner_references.iter().flatten().filter(|r| r.uid != owner_uid).cloned().collect();
        let patch = json!({"metadata": {
            "ownerReferences": owners,
            "labels": {keys::LABEL_ORPHANED: "true"},
            "annotations": {keys::ANNOTATION_ORPHANED_FROM: from},
        }});
        self.merge(resource, object, &patch, "releasing").await
    }

    /// Takes back storage an earlier product of the same name released: the
    /// apply has made the new product its owner; the marks of the release
    /// (written by a merge patch, so not removed by meshplane's apply) go.
    pub async fn reclaim(&self, resource: &ApiResource, object: &DynamicObject) -> Result<()> {
        let patch = json!({"metadata": {
            "labels": {keys::LABEL_ORPHANED: null},
            "annotations": {keys::ANNOTATION_ORPHANED_FROM: null},
        }});
        self.merge(resource, object, &patch, "reclaiming").await
    }

    async fn merge(&self, resource: &ApiResource, object: &DynamicObject, patch: &Value, action: &str) -> Result<()> {
        let name = object.metadata.name.clone().unwrap_or_default();
        dynamic(&self.client, resource, object.metadata.namespace.as_deref())
            .patch(&name, &as_meshplane(), &Patch::Merge(patch))
            .await
            .map_err(Error::kube(format!("{action} {} {name}", resource.kind)))?;
        Ok(())
    }

    /// Publishes an Event about `object` (the audit trail), naming a related
    /// object when there is one. A failure to publish is logged, never fatal.
    pub async fn publish<K: Resource<DynamicType = ()>>(
        &self,
        object: &K,
        type_: EventType,
        reason: &str,
        action: &str,
        note: String,
        related: Option<ObjectReference>,
    ) {
        let event = Event { type_, reason: reason.into(), note: Some(note), action: action.into(), secondary: related };
        // A Recorder per Event: kube's Recorder keeps every Event it published
        // for six minutes (to count repeats), which after a burst of new
        // products is megabytes held for nothing; meshplane publishes an Event
        // only when something changed, so there are no repeats to count.
        let recorder = Recorder::new(self.client.clone(), self.reporter.clone());
        if let Err(error) = recorder.publish(&event, &object.object_ref(&())).await {
            tracing::warn!(%error, "could not publish event");
        }
    }
}

#[cfg(test)]
mod tests {
    /// Calls that change the cluster, as they appear in source, each with
    /// what a file that makes it through kube's API must also name (so
    /// `str::replace` is no write, `Api::replace` is).
    const MUTATING: [(&str, &str); 10] = [
        (".create(", "PostParams"),
        (".replace(", "PostParams"),
        (".replace_status(", ""),
        (".patch(", "Patch"),
        (".patch_status(", ""),
        (".patch_metadata(", ""),
        (".patch_subresource(", ""),
        (".delete(", "DeleteParams"),
        (".delete_collection(", ""),
        (".publish(", "Recorder"),
    ];

    /// Calls outside `src/write/` that look like writes and change nothing:
    /// a TokenReview and a SubjectAccessReview ask the API server a question
    /// and are stored nowhere.
    const QUESTIONS: [(&str, &str); 2] = [("catalog/http.rs", "TokenReview"), ("catalog/http.rs", "SubjectAccessReview")];

    /// The mutating calls in a file's code, by line number.
    fn mutating_calls(text: &str) -> Vec<(usize, &'static str, String)> {
        let lines = code(text);
        let whole: String = lines.iter().map(|(_, l)| l.as_str()).collect::<Vec<_>>().join("\n");
        let mut found = Vec::new();
        for (i, (number, line)) in lines.iter().enumerate() {
            for (call, marker) in MUTATING {
                if line.contains(call) && whole.contains(marker) {
                    // A call chained over lines names its API a few lines above.
                    let context: String = lines[i.saturating_sub(3)..=i].iter().map(|(_, l)| l.as_str()).collect();
                    found.push((*number, call, context));
                }
            }
        }
        found
    }

    fn sources(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                sources(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }

    /// The code of a file before its tests, without comments.
    fn code(text: &str) -> Vec<(usize, String)> {
        let end = text.find("#[cfg(test)]").unwrap_or(text.len());
        text[..end]
            .lines()
            .enumerate()
            .map(|(i, line)| (i + 1, line.split("//").next().unwrap_or_default().to_string()))
            .filter(|(_, line)| !line.trim().is_empty())
            .collect()
    }

    #[test]
    fn no_mutating_call_is_made_outside_the_writer() {
        let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut files = Vec::new();
        sources(&src, &mut files);
        assert!(files.len() > 20, "the sources were not found under {}", src.display());
        let mut found = Vec::new();
        for file in files {
            let relative = file.strip_prefix(&src).unwrap().to_string_lossy().replace('\\', "/");
            if relative.starts_with("write/") {
                continue;
            }
            let text = std::fs::read_to_string(&file).unwrap();
            for (number, call, context) in mutating_calls(&text) {
                if !QUESTIONS.iter().any(|(f, kind)| relative == *f && context.contains(kind)) {
                    found.push(format!("src/{relative}:{number}: {call}"));
                }
            }
        }
        assert!(found.is_empty(), "mutating calls outside src/write/ (make them through crate::write::Writer):\n{}", found.join("\n"));
    }

    #[test]
    fn the_check_sees_a_mutating_call() {
        let text = "use kube::api::{Patch, PatchParams};\nfn f() {\n    api.patch(&name, &params, &patch);\n    // api.delete(x)\n    let s = t.replace('a', \"b\");\n}\n#[cfg(test)]\nmod t { api.create(); }\n";
        let calls: Vec<(usize, &str)> = mutating_calls(text).into_iter().map(|(n, call, _)| (n, call)).collect();
        assert_eq!(calls, [(3, ".patch(")], "a commented call, a string's replace and a call in tests are no writes");
    }
}
