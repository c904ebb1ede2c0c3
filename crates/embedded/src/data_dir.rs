//! The data directory's permissions: it holds every customer's events, key hashes and the page-token
//! secret, so it is its owner's alone: the directory `0700`, its files `0600`, whatever the umask.
//!
//! Each database file is created `0600` before SQLite opens it: SQLite gives a database's `-wal` and
//! `-shm` files the database file's mode, so they are private too. A directory or file left open to
//! others (by an older build, or by hand) is tightened when it is opened, with a warning: whoever could
//! read it may have already.

use std::fs::{self, OpenOptions, Permissions};
use std::io;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// The data directory's mode: its owner's alone.
pub const DIRECTORY_MODE: u32 = 0o700;
/// The mode of every file in the data directory: readable and writable by its owner only.
pub const FILE_MODE: u32 = 0o600;

/// Creates the directory `path` (and missing parents) with mode [`DIRECTORY_MODE`]; an existing one
/// that others may enter is tightened to it, with a warning.
pub fn create_private_directory(path: &Path) -> io::Result<()> {
    match fs::create_dir(path) {
        // `mkdir` applies the umask; setting the mode afterwards does not.
        Ok(()) => fs::set_permissions(path, Permissions::from_mode(DIRECTORY_MODE)),
        Err(error) if error.kind() == io::ErrorKind::AlreadyExists => restrict(path, DIRECTORY_MODE),
        Err(error) if error.kind() == io::ErrorKind::NotFound => {
            // The parents are missing: they are not the data directory, and get the usual mode.
            if let Some(parent) = path.parent() {
                fs::create_dir_all(parent)?;
            }
            create_private_directory(path)
        }
        Err(error) => Err(error),
    }
}

/// Creates an empty file `path` with mode [`FILE_MODE`] if it is missing; an existing one that others
/// may read is tightened to it, with a warning.
pub fn create_private_file(path: &Path) -> io::Result<()> {
    match OpenOptions::new().write(true).create_new(true).mode(FILE_MODE).open(path) {
        Ok(_) => fs::set_permissions(path, Permissions::from_mode(FILE_MODE)),
        Err(error) if error.kind() == io::ErrorKind::AlreadyExists => restrict(path, FILE_MODE),
        Err(error) => Err(error),
    }
}

/// Sets `path` to `mode` if it allows more than `mode`, with a warning; does nothing to a path that is
/// missing or already as strict.
pub fn restrict(path: &Path, mode: u32) -> io::Result<()> {
    let current_mode = match fs::metadata(path) {
        Ok(metadata) => metadata.permissions().mode() & 0o777,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(error) => return Err(error),
    };
    if current_mode & !mode == 0 {
        return Ok(());
    }
    tracing::warn!(
        path = %path.display(),
        mode = format!("{current_mode:o}"),
        restricted_to = format!("{mode:o}"),
        "part of the data directory was open to other users; restricting it"
    );
    fs::set_permissions(path, Permissions::from_mode(mode))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode_of(path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn new_directories_and_files_are_private_and_open_ones_are_tightened() {
        let root = tempfile::tempdir().unwrap();
        let data_dir = root.path().join("parent").join("data");
        create_private_directory(&data_dir).unwrap();
        assert_eq!(mode_of(&data_dir), DIRECTORY_MODE);
        let file = data_dir.join("meta.db");
        create_private_file(&file).unwrap();
        assert_eq!(mode_of(&file), FILE_MODE);

        fs::set_permissions(&data_dir, Permissions::from_mode(0o755)).unwrap();
        fs::set_permissions(&file, Permissions::from_mode(0o644)).unwrap();
        create_private_directory(&data_dir).unwrap();
        create_private_file(&file).unwrap();
        assert_eq!((mode_of(&data_dir), mode_of(&file)), (DIRECTORY_MODE, FILE_MODE));

        // Stricter than needed is left alone.
        fs::set_permissions(&file, Permissions::from_mode(0o400)).unwrap();
        restrict(&file, FILE_MODE).unwrap();
        assert_eq!(mode_of(&file), 0o400);
        restrict(&data_dir.join("missing"), FILE_MODE).unwrap();
    }
}
