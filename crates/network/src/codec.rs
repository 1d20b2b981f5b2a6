//! Length-prefixed byte messages for request-response, with size limits checked before any
//! allocation.

use std::io;

use libp2p::StreamProtocol;
use libp2p::futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use libp2p::request_response;

/// The error text that marks a size-limit breach, so the service can tell it from a dropped
/// connection and score the peer down.
pub(crate) const TOO_LARGE: &str = "message exceeds the size limit";

/// An inbound request as read off the wire. libp2p drops a request whose read fails without
/// telling us who sent it, so an oversized request is returned as such (unread) and the service
/// scores its sender down.
#[derive(Clone, Debug)]
pub(crate) enum Request {
    /// A request within the limit.
    Data(Vec<u8>),
    /// A request whose announced length exceeds the limit.
    Oversized(usize),
}

/// Payloads are opaque bytes behind a 4-byte big-endian length.
#[derive(Clone, Debug)]
pub(crate) struct BytesCodec {
    pub max_request_bytes: usize,
    pub max_response_bytes: usize,
}

/// Reads a length-prefixed message; `Err(length)` inside if it is over `max` (nothing more is
/// read then).
async fn read_limited<T: AsyncRead + Unpin + Send>(
    io: &mut T,
    max: usize,
) -> io::Result<Result<Vec<u8>, usize>> {
    let mut prefix = [0u8; 4];
    io.read_exact(&mut prefix).await?;
    let length = u32::from_be_bytes(prefix) as usize;
    if length > max {
        return Ok(Err(length));
    }
    let mut data = vec![0u8; length];
    io.read_exact(&mut data).await?;
    Ok(Ok(data))
}

async fn write_limited<T: AsyncWrite + Unpin + Send>(
    io: &mut T,
    data: &[u8],
    max: usize,
) -> io::Result<()> {
    if data.len() > max {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, TOO_LARGE));
    }
    let length = u32::try_from(data.len())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, TOO_LARGE))?;
    io.write_all(&length.to_be_bytes()).await?;
    io.write_all(data).await?;
    io.flush().await
}

impl request_response::Codec for BytesCodec {
    type Protocol = StreamProtocol;
    type Request = Request;
    type Response = Vec<u8>;

    async fn read_request<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Request>
    where
        T: AsyncRead + Unpin + Send,
    {
        Ok(match read_limited(io, self.max_request_bytes).await? {
            Ok(data) => Request::Data(data),
            Err(length) => Request::Oversized(length),
        })
    }

    async fn read_response<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Vec<u8>>
    where
        T: AsyncRead + Unpin + Send,
    {
        read_limited(io, self.max_response_bytes)
            .await?
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, TOO_LARGE))
    }

    async fn write_request<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        request: Request,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        match request {
            Request::Data(data) => write_limited(io, &data, self.max_request_bytes).await,
            Request::Oversized(_) => Err(io::Error::new(io::ErrorKind::InvalidInput, TOO_LARGE)),
        }
    }

    async fn write_response<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        response: Vec<u8>,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        write_limited(io, &response, self.max_response_bytes).await
    }
}

/// Whether a request-response I/O error is a peer's size-limit breach.
pub(crate) fn is_too_large(error: &io::Error) -> bool {
    error.kind() == io::ErrorKind::InvalidData && error.to_string().contains(TOO_LARGE)
}
