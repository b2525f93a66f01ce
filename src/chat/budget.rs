//! What a client may cost: every push draws from a per-user budget.
//!
//! Three token buckets per user, over all the user's connections on this replica:
//! messages (writes others see), joins (each runs a history or summary query), and
//! everything else. A push over budget is refused with `rate_limited` and does
//! nothing. Memory is bounded: a user whose buckets have all refilled is as good as
//! absent, and such entries are swept out. On the hot path a charge is two hashes (the
//! shard, the entry), one short lock and no allocation (a user's first push allocates
//! their entry).

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Locks over the users' buckets; sessions on every worker charge at once.
const SHARDS: usize = 16;
/// How often a shard drops the entries of users whose buckets have refilled.
const SWEEP_EVERY: Duration = Duration::from_secs(30);

/// The kinds of push, each with a budget of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cost {
    /// What others see written: `new_msg`.
    Message,
    /// `phx_join`, rejoins included.
    Join,
    /// Everything else: `history`, `read`, `typing`, `conversations`, leaves,
    /// heartbeats, unknown events, and the user's HTTP requests.
    Event,
}

impl Cost {
    /// The budget an event name draws on.
    pub fn of(event: &str) -> Cost {
        match event {
            "phx_join" => Cost::Join,
            // Changes to messages cost what a message does (PROTOCOL.md §11).
            "new_msg" | "edit_msg" | "delete_msg" | "react" | "unreact" => Cost::Message,
            _ => Cost::Event,
        }
    }

    /// The `budget` label of `sidechat_rate_limited_total`.
    pub fn as_str(self) -> &'static str {
        match self {
            Cost::Message => "messages",
            Cost::Join => "joins",
            Cost::Event => "events",
        }
    }
}

/// A steady rate and the burst allowed before it applies. 0 per second = unlimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    pub per_second: u32,
    pub burst: u32,
}

impl Rate {
    #[cfg(test)]
    const UNLIMITED: Rate = Rate {
        per_second: 0,
        burst: 0,
    };

    /// How long the bucket takes to earn one push back; None when unlimited.
    pub fn refill_one(self) -> Option<Duration> {
        (self.per_second > 0).then(|| Duration::from_secs(1) / self.per_second)
    }
}

/// The three rates of `[limits]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rates {
    pub messages: Rate,
    pub joins: Rate,
    pub events: Rate,
}

