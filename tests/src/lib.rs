//! End-to-end tests of Tessera live in `tests/`; this library is empty.
