//! [`SmallMap`] and [`SmallSet`]: ordered collections that cost their
//! contents, not a B-tree node, while small.
//!
//! Almost every resource has one holder and almost every session holds a
//! handful of leases, yet a one-entry `BTreeMap` allocates a whole leaf
//! node (11 slots: over 1 KiB for a map of leases). Up to
//! [`SMALL_ENTRIES_MAX`] entries these keep a sorted `Vec` sized exactly to
//! its contents; beyond that a `BTreeMap`, so a resource shared by many
//! sessions never pays a linear insert. Both encode exactly as the
//! `BTreeMap`/`BTreeSet` they replace (a serde map or sequence in key
//! order), so the snapshot and store formats do not change, and equality
//! ignores which form holds the entries.

use std::borrow::Borrow;
use std::collections::BTreeMap;
use std::fmt;

use serde::de::{MapAccess, SeqAccess, Visitor};
use serde::ser::{SerializeMap, SerializeSeq};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Most entries kept in the sorted vector before moving to a `BTreeMap`.
pub const SMALL_ENTRIES_MAX: usize = 16;

/// An ordered map: a sorted vector while small, a `BTreeMap` beyond
/// [`SMALL_ENTRIES_MAX`] entries.
#[derive(Clone)]
pub struct SmallMap<K, V> {
    /// The entries, in whichever form suits their number.
    repr: Repr<K, V>,
}

/// The two forms of a [`SmallMap`].
#[derive(Clone)]
enum Repr<K, V> {
    /// Sorted by key, capacity equal to length.
    Small(Vec<(K, V)>),
    /// Many entries.
    Large(BTreeMap<K, V>),
}

impl<K, V> Default for SmallMap<K, V> {
    fn default() -> Self {
        SmallMap {
            repr: Repr::Small(Vec::new()),
        }
    }
}

impl<K: Ord, V> SmallMap<K, V> {
    /// An empty map (allocates nothing).
    pub fn new() -> Self {
        SmallMap::default()
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        match &self.repr {
            Repr::Small(v) => v.len(),
            Repr::Large(m) => m.len(),
        }
    }

    /// True when it has no entry.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The value of `key`.
    pub fn get<Q: Ord + ?Sized>(&self, key: &Q) -> Option<&V>
    where
        K: Borrow<Q>,
    {
        match &self.repr {
            Repr::Small(v) => v
                .binary_search_by(|(k, _)| k.borrow().cmp(key))
                .ok()
                .map(|i| &v[i].1),
            Repr::Large(m) => m.get(key),
        }
    }

    /// The value of `key`, to change.
    pub fn get_mut<Q: Ord + ?Sized>(&mut self, key: &Q) -> Option<&mut V>
    where
        K: Borrow<Q>,
    {
        match &mut self.repr {
            Repr::Small(v) => match v.binary_search_by(|(k, _)| k.borrow().cmp(key)) {
                Ok(i) => Some(&mut v[i].1),
                Err(_) => None,
            },
            Repr::Large(m) => m.get_mut(key),
        }
    }

    /// Whether `key` has a value.
    pub fn contains_key<Q: Ord + ?Sized>(&self, key: &Q) -> bool
    where
        K: Borrow<Q>,
    {
        self.get(key).is_some()
    }

    /// Sets `key` to `value`; returns the value it replaced.
    pub fn insert(&mut self, key: K, value: V) -> Option<V> {
        match &mut self.repr {
            Repr::Small(v) => match v.binary_search_by(|(k, _)| k.cmp(&key)) {
                Ok(i) => Some(std::mem::replace(&mut v[i].1, value)),
                Err(i) if v.len() < SMALL_ENTRIES_MAX => {
                    v.reserve_exact(1);
                    v.insert(i, (key, value));
                    None
                }
                Err(_) => {
                    let mut m: BTreeMap<K, V> = std::mem::take(v).into_iter().collect();
                    m.insert(key, value);
                    self.repr = Repr::Large(m);
                    None
                }
            },
            Repr::Large(m) => m.insert(key, value),
        }
    }

    /// Removes `key`; returns its value.
    pub fn remove<Q: Ord + ?Sized>(&mut self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
    {
        match &mut self.repr {
            Repr::Small(v) => {
                let i = v.binary_search_by(|(k, _)| k.borrow().cmp(key)).ok()?;
                let (_, value) = v.remove(i);
                v.shrink_to_fit();
                Some(value)
            }
            Repr::Large(m) => {
                let value = m.remove(key)?;
                if m.len() <= SMALL_ENTRIES_MAX / 2 {
                    let v: Vec<(K, V)> = std::mem::take(m).into_iter().collect();
                    self.repr = Repr::Small(v);
                }
                Some(value)
            }
        }
    }

    /// The entries in key order.
    pub fn iter(&self) -> Iter<'_, K, V> {
        match &self.repr {
            Repr::Small(v) => Iter::Small(v.iter()),
            Repr::Large(m) => Iter::Large(m.iter()),
        }
    }

