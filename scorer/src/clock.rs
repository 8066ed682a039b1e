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
/// real time, so a quickstart shows months of lifecycle in minutes.
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
        self.origin_ms + (self.started.elapsed().as_secs_f64() * 1000.0 * self.speed) as i64
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
