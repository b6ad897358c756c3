//! The index thread: keeps the heads' search indexes close behind their records.

use super::*;

/// Batches the index thread may have queued before the WAL thread stops handing them over.
pub(super) const INDEX_QUEUE: usize = 256;

/// A batch just inserted into a head, for that head's index.
pub(super) struct IndexJob {
    pub(super) index: Arc<parking_lot::RwLock<HeadIndex>>,
    pub(super) position: usize,
    pub(super) received: u64,
    pub(super) batch: SpanBatch,
}

/// Keeps the heads' search indexes close behind their records, off the ingest path, so a
/// search rarely has to index much itself: indexes the batches the WAL thread hands over
/// (already decoded), and catches up from the records when it missed some.
pub(super) fn index_loop(inner: &Inner, rx: Receiver<IndexJob>) {
    let catch_up = || {
        let heads: Vec<_> = {
            let st = inner.state.read();
            st.frozen.iter().map(|f| f.head.index_handle()).chain([st.head.index_handle()]).collect()
        };
        for (index, first, tail) in heads {
            if let Err(e) = index.write().extend(first, &tail) {
                warn!(error = %e, "indexing the head failed");
            }
        }
    };
    while !inner.closing.load(Ordering::SeqCst) {
        match rx.recv_timeout(Duration::from_millis(200)) {
            Ok(job) => {
                let mut index = job.index.write();
                let behind = job.position > index.indexed();
                if !index.add_decoded(job.position, job.received, &job.batch) && behind {
                    drop(index);
                    catch_up();
                }
            }
            Err(RecvTimeoutError::Timeout) => catch_up(),
            Err(RecvTimeoutError::Disconnected) => return,
        }
    }
}
