//! The receiving end of the Raft transport (`joule.internal.v1.Raft`): other replicas' messages,
//! accepted only with the cluster's peer token, so nobody who merely reaches the port can inject
//! Raft messages.

use joule_proto::internal::v1 as pb;
use joule_proto::internal::v1::raft_server::Raft;
use protobuf::Message as _;
use tonic::{Request, Response, Status};

use crate::error::Error;
use crate::raft::{RaftMessage, RaftNode};

pub struct RaftService {
    pub node: RaftNode,
    pub peer_token: String,
}

#[tonic::async_trait]
impl Raft for RaftService {
    async fn step(&self, req: Request<pb::RaftBatch>) -> Result<Response<pb::RaftAck>, Status> {
        super::auth::check_bearer(&req, &self.peer_token, "Raft/Step", "peer")?;
        let b = req.into_inner();
        if b.to != self.node.id() {
            return Err(Error::Precondition(format!(
                "this is replica {}, not {}: check --peers on replica {}",
                self.node.id(),
                b.to,
                b.from
            ))
            .into());
        }
        // Decode the whole batch first: a bad one is refused whole, never half applied.
        let msgs = b
            .messages
            .iter()
            .map(|m| RaftMessage::parse_from_bytes(m))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| Error::Invalid(format!("a Raft message does not decode: {e}")))?;
        for m in msgs {
            self.node.step(m);
        }
        Ok(Response::new(pb::RaftAck {}))
    }
}
