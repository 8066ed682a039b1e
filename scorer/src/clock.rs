//! Wall-clock time as an input. The scorer's schedule reads the clock only
//! when a partition is idle; tests and the simulator inject their own.

use std::{
    sync::atomic::{AtomicI64, Ordering},
    time::Instant,
};

/// Milliseconds since the Unix epoch, as this process should see them.
pub trait Clock: Send + Sync {
    fn now_ms(&self) -> i64;
}

/// The system clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64)
    }
}

/// Simulated time: starts at `origin_ms` and runs `speed` times faster than
/// real time, so a quickstart shows months of lifecycle in minutes. It never
/// passes the system clock (ingest caps event times at receipt), and runs at
/// real speed once it has caught up.
#[derive(Debug)]
pub struct ScaledClock {
    origin_ms: i64,
    started: Instant,
    speed: f64,
}

impl ScaledClock {
    pub fn new(origin_ms: i64, speed: f64) -> Self {
        Self {
            origin_ms,
            started: Instant::now(),
            speed,
        }
    }
}

impl Clock for ScaledClock {
    fn now_ms(&self) -> i64 {
        let scaled =
            self.origin_ms + (self.started.elapsed().as_secs_f64() * 1000.0 * self.speed) as i64;
        scaled.min(SystemClock.now_ms())
    }
}

/// A clock that moves only when told to (tests).
#[derive(Debug, Default)]
pub struct ManualClock(AtomicI64);

impl ManualClock {
    pub fn new(ms: i64) -> Self {
        Self(AtomicI64::new(ms))
    }
    pub fn set(&self, ms: i64) {
        self.0.store(ms, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> i64 {
        self.0.load(Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn simulated_time_runs_fast_but_never_passes_the_system_clock() {
        let real = SystemClock.now_ms();
        let behind = ScaledClock::new(real - 86_400_000, 1e6);
        std::thread::sleep(std::time::Duration::from_millis(200));
        // 200 ms at a million times real speed is days: caught up, held at real time.
        let t = behind.now_ms();
        assert!(t >= real && t <= SystemClock.now_ms(), "{t} vs {real}");
        let slow = ScaledClock::new(real - 86_400_000, 1.0);
        assert!(
            slow.now_ms() < real,
            "a day behind stays behind at real speed"
        );
    }
}
