//! Group commit: one thread owns a [`Wal`] and appends what many writers hand it through a
//! channel, with one fsync for every record of a group that asks for durability. The
//! store's WAL thread and the tail sampler's pending log both run on this loop; what
//! happens around the appends (inserting into the head, cutting it, answering writers,
//! rolling and deleting segments) is their [`Committer`]'s.

use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use super::Wal;

/// The record a job appends.
#[derive(Debug)]
pub struct Append {
    /// The framed record (see [`super::frame`] and [`super::WalRecord::encode`]).
    pub bytes: Vec<u8>,
    /// Whether the job may only be answered once the record is fsynced.
    pub sync: bool,
}

/// A job after its group was appended.
#[derive(Debug)]
pub struct Committed<J> {
    /// The job.
    pub job: J,
    /// The bytes appended for it, when it had a record.
    pub bytes: Option<Vec<u8>>,
    /// The segment its record went to, or why the append failed; `None` without a record.
    pub appended: Option<std::io::Result<u64>>,
}

/// Whether the loop goes on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    /// Keep taking jobs.
    Continue,
    /// Stop: [`Committer::finish`] runs next.
    Stop,
}

/// What a group-commit loop does besides appending. All methods run on the loop's thread.
pub trait Committer {
    /// What writers send.
    type Job;

    /// Called before a group's records are taken (for example to fix its receive time).
    fn begin_group(&mut self) {}

    /// The record a job appends, if it has one (control jobs have none).
    fn record(&mut self, job: &Self::Job) -> Option<Append>;

    /// Called once every record of the group is appended and, when one asked for it,
    /// fsynced: `synced` is that fsync's result, `None` when none was asked for or
    /// nothing was appended. Jobs come in the order they were received.
    fn committed(
        &mut self,
        wal: &mut Wal,
        group: Vec<Committed<Self::Job>>,
        synced: Option<&std::io::Result<()>>,
    ) -> Flow;

    /// Called when no job arrived for a tick.
    fn idle(&mut self, wal: &mut Wal) -> Flow;

    /// Called once when the loop ends, with the jobs still queued (to refuse them).
    fn finish(&mut self, wal: &mut Wal, left: Vec<Self::Job>);

    /// Called after every fsync the loop makes, with how long it took.
    fn fsynced(&mut self, _took: Duration, _result: &std::io::Result<()>) {}
}

/// Most jobs in one group.
pub const MAX_GROUP: usize = 512;

/// Runs the loop until the committer says stop or every sender is gone.
pub fn run<C: Committer>(mut wal: Wal, rx: &Receiver<C::Job>, committer: &mut C, tick: Duration) {
    loop {
        let first = match rx.recv_timeout(tick) {
            Ok(job) => job,
            Err(RecvTimeoutError::Timeout) => {
                if committer.idle(&mut wal) == Flow::Stop {
                    break;
                }
                continue;
            }
            Err(RecvTimeoutError::Disconnected) => break,
        };
        let mut jobs = vec![first];
        while jobs.len() < MAX_GROUP {
            match rx.try_recv() {
                Ok(job) => jobs.push(job),
                Err(_) => break,
            }
        }
        committer.begin_group();
        let mut sync = false;
        let group: Vec<Committed<C::Job>> = jobs
            .into_iter()
            .map(|job| match committer.record(&job) {
                Some(Append { bytes, sync: wants_sync }) => {
                    let appended = wal.append(&bytes).map(|()| wal.current_segment());
                    sync |= wants_sync && appended.is_ok();
                    Committed { job, bytes: Some(bytes), appended: Some(appended) }
                }
                None => Committed { job, bytes: None, appended: None },
            })
            .collect();
        let synced = sync.then(|| {
            let started = Instant::now();
            let result = wal.sync();
            committer.fsynced(started.elapsed(), &result);
            result
        });
        if committer.committed(&mut wal, group, synced.as_ref()) == Flow::Stop {
            break;
        }
    }
    let left = rx.try_iter().collect();
    committer.finish(&mut wal, left);
}
