//! The ingest memory budget (`limits.memory_size`): one bound on the bytes being received
//! (HTTP bodies and gRPC messages as they arrive, their inflated copies), the decoded
//! batches on their way to storage, and the data the stores hold before it is in blocks
//! (live and frozen heads). A receiver takes its bytes from the budget before it holds
//! them; what does not fit is refused (HTTP 429, gRPC `RESOURCE_EXHAUSTED`), so under
//! overload memory stays at the budget and block writes, which free it, go on.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use crate::IngestError;

/// Where a refusal came from, for `strand_memory_budget_refused_total{stage}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// An HTTP request body as it arrives.
    Body,
    /// A gRPC message as it arrives, or once tonic has inflated it.
    Message,
    /// A compressed HTTP body inflated.
    Inflated,
    /// A decoded batch handed to storage.
    Decoded,
}

impl Stage {
    const ALL: [Stage; 4] = [Stage::Body, Stage::Message, Stage::Inflated, Stage::Decoded];

    fn as_str(self) -> &'static str {
        match self {
            Stage::Body => "body",
            Stage::Message => "grpc_message",
            Stage::Inflated => "inflated",
            Stage::Decoded => "decoded",
        }
    }
}

/// The stores' bytes not yet in blocks (read at each admission), and how to have them
/// written sooner (called when the budget refuses while they hold much of it).
struct Stores {
    held: Box<dyn Fn() -> u64 + Send + Sync>,
    relieve: Box<dyn Fn() + Send + Sync>,
}

/// One memory budget shared by every receiver made from one [`crate::Receiver`] and the
/// stores behind them.
pub struct MemoryBudget {
    limit: u64,
    /// Bytes receivers hold now (every live [`Charge`]).
    taken: AtomicU64,
    /// The stores' unwritten bytes, once the server has opened them.
    stores: OnceLock<Stores>,
    refused: [AtomicU64; Stage::ALL.len()],
}

impl std::fmt::Debug for MemoryBudget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryBudget")
            .field("limit", &self.limit)
            .field("taken", &self.taken.load(Ordering::Relaxed))
            .field("held", &self.held())
            .finish()
    }
}

impl MemoryBudget {
    /// A budget of `limit` bytes.
    pub fn new(limit: u64) -> Arc<Self> {
        Arc::new(Self {
            limit: limit.max(1),
            taken: AtomicU64::new(0),
            stores: OnceLock::new(),
            refused: Default::default(),
        })
    }

    /// Counts `unwritten` (the stores' data not yet in blocks) against the budget too;
    /// `relieve` is called when the budget refuses bytes while the stores hold more than
    /// half of it (to have a head cut and written sooner than its own limits would). Set
    /// once; later calls are ignored.
    pub fn hold_also(
        &self,
        unwritten: impl Fn() -> u64 + Send + Sync + 'static,
        relieve: impl Fn() + Send + Sync + 'static,
    ) {
        let _ = self.stores.set(Stores { held: Box::new(unwritten), relieve: Box::new(relieve) });
    }

    /// The budget in bytes.
    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// Bytes the receivers hold now.
    pub fn taken(&self) -> u64 {
        self.taken.load(Ordering::Relaxed)
    }

    /// Bytes the stores hold before they are in blocks.
    pub fn held(&self) -> u64 {
        self.stores.get().map_or(0, |s| (s.held)())
    }

    /// Takes `n` bytes into `charge` when they fit beside what the receivers and stores
    /// hold; otherwise counts the refusal at `stage` and answers `Overloaded` (retry
    /// later), or `TooLarge` when the charge would exceed the whole budget (a retry could
    /// never fit).
    pub fn take(self: &Arc<Self>, charge: &mut Charge, n: u64, stage: Stage) -> Result<(), IngestError> {
        if n == 0 {
            return Ok(());
        }
        let total = charge.bytes.saturating_add(n);
        if total > self.limit {
            self.refused[stage as usize].fetch_add(1, Ordering::Relaxed);
            return Err(IngestError::TooLarge(format!(
                "this request needs more than {} bytes of memory, more than the whole memory budget \
                 (limits.memory_size); send smaller requests",
                total.min(self.limit)
            )));
        }
        let held = self.held();
        let mut taken = self.taken.load(Ordering::Relaxed);
        loop {
            if taken.saturating_add(n).saturating_add(held) > self.limit {
                self.refused[stage as usize].fetch_add(1, Ordering::Relaxed);
                if held > self.limit / 2
                    && let Some(s) = self.stores.get()
                {
                    (s.relieve)();
                }
                return Err(IngestError::Overloaded(format!(
                    "the memory budget is full: {taken} bytes being received and decoded and {held} \
                     bytes waiting to be written to blocks, of {} (limits.memory_size); retry later",
                    self.limit
                )));
            }
            match self.taken.compare_exchange_weak(taken, taken + n, Ordering::AcqRel, Ordering::Relaxed) {
                Ok(_) => break,
                Err(now) => taken = now,
            }
        }
        match &charge.budget {
            Some(b) if !Arc::ptr_eq(b, self) => {
                // A charge holds bytes of one budget only; give these back at once.
                self.taken.fetch_sub(n, Ordering::AcqRel);
                return Err(IngestError::Unavailable("a charge of another memory budget".into()));
            }
            Some(_) => {}
            None => charge.budget = Some(self.clone()),
        }
        charge.bytes += n;
        Ok(())
    }

