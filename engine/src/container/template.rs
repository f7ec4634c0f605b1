//! OS template tarballs: lookup in the template cache and safe extraction.
//!
//! Extraction keeps ownership, modes, hard links, xattrs and device nodes,
//! and rejects every member that would land outside the root: absolute
//! paths, `..` components, and members written through a symlink that an
//! earlier member created. The `tar` crate does not create device nodes, so
//! character and block devices and FIFOs are made here with mknod(2).

use std::fs;
use std::io::{self, BufReader, Read};
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use nix::sys::stat::{Mode, SFlag, makedev, mknod};
use nix::unistd::{Gid, Uid, chown};
use tar::EntryType;

use super::xattrs;

use crate::error::{ErrorKind, HasKind};

/// Template file suffixes, in lookup order.
pub const SUFFIXES: [&str; 4] = [".tar.zst", ".tar.xz", ".tar.gz", ".tar"];

/// A template that could not be read or extracted.
#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    /// A member's path is absolute.
    #[error("Template {}: member {member} has an absolute path", template.display())]
    AbsoluteMember { template: PathBuf, member: String },

    /// A member's path or link target contains `..`.
    #[error("Template {}: member {member} leads outside the root through '..'", template.display())]
    ParentMember { template: PathBuf, member: String },

    /// A member would be written through a symlink.
    #[error(
        "Template {}: member {member} would be written through symlink {}",
        template.display(),
        symlink.display()
    )]
    ThroughSymlink {
        template: PathBuf,
        member: String,
        symlink: PathBuf,
    },

    /// A member could not be written.
    #[error("Template {}: unable to extract member {member}", template.display())]
    Member {
        template: PathBuf,
        member: String,
        #[source]
        source: io::Error,
    },

    /// The caller's cancel flag was set between two members.
    #[error("Extraction of template {} was cancelled", template.display())]
    Cancelled { template: PathBuf },

    /// The archive itself could not be read.
    #[error("Template {} could not be read", template.display())]
    Read {
        template: PathBuf,
        #[source]
        source: io::Error,
    },
}

impl HasKind for TemplateError {
    fn kind(&self) -> ErrorKind {
        match self {
            TemplateError::Member { .. } | TemplateError::Cancelled { .. } => ErrorKind::Io,
            TemplateError::Read { source, .. } if source.kind() == io::ErrorKind::NotFound => {
                ErrorKind::NotFound
            }
            TemplateError::Read { .. } => ErrorKind::Corrupt,
            _ => ErrorKind::InvalidArgument,
        }
    }
}

/// Finds template `name` in `cache`: the name itself if it already carries
/// a suffix, else `name` with each of [`SUFFIXES`].
pub fn find(cache: &Path, name: &str) -> Option<PathBuf> {
    if name.is_empty() || name.contains('/') || name.starts_with('.') {
        return None;
    }
    if SUFFIXES.iter().any(|suffix| name.ends_with(suffix)) {
        let path = cache.join(name);
        return path.is_file().then_some(path);
    }
    SUFFIXES
        .iter()
        .map(|suffix| cache.join(format!("{name}{suffix}")))
        .find(|p| p.is_file())
}

/// Returns the template name without its suffix, as OSTEMPLATE stores it.
pub fn base_name(name: &str) -> &str {
    SUFFIXES
        .iter()
        .find_map(|suffix| name.strip_suffix(suffix))
        .unwrap_or(name)
}

/// Extracts the tarball at `template` into the directory `root`.
pub fn extract(template: &Path, root: &Path) -> Result<(), TemplateError> {
    extract_cancellable(template, root, &AtomicBool::new(false))
}

/// Extracts like [`extract`] and stops before the next member once `cancel`
/// is set.
pub fn extract_cancellable(
    template: &Path,
    root: &Path,
    cancel: &AtomicBool,
) -> Result<(), TemplateError> {
    let read_err = |source| TemplateError::Read {
        template: template.to_path_buf(),
        source,
    };
    let reader = open_decoder(template).map_err(read_err)?;
    let mut archive = tar::Archive::new(reader);
    archive.set_preserve_permissions(true);
    archive.set_preserve_ownerships(true);
    // Extended attributes come from a pass of their own (see xattrs.rs),
    // because the tar crate drops values that contain a newline byte.
    archive.set_unpack_xattrs(false);
    archive.set_overwrite(true);

    let xattrs = xattrs::collect(open_decoder(template).map_err(read_err)?).map_err(read_err)?;
    let extractor = Extractor {
        template,
        root,
        xattrs: &xattrs,
    };
    for entry in archive.entries().map_err(read_err)? {
        if cancel.load(Ordering::Relaxed) {
            return Err(TemplateError::Cancelled {
                template: template.to_path_buf(),
            });
        }
        let mut entry = entry.map_err(read_err)?;
        extractor.extract_entry(&mut entry)?;
    }
    Ok(())
}

/// Opens the tarball with the decoder its magic bytes call for.
fn apply_xattrs(path: &Path, attrs: &[(Vec<u8>, Vec<u8>)]) -> io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    for (name, value) in attrs {
        xattr::set(path, std::ffi::OsStr::from_bytes(name), value)?;
    }
    Ok(())
}

fn open_decoder(path: &Path) -> io::Result<Box<dyn Read>> {
    let mut file = BufReader::new(fs::File::open(path)?);
    let mut magic = [0u8; 6];
    let peeked = {
        use std::io::BufRead;
        let buf = file.fill_buf()?;
        let n = buf.len().min(magic.len());
        magic[..n].copy_from_slice(&buf[..n]);
        n
    };
    let magic = &magic[..peeked];
    let reader: Box<dyn Read> = if magic.starts_with(&[0x1f, 0x8b]) {
        Box::new(flate2::read::GzDecoder::new(file))
    } else if magic.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0]) {
        Box::new(xz2::read::XzDecoder::new(file))
    } else if magic.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Box::new(zstd::stream::read::Decoder::with_buffer(file)?)
    } else {
        Box::new(file)
    };
    Ok(reader)
}

