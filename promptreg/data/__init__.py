"""Data: example specs and loading (JSONL/CSV), and the fetchers of the demo dataset and base model."""
