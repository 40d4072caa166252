//! The worker's life as named phases that every part can watch or join.
//!
//! A worker is [`Phase::Ready`] until it is told to stop; it then goes through the other
//! phases in their order, never back:
//!
//! ```text
//!  Ready ─▶ Draining ─▶ Closing ─▶ Leaving ─▶ Offline ─▶ Stopped
//! ```
//!
//! The phase is published on a `tokio::sync::watch` channel. [`Lifecycle`] holds the
//! sending side and the shutdown sequence; a part gets what concerns it:
//!
//! - a part that only needs to know where the worker is (`/readyz`, the heartbeat's
//!   `draining` state, later a blocking playlist request that must return before the HTTP
//!   listener closes) keeps a [`PhaseWatch`] and reads [`PhaseWatch::phase`] or awaits
//!   [`PhaseWatch::reached`];
//! - a part that runs until told to stop takes the token of the phase that stops it
//!   ([`Lifecycle::stop_at`]) and, if the next phase must wait for it to finish, joins that
//!   phase with its task ([`Lifecycle::wait_at`]) and a bound.
//!
//! [`Lifecycle::shut_down`] then enters each phase in turn: it publishes the phase, cancels
//! that phase's tokens, and waits for what joined it (each part at most its bound, all of
//! them at once) before it enters the next. A new part joins a phase where it is wired; the
//! sequence itself does not change.
#![deny(missing_docs)]

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::warn;

/// Where the worker is in its life. Phases are ordered: a later phase compares greater.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Phase {
    /// Serving: `/readyz` answers 200 and publishers are admitted.
    Ready,
    /// Told to stop: `/readyz` answers 503, the heartbeat reports the worker draining and new
    /// publishers are refused; live publishers get the drain timeout to finish or move, then
    /// are closed right after their next segment is cut.
    Draining,
    /// Ingest closes the connections left and flushes their last segments.
    Closing,
    /// The worker leaves the cluster: the sweeper and the change listener stop, the
    /// heartbeat removes this worker's record.
    Leaving,
    /// HTTP stops: no new connections, the open ones finish.
    Offline,
    /// Nothing is served any more; what parts still hold (the webhook queues) goes out, then
    /// the worker exits.
    Stopped,
}

impl Phase {
    /// Every phase, in the order the worker goes through them.
    pub const ALL: [Phase; 6] = [
        Phase::Ready,
        Phase::Draining,
        Phase::Closing,
        Phase::Leaving,
        Phase::Offline,
        Phase::Stopped,
    ];

    /// The phase's name, lower case (for logs).
    pub fn name(self) -> &'static str {
        match self {
            Phase::Ready => "ready",
            Phase::Draining => "draining",
            Phase::Closing => "closing",
            Phase::Leaving => "leaving",
            Phase::Offline => "offline",
            Phase::Stopped => "stopped",
        }
    }

    /// The position of the phase in [`Phase::ALL`].
    fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A part's view of the phase: cheap to clone, one per part.
///
/// When the [`Lifecycle`] is gone (the worker returned from its run), the watch keeps the
/// last phase it saw and [`PhaseWatch::reached`] returns at once: nothing will move the
/// worker any further.
#[derive(Debug, Clone)]
pub struct PhaseWatch {
    rx: watch::Receiver<Phase>,
}

impl PhaseWatch {
    /// The phase the worker is in now.
    pub fn phase(&self) -> Phase {
        *self.rx.borrow()
    }

    /// Whether the worker is still [`Phase::Ready`].
    pub fn is_ready(&self) -> bool {
        self.phase() == Phase::Ready
    }

    /// Returns once the worker has entered `phase` or a later one (at once if it already
    /// has, or if the lifecycle is gone).
    pub async fn reached(&self, phase: Phase) {
        let mut rx = self.rx.clone();
        // An error means the sender is gone: no later phase can come, so stop waiting.
        let _ = rx.wait_for(|now| *now >= phase).await;
    }
}

