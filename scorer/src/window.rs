//! Event-time bucketed counters of the windowed signals: 24 hourly buckets
//! (the last day) and 32 daily buckets (the last 30 days and 7 days). Rings
//! indexed by absolute bucket number; every signal shares the same heads.
//! O(1) per event, fixed memory per lead (296 bytes).
//!
//! Only the signals the model reads as counts are windowed; the rarer
//! high-intent ones (test drive, lead form, showroom) live in the decayed
//! intent instead, which keeps every lead's state small.

use crate::{DAY_MS, HOUR_MS, event::Signal};

/// The signals counted in windows, in slot order.
pub const WINDOWED: [Signal; 5] = [
    Signal::PageView,
    Signal::ModelDetail,
    Signal::Configurator,
    Signal::PriceFinance,
    Signal::Engagement,
];
const SIGNALS: usize = WINDOWED.len();
const NH: usize = 24;
const ND: usize = 32;

fn slot(signal: Signal) -> Option<usize> {
    WINDOWED.iter().position(|s| *s == signal)
}

/// Window lengths reported as features.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Span {
    Day,
    Week,
    Month,
}

impl Span {
    pub const ALL: [Span; 3] = [Span::Day, Span::Week, Span::Month];
    pub fn code(self) -> &'static str {
        match self {
            Span::Day => "24h",
            Span::Week => "7d",
            Span::Month => "30d",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Ring<const N: usize> {
    /// Absolute index (time / bucket length) of the newest bucket.
    head: i64,
    counts: [[u8; N]; SIGNALS],
}

impl<const N: usize> Ring<N> {
    fn new() -> Self {
        Self {
            head: i64::MIN,
            counts: [[0; N]; SIGNALS],
        }
    }

    /// Moves the head forward to `bucket`, clearing what falls out.
    fn advance(&mut self, bucket: i64) {
        if self.head == i64::MIN || bucket - self.head >= N as i64 {
            self.counts = [[0; N]; SIGNALS];
        } else {
            for b in self.head + 1..=bucket {
                let slot = b.rem_euclid(N as i64) as usize;
                for s in &mut self.counts {
                    s[slot] = 0;
                }
            }
        }
        self.head = bucket;
    }

    /// Counts an event in `bucket`; too-old buckets are not in this ring.
    fn add(&mut self, signal: usize, bucket: i64) {
        if bucket > self.head {
            self.advance(bucket);
        }
        if self.head - bucket < N as i64 {
            let slot = bucket.rem_euclid(N as i64) as usize;
            self.counts[signal][slot] = self.counts[signal][slot].saturating_add(1);
        }
    }

    /// Adds `other`'s counts (a merged lead's) into this ring.
    fn merge(&mut self, other: &Self) {
        if other.head == i64::MIN {
            return;
        }
        if other.head > self.head {
            self.advance(other.head);
        }
        for b in other.head - N as i64 + 1..=other.head {
            if self.head - b >= N as i64 {
                continue;
            }
            let slot = b.rem_euclid(N as i64) as usize;
            for (mine, theirs) in self.counts.iter_mut().zip(&other.counts) {
                mine[slot] = mine[slot].saturating_add(theirs[slot]);
            }
        }
    }

    /// Head then counts, signal-major: the snapshot encoding.
    fn write(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.head.to_le_bytes());
        for s in &self.counts {
            out.extend_from_slice(s);
        }
    }

    /// Reads a ring written with `rows` signals; `pick[i]` is the row
    /// that holds slot i (the layout before the windowed set was narrowed
    /// had a row for every signal).
    fn read<'a>(bytes: &'a [u8], rows: usize, pick: &[usize; SIGNALS]) -> Option<(Self, &'a [u8])> {
        let need = 8 + N * rows;
        if bytes.len() < need {
            return None;
        }
        let head = i64::from_le_bytes(bytes[..8].try_into().ok()?);
        let mut counts = [[0; N]; SIGNALS];
        for (s, row) in counts.iter_mut().zip(pick) {
            s.copy_from_slice(&bytes[8 + row * N..8 + (row + 1) * N]);
        }
        Some((Self { head, counts }, &bytes[need..]))
    }

