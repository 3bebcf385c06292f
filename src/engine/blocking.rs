//! The blocking pool: one for the whole process, shared by every shard.
//!
//! Auth modules (files, sqlite, PAM, `exec`), session discovery, name
//! resolution, `getpwnam` and `--html` file reads block. They never run on
//! a shard thread, and never one blocking thread per shard either (one slow
//! `exec` would hold up every login on that shard): they go to a pool of up
//! to `threads` threads, and at most `queue` jobs may be in the pool at
//! once (running or waiting). Past that a job is refused at once with
//! [`BlockingError::Busy`], which the caller turns into a clear refusal.

use std::sync::Arc;

use tokio::sync::Semaphore;

/// Why a blocking job did not run to completion.
#[derive(Debug, thiserror::Error)]
pub enum BlockingError {
    #[error("the server is busy (too many pending blocking jobs); try again")]
    Busy,
    #[error("a blocking job panicked")]
    Panicked,
    #[error("the server is stopping")]
    Stopping,
}

impl From<BlockingError> for crate::proxy::ConnError {
    fn from(e: BlockingError) -> Self {
        match e {
            BlockingError::Stopping => crate::proxy::ConnError::Stopping,
            other => crate::proxy::ConnError::Busy(other.to_string()),
        }
    }
}

/// A handle to the pool; cheap to clone, usable from any shard.
#[derive(Debug, Clone)]
pub struct Blocking {
    handle: tokio::runtime::Handle,
    permits: Arc<Semaphore>,
}

/// Owns the pool's threads (kept by the `Server`, on the main thread: a
/// runtime may not be dropped inside another one).
#[derive(Debug)]
pub struct BlockingPool {
    runtime: tokio::runtime::Runtime,
    handle: Blocking,
}

impl BlockingPool {
    pub fn new(threads: usize, queue: usize) -> std::io::Result<BlockingPool> {
        // A runtime used only for its blocking pool: nothing is ever
        // scheduled on its (idle) core thread.
        let runtime = tokio::runtime::Builder::new_current_thread()
            .max_blocking_threads(threads.max(1))
            .thread_name("xfwd-blocking")
            .build()?;
        let handle = Blocking {
            handle: runtime.handle().clone(),
            permits: Arc::new(Semaphore::new(queue.max(1))),
        };
        Ok(BlockingPool { runtime, handle })
    }

    pub fn handle(&self) -> Blocking {
        self.handle.clone()
    }

    /// Stops taking jobs; running ones finish on their own threads.
    pub fn shutdown(self) {
        self.handle.permits.close();
        self.runtime.shutdown_background();
    }
}

impl Blocking {
    /// Runs `f` on the pool and waits for its result.
    pub async fn run<F, T>(&self, f: F) -> Result<T, BlockingError>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        let permit = match self.permits.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(tokio::sync::TryAcquireError::NoPermits) => return Err(BlockingError::Busy),
            Err(tokio::sync::TryAcquireError::Closed) => return Err(BlockingError::Stopping),
        };
        let job = self.handle.spawn_blocking(move || {
            let out = f();
            drop(permit);
            out
        });
        job.await.map_err(|e| {
            if e.is_panic() {
                BlockingError::Panicked
            } else {
                BlockingError::Stopping
            }
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::sync::mpsc;
    use std::time::Duration;

    fn shard() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    #[test]
    fn a_slow_job_does_not_hold_up_the_next() {
        let pool = BlockingPool::new(4, 16).unwrap();
        let b = pool.handle();
        let rt = shard();
        let (tx, rx) = mpsc::channel::<()>();
        rt.block_on(async {
            // A job that blocks until told to end.
            let slow = {
                let b = b.clone();
                tokio::spawn(async move { b.run(move || rx.recv().is_ok()).await })
            };
            // Another job completes meanwhile.
            let fast = tokio::time::timeout(Duration::from_secs(10), b.run(|| 7)).await;
            assert_eq!(fast.unwrap().unwrap(), 7);
            tx.send(()).unwrap();
            assert!(slow.await.unwrap().unwrap());
        });
        pool.shutdown();
    }

    #[test]
    fn a_full_pool_refuses_at_once() {
        let pool = BlockingPool::new(1, 2).unwrap();
        let b = pool.handle();
        let rt = shard();
        let (tx, rx) = mpsc::channel::<()>();
        let rx = std::sync::Arc::new(std::sync::Mutex::new(rx));
        rt.block_on(async {
            let mut held = Vec::new();
            for _ in 0..2 {
                let b = b.clone();
                let rx = rx.clone();
                held.push(tokio::spawn(async move {
                    b.run(move || {
                        let _ = rx.lock().unwrap().recv();
                    })
                    .await
                }));
            }
            // Let both take their permits.
            tokio::time::sleep(Duration::from_millis(50)).await;
            assert!(matches!(b.run(|| ()).await, Err(BlockingError::Busy)));
            tx.send(()).unwrap();
            tx.send(()).unwrap();
            for h in held {
                h.await.unwrap().unwrap();
            }
            // Permits come back.
            b.run(|| ()).await.unwrap();
        });
        pool.shutdown();
    }

    #[test]
    fn a_panicking_job_is_an_error_not_a_crash() {
        let pool = BlockingPool::new(1, 2).unwrap();
        let b = pool.handle();
        let r = shard().block_on(async { b.run(|| -> u8 { panic!("boom") }).await });
        assert!(matches!(r, Err(BlockingError::Panicked)));
        pool.shutdown();
    }
}
