//! The execution folder of the `process` sandbox: writing the input files into it, and reading back the
//! files the code created or changed (the artifacts), bounded in number and size.
//!
//! The read-back runs after everything the code started is gone, so nothing can swap a file for a symbolic
//! link meanwhile; even so it never follows a link (links are skipped and reported as omitted), opens files
//! with `O_NOFOLLOW` where the platform has it, and reads only regular files (a FIFO would block the reader).

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;

use flujo_core::sandbox::{MAX_ARTIFACTS, MAX_PATH_LEN};
use flujo_core::{SandboxError, SandboxFile};

/// Most folder entries looked at when collecting artifacts (a program that makes millions of files does not
/// make the read-back take forever).
const MAX_ENTRIES: usize = 100_000;
/// Deepest folder nesting looked at.
const MAX_DEPTH: usize = 64;

fn io_error(what: &str, path: &Path, e: std::io::Error) -> SandboxError {
    SandboxError::backend(format!("{what} {}: {e}", path.display()), false)
}

/// Writes `files` under `dir` (their paths were checked by [`flujo_core::ExecRequest::check`]) and returns
/// their hashes, to tell changed files from unchanged ones afterwards.
pub(crate) fn write_inputs(dir: &Path, files: &[SandboxFile]) -> Result<BTreeMap<String, blake3::Hash>, SandboxError> {
    let mut hashes = BTreeMap::new();
    for f in files {
        flujo_core::sandbox::check_relative_path(&f.path)?;
        let path = dir.join(&f.path);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| io_error("cannot create", parent, e))?;
        }
        std::fs::write(&path, &f.bytes).map_err(|e| io_error("cannot write", &path, e))?;
        hashes.insert(f.path.clone(), blake3::hash(&f.bytes));
    }
    Ok(hashes)
}

/// The artifacts under `dir`: regular files whose content differs from `inputs` (or that are new), in path
/// order, at most `budget` bytes and [`MAX_ARTIFACTS`] files together; the paths of the others (too large,
/// not regular files, past the limits) are returned second.
pub(crate) fn collect(
    dir: &Path,
    inputs: &BTreeMap<String, blake3::Hash>,
    budget: u64,
) -> (Vec<SandboxFile>, Vec<String>) {
    let mut found = Vec::new();
    let mut omitted = Vec::new();
    let mut seen = 0usize;
    walk(dir, "", 0, &mut seen, &mut found, &mut omitted);
    found.sort();
    let mut artifacts = Vec::new();
    let mut left = budget;
    for rel in found {
        if artifacts.len() >= MAX_ARTIFACTS {
            omitted.push(rel);
            continue;
        }
        let path = dir.join(&rel);
        match read_bounded(&path, left) {
            Some(bytes) => {
                if inputs.get(&rel) == Some(&blake3::hash(&bytes)) {
                    continue; // an input file, unchanged
                }
                left -= bytes.len() as u64;
                artifacts.push(SandboxFile::new(rel, bytes));
            }
            None => {
                // Too large for what is left, or unreadable; an unchanged large input is not an artifact.
                if !inputs.contains_key(&rel) || changed_large_input(&path, inputs.get(&rel)) {
                    omitted.push(rel);
                }
            }
        }
    }
    omitted.sort();
    (artifacts, omitted)
}

fn changed_large_input(path: &Path, input: Option<&blake3::Hash>) -> bool {
    let Some(hash) = input else { return true };
    let Ok(mut f) = open_nofollow(path) else { return true };
    let mut hasher = blake3::Hasher::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match f.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                hasher.update(&buf[..n]);
            }
            Err(_) => return true,
        }
    }
    hasher.finalize() != *hash
}

fn walk(dir: &Path, prefix: &str, depth: usize, seen: &mut usize, found: &mut Vec<String>, omitted: &mut Vec<String>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        *seen += 1;
        let name = entry.file_name().to_string_lossy().into_owned();
        let rel = if prefix.is_empty() { name.clone() } else { format!("{prefix}/{name}") };
        if *seen > MAX_ENTRIES || rel.len() > MAX_PATH_LEN {
            omitted.push(rel);
            continue;
        }
        // `file_type` of a directory entry does not follow symbolic links.
        let Ok(kind) = entry.file_type() else { continue };
        if kind.is_dir() {
            if depth + 1 >= MAX_DEPTH {
                omitted.push(rel);
            } else {
                walk(&entry.path(), &rel, depth + 1, seen, found, omitted);
            }
        } else if kind.is_file() {
            found.push(rel);
        } else {
            omitted.push(rel); // a link, FIFO, socket or device: never followed or read
        }
    }
}

fn open_nofollow(path: &Path) -> std::io::Result<std::fs::File> {
    let mut options = std::fs::OpenOptions::new();
    options.read(true);
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK);
    }
    options.open(path)
}

/// The bytes of the regular file `path` when it has at most `limit` of them.
fn read_bounded(path: &Path, limit: u64) -> Option<Vec<u8>> {
    let f = open_nofollow(path).ok()?;
    let meta = f.metadata().ok()?;
    if !meta.is_file() || meta.len() > limit {
        return None;
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    f.take(limit + 1).read_to_end(&mut bytes).ok()?;
    (bytes.len() as u64 <= limit).then_some(bytes)
}

/// Makes every folder under `dir` writable by its owner again (code may have made one read-only), so that
/// the folder can be removed without administrator rights.
pub(crate) fn make_removable(dir: &Path, depth: usize) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if depth > MAX_DEPTH {
            return;
        }
        let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700));
        if let Ok(entries) = std::fs::read_dir(dir) {
            for e in entries.flatten() {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    make_removable(&e.path(), depth + 1);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn artifacts_are_new_or_changed_regular_files_within_the_budget() {
        let dir = tempfile::tempdir().unwrap();
        let inputs = write_inputs(
            dir.path(),
            &[SandboxFile::new("same.txt", b"same".to_vec()), SandboxFile::new("d/changed.txt", b"old".to_vec())],
        )
        .unwrap();
        std::fs::write(dir.path().join("d/changed.txt"), b"new").unwrap();
        std::fs::write(dir.path().join("out.txt"), b"hello").unwrap();
        std::fs::write(dir.path().join("big.bin"), vec![7u8; 100]).unwrap();
        #[cfg(unix)]
        std::os::unix::fs::symlink("/etc/passwd", dir.path().join("link")).unwrap();
        let (artifacts, omitted) = collect(dir.path(), &inputs, 50);
        let paths: Vec<&str> = artifacts.iter().map(|a| a.path.as_str()).collect();
        assert_eq!(paths, ["d/changed.txt", "out.txt"]);
        assert_eq!(artifacts[1].bytes, b"hello");
        assert!(omitted.contains(&"big.bin".to_owned()), "{omitted:?}");
        #[cfg(unix)]
        assert!(omitted.contains(&"link".to_owned()), "{omitted:?}");
    }
}
