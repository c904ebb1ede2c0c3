//! Numbers at the edges of `f64`: the largest finite ones are stored as they are, and a rollup holding NaN
//! or ±infinity is refused with [`RollupStoreError::NonFinite`], writing nothing, so the job can still
//! complete with a finite rollup.

use hourglass_core::rollup_store::RollupStoreError;

use super::*;

/// Stores `±f64::MAX` and the smallest positive normal `f64` exactly; refuses NaN and ±infinity in a
/// sum, a minimum or a maximum, leaving the previous rollup and the lease as they were.
pub async fn extreme_numbers(jobs: &impl JobQueue, rollups: &(impl RollupStore + RollupReader)) {
    const ACME: &str = "numbers-acme";
    let the_hour = customer_hour(ACME, hour(0));
    let largest = rollup(
        true,
        &[("buy", 3)],
        &[
            ("buy", "debt", 2, -f64::MAX, -f64::MAX, -1.0),
            ("buy", "price", 3, f64::MAX, -f64::MAX, f64::MAX),
            ("buy", "tiny", 3, f64::MIN_POSITIVE, f64::MIN_POSITIVE, f64::MIN_POSITIVE),
        ],
        outcomes(3, &[], 0),
    );
    mark(jobs, std::slice::from_ref(&the_hour)).await;
    let leased = lease(rollups, "worker-a", 10, LONG_LEASE, final_before(10)).await;
    assert_eq!(leased.len(), 1, "the marked hour is a job");
    complete_expecting(rollups, &leased[0], &largest, 1, "the largest finite numbers are stored").await;
    assert_eq!(
        numeric(rollups, ACME, hour(0), hour(1), &[]).await,
        expected_numeric(hour(0), &largest),
        "±f64::MAX and the smallest normal f64 read back exactly"
    );

    mark(jobs, std::slice::from_ref(&the_hour)).await;
    let leased = lease(rollups, "worker-a", 10, LONG_LEASE, final_before(10)).await;
    assert_eq!(leased.len(), 1, "new data makes the hour a job again");
    let job = &leased[0];
    for (stat, row) in [
        ("sum", ("buy", "price", 2, f64::NAN, 1.0, 2.0)),
        ("min", ("buy", "price", 2, 3.0, f64::NEG_INFINITY, 2.0)),
        ("max", ("buy", "price", 2, 3.0, 1.0, f64::INFINITY)),
        ("sum", ("buy", "price", 2, f64::INFINITY, 1.0, 2.0)),
    ] {
        let non_finite = rollup(true, &[("buy", 2)], &[row], outcomes(2, &[], 0));
        match rollups.complete(job, &non_finite).await {
            Err(RollupStoreError::NonFinite { event_type, property, stat: refused_stat, .. }) => {
                assert_eq!((event_type.as_str(), property.as_str(), refused_stat), ("buy", "price", stat));
            }
            other => panic!("a rollup with a non-finite {stat} must be refused as NonFinite, got {other:?}"),
        }
    }
    assert_eq!(
        numeric(rollups, ACME, hour(0), hour(1), &[]).await,
        expected_numeric(hour(0), &largest),
        "a refused rollup writes nothing"
    );
    let refused_status = status(rollups, ACME, hour(0)).await;
    assert_eq!((refused_status.revision, refused_status.events), (Some(1), 3), "the revision did not move");

    let finite = rollup(true, &[("buy", 2)], &[("buy", "price", 2, 3.0, 1.0, 2.0)], outcomes(2, &[], 0));
    complete_expecting(rollups, job, &finite, 2, "the lease survives refusals: a finite rollup completes").await;
    assert_eq!(numeric(rollups, ACME, hour(0), hour(1), &[]).await, expected_numeric(hour(0), &finite));
}
