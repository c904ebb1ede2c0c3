//! The collector's memory budget: a process-wide bound on the batches it holds, streams and unary calls
//! together, and a bound on the streams one customer may hold open.
//!
//! A batch is counted from the moment it is decoded until its ack is decided (the event log confirmed or
//! refused it), by what it holds ([`held_bytes`]): each event's encoded bytes, a slice of the request's
//! buffer (`event_view`: events are read in place, not decoded into owned structs), and the handle of
//! each slice, which is what an empty event costs. A stream whose next batch does not
//! fit waits, reading nothing more, so HTTP/2 flow control slows its client; a unary call waits at most
//! `--budget-wait-ms`, then is told to retry (UNAVAILABLE with a retry delay). What the collector holds
//! is then at most the budget, plus one batch per open stream waiting for room, plus what is being
//! decoded: `--max-in-flight-bytes` + streams x a message of `--max-batch-bytes`. Two things are not in
//! the estimate, both bounded by the batch's size: the few events that are decoded and encoded again
//! while their batch is checked (those not in the plain form), and the part of the request's buffer a
//! slice keeps alive beside it (tonic's buffer holds one message, sometimes the start of the next).

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use hourglass_core::customer::CustomerId;
use parking_lot::Mutex;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Budget units: the semaphore counts KiB, so a budget of terabytes fits its permit count.
const UNIT_BYTES: usize = 1024;

/// Bytes of batches the collector may hold at once.
pub struct MemoryBudget {
    permits: Arc<Semaphore>,
    total_units: u32,
}

/// Room in the budget for one batch; given back when dropped.
pub struct Reservation {
    permit: Option<OwnedSemaphorePermit>,
    permits: Arc<Semaphore>,
}

impl Drop for Reservation {
    fn drop(&mut self) {
        drop(self.permit.take());
        report_available(&self.permits);
    }
}

fn report_available(permits: &Semaphore) {
    metrics::gauge!(crate::telemetry::BUDGET_AVAILABLE_BYTES).set((permits.available_permits() * UNIT_BYTES) as f64);
}

impl MemoryBudget {
    /// A budget of `total_bytes` (at least one unit).
    pub fn new(total_bytes: usize) -> Self {
        let total_units = u32::try_from(total_bytes.div_ceil(UNIT_BYTES)).unwrap_or(u32::MAX >> 3).max(1);
        Self { permits: Arc::new(Semaphore::new(total_units as usize)), total_units }
    }

    /// Waits for room for `bytes`. A batch larger than the whole budget waits for all of it, so it
    /// still goes through, alone.
    pub async fn reserve(&self, bytes: usize) -> Reservation {
        let units = self.units(bytes);
        let permit = Arc::clone(&self.permits).acquire_many_owned(units).await.ok();
        report_available(&self.permits);
        Reservation { permit, permits: Arc::clone(&self.permits) }
    }

    /// Bytes of the budget not reserved now.
    pub fn available_bytes(&self) -> usize {
        self.permits.available_permits() * UNIT_BYTES
    }

    fn units(&self, bytes: usize) -> u32 {
        u32::try_from(bytes.div_ceil(UNIT_BYTES)).unwrap_or(u32::MAX).clamp(1, self.total_units)
    }
}

/// An estimate of the memory a batch of encoded events holds: each event's bytes and its handle.
pub fn held_bytes(events: &[Bytes]) -> usize {
    events.iter().map(|event| std::mem::size_of::<Bytes>() + event.len()).sum::<usize>()
        + std::mem::size_of::<Vec<Bytes>>()
}

/// Open streams per customer, against a limit.
pub struct StreamCounts {
    limit: usize,
    open: Arc<Mutex<HashMap<CustomerId, usize>>>,
}

/// One open stream of a customer; counted until dropped.
pub struct OpenStream {
    customer_id: CustomerId,
    open: Arc<Mutex<HashMap<CustomerId, usize>>>,
}

impl StreamCounts {
    /// At most `limit` open streams per customer.
    pub fn new(limit: usize) -> Self {
        Self { limit, open: Arc::new(Mutex::new(HashMap::new())) }
    }

    /// Counts a new stream of `customer_id`, or says how many it already has open.
    pub fn open(&self, customer_id: &CustomerId) -> Result<OpenStream, usize> {
        let mut open = self.open.lock();
        let count = open.entry(customer_id.clone()).or_default();
        if *count >= self.limit {
            return Err(*count);
        }
        *count += 1;
        Ok(OpenStream { customer_id: customer_id.clone(), open: Arc::clone(&self.open) })
    }
}

impl Drop for OpenStream {
    fn drop(&mut self) {
        let mut open = self.open.lock();
        if let Some(count) = open.get_mut(&self.customer_id) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.customer_id);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn reservations_wait_for_room_and_give_it_back() {
        let budget = MemoryBudget::new(10 * UNIT_BYTES);
        let first = budget.reserve(6 * UNIT_BYTES).await;
        assert_eq!(budget.available_bytes(), 4 * UNIT_BYTES);
        let mut second = Box::pin(budget.reserve(6 * UNIT_BYTES));
        assert!(futures::poll!(second.as_mut()).is_pending(), "no room until the first is given back");
        drop(first);
        let second = second.await;
        assert_eq!(budget.available_bytes(), 4 * UNIT_BYTES);
        drop(second);
        // Larger than the whole budget: waits for all of it, and gets it.
        let huge = budget.reserve(1 << 30).await;
        assert_eq!(budget.available_bytes(), 0);
        drop(huge);
        assert_eq!(budget.available_bytes(), 10 * UNIT_BYTES);
    }

    #[test]
    fn an_empty_event_costs_its_handle_not_its_two_bytes() {
        // The reviewer's attack: 2 bytes on the wire each.
        let empty = vec![Bytes::from_static(&[0x0a, 0x00]); 1000];
        assert!(held_bytes(&empty) >= 1000 * (std::mem::size_of::<Bytes>() + 2));
        let rich = Bytes::from(vec![0u8; 1100]);
        assert!(held_bytes(std::slice::from_ref(&rich)) > 1100);
    }

    #[test]
    fn a_customer_holds_at_most_its_limit_of_streams() {
        let counts = StreamCounts::new(2);
        let acme = CustomerId::new("acme").unwrap();
        let first = counts.open(&acme).unwrap();
        let _second = counts.open(&acme).unwrap();
        assert_eq!(counts.open(&acme).err(), Some(2));
        assert!(counts.open(&CustomerId::new("other").unwrap()).is_ok(), "per customer");
        drop(first);
        assert!(counts.open(&acme).is_ok());
    }
}
