//! The forwarding loop of one task.
//!
//! Messages are read from the engine's logs API, the part already forwarded
//! (per the [`Checkpoint`]) is dropped, and the rest is written into the
//! stream's FIFO in batches: whatever the engine has ready, up to
//! [`BATCH_BYTES`], goes out in one write. After every write the checkpoint
//! records the exact byte reached and the holder's count of the stream, so
//! a relaunched plugin neither loses nor repeats a line: what it wrote
//! after the last record is skipped ([`Forwarding::skip`]).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::io::AsyncWriteExt as _;
use tokio::net::unix::pipe::Sender;
use tokio_stream::StreamExt as _;
use tokio_util::sync::CancellationToken;

use super::checkpoint::{Checkpoint, Numbering, Position, already_sent};
use super::jsonfile::{JsonLog, Watch, Watcher};
use super::{Writer, Writers};
use crate::docker::logs::{LogMessage, LogStream, Output};
use crate::docker::{Docker, DockerError};

/// Shortest and longest pause before reconnecting to the logs API.
const BACKOFF_MIN: Duration = Duration::from_millis(500);
const BACKOFF_MAX: Duration = Duration::from_secs(120);

/// Most bytes gathered into one FIFO write.
const BATCH_BYTES: usize = 64 * 1024;
/// Most messages gathered into one batch.
const BATCH_MESSAGES: usize = 1024;

/// Errors after which reading logs cannot work (e.g. log driver `none`).
fn is_terminal(err: &DockerError) -> bool {
    let message = err.to_string().to_lowercase();
    message.contains("configured logging driver does not support reading")
        || message.contains("not implemented")
}

/// Nomad's logger backoff: grow by 15 % times a random factor in [1, 2),
/// between half a second and two minutes.
fn next_backoff(current: Duration) -> Duration {
    let jitter = 1.0
        + f64::from(
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default()
                .subsec_nanos()
                % 1000,
        ) / 1000.0;
    current
        .max(BACKOFF_MIN)
        .mul_f64(1.15 * jitter)
        .clamp(BACKOFF_MIN, BACKOFF_MAX)
}

/// Everything one task's forwarding needs.
#[derive(Debug)]
pub struct Forwarding {
    /// The engine.
    pub docker: Docker,
    /// Whose output.
    pub container_id: String,
    /// For log lines.
    pub task_id: String,
    /// Where the output goes.
    pub writers: Writers,
    /// What was already forwarded.
    pub checkpoint: Checkpoint,
    /// Per stream (stdout, stderr), bytes past the checkpoint's position
    /// that were written before a crash: the holder's count minus the
    /// checkpoint's. They are skipped.
    pub skip: [u64; 2],
    /// When the container started (Unix seconds): never ask for earlier logs.
    pub started_at_secs: i64,
    /// Stops forwarding (DestroyTask, plugin shutdown).
    pub cancel: CancellationToken,
    /// Read the engine's json-file log directly instead of the logs API.
    pub json_file: Option<JsonFileSource>,
}

/// What reading a json-file log directly needs.
#[derive(Debug)]
pub struct JsonFileSource {
    /// The engine's `LogPath` for the container.
    pub path: std::path::PathBuf,
    /// Wakes the reader when the file grows or rotates; without it the
    /// reader polls.
    pub watcher: Option<Watcher>,
    /// Turns true when the container has stopped.
    pub stopped: tokio::sync::watch::Receiver<bool>,
}

/// Why forwarding ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// The container stopped and its last bytes were written.
    ContainerStopped,
    /// The container's logs cannot be read (log driver `none`, …).
    Unreadable,
    /// A FIFO could not be written.
    WriteFailed,
    /// `cancel` fired.
    Cancelled,
}

/// One stream's writer and the batch being assembled for it.
#[derive(Debug)]
struct Sink {
    output: Output,
    sender: Sender,
    /// The FIFO itself, while `sender` is the holder's pipe.
    direct: Option<Sender>,
    numbering: Numbering,
    /// The holder's count of this stream's bytes.
    relayed: u64,
    /// Bytes past the checkpoint written before a crash, still to skip.
    skip: u64,
    batch: Vec<u8>,
    /// Per message in `batch`: where it starts and ends in the batch, its
    /// id, and how many of its bytes were sent before it joined the batch.
    marks: Vec<Mark>,
}

#[derive(Debug, Clone, Copy)]
struct Mark {
    start: usize,
    end: usize,
    id: Option<(i64, u32)>,
    skipped: usize,
}

