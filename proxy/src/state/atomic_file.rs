//! Writing a file atomically and privately: a new temporary file beside it, then rename.
//!
//! The temporary file is `.NAME.tmp.RANDOM` in the target's directory (so the rename stays on
//! one filesystem), with 64 random bits from the OS in its name, created with `O_CREAT |
//! O_EXCL | O_NOFOLLOW` (`create_new`), mode 0600. A file or a symlink that someone placed at
//! that name makes the open fail instead of being followed or overwritten, and another name is
//! tried. The data is fsynced, renamed over the target (a symlink at the target itself is
//! replaced, not followed), and the directory fsynced, so a crash leaves either the old file or
//! the new one, never a torn one.

use std::fs::{File, OpenOptions};
use std::io::{ErrorKind, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// Mode bits of the file written: owner read and write only.
pub const FILE_MODE: u32 = 0o600;

/// Temporary names tried before giving up (each collision means a file was already there).
const ATTEMPTS: usize = 8;

/// Writes `bytes` to `path` atomically with mode [`FILE_MODE`]; see the module docs.
pub fn write(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "state".into());
    let (tmp, mut file) = create_temp(&dir, &name)?;
    let written = (|| {
        file.write_all(bytes)?;
        file.sync_all()?;
        drop(file);
        std::fs::rename(&tmp, path)
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
        return written;
    }
    if let Ok(d) = File::open(&dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// A new temporary file in `dir`, created exclusively, never through a symlink.
fn create_temp(dir: &Path, name: &str) -> std::io::Result<(PathBuf, File)> {
    let mut last = std::io::Error::new(ErrorKind::AlreadyExists, "no temporary name");
    for _ in 0..ATTEMPTS {
        let tmp = dir.join(format!(".{name}.tmp.{:016x}", random_u64()));
        let opened = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(FILE_MODE)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&tmp);
        match opened {
            Ok(f) => return Ok((tmp, f)),
            Err(e) if e.kind() == ErrorKind::AlreadyExists => last = e,
            Err(e) => return Err(e),
        }
    }
    Err(last)
}

/// 64 random bits from the OS (`/dev/urandom`); if it cannot be read, the std hasher's
/// per-process random keys mixed with the time and the process id.
fn random_u64() -> u64 {
    let mut b = [0u8; 8];
    if File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut b))
        .is_ok()
    {
        return u64::from_ne_bytes(b);
    }
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    h.write_u32(std::process::id());
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn dir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("zgate-atomic-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn written_private_with_no_temporary_left() {
        let d = dir("mode");
        let path = d.join("state.json");
        write(&path, b"one").unwrap();
        write(&path, b"two").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"two");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(std::fs::read_dir(&d).unwrap().count(), 1);
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn temporary_names_differ_and_a_placed_symlink_is_not_followed() {
        let d = dir("symlink");
        let (a, _) = create_temp(&d, "s").unwrap();
        let (b, _) = create_temp(&d, "s").unwrap();
        assert_ne!(a, b);
        // A symlink at a name: opening it exclusively fails, the target stays untouched.
        let victim = d.join("victim");
        std::fs::write(&victim, b"keep").unwrap();
        let link = d.join("link");
        std::os::unix::fs::symlink(&victim, &link).unwrap();
        let e = OpenOptions::new()
            .write(true)
            .create_new(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&link)
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::AlreadyExists);
        assert_eq!(std::fs::read(&victim).unwrap(), b"keep");
        let _ = std::fs::remove_dir_all(&d);
    }
}
