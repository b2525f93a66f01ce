//! When the writer and the receipts thread wait for company before running a statement.
//!
//! At a low rate every message is its own statement, and what Postgres pays per
//! statement besides its rows (executor start-up, commit, a WAL flush, a wake-up) is
//! paid per message. Waiting a moment before taking the next lot lets several arrivals
//! share it, but that is worth it only when they are likely to come within the moment.
//! So a `Linger` estimates the arrival rate from the lots it has taken and, on a queue
//! found empty, sleeps only when at least one arrival is expected within its window: a
//! busy site batches, and a quiet one (a laptop) never waits. Sleeping before the
//! arrivals rather than after the first saves a wake-up per lot: no sender has to wake
//! the thread.

use std::time::{Duration, Instant};

use tokio::sync::mpsc;

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

    /// The next request. On a busy queue found empty the thread sleeps first, for as long
    /// as company is expected to take, and takes what came: nobody has to wake it, and
    /// what arrived meanwhile shares a lot (the caller drains the queue next). On a quiet
    /// queue, or when nothing came in that time, it blocks and takes the next arrival at
    /// once. None when every sender has gone.
    pub fn next<T>(&mut self, rx: &mut mpsc::Receiver<T>) -> Option<T> {
        if rx.is_empty() && !rx.is_closed() {
            // The thread is the queue's alone, so a sleep is the cheapest wait.
            std::thread::sleep(self.wait());
        }
        // Takes what is queued at once; blocks only when nothing came.
        rx.blocking_recv()
    }

    /// How long a queue found empty waits before it looks again: long enough for a lot
    /// of `aim` at the rate seen, at most the window; no wait when not even one arrival
    /// is expected within the window. A faster site waits less, since its lots form
    /// anyway.
    fn wait(&self) -> Duration {
        if self.rate * self.window.as_secs_f64() < 1.0 {
            return Duration::ZERO;
        }
        // Sleeping before the arrivals, a lot of `aim` takes `aim` of them to arrive.
        self.window
            .min(Duration::from_secs_f64(self.aim as f64 / self.rate))
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
        assert_eq!(linger.wait(), Duration::ZERO, "nothing seen yet");
        // 100 a second: one expected in 2 ms is 0.2.
        feed(
            &mut linger,
            Instant::now(),
            Duration::from_millis(10),
            1,
            50,
        );
        assert_eq!(linger.wait(), Duration::ZERO);
    }

    #[test]
    fn a_busy_queue_waits_its_window_and_stops_when_traffic_does() {
        let mut linger = Linger::new(WINDOW, 4);
        // 1,000 a second, one at a time.
        let now = feed(&mut linger, Instant::now(), Duration::from_millis(1), 1, 50);
        assert_eq!(linger.wait(), WINDOW);
        // 1,200 a second, three to a lot.
        let now = feed(&mut linger, now, Duration::from_micros(2500), 3, 50);
        assert_eq!(linger.wait(), WINDOW);
        // Then a lone message a second: a few lots and the waits stop.
        feed(&mut linger, now, Duration::from_secs(1), 1, 8);
        assert_eq!(linger.wait(), Duration::ZERO);
    }

    #[test]
    fn a_faster_queue_waits_only_for_its_aim() {
        let mut linger = Linger::new(WINDOW, 4);
        // 10,000 a second: a lot of four comes in about 0.4 ms.
        feed(
            &mut linger,
            Instant::now(),
            Duration::from_micros(100),
            1,
            100,
        );
        let wait = linger.wait();
        assert!(
            wait > Duration::from_micros(350) && wait < Duration::from_micros(450),
            "{wait:?}"
        );
    }

    #[test]
    fn requests_come_in_order_busy_or_quiet_and_none_once_senders_are_gone() {
        for busy in [false, true] {
            let mut linger = Linger::new(WINDOW, 4);
            if busy {
                feed(&mut linger, Instant::now(), Duration::from_millis(1), 1, 50);
                assert_eq!(linger.wait(), WINDOW);
            }
            let (tx, mut rx) = mpsc::channel(8);
            tx.try_send(1).unwrap();
            assert_eq!(linger.next(&mut rx), Some(1), "waiting: none when queued");
            // From another thread while this one waits or blocks on the empty queue.
            let sender = std::thread::spawn(move || {
                tx.blocking_send(2).unwrap();
                tx.blocking_send(3).unwrap();
            });
            assert_eq!(linger.next(&mut rx), Some(2), "busy: {busy}");
            assert_eq!(linger.next(&mut rx), Some(3), "busy: {busy}");
            sender.join().unwrap();
            assert_eq!(linger.next(&mut rx), None, "busy: {busy}");
        }
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
        assert_eq!(linger.wait(), Duration::ZERO);
    }
}
