//! A small least-recently-used cache for parsed files, used by the
//! symbolizer (DWARF, symbol tables) and the unwinder (CFI).
//!
//! Parsing a file's tables is far more expensive than one lookup in them,
//! and crash stacks hit the same few libraries over and over, so parsed
//! state is kept. It is bounded both in entry count and in heap bytes
//! (inflated sections, copied files, symbol tables) so a stream of crashes
//! in different huge binaries cannot grow memory without limit. A linear
//! scan over a few dozen entries costs nothing next to a DWARF lookup.

use std::convert::Infallible;

/// Something whose heap footprint the cache can weigh.
pub(crate) trait Weigh {
    fn heap_bytes(&self) -> u64;
}

pub(crate) struct Lru<K, V> {
    /// Least recently used first.
    entries: Vec<(K, V)>,
    max_entries: usize,
    max_bytes: u64,
}

impl<K: PartialEq, V: Weigh> Lru<K, V> {
    pub fn new(max_entries: usize, max_bytes: u64) -> Self {
        Self {
            entries: Vec::new(),
            max_entries: max_entries.max(1),
            max_bytes,
        }
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Marks `key` as most recently used and returns its value.
    #[cfg(test)]
    pub fn get_mut(&mut self, key: &K) -> Option<&mut V> {
        let pos = self.entries.iter().position(|(k, _)| k == key)?;
        let entry = self.entries.remove(pos);
        self.entries.push(entry);
        self.entries.last_mut().map(|(_, v)| v)
    }

    /// Inserts `value` as most recently used, replacing any old value for
    /// `key`, and returns it.
    pub fn insert(&mut self, key: K, value: V) -> &mut V {
        self.entries.retain(|(k, _)| *k != key);
        self.entries.push((key, value));
        self.evict();
        self.newest()
    }

    /// Returns the value for `key` as most recently used, creating it with
    /// `make` if it is missing.
    pub fn get_or_insert_with(&mut self, key: K, make: impl FnOnce() -> V) -> &mut V {
        match self.get_or_try_insert_with(key, || Ok::<_, Infallible>(make())) {
            Ok(value) => value,
            Err(never) => match never {},
        }
    }

    /// Returns the value for `key` as most recently used, creating it with
    /// `make` if it is missing; an error from `make` inserts nothing.
    pub fn get_or_try_insert_with<E>(
        &mut self,
        key: K,
        make: impl FnOnce() -> Result<V, E>,
    ) -> Result<&mut V, E> {
        match self.entries.iter().position(|(k, _)| *k == key) {
            Some(pos) => {
                let entry = self.entries.remove(pos);
                self.entries.push(entry);
                Ok(self.newest())
            }
            None => Ok(self.insert(key, make()?)),
        }
    }

    /// The most recently used value; only called right after one was pushed,
    /// and `evict` never removes the newest entry.
    fn newest(&mut self) -> &mut V {
        let last = self.entries.len() - 1;
        &mut self.entries[last].1
    }

    /// Drops least recently used entries until the limits hold again; the
    /// most recent entry always stays.
    pub fn evict(&mut self) {
        let excess = self.entries.len().saturating_sub(self.max_entries);
        self.entries.drain(..excess);
        let mut total: u64 = self.entries.iter().map(|(_, v)| v.heap_bytes()).sum();
        while total > self.max_bytes && self.entries.len() > 1 {
            let (_, dropped) = self.entries.remove(0);
            total = total.saturating_sub(dropped.heap_bytes());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct W(u64);
    impl Weigh for W {
        fn heap_bytes(&self) -> u64 {
            self.0
        }
    }

    #[test]
    fn evicts_least_recent_by_count_and_bytes() {
        let mut lru = Lru::new(2, 100);
        lru.insert(1, W(10));
        lru.insert(2, W(10));
        assert!(lru.get_mut(&1).is_some());
        lru.insert(3, W(10));
        assert!(lru.get_mut(&2).is_none(), "2 was least recently used");
        assert!(lru.get_mut(&1).is_some());
        lru.insert(4, W(95));
        assert_eq!(lru.len(), 1, "byte limit evicts all but the newest");
        assert!(lru.get_mut(&4).is_some());
        lru.insert(4, W(1));
        assert_eq!(lru.get_mut(&4).map(|w| w.0), Some(1));
        let made: Result<_, ()> = lru.get_or_try_insert_with(5, || Ok(W(2)));
        assert_eq!(made.map(|w| w.0), Ok(2));
        let kept: Result<_, ()> = lru.get_or_try_insert_with(5, || Err(()));
        assert_eq!(kept.map(|w| w.0), Ok(2), "existing value is returned");
        assert!(lru.get_or_try_insert_with(6, || Err(())).is_err());
        assert!(lru.get_mut(&6).is_none(), "a failed make inserts nothing");
    }

    #[test]
    fn get_or_insert_with_makes_once_and_marks_recent() {
        let mut lru = Lru::new(2, u64::MAX);
        let mut made = 0;
        for key in [1, 1, 2, 1, 3] {
            lru.get_or_insert_with(key, || {
                made += 1;
                W(key)
            });
        }
        assert_eq!(made, 3, "each key is made once while it stays");
        assert_eq!(lru.len(), 2);
        assert!(lru.get_mut(&2).is_none(), "2 was least recently used");
        assert_eq!(lru.get_mut(&1).map(|w| w.0), Some(1));
        assert_eq!(lru.get_or_insert_with(3, || W(99)).0, 3, "kept value wins");
    }
}
