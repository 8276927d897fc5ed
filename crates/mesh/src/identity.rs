//! This node's identity: an ed25519 key created on first start in the data
//! directory (`identity.key`, mode 0600), so its PeerId stays the same across
//! restarts and an operator can write allow-lists before the first start
//! (`mcpplus peers id`).

use std::io::Write as _;
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::Path;

use libp2p::identity::Keypair;

/// The key's file inside the data directory.
pub const IDENTITY_FILE: &str = "identity.key";

/// Refuse a secret file (`what`) that other users could read, saying how to fix it.
pub fn ensure_private(path: &Path, what: &str) -> anyhow::Result<()> {
    let mode = std::fs::metadata(path)
        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?
        .permissions()
        .mode();
    anyhow::ensure!(
        mode & 0o077 == 0,
        "{} is readable by other users (mode {:o}); `chmod 600` it: {what}",
        path.display(),
        mode & 0o777
    );
    Ok(())
}

/// Read this node's key from `data_dir`, creating it (0600) if missing.
pub fn load_or_create(data_dir: &Path) -> anyhow::Result<Keypair> {
    let path = data_dir.join(IDENTITY_FILE);
    match std::fs::read(&path) {
        Ok(bytes) => {
            ensure_private(&path, "it is this node's private key")?;
            Keypair::from_protobuf_encoding(&bytes).map_err(|e| {
                anyhow::anyhow!(
                    "{} is not a libp2p key ({e}); move it away to create a new identity (the PeerId changes)",
                    path.display()
                )
            })
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(data_dir).map_err(|e| {
                anyhow::anyhow!(
                    "cannot create the data directory {}: {e}",
                    data_dir.display()
                )
            })?;
            let key = Keypair::generate_ed25519();
            let bytes = key.to_protobuf_encoding()?;
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)
                .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", path.display()))?;
            file.write_all(&bytes)?;
            file.sync_all()?;
            tracing::info!(event = "mesh.identity_created", peer_id = %key.public().to_peer_id(),
                path = %path.display(), "created this node's identity");
            Ok(key)
        }
        Err(e) => Err(anyhow::anyhow!("cannot read {}: {e}", path.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_is_created_once_private_and_stable() {
        let dir = std::env::temp_dir().join(format!("mcpplus-identity-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let first = load_or_create(&dir).unwrap().public().to_peer_id();
        let again = load_or_create(&dir).unwrap().public().to_peer_id();
        assert_eq!(first, again);
        let mode = std::fs::metadata(dir.join(IDENTITY_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        std::fs::set_permissions(
            dir.join(IDENTITY_FILE),
            std::fs::Permissions::from_mode(0o644),
        )
        .unwrap();
        let err = load_or_create(&dir).unwrap_err().to_string();
        assert!(err.contains("chmod 600"), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
