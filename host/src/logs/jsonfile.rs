//! Reading a container's `json-file` log directly, when the engine is local
//! and uses that driver: no engine CPU per line, and no line lost to
//! rotation.
//!
//! The engine writes one JSON object per message (`{"log": "…", "stream":
//! "stdout", "time": "…"}`) to `<id>-json.log` and rotates it by renaming
//! it to `.1`, `.2`, … and deleting the oldest. A follower that reads
//! through the logs API races that deletion (with Nomad's `max-file=2`,
//! `max-size=2m` a fast writer loses most of its output). Here every file
//! is opened as soon as it appears (inotify on the container's directory)
//! and read through its descriptor, which keeps a renamed or deleted file
//! readable: once opened, nothing can be lost. Files are identified by
//! device and inode, so renames do not confuse the order.

use std::collections::{HashMap, HashSet, VecDeque};
use std::ffi::OsString;
use std::fs::File;
use std::io::{self, Read as _};
use std::os::fd::{AsFd as _, OwnedFd};
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};

use serde::Deserialize;
use tokio::io::unix::AsyncFd;
use tokio::sync::Notify;

use crate::docker::logs::{Output, parse_rfc3339_nanos};

/// Bytes read per call.
const READ_BYTES: usize = 64 * 1024;
thread_local! {
    static READ_BUFFER: std::cell::RefCell<Vec<u8>> = std::cell::RefCell::new(vec![0; READ_BYTES]);
}

/// Rotated files looked for (`.1` … `.9`).
const MAX_ROTATED: usize = 9;
/// A line longer than this without a newline is dropped (corrupt file).
const MAX_LINE: usize = 4 * 1024 * 1024;

/// One line of the file, for lines off the usual shape.
#[derive(Deserialize)]
struct Line<'a> {
    #[serde(borrow)]
    log: std::borrow::Cow<'a, str>,
    stream: &'a str,
    time: &'a str,
}

/// Parses one JSON line: the body goes into `body` (cleared first), the
/// stream and timestamp are returned; `None` for a line that is not a log
/// message. Lines of the engine's usual shape (`{"log":…,"stream":…,
/// "time":…}`) are parsed without allocating; others (with `attrs`, say)
/// go through serde.
pub fn parse_line(line: &[u8], body: &mut Vec<u8>) -> Option<(Output, Option<i64>)> {
    body.clear();
    if let Some(parsed) = parse_usual(line, body) {
        return Some(parsed);
    }
    body.clear();
    let line: Line<'_> = serde_json::from_slice(line).ok()?;
    let output = output(line.stream.as_bytes())?;
    body.extend_from_slice(line.log.as_bytes());
    Some((output, parse_rfc3339_nanos(line.time)))
}

fn output(stream: &[u8]) -> Option<Output> {
    match stream {
        b"stdout" => Some(Output::Stdout),
        b"stderr" => Some(Output::Stderr),
        _ => None,
    }
}