impl Sink {
    fn new(output: Output, writer: Writer, checkpoint: &Checkpoint, skip: u64) -> Self {
        Self {
            output,
            sender: writer.sender,
            direct: writer.direct,
            numbering: Numbering::default(),
            relayed: checkpoint.positions().get(output).relayed,
            skip,
            batch: Vec::new(),
            marks: Vec::new(),
        }
    }

    /// Adds the part of `message` not forwarded yet.
    fn push(&mut self, message: &LogMessage, checkpoint: &mut Checkpoint) {
        self.push_body(message.timestamp, &message.body, checkpoint);
    }

    /// Adds the part of a message (stamped `timestamp`) not forwarded yet.
    fn push_body(&mut self, timestamp: Option<i64>, body: &[u8], checkpoint: &mut Checkpoint) {
        let id = timestamp.map(|ts| self.numbering.next(ts));
        let mut skipped = id.map_or(0, |id| {
            already_sent(checkpoint.positions().get(self.output), id, body.len())
        });
        if self.skip > 0 && skipped < body.len() {
            // Written by the plugin before us, after its last record: the
            // holder has it. Nothing is in the batch yet while this lasts.
            let more = usize::try_from(self.skip)
                .unwrap_or(usize::MAX)
                .min(body.len() - skipped);
            skipped += more;
            self.skip -= more as u64;
            self.relayed = self.relayed.saturating_add(more as u64);
            if let Some((timestamp, seq)) = id {
                self.record(checkpoint, timestamp, seq, skipped);
            }
        }
        if skipped == body.len() {
            return;
        }
        let start = self.batch.len();
        self.batch.extend_from_slice(&body[skipped..]);
        self.marks.push(Mark {
            start,
            end: self.batch.len(),
            id,
            skipped,
        });
    }

    /// Records that `offset` bytes of message `(timestamp, seq)` are out.
    fn record(&self, checkpoint: &mut Checkpoint, timestamp: i64, seq: u32, offset: usize) {
        let position = Position {
            timestamp,
            seq,
            offset: u32::try_from(offset).unwrap_or(u32::MAX),
            relayed: self.relayed,
        };
        if let Err(err) = checkpoint.store(self.output, position) {
            tracing::warn!(error = %err, "cannot record the log checkpoint; a restart may repeat lines");
        }
    }

    /// Writes the batch, recording the position after every write.
    async fn flush(&mut self, checkpoint: &mut Checkpoint) -> std::io::Result<()> {
        let mut written = 0;
        let mut mark = 0;
        while written < self.batch.len() {
            let n = match self.sender.write(&self.batch[written..]).await {
                Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
                Ok(n) => n,
                Err(err) if err.kind() == std::io::ErrorKind::BrokenPipe => {
                    let Some(direct) = self.direct.take() else {
                        return Err(err);
                    };
                    // The holder is gone (its reader of our pipe closed):
                    // go on into the FIFO ourselves. What its pipe still
                    // held is lost, and counting ends.
                    tracing::warn!(
                        output = ?self.output,
                        "the log holder went away; writing into the FIFO directly (bytes it had not yet delivered are lost, and a plugin crash will now end this task's logs)"
                    );
                    self.sender = direct;
                    let positions = checkpoint.positions();
                    if let Err(err) = checkpoint
                        .set_counts([positions.stdout.relayed, positions.stderr.relayed], false)
                    {
                        tracing::warn!(error = %err, "cannot record the log checkpoint");
                    }
                    continue;
                }
                Err(err) => return Err(err),
            };
            written += n;
            self.relayed = self.relayed.saturating_add(n as u64);
            crate::crashpoint::pass("log-written");
            while mark + 1 < self.marks.len() && self.marks[mark].end < written {
                mark += 1;
            }
            let current = self.marks[mark];
            if let Some((timestamp, seq)) = current.id {
                let offset = current.skipped + (written.min(current.end) - current.start);
                self.record(checkpoint, timestamp, seq, offset);
            }
        }
        self.batch.clear();
        self.marks.clear();
        Ok(())
    }
}

/// What the engine sent while a batch was gathered.
enum Next {
    /// More may come.
    Open,
    /// The stream ended.
    Ended,
    /// The stream failed.
    Failed(DockerError),
}

