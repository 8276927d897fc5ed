//! Capture of a guest's stdout/stderr: keeps the first `capacity` bytes and counts
//! the rest, never failing a write. A guest that floods its output keeps running
//! (its extra output is dropped and reported), and the host's memory stays bounded.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use tokio::io::AsyncWrite;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamError};

/// How many bytes a guest may write per call to one output stream before being told
/// to wait; writes are accepted (and possibly dropped) immediately anyway.
const WRITE_BUDGET: usize = 64 * 1024;

#[derive(Debug, Clone)]
pub struct CappedOutput {
    capacity: usize,
    state: Arc<Mutex<Captured>>,
}

#[derive(Debug, Default)]
struct Captured {
    kept: BytesMut,
    dropped: u64,
}

impl CappedOutput {
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity,
            state: Arc::default(),
        }
    }

    /// The bytes kept so far.
    pub fn contents(&self) -> Bytes {
        self.lock().kept.clone().freeze()
    }

    /// How many bytes were written past the capacity and dropped.
    pub fn dropped(&self) -> u64 {
        self.lock().dropped
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Captured> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn accept(&self, bytes: &[u8]) {
        let mut state = self.lock();
        let room = self.capacity.saturating_sub(state.kept.len());
        let keep = bytes.len().min(room);
        state.kept.extend_from_slice(&bytes[..keep]);
        state.dropped += (bytes.len() - keep) as u64;
    }
}

#[wasmtime_wasi::async_trait]
impl OutputStream for CappedOutput {
    fn write(&mut self, bytes: Bytes) -> Result<(), StreamError> {
        self.accept(&bytes);
        Ok(())
    }
    fn flush(&mut self) -> Result<(), StreamError> {
        Ok(())
    }
    fn check_write(&mut self) -> Result<usize, StreamError> {
        Ok(WRITE_BUDGET)
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for CappedOutput {
    async fn ready(&mut self) {}
}

impl AsyncWrite for CappedOutput {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.accept(buf);
        Poll::Ready(Ok(buf.len()))
    }
    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

impl IsTerminal for CappedOutput {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for CappedOutput {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }
    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_first_bytes_and_counts_the_rest() {
        let mut out = CappedOutput::new(5);
        out.write(Bytes::from_static(b"abc")).unwrap();
        out.write(Bytes::from_static(b"defgh")).unwrap();
        assert_eq!(&out.contents()[..], b"abcde");
        assert_eq!(out.dropped(), 3);
        assert_eq!(out.check_write().unwrap(), WRITE_BUDGET);
    }
}
