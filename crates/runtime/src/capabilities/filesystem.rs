//! wasi:filesystem with an audit trail.
//!
//! The guest sees only its granted directories, as WASI preopens; wasmtime-wasi
//! resolves every path through cap-std, which refuses `..`, absolute paths and
//! symlinks that lead outside a preopen, and refuses every mutation under a
//! read-only grant. This wrapper delegates each function to wasmtime-wasi
//! unchanged and turns each refusal (`not-permitted`, `access`) into a
//! `capability.denied` audit event naming the operation and the path.

use wasmtime::component::{HasData, Linker, Resource};
use wasmtime_wasi::filesystem::{WasiFilesystemCtxView, WasiFilesystemView};
use wasmtime_wasi::p2::bindings::filesystem::types::{
    ErrorCode, HostDescriptor, HostDirectoryEntryStream,
};
use wasmtime_wasi::p2::bindings::filesystem::{preopens, types};
use wasmtime_wasi::p2::{DynInputStream, DynOutputStream, FsError, FsResult};

use super::CallContext;
use crate::host_state::HostState;
use mcpplus_policy::imports::Capability;

/// The `HasData` marker for the audited filesystem bindings.
pub struct AuditedFilesystem;

impl HasData for AuditedFilesystem {
    type Data<'a> = AuditedFs<'a>;
}

/// wasmtime-wasi's filesystem view plus the call it serves.
pub struct AuditedFs<'a> {
    pub fs: WasiFilesystemCtxView<'a>,
    pub call: &'a CallContext,
}

/// Replace wasmtime-wasi's filesystem bindings (already in `linker`) with the
/// audited ones.
pub fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    linker.allow_shadowing(true);
    types::add_to_linker::<HostState, AuditedFilesystem>(linker, audited)?;
    preopens::add_to_linker::<HostState, AuditedFilesystem>(linker, audited)?;
    linker.allow_shadowing(false);
    Ok(())
}

fn audited(state: &mut HostState) -> AuditedFs<'_> {
    let (wasi, call) = state.wasi_and_call();
    AuditedFs {
        fs: wasi.filesystem(),
        call,
    }
}

/// Operations that change the filesystem (refused under a read-only grant).
const MUTATIONS: [&str; 11] = [
    "open-for-writing",
    "write",
    "append",
    "set-size",
    "set-times",
    "create-directory",
    "remove-directory",
    "rename",
    "symlink",
    "hard-link",
    "delete",
];

impl AuditedFs<'_> {
    /// Pass `result` through, recording an audit event when it is a refusal.
    fn audit<T>(&self, result: FsResult<T>, operation: &str, path: &str) -> FsResult<T> {
        if let Err(e) = &result
            && let Some(code @ (ErrorCode::NotPermitted | ErrorCode::Access)) = e.downcast_ref()
        {
            let reason = match code {
                ErrorCode::NotPermitted if MUTATIONS.contains(&operation) => {
                    "a change under a read-only grant, or a path outside the granted directories"
                }
                ErrorCode::NotPermitted => "the path leads outside the granted directories",
                _ => "the host's own file permissions refused access",
            };
            let target = if path.is_empty() {
                operation.to_string()
            } else {
                format!("{operation} {path}")
            };
            self.call.deny(Capability::Files, &target, reason);
        }
        result
    }
}

impl preopens::Host for AuditedFs<'_> {
    fn get_directories(&mut self) -> wasmtime::Result<Vec<(Resource<types::Descriptor>, String)>> {
        preopens::Host::get_directories(&mut self.fs)
    }
}

impl types::Host for AuditedFs<'_> {
    fn convert_error_code(&mut self, err: FsError) -> wasmtime::Result<ErrorCode> {
        types::Host::convert_error_code(&mut self.fs, err)
    }

    fn filesystem_error_code(
        &mut self,
        err: Resource<wasmtime::Error>,
    ) -> wasmtime::Result<Option<ErrorCode>> {
        types::Host::filesystem_error_code(&mut self.fs, err)
    }
}