impl Rates {
    pub fn of(&self, cost: Cost) -> Rate {
        match cost {
            Cost::Message => self.messages,
            Cost::Join => self.joins,
            Cost::Event => self.events,
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn full(rate: Rate, now: Instant) -> Bucket {
        Bucket {
            tokens: f64::from(rate.burst),
            at: now,
        }
    }

    /// The tokens there would be at `now`.
    fn level(&self, rate: Rate, now: Instant) -> f64 {
        let earned =
            now.saturating_duration_since(self.at).as_secs_f64() * f64::from(rate.per_second);
        (self.tokens + earned).min(f64::from(rate.burst))
    }

    fn take(&mut self, rate: Rate, now: Instant) -> bool {
        self.tokens = self.level(rate, now);
        self.at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// One user's buckets: messages, joins, events.
#[derive(Debug, Clone, Copy)]
struct Buckets([Bucket; 3]);

impl Buckets {
    fn full(rates: &Rates, now: Instant) -> Buckets {
        Buckets([
            Bucket::full(rates.messages, now),
            Bucket::full(rates.joins, now),
            Bucket::full(rates.events, now),
        ])
    }

    fn bucket(&mut self, cost: Cost) -> &mut Bucket {
        let [messages, joins, events] = &mut self.0;
        match cost {
            Cost::Message => messages,
            Cost::Join => joins,
            Cost::Event => events,
        }
    }

    /// Whether every bucket has refilled: the entry then says nothing a fresh one would not.
    fn refilled(&self, rates: &Rates, now: Instant) -> bool {
        let [messages, joins, events] = &self.0;
        [
            (messages, rates.messages),
            (joins, rates.joins),
            (events, rates.events),
        ]
        .iter()
        .all(|(bucket, rate)| bucket.level(*rate, now) >= f64::from(rate.burst))
    }
}

struct Shard {
    users: HashMap<Box<str>, Buckets>,
    swept_at: Instant,
}

/// Every user's budgets on this replica.
pub struct Budgets {
    rates: Rates,
    shards: Vec<Mutex<Shard>>,
    hasher: std::collections::hash_map::RandomState,
}

impl Budgets {
    pub fn new(rates: Rates) -> Budgets {
        let now = Instant::now();
        Budgets {
            rates,
            shards: (0..SHARDS)
                .map(|_| {
                    Mutex::new(Shard {
                        users: HashMap::new(),
                        swept_at: now,
                    })
                })
                .collect(),
            hasher: std::collections::hash_map::RandomState::new(),
        }
    }

    /// Takes one push of `cost` from `user`'s budget. `Err(wait)` when it is spent: the
    /// bucket earns a push back after `wait`.
    pub fn charge(&self, user: &str, cost: Cost, now: Instant) -> Result<(), Duration> {
        let rate = self.rates.of(cost);
        let Some(refill) = rate.refill_one() else {
            return Ok(()); // unlimited
        };
        let index = usize::try_from(self.hasher.hash_one(user)).unwrap_or(0) % SHARDS;
        let Some(shard) = self.shards.get(index) else {
            return Ok(());
        };
        // Each update is a few arithmetic steps on one entry: consistent if poisoned.
        let mut shard = shard.lock().unwrap_or_else(|p| p.into_inner());
        if now.saturating_duration_since(shard.swept_at) >= SWEEP_EVERY {
            self.sweep_shard(&mut shard, now);
        }
        let allowed = match shard.users.get_mut(user) {
            Some(buckets) => buckets.bucket(cost).take(rate, now),
            None => {
                let mut buckets = Buckets::full(&self.rates, now);
                let allowed = buckets.bucket(cost).take(rate, now);
                shard.users.insert(user.into(), buckets);
                allowed
            }
        };
        if allowed { Ok(()) } else { Err(refill) }
    }

    /// Drops the entries of users whose buckets have all refilled, in every shard
    /// (charging sweeps its own shard every `SWEEP_EVERY`).
    #[cfg(test)]
    fn sweep(&self, now: Instant) {
        for shard in &self.shards {
            self.sweep_shard(&mut shard.lock().unwrap_or_else(|p| p.into_inner()), now);
        }
    }

    fn sweep_shard(&self, shard: &mut Shard, now: Instant) {
        let rates = self.rates;
        shard
            .users
            .retain(|_, buckets| !buckets.refilled(&rates, now));
        shard.swept_at = now;
    }

    /// Users with an entry: those who spent from a budget lately.
    #[cfg(test)]
    fn tracked(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(|p| p.into_inner()).users.len())
            .sum()
    }
}

/// A refusal within this long of the one before continues a socket's streak: longer
/// than the longest pause a refusal puts on reading (1 s, a budget of one a second), so
/// a client that pushes again the moment it is read keeps its streak.
const STREAK_GAP: Duration = Duration::from_secs(2);

/// How long one socket has kept pushing over budget: refused again and again, at least
/// every two seconds. A client that backs off for longer starts afresh.
#[derive(Debug, Default, Clone, Copy)]
pub struct Streak(Option<(Instant, Instant)>);

impl Streak {
    /// Records a refusal at `now`; returns how long the streak has lasted.
    pub fn refused(&mut self, now: Instant) -> Duration {
        let since = match self.0 {
            Some((since, last)) if now.saturating_duration_since(last) <= STREAK_GAP => since,
            _ => now,
        };
        self.0 = Some((since, now));
        now.saturating_duration_since(since)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_budget_has_its_series_on_metrics_from_the_start() {
        for cost in [Cost::Message, Cost::Join, Cost::Event] {
            // A new budget fails to compile here: add it to the list and to BUDGETS.
            match cost {
                Cost::Message | Cost::Join | Cost::Event => {}
            }
            assert!(crate::metrics::BUDGETS.contains(&cost.as_str()));
        }
    }

    fn allowed(budgets: &Budgets, user: &str, cost: Cost, now: Instant) -> bool {
        budgets.charge(user, cost, now).is_ok()
    }

    fn rates(messages: Rate) -> Rates {
        Rates {
            messages,
            joins: Rate {
                per_second: 1,
                burst: 1,
            },
            events: Rate::UNLIMITED,
        }
    }

    #[test]
    fn a_burst_is_allowed_then_the_rate_applies() {
        let budgets = Budgets::new(rates(Rate {
            per_second: 2,
            burst: 3,
        }));
        let t0 = Instant::now();
        assert!((0..3).all(|_| allowed(&budgets, "u", Cost::Message, t0)));
        assert_eq!(
            budgets.charge("u", Cost::Message, t0),
            Err(Duration::from_millis(500)),
            "refused, with when the next push is earned"
        );
        assert!(
            allowed(&budgets, "other", Cost::Message, t0),
            "users are apart"
        );
        let later = t0 + Duration::from_millis(500);
        assert!(allowed(&budgets, "u", Cost::Message, later));
        assert!(!allowed(&budgets, "u", Cost::Message, later));
    }

    #[test]
    fn each_kind_has_its_own_budget() {
        let budgets = Budgets::new(rates(Rate {
            per_second: 1,
            burst: 1,
        }));
        let t0 = Instant::now();
        assert!(allowed(&budgets, "u", Cost::Message, t0));
        assert!(!allowed(&budgets, "u", Cost::Message, t0));
        assert!(
            allowed(&budgets, "u", Cost::Join, t0),
            "joins are not messages"
        );
        assert!(!allowed(&budgets, "u", Cost::Join, t0));
        assert!(
            (0..10_000).all(|_| allowed(&budgets, "u", Cost::Event, t0)),
            "0 per second is unlimited"
        );
    }

    #[test]
    fn users_whose_buckets_refilled_are_swept_out() {
        let budgets = Budgets::new(rates(Rate {
            per_second: 10,
            burst: 10,
        }));
        let t0 = Instant::now();
        for user in 0..1000 {
            assert!(allowed(&budgets, &format!("u{user}"), Cost::Message, t0));
        }
        assert_eq!(budgets.tracked(), 1000);
        // One user keeps spending; the others' buckets refilled long ago.
        let later = t0 + SWEEP_EVERY + Duration::from_secs(1);
        for user in ["busy", "busy2"] {
            for _ in 0..10 {
                allowed(&budgets, user, Cost::Message, later);
            }
        }
        let tracked = budgets.tracked();
        assert!(allowed(&budgets, "free", Cost::Event, later));
        assert_eq!(
            budgets.tracked(),
            tracked,
            "an unlimited kind tracks nobody"
        );
        budgets.sweep(later);
        assert_eq!(budgets.tracked(), 2);
        assert!(
            !allowed(&budgets, "busy", Cost::Message, later),
            "the spender's debt stays"
        );
    }

    #[test]
    fn a_streak_lasts_while_refusals_keep_coming() {
        let mut streak = Streak::default();
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        assert_eq!(streak.refused(at(0)), Duration::ZERO);
        // A flood, read at the budget's pace: refused every 50 ms.
        for ms in (50..=2000).step_by(50) {
            streak.refused(at(ms));
        }
        assert_eq!(streak.refused(at(2050)), Duration::from_millis(2050));
        // Refused every two seconds still counts; a longer pause starts afresh.
        assert_eq!(streak.refused(at(4050)), Duration::from_millis(4050));
        assert_eq!(streak.refused(at(6100)), Duration::ZERO);
    }

    #[test]
    fn event_names_draw_on_their_budget() {
        assert_eq!(Cost::of("phx_join"), Cost::Join);
        assert_eq!(Cost::of("new_msg"), Cost::Message);
        for event in [
            "typing",
            "read",
            "history",
            "conversations",
            "phx_leave",
            "heartbeat",
            "nonsense",
        ] {
            assert_eq!(Cost::of(event), Cost::Event, "{event}");
        }
    }
}
