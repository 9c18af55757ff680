//! The agent as a service: SIGTERM and SIGINT caught on a thread of their own, the
//! wait between checks (which SIGHUP and a stop end), and systemd's notify socket and
//! watchdog, widened to a long step's own bound while it runs.

use std::time::Duration;

use tokio::signal::unix::Signal;
use tracing::warn;

/// Why the wait between checks ended.
pub(super) enum Woke {
    Timer,
    Hangup,
    Stop,
}

/// SIGTERM and SIGINT, caught on a thread of their own: they are seen (and said)
/// while a step runs, even one that blocks the runtime (an init script), and the agent
/// stops once that step ends. Under systemd, a stop during a step asks for the step's
/// bound (`EXTEND_TIMEOUT_USEC`), so the unit's stop timeout does not cut it short.
pub(super) struct Stop {
    shared: std::sync::Arc<StopShared>,
    handle: signal_hook::iterator::Handle,
}

#[derive(Default)]
struct StopShared {
    signal: std::sync::Mutex<Option<&'static str>>,
    busy: std::sync::atomic::AtomicBool,
    woken: tokio::sync::Notify,
}

impl Stop {
    pub(super) fn watch(config: &crate::config::Config) -> std::io::Result<Self> {
        let shared = std::sync::Arc::new(StopShared::default());
        let mut signals = signal_hook::iterator::Signals::new([libc::SIGTERM, libc::SIGINT])?;
        let handle = signals.handle();
        let bound = LongStep::bound(config);
        let seen = shared.clone();
        std::thread::spawn(move || {
            for signal in signals.forever() {
                let name = if signal == libc::SIGINT {
                    "SIGINT"
                } else {
                    "SIGTERM"
                };
                let first = seen
                    .signal
                    .lock()
                    .map(|mut s| s.replace(name).is_none())
                    .unwrap_or(false);
                if first && seen.busy.load(std::sync::atomic::Ordering::SeqCst) {
                    warn!(
                        "{name}: stopping once the step in progress ends (within {})",
                        humantime::format_duration(bound)
                    );
                    let usec = bound.as_micros().to_string();
                    notify(&[sd_notify::NotifyState::Custom(&format!(
                        "EXTEND_TIMEOUT_USEC={usec}"
                    ))]);
                }
                seen.woken.notify_one();
            }
        });
        Ok(Self { shared, handle })
    }

    pub(super) fn requested(&self) -> bool {
        self.seen().requested()
    }

    /// A handle that tells whether a stop was asked for.
    pub(super) fn seen(&self) -> StopSeen {
        StopSeen(self.shared.clone())
    }

    pub(super) fn signal(&self) -> &'static str {
        self.shared
            .signal
            .lock()
            .ok()
            .and_then(|s| *s)
            .unwrap_or("SIGTERM")
    }

    /// Runs `step`, marked as in progress for the signal thread.
    pub(super) async fn busy<T>(&self, step: impl Future<Output = T>) -> T {
        use std::sync::atomic::Ordering;
        self.shared.busy.store(true, Ordering::SeqCst);
        let done = step.await;
        self.shared.busy.store(false, Ordering::SeqCst);
        done
    }
}

/// Whether SIGTERM or SIGINT came, for the steps to look at after a wait.
pub(super) struct StopSeen(std::sync::Arc<StopShared>);

impl StopSeen {
    pub(super) fn requested(&self) -> bool {
        self.0.signal.lock().is_ok_and(|s| s.is_some())
    }
}

impl Drop for Stop {
    fn drop(&mut self) {
        self.handle.close();
    }
}

/// Waits `wait`, pinging the systemd watchdog every `watchdog` meanwhile.
pub(super) async fn wait_for(
    stop: &Stop,
    hangup: &mut Signal,
    wait: Duration,
    watchdog: Option<Duration>,
) -> Woke {
    let until = tokio::time::Instant::now() + wait;
    loop {
        if stop.requested() {
            return Woke::Stop;
        }
        let tick = watchdog.map_or(until, |every| (tokio::time::Instant::now() + every).min(until));
        tokio::select! {
            _ = tokio::time::sleep_until(tick) => {
                if tick >= until {
                    return Woke::Timer;
                }
                notify(&[sd_notify::NotifyState::Watchdog]);
            }
            _ = hangup.recv() => return Woke::Hangup,
            _ = stop.shared.woken.notified() => {}
        }
    }
}

/// While a long step runs (an update, a recovery), the systemd watchdog is given that
/// step's own bound instead of its usual period, and gets it back afterwards: the step
/// cannot ping while it runs an init script.
pub(super) struct LongStep {
    usual: Option<u64>,
}

impl LongStep {
    pub(super) fn start(config: &crate::config::Config) -> Self {
        let mut usual = 0;
        if !sd_notify::watchdog_enabled(false, &mut usual) {
            return Self { usual: None };
        }
        // In microseconds as a u64: the u32 of sd-notify's own variant ends at 71.6 min.
        set_watchdog(Self::bound(config).as_micros());
        Self { usual: Some(usual) }
    }

    /// The longest one step (an update, a recovery) can take: the lock, the pointer and
    /// manifest, the fetch, init and health, then a rollback's init and health.
    pub(super) fn bound(config: &crate::config::Config) -> Duration {
        let health = (config.health.timeout + config.health.interval) * config.health.tries;
        config.deploy.lock_timeout
            + config.store.deadline
            + config.deploy.timeout
            + (config.init.timeout + health) * 2
    }
}

impl Drop for LongStep {
    fn drop(&mut self) {
        if let Some(usual) = self.usual {
            set_watchdog(u128::from(usual));
        }
    }
}

fn set_watchdog(usec: u128) {
    let state = format!("WATCHDOG_USEC={usec}");
    notify(&[
        sd_notify::NotifyState::Custom(&state),
        sd_notify::NotifyState::Watchdog,
    ]);
}

/// Half the watchdog period systemd set, if it set one.
pub(super) fn watchdog() -> Option<Duration> {
    let mut usec = 0;
    sd_notify::watchdog_enabled(false, &mut usec).then(|| Duration::from_micros(usec / 2))
}

/// Tells systemd (when `NOTIFY_SOCKET` is set); a failure is logged, never fatal.
pub(super) fn notify(states: &[sd_notify::NotifyState]) {
    if let Err(err) = sd_notify::notify(false, states) {
        tracing::debug!("sd_notify: {err}");
    }
}
