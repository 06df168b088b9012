//! A keyed token bucket, kept in memory (per server node).
//!
//! # Why not `governor`
//!
//! `governor` (GCRA, keyed stores, `check_key_n` for costs) was weighed for this and kept
//! out, because of two things this limiter does that it cannot:
//!
//! - **Refund.** The failed-authentication limiter ([`Services::auth_attempt`] and
//!   [`Services::auth_outcome`]) takes a token *before* the credential check and gives it
//!   back for a good credential. Taking first is the protection: the check awaits the store,
//!   so a source that fires many guesses at once would otherwise see every one pass a
//!   "not limited yet" test before the first failure is charged. governor has no way to
//!   return cells (nor to peek without taking: its peek and "check only" pull requests
//!   are still open), and the alternative the brief allows (check first, charge on
//!   failure) is exactly the race above, so it does not keep the same protection.
//! - **A bound on keys.** Its keyed store grows with every new key until
//!   `retain_recent` runs; there is no cap, and no way to refuse a new key when a flood
//!   of fresh ones (spoofed-looking IPv6 /64s, new accounts) fills it. This one refuses a
//!   new key past [`MAX_KEYS`] once the full buckets are dropped.
//!
//! Using governor for the claim and provisioning limiters only would leave two limiter
//! implementations for one concept, and bring `dashmap`, `quanta` and friends for about
//! a hundred lines that are tested here. One mutex-guarded map is enough at these rates
//! (a claim, a linking channel, a failed credential: not every request).
//!
//! [`Services::auth_attempt`]: super::Services::auth_attempt
//! [`Services::auth_outcome`]: super::Services::auth_outcome

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Most keys tracked at once.
const MAX_KEYS: usize = 100_000;

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    updated: Instant,
}

/// Allows `capacity` events per key at once, refilled at `capacity` per minute.
#[derive(Debug)]
pub struct RateLimiter<K = i64> {
    capacity: f64,
    per_second: f64,
    buckets: Mutex<HashMap<K, Bucket>>,
}

impl<K: std::hash::Hash + Eq + Copy> RateLimiter<K> {
    /// A limiter of `n` events per minute per key.
    #[must_use]
    pub fn per_minute(n: u32) -> Self {
        Self {
            capacity: f64::from(n),
            per_second: f64::from(n) / 60.0,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Take `cost` tokens for `key` if they are there.
    pub fn try_take(&self, key: K, cost: u32) -> bool {
        self.try_take_at(key, cost, Instant::now())
    }

    /// Give back `cost` tokens taken for `key` (up to the capacity).
    pub fn refund(&self, key: K, cost: u32) {
        if let Some(bucket) = self.lock().get_mut(&key) {
            bucket.tokens = (bucket.tokens + f64::from(cost)).min(self.capacity);
        }
    }

    /// Whether `cost` tokens are there for `key`, without taking them.
    pub fn has(&self, key: K, cost: u32) -> bool {
        let now = Instant::now();
        let buckets = self.lock();
        buckets.get(&key).is_none_or(|b| {
            let elapsed = now.saturating_duration_since(b.updated).as_secs_f64();
            (b.tokens + elapsed * self.per_second).min(self.capacity) >= f64::from(cost)
        })
    }

    fn try_take_at(&self, key: K, cost: u32, now: Instant) -> bool {
        let mut buckets = self.lock();
        if buckets.len() >= MAX_KEYS && !buckets.contains_key(&key) {
            // Bounded memory under a flood of fresh keys: forget the buckets that have
            // refilled, and if that is not enough, refuse new keys until the next prune.
            let full_after = Duration::from_secs(60);
            buckets.retain(|_, b| now.saturating_duration_since(b.updated) < full_after);
            if buckets.len() >= MAX_KEYS {
                return false;
            }
        }
        let bucket = buckets.entry(key).or_insert(Bucket {
            tokens: self.capacity,
            updated: now,
        });
        let elapsed = now.saturating_duration_since(bucket.updated).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * self.per_second).min(self.capacity);
        bucket.updated = now;
        let cost = f64::from(cost);
        if bucket.tokens >= cost {
            bucket.tokens -= cost;
            true
        } else {
            false
        }
    }

    /// Drop buckets that are full again (they behave like absent ones).
    pub fn prune(&self) {
        let now = Instant::now();
        let full_after = Duration::from_secs(60);
        self.lock()
            .retain(|_, b| now.saturating_duration_since(b.updated) < full_after);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<K, Bucket>> {
        self.buckets
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refills_over_time() {
        let l = RateLimiter::per_minute(2);
        let t = Instant::now();
        assert!(l.try_take_at(1, 1, t));
        assert!(l.try_take_at(1, 1, t));
        assert!(!l.try_take_at(1, 1, t));
        assert!(l.try_take_at(2, 2, t), "keys are independent");
        assert!(l.try_take_at(1, 1, t + Duration::from_secs(30)));
        assert!(!l.try_take_at(1, 3, t + Duration::from_secs(600)), "capped");
        let ip = RateLimiter::<std::net::IpAddr>::per_minute(1);
        let a: std::net::IpAddr = [127, 0, 0, 1].into();
        assert!(ip.has(a, 1));
        assert!(ip.try_take(a, 1));
        assert!(!ip.has(a, 1), "used up, not taken again by asking");
    }
}
