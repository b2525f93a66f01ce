//! When the writer and the receipts thread wait for company before running a statement.
//!
//! At a low rate every message is its own statement, and what Postgres pays per
//! statement besides its rows (executor start-up, commit, a WAL flush, a wake-up) is
//! paid per message. Waiting a moment after a lone arrival lets others join its lot,
//! but that is worth it only when others are likely to come within the moment. So a
//! `Linger` estimates the arrival rate from the lots it has taken and waits only when at
//! least one more arrival is expected within its window: a busy site batches, and a quiet
//! one (a laptop) never waits.

use std::time::{Duration, Instant};

use tokio::sync::mpsc::{self, error::TryRecvError};

/// Weight of the newest lot in the arrival rate.
const SMOOTHING: f64 = 0.25;

pub struct Linger {
    window: Duration,
    /// The lot a wait aims for.
    aim: usize,
    /// Arrivals per second, smoothed over lots.
    rate: f64,
    last_take: Option<Instant>,
}

impl Linger {
    /// Waits at most `window` (zero never waits), for about `aim` arrivals in a lot.
    pub fn new(window: Duration, aim: usize) -> Linger {
        Linger {
            window,
            aim,
            rate: 0.0,
            last_take: None,
        }
    }

    /// The next request. One that finds the queue empty waits for company when company
    /// is expected, so that the caller's following drain of the queue finds it. None
    /// when every sender has gone.
    pub fn next<T>(&mut self, rx: &mut mpsc::Receiver<T>) -> Option<T> {
        match rx.try_recv() {
            Ok(request) => Some(request),
            Err(TryRecvError::Disconnected) => None,
            Err(TryRecvError::Empty) => {
                let idle_since = Instant::now();
                let request = rx.blocking_recv()?;
                let wait = self.wait(idle_since.elapsed());
                // The thread is the queue's alone, so a sleep is the cheapest wait.
                if !wait.is_zero() {
                    std::thread::sleep(wait);
                }
                Some(request)
            }
        }
    }

    /// How long a lone arrival, after the queue stood empty for `idle`, waits: long
    /// enough for a lot of `aim` at the rate seen, at most the window. A faster site
    /// waits less, since its lots form anyway. A queue that stood empty longer than the
    /// window says the rate seen is past (a burst that ended): no wait.
    fn wait(&self, idle: Duration) -> Duration {
        if idle > self.window || self.rate * self.window.as_secs_f64() < 1.0 {
            return Duration::ZERO;
        }
        self.window.min(Duration::from_secs_f64(
            self.aim.saturating_sub(1) as f64 / self.rate,
        ))
    }

    /// Arrivals per second, as seen over the last lots.
    pub fn rate(&self) -> f64 {
        self.rate
    }

    /// Tells of a lot of `len` requests taken at `now`: it arrived since the last.
    pub fn took(&mut self, len: usize, now: Instant) {
        if let Some(last) = self.last_take.replace(now) {
            let since = now.saturating_duration_since(last).as_secs_f64().max(1e-6);
            self.rate = SMOOTHING * (len as f64 / since) + (1.0 - SMOOTHING) * self.rate;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WINDOW: Duration = Duration::from_millis(2);
    /// How long a busy queue stands empty before the next arrival.
    const BUSY: Duration = Duration::from_micros(500);

    /// Lots of `len` every `every`, `count` times, starting at `start`.
    fn feed(
        linger: &mut Linger,
        start: Instant,
        every: Duration,
        len: usize,
        count: u32,
    ) -> Instant {
        let mut now = start;
        for _ in 0..count {
            now += every;
            linger.took(len, now);
        }
        now
    }

    #[test]
    fn a_quiet_queue_never_waits() {
        let mut linger = Linger::new(WINDOW, 4);
        assert_eq!(linger.wait(BUSY), Duration::ZERO, "nothing seen yet");
        // 100 a second: one expected in 2 ms is 0.2.
        feed(
            &mut linger,
            Instant::now(),
            Duration::from_millis(10),
            1,
            50,
        );
        assert_eq!(linger.wait(BUSY), Duration::ZERO);
    }

    #[test]
    fn a_busy_queue_waits_its_window_and_stops_when_traffic_does() {
        let mut linger = Linger::new(WINDOW, 4);
        // 1,000 a second, one at a time.
        let now = feed(&mut linger, Instant::now(), Duration::from_millis(1), 1, 50);
        assert_eq!(linger.wait(BUSY), WINDOW);
        // 1,200 a second, three to a lot.
        let now = feed(&mut linger, now, Duration::from_micros(2500), 3, 50);
        assert_eq!(linger.wait(BUSY), WINDOW);
        // Then a lone message a second: a few lots and the waits stop.
        feed(&mut linger, now, Duration::from_secs(1), 1, 8);
        assert_eq!(linger.wait(BUSY), Duration::ZERO);
    }

    #[test]
    fn a_faster_queue_waits_only_for_its_aim() {
        let mut linger = Linger::new(WINDOW, 4);
        // 10,000 a second: three more come in about 0.3 ms.
        feed(
            &mut linger,
            Instant::now(),
            Duration::from_micros(100),
            1,
            100,
        );
        let wait = linger.wait(BUSY);
        assert!(
            wait > Duration::from_micros(250) && wait < Duration::from_micros(350),
            "{wait:?}"
        );
    }

    #[test]
    fn after_a_burst_a_queue_that_stood_empty_does_not_wait() {
        let mut linger = Linger::new(WINDOW, 32);
        // 50 at once, 1 ms after the lot before: the rate seen is high.
        feed(&mut linger, Instant::now(), Duration::from_millis(1), 50, 3);
        assert!(
            linger.wait(BUSY) > Duration::ZERO,
            "right after it, company is expected"
        );
        // The next comes a second later: the burst is over, it goes at once.
        assert_eq!(linger.wait(Duration::from_secs(1)), Duration::ZERO);
    }

    #[test]
    fn a_zero_window_never_waits() {
        let mut linger = Linger::new(Duration::ZERO, 4);
        feed(
            &mut linger,
            Instant::now(),
            Duration::from_micros(100),
            10,
            50,
        );
        assert_eq!(linger.wait(BUSY), Duration::ZERO);
    }
}
