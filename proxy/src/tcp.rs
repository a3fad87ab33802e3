//! Opaque TCP: open the route's connection (plain, or mTLS to a peer proxy) and copy bytes
//! both ways.
//!
//! `copy_bidirectional` propagates half-close: when one side finishes sending, the other
//! side's write half is shut down and the remaining direction keeps flowing.

use crate::detect::Protocol;
use crate::drain;
use crate::proxy::{connect_route, Io, ProxyError, Shared};
use crate::route::Route;

/// Connection attempts on different endpoints of a Service before giving up.
const MAX_ENDPOINT_ATTEMPTS: usize = 3;

pub async fn forward<T: Io>(
    shared: &Shared,
    mut client: T,
    route: &Route,
    // Held so that a drain waits for this connection (up to the grace period).
    _drain: drain::Watch,
) -> Result<(), ProxyError> {
    let (mut server, _active) = match &route.balancer {
        None => (connect_route(shared, route, Protocol::Opaque).await?, None),
        Some(b) => {
            // A Service: the least-loaded endpoint; another one if it cannot be reached.
            let mut tried = Vec::new();
            loop {
                let ep =
                    b.0.pick_connection(&tried)
                        .ok_or_else(|| ProxyError::NoEndpoints(b.0.name.clone()))?;
                tried.push(ep.endpoint.addr);
                let endpoint_route = ep.route(shared.tls.is_some());
                match connect_route(shared, endpoint_route, Protocol::Opaque).await {
                    Ok(io) => {
                        ep.record(true);
                        break (io, Some(ep.start_connection()));
                    }
                    Err(e) => {
                        ep.record(false);
                        if tried.len() >= MAX_ENDPOINT_ATTEMPTS {
                            return Err(e);
                        }
                        tracing::debug!(endpoint = %ep.endpoint.addr, "connect failed, trying another endpoint: {e}");
                    }
                }
            }
        }
    };
    tokio::io::copy_bidirectional(&mut client, &mut server).await?;
    Ok(())
}
