"""Task adapters: everything task-specific (data, models, forward outputs, decoding, metrics)."""
