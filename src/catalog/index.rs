//! The catalog's search index: one entry per DataProduct, kept current by the
//! same watch events that feed the operator's cache, so a search never
//! rebuilds anything. An entry holds what a search compares, prepared once per
//! change of the product: the lower-cased text (name, description, tags,
//! schema field names) and the summary a result shows. Pure: no I/O.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use kube::runtime::watcher;
use memchr::memmem::Finder;

use super::{ProductSummary, Query, summary};
use crate::api::DataProduct;

/// Separates the fields of an entry's text, so a needle never matches
/// across two fields.
const SEPARATOR: char = '\u{0}';

/// One product, prepared for search.
#[derive(Debug)]
pub struct Entry {
    pub product: Arc<DataProduct>,
    pub summary: ProductSummary,
    text: String,
}

impl Entry {
    fn new(product: Arc<DataProduct>) -> Entry {
        let spec = &product.spec;
        let mut text = product.metadata.name.clone().unwrap_or_default();
        for field in spec.description.iter().chain(&spec.tags).chain(spec.output_ports.iter().flat_map(|p| &p.schema).map(|f| &f.name)) {
            text.push(SEPARATOR);
            text.push_str(field);
        }
        Entry { summary: summary(&product), text: text.to_lowercase(), product }
    }

    /// Whether the entry satisfies every part of the query; `needle` finds
    /// the query's free text, lower-cased once per search.
    /// Reads only the entry itself (its summary and text), not the product:
    /// one less pointer to follow per product in a scan.
    fn matches(&self, query: &Query, needle: Option<&Finder<'_>>) -> bool {
        let s = &self.summary;
        query.classification.is_none_or(|c| c == s.classification)
            && query.lifecycle.is_none_or(|l| l == s.lifecycle)
            && query.domain.as_ref().is_none_or(|d| s.domain.as_ref() == Some(d))
            && query.owner.as_ref().is_none_or(|o| s.owner.as_ref() == Some(o))
            && query.tag.as_ref().is_none_or(|t| s.tags.contains(t))
            && needle.is_none_or(|n| n.find(self.text.as_bytes()).is_some())
    }
}

type Key = (String, String);

fn key_of(product: &DataProduct) -> Key {
    (product.metadata.namespace.clone().unwrap_or_default(), product.metadata.name.clone().unwrap_or_default())
}

#[derive(Default)]
struct Inner {
    /// Sorted by namespace and name: results come out in order.
    entries: BTreeMap<Key, Arc<Entry>>,
    /// During a relist: the keys listed so far, and whether each is a new
    /// version still to be taken from the cache when the relist completes.
    relisted: Option<BTreeMap<Key, bool>>,
}

/// Every product, prepared for search; shared by the watch that updates it
/// and the requests that read it.
#[derive(Default)]
pub struct Index {
    inner: RwLock<Inner>,
}

/// Where the index finds the products it points at.
enum Products<'a> {
    /// Nowhere: every entry holds its own copy.
    Own,
    /// The operator's cache, which holds every product already (by
    /// namespace and name).
    Cached(&'a dyn Fn(&str, &str) -> Option<Arc<DataProduct>>),
}

impl Index {
    /// Applies one watch event. A relist (`Init` … `InitDone`) replaces the
    /// whole index when it completes, dropping products deleted meanwhile.
    pub fn apply(&self, event: &watcher::Event<DataProduct>) {
        self.apply_to(event, Products::Own)
    }

    /// Like [`Index::apply`], but an entry points at the product the cache
    /// holds (`cached`, by namespace and name), and the index adds its
    /// prepared text to the cache, not a second copy of every product. Called
    /// once the cache has taken the event; a relist reaches the cache only
    /// when it completes, so its new versions are taken then, not copied
    /// meanwhile, so a restart never holds every product twice.
    pub fn apply_shared(&self, event: &watcher::Event<DataProduct>, cached: &dyn Fn(&str, &str) -> Option<Arc<DataProduct>>) {
        self.apply_to(event, Products::Cached(cached))
    }

