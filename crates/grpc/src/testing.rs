//! For tests of servers built on this crate: what a server's reflection lists, asked as grpcurl asks
//! (`grpc.reflection.v1`, and `v1alpha`, which older clients fall back to). Both versions must list
//! exactly the services served, so tests check both.

use tonic::transport::Channel;

/// Writes one reflection client function per protocol version; the two generated APIs have the same
/// shape in different modules.
macro_rules! listed_services {
    ($(#[$doc:meta])* $name:ident, $version:ident) => {
        $(#[$doc])*
        ///
        /// # Panics
        /// If the call fails or the answer is not a service list: a test failure.
        pub async fn $name(channel: Channel) -> Vec<String> {
            use tonic_reflection::pb::$version::server_reflection_client::ServerReflectionClient;
            use tonic_reflection::pb::$version::server_reflection_request::MessageRequest;
            use tonic_reflection::pb::$version::server_reflection_response::MessageResponse;
            use tonic_reflection::pb::$version::ServerReflectionRequest;

            let request = ServerReflectionRequest {
                host: String::new(),
                message_request: Some(MessageRequest::ListServices(String::new())),
            };
            let mut responses = ServerReflectionClient::new(channel)
                .server_reflection_info(futures::stream::iter([request]))
                .await
                .expect("a reflection call")
                .into_inner();
            let response = responses.message().await.expect("a reflection answer").expect("one response");
            let Some(MessageResponse::ListServicesResponse(list)) = response.message_response else {
                panic!("not a service list: {response:?}");
            };
            let mut names: Vec<String> = list.service.into_iter().map(|service| service.name).collect();
            names.sort();
            names
        }
    };
}

listed_services!(
    /// The services `grpc.reflection.v1` lists on `channel`, sorted.
    listed_services_v1,
    v1
);
listed_services!(
    /// The services `grpc.reflection.v1alpha` lists on `channel`, sorted.
    listed_services_v1alpha,
    v1alpha
);
