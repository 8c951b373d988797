//! A bounded queue that drops the newest items when full and remembers
//! where: the core of the [`EventStream`](crate::EventStream) and of the
//! [`EventSink`](crate::event::EventSink)'s writer.
//!
//! Output must never hold up the master's work (a full stdout pipe froze
//! it once), and memory must stay bounded however long nobody reads. So
//! a producer never waits: when the queue is full, the item is dropped
//! and counted. The count goes into the queue as a marker,
//! [`Entry::Dropped`], right after the items that were kept, so the
//! reader learns of the loss exactly where it happened: after what came
//! before it and before anything newer.

use std::collections::VecDeque;

/// One thing taken out of a [`LossyQueue`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Entry<T> {
    /// An item, in the order pushed.
    Item(T),
    /// This many items were dropped here because the queue was full.
    Dropped(u64),
}

/// A FIFO of at most `max_items` items and `max_weight` total weight
/// (bytes, say); see the [module](self).
#[derive(Debug)]
pub(crate) struct LossyQueue<T> {
    entries: VecDeque<(Entry<T>, usize)>,
    items: usize,
    weight: usize,
    max_items: usize,
    max_weight: usize,
    dropped: u64,
}

impl<T> LossyQueue<T> {
    /// An empty queue holding at most `max_items` items (at least 1) and
    /// `max_weight` total weight.
    pub(crate) fn new(max_items: usize, max_weight: usize) -> Self {
        LossyQueue {
            entries: VecDeque::new(),
            items: 0,
            weight: 0,
            max_items: max_items.max(1),
            max_weight,
            dropped: 0,
        }
    }

    /// Appends `item` of `weight` if there is room, else drops it and
    /// counts it in the marker at the tail. `true` if it was kept. An item
    /// heavier than the whole queue is kept when the queue is empty, so
    /// that nothing is refused forever.
    pub(crate) fn push(&mut self, item: T, weight: usize) -> bool {
        let fits = self.items < self.max_items
            && (self.items == 0 || self.weight.saturating_add(weight) <= self.max_weight);
        if fits {
            self.items += 1;
            self.weight += weight;
            self.entries.push_back((Entry::Item(item), weight));
            return true;
        }
        self.dropped += 1;
        // Markers never stand next to each other, so there are never more
        // of them than items: the queue's memory stays bounded.
        match self.entries.back_mut() {
            Some((Entry::Dropped(count), _)) => *count += 1,
            _ => self.entries.push_back((Entry::Dropped(1), 0)),
        }
        false
    }

    /// The oldest entry.
    pub(crate) fn pop(&mut self) -> Option<Entry<T>> {
        let (entry, weight) = self.entries.pop_front()?;
        if let Entry::Item(_) = entry {
            self.items -= 1;
            self.weight -= weight;
        }
        Some(entry)
    }

    /// Whether there is nothing to take.
    pub(crate) fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// How many items were dropped since the queue was made.
    pub(crate) fn dropped(&self) -> u64 {
        self.dropped
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drain(queue: &mut LossyQueue<u32>) -> Vec<Entry<u32>> {
        std::iter::from_fn(|| queue.pop()).collect()
    }

    #[test]
    fn a_full_queue_drops_the_newest_and_marks_where() {
        let mut queue = LossyQueue::new(2, usize::MAX);
        assert!(queue.push(1, 0));
        assert!(queue.push(2, 0));
        assert!(!queue.push(3, 0));
        assert!(!queue.push(4, 0));
        assert_eq!(queue.pop(), Some(Entry::Item(1)));
        assert!(queue.push(5, 0), "room again");
        assert!(!queue.push(6, 0));
        assert_eq!(
            drain(&mut queue),
            [
                Entry::Item(2),
                Entry::Dropped(2),
                Entry::Item(5),
                Entry::Dropped(1)
            ]
        );
        assert_eq!(queue.dropped(), 3);
        assert!(queue.is_empty());
    }

    #[test]
    fn weight_bounds_the_queue_too() {
        let mut queue = LossyQueue::new(100, 10);
        assert!(queue.push(1, 6));
        assert!(!queue.push(2, 6));
        assert!(queue.push(3, 4));
        assert_eq!(
            drain(&mut queue),
            [Entry::Item(1), Entry::Dropped(1), Entry::Item(3)]
        );
        assert!(queue.push(4, 50), "an empty queue takes even a heavy item");
        assert!(!queue.push(5, 1));
    }

    #[test]
    fn memory_stays_bounded_however_much_is_dropped() {
        let mut queue = LossyQueue::new(3, usize::MAX);
        for i in 0..100_000 {
            queue.push(i, 0);
            if i % 1000 == 0 {
                queue.pop();
            }
        }
        assert!(queue.entries.len() <= 2 * 3 + 1, "{}", queue.entries.len());
        assert!(queue.dropped() > 99_000);
    }
}
