//! A fixed-capacity list kept in insertion order, the shape of every bounded store here (one-time
//! keys, receiving chains, skipped message keys). Removing an entry zeroizes the slot it leaves,
//! so no copy of a secret stays behind in the unused part of the array.

use zeroize::Zeroize;

pub(crate) struct Fifo<T: Zeroize + Default, const N: usize> {
    items: [T; N],
    len: usize,
}

impl<T: Zeroize + Default, const N: usize> Fifo<T, N> {
    /// An empty list over `items`, which must be the zeroized (default) value each: a
    /// constant, so that a large list can be made without a temporary copy of it.
    pub(crate) const fn from_empty(items: [T; N]) -> Self {
        Self { items, len: 0 }
    }

    pub(crate) const fn len(&self) -> usize {
        self.len
    }

    pub(crate) const fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub(crate) const fn is_full(&self) -> bool {
        self.len >= N
    }

    pub(crate) fn as_slice(&self) -> &[T] {
        self.items.get(..self.len).unwrap_or_default()
    }

    pub(crate) fn as_mut_slice(&mut self) -> &mut [T] {
        self.items.get_mut(..self.len).unwrap_or_default()
    }

    pub(crate) fn iter(&self) -> core::slice::Iter<'_, T> {
        self.as_slice().iter()
    }

    /// Removes every entry, zeroizing the slots they held (the others are zeroized already).
    pub(crate) fn clear(&mut self) {
        self.as_mut_slice().iter_mut().for_each(Zeroize::zeroize);
        self.len = 0;
    }

    /// Appends `item`; when full, the oldest entry is dropped first and `true` is returned.
    pub(crate) fn push(&mut self, item: T) -> bool {
        let evicted = self.is_full();
        if evicted {
            self.remove(0);
        }
        if let Some(slot) = self.items.get_mut(self.len) {
            *slot = item;
            self.len += 1;
        }
        evicted
    }

    /// Removes the entry at `index`, keeping the order of the rest.
    pub(crate) fn remove(&mut self, index: usize) {
        if index >= self.len {
            return;
        }
        if let Some(tail) = self.items.get_mut(index..self.len) {
            tail.rotate_left(1);
        }
        self.len -= 1;
        if let Some(slot) = self.items.get_mut(self.len) {
            slot.zeroize();
        }
    }

    /// Removes the first entry for which `f` is true; returns whether one was found.
    pub(crate) fn remove_first(&mut self, f: impl Fn(&T) -> bool) -> bool {
        match self.iter().position(f) {
            Some(index) => {
                self.remove(index);
                true
            }
            None => false,
        }
    }

    /// Keeps only the entries for which `f` is true.
    pub(crate) fn retain(&mut self, f: impl Fn(&T) -> bool) {
        let mut index = 0;
        while index < self.len {
            if self.items.get(index).is_some_and(&f) {
                index += 1;
            } else {
                self.remove(index);
            }
        }
    }
}

impl<T: Zeroize + Default, const N: usize> Zeroize for Fifo<T, N> {
    fn zeroize(&mut self) {
        self.items.iter_mut().for_each(Zeroize::zeroize);
        self.len = 0;
    }
}

impl<T: Zeroize + Default + Clone, const N: usize> Clone for Fifo<T, N> {
    fn clone(&self) -> Self {
        Self {
            items: self.items.clone(),
            len: self.len,
        }
    }
}

impl<T: Zeroize + Default, const N: usize> Drop for Fifo<T, N> {
    fn drop(&mut self) {
        // The slots past `len` are zeroized already (every way out of the list zeroizes
        // the slot it frees), so only the live entries are wiped: a session's skipped-key
        // list is 64 entries, mostly free.
        self.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evicts_oldest_and_zeroizes_freed_slots() {
        let mut f: Fifo<u32, 3> = Fifo::from_empty([0; 3]);
        assert!(!f.push(1));
        f.push(2);
        f.push(3);
        assert!(f.push(4));
        assert_eq!(f.as_slice(), &[2, 3, 4]);
        f.remove(0);
        assert_eq!(f.as_slice(), &[3, 4]);
        assert_eq!(f.items[2], 0);
        f.retain(|&x| x != 3);
        assert_eq!(f.as_slice(), &[4]);
        f.push(5);
        f.clear();
        assert!(f.is_empty());
        assert_eq!(f.items, [0, 0, 0]);
        f.push(4);
        assert!(f.remove_first(|&x| x == 4));
        assert!(f.is_empty());
        assert_eq!(f.items, [0, 0, 0]);
    }
}
