//! Plain TCP passthrough (`kuma.io/protocol` tcp, kafka, tls or absent): bytes both ways,
//! never traced.

use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncWrite};

use super::connect::EndpointConnector;
use super::upstream::Upstream;

/// Connects to the next endpoint that accepts and copies bytes until either side closes.
pub(crate) async fn pass_through<S>(mut downstream: S, upstream: Arc<Upstream<EndpointConnector>>)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    for endpoint in upstream.plan() {
        match endpoint.client.connect().await {
            Ok(mut stream) => {
                upstream.mark_up(endpoint);
                if let Err(e) = tokio::io::copy_bidirectional(&mut downstream, &mut stream).await {
                    tracing::debug!(endpoint = %endpoint.address, error = %e, "tcp stream ended with an error");
                }
                return;
            }
            Err(e) => {
                tracing::debug!(endpoint = %endpoint.address, error = %e, "tcp connect failed");
                upstream.mark_down(endpoint);
            }
        }
    }
    // No endpoint accepted: closing the connection is all TCP can say.
}
