//! Shared helpers for zgate end-to-end tests.
