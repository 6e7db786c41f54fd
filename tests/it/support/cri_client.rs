//! A gRPC client of the CRI image service over a unix socket, playing crictl's part.
//!
//! Standalone (it names nothing else of the harness) so that `bench/cri.rs` includes this same
//! file with `#[path]`.

use std::path::Path;

use ::rpull::cri::api::image_service_client::ImageServiceClient;
use hyper_util::rt::TokioIo;
use tonic::transport::{Channel, Endpoint};

/// An image-service client on the socket at `socket`; panics if it does not connect. The
/// endpoint's URI is a placeholder: every connection goes to the socket.
pub async fn connect(socket: &Path) -> ImageServiceClient<Channel> {
    let path = socket.to_path_buf();
    let channel = Endpoint::try_from("http://[::]:50051")
        .unwrap()
        .connect_with_connector(tower::service_fn(move |_| {
            let path = path.clone();
            async move { Ok::<_, std::io::Error>(TokioIo::new(tokio::net::UnixStream::connect(path).await?)) }
        }))
        .await
        .expect("connect to the CRI socket");
    ImageServiceClient::new(channel)
}