    fn apply_to(&self, event: &watcher::Event<DataProduct>, products: Products<'_>) {
        // The cache's copy of `p`, when it holds that very version.
        let cached_version = |(namespace, name): &Key, p: &DataProduct| match &products {
            Products::Cached(cached) => cached(namespace, name).filter(|c| c.metadata.resource_version == p.metadata.resource_version),
            Products::Own => None,
        };
        let mut inner = self.inner.write().unwrap_or_else(|e| e.into_inner());
        match event {
            watcher::Event::Apply(p) => {
                let key = key_of(p);
                let product = cached_version(&key, p).unwrap_or_else(|| Arc::new(p.clone()));
                inner.entries.insert(key, Arc::new(Entry::new(product)));
            }
            watcher::Event::Delete(p) => {
                inner.entries.remove(&key_of(p));
            }
            watcher::Event::Init => inner.relisted = Some(BTreeMap::new()),
            watcher::Event::InitApply(p) => {
                let key = key_of(p);
                // Unchanged products keep their prepared entry.
                let unchanged = inner.entries.get(&key).is_some_and(|e| e.product.metadata.resource_version == p.metadata.resource_version);
                let later = !unchanged && matches!(products, Products::Cached(_));
                if !unchanged && !later {
                    inner.entries.insert(key.clone(), Arc::new(Entry::new(Arc::new(p.clone()))));
                }
                if let Some(relisted) = inner.relisted.as_mut() {
                    relisted.insert(key, later);
                }
            }
            watcher::Event::InitDone => {
                let Some(relisted) = inner.relisted.take() else { return };
                inner.entries.retain(|k, _| relisted.contains_key(k));
                if let Products::Cached(cached) = &products {
                    for ((namespace, name), _) in relisted.into_iter().filter(|(_, later)| *later) {
                        if let Some(product) = cached(&namespace, &name) {
                            inner.entries.insert((namespace, name), Arc::new(Entry::new(product)));
                        }
                    }
                }
            }
        }
    }

    /// The entries matching `query`, sorted by namespace and name.
    pub fn search(&self, query: &Query) -> Vec<Arc<Entry>> {
        let text = query.text.as_ref().map(|t| t.to_lowercase());
        // A needle that holds the separator could only match across fields.
        if text.as_ref().is_some_and(|t| t.contains(SEPARATOR)) {
            return Vec::new();
        }
        let needle = text.as_ref().map(|t| Finder::new(t.as_bytes()));
        let inner = self.inner.read().unwrap_or_else(|e| e.into_inner());
        inner.entries.values().filter(|e| e.matches(query, needle.as_ref())).cloned().collect()
    }

    /// How many products each namespace holds.
    pub fn counts_by_namespace(&self) -> BTreeMap<String, usize> {
        let inner = self.inner.read().unwrap_or_else(|e| e.into_inner());
        let mut counts = BTreeMap::new();
        for (namespace, _) in inner.entries.keys() {
            *counts.entry(namespace.clone()).or_default() += 1;
        }
        counts
    }

