//! `joule-scheduler`: the control plane. Three or five replicas agree on the cluster state
//! through Raft ([`raft`]); the state and the commands that change it live in [`state`].

pub mod raft;
pub mod state;