/// The fast path of [`parse_line`].
fn parse_usual(line: &[u8], body: &mut Vec<u8>) -> Option<(Output, Option<i64>)> {
    let rest = line.strip_prefix(br#"{"log":""#)?;
    let rest = unescape(rest, body)?;
    let rest = rest.strip_prefix(br#","stream":""#)?;
    let end = rest.iter().position(|b| *b == b'"')?;
    let output = output(&rest[..end])?;
    let rest = rest[end + 1..].strip_prefix(br#","time":""#)?;
    let end = rest.iter().position(|b| *b == b'"')?;
    if &rest[end + 1..] != b"}" {
        return None;
    }
    let time = std::str::from_utf8(&rest[..end]).ok()?;
    Some((output, parse_rfc3339_nanos(time)))
}

/// Decodes a JSON string body (after its opening quote) into `out`;
/// returns what follows the closing quote.
fn unescape<'a>(mut input: &'a [u8], out: &mut Vec<u8>) -> Option<&'a [u8]> {
    loop {
        let at = input.iter().position(|b| *b == b'"' || *b == b'\\')?;
        out.extend_from_slice(&input[..at]);
        if input[at] == b'"' {
            return Some(&input[at + 1..]);
        }
        let escape = *input.get(at + 1)?;
        input = &input[at + 2..];
        match escape {
            b'n' => out.push(b'\n'),
            b't' => out.push(b'\t'),
            b'r' => out.push(b'\r'),
            b'b' => out.push(0x08),
            b'f' => out.push(0x0c),
            b'"' | b'\\' | b'/' => out.push(escape),
            b'u' => {
                let unit = hex4(input)?;
                input = &input[4..];
                let ch = if (0xd800..0xdc00).contains(&unit) {
                    // A surrogate pair: the low half follows as \uXXXX.
                    let low = input
                        .strip_prefix(b"\\u")
                        .and_then(hex4)
                        .filter(|low| (0xdc00..0xe000).contains(low));
                    match low {
                        Some(low) => {
                            input = &input[6..];
                            char::from_u32(0x10000 + ((unit - 0xd800) << 10) + (low - 0xdc00))
                        }
                        None => None,
                    }
                } else {
                    char::from_u32(unit)
                };
                let ch = ch.unwrap_or(char::REPLACEMENT_CHARACTER);
                let mut utf8 = [0u8; 4];
                out.extend_from_slice(ch.encode_utf8(&mut utf8).as_bytes());
            }
            _ => return None,
        }
    }
}

fn hex4(input: &[u8]) -> Option<u32> {
    let digits = std::str::from_utf8(input.get(..4)?).ok()?;
    u32::from_str_radix(digits, 16).ok()
}

#[derive(Debug)]
struct Open {
    file: File,
    id: (u64, u64),
}

/// A container's json-file log, read in order across rotations.
#[derive(Debug)]
pub struct JsonLog {
    dir: PathBuf,
    name: OsString,
    /// Opened files, oldest first; the front one is being read.
    files: VecDeque<Open>,
    /// Files read to the end that may still be in the directory under a
    /// rotated name. Their descriptors stay open until they are gone from
    /// it, so their inodes cannot be reused by a newer file meanwhile.
    done: Vec<Open>,
    /// Device and inode of every file in `files` and `done`.
    seen: HashSet<(u64, u64)>,
    /// Bytes after the last complete line of the front file.
    partial: Vec<u8>,
    /// The body of the line being parsed.
    body: Vec<u8>,
    /// Lines that were not log messages.
    pub skipped_lines: u64,
}

impl JsonLog {
    /// Opens the log at `path` and every rotated file beside it, oldest
    /// first.
    pub fn open(path: &Path) -> io::Result<Self> {
        let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "not a log file path",
            ));
        };
        let mut log = Self {
            dir: dir.to_owned(),
            name: name.to_owned(),
            files: VecDeque::new(),
            done: Vec::new(),
            seen: HashSet::new(),
            partial: Vec::new(),
            body: Vec::new(),
            skipped_lines: 0,
        };
        log.refresh()?;
        if log.files.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("{} does not exist", path.display()),
            ));
        }
        Ok(log)
    }

    /// The directory to watch.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Opens files that appeared since the last look (a rotation made a new
    /// current file). Older rotated files come first.
    pub fn refresh(&mut self) -> io::Result<()> {
        // The common case, cheaply: the current file is still the newest
        // one we hold, so nothing rotated since the last look.
        if let (Ok(meta), Some(newest)) = (
            std::fs::metadata(self.dir.join(&self.name)),
            self.files.back(),
        ) && (meta.dev(), meta.ino()) == newest.id
        {
            return Ok(());
        }
        let mut found = Vec::new();
        let mut present = HashSet::new();
        for k in (0..=MAX_ROTATED).rev() {
            let mut name = self.name.clone();
            if k > 0 {
                name.push(format!(".{k}"));
            }
            let path = self.dir.join(&name);
            let file = match File::open(&path) {
                Ok(file) => file,
                Err(err) if err.kind() == io::ErrorKind::NotFound => continue,
                Err(err) => return Err(err),
            };
            let meta = file.metadata()?;
            let id = (meta.dev(), meta.ino());
            present.insert(id);
            if self.seen.insert(id) {
                found.push(Open { file, id });
            }
        }
        self.files.extend(found);
        let seen = &mut self.seen;
        self.done.retain(|open| {
            let keep = present.contains(&open.id);
            if !keep {
                seen.remove(&open.id);
            }
            keep
        });
        Ok(())
    }

    /// Reads what is there (at most one chunk) and hands every complete
    /// message to `each`; false when there was nothing new.
    pub fn read(&mut self, mut each: impl FnMut(Output, Option<i64>, &[u8])) -> io::Result<bool> {
        loop {
            let Some(front) = self.files.front_mut() else {
                return Ok(false);
            };
            // One read buffer per thread, not per task: an idle task costs
            // no buffer memory at all.
            let n = READ_BUFFER.with_borrow_mut(|buf| {
                let n = front.file.read(buf)?;
                self.partial.extend_from_slice(&buf[..n]);
                io::Result::Ok(n)
            })?;
            if n == 0 {
                if self.files.len() > 1 {
                    // A rotated file is complete: move on to the next.
                    if !self.partial.is_empty() {
                        self.skipped_lines += 1;
                        self.partial.clear();
                    }
                    if let Some(done) = self.files.pop_front() {
                        self.done.push(done);
                    }
                    continue;
                }
                return Ok(false);
            }
            let mut start = 0;
            while let Some(end) = self.partial[start..].iter().position(|b| *b == b'\n') {
                let line = &self.partial[start..start + end];
                match parse_line(line, &mut self.body) {
                    Some((output, timestamp)) => each(output, timestamp, &self.body),
                    None => self.skipped_lines += 1,
                }
                start += end + 1;
            }
            self.partial.drain(..start);
            if self.partial.len() > MAX_LINE {
                self.skipped_lines += 1;
                self.partial.clear();
            }
            return Ok(true);
        }
    }
}

