//! Opaque TCP: open the route's connection (plain, or mTLS to a peer proxy) and copy bytes
//! both ways.
//!
//! `copy_bidirectional` propagates half-close: when one side finishes sending, the other
//! side's write half is shut down and the remaining direction keeps flowing.

use crate::detect::Protocol;
use crate::drain;
use crate::proxy::{connect_route, Io, ProxyError, Shared};
use crate::route::Route;

pub async fn forward<T: Io>(
    shared: &Shared,
    mut client: T,
    route: &Route,
    // Held so that a drain waits for this connection (up to the grace period).
    _drain: drain::Watch,
) -> Result<(), ProxyError> {
    let mut server = connect_route(shared, route, Protocol::Opaque).await?;
    tokio::io::copy_bidirectional(&mut client, &mut server).await?;
    Ok(())
}