/// Gathers what the engine has ready (at least one item) into the sinks.
async fn gather(
    stream: &mut LogStream,
    sinks: &mut [Sink; 2],
    checkpoint: &mut Checkpoint,
    cancel: &CancellationToken,
) -> Option<Next> {
    let mut item = tokio::select! {
        item = stream.next() => item,
        () = cancel.cancelled() => return None,
    };
    let mut messages = 0;
    loop {
        match item {
            None => return Some(Next::Ended),
            Some(Err(err)) => return Some(Next::Failed(err)),
            Some(Ok(message)) => {
                let sink = match message.output {
                    Output::Stdout => &mut sinks[0],
                    Output::Stderr => &mut sinks[1],
                };
                sink.push(&message, checkpoint);
            }
        }
        messages += 1;
        if messages >= BATCH_MESSAGES || sinks.iter().any(|s| s.batch.len() >= BATCH_BYTES) {
            return Some(Next::Open);
        }
        // Take what is ready now, without waiting.
        match tokio::time::timeout(Duration::ZERO, stream.next()).await {
            Ok(next) => item = next,
            Err(_) => return Some(Next::Open),
        }
    }
}

/// Copies the container's output into the FIFOs, resuming after what the
/// checkpoint says was forwarded, until the container stops, `cancel`
/// fires, or reading turns out to be impossible. Returns why it ended and
/// the checkpoint; dropping the writers closes this process's FIFO ends.
pub async fn forward(forwarding: Forwarding) -> (Ended, Checkpoint) {
    let Forwarding {
        docker,
        container_id,
        task_id,
        writers,
        mut checkpoint,
        skip,
        started_at_secs,
        cancel,
        json_file,
    } = forwarding;
    let mut sinks = [
        Sink::new(Output::Stdout, writers.stdout, &checkpoint, skip[0]),
        Sink::new(Output::Stderr, writers.stderr, &checkpoint, skip[1]),
    ];
    if let Some(source) = json_file {
        match JsonLog::open(&source.path) {
            Ok(log) => {
                let watch = source.watcher.as_ref().and_then(|w| match w.watch(log.dir()) {
                    Ok(watch) => Some(watch),
                    Err(err) => {
                        tracing::debug!(task_id, error = %err, "cannot watch the log directory; polling it");
                        None
                    }
                });
                tracing::debug!(task_id, path = %source.path.display(), "forwarding from the json-file log");
                let reading = JsonReading {
                    task_id: &task_id,
                    log,
                    last_refresh: std::time::Instant::now(),
                    watch,
                    stopped: source.stopped,
                    cancel: &cancel,
                };
                return reading.run(sinks, checkpoint).await;
            }
            Err(err) => {
                tracing::debug!(task_id, error = %err, "cannot read the json-file log directly; using the logs API");
            }
        }
    }
    let mut backoff = Duration::ZERO;
    loop {
        let since = checkpoint.positions().resume_since(started_at_secs);
        let mut stream = docker.follow_logs(&container_id, since);
        for sink in &mut sinks {
            sink.numbering = Numbering::default();
        }
        let failure = loop {
            let Some(next) = gather(&mut stream, &mut sinks, &mut checkpoint, &cancel).await else {
                return (Ended::Cancelled, checkpoint);
            };
            for sink in &mut sinks {
                let flushed = tokio::select! {
                    flushed = sink.flush(&mut checkpoint) => flushed,
                    () = cancel.cancelled() => return (Ended::Cancelled, checkpoint),
                };
                if let Err(err) = flushed {
                    tracing::warn!(task_id, error = %err, "cannot write to the log FIFO; log forwarding ends");
                    return (Ended::WriteFailed, checkpoint);
                }
            }
            match next {
                Next::Open => backoff = Duration::ZERO,
                Next::Ended => break None,
                Next::Failed(err) if is_terminal(&err) => {
                    tracing::info!(task_id, error = %err, "log forwarding ends: the container's log driver cannot be read");
                    return (Ended::Unreadable, checkpoint);
                }
                Next::Failed(err) => break Some(err),
            }
        };
        // The stream ended: the container stopped, or the engine went away.
        match docker.inspect_container(&container_id).await {
            Ok(facts) if !facts.running => return (Ended::ContainerStopped, checkpoint),
            Err(DockerError::NotFound(_)) => return (Ended::ContainerStopped, checkpoint),
            _ => {}
        }
        if let Some(err) = failure {
            tracing::debug!(task_id, error = %err, "log stream failed; resuming from the checkpoint");
        }
        backoff = next_backoff(backoff);
        tokio::select! {
            () = tokio::time::sleep(backoff) => {}
            () = cancel.cancelled() => return (Ended::Cancelled, checkpoint),
        }
    }
}

/// Forwarding from the engine's json-file log.
struct JsonReading<'a> {
    task_id: &'a str,
    log: JsonLog,
    last_refresh: std::time::Instant,
    watch: Option<Watch>,
    stopped: tokio::sync::watch::Receiver<bool>,
    cancel: &'a CancellationToken,
}

