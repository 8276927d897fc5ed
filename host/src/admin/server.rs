//! The server side of the admin socket.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};

use super::{AdminReply, AdminRequest};
use crate::toolset::ToolSet;

/// The longest request line accepted.
const MAX_REQUEST: u64 = 64 << 10;

/// A listening admin socket; the socket file is removed when dropped.
pub struct AdminServer {
    path: PathBuf,
    task: tokio::task::JoinHandle<()>,
}

impl AdminServer {
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for AdminServer {
    fn drop(&mut self) {
        self.task.abort();
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Listen on `path`. Fails (with what to do) if another live server owns it.
/// What the admin socket acts on: the served tools, and the mesh once the
/// server has joined one.
pub struct AdminTargets {
    pub toolset: Arc<ToolSet>,
    pub mesh: std::sync::OnceLock<mcpplus_mesh::node::MeshHandle>,
}

pub async fn start(path: &Path, targets: Arc<AdminTargets>) -> Result<AdminServer, String> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty())
        && !parent.exists()
    {
        std::fs::create_dir_all(parent)
            .map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
        let _ = std::fs::set_permissions(parent, std::fs::Permissions::from_mode(0o700));
    }
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        use std::os::unix::fs::FileTypeExt as _;
        // Never delete something that is not a socket (a mistyped path, a file
        // someone planted): say so instead.
        if !meta.file_type().is_socket() {
            return Err(format!(
                "{} exists and is not a socket; remove it yourself or choose another path with --admin-socket PATH",
                path.display()
            ));
        }
        if UnixStream::connect(path).await.is_ok() {
            return Err(format!(
                "another mcpplus server is using the admin socket {}; give this one its own with --admin-socket PATH, or pass --no-admin",
                path.display()
            ));
        }
        // Left behind by a server that did not stop cleanly.
        std::fs::remove_file(path)
            .map_err(|e| format!("cannot remove the stale socket {}: {e}", path.display()))?;
    }
    let listener = UnixListener::bind(path)
        .map_err(|e| format!("cannot listen on {}: {e}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| format!("cannot restrict {}: {e}", path.display()))?;
    let owner = std::fs::metadata(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?
        .uid();
    let task = tokio::spawn(accept(listener, owner, targets));
    tracing::info!(event = "admin.listening", socket = %path.display(), "admin endpoint ready");
    Ok(AdminServer {
        path: path.to_owned(),
        task,
    })
}

async fn accept(listener: UnixListener, owner: u32, targets: Arc<AdminTargets>) {
    let mut backoff = std::time::Duration::from_millis(10);
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                backoff = std::time::Duration::from_millis(10);
                tokio::spawn(serve_connection(stream, owner, targets.clone()));
            }
            // Out of file descriptors and the like: wait instead of spinning.
            Err(e) => {
                tracing::warn!(event = "admin.accept_failed", error = %e, "cannot accept an admin connection");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(std::time::Duration::from_secs(1));
            }
        }
    }
}

async fn serve_connection(stream: UnixStream, owner: u32, targets: Arc<AdminTargets>) {
    let peer = stream.peer_cred().map(|c| c.uid()).ok();
    let (read, mut write) = stream.into_split();
    if peer != Some(owner) {
        tracing::warn!(event = "admin.refused", peer_uid = ?peer, "admin connection from another user refused");
        let reply =
            AdminReply::error("refused: only the user running the server may use its admin socket");
        let _ = send(&mut write, &reply).await;
        return;
    }
    let mut reader = BufReader::new(read);
    loop {
        let mut line = String::new();
        match (&mut reader).take(MAX_REQUEST).read_line(&mut line).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let reply = match serde_json::from_str::<AdminRequest>(line.trim()) {
            Ok(request) => handle(&targets, request).await,
            Err(e) => AdminReply::error(format!(
                "bad request ({e}); send one JSON object per line, e.g. {{\"command\":\"list\"}}"
            )),
        };
        if send(&mut write, &reply).await.is_err() {
            return;
        }
    }
}