struct Extractor<'a> {
    template: &'a Path,
    root: &'a Path,
    xattrs: &'a xattrs::XattrMap,
}

impl Extractor<'_> {
    fn extract_entry<R: Read>(&self, entry: &mut tar::Entry<'_, R>) -> Result<(), TemplateError> {
        let member = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let relative = self.check_member_path(&member, &entry.path_bytes())?;
        if relative.as_os_str().is_empty() {
            return Ok(());
        }
        let entry_type = entry.header().entry_type();
        self.check_no_symlink_ancestor(&member, &relative)?;
        self.check_target(&member, &relative, entry_type)?;

        if entry_type == EntryType::Link {
            // A hard link's target is another member's path in the root.
            let link = entry.link_name_bytes().unwrap_or_default().into_owned();
            let link_relative = self.check_member_path(&member, &link)?;
            self.check_no_symlink_ancestor(&member, &link_relative)?;
            self.check_target(&member, &link_relative, EntryType::Link)?;
        }

        let member_err = |source| TemplateError::Member {
            template: self.template.to_path_buf(),
            member: member.clone(),
            source,
        };
        match entry_type {
            EntryType::Char | EntryType::Block | EntryType::Fifo => {
                self.make_node(entry, &relative).map_err(member_err)
            }
            _ => entry.unpack_in(self.root).map(|_| ()).map_err(member_err),
        }?;
        if entry_type != EntryType::Symlink
            && let Some(attrs) = self.xattrs.get(&relative)
        {
            apply_xattrs(&self.root.join(&relative), attrs).map_err(member_err)?;
        }
        Ok(())
    }

    /// Rejects absolute paths and `..`, and returns the path relative to the
    /// root without `.` components.
    fn check_member_path(&self, member: &str, raw: &[u8]) -> Result<PathBuf, TemplateError> {
        use std::os::unix::ffi::OsStrExt;
        let path = Path::new(std::ffi::OsStr::from_bytes(raw));
        let mut relative = PathBuf::new();
        for component in path.components() {
            match component {
                Component::RootDir | Component::Prefix(_) => {
                    return Err(TemplateError::AbsoluteMember {
                        template: self.template.to_path_buf(),
                        member: member.to_string(),
                    });
                }
                Component::ParentDir => {
                    return Err(TemplateError::ParentMember {
                        template: self.template.to_path_buf(),
                        member: member.to_string(),
                    });
                }
                Component::CurDir => {}
                Component::Normal(part) => relative.push(part),
            }
        }
        Ok(relative)
    }

    /// Rejects a member whose parent directories include a symlink on disk,
    /// since writing it would follow that symlink.
    fn check_no_symlink_ancestor(
        &self,
        member: &str,
        relative: &Path,
    ) -> Result<(), TemplateError> {
        let mut current = self.root.to_path_buf();
        let parents = relative
            .parent()
            .map(Path::components)
            .into_iter()
            .flatten();
        for component in parents {
            current.push(component);
            match fs::symlink_metadata(&current) {
                Ok(meta) if meta.file_type().is_symlink() => {
                    return Err(TemplateError::ThroughSymlink {
                        template: self.template.to_path_buf(),
                        member: member.to_string(),
                        symlink: current,
                    });
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Rejects a non-symlink member whose own path is an existing symlink:
    /// a directory entry there would chmod and chown the symlink's target.
    fn check_target(
        &self,
        member: &str,
        relative: &Path,
        entry_type: EntryType,
    ) -> Result<(), TemplateError> {
        if entry_type == EntryType::Symlink {
            return Ok(());
        }
        let target = self.root.join(relative);
        match fs::symlink_metadata(&target) {
            Ok(meta) if meta.file_type().is_symlink() => Err(TemplateError::ThroughSymlink {
                template: self.template.to_path_buf(),
                member: member.to_string(),
                symlink: target,
            }),
            _ => Ok(()),
        }
    }

    fn make_node<R: Read>(&self, entry: &tar::Entry<'_, R>, relative: &Path) -> io::Result<()> {
        let header = entry.header();
        let path = self.root.join(relative);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent)?;
        }
        match fs::remove_file(&path) {
            Ok(()) => {}
            Err(err) if err.kind() == io::ErrorKind::NotFound => {}
            Err(err) => return Err(err),
        }

        let kind = match header.entry_type() {
            EntryType::Char => SFlag::S_IFCHR,
            EntryType::Block => SFlag::S_IFBLK,
            _ => SFlag::S_IFIFO,
        };
        let major = header.device_major()?.unwrap_or(0);
        let minor = header.device_minor()?.unwrap_or(0);
        let mode = header.mode()? & 0o7777;
        mknod(
            &path,
            kind,
            Mode::from_bits_truncate(mode),
            makedev(major.into(), minor.into()),
        )?;

        let uid = u32::try_from(header.uid()?).map_err(io::Error::other)?;
        let gid = u32::try_from(header.gid()?).map_err(io::Error::other)?;
        chown(&path, Some(Uid::from_raw(uid)), Some(Gid::from_raw(gid)))?;
        // mknod applies the umask; set the exact mode afterwards.
        fs::set_permissions(&path, fs::Permissions::from_mode(mode))
    }
}
