//! The embedded web UI (placeholder; being written).