/// How long to wait for a change before looking again anyway (events can
/// be missed when the kernel's queue overflows).
const JSON_RECHECK: Duration = Duration::from_secs(1);
/// How often to look when no watch is possible.
const JSON_POLL: Duration = Duration::from_millis(100);
/// How often to look for new files while reading. The engine deletes a
/// rotated file after `max-file - 1` further rotations (one, by default:
/// 2 MB later, ~70 ms for a container writing flat out); a file must be
/// opened before that.
const JSON_REFRESH: Duration = Duration::from_millis(10);

impl JsonReading<'_> {
    async fn run(
        mut self,
        mut sinks: [Sink; 2],
        mut checkpoint: Checkpoint,
    ) -> (Ended, Checkpoint) {
        let task_id = self.task_id;
        let mut last_pass = false;
        loop {
            let mut got = self.read_into(&mut sinks, &mut checkpoint);
            if !got {
                // The newest file we know ended: a rotation may have made
                // a newer one.
                self.refresh();
                got = self.read_into(&mut sinks, &mut checkpoint);
            }
            for sink in &mut sinks {
                let flushed = tokio::select! {
                    flushed = sink.flush(&mut checkpoint) => flushed,
                    () = self.cancel.cancelled() => return (Ended::Cancelled, checkpoint),
                };
                if let Err(err) = flushed {
                    tracing::warn!(task_id, error = %err, "cannot write to the log FIFO; log forwarding ends");
                    return (Ended::WriteFailed, checkpoint);
                }
            }
            if got {
                continue;
            }
            if last_pass {
                if self.log.skipped_lines > 0 {
                    tracing::debug!(
                        task_id,
                        skipped = self.log.skipped_lines,
                        "json-file lines that were not log messages were skipped"
                    );
                }
                return (Ended::ContainerStopped, checkpoint);
            }
            if *self.stopped.borrow() || self.stopped.has_changed().is_err() {
                // Everything the container wrote is in the file now: one
                // more pass to the end.
                last_pass = true;
                continue;
            }
            let changed = async {
                match &self.watch {
                    Some(watch) => {
                        let _ = tokio::time::timeout(JSON_RECHECK, watch.changed()).await;
                    }
                    None => tokio::time::sleep(JSON_POLL).await,
                }
            };
            tokio::select! {
                () = changed => {}
                _ = self.stopped.changed() => {}
                () = self.cancel.cancelled() => return (Ended::Cancelled, checkpoint),
            }
        }
    }

    /// Opens files a rotation created.
    fn refresh(&mut self) {
        if let Err(err) = self.log.refresh() {
            tracing::debug!(task_id = self.task_id, error = %err, "cannot look for rotated log files");
        }
        self.last_refresh = std::time::Instant::now();
    }

    /// Moves what the file has into the sinks; false when it had nothing.
    fn read_into(&mut self, sinks: &mut [Sink; 2], checkpoint: &mut Checkpoint) -> bool {
        let mut got = false;
        while sinks.iter().all(|s| s.batch.len() < BATCH_BYTES) {
            if self.last_refresh.elapsed() >= JSON_REFRESH {
                self.refresh();
            }
            let read = self.log.read(|output, timestamp, body| {
                let sink = match output {
                    Output::Stdout => &mut sinks[0],
                    Output::Stderr => &mut sinks[1],
                };
                sink.push_body(timestamp, body, checkpoint);
            });
            match read {
                Ok(true) => got = true,
                Ok(false) => break,
                Err(err) => {
                    tracing::debug!(task_id = self.task_id, error = %err, "reading the json-file log failed");
                    break;
                }
            }
        }
        got
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_stays_within_bounds() {
        let mut b = Duration::ZERO;
        for _ in 0..100 {
            b = next_backoff(b);
            assert!(b >= BACKOFF_MIN && b <= BACKOFF_MAX, "{b:?}");
        }
        assert_eq!(b, BACKOFF_MAX, "it reaches the cap");
    }

    #[test]
    fn terminal_errors_are_recognised() {
        let none = DockerError::Engine {
            status: 501,
            message: "configured logging driver does not support reading".to_owned(),
        };
        assert!(is_terminal(&none));
        assert!(!is_terminal(&DockerError::Transport(
            "connection reset".to_owned()
        )));
    }

    fn message(timestamp: i64, body: &str) -> LogMessage {
        LogMessage {
            output: Output::Stdout,
            timestamp: Some(timestamp),
            body: bytes::Bytes::from(body.to_owned()),
        }
    }

    /// A sink writing into a pipe whose reader we hold, so partial writes
    /// and positions can be checked.
    fn sink(checkpoint: &Checkpoint, skip: u64) -> (Sink, std::fs::File) {
        let (reader, writer) = std::io::pipe().unwrap();
        let writer = std::fs::File::from(std::os::fd::OwnedFd::from(writer));
        let reader = std::fs::File::from(std::os::fd::OwnedFd::from(reader));
        let writer = Writer {
            sender: Sender::from_file(writer).unwrap(),
            direct: None,
        };
        (Sink::new(Output::Stdout, writer, checkpoint, skip), reader)
    }

    fn read_all(reader: &mut std::fs::File) -> String {
        let mut got = vec![0u8; 64];
        let n = std::io::Read::read(reader, &mut got).unwrap();
        String::from_utf8(got[..n].to_vec()).unwrap()
    }

    const MESSAGES: [(i64, &str); 5] = [
        (10, "a\n"),
        (20, "b\n"),
        (20, "cde\n"),
        (20, "f\n"),
        (30, "g\n"),
    ];

    #[tokio::test]
    async fn a_resumed_stream_skips_exactly_what_was_written() {
        let mut checkpoint = Checkpoint::in_memory(super::super::checkpoint::Positions::default());
        let at = Position {
            timestamp: 20,
            seq: 1,
            offset: 2,
            relayed: 6,
        };
        checkpoint.store(Output::Stdout, at).unwrap();
        let (mut sink, mut reader) = sink(&checkpoint, 0);
        for (ts, body) in MESSAGES {
            sink.push(&message(ts, body), &mut checkpoint);
        }
        sink.flush(&mut checkpoint).await.unwrap();
        assert_eq!(read_all(&mut reader), "e\nf\ng\n");
        assert_eq!(
            checkpoint.positions().stdout,
            Position {
                timestamp: 30,
                seq: 0,
                offset: 2,
                relayed: 12,
            },
            "the count grows with every byte written"
        );
    }

    #[tokio::test]
    async fn bytes_written_after_the_last_record_are_skipped_too() {
        // The previous plugin recorded "c" of "cde\n" (6 bytes counted),
        // then wrote "de\nf" and was killed before recording it: the
        // holder counted 10.
        let mut checkpoint = Checkpoint::in_memory(super::super::checkpoint::Positions::default());
        let at = Position {
            timestamp: 20,
            seq: 1,
            offset: 1,
            relayed: 6,
        };
        checkpoint.store(Output::Stdout, at).unwrap();
        let (mut sink, mut reader) = sink(&checkpoint, 10 - 6);
        for (ts, body) in MESSAGES {
            sink.push(&message(ts, body), &mut checkpoint);
        }
        assert_eq!(
            checkpoint.positions().stdout,
            Position {
                timestamp: 20,
                seq: 2,
                offset: 1,
                relayed: 10,
            },
            "the skipped bytes are recorded as sent before anything new"
        );
        sink.flush(&mut checkpoint).await.unwrap();
        assert_eq!(read_all(&mut reader), "\ng\n", "no byte twice, none lost");
        assert_eq!(checkpoint.positions().stdout.relayed, 13);

        // A stream that reconnects and reads the same messages again
        // sends nothing more.
        sink.numbering = Numbering::default();
        for (ts, body) in MESSAGES {
            sink.push(&message(ts, body), &mut checkpoint);
        }
        assert!(sink.batch.is_empty());
    }

    #[tokio::test]
    async fn a_vanished_holder_is_bypassed_into_the_fifo() {
        let mut checkpoint = Checkpoint::in_memory(super::super::checkpoint::Positions::default());
        checkpoint.set_counts([0, 0], true).unwrap();
        let (holder_end, pipe) = std::io::pipe().unwrap();
        let (mut fifo_reader, fifo) = std::io::pipe().unwrap();
        let writer = Writer {
            sender: Sender::from_file(std::fs::File::from(std::os::fd::OwnedFd::from(pipe)))
                .unwrap(),
            direct: Some(
                Sender::from_file(std::fs::File::from(std::os::fd::OwnedFd::from(fifo))).unwrap(),
            ),
        };
        let mut sink = Sink::new(Output::Stdout, writer, &checkpoint, 0);
        drop(holder_end);
        sink.push(&message(10, "still here\n"), &mut checkpoint);
        sink.flush(&mut checkpoint).await.unwrap();
        let mut got = vec![0u8; 64];
        let n = std::io::Read::read(&mut fifo_reader, &mut got).unwrap();
        assert_eq!(&got[..n], b"still here\n");
        assert!(!checkpoint.positions().counted, "counting ends");
    }
}
