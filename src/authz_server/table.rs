//! A map whose entries expire and whose size is capped: every table of the
//! server's state is one, so nothing a client can create grows without bound.
//!
//! Expired entries are never returned and are swept at most once per clock
//! second; when the table is full, inserting evicts the oldest entry (by
//! insertion), so a flood of new entries pushes out old ones instead of
//! refusing newcomers or growing.

use std::borrow::Borrow;
use std::collections::{HashMap, VecDeque};
use std::hash::Hash;

#[derive(Debug)]
struct Entry<V> {
    value: V,
    expires_at: u64,
    /// Which insertion this is, so a stale key in `order` can be told apart
    /// from a later insertion under the same key.
    seq: u64,
}

#[derive(Debug)]
pub(crate) struct Table<K, V> {
    entries: HashMap<K, Entry<V>>,
    /// Keys in insertion order; may hold keys already removed (checked by `seq`).
    order: VecDeque<(u64, K)>,
    capacity: usize,
    next_seq: u64,
    swept_at: u64,
    evicted: u64,
}

impl<K: Hash + Eq + Clone, V> Table<K, V> {
    /// A table of at most `capacity` entries (at least one).
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            entries: HashMap::new(),
            order: VecDeque::new(),
            capacity: capacity.max(1),
            next_seq: 0,
            swept_at: 0,
            evicted: 0,
        }
    }

    /// Stores `value` until `expires_at`, evicting the oldest entries if full.
    pub(crate) fn insert(&mut self, key: K, value: V, expires_at: u64, now: u64) {
        self.sweep(now);
        self.remove(&key);
        while self.entries.len() >= self.capacity {
            let Some((seq, oldest)) = self.order.pop_front() else {
                break;
            };
            if self.entries.get(&oldest).is_some_and(|e| e.seq == seq) {
                self.entries.remove(&oldest);
                self.evicted += 1;
            }
        }
        self.next_seq += 1;
        let seq = self.next_seq;
        self.order.push_back((seq, key.clone()));
        self.entries.insert(
            key,
            Entry {
                value,
                expires_at,
                seq,
            },
        );
    }

    pub(crate) fn get<Q>(&self, key: &Q, now: u64) -> Option<&V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.entries
            .get(key)
            .filter(|e| now < e.expires_at)
            .map(|e| &e.value)
    }

    pub(crate) fn get_mut<Q>(&mut self, key: &Q, now: u64) -> Option<&mut V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.entries
            .get_mut(key)
            .filter(|e| now < e.expires_at)
            .map(|e| &mut e.value)
    }

    /// Removes the entry; returns it only if it had not expired.
    pub(crate) fn take<Q>(&mut self, key: &Q, now: u64) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.remove(key)
            .filter(|e| now < e.expires_at)
            .map(|e| e.value)
    }

    /// Keeps the entry at least until `expires_at`.
    pub(crate) fn extend_to<Q>(&mut self, key: &Q, expires_at: u64)
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        if let Some(entry) = self.entries.get_mut(key) {
            entry.expires_at = entry.expires_at.max(expires_at);
        }
    }

    /// Live entries (expired ones not yet swept are not counted).
    pub(crate) fn len(&self, now: u64) -> usize {
        self.entries.values().filter(|e| now < e.expires_at).count()
    }

    /// How many entries were pushed out because the table was full.
    pub(crate) fn evicted(&self) -> u64 {
        self.evicted
    }

    fn remove<Q>(&mut self, key: &Q) -> Option<Entry<V>>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let entry = self.entries.remove(key)?;
        // Removed keys stay in `order` until a sweep; compact before it doubles.
        if self.order.len() > self.capacity.saturating_mul(2) {
            self.compact();
        }
        Some(entry)
    }

    /// Drops expired entries, at most once per clock second.
    fn sweep(&mut self, now: u64) {
        if now == self.swept_at {
            return;
        }
        self.swept_at = now;
        self.entries.retain(|_, e| now < e.expires_at);
        self.compact();
    }

    fn compact(&mut self) {
        let entries = &self.entries;
        self.order
            .retain(|(seq, key)| entries.get(key).is_some_and(|e| e.seq == *seq));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_table_evicts_the_oldest_entry() {
        let mut table = Table::new(2);
        table.insert("a", 1, 100, 10);
        table.insert("b", 2, 100, 10);
        table.insert("c", 3, 100, 10);
        assert_eq!(table.get(&"a", 10), None);
        assert_eq!(table.get(&"b", 10), Some(&2));
        assert_eq!(table.get(&"c", 10), Some(&3));
        assert_eq!(table.evicted(), 1);
    }

    #[test]
    fn expired_entries_are_invisible_then_swept() {
        let mut table = Table::new(10);
        table.insert("a", 1, 20, 10);
        table.insert("b", 2, 30, 10);
        assert_eq!(table.get(&"a", 20), None);
        assert_eq!(table.take(&"a", 20), None);
        table.insert("c", 3, 40, 25);
        assert_eq!(table.entries.len(), 2, "a is gone, b and c stay");
        assert_eq!(table.len(25), 2);
        assert_eq!(table.len(30), 1);
    }

    #[test]
    fn removed_and_reinserted_keys_keep_their_new_place() {
        let mut table = Table::new(2);
        table.insert("a", 1, 100, 10);
        table.insert("b", 2, 100, 10);
        assert_eq!(table.take(&"a", 10), Some(1));
        table.insert("a", 3, 100, 10);
        table.insert("c", 4, 100, 10);
        assert_eq!(table.get(&"b", 10), None, "b is now the oldest");
        assert_eq!(table.get(&"a", 10), Some(&3));
    }

    #[test]
    fn removals_do_not_grow_the_order_queue_without_bound() {
        let mut table = Table::new(4);
        for i in 0..1000 {
            table.insert(i, i, 100, 10);
            table.take(&i, 10);
        }
        assert!(table.order.len() <= 2 * 4 + 1, "{}", table.order.len());
    }

    #[test]
    fn extend_to_never_shortens() {
        let mut table = Table::new(2);
        table.insert("a", 1, 50, 10);
        table.extend_to(&"a", 40);
        assert!(table.get(&"a", 45).is_some());
        table.extend_to(&"a", 60);
        assert!(table.get(&"a", 55).is_some());
    }
}
