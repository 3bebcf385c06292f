//! Shard-local stop signal: one flag, any number of waiters, no locks.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

/// Set once; every `stopped()` future then completes.
#[derive(Default)]
pub struct StopSignal {
    set: Cell<bool>,
    waiters: RefCell<Vec<Waker>>,
}

impl StopSignal {
    pub fn new() -> Rc<StopSignal> {
        Rc::new(StopSignal::default())
    }

    pub fn set(&self) {
        self.set.set(true);
        for w in self.waiters.borrow_mut().drain(..) {
            w.wake();
        }
    }

    /// Completes once the signal is set.
    pub fn stopped(self: &Rc<Self>) -> Stopped {
        Stopped(self.clone())
    }
}

pub struct Stopped(Rc<StopSignal>);

impl Future for Stopped {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.0.set.get() {
            return Poll::Ready(());
        }
        let mut waiters = self.0.waiters.borrow_mut();
        if !waiters.iter().any(|w| w.will_wake(cx.waker())) {
            waiters.push(cx.waker().clone());
        }
        Poll::Pending
    }
}
