//! `mock:hash`, a deterministic offline embedder for tests and examples.
//!
//! It hashes each lower-cased word (letters and digits) and each pair of neighbouring words into one
//! of `dimension` buckets with a sign (feature hashing, blake3), adds them up and scales the vector to unit
//! length. Texts that share words are close; the same text always gives the same vector; no network.

use async_trait::async_trait;
use flujo_core::{Embedder, Embeddings, SkillError};

/// The default dimension of `mock:hash`.
pub const HASH_DIMENSION: usize = 256;

/// The smallest dimension of `mock:hash`.
pub const MIN_HASH_DIMENSION: usize = 8;

/// The `mock:hash` embedder.
#[derive(Debug, Clone)]
pub struct HashEmbedder {
    dimension: usize,
    /// `mock:hash` at the default dimension, else `mock:hash:DIM`.
    name: String,
}

impl HashEmbedder {
    /// An embedder of `dimension` (at least [`MIN_HASH_DIMENSION`]), named `mock:hash` at the default
    /// dimension and `mock:hash:DIM` at any other.
    pub fn new(dimension: usize) -> Self {
        let dimension = dimension.max(MIN_HASH_DIMENSION);
        let name = if dimension == HASH_DIMENSION { "mock:hash".to_owned() } else { format!("mock:hash:{dimension}") };
        HashEmbedder { dimension, name }
    }

    /// The embedding of one text.
    pub fn embed_one(&self, text: &str) -> Vec<f32> {
        let mut v = vec![0.0f32; self.dimension];
        let words: Vec<String> =
            text.split(|c: char| !c.is_alphanumeric()).filter(|w| !w.is_empty()).map(str::to_lowercase).collect();
        let mut add = |feature: &str, weight: f32| {
            let h = blake3::hash(feature.as_bytes());
            let b = h.as_bytes();
            let idx = u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]) as usize % self.dimension;
            let sign = if b[8] & 1 == 0 { 1.0 } else { -1.0 };
            v[idx] += sign * weight;
        };
        for w in &words {
            add(w, 1.0);
        }
        for pair in words.windows(2) {
            add(&format!("{} {}", pair[0], pair[1]), 0.5);
        }
        let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        if norm > 0.0 {
            v.iter_mut().for_each(|x| *x /= norm);
        } else {
            // An empty text still gets a valid (unit) vector.
            v[0] = 1.0;
        }
        v
    }
}

impl Default for HashEmbedder {
    fn default() -> Self {
        HashEmbedder::new(HASH_DIMENSION)
    }
}

#[async_trait]
impl Embedder for HashEmbedder {
    async fn embed(&self, texts: &[String]) -> Result<Embeddings, SkillError> {
        Ok(Embeddings::new(texts.iter().map(|t| self.embed_one(t)).collect()))
    }
    fn dimension(&self) -> Option<usize> {
        Some(self.dimension)
    }
    fn name(&self) -> &str {
        &self.name
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flujo_core::cosine;

    #[test]
    fn similar_texts_are_close_and_results_are_stable() {
        let e = HashEmbedder::default();
        let a = e.embed_one("How do I reset my password?");
        let b = e.embed_one("reset password help");
        let c = e.embed_one("Shipping costs to Madrid");
        assert_eq!(a, e.embed_one("How do I reset my password?"));
        assert!(cosine(&a, &b) > cosine(&a, &c), "{} vs {}", cosine(&a, &b), cosine(&a, &c));
        assert!((a.iter().map(|x| x * x).sum::<f32>() - 1.0).abs() < 1e-5);
        assert_eq!(e.embed_one("").len(), HASH_DIMENSION);
        assert_eq!(e.name(), "mock:hash");
        let small = HashEmbedder::new(64);
        assert_eq!((small.name(), small.embed_one("x").len()), ("mock:hash:64", 64));
    }
}
