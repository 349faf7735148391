//! The scheduler's gRPC services, each generic over the [`Store`](crate::store::Store) it runs
//! on: the admin API ([`admin`], `joule.v1.Admin`), the worker registry ([`registry`],
//! `joule.internal.v1.Registry`, with the gateways' routing view [`routing`], their budget
//! leases ([`crate::limits`]) and usage reports) and tenants ([`tenants`]), what operators watch
//! ([`observe`]: events, top, a worker's logs) and the receiving end of the Raft transport ([`raft`]). Every
//! call is authenticated ([`auth`]) before it reads or writes anything. Services translate
//! requests into commands and state into replies; they never apply a command themselves and
//! never build a status by hand (that is [`crate::error`]).

pub mod admin;
pub mod auth;
pub mod observe;
pub mod raft;
pub mod registry;
pub mod routing;
pub mod tenants;
pub mod workloads;
