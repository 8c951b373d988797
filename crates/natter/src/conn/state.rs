//! User state a connection carries: one set shared by every connection
//! (given to the builder), and one of the connection's own.
//!
//! Capturing an `Arc` in the service factory and keeping fields in the
//! service are the plain-Rust ways to hold state, and often the best. This
//! is for state that code holding only a [`Conn`](super::Conn) needs: a
//! layer, a task the handler spawned, the original framework's `Addon()`.

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

type Entry = Arc<dyn Any + Send + Sync>;

/// Values by type, shared by all connections; copied on write, so reading
/// takes no lock.
#[derive(Clone, Default)]
pub(crate) struct SharedState(Arc<HashMap<TypeId, Entry>>);

impl SharedState {
    pub(crate) fn insert<T: Send + Sync + 'static>(&mut self, value: T) {
        Arc::make_mut(&mut self.0).insert(TypeId::of::<T>(), Arc::new(value));
    }

    pub(crate) fn get<T: Send + Sync + 'static>(&self) -> Option<Arc<T>> {
        downcast(self.0.get(&TypeId::of::<T>())?.clone())
    }
}

impl std::fmt::Debug for SharedState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedState")
            .field("values", &self.0.len())
            .finish()
    }
}

/// Values by type, for one connection.
#[derive(Default)]
pub(crate) struct LocalState(Mutex<HashMap<TypeId, Entry>>);

impl LocalState {
    pub(crate) fn insert<T: Send + Sync + 'static>(&self, value: T) -> Option<Arc<T>> {
        let old = self.lock().insert(TypeId::of::<T>(), Arc::new(value));
        downcast(old?)
    }

    pub(crate) fn get<T: Send + Sync + 'static>(&self) -> Option<Arc<T>> {
        downcast(self.lock().get(&TypeId::of::<T>())?.clone())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<TypeId, Entry>> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

fn downcast<T: Send + Sync + 'static>(entry: Entry) -> Option<Arc<T>> {
    entry.downcast::<T>().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_state_is_found_by_type_and_replaced_per_type() {
        let mut state = SharedState::default();
        state.insert(7u32);
        state.insert("name");
        state.insert(8u32);
        assert_eq!(*state.get::<u32>().unwrap(), 8);
        assert_eq!(*state.get::<&str>().unwrap(), "name");
        assert!(state.get::<u64>().is_none());
    }

    #[test]
    fn local_state_returns_what_it_replaces() {
        let local = LocalState::default();
        assert!(local.insert(String::from("a")).is_none());
        assert_eq!(*local.insert(String::from("b")).unwrap(), "a");
        assert_eq!(*local.get::<String>().unwrap(), "b");
    }
}
