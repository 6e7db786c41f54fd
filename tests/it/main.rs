//! rpull's end-to-end tests, one binary: a module per area, each driving the real `rpull`
//! binary against real servers started on loopback (the distribution registry, nats-server)
//! and the helpers in `support/` (fault proxy, token service, PKI, image builders).

mod support;

mod cancel;
mod concurrency;
mod cri;
mod fault_proxy_selftest;
mod fleet;
mod generated;
mod harness;
mod hostile;
mod killpoints;
mod login;
mod manage;
mod mirrors;
mod pull;
mod pull_flags;
mod ranges;
mod registry_access;
mod reliability;
mod retries;
mod streaming;
