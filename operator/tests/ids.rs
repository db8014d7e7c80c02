//! Numeric ids on the local cluster's real API server: concurrent allocations, grouped within
//! a process and compare-and-swapped between processes, never hand out an id twice or skip one.

use std::collections::BTreeSet;

use futures::future::join_all;
use miniautoml_operator::ids::Ids;
use miniautoml_test_support::{LocalCluster, TestNamespace};

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_allocations_from_two_processes_get_distinct_consecutive_ids() {
    let cluster = LocalCluster::shared();
    let client = cluster.client().await.unwrap();
    let ns = TestNamespace::new(cluster, &client, "ids").await.unwrap();
    // Two allocators stand for two operator processes sharing the counter.
    let (first, second) = (Ids::default(), Ids::default());
    let calls = (0..60).map(|i| {
        let ids = if i % 2 == 0 { &first } else { &second };
        ids.allocate(&client, &ns.name, "test-ids")
    });
    let ids: Vec<u64> = join_all(calls).await.into_iter().map(Result::unwrap).collect();
    let distinct: BTreeSet<u64> = ids.iter().copied().collect();
    assert_eq!(distinct, (1..=60).collect(), "{ids:?}");
    // The counter goes on from there.
    assert_eq!(first.allocate(&client, &ns.name, "test-ids").await.unwrap(), 61);
}
