//! Opaque TCP: connect to the route's target and copy bytes both ways.
//!
//! `copy_bidirectional` propagates half-close: when one side finishes sending, the other
//! side's write half is shut down and the remaining direction keeps flowing.

use crate::drain;
use crate::proxy::{connect, ProxyError};
use crate::route::Route;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};

pub async fn forward<T: AsyncRead + AsyncWrite + Unpin>(
    mut client: T,
    route: &Route,
    connect_timeout: Duration,
    // Held so that a drain waits for this connection (up to the grace period).
    _drain: drain::Watch,
) -> Result<(), ProxyError> {
    let mut server = connect(route.target, connect_timeout).await?;
    tokio::io::copy_bidirectional(&mut client, &mut server).await?;
    Ok(())
}