    /// The keys in order.
    pub fn keys(&self) -> impl Iterator<Item = &K> {
        self.iter().map(|(k, _)| k)
    }

    /// The values in key order.
    pub fn values(&self) -> impl Iterator<Item = &V> {
        self.iter().map(|(_, v)| v)
    }

    /// The values in key order, to change.
    pub fn values_mut(&mut self) -> impl Iterator<Item = &mut V> {
        let (small, large) = match &mut self.repr {
            Repr::Small(v) => (Some(v.iter_mut().map(|(_, v)| v)), None),
            Repr::Large(m) => (None, Some(m.values_mut())),
        };
        small
            .into_iter()
            .flatten()
            .chain(large.into_iter().flatten())
    }
}

/// Iterator over a [`SmallMap`]'s entries in key order.
pub enum Iter<'a, K, V> {
    /// Over the sorted vector.
    Small(std::slice::Iter<'a, (K, V)>),
    /// Over the `BTreeMap`.
    Large(std::collections::btree_map::Iter<'a, K, V>),
}

impl<'a, K, V> Iterator for Iter<'a, K, V> {
    type Item = (&'a K, &'a V);

    fn next(&mut self) -> Option<Self::Item> {
        match self {
            Iter::Small(it) => it.next().map(|(k, v)| (k, v)),
            Iter::Large(it) => it.next(),
        }
    }
}

impl<'a, K: Ord, V> IntoIterator for &'a SmallMap<K, V> {
    type Item = (&'a K, &'a V);
    type IntoIter = Iter<'a, K, V>;

    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

impl<K: Ord, V> FromIterator<(K, V)> for SmallMap<K, V> {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        let mut map = SmallMap::new();
        for (k, v) in iter {
            map.insert(k, v);
        }
        map
    }
}

impl<K: Ord, V> std::ops::Index<&K> for SmallMap<K, V> {
    type Output = V;

    fn index(&self, key: &K) -> &V {
        match self.get(key) {
            Some(v) => v,
            None => panic!("no entry for this key in the map"),
        }
    }
}

impl<K: Ord, V: PartialEq> PartialEq for SmallMap<K, V> {
    fn eq(&self, other: &Self) -> bool {
        self.len() == other.len() && self.iter().eq(other.iter())
    }
}

impl<K: Ord, V: Eq> Eq for SmallMap<K, V> {}

impl<K: Ord + fmt::Debug, V: fmt::Debug> fmt::Debug for SmallMap<K, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

impl<K: Ord + Serialize, V: Serialize> Serialize for SmallMap<K, V> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.len()))?;
        for (k, v) in self.iter() {
            map.serialize_entry(k, v)?;
        }
        map.end()
    }
}

impl<'de, K: Ord + Deserialize<'de>, V: Deserialize<'de>> Deserialize<'de> for SmallMap<K, V> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        /// Reads a serde map into a [`SmallMap`].
        struct MapVisitor<K, V>(std::marker::PhantomData<(K, V)>);

        impl<'de, K: Ord + Deserialize<'de>, V: Deserialize<'de>> Visitor<'de> for MapVisitor<K, V> {
            type Value = SmallMap<K, V>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a map")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Self::Value, A::Error> {
                let mut map = SmallMap::new();
                while let Some((k, v)) = access.next_entry()? {
                    map.insert(k, v);
                }
                Ok(map)
            }
        }

        deserializer.deserialize_map(MapVisitor(std::marker::PhantomData))
    }
}

/// An ordered set on a [`SmallMap`].
#[derive(Clone, Default)]
pub struct SmallSet<T> {
    /// The members, as keys.
    map: SmallMap<T, ()>,
}

impl<T: Ord> SmallSet<T> {
    /// An empty set (allocates nothing).
    pub fn new() -> Self {
        SmallSet {
            map: SmallMap::new(),
        }
    }

    /// Number of members.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// True when it has no member.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Whether `value` is a member.
    pub fn contains<Q: Ord + ?Sized>(&self, value: &Q) -> bool
    where
        T: Borrow<Q>,
    {
        self.map.contains_key(value)
    }

    /// Adds `value`; false when it was already a member.
    pub fn insert(&mut self, value: T) -> bool {
        self.map.insert(value, ()).is_none()
    }

