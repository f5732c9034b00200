//! Cache backends for the `cache` step kind. Nothing is cached implicitly: only what a `cache` step wraps.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use flujo_core::{Clock, Value};

/// Stores wrapped-step outputs by key (blake3 of the wrapped step's fingerprint and its input).
pub trait CacheBackend: Send + Sync {
    /// The output stored under `key`, or `None` when there is none or it has expired.
    fn get(&self, key: &[u8; 32]) -> Option<Arc<Value>>;
    /// Stores `value` under `key`, replacing any earlier entry. With `ttl_s` it expires that many seconds from
    /// now; with `None` it never expires. The `cache` policy stores only successful outputs.
    fn put(&self, key: [u8; 32], value: Arc<Value>, ttl_s: Option<f64>);
}

/// A cached value and its expiry (ms since the epoch).
type Entry = (Arc<Value>, Option<i64>);

/// In-memory cache (the default), with optional TTL per entry.
pub struct MemoryCache {
    clock: Arc<dyn Clock>,
    entries: Mutex<HashMap<[u8; 32], Entry>>,
}

impl MemoryCache {
    /// An empty cache whose entries expire by `clock` (the runner's clock when the builder makes it).
    pub fn new(clock: Arc<dyn Clock>) -> Self {
        MemoryCache { clock, entries: Mutex::new(HashMap::new()) }
    }
}

impl CacheBackend for MemoryCache {
    fn get(&self, key: &[u8; 32]) -> Option<Arc<Value>> {
        let mut map = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        let (value, expires) = map.get(key)?;
        if let Some(exp) = expires {
            if self.clock.now_ms() >= *exp {
                map.remove(key);
                return None;
            }
        }
        Some(value.clone())
    }

    fn put(&self, key: [u8; 32], value: Arc<Value>, ttl_s: Option<f64>) {
        let expires = ttl_s.map(|t| self.clock.now_ms().saturating_add((t * 1000.0) as i64));
        self.entries.lock().unwrap_or_else(|p| p.into_inner()).insert(key, (value, expires));
    }
}