/// One inotify instance for the whole plugin (the kernel allows only a few
/// per user), waking the forwarder of whichever directory changed.
#[derive(Debug, Clone)]
pub struct Watcher {
    inner: Arc<WatcherInner>,
}

#[derive(Debug)]
struct WatcherInner {
    fd: AsyncFd<OwnedFd>,
    wakers: Mutex<HashMap<i32, Weak<Notify>>>,
}

/// A directory being watched; unwatched on drop.
#[derive(Debug)]
pub struct Watch {
    inner: Arc<WatcherInner>,
    wd: i32,
    notify: Arc<Notify>,
}

impl Watch {
    /// Resolves after the directory changed since the last call (or at once
    /// if it changed in between).
    pub async fn changed(&self) {
        self.notify.notified().await;
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        let mut wakers = self
            .inner
            .wakers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let last = wakers.get(&self.wd).is_some_and(|w| w.strong_count() <= 1);
        if last {
            wakers.remove(&self.wd);
            let _ = rustix::fs::inotify::remove_watch(self.inner.fd.get_ref(), self.wd);
        }
    }
}

impl Watcher {
    /// Starts the watcher; needs a tokio runtime.
    pub fn start() -> io::Result<Self> {
        use rustix::fs::inotify::CreateFlags;
        let fd = rustix::fs::inotify::init(CreateFlags::CLOEXEC | CreateFlags::NONBLOCK)?;
        #[expect(
            deprecated,
            reason = "the registered value is an OwnedFd, which owns its descriptor: the I/O-safety gap `register` marks unsafe does not arise"
        )]
        let fd = AsyncFd::new(fd)?;
        let inner = Arc::new(WatcherInner {
            fd,
            wakers: Mutex::new(HashMap::new()),
        });
        tokio::spawn(Self::dispatch(Arc::downgrade(&inner)));
        Ok(Self { inner })
    }

    /// Watches `dir` for new and written files.
    pub fn watch(&self, dir: &Path) -> io::Result<Watch> {
        use rustix::fs::inotify::WatchFlags;
        let wd = rustix::fs::inotify::add_watch(
            self.inner.fd.get_ref(),
            dir,
            WatchFlags::CREATE | WatchFlags::MODIFY | WatchFlags::MOVED_TO,
        )?;
        let mut wakers = self
            .inner
            .wakers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let notify = match wakers.get(&wd).and_then(Weak::upgrade) {
            Some(notify) => notify,
            None => {
                let notify = Arc::new(Notify::new());
                wakers.insert(wd, Arc::downgrade(&notify));
                notify
            }
        };
        Ok(Watch {
            inner: Arc::clone(&self.inner),
            wd,
            notify,
        })
    }

    async fn dispatch(inner: Weak<WatcherInner>) {
        let mut space = vec![std::mem::MaybeUninit::<u8>::uninit(); 16 * 1024];
        loop {
            let Some(strong) = inner.upgrade() else {
                return;
            };
            let Ok(mut guard) = strong.fd.readable().await else {
                return;
            };
            let mut woken = Vec::new();
            let mut overflow = false;
            {
                let mut reader =
                    rustix::fs::inotify::Reader::new(strong.fd.get_ref().as_fd(), &mut space);
                loop {
                    match reader.next() {
                        Ok(event) => {
                            if event
                                .events()
                                .contains(rustix::fs::inotify::ReadFlags::QUEUE_OVERFLOW)
                            {
                                overflow = true;
                            } else {
                                woken.push(event.wd());
                            }
                        }
                        Err(rustix::io::Errno::AGAIN) => {
                            guard.clear_ready();
                            break;
                        }
                        Err(rustix::io::Errno::INTR) => {}
                        Err(err) => {
                            tracing::warn!(error = %err, "reading inotify events failed; log forwarding falls back to polling");
                            return;
                        }
                    }
                }
            }
            let wakers = strong
                .wakers
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let targets: Vec<Arc<Notify>> = if overflow {
                wakers.values().filter_map(Weak::upgrade).collect()
            } else {
                woken.sort_unstable();
                woken.dedup();
                woken
                    .iter()
                    .filter_map(|wd| wakers.get(wd).and_then(Weak::upgrade))
                    .collect()
            };
            drop(wakers);
            for notify in targets {
                notify.notify_one();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write as _;

    fn line(stream: &str, ts: &str, log: &str) -> String {
        format!(
            "{}\n",
            serde_json::json!({ "log": log, "stream": stream, "time": ts })
        )
    }

    #[test]
    fn lines_become_messages() {
        let mut body = Vec::new();
        let text = "a \"q\" \\ / <&> \u{2028} é 😀 \u{1}\t\n";
        let json = line("stderr", "2026-11-23T00:00:00.000000001Z", text);
        let parsed = parse_line(json.trim_end().as_bytes(), &mut body).unwrap();
        assert_eq!(parsed, (Output::Stderr, Some(1_795_392_000_000_000_001)));
        assert_eq!(std::str::from_utf8(&body).unwrap(), text);
        // The engine's own escapes (Go's encoder) and a lone surrogate.
        let go = br#"{"log":"\u003chi\u003e \ud83d\ude00 \ud800!\n","stream":"stdout","time":"2026-11-23T00:00:00Z"}"#;
        assert_eq!(parse_line(go, &mut body).map(|p| p.0), Some(Output::Stdout));
        assert_eq!(std::str::from_utf8(&body).unwrap(), "<hi> 😀 \u{fffd}!\n");
        // Extra fields take the slow path and still parse.
        let attrs = br#"{"log":"x\n","stream":"stdout","attrs":{"tag":"web"},"time":"2026-11-23T00:00:00Z"}"#;
        assert!(parse_line(attrs, &mut body).is_some());
        assert_eq!(body, b"x\n");
        assert!(parse_line(br#"{"log":"x","stream":"stdin","time":"t"}"#, &mut body).is_none());
        assert!(parse_line(b"not json", &mut body).is_none());
        assert!(parse_line(br#"{"log":"unterminated"#, &mut body).is_none());
    }

    #[test]
    fn rotations_lose_nothing_once_a_file_was_opened() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c-json.log");
        let mut current = File::create(&path).unwrap();
        current
            .write_all(line("stdout", "2026-11-23T00:00:00Z", "1\n").as_bytes())
            .unwrap();
        let mut log = JsonLog::open(&path).unwrap();
        let mut got = Vec::new();
        let mut drain = |log: &mut JsonLog| {
            while log
                .read(|_, _, body| got.push(String::from_utf8_lossy(body).into_owned()))
                .unwrap()
            {}
        };
        drain(&mut log);

        // Half a line, then a rotation: the rest of the line never comes,
        // the old file is renamed and a new one holds later lines.
        current
            .write_all(line("stdout", "2026-11-23T00:00:01Z", "2\n").as_bytes())
            .unwrap();
        std::fs::rename(&path, dir.path().join("c-json.log.1")).unwrap();
        let mut next = File::create(&path).unwrap();
        next.write_all(line("stdout", "2026-11-23T00:00:02Z", "3\n").as_bytes())
            .unwrap();
        log.refresh().unwrap();
        // A second rotation deletes the first file before we read it.
        std::fs::rename(&path, dir.path().join("c-json.log.1")).unwrap();
        let mut third = File::create(&path).unwrap();
        third
            .write_all(line("stdout", "2026-11-23T00:00:03Z", "4\n").as_bytes())
            .unwrap();
        log.refresh().unwrap();
        drain(&mut log);
        assert_eq!(got, ["1\n", "2\n", "3\n", "4\n"]);
        assert_eq!(log.skipped_lines, 0);
    }
}
