//! A thread's spare read and write buffers.
//!
//! A connection holds buffers only while it has bytes to read or write: it
//! gives them back whenever it waits with them empty, so thousands of idle
//! connections hold none. A busy connection waits between every batch, so
//! without a pool it would pay an allocation and a free for each of its
//! buffers every time; with one, it takes back a buffer another connection
//! on the same thread just gave.

use std::cell::RefCell;

use bytes::BytesMut;

/// The usual size of a connection's read buffer, and of its write buffer:
/// `Framed`'s own first size.
pub(super) const BUFFER_SIZE: usize = 8 * 1024;

/// How many spare buffers a thread keeps.
const SPARE_BUFFERS: usize = 32;

thread_local! {
    static SPARE: RefCell<Vec<BytesMut>> = const { RefCell::new(Vec::new()) };
}

/// Fills an empty buffer slot with a buffer of at least `capacity` bytes:
/// a spare one when spares are big enough, else a new one.
pub(super) fn take(slot: &mut BytesMut, capacity: usize) {
    let spare = if capacity <= 2 * BUFFER_SIZE {
        SPARE
            .try_with(|spare| spare.borrow_mut().pop())
            .ok()
            .flatten()
    } else {
        None
    };
    *slot = match spare {
        Some(mut buffer) => {
            // Empty, so growing it copies nothing.
            buffer.reserve(capacity);
            buffer
        }
        None => BytesMut::with_capacity(capacity.max(BUFFER_SIZE)),
    };
}

/// Empties a buffer slot whose buffer holds no bytes, and returns the
/// buffer's whole capacity when nothing else shares it (no frame still
/// points into it), 0 otherwise. Such a buffer is kept as a spare when it
/// is of the usual size; a larger one is dropped, so a burst of large
/// frames leaves nothing large behind.
pub(super) fn give_back(slot: &mut BytesMut) -> usize {
    let mut buffer = std::mem::take(slot);
    if !buffer.try_reclaim(BUFFER_SIZE) {
        return 0;
    }
    let capacity = buffer.capacity();
    if capacity <= 2 * BUFFER_SIZE {
        let _ = SPARE.try_with(|spare| {
            let mut spare = spare.borrow_mut();
            if spare.len() < SPARE_BUFFERS {
                spare.push(buffer);
            }
        });
    }
    capacity
}
