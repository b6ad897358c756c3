//! The index thread: keeps the heads' search indexes close behind their records.

use super::*;

/// Batches the index thread may have queued before the WAL thread stops handing them over.
pub(super) const INDEX_QUEUE: usize = 256;

/// A batch just inserted into a head.
pub(super) enum IndexJob {
    /// Spans, for that head's search index.
    Spans { index: Arc<parking_lot::RwLock<HeadIndex>>, position: usize, received: u64, batch: SpanBatch },
    /// Log records, for that head's block columns.
    Logs { columns: Arc<Mutex<crate::logs::LogColumns>>, position: usize, batch: LogBatch },
}

/// Keeps the heads' search indexes close behind their records, off the ingest path, so a
/// search rarely has to index much itself: indexes the batches the WAL thread hands over
/// (already decoded), and catches up from the records when it missed some. Appends log
/// batches to their head's block columns (the cut decodes those it missed).
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
            Ok(IndexJob::Spans { index, position, received, batch }) => {
                let mut index = index.write();
                let behind = position > index.indexed();
                if !index.add_decoded(position, received, &batch) && behind {
                    drop(index);
                    catch_up();
                }
            }
            Ok(IndexJob::Logs { columns, position, batch }) => columns.lock().add(position, &batch),
            Err(RecvTimeoutError::Timeout) => catch_up(),
            Err(RecvTimeoutError::Disconnected) => return,
        }
    }
}
