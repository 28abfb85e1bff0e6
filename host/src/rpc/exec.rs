//! ExecTaskStreaming (`nomad alloc exec`): the wire protocol around an
//! attached exec. The first client message must carry `setup`; later ones
//! carry terminal sizes, stdin (with `close`), or nothing (heartbeats).
//! Output goes out in frames of at most 1024 bytes, each stream ends with
//! a `close` frame, and the last message carries `exited` and the result.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncWriteExt as _;
use tokio::sync::mpsc;
use tokio_stream::StreamExt as _;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Status, Streaming};

use super::BoxStream;
use super::proto::drivers::{self as pb, ExecTaskStreamingIoOperation as Io};
use crate::docker::exec::{ExecOutput, ExecSession};
use crate::driver::Driver;

/// Largest output frame, as Nomad's driver sends them.
const FRAME: usize = 1024;
/// How often the exec's state is polled (a TTY may stay open after the
/// lead process exits, so its end is not the output's end).
const POLL: Duration = Duration::from_millis(100);

/// Runs one streaming exec.
pub async fn exec_streaming(
    driver: Arc<Driver>,
    mut inbound: Streaming<pb::ExecTaskStreamingRequest>,
) -> Result<BoxStream<pb::ExecTaskStreamingResponse>, Status> {
    let first = inbound
        .message()
        .await?
        .ok_or_else(|| Status::invalid_argument("first message should always be setup"))?;
    let setup = first
        .setup
        .clone()
        .ok_or_else(|| Status::invalid_argument("first message should always be setup"))?;
    let ExecSession { id, output, input } = driver
        .exec_session(&setup.task_id, &setup.command, setup.tty, true)
        .await?;
    let (sender, receiver) = mpsc::channel(32);
    tokio::spawn(pump_input(
        Arc::clone(&driver),
        id.clone(),
        first,
        inbound,
        input,
    ));
    tokio::spawn(pump_output(driver, id, output, sender));
    Ok(Box::pin(ReceiverStream::new(receiver)))
}

async fn pump_input(
    driver: Arc<Driver>,
    exec_id: String,
    first: pb::ExecTaskStreamingRequest,
    mut inbound: Streaming<pb::ExecTaskStreamingRequest>,
    mut input: std::pin::Pin<Box<dyn tokio::io::AsyncWrite + Send>>,
) {
    let mut message = Some(first);
    let mut stdin_open = true;
    while let Some(request) = message {
        if let Some(size) = request.tty_size {
            let (height, width) = (clamp_u16(size.height), clamp_u16(size.width));
            if let Err(err) = driver.exec_resize(&exec_id, height, width).await {
                tracing::debug!(exec_id, error = %err, "resize failed");
            }
        }
        if let Some(stdin) = request.stdin.filter(|_| stdin_open) {
            if !stdin.data.is_empty() && input.write_all(&stdin.data).await.is_err() {
                stdin_open = false;
            }
            if stdin.close {
                let _ = input.shutdown().await;
                stdin_open = false;
            }
        }
        message = inbound.message().await.unwrap_or_default();
    }
}

async fn pump_output(
    driver: Arc<Driver>,
    exec_id: String,
    mut output: std::pin::Pin<
        Box<dyn tokio_stream::Stream<Item = crate::docker::Result<ExecOutput>> + Send>,
    >,
    sender: mpsc::Sender<Result<pb::ExecTaskStreamingResponse, Status>>,
) {
    let mut poll = tokio::time::interval(POLL);
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut exited: Option<i64> = None;
    loop {
        tokio::select! {
            chunk = output.next() => match chunk {
                Some(Ok(chunk)) => if send_chunk(&sender, chunk).await.is_err() { return },
                Some(Err(err)) => {
                    tracing::debug!(exec_id, error = %err, "exec output ended with an error");
                    break;
                }
                None => break,
            },
            _ = poll.tick() => {
                if let Ok(code) = driver.exec_exit_code_now(&exec_id).await
                    && code.is_some() {
                        exited = code;
                        // Give output already in flight a moment, then stop.
                        while let Ok(Some(Ok(chunk))) = tokio::time::timeout(POLL, output.next()).await {
                            if send_chunk(&sender, chunk).await.is_err() { return }
                        }
                        break;
                    }
            }
        }
    }
    for close in [
        pb::ExecTaskStreamingResponse {
            stdout: Some(Io {
                data: Vec::new(),
                close: true,
            }),
            ..Default::default()
        },
        pb::ExecTaskStreamingResponse {
            stderr: Some(Io {
                data: Vec::new(),
                close: true,
            }),
            ..Default::default()
        },
    ] {
        if sender.send(Ok(close)).await.is_err() {
            return;
        }
    }
    let exit_code = match exited {
        Some(code) => Ok(code),
        None => driver.exec_exit_code(&exec_id).await,
    };
    let last = match exit_code {
        Ok(code) => Ok(pb::ExecTaskStreamingResponse {
            exited: true,
            result: Some(pb::ExitResult {
                exit_code: i32::try_from(code).unwrap_or(i32::MAX),
                signal: 0,
                oom_killed: false,
            }),
            ..Default::default()
        }),
        Err(err) => Err(Status::from(err)),
    };
    let _ = sender.send(last).await;
}

async fn send_chunk(
    sender: &mpsc::Sender<Result<pb::ExecTaskStreamingResponse, Status>>,
    chunk: ExecOutput,
) -> Result<(), ()> {
    let (bytes, is_stdout) = match chunk {
        ExecOutput::Stdout(bytes) => (bytes, true),
        ExecOutput::Stderr(bytes) => (bytes, false),
    };
    for frame in bytes.chunks(FRAME) {
        let io = Some(Io {
            data: frame.to_vec(),
            close: false,
        });
        let response = if is_stdout {
            pb::ExecTaskStreamingResponse {
                stdout: io,
                ..Default::default()
            }
        } else {
            pb::ExecTaskStreamingResponse {
                stderr: io,
                ..Default::default()
            }
        };
        sender.send(Ok(response)).await.map_err(|_| ())?;
    }
    Ok(())
}

fn clamp_u16(value: i32) -> u16 {
    u16::try_from(value.max(0)).unwrap_or(u16::MAX)
}