    /// Removes `value`; false when it was not a member.
    pub fn remove<Q: Ord + ?Sized>(&mut self, value: &Q) -> bool
    where
        T: Borrow<Q>,
    {
        self.map.remove(value).is_some()
    }

    /// The members in order.
    pub fn iter(&self) -> impl Iterator<Item = &T> {
        self.map.keys()
    }
}

impl<'a, T: Ord> IntoIterator for &'a SmallSet<T> {
    type Item = &'a T;
    type IntoIter = std::iter::Map<Iter<'a, T, ()>, fn((&'a T, &'a ())) -> &'a T>;

    fn into_iter(self) -> Self::IntoIter {
        fn key<'a, T>((k, _): (&'a T, &'a ())) -> &'a T {
            k
        }
        self.map.iter().map(key as fn((&'a T, &'a ())) -> &'a T)
    }
}

impl<T: Ord> PartialEq for SmallSet<T> {
    fn eq(&self, other: &Self) -> bool {
        self.map == other.map
    }
}

impl<T: Ord> Eq for SmallSet<T> {}

impl<T: Ord> FromIterator<T> for SmallSet<T> {
    fn from_iter<I: IntoIterator<Item = T>>(iter: I) -> Self {
        SmallSet {
            map: iter.into_iter().map(|t| (t, ())).collect(),
        }
    }
}

impl<T: Ord + fmt::Debug> fmt::Debug for SmallSet<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.iter()).finish()
    }
}

impl<T: Ord + Serialize> Serialize for SmallSet<T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut seq = serializer.serialize_seq(Some(self.len()))?;
        for t in self.iter() {
            seq.serialize_element(t)?;
        }
        seq.end()
    }
}

impl<'de, T: Ord + Deserialize<'de>> Deserialize<'de> for SmallSet<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        /// Reads a serde sequence into a [`SmallSet`].
        struct SeqVisitor<T>(std::marker::PhantomData<T>);

        impl<'de, T: Ord + Deserialize<'de>> Visitor<'de> for SeqVisitor<T> {
            type Value = SmallSet<T>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a sequence")
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut access: A) -> Result<Self::Value, A::Error> {
                let mut set = SmallSet::new();
                while let Some(t) = access.next_element()? {
                    set.insert(t);
                }
                Ok(set)
            }
        }

        deserializer.deserialize_seq(SeqVisitor(std::marker::PhantomData))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use super::*;

    #[test]
    fn behaves_as_a_btree_map_across_both_forms() {
        let mut small: SmallMap<u64, u64> = SmallMap::new();
        let mut model: BTreeMap<u64, u64> = BTreeMap::new();
        // Grow past the switch, shrink back below it, in a scrambled order.
        let keys: Vec<u64> = (0..40).map(|i| (i * 17) % 41).collect();
        for (n, k) in keys.iter().enumerate() {
            assert_eq!(small.insert(*k, n as u64), model.insert(*k, n as u64));
            assert_eq!(
                small.insert(*k, n as u64 + 1),
                model.insert(*k, n as u64 + 1)
            );
            assert!(small.iter().eq(model.iter()));
            assert_eq!(small.len(), model.len());
        }
        for k in keys.iter().rev().chain([99].iter()) {
            assert_eq!(small.remove(k), model.remove(k));
            assert!(small.iter().eq(model.iter()));
            assert_eq!(small.get(k), model.get(k));
        }
        assert!(small.is_empty());
    }

    #[test]
    fn encodes_exactly_as_the_std_collections() {
        for n in [0u64, 1, 5, SMALL_ENTRIES_MAX as u64, 50] {
            let model: BTreeMap<u64, String> = (0..n).map(|i| (i * 3, format!("v{i}"))).collect();
            let small: SmallMap<u64, String> = model.clone().into_iter().collect();
            let bytes = postcard::to_stdvec(&model).expect("encodes");
            assert_eq!(postcard::to_stdvec(&small).expect("encodes"), bytes);
            let back: SmallMap<u64, String> = postcard::from_bytes(&bytes).expect("decodes");
            assert_eq!(back, small);

            let set: BTreeSet<String> = (0..n).map(|i| format!("r{i}")).collect();
            let small_set: SmallSet<String> = set.iter().cloned().collect();
            let bytes = postcard::to_stdvec(&set).expect("encodes");
            assert_eq!(postcard::to_stdvec(&small_set).expect("encodes"), bytes);
            let back: SmallSet<String> = postcard::from_bytes(&bytes).expect("decodes");
            assert_eq!(back, small_set);
        }
    }
}
