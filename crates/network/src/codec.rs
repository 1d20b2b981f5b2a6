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

#[cfg(test)]
mod tests {
    use libp2p::futures::executor::block_on;
    use libp2p::futures::io::Cursor;
    use libp2p::request_response::Codec;
    use proptest::prelude::*;

    use super::*;

    const MAX: usize = 256;

    fn codec() -> BytesCodec {
        BytesCodec {
            max_request_bytes: MAX,
            max_response_bytes: MAX,
        }
    }

    fn protocol() -> StreamProtocol {
        StreamProtocol::new("/test/1")
    }

    proptest! {
        #[test]
        fn requests_and_responses_round_trip(data in proptest::collection::vec(any::<u8>(), 0..=MAX)) {
            let mut wire = Cursor::new(Vec::new());
            block_on(codec().write_request(&protocol(), &mut wire, Request::Data(data.clone()))).unwrap();
            let mut wire = Cursor::new(wire.into_inner());
            let read = block_on(codec().read_request(&protocol(), &mut wire)).unwrap();
            prop_assert!(matches!(read, Request::Data(ref got) if *got == data));

            let mut wire = Cursor::new(Vec::new());
            block_on(codec().write_response(&protocol(), &mut wire, data.clone())).unwrap();
            let mut wire = Cursor::new(wire.into_inner());
            prop_assert_eq!(block_on(codec().read_response(&protocol(), &mut wire)).unwrap(), data);
        }

        /// Whatever a peer sends, reading never panics and never yields more than the limit.
        #[test]
        fn arbitrary_input_is_bounded(input in proptest::collection::vec(any::<u8>(), 0..1024)) {
            let mut wire = Cursor::new(input.clone());
            match block_on(codec().read_request(&protocol(), &mut wire)) {
                Ok(Request::Data(data)) => prop_assert!(data.len() <= MAX),
                Ok(Request::Oversized(length)) => prop_assert!(length > MAX),
                Err(_) => {}
            }
            let mut wire = Cursor::new(input);
            if let Ok(data) = block_on(codec().read_response(&protocol(), &mut wire)) {
                prop_assert!(data.len() <= MAX);
            }
        }
    }

    #[test]
    fn oversized_is_detected_from_the_prefix_alone() {
        // A prefix claiming 4 GiB with no body: refused without reading or allocating.
        let mut wire = Cursor::new(u32::MAX.to_be_bytes().to_vec());
        let read = block_on(codec().read_request(&protocol(), &mut wire)).unwrap();
        assert!(matches!(read, Request::Oversized(length) if length == u32::MAX as usize));
        let mut wire = Cursor::new(u32::MAX.to_be_bytes().to_vec());
        let error = block_on(codec().read_response(&protocol(), &mut wire)).unwrap_err();
        assert!(is_too_large(&error));
        // We never send what our own limit forbids.
        let mut wire = Cursor::new(Vec::new());
        let error =
            block_on(codec().write_response(&protocol(), &mut wire, vec![0; MAX + 1])).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::InvalidInput);
    }
}
