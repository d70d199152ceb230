"""Model architectures written in TVM's relax nn frontend (imported only when an engine opens)."""
