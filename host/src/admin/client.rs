//! The client side of the admin socket, for `mcpplus tools`.

use std::path::Path;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

use super::{AdminReply, AdminRequest};

/// A change can compile a component cold or wait out an unload's drain time.
const REPLY_TIMEOUT: Duration = Duration::from_secs(600);

/// Send one request and wait for its reply.
pub async fn request(socket: &Path, request: &AdminRequest) -> anyhow::Result<AdminReply> {
    let stream = UnixStream::connect(socket).await.map_err(|e| {
        anyhow::anyhow!(
            "cannot reach a server's admin socket at {}: {e}; is `mcpplus serve` running (without --no-admin), and is this its --admin-socket?",
            socket.display()
        )
    })?;
    let (read, mut write) = stream.into_split();
    let mut line = serde_json::to_vec(request)?;
    line.push(b'\n');
    write.write_all(&line).await?;
    let mut reply = String::new();
    tokio::time::timeout(REPLY_TIMEOUT, BufReader::new(read).read_line(&mut reply))
        .await
        .map_err(|_| anyhow::anyhow!("the server did not reply within {REPLY_TIMEOUT:?}"))??;
    anyhow::ensure!(
        !reply.is_empty(),
        "the server closed the connection without replying"
    );
    Ok(serde_json::from_str(&reply)?)
}
