//! Lexical path handling with Go's `path/filepath` semantics (Unix form),
//! so host paths come out exactly as Nomad spells them, and the alloc-dir
//! sandbox check.

/// Go's `filepath.Clean`: the shortest lexically equivalent path. Repeated
/// and trailing separators and `.` elements go, `..` consumes the element
/// before it (a rooted path cannot climb above `/`), and an empty result is
/// `.`.
pub(super) fn clean(path: &str) -> String {
    if path.is_empty() {
        return ".".to_owned();
    }
    let rooted = path.starts_with('/');
    let mut parts: Vec<&str> = Vec::new();
    // Leading `..` elements of a relative path stay; nothing pops them.
    let mut kept_parents = 0usize;
    for element in path.split('/') {
        match element {
            "" | "." => {}
            ".." => {
                if parts.len() > kept_parents {
                    parts.pop();
                } else if !rooted {
                    parts.push("..");
                    kept_parents += 1;
                }
            }
            name => parts.push(name),
        }
    }
    let joined = parts.join("/");
    if rooted {
        format!("/{joined}")
    } else if joined.is_empty() {
        ".".to_owned()
    } else {
        joined
    }
}

/// Go's `filepath.Join` of two elements: empty elements are ignored, the
/// result is cleaned, and two empty elements give "".
pub(super) fn join(base: &str, rest: &str) -> String {
    match (base.is_empty(), rest.is_empty()) {
        (true, true) => String::new(),
        (true, false) => clean(rest),
        (false, true) => clean(base),
        (false, false) => clean(&format!("{base}/{rest}")),
    }
}

/// Nomad's `expandPath`: an absolute `dir` cleaned, else `dir` joined to
/// `base`.
pub(super) fn expand(base: &str, dir: &str) -> String {
    if dir.starts_with('/') {
        clean(dir)
    } else {
        join(base, dir)
    }
}

/// Whether `child` lies outside `parent` (the alloc dir), judged lexically:
/// an absolute child must be `parent` or below it, a relative one (taken
/// relative to `parent`) must not climb out with `..`.
///
/// Nomad opens `parent` as an `os.Root`, which also refuses symlinks that
/// lead out of it; that part needs the filesystem and is not checked here.
pub(super) fn escapes(parent: &str, child: &str) -> bool {
    if child.starts_with('/') {
        let parent = clean(parent);
        if !parent.starts_with('/') {
            // Go's filepath.Rel cannot relate an absolute path to a
            // relative one, and Nomad treats that error as escaping.
            return true;
        }
        let child = clean(child);
        let inside = child == parent
            || parent == "/"
            || child
                .strip_prefix(parent.as_str())
                .is_some_and(|rest| rest.starts_with('/'));
        !inside
    } else {
        let child = clean(child);
        child == ".." || child.starts_with("../")
    }
}
