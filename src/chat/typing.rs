//! `typing` is throttled where it enters, so a room's members never pay for one
//! member's flood: per user and conversation, at most one "typing" per interval is
//! relayed, plus each change back to "not typing". The rest are dropped quietly (the
//! sender still gets `ok`). The price: someone who stops and starts again within the
//! interval shows as not typing until their next "typing", which clients resend while
//! typing goes on.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How often stale entries are dropped.
const SWEEP_EVERY: Duration = Duration::from_secs(30);
/// A "typing" never followed by "not typing" is forgotten after this long; a stop that
/// comes later is dropped, and clients' indicators have long timed out by then.
const FORGET_TYPING_AFTER: Duration = Duration::from_secs(300);

#[derive(Debug, Clone, Copy)]
struct Last {
    /// What the conversation was last told of this user.
    typing: bool,
    /// When it was last told "typing".
    typing_at: Instant,
}

struct State {
    /// topic -> user -> what was relayed last.
    topics: HashMap<Box<str>, HashMap<Box<str>, Last>>,
    swept_at: Instant,
}

pub struct TypingGate {
    interval: Duration,
    state: Mutex<State>,
}

impl TypingGate {
    /// `interval` zero relays everything.
    pub fn new(interval: Duration) -> TypingGate {
        TypingGate {
            interval,
            state: Mutex::new(State {
                topics: HashMap::new(),
                swept_at: Instant::now(),
            }),
        }
    }

    /// Whether `user`'s `typing` in `topic` is relayed; records it when it is.
    pub fn pass(&self, topic: &str, user: &str, typing: bool, now: Instant) -> bool {
        if self.interval.is_zero() {
            return true;
        }
        // Each update is one insert or overwrite: consistent if poisoned.
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if now.saturating_duration_since(state.swept_at) >= SWEEP_EVERY {
            self.sweep(&mut state, now);
        }
        let last = state
            .topics
            .get_mut(topic)
            .and_then(|users| users.get_mut(user));
        match (last, typing) {
            (Some(last), true) => {
                if now.saturating_duration_since(last.typing_at) < self.interval {
                    return false;
                }
                *last = Last {
                    typing: true,
                    typing_at: now,
                };
                true
            }
            (Some(last), false) => {
                let changed = last.typing;
                last.typing = false;
                changed
            }
            // Nothing was said of this user here: "not typing" changes nothing.
            (None, false) => false,
            (None, true) => {
                state.topics.entry(topic.into()).or_default().insert(
                    user.into(),
                    Last {
                        typing: true,
                        typing_at: now,
                    },
                );
                true
            }
        }
    }

    /// Drops what no longer changes a verdict: stops older than the interval (an absent
    /// entry decides the same), and typing never stopped.
    fn sweep(&self, state: &mut State, now: Instant) {
        let interval = self.interval;
        state.topics.retain(|_, users| {
            users.retain(|_, last| {
                let age = now.saturating_duration_since(last.typing_at);
                if last.typing {
                    age < FORGET_TYPING_AFTER
                } else {
                    age < interval
                }
            });
            !users.is_empty()
        });
        state.swept_at = now;
    }

    /// (user, conversation) pairs remembered.
    #[cfg(test)]
    fn remembered(&self) -> usize {
        let state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        state.topics.values().map(HashMap::len).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: Duration = Duration::from_secs(1);

    #[test]
    fn one_typing_per_interval_and_every_stop_after_it() {
        let gate = TypingGate::new(SECOND);
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        assert!(gate.pass("room:r", "u", true, at(0)));
        assert!(
            !gate.pass("room:r", "u", true, at(10)),
            "a repeat within the interval"
        );
        assert!(
            gate.pass("room:r", "u", false, at(20)),
            "the stop is a change"
        );
        assert!(
            !gate.pass("room:r", "u", false, at(30)),
            "a second stop is not"
        );
        assert!(
            !gate.pass("room:r", "u", true, at(40)),
            "still within the interval"
        );
        assert!(gate.pass("room:r", "u", true, at(1000)));
        assert!(
            gate.pass("room:r", "other", true, at(1000)),
            "users are apart"
        );
        assert!(
            gate.pass("room:s", "u", true, at(1000)),
            "conversations are apart"
        );
        assert!(
            !gate.pass("chat:a:b", "u", false, at(1000)),
            "a stop with no start"
        );
    }

    #[test]
    fn a_flood_relays_about_one_typing_a_second() {
        let gate = TypingGate::new(SECOND);
        let t0 = Instant::now();
        // 30,000 alternating frames over ten seconds.
        let relayed = (0..30_000u64)
            .filter(|i| {
                let now = t0 + Duration::from_micros(i * 333);
                gate.pass("room:r", "flooder", i % 2 == 0, now)
            })
            .count();
        assert!((10..=22).contains(&relayed), "{relayed} relayed");
    }

    #[test]
    fn zero_relays_everything() {
        let gate = TypingGate::new(Duration::ZERO);
        let t0 = Instant::now();
        assert!((0..100).all(|_| gate.pass("room:r", "u", true, t0)));
    }

    #[test]
    fn stale_entries_are_swept() {
        let gate = TypingGate::new(SECOND);
        let t0 = Instant::now();
        for user in 0..100 {
            let user = format!("u{user}");
            gate.pass("room:r", &user, true, t0);
            gate.pass("room:r", &user, false, t0);
        }
        gate.pass("room:r", "still-typing", true, t0);
        assert_eq!(gate.remembered(), 101);
        gate.pass("room:s", "later", true, t0 + SWEEP_EVERY);
        assert_eq!(
            gate.remembered(),
            2,
            "stopped users went; typing and new stay"
        );
    }
}
