//! Pulling on a fleet: the REST API (`rpull serve`), the agents on every node (`rpull agent`)
//! and the jobs between them over NATS JetStream, after osapi's design: a job is written to a
//! key-value bucket, its ID published on a subject naming its target, and each agent's answer
//! written to a responses bucket that the server watches.
//!
//! * [`target`]: `_any`, `_all`, hostnames and label selectors, and their subjects;
//! * [`job`]: the job and result types, and the pull a job runs on a node;
//! * [`auth`]: HS256 bearer tokens, roles and permissions;
//! * [`bus`]: the stream and buckets, created by whoever starts first;
//! * [`claims`]: the agents' blob claims, so a shared cache fetches each blob once;
//! * [`agent`]: the consumers and the job loop of `rpull agent`;
//! * [`dispatch`]: running a job for the API, over NATS or on the server's own node;
//! * [`http`]: the API's routes and error bodies;
//! * [`node`]: this node's engine, credentials, hostname and labels;
//! * [`server`]: `rpull serve`'s API: backend, key and listener.

pub mod agent;
pub mod auth;
pub mod bus;
pub mod claims;
pub mod dispatch;
pub mod http;
pub mod job;
pub mod node;
pub mod server;
pub mod target;

/// This machine's hostname (`gethostname`), or `localhost` when it has none.
pub fn system_hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most buf.len() bytes into buf.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return "localhost".to_string();
    }
    let end = buf.iter().position(|b| *b == 0).unwrap_or(buf.len());
    let name = String::from_utf8_lossy(&buf[..end]).trim().to_string();
    if name.is_empty() {
        "localhost".to_string()
    } else {
        name
    }
}