    /// Why ingest would be refused now, for `/readyz`: less than `room` bytes (a largest
    /// request) left beside what the receivers and the stores hold.
    pub fn not_ready(&self, room: u64) -> Option<String> {
        let (taken, held) = (self.taken(), self.held());
        let left = self.limit.saturating_sub(taken.saturating_add(held));
        (left < room).then(|| {
            format!(
                "memory budget: {taken} bytes being received and decoded and {held} waiting to be written \
                 to blocks leave {left} of {} (limits.memory_size), less than one request of {room}",
                self.limit
            )
        })
    }

    /// Refusals of `stage` so far.
    pub fn refused(&self, stage: Stage) -> u64 {
        self.refused[stage as usize].load(Ordering::Relaxed)
    }

    /// `strand_memory_budget_*` families for `/metrics`.
    pub fn metric_families(&self) -> Vec<strand_core::MetricFamily> {
        let mut used = strand_core::MetricFamily::new(
            "strand_memory_budget_used_bytes",
            "Bytes counted against limits.memory_size: being received and decoded (receiving), or waiting in the stores to be written to blocks (unwritten).",
            strand_core::MetricKind::Gauge,
        );
        used.push(vec![("part", "receiving".to_owned())], self.taken() as f64);
        used.push(vec![("part", "unwritten".to_owned())], self.held() as f64);
        let mut refused = strand_core::MetricFamily::new(
            "strand_memory_budget_refused_total",
            "Ingest requests refused (429 / RESOURCE_EXHAUSTED) because their bytes did not fit in limits.memory_size, by the stage that found it full.",
            strand_core::MetricKind::Counter,
        );
        for stage in Stage::ALL {
            refused.push(vec![("stage", stage.as_str().to_owned())], self.refused(stage) as f64);
        }
        vec![
            strand_core::MetricFamily::gauge(
                "strand_memory_budget_bytes",
                "The ingest memory budget (limits.memory_size).",
                self.limit as f64,
            ),
            used,
            refused,
        ]
    }
}

/// Bytes taken from a [`MemoryBudget`], given back when dropped.
#[derive(Debug, Default)]
pub struct Charge {
    budget: Option<Arc<MemoryBudget>>,
    bytes: u64,
}

impl Charge {
    /// Bytes held.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }
}

impl Drop for Charge {
    fn drop(&mut self) {
        if let Some(b) = &self.budget {
            b.taken.fetch_sub(self.bytes, Ordering::AcqRel);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_are_taken_while_they_fit_beside_the_stores_and_given_back_on_drop() {
        let budget = MemoryBudget::new(1000);
        let stored = Arc::new(AtomicU64::new(300));
        let relieved = Arc::new(AtomicU64::new(0));
        let (s, r) = (stored.clone(), relieved.clone());
        budget.hold_also(move || s.load(Ordering::Relaxed), move || _ = r.fetch_add(1, Ordering::Relaxed));
        let mut a = Charge::default();
        budget.take(&mut a, 400, Stage::Body).expect("fits");
        budget.take(&mut a, 300, Stage::Body).expect("fits exactly");
        assert_eq!((a.bytes(), budget.taken()), (700, 700));
        let mut b = Charge::default();
        let err = budget.take(&mut b, 1, Stage::Decoded).expect_err("full");
        assert!(err.to_string().contains("700 bytes being received and decoded and 300 bytes"), "{err}");
        assert_eq!((budget.refused(Stage::Decoded), budget.refused(Stage::Body)), (1, 0));
        assert_eq!(relieved.load(Ordering::Relaxed), 0, "the stores hold less than half");
        // The stores hold more than half: a refusal asks them to write sooner.
        stored.store(600, Ordering::Relaxed);
        budget.take(&mut b, 1, Stage::Decoded).expect_err("full");
        assert_eq!(relieved.load(Ordering::Relaxed), 1);
        // The stores write blocks: their bytes go and room comes back.
        stored.store(0, Ordering::Relaxed);
        budget.take(&mut b, 300, Stage::Decoded).expect("fits once the stores wrote");
        drop(a);
        assert_eq!(budget.taken(), 300);
        drop(b);
        assert_eq!(budget.taken(), 0);
    }

    #[test]
    fn not_ready_while_less_than_one_request_is_left() {
        let budget = MemoryBudget::new(1000);
        budget.hold_also(|| 300, || {});
        assert_eq!(budget.not_ready(700), None);
        let mut c = Charge::default();
        budget.take(&mut c, 1, Stage::Body).expect("fits");
        let why = budget.not_ready(700).expect("699 left");
        assert!(why.contains("1 bytes being received and decoded and 300 waiting"), "{why}");
        assert!(why.contains("leave 699 of 1000"), "{why}");
    }

    #[test]
    fn a_request_bigger_than_the_whole_budget_is_too_large_not_overloaded() {
        let budget = MemoryBudget::new(1000);
        let mut c = Charge::default();
        budget.take(&mut c, 600, Stage::Body).expect("fits");
        let err = budget.take(&mut c, 401, Stage::Inflated).expect_err("1001 bytes in all");
        assert!(matches!(err, IngestError::TooLarge(_)), "{err:?}");
        assert!(err.to_string().contains("more than 1000 bytes of memory"), "{err}");
        assert_eq!((budget.taken(), budget.refused(Stage::Inflated)), (600, 1));
    }

    #[test]
    fn a_charge_holds_bytes_of_one_budget() {
        let (one, two) = (MemoryBudget::new(100), MemoryBudget::new(100));
        let mut c = Charge::default();
        one.take(&mut c, 10, Stage::Body).expect("fits");
        two.take(&mut c, 10, Stage::Body).expect_err("another budget");
        assert_eq!((one.taken(), two.taken()), (10, 0));
    }
}
