//! Prometheus metrics (placeholder; being written).