async fn handle(targets: &AdminTargets, request: AdminRequest) -> AdminReply {
    let toolset = &targets.toolset;
    if matches!(
        request,
        AdminRequest::List | AdminRequest::Breakers | AdminRequest::Peers
    ) {
        tracing::debug!(event = "admin.request", request = ?request, "admin request");
    } else {
        tracing::info!(event = "admin.request", request = ?request, "admin request");
    }
    let change = match request {
        AdminRequest::List => return AdminReply::components(toolset.list()),
        AdminRequest::Load { path } => toolset.load(&path).await,
        AdminRequest::Unload { name } => toolset.unload(&name).await,
        AdminRequest::Reload { name } => toolset.reload(&name).await,
        AdminRequest::Breakers => return breakers(toolset),
        AdminRequest::Peers => return peers(targets).await,
        AdminRequest::BreakerReset { destination } => return reset_breaker(toolset, &destination),
        AdminRequest::PeerSubmit { peer, submission } => {
            return peer_submit(targets, &peer, submission).await;
        }
    };
    match change {
        Ok(change) => AdminReply::change(&change),
        Err(e) => AdminReply::error(e.to_string()),
    }
}

/// Enqueue a task in `peer`'s queue over the mesh.
async fn peer_submit(
    targets: &AdminTargets,
    peer: &str,
    submission: mcpplus_mesh::protocol::Submission,
) -> AdminReply {
    use mcpplus_mesh::protocol::{MeshRequest, MeshResponse};
    let Some(mesh) = targets.mesh.get() else {
        return AdminReply::error(
            "this server is not in a mesh; start it with [mesh] in its config, --mesh-listen or --bootstrap (docs/mesh.md)",
        );
    };
    let peer_id = match peer.parse::<libp2p::PeerId>() {
        Ok(id) => id,
        Err(e) => return AdminReply::error(format!("`{peer}` is not a PeerId ({e})")),
    };
    match mesh.request(peer_id, MeshRequest::Submit(submission)).await {
        Ok(MeshResponse::Submitted { id, state, new }) => AdminReply::submitted(
            serde_json::json!({"peer": peer, "id": id, "state": state, "new": new}),
        ),
        Ok(MeshResponse::Denied { error } | MeshResponse::Refused { error }) => {
            AdminReply::error(format!("{peer} refused the task: {error}"))
        }
        Ok(other) => AdminReply::error(format!("{peer} answered unexpectedly: {other:?}")),
        Err(e) => AdminReply::error(format!("cannot reach {peer}: {e}")),
    }
}

/// Every allowed mesh peer as `{peerId, connected, roles, …}`.
async fn peers(targets: &AdminTargets) -> AdminReply {
    let Some(mesh) = targets.mesh.get() else {
        return AdminReply::error(
            "this server is not in a mesh; start it with [mesh] in its config, --mesh-listen or --bootstrap (docs/mesh.md)",
        );
    };
    let list = mesh
        .peers()
        .await
        .into_iter()
        .map(|p| {
            serde_json::json!({
                "peerId": p.peer_id.to_string(),
                "connected": p.connected,
                "roles": p.roles.iter().map(|r| r.as_str()).collect::<Vec<_>>(),
                "addresses": p.addresses.iter().map(|a| a.to_string()).collect::<Vec<_>>(),
                "latencyMs": p.latency.map(|l| l.as_secs_f64() * 1e3),
                "agentVersion": p.agent_version,
            })
        })
        .collect();
    AdminReply::peers(list)
}

/// Every breaker as `{destination, state, …}`.
fn breakers(toolset: &ToolSet) -> AdminReply {
    let list = toolset
        .runtime()
        .outbound()
        .breakers()
        .list(std::time::Instant::now());
    AdminReply::breakers(
        list.into_iter()
            .map(|(destination, snapshot)| {
                let mut value = serde_json::to_value(snapshot).unwrap_or_default();
                value["destination"] = destination.into();
                value
            })
            .collect(),
    )
}

/// Close a breaker named as `scheme://host[:port]` (the port defaults to the scheme's).
fn reset_breaker(toolset: &ToolSet, destination: &str) -> AdminReply {
    let key = match mcpplus_policy::Destination::parse(destination).map(|d| d.exact_key()) {
        Ok(Some(key)) => key,
        Ok(None) => {
            return AdminReply::error(format!(
                "`{destination}` names more than one destination; give one scheme://host:port"
            ));
        }
        Err(e) => return AdminReply::error(e),
    };
    if toolset.runtime().outbound().breakers().reset(&key) {
        tracing::info!(event = "breaker.reset", destination = %key, "circuit breaker reset by an operator");
        breakers(toolset)
    } else {
        AdminReply::error(format!(
            "there is no breaker for {key}: no tool has called it since the server started (`mcpplus breakers` lists them)"
        ))
    }
}

async fn send(
    write: &mut tokio::net::unix::OwnedWriteHalf,
    reply: &AdminReply,
) -> std::io::Result<()> {
    let mut line = serde_json::to_vec(reply).unwrap_or_default();
    line.push(b'\n');
    write.write_all(&line).await
}
