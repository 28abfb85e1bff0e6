//! Paths resolved beneath the alloc dir, the way Nomad's `os.Root` does:
//! every symlink on the way is followed inside the root only, and one that
//! resolves outside it (relative with `..`, or absolute) is an escape.
//!
//! Tasks write into their alloc dir (it is mounted into their containers),
//! so anything found there is the task's, not the operator's; a check by
//! name alone would let a task plant `data/x -> /` and have a later bind
//! mount follow it. The FIFO opener in `logs::fifo` confines its opens the
//! same way.

use std::io;
use std::path::{Component, Path};

use cap_std::ambient_authority;
use cap_std::fs::Dir;

/// Why `path` (lexically inside `root`) leads out of `root` on the real
/// filesystem, or `None` when it stays inside. Each existing prefix of the
/// path is resolved beneath `root`; the first missing one ends the walk
/// (what does not exist cannot lead anywhere, and Docker creates a missing
/// bind source under a parent that was checked). A root that cannot be
/// opened has nothing to follow: `None`.
pub fn leads_out(root: &Path, path: &Path) -> Option<String> {
    let relative = path.strip_prefix(root).ok()?;
    let dir = Dir::open_ambient_dir(root, ambient_authority()).ok()?;
    let mut prefix = std::path::PathBuf::new();
    for component in relative.components() {
        match component {
            Component::Normal(part) => prefix.push(part),
            Component::CurDir => continue,
            // Lexical checks run first; anything else here is refused.
            _ => return Some(format!("{} is not a plain path", path.display())),
        }
        match dir.metadata(&prefix) {
            Ok(_) => {}
            Err(error) if error.kind() == io::ErrorKind::NotFound => return None,
            Err(error) => {
                return Some(format!(
                    "{} leads outside the alloc dir ({error})",
                    root.join(&prefix).display()
                ));
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symlinks_that_resolve_outside_are_escapes() {
        let root = tempfile::tempdir().unwrap();
        let root = root.path();
        std::fs::create_dir_all(root.join("data/inner")).unwrap();
        std::os::unix::fs::symlink("/etc", root.join("data/absolute")).unwrap();
        std::os::unix::fs::symlink("../../..", root.join("data/climb")).unwrap();
        std::os::unix::fs::symlink("inner", root.join("data/sibling")).unwrap();
        std::os::unix::fs::symlink("climb/etc", root.join("data/chained")).unwrap();

        assert_eq!(leads_out(root, &root.join("data/inner")), None);
        assert_eq!(
            leads_out(root, &root.join("data/sibling")),
            None,
            "a symlink within the root"
        );
        assert_eq!(leads_out(root, &root.join("data/missing/deeper")), None);
        assert_eq!(leads_out(root, &root.join("data")), None);
        for escape in [
            "data/absolute",
            "data/climb",
            "data/chained",
            "data/absolute/new-dir",
        ] {
            let why = leads_out(root, &root.join(escape)).unwrap_or_else(|| panic!("{escape}"));
            assert!(
                why.contains("leads outside the alloc dir"),
                "{escape}: {why}"
            );
        }
        assert_eq!(
            leads_out(root, Path::new("/elsewhere")),
            None,
            "not below the root"
        );
    }
}
