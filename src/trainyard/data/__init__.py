"""Data loading (Hub, local files, bundled fixtures) and row formats."""
