//! End-to-end tests: every test starts the real `sextant` binary (see
//! `sextant_tests::Server`) and talks to it with real clients.
//!
//! - `basic`: health endpoint, create/insert/select, clean shutdown and
//!   restart, SQL errors.
//! - `crash`: acknowledged writes survive repeated `kill -9`.

mod basic;
mod crash;
