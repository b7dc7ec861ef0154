//! Product reconcile tests that need no cluster.
