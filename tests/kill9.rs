//! kill -9 test.
