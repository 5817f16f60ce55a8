//! End-to-end tests: every test starts the real `sextant` binary (see
//! `sextant_tests::Server`) and talks to it with real clients.
//!
//! - `alerts`: alert rules fire and resolve once, through restarts, with a
//!   real webhook receiver, on the manual alert clock.
//! - `auth`: users, grants and tokens across restarts; SCRAM logins and
//!   their refusals; failed logins limited.
//! - `catalog`: the server on a catalog in PostgreSQL.
//! - `basic`: health endpoint, create/insert/select, clean shutdown and
//!   restart, SQL errors, no listener beyond loopback without
//!   `--allow-unauthenticated`.
//! - `crash`: acknowledged writes survive repeated `kill -9`, through every
//!   ingest path (`paths`) while background jobs run.
//! - `damage`: damaged, truncated and missing Parquet files are named and
//!   the rest of the table answers; `CHECK TABLE`; a damaged or missing
//!   catalog stops start-up.
//! - `delete`: a `DELETE` among concurrent writers holds across `kill -9`
//!   and compaction.
//! - `keys`: keyed tables against a model through crashes; EXPLAIN shows
//!   the merge until compaction.
//! - `engine`: pruning in EXPLAIN, memory and buffer limits, WAL damage, psql.
//! - `flight`: Arrow Flight SQL with the Rust client.
//! - `ingest`: line protocol and JSON over HTTP, with bad input.
//! - `lifecycle`: compaction under concurrent queries, retention, orphans.
//! - `machine`: a new node on an empty data directory restores the
//!   catalog from the snapshot on the object store after the old one's
//!   disk is lost.
//! - `observe`: JSON logs with the query span.
//! - `overload`: past `--ingest-inflight-limit`, every ingest path waits,
//!   then is refused with its protocol's retryable error; queries answer.
//! - `pgfuzz`: random extended-query message sequences after login, built
//!   from the sqllogictest statements, answered without a crash or hang.
//! - `power`: power loss, a full disk and a failing fsync on a file system
//!   that forgets what was not fsynced (FUSE).
//! - `views`: materialized views equal their query through late data and
//!   `kill -9`; they refuse writes and show as views to catalogs.

mod alerts;
mod auth;
mod basic;
mod catalog;
mod cluster;
mod crash;
mod damage;
mod delete;
mod engine;
mod flight;
mod ingest;
mod keys;
mod lifecycle;
mod machine;
mod observe;
mod overload;
mod paths;
mod pgfuzz;
mod power;
mod views;
