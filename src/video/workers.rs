//! The encoder worker threads (issue 13: being written; the signatures
//! are fixed).

use std::sync::Arc;

use crate::wire::Value;

use super::choice::EncoderChoice;
use super::job::{Job, JobSink, StreamKey, SubmitError};

/// Why the pool could not start.
#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    #[error("no video encoder available: {0}")]
    NoEncoder(String),
    #[error("cannot start an encoder worker: {0}")]
    Spawn(String),
}

/// How many CPU workers and how deep their queues.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolConfig {
    /// CPU (x264) worker threads; 0: one per core not used by shards, at
    /// least 1.
    pub cpu_workers: usize,
    /// Jobs a worker's queue holds before submissions are refused.
    pub queue_depth: usize,
}

impl Default for PoolConfig {
    fn default() -> Self {
        PoolConfig {
            cpu_workers: 0,
            queue_depth: 8,
        }
    }
}

/// The encoder workers, shared by every shard.
#[derive(Debug)]
pub struct Pool {}

impl Pool {
    /// Finds the encoders `choice` names (logging which devices were found
    /// and why any is not used) and starts the workers.
    pub fn start(choice: &EncoderChoice, cfg: PoolConfig) -> Result<Arc<Pool>, PoolError> {
        let _ = (choice, cfg);
        Err(PoolError::NoEncoder("not built yet".into()))
    }

    /// A sink for one connection's transcoder.
    pub fn sink(self: &Arc<Pool>) -> Box<dyn JobSink> {
        Box::new(PoolSink { pool: self.clone() })
    }

    /// Per worker: its encoder, frames/s, queue depth, encode time, bytes
    /// in and out (for `info-response`, the control socket and metrics).
    pub fn info(&self) -> Value {
        Value::Dict(Vec::new())
    }

    /// Stops the workers (after the shards are done).
    pub fn shutdown(&self) {}
}

struct PoolSink {
    pool: Arc<Pool>,
}

impl JobSink for PoolSink {
    fn submit(&mut self, job: Job) -> Result<(), SubmitError> {
        let _ = &self.pool;
        Err(SubmitError::NoWorker(Box::new(job)))
    }

    fn close(&mut self, key: StreamKey) {
        let _ = key;
    }
}
