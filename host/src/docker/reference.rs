//! Image references as the distribution registry spells them:
//! `[domain[:port]/]path[:tag][@digest]`; no tag means `latest`.

/// A parsed image reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRef {
    /// `domain/path` (what a pull asks for), with `@digest` when pinned.
    pub repository: String,
    /// The tag; empty for digest references.
    pub tag: String,
}

impl ImageRef {
    /// `repository:tag`, or the digest reference.
    pub fn full(&self) -> String {
        if self.tag.is_empty() {
            self.repository.clone()
        } else {
            format!("{}:{}", self.repository, self.tag)
        }
    }

    /// Whether the reference names the `latest` tag (pulled every time, as in Nomad).
    pub fn is_latest(&self) -> bool {
        self.tag == "latest"
    }
}

/// Parses `image`; errors say why it is not a valid reference.
pub fn parse(image: &str) -> Result<ImageRef, String> {
    let invalid =
        |why: &str| format!("image {image:?} does not match registry specification: {why}");
    if image.is_empty() || image.len() > 4096 {
        return Err(invalid("empty or too long"));
    }
    let (name, digest) = match image.split_once('@') {
        Some((name, digest)) => {
            let (algorithm, hex) = digest
                .split_once(':')
                .ok_or_else(|| invalid("digest lacks an algorithm"))?;
            let valid_algorithm = !algorithm.is_empty()
                && algorithm
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "+._-".contains(c));
            if !valid_algorithm || hex.len() < 32 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
                return Err(invalid("malformed digest"));
            }
            (name, Some(digest))
        }
        None => (image, None),
    };
    // A tag is a `:` after the last `/` (a `:` before it is a registry port).
    let (path, tag) = match name.rfind(':') {
        Some(at) if !name[at..].contains('/') => (&name[..at], Some(&name[at + 1..])),
        _ => (name, None),
    };
    if let Some(tag) = tag {
        let valid = !tag.is_empty()
            && tag.len() <= 128
            && tag
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
            && tag
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c));
        if !valid {
            return Err(invalid("malformed tag"));
        }
    }
    let mut components = path.split('/').peekable();
    let first = components.peek().copied().unwrap_or_default();
    let has_domain =
        path.contains('/') && (first.contains('.') || first.contains(':') || first == "localhost");
    if has_domain {
        components.next();
        let (host, port) = first.split_once(':').unwrap_or((first, ""));
        let valid_host = !host.is_empty()
            && host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || ".-".contains(c));
        let valid_port = port.is_empty() || port.chars().all(|c| c.is_ascii_digit());
        if !valid_host || !valid_port || (first.contains(':') && port.is_empty()) {
            return Err(invalid("malformed registry host"));
        }
    }
    let mut any = false;
    for component in components {
        any = true;
        if !valid_component(component) {
            return Err(invalid(
                "repository names are lowercase letters, digits and separators",
            ));
        }
    }
    if !any {
        return Err(invalid("missing repository name"));
    }
    Ok(match (digest, tag) {
        (Some(digest), _) => ImageRef {
            repository: format!("{path}@{digest}"),
            tag: String::new(),
        },
        (None, Some(tag)) => ImageRef {
            repository: path.to_owned(),
            tag: tag.to_owned(),
        },
        (None, None) => ImageRef {
            repository: path.to_owned(),
            tag: "latest".to_owned(),
        },
    })
}

/// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`
fn valid_component(component: &str) -> bool {
    let bytes = component.as_bytes();
    if bytes.is_empty() || !is_alnum(bytes[0]) || !is_alnum(bytes[bytes.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < bytes.len() {
        if is_alnum(bytes[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < bytes.len() && !is_alnum(bytes[i]) {
            i += 1;
        }
        let separator = &component[start..i];
        let ok = separator == "."
            || separator == "_"
            || separator == "__"
            || separator.bytes().all(|b| b == b'-');
        if !ok {
            return false;
        }
    }
    true
}

fn is_alnum(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(image: &str, repository: &str, tag: &str) {
        assert_eq!(
            parse(image),
            Ok(ImageRef {
                repository: repository.to_owned(),
                tag: tag.to_owned()
            }),
            "{image}"
        );
    }

    #[test]
    fn parses_like_the_registry() {
        ok("busybox", "busybox", "latest");
        ok("busybox:1.36", "busybox", "1.36");
        ok("library/redis:7", "library/redis", "7");
        ok(
            "127.0.0.1:5000/team/app:v1",
            "127.0.0.1:5000/team/app",
            "v1",
        );
        ok("localhost/app", "localhost/app", "latest");
        ok(
            "registry.k8s.io/pause-amd64:3.3",
            "registry.k8s.io/pause-amd64",
            "3.3",
        );
        let digest = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
        ok(
            &format!("busybox@{digest}"),
            &format!("busybox@{digest}"),
            "",
        );
        // With both, the digest decides what is pulled.
        ok(
            &format!("busybox:1@{digest}"),
            &format!("busybox@{digest}"),
            "",
        );
    }

    #[test]
    fn refuses_malformed_references() {
        for image in [
            "",
            "Busybox",
            "busy box",
            "busybox:",
            "busybox:-x",
            "a//b",
            "busybox@sha256:xyz",
            "-a",
            "a-",
            "host:/a",
        ] {
            let err = parse(image).unwrap_err();
            assert!(
                err.contains("does not match registry specification"),
                "{image}: {err}"
            );
        }
    }
}
