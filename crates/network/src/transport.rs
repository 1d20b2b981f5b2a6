//! TCP (+ optional pnet) + Noise + Yamux, with byte counters on the raw socket.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use either::Either;
use libp2p::core::muxing::StreamMuxerBox;
use libp2p::core::transport::{Boxed, Transport as _};
use libp2p::core::upgrade::Version;
use libp2p::futures::{AsyncRead, AsyncWrite};
use libp2p::identity::Keypair;
use libp2p::pnet::{PnetConfig, PreSharedKey};
use libp2p::{PeerId, noise, tcp, yamux};

use crate::error::{Error, Result};

/// Time allowed for the pnet, Noise and Yamux handshakes of a new connection, so half-open
/// handshakes cannot pile up.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(20);

/// Raw bytes sent and received on all connections, counted below encryption.
#[derive(Debug, Default)]
pub(crate) struct ByteCounters {
    pub bytes_in: AtomicU64,
    pub bytes_out: AtomicU64,
}

/// A socket that counts the bytes passing through it.
struct Counted<S> {
    inner: S,
    counters: Arc<ByteCounters>,
}

impl<S: AsyncRead + Unpin> AsyncRead for Counted<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(read)) = &poll {
            self.counters
                .bytes_in
                .fetch_add(*read as u64, Ordering::Relaxed);
        }
        poll
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Counted<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(written)) = &poll {
            self.counters
                .bytes_out
                .fetch_add(*written as u64, Ordering::Relaxed);
        }
        poll
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_close(cx)
    }
}

/// Builds the transport. With a pre-shared key, every connection first runs the pnet handshake,
/// so nodes without the key cannot even start Noise.
pub(crate) fn build(
    keypair: &Keypair,
    psk: Option<[u8; 32]>,
    counters: Arc<ByteCounters>,
) -> Result<Boxed<(PeerId, StreamMuxerBox)>> {
    let tcp =
        tcp::tokio::Transport::new(tcp::Config::default().nodelay(true)).map(move |socket, _| {
            Counted {
                inner: socket,
                counters: counters.clone(),
            }
        });
    let base =
        match psk {
            Some(key) => Either::Left(tcp.and_then(move |socket, _| {
                PnetConfig::new(PreSharedKey::new(key)).handshake(socket)
            })),
            None => Either::Right(tcp),
        };
    let noise = noise::Config::new(keypair).map_err(|error| Error::Setup(error.to_string()))?;
    Ok(base
        .upgrade(Version::V1Lazy)
        .authenticate(noise)
        .multiplex(yamux::Config::default())
        .timeout(HANDSHAKE_TIMEOUT)
        .map(|(peer, muxer), _| (peer, StreamMuxerBox::new(muxer)))
        .boxed())
}