/// What a phase waits for before the next one is entered.
type Done = Pin<Box<dyn Future<Output = ()> + Send>>;

/// One part that joined a phase ([`Lifecycle::wait_at`]).
struct Wait {
    phase: Phase,
    part: &'static str,
    bound: Option<Duration>,
    done: Done,
}

/// The sending side of the phase and the shutdown sequence (the server holds it).
pub struct Lifecycle {
    tx: watch::Sender<Phase>,
    /// One token per phase, in [`Phase::ALL`]'s order, cancelled when the phase is entered.
    stops: [CancellationToken; Phase::ALL.len()],
    waits: Vec<Wait>,
}

impl Default for Lifecycle {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for Lifecycle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Lifecycle")
            .field("phase", &*self.tx.borrow())
            .field("waits", &self.waits.len())
            .finish()
    }
}

impl Lifecycle {
    /// A worker in [`Phase::Ready`], with nothing joined yet.
    pub fn new() -> Self {
        Self {
            tx: watch::Sender::new(Phase::Ready),
            stops: Default::default(),
            waits: Vec::new(),
        }
    }

    /// A view of the phase for a part (it sees the current phase at once, however late it
    /// subscribes).
    pub fn watch(&self) -> PhaseWatch {
        PhaseWatch {
            rx: self.tx.subscribe(),
        }
    }

    /// The phase the worker is in now.
    pub fn phase(&self) -> Phase {
        *self.tx.borrow()
    }

    /// A token cancelled when the worker enters `phase`: the stop signal of a part that
    /// runs until told to stop.
    pub fn stop_at(&self, phase: Phase) -> CancellationToken {
        self.stops[phase.index()].child_token()
    }

    /// Makes `phase` wait for `done` (at most `bound`; `None` for a part that bounds its own
    /// end) before the next phase is entered. `done` is first polled when `phase` is
    /// entered, so it can be the work the phase does as well as the handle of a task told
    /// to stop at `phase`. Everything that joined a phase is awaited at once.
    pub fn wait_at(
        &mut self,
        phase: Phase,
        part: &'static str,
        bound: Option<Duration>,
        done: impl Future<Output = ()> + Send + 'static,
    ) {
        self.waits.push(Wait {
            phase,
            part,
            bound,
            done: Box::pin(done),
        });
    }

    /// Enters `phase` if the worker is not in it or past it yet (phases only go forward):
    /// publishes it and cancels its tokens and those of the phases it skips. Returns whether
    /// the phase changed. It does not wait for anything: [`Lifecycle::shut_down`] does.
    pub fn enter(&self, phase: Phase) -> bool {
        let entered = self.tx.send_if_modified(|now| {
            if phase > *now {
                *now = phase;
                true
            } else {
                false
            }
        });
        for stop in &self.stops[..=phase.index()] {
            stop.cancel();
        }
        entered
    }

    /// Goes through every phase after the current one in order: enters it, then waits for
    /// what joined it. Returns once [`Phase::Stopped`]'s parts are done.
    pub async fn shut_down(mut self) {
        let mut waits = std::mem::take(&mut self.waits);
        for phase in Phase::ALL {
            if phase <= self.phase() {
                continue;
            }
            self.enter(phase);
            let (now, later) = waits.into_iter().partition(|w| w.phase <= phase);
            waits = later;
            join(now).await;
        }
    }
}

/// Awaits every wait at once, each at most its bound; says which ones overran.
async fn join(waits: Vec<Wait>) {
    let mut set = tokio::task::JoinSet::new();
    for w in waits {
        set.spawn(async move {
            let Some(bound) = w.bound else {
                w.done.await;
                return;
            };
            if tokio::time::timeout(bound, w.done).await.is_err() {
                warn!(
                    phase = %w.phase,
                    "shutdown: {} did not finish in {} s",
                    w.part,
                    bound.as_secs_f64()
                );
            }
        });
    }
    while set.join_next().await.is_some() {}
}

#[cfg(test)]
mod tests;
