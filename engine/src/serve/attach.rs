//! [`Attachment`]: a backend exposed as a loop device through a FUSE file,
//! without a filesystem mount. The server and `mkfs` both build on it.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use super::backend::BlockBackend;
use super::error::ServeError;
use super::fuse::{FuseExport, FuseOptions};
use super::loopdev::LoopDevice;

/// A loop device on a FUSE file that serves a backend. Dropping it detaches
/// the loop device and lazily unmounts the FUSE file.
pub struct Attachment {
    // Field order is drop order: the loop device lets go of the file before
    // the FUSE export is unmounted.
    loop_device: Option<LoopDevice>,
    export: Option<FuseExport>,
    export_file: PathBuf,
}

impl Attachment {
    /// Mounts a FUSE file at `export_file` (created if missing) that serves
    /// `backend`, and attaches a loop device to it.
    pub fn attach(
        backend: Arc<dyn BlockBackend>,
        export_file: &Path,
        read_only: bool,
    ) -> Result<Attachment, ServeError> {
        std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(export_file)
            .map_err(|e| ServeError::io("create", export_file, e))?;
        let mut attachment = Attachment {
            loop_device: None,
            export: None,
            export_file: export_file.to_path_buf(),
        };

        let options = FuseOptions {
            read_only,
            ..FuseOptions::default()
        };
        attachment.export = Some(FuseExport::mount(backend, export_file, &options)?);
        attachment.loop_device = Some(LoopDevice::attach(export_file, read_only)?);
        Ok(attachment)
    }

    /// Returns the loop device node.
    pub fn device(&self) -> &Path {
        self.loop_device
            .as_ref()
            .map_or(Path::new(""), |device| device.path())
    }

    /// Returns the FUSE file the loop device reads from.
    pub fn export_file(&self) -> &Path {
        &self.export_file
    }

    /// Returns how many FUSE requests failed so far.
    pub fn failed_requests(&self) -> u64 {
        self.export.as_ref().map_or(0, FuseExport::failed_requests)
    }

    /// Makes the loop device take the backend's new size; returns it.
    pub fn refresh_size(&self) -> Result<u64, ServeError> {
        let size = match &self.export {
            Some(export) => export.refresh_size()?,
            None => 0,
        };
        if let Some(device) = &self.loop_device {
            device.set_capacity()?;
        }
        Ok(size)
    }

    /// Detaches the loop device, unmounts the FUSE file and removes it.
    /// The unmount is retried for up to `busy_timeout` while the kernel
    /// still uses the file, such as after a lazy unmount of a filesystem
    /// on the loop device.
    pub fn detach(mut self, busy_timeout: Duration) -> Result<(), ServeError> {
        if let Some(device) = self.loop_device.take() {
            device.detach()?;
        }
        if let Some(export) = self.export.take() {
            export.unmount(busy_timeout)?;
        }
        remove_export_file(&self.export_file);
        Ok(())
    }
}

impl Drop for Attachment {
    fn drop(&mut self) {
        drop(self.loop_device.take());
        drop(self.export.take());
        remove_export_file(&self.export_file);
    }
}

fn remove_export_file(path: &Path) {
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        // EBUSY: a mount is still on it, as after a failed unmount.
        Err(e) => tracing::debug!(path = %path.display(), error = %e, "cannot remove FUSE file"),
    }
}
