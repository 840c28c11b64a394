//! Spares a thread keeps: buffers that one request at a time uses, taken back when it is done
//! with them, so that the next request borrows one rather than allocating it and what waits
//! (a keep-alive connection between requests) holds none. Each kind has its own pool, a
//! `thread_local!` of [`Spares`], and its own bounds on how many and how large.

use std::cell::RefCell;
use std::thread::LocalKey;

/// A thread's spares of one kind.
pub(crate) type Spares<T> = RefCell<Vec<T>>;

/// One of the thread's spares; `None` when it has none (or is ending).
pub(crate) fn take<T: 'static>(spares: &'static LocalKey<Spares<T>>) -> Option<T> {
    spares
        .try_with(|spares| spares.borrow_mut().pop())
        .ok()
        .flatten()
}

/// Keeps `spare` for a later [`take`], unless the thread keeps `max` already: it is then
/// dropped, after the pool is let go (a drop never finds the pool borrowed).
pub(crate) fn give<T: 'static>(spares: &'static LocalKey<Spares<T>>, spare: T, max: usize) {
    let mut spare = Some(spare);
    let _ = spares.try_with(|spares| {
        let mut spares = spares.borrow_mut();
        if spares.len() < max {
            spares.extend(spare.take());
        }
    });
    drop(spare);
}

#[cfg(test)]
mod tests {
    use super::{Spares, give, take};

    thread_local! {
        static POOL: Spares<Vec<u8>> = const { Spares::new(Vec::new()) };
    }

    #[test]
    fn a_spare_given_is_taken_back_and_the_pool_keeps_at_most_max() {
        assert_eq!(take(&POOL), None);
        give(&POOL, vec![1], 2);
        give(&POOL, vec![2], 2);
        give(&POOL, vec![3], 2);
        assert_eq!(take(&POOL), Some(vec![2]));
        assert_eq!(take(&POOL), Some(vec![1]));
        assert_eq!(take(&POOL), None);
    }
}
