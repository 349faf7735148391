//! Server reflection as a client (grpcurl, grpcio-reflection) asks it, in both protocol
//! versions: the services listed, and whether a symbol's file descriptor is served.

use tonic::transport::Channel;

/// What one reflection version answered.
#[derive(Debug, Default)]
pub struct Answer {
    pub services: Vec<String>,
    /// Whether the file holding the symbol asked for came back (non-empty).
    pub found_symbol: bool,
}

macro_rules! ask {
    ($v:ident, $addr:expr, $symbol:expr) => {{
        use tonic_reflection::pb::$v::ServerReflectionRequest;
        use tonic_reflection::pb::$v::server_reflection_client::ServerReflectionClient;
        use tonic_reflection::pb::$v::server_reflection_request::MessageRequest;
        use tonic_reflection::pb::$v::server_reflection_response::MessageResponse;
        let ch = Channel::from_shared(joule_client::normalize($addr).expect("address"))
            .expect("address")
            .connect()
            .await
            .expect("connect for reflection");
        let reqs = [
            MessageRequest::ListServices(String::new()),
            MessageRequest::FileContainingSymbol($symbol.to_string()),
        ]
        .map(|m| ServerReflectionRequest {
            host: String::new(),
            message_request: Some(m),
        });
        let mut answers = ServerReflectionClient::new(ch)
            .server_reflection_info(tokio_stream::iter(reqs))
            .await
            .expect("reflection stream")
            .into_inner();
        let mut out = Answer::default();
        while let Ok(Some(a)) = answers.message().await {
            match a.message_response {
                Some(MessageResponse::ListServicesResponse(l)) => {
                    out.services = l.service.into_iter().map(|s| s.name).collect();
                }
                Some(MessageResponse::FileDescriptorResponse(f)) => {
                    out.found_symbol = !f.file_descriptor_proto.is_empty();
                }
                _ => {}
            }
            if !out.services.is_empty() && out.found_symbol {
                break;
            }
        }
        out
    }};
}

/// `grpc.reflection.v1`.
pub async fn v1(addr: &str, symbol: &str) -> Answer {
    ask!(v1, addr, symbol)
}

/// `grpc.reflection.v1alpha`.
pub async fn v1alpha(addr: &str, symbol: &str) -> Answer {
    ask!(v1alpha, addr, symbol)
}

/// Asserts that both versions list `services` and serve `symbol`'s descriptor.
pub async fn assert_serves(addr: &str, services: &[&str], symbol: &str) {
    for (version, a) in [
        ("v1", v1(addr, symbol).await),
        ("v1alpha", v1alpha(addr, symbol).await),
    ] {
        for want in services {
            assert!(
                a.services.iter().any(|s| s == want),
                "reflection {version} does not list {want}: {:?}",
                a.services
            );
        }
        assert!(
            a.found_symbol,
            "reflection {version}: no descriptor for {symbol}"
        );
    }
}