    pub fn len(&self) -> usize {
        self.inner.read().unwrap_or_else(|e| e.into_inner()).entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::product::Classification;

    fn product(ns: &str, name: &str, description: &str, tags: &[&str], fields: &[&str]) -> DataProduct {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "meshplane.dev/v1alpha1",
            "kind": "DataProduct",
            "metadata": {"name": name, "namespace": ns, "resourceVersion": "1"},
            "spec": {
                "description": description,
                "tags": tags,
                "outputPorts": [{"name": "out", "format": "CSV", "schema": fields.iter().map(|f| serde_json::json!({"name": f, "type": "string"})).collect::<Vec<_>>()}],
            },
        }))
        .unwrap()
    }

    fn names(index: &Index, query: &Query) -> Vec<String> {
        index.search(query).iter().map(|e| e.summary.name.clone()).collect()
    }

    fn text(t: &str) -> Query {
        Query { text: Some(t.into()), ..Default::default() }
    }

    #[test]
    fn free_text_matches_each_field_case_insensitively_never_across_fields() {
        let index = Index::default();
        index.apply(&watcher::Event::Apply(product("dm-a", "orders", "All Orders placed", &["Finance"], &["order_id"])));
        index.apply(&watcher::Event::Apply(product("dm-a", "clicks", "web clicks", &["web"], &["session_ID"])));
        assert_eq!(names(&index, &text("ORDERS")), ["orders"]);
        assert_eq!(names(&index, &text("finance")), ["orders"]);
        assert_eq!(names(&index, &text("session_id")), ["clicks"]);
        assert_eq!(names(&index, &text("web")), ["clicks"]);
        // "orders" + "all": the end of the name and the start of the description.
        assert!(names(&index, &text("sall")).is_empty());
        assert!(names(&index, &text("s\u{0}all")).is_empty());
    }

    #[test]
    fn changes_and_deletions_apply_at_once_and_results_are_sorted() {
        let index = Index::default();
        index.apply(&watcher::Event::Apply(product("dm-b", "zeta", "x", &[], &[])));
        index.apply(&watcher::Event::Apply(product("dm-a", "alpha", "x", &[], &[])));
        assert_eq!(names(&index, &text("x")), ["alpha", "zeta"]);
        let mut changed = product("dm-a", "alpha", "y", &[], &[]);
        changed.spec.classification = Classification::Restricted;
        index.apply(&watcher::Event::Apply(changed));
        assert_eq!(names(&index, &text("x")), ["zeta"]);
        assert_eq!(names(&index, &Query { classification: Some(Classification::Restricted), ..Default::default() }), ["alpha"]);
        index.apply(&watcher::Event::Delete(product("dm-b", "zeta", "x", &[], &[])));
        assert!(names(&index, &text("x")).is_empty());
        assert_eq!(index.counts_by_namespace(), BTreeMap::from([("dm-a".to_string(), 1)]));
    }

    #[test]
    fn a_relist_drops_what_was_deleted_while_the_watch_was_down() {
        let index = Index::default();
        index.apply(&watcher::Event::Apply(product("dm-a", "kept", "", &[], &[])));
        index.apply(&watcher::Event::Apply(product("dm-a", "gone", "", &[], &[])));
        index.apply(&watcher::Event::Init);
        index.apply(&watcher::Event::InitApply(product("dm-a", "kept", "", &[], &[])));
        index.apply(&watcher::Event::InitApply(product("dm-a", "new", "", &[], &[])));
        // Until the relist completes, searches still see the old state.
        assert_eq!(index.len(), 3);
        index.apply(&watcher::Event::InitDone);
        assert_eq!(names(&index, &Query::default()), ["kept", "new"]);
    }

    #[test]
    fn beside_the_cache_a_relist_takes_its_new_versions_from_it_without_copies() {
        let cache: std::collections::HashMap<(String, String), Arc<DataProduct>> = [
            (("dm-a".to_string(), "kept".to_string()), Arc::new(product("dm-a", "kept", "", &[], &[]))),
            (("dm-a".to_string(), "new".to_string()), Arc::new(product("dm-a", "new", "fresh", &[], &[]))),
        ]
        .into();
        let cached = |ns: &str, name: &str| cache.get(&(ns.to_string(), name.to_string())).cloned();
        let index = Index::default();
        index.apply_shared(&watcher::Event::Apply(product("dm-a", "kept", "", &[], &[])), &cached);
        index.apply_shared(&watcher::Event::Apply(product("dm-a", "gone", "", &[], &[])), &cached);
        index.apply_shared(&watcher::Event::Init, &cached);
        index.apply_shared(&watcher::Event::InitApply(product("dm-a", "kept", "", &[], &[])), &cached);
        index.apply_shared(&watcher::Event::InitApply(product("dm-a", "new", "fresh", &[], &[])), &cached);
        // Like the cache, the index shows the relist once it is complete.
        assert_eq!(names(&index, &Query::default()), ["gone", "kept"]);
        index.apply_shared(&watcher::Event::InitDone, &cached);
        assert_eq!(names(&index, &text("fresh")), ["new"]);
        assert_eq!(names(&index, &Query::default()), ["kept", "new"]);
        for entry in index.search(&Query::default()) {
            let held = &cache[&(entry.summary.namespace.clone(), entry.summary.name.clone())];
            assert!(Arc::ptr_eq(&entry.product, held), "{} is a copy, not the cached product", entry.summary.name);
        }
    }
}
