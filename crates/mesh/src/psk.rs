//! The optional private-network key (`[mesh] psk_file`): every node of a
//! private mesh shares it, and a node without it cannot complete a transport
//! handshake at all (libp2p pnet, XSalsa20 keyed by the PSK). The file is in
//! the go-libp2p `swarm.key` format, so IPFS tooling can make and read it;
//! `mcpplus peers psk FILE` creates one. Audits show only its fingerprint.

use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::Path;
use std::str::FromStr as _;

pub use libp2p::pnet::PreSharedKey;

/// Read the key at `path`, refusing a file other users can read.
pub fn load(path: &Path) -> anyhow::Result<PreSharedKey> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        anyhow::anyhow!(
            "[mesh] psk_file {}: cannot read it ({e}); create one with `mcpplus peers psk {}`",
            path.display(),
            path.display()
        )
    })?;
    crate::identity::ensure_private(
        path,
        "it is the mesh's [mesh] psk_file, and anyone with it can join the mesh's transport",
    )?;
    PreSharedKey::from_str(&text).map_err(|e| {
        anyhow::anyhow!(
            "[mesh] psk_file {} is not a swarm key ({e}); it must be three lines: /key/swarm/psk/1.0.0/, /base16/, then 64 hex digits",
            path.display()
        )
    })
}

/// Write a new random key to `path` (0600); refuses to overwrite one.
pub fn create(path: &Path) -> anyhow::Result<PreSharedKey> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes)
        .map_err(|e| anyhow::anyhow!("cannot read random bytes from the OS: {e}"))?;
    let key = PreSharedKey::new(bytes);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", path.display()))?;
    file.write_all(key.to_key_file().as_bytes())?;
    file.sync_all()?;
    Ok(key)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    #[test]
    fn a_created_key_loads_back_with_the_same_fingerprint_and_private_mode() {
        let dir = std::env::temp_dir().join(format!("mcpplus-psk-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("swarm.key");
        let made = create(&path).unwrap();
        assert_eq!(
            load(&path).unwrap().fingerprint().to_string(),
            made.fingerprint().to_string()
        );
        assert!(create(&path).is_err(), "must not overwrite a key");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(load(&path).unwrap_err().to_string().contains("chmod 600"));
        std::fs::write(dir.join("bad.key"), "not a key").unwrap();
        std::fs::set_permissions(dir.join("bad.key"), std::fs::Permissions::from_mode(0o600))
            .unwrap();
        assert!(
            load(&dir.join("bad.key"))
                .unwrap_err()
                .to_string()
                .contains("not a swarm key")
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