    /// Sum of the `k` buckets ending at `now_bucket`.
    fn sum(&self, signal: usize, now_bucket: i64, k: usize) -> u32 {
        if self.head == i64::MIN {
            return 0; // nothing counted yet (e.g. a lead with only identify calls)
        }
        let first = now_bucket - k as i64 + 1;
        let lo = first.max(self.head - N as i64 + 1);
        let hi = now_bucket.min(self.head);
        (lo..=hi)
            .map(|b| u32::from(self.counts[signal][b.rem_euclid(N as i64) as usize]))
            .sum()
    }
}

/// All windows of one lead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Windows {
    hourly: Ring<NH>,
    daily: Ring<ND>,
}

impl Default for Windows {
    fn default() -> Self {
        Self {
            hourly: Ring::new(),
            daily: Ring::new(),
        }
    }
}

/// Snapshot length of the layout before the windowed set was narrowed:
/// 12 five-minute, 24 hourly and 32 daily buckets for all 8 signals.
const LEGACY_LEN: usize = 3 * 8 + (12 + NH + ND) * 8;

impl Windows {
    /// Counts `signal` at `ts_ms`; signals that are not windowed are ignored.
    pub fn add(&mut self, signal: Signal, ts_ms: i64) {
        if let Some(i) = slot(signal) {
            self.hourly.add(i, ts_ms.div_euclid(HOUR_MS));
            self.daily.add(i, ts_ms.div_euclid(DAY_MS));
        }
    }

    /// Folds a merged lead's windows into these.
    pub fn merge(&mut self, other: &Windows) {
        self.hourly.merge(&other.hourly);
        self.daily.merge(&other.daily);
    }