impl HostDescriptor for AuditedFs<'_> {
    async fn advise(
        &mut self,
        fd: Resource<types::Descriptor>,
        offset: types::Filesize,
        len: types::Filesize,
        advice: types::Advice,
    ) -> FsResult<()> {
        self.fs.advise(fd, offset, len, advice).await
    }

    async fn sync_data(&mut self, fd: Resource<types::Descriptor>) -> FsResult<()> {
        self.fs.sync_data(fd).await
    }

    async fn get_flags(
        &mut self,
        fd: Resource<types::Descriptor>,
    ) -> FsResult<types::DescriptorFlags> {
        self.fs.get_flags(fd).await
    }

    async fn get_type(
        &mut self,
        fd: Resource<types::Descriptor>,
    ) -> FsResult<types::DescriptorType> {
        self.fs.get_type(fd).await
    }

    async fn set_size(
        &mut self,
        fd: Resource<types::Descriptor>,
        size: types::Filesize,
    ) -> FsResult<()> {
        let r = self.fs.set_size(fd, size).await;
        self.audit(r, "set-size", "")
    }

    async fn set_times(
        &mut self,
        fd: Resource<types::Descriptor>,
        atim: types::NewTimestamp,
        mtim: types::NewTimestamp,
    ) -> FsResult<()> {
        let r = self.fs.set_times(fd, atim, mtim).await;
        self.audit(r, "set-times", "")
    }

    async fn read(
        &mut self,
        fd: Resource<types::Descriptor>,
        len: types::Filesize,
        offset: types::Filesize,
    ) -> FsResult<(Vec<u8>, bool)> {
        self.fs.read(fd, len, offset).await
    }

    async fn write(
        &mut self,
        fd: Resource<types::Descriptor>,
        buf: Vec<u8>,
        offset: types::Filesize,
    ) -> FsResult<types::Filesize> {
        let r = self.fs.write(fd, buf, offset).await;
        self.audit(r, "write", "")
    }

    async fn read_directory(
        &mut self,
        fd: Resource<types::Descriptor>,
    ) -> FsResult<Resource<types::DirectoryEntryStream>> {
        self.fs.read_directory(fd).await
    }

    async fn sync(&mut self, fd: Resource<types::Descriptor>) -> FsResult<()> {
        self.fs.sync(fd).await
    }

    async fn create_directory_at(
        &mut self,
        fd: Resource<types::Descriptor>,
        path: String,
    ) -> FsResult<()> {
        let r = self.fs.create_directory_at(fd, path.clone()).await;
        self.audit(r, "create-directory", &path)
    }

    async fn stat(&mut self, fd: Resource<types::Descriptor>) -> FsResult<types::DescriptorStat> {
        self.fs.stat(fd).await
    }

    async fn stat_at(
        &mut self,
        fd: Resource<types::Descriptor>,
        path_flags: types::PathFlags,
        path: String,
    ) -> FsResult<types::DescriptorStat> {
        let r = self.fs.stat_at(fd, path_flags, path.clone()).await;
        self.audit(r, "stat", &path)
    }

    async fn set_times_at(
        &mut self,
        fd: Resource<types::Descriptor>,
        path_flags: types::PathFlags,
        path: String,
        atim: types::NewTimestamp,
        mtim: types::NewTimestamp,
    ) -> FsResult<()> {
        let r = self
            .fs
            .set_times_at(fd, path_flags, path.clone(), atim, mtim)
            .await;
        self.audit(r, "set-times", &path)
    }

    async fn link_at(
        &mut self,
        fd: Resource<types::Descriptor>,
        old_path_flags: types::PathFlags,
        old_path: String,
        new_descriptor: Resource<types::Descriptor>,
        new_path: String,
    ) -> FsResult<()> {
        let target = format!("{old_path} -> {new_path}");
        let r = self
            .fs
            .link_at(fd, old_path_flags, old_path, new_descriptor, new_path)
            .await;
        self.audit(r, "hard-link", &target)
    }

    async fn open_at(
        &mut self,
        fd: Resource<types::Descriptor>,
        path_flags: types::PathFlags,
        path: String,
        oflags: types::OpenFlags,
        flags: types::DescriptorFlags,
    ) -> FsResult<Resource<types::Descriptor>> {
        let writing = flags.contains(types::DescriptorFlags::WRITE)
            || oflags.intersects(types::OpenFlags::CREATE | types::OpenFlags::TRUNCATE);
        let r = self
            .fs
            .open_at(fd, path_flags, path.clone(), oflags, flags)
            .await;
        self.audit(r, if writing { "open-for-writing" } else { "open" }, &path)
    }

    fn drop(&mut self, fd: Resource<types::Descriptor>) -> wasmtime::Result<()> {
        HostDescriptor::drop(&mut self.fs, fd)
    }

    async fn readlink_at(
        &mut self,
        fd: Resource<types::Descriptor>,
        path: String,
    ) -> FsResult<String> {
        let r = self.fs.readlink_at(fd, path.clone()).await;
        self.audit(r, "readlink", &path)
    }

    async fn remove_directory_at(
        &mut self,
        fd: Resource<types::Descriptor>,
        path: String,
    ) -> FsResult<()> {
        let r = self.fs.remove_directory_at(fd, path.clone()).await;
        self.audit(r, "remove-directory", &path)
    }

    async fn rename_at(
        &mut self,
        fd: Resource<types::Descriptor>,
        old_path: String,
        new_fd: Resource<types::Descriptor>,
        new_path: String,
    ) -> FsResult<()> {
        let target = format!("{old_path} -> {new_path}");
        let r = self.fs.rename_at(fd, old_path, new_fd, new_path).await;
        self.audit(r, "rename", &target)
    }

    async fn symlink_at(
        &mut self,
        fd: Resource<types::Descriptor>,
        src_path: String,
        dest_path: String,
    ) -> FsResult<()> {
        let target = format!("{dest_path} -> {src_path}");
        let r = self.fs.symlink_at(fd, src_path, dest_path).await;
        self.audit(r, "symlink", &target)
    }

    async fn unlink_file_at(
        &mut self,
        fd: Resource<types::Descriptor>,
        path: String,
    ) -> FsResult<()> {
        let r = self.fs.unlink_file_at(fd, path.clone()).await;
        self.audit(r, "delete", &path)
    }

    fn read_via_stream(
        &mut self,
        fd: Resource<types::Descriptor>,
        offset: types::Filesize,
    ) -> FsResult<Resource<DynInputStream>> {
        self.fs.read_via_stream(fd, offset)
    }

    fn write_via_stream(
        &mut self,
        fd: Resource<types::Descriptor>,
        offset: types::Filesize,
    ) -> FsResult<Resource<DynOutputStream>> {
        let r = self.fs.write_via_stream(fd, offset);
        self.audit(r, "write", "")
    }

    fn append_via_stream(
        &mut self,
        fd: Resource<types::Descriptor>,
    ) -> FsResult<Resource<DynOutputStream>> {
        let r = self.fs.append_via_stream(fd);
        self.audit(r, "append", "")
    }

    async fn is_same_object(
        &mut self,
        a: Resource<types::Descriptor>,
        b: Resource<types::Descriptor>,
    ) -> wasmtime::Result<bool> {
        self.fs.is_same_object(a, b).await
    }

    async fn metadata_hash(
        &mut self,
        fd: Resource<types::Descriptor>,
    ) -> FsResult<types::MetadataHashValue> {
        self.fs.metadata_hash(fd).await
    }

    async fn metadata_hash_at(
        &mut self,
        fd: Resource<types::Descriptor>,
        path_flags: types::PathFlags,
        path: String,
    ) -> FsResult<types::MetadataHashValue> {
        let r = self.fs.metadata_hash_at(fd, path_flags, path.clone()).await;
        self.audit(r, "stat", &path)
    }
}

impl HostDirectoryEntryStream for AuditedFs<'_> {
    async fn read_directory_entry(
        &mut self,
        stream: Resource<types::DirectoryEntryStream>,
    ) -> FsResult<Option<types::DirectoryEntry>> {
        self.fs.read_directory_entry(stream).await
    }

    fn drop(&mut self, stream: Resource<types::DirectoryEntryStream>) -> wasmtime::Result<()> {
        HostDirectoryEntryStream::drop(&mut self.fs, stream)
    }
}