    /// Fixed-size binary form for state snapshots.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(16 + (NH + ND) * SIGNALS);
        self.hourly.write(&mut out);
        self.daily.write(&mut out);
        out
    }

    /// Inverse of [`Windows::to_bytes`]; also reads snapshots written
    /// before the windowed set was narrowed. `None` when the bytes fit
    /// neither layout.
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        let current: [usize; SIGNALS] = std::array::from_fn(|i| i);
        let (bytes, rows, pick) = if bytes.len() == LEGACY_LEN {
            // Skip the five-minute ring; rows are indexed by Signal.
            (&bytes[8 + 12 * 8..], 8, WINDOWED.map(|s| s.index()))
        } else {
            (bytes, SIGNALS, current)
        };
        let (hourly, rest) = Ring::read(bytes, rows, &pick)?;
        let (daily, rest) = Ring::read(rest, rows, &pick)?;
        rest.is_empty().then_some(Self { hourly, daily })
    }

    /// Events of `signal` in the window ending at `now_ms` (bucket-aligned:
    /// the current bucket counts whole); 0 for a signal not windowed.
    pub fn count(&self, signal: Signal, span: Span, now_ms: i64) -> u32 {
        let Some(i) = slot(signal) else {
            return 0;
        };
        match span {
            Span::Day => self.hourly.sum(i, now_ms.div_euclid(HOUR_MS), NH),
            Span::Week => self.daily.sum(i, now_ms.div_euclid(DAY_MS), 7),
            Span::Month => self.daily.sum(i, now_ms.div_euclid(DAY_MS), 30),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: i64 = 1_795_305_600_000; // a midnight UTC

    #[test]
    fn counts_per_window_slide_with_event_time() {
        let mut w = Windows::default();
        w.add(Signal::Configurator, T0);
        w.add(Signal::Configurator, T0 + 10 * 60_000);
        w.add(Signal::Configurator, T0 + 3 * DAY_MS);
        let now = T0 + 3 * DAY_MS;
        let c = |span, now| w.count(Signal::Configurator, span, now);
        assert_eq!(c(Span::Day, now), 1);
        assert_eq!(c(Span::Week, now), 3);
        assert_eq!(c(Span::Month, now), 3);
        assert_eq!(
            c(Span::Week, now + 5 * DAY_MS),
            1,
            "the first two fell out of the week"
        );
        assert_eq!(c(Span::Month, now + 40 * DAY_MS), 0);
        assert_eq!(w.count(Signal::TestDrive, Span::Month, now), 0);
        assert_eq!(
            Windows::default().count(Signal::PageView, Span::Week, now),
            0,
            "empty rings"
        );
    }

    #[test]
    fn late_events_land_in_their_own_bucket() {
        let mut w = Windows::default();
        w.add(Signal::PageView, T0 + 2 * HOUR_MS);
        w.add(Signal::PageView, T0 + 30 * 60_000); // 90 minutes late
        let now = T0 + 2 * HOUR_MS;
        assert_eq!(w.count(Signal::PageView, Span::Day, now), 2);
        w.add(Signal::PageView, T0 - 40 * DAY_MS); // older than every ring
        assert_eq!(w.count(Signal::PageView, Span::Month, now), 2);
    }

    #[test]
    fn merged_windows_count_both_leads_and_round_trip_as_bytes() {
        let mut a = Windows::default();
        a.add(Signal::Configurator, T0);
        a.add(Signal::PageView, T0 + 2 * DAY_MS);
        let mut b = Windows::default();
        b.add(Signal::Configurator, T0 + DAY_MS + 10 * 60_000);
        b.add(Signal::Configurator, T0 - 40 * DAY_MS);
        a.merge(&b);
        let now = T0 + 2 * DAY_MS;
        assert_eq!(a.count(Signal::Configurator, Span::Week, now), 2);
        assert_eq!(a.count(Signal::Configurator, Span::Day, now), 0);
        assert_eq!(a.count(Signal::PageView, Span::Day, now), 1);
        assert_eq!(Windows::from_bytes(&a.to_bytes()), Some(a.clone()));
        assert_eq!(Windows::from_bytes(&a.to_bytes()[1..]), None);
    }

    /// A changelog written by the release before the windowed set was
    /// narrowed restores with the same counts.
    #[test]
    fn snapshots_of_the_older_layout_still_restore() {
        let mut legacy = Vec::new();
        for (n, head) in [(12usize, 5i64), (NH, T0 / HOUR_MS), (ND, T0 / DAY_MS)] {
            legacy.extend_from_slice(&head.to_le_bytes());
            for signal in Signal::ALL {
                // Bucket of `head` holds the signal's index + 1.
                let mut row = vec![0u8; n];
                row[head.rem_euclid(n as i64) as usize] = signal.index() as u8 + 1;
                legacy.extend_from_slice(&row);
            }
        }
        assert_eq!(legacy.len(), LEGACY_LEN);
        let w = Windows::from_bytes(&legacy).unwrap();
        for s in WINDOWED {
            assert_eq!(w.count(s, Span::Day, T0), s.index() as u32 + 1, "{s:?}");
            assert_eq!(w.count(s, Span::Month, T0), s.index() as u32 + 1, "{s:?}");
        }
        assert_eq!(
            w.count(Signal::TestDrive, Span::Month, T0),
            0,
            "not windowed"
        );
    }

    #[test]
    fn a_long_gap_clears_every_ring() {
        let mut w = Windows::default();
        for i in 0..300 {
            w.add(Signal::PageView, T0 + i);
        }
        assert_eq!(
            w.count(Signal::PageView, Span::Day, T0),
            255,
            "saturates instead of wrapping"
        );
        w.add(Signal::PageView, T0 + 400 * DAY_MS);
        assert_eq!(w.count(Signal::PageView, Span::Month, T0 + 400 * DAY_MS), 1);
    }
}
