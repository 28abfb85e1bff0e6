//! What the benches in `tests/benches/` share: running against a release
//! build of the plugin, CPU and memory accounting from `/proc`, Markdown
//! cells, and `BENCHMARKS.md`, which every bench updates one section of.
//!
//! `BENCHMARKS.md` is a header (how to regenerate it, the machine's facts)
//! followed by one section per bench between `<!-- bench:NAME -->` and
//! `<!-- /bench:NAME -->`. A bench rewrites the header and its own section
//! and leaves every other section as it found it, so running one bench does
//! not erase another's results.

use std::fmt::Write as _;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use crate::plugin::{PLUGIN_BINARY_ENV, target_dir, workspace_root};
use crate::require_docker;

/// Set (to anything but `0`) for a short run that only proves a bench works
/// end to end; its figures are not worth quoting, so it writes
/// [`QUICK_REPORT`] under the target dir instead of `BENCHMARKS.md`. Only
/// the stats bench shrinks; the logs bench runs in full either way (it
/// takes about two minutes) but still writes to the quick report.
pub const QUICK_ENV: &str = "WASMDOCK_BENCH_QUICK";
/// The report file of quick runs, under the target dir.
pub const QUICK_REPORT: &str = "BENCHMARKS-quick.md";

/// Whether [`QUICK_ENV`] asks for a short run.
pub fn quick() -> bool {
    std::env::var_os(QUICK_ENV).is_some_and(|v| !v.is_empty() && v != "0")
}

/// The report this run writes: `BENCHMARKS.md` at the workspace root, or
/// [`QUICK_REPORT`] in the target dir for a quick run.
pub fn report_path() -> PathBuf {
    if quick() {
        target_dir().join(QUICK_REPORT)
    } else {
        workspace_root().join("BENCHMARKS.md")
    }
}

/// The `main` of a bench: unless [`PLUGIN_BINARY_ENV`] names a binary,
/// builds the plugin with `--release` and runs this bench again with it
/// (the plugin measured is then an optimised build). Otherwise runs `bench`
/// on a multi-threaded runtime, prints the section it returns and writes
/// it into the report as section `name`.
pub fn main<F, Fut>(name: &str, bench: F) -> ExitCode
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = String>,
{
    if std::env::var_os(PLUGIN_BINARY_ENV).is_none() {
        return reexec_with_release_plugin();
    }
    require_docker();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let section = runtime.block_on(bench());
    let path = report_path();
    write_section(&path, name, &section)
        .unwrap_or_else(|err| panic!("cannot write {}: {err}", path.display()));
    print_report(&section);
    eprintln!("wrote section `{name}` of {}", path.display());
    ExitCode::SUCCESS
}

#[expect(
    clippy::print_stdout,
    reason = "a harness = false bench reports on stdout"
)]
fn print_report(report: &str) {
    print!("{report}");
}

/// Builds the plugin in release mode and runs this bench again with
/// `WASMDOCK_E2E_PLUGIN` pointing at it; returns its exit status.
fn reexec_with_release_plugin() -> ExitCode {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = Command::new(&cargo)
        .args([
            "build",
            "--release",
            "-p",
            "wasmdock-host",
            "--bin",
            "nomad-driver-wasmdock",
        ])
        .current_dir(workspace_root())
        .status()
        .expect("run cargo build");
    assert!(
        status.success(),
        "cargo build --release of the plugin failed"
    );
    let binary = target_dir().join("release/nomad-driver-wasmdock");
    let status = Command::new(std::env::current_exe().expect("current exe"))
        .args(std::env::args_os().skip(1))
        .env(PLUGIN_BINARY_ENV, &binary)
        .status()
        .expect("re-run the bench");
    if status.success() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

// ---------------------------------------------------------------- /proc

/// Engine daemons' CPU seconds so far.
#[derive(Debug, Clone, Copy)]
pub struct DaemonCpu {
    /// `dockerd`.
    pub dockerd: f64,
    /// `containerd` (not its shims: see [`shim_cpu`]).
    pub containerd: f64,
}

impl DaemonCpu {
    /// The daemons' CPU seconds now.
    pub fn now() -> Self {
        Self {
            dockerd: pids_of("dockerd").iter().map(|&p| cpu_seconds(p)).sum(),
            containerd: pids_of("containerd").iter().map(|&p| cpu_seconds(p)).sum(),
        }
    }

    /// (dockerd, containerd) CPU seconds spent since `before`.
    pub fn since(self, before: Self) -> (f64, f64) {
        (
            self.dockerd - before.dockerd,
            self.containerd - before.containerd,
        )
    }
}

/// Clock ticks per second (`getconf CLK_TCK`, else 100).
pub fn clock_ticks() -> f64 {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
            .unwrap_or(100.0)
    })
}

/// Fields after the `comm` of /proc/<pid>/stat (field 3 is index 0).
pub fn stat_fields(pid: u32) -> Vec<String> {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return Vec::new();
    };
    let rest = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    rest.split_whitespace().map(str::to_owned).collect()
}

/// utime + stime of `pid` in seconds (0 if it is gone).
pub fn cpu_seconds(pid: u32) -> f64 {
    let fields = stat_fields(pid);
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    (ticks(11) + ticks(12)) as f64 / clock_ticks()
}

/// Processes named `name` (`pidof`).
pub fn pids_of(name: &str) -> Vec<u32> {
    Command::new("pidof")
        .arg(name)
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// Every process id in /proc now.
pub fn all_pids() -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .collect()
}

/// CPU seconds of every `containerd-shim*` process so far. A shim lives as
/// long as its container, so a delta only means something while the set of
/// containers does not change.
pub fn shim_cpu() -> f64 {
    all_pids()
        .into_iter()
        .filter(|pid| {
            // comm is cut at 15 bytes: `containerd-shim` for every shim flavour.
            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|comm| comm.trim_end().starts_with("containerd-shim"))
        })
        .map(cpu_seconds)
        .sum()
}

/// VmRSS of `pid` in KiB (0 if it is gone).
pub fn vm_rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

/// Trimmed stdout of a command, or what went wrong.
pub fn shell(command: &str, args: &[&str]) -> String {
    Command::new(command)
        .args(args)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_else(|err| format!("({command}: {err})"))
}

/// `v2` on a unified cgroup hierarchy, else `v1`.
pub fn cgroup_version() -> &'static str {
    if Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
        "v2"
    } else {
        "v1"
    }
}

/// The current UTC time for a report.
pub fn date() -> String {
    shell("date", &["-u", "+%Y-%m-%d %H:%M UTC"])
}

/// An hclog `@timestamp` (`2026-01-02T15:04:05.123456Z`) → µs since the
/// epoch, or `None` if it is not one.
pub fn hclog_timestamp_us(text: &str) -> Option<i64> {
    let (day, time) = text.strip_suffix('Z')?.split_once('T')?;
    let mut ymd = day.split('-').map(|p| p.parse::<i64>().ok());
    let (y, m, d) = (ymd.next()??, ymd.next()??, ymd.next()??);
    let (hms, fraction) = time.split_once('.').unwrap_or((time, "0"));
    let mut hms = hms.split(':').map(|p| p.parse::<i64>().ok());
    let (h, min, s) = (hms.next()??, hms.next()??, hms.next()??);
    let digits: String = fraction.chars().chain("000000".chars()).take(6).collect();
    let fraction: i64 = digits.parse().ok()?;
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let doy = (153 * ((m + 9) % 12) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some((days * 86_400 + h * 3600 + min * 60 + s) * 1_000_000 + fraction)
}

// ---------------------------------------------------------------- Markdown

/// A goal's verdict, in bold.
pub fn met(ok: bool) -> &'static str {
    if ok { "**met**" } else { "**not met**" }
}

/// Median, min and max.
pub fn stats(values: impl Iterator<Item = f64>) -> (f64, f64, f64) {
    let mut v: Vec<f64> = values.collect();
    v.sort_by(f64::total_cmp);
    (v[v.len() / 2], v[0], v[v.len() - 1])
}

/// The median.
pub fn median(values: impl Iterator<Item = f64>) -> f64 {
    stats(values).0
}

/// `median (min–max)` with `digits` decimals.
pub fn cell(values: impl Iterator<Item = f64>, digits: usize) -> String {
    let (median, min, max) = stats(values);
    format!("{median:.digits$} ({min:.digits$}–{max:.digits$})")
}

/// A table row: `label`, one [`cell`] per column (each column holds one
/// value per run), then the ratio of every column's median to the last
/// column's (the baseline) with `ratio_digits` decimals, or `—` when a
/// ratio means nothing (`None`).
pub fn row(
    label: &str,
    columns: &[Vec<f64>],
    digits: usize,
    ratio_digits: Option<usize>,
) -> String {
    let mut line = format!("| {label} |");
    for column in columns {
        let _ = write!(line, " {} |", cell(column.iter().copied(), digits));
    }
    let baseline = columns
        .last()
        .map_or(f64::NAN, |c| median(c.iter().copied()));
    for column in &columns[..columns.len().saturating_sub(1)] {
        match ratio_digits {
            Some(d) => {
                let _ = write!(
                    line,
                    " {:.d$}× |",
                    median(column.iter().copied()) / baseline
                );
            }
            None => line.push_str(" — |"),
        }
    }
    line
}

// ---------------------------------------------------------------- BENCHMARKS.md

/// The report's header: what it is, how to regenerate it, and the machine
/// every section was measured on.
pub fn header() -> String {
    format!(
        "# Benchmarks\n\
        \n\
        Produced by `make bench`, which runs every bench below (`tests/benches/`). \
        `cargo bench -p wasmdock-e2e --bench NAME` runs one and rewrites only its own \
        section (between its `bench:NAME` markers) and this header. The plugin measured \
        is a release build.\n\
        \n\
        - Machine: `{}`, {} cores\n\
        - Docker server {}, cgroup {}\n\
        \n\
        Every bench is reproducible as written: no bench draws random numbers (inputs and \
        container commands are fixed), each warms up before it measures, repeats its \
        measurement (runs or rounds, alternating with its baseline in the same run) and \
        reports the median with the spread (min–max) or percentiles, and each section names \
        the command that produced it.\n",
        shell("uname", &["-srm"]),
        shell("nproc", &[]),
        require_docker(),
        cgroup_version()
    )
}

fn start_marker(name: &str) -> String {
    format!("<!-- bench:{name} -->")
}

fn end_marker(name: &str) -> String {
    format!("<!-- /bench:{name} -->")
}

const ANY_START: &str = "<!-- bench:";

/// Writes `body` as section `name` of the report at `path` (made if
/// missing) under a fresh [`header`], keeping every other section.
pub fn write_section(path: &Path, name: &str, body: &str) -> std::io::Result<()> {
    let existing = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(err) => return Err(err),
    };
    let header = header();
    let (old_header, _) = split_header(&existing);
    let others = sections(&existing).into_iter().any(|s| s != name);
    if others && !old_header.is_empty() && old_header.trim_end() != header.trim_end() {
        eprintln!(
            "warning: the machine facts in {} changed; its other sections were measured \
            under the old ones:\n{old_header}",
            path.display()
        );
    }
    let sections_text = splice(&existing, "", name, body);
    let text = format!(
        "{header}\n{}\n{sections_text}",
        goals_summary(&sections_text)
    );
    // Written aside and renamed, so an interrupted bench never leaves half
    // a report.
    let partial = path.with_extension("md.partial");
    std::fs::write(&partial, text)?;
    std::fs::rename(&partial, path)
}

/// One goal of one section: the lines of a section's `### Goals` list that
/// carry a verdict (`- goal: **met** (what was measured)`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Goal {
    /// The section's `## ` title.
    pub section: String,
    /// What the goal is.
    pub goal: String,
    /// Whether it was met.
    pub met: bool,
    /// What was measured.
    pub measured: String,
}

/// Every goal with a verdict in `text`'s sections, in order.
pub fn goals(text: &str) -> Vec<Goal> {
    let (_, rest) = split_header(text);
    let mut found = Vec::new();
    let mut section = String::new();
    let mut in_goals = false;
    for line in rest.lines() {
        if let Some(title) = line.strip_prefix("## ") {
            section = title.trim().to_owned();
            in_goals = false;
        } else if let Some(heading) = line.strip_prefix("### ") {
            in_goals = heading.trim() == "Goals";
        } else if line.starts_with(ANY_START) || line.starts_with("<!-- /bench:") {
            in_goals = false;
        } else if in_goals && let Some(item) = line.strip_prefix("- ") {
            let verdict = [("**not met**", false), ("**met**", true)]
                .into_iter()
                .find_map(|(word, met)| item.find(word).map(|at| (at, word.len(), met)));
            if let Some((at, len, met)) = verdict {
                let measured = item[at + len..].trim().trim_end_matches('.');
                let measured = measured
                    .strip_prefix('(')
                    .and_then(|m| m.strip_suffix(')'))
                    .unwrap_or(measured);
                found.push(Goal {
                    section: section.clone(),
                    goal: item[..at].trim().trim_end_matches(':').to_owned(),
                    met,
                    measured: measured.to_owned(),
                });
            }
        }
    }
    found
}

/// The header's table of every section's goals and verdicts.
pub fn goals_summary(text: &str) -> String {
    let goals = goals(text);
    let met = goals.iter().filter(|g| g.met).count();
    let mut out = format!(
        "## Goals at a glance\n\n\
        {met} of {} goals met. Collected from each section's Goals list whenever a bench \
        rewrites this file; the sections below say how each figure was measured.\n\n\
        | Bench | Goal | Verdict | Measured |\n\
        |---|---|---|---|\n",
        goals.len()
    );
    for goal in goals {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} |",
            goal.section,
            goal.goal,
            if goal.met { "met" } else { "**not met**" },
            goal.measured
        );
    }
    out
}

/// (header, sections): the text before the first section marker, and the rest.
fn split_header(text: &str) -> (&str, &str) {
    text.split_at(text.find(ANY_START).unwrap_or(text.len()))
}

/// Names of the sections in `text`, in order.
pub fn sections(text: &str) -> Vec<&str> {
    text.match_indices(ANY_START)
        .filter_map(|(at, _)| {
            let rest = &text[at + ANY_START.len()..];
            rest.split_once(" -->").map(|(name, _)| name)
        })
        .collect()
}

/// `text` with its header replaced by `header` and section `name` replaced
/// by `body` (appended when absent). Text before any marker is the old
/// header and goes; everything from the first marker on is kept except
/// section `name`. A section whose end marker is missing ends where the
/// next section starts.
pub fn splice(text: &str, header: &str, name: &str, body: &str) -> String {
    let (_, rest) = split_header(text);
    let (start, end) = (start_marker(name), end_marker(name));
    let block = format!("{start}\n\n{}\n\n{end}\n", body.trim());
    let rest = match rest.find(&start) {
        Some(at) => {
            let after = &rest[at + start.len()..];
            let tail = match after.find(&end) {
                Some(e) => &after[e + end.len()..],
                None => after.find(ANY_START).map_or("", |n| &after[n..]),
            };
            let tail = tail.trim_start_matches('\n');
            let gap = if tail.is_empty() { "" } else { "\n" };
            format!("{}{block}{gap}{tail}", &rest[..at])
        }
        None if rest.trim().is_empty() => block,
        None => format!("{}\n\n{block}", rest.trim_end()),
    };
    format!("{}\n\n{rest}", header.trim_end())
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEADER: &str = "# Benchmarks\n\nfacts\n";

    #[test]
    fn a_missing_report_gets_the_header_and_the_section() {
        assert_eq!(
            splice("", HEADER, "logs", "## Logs\n\nnumbers\n"),
            "# Benchmarks\n\nfacts\n\n<!-- bench:logs -->\n\n## Logs\n\nnumbers\n\n<!-- /bench:logs -->\n"
        );
    }

    #[test]
    fn a_section_is_replaced_in_place_and_the_others_kept() {
        let text = splice("", HEADER, "logs", "old logs");
        let text = splice(&text, HEADER, "stats", "old stats");
        let text = splice(&text, "# Benchmarks\n\nnew facts\n", "logs", "new logs");
        assert_eq!(
            text,
            "# Benchmarks\n\nnew facts\n\n\
            <!-- bench:logs -->\n\nnew logs\n\n<!-- /bench:logs -->\n\n\
            <!-- bench:stats -->\n\nold stats\n\n<!-- /bench:stats -->\n"
        );
        assert_eq!(sections(&text), ["logs", "stats"]);
        let again = splice(&text, "# Benchmarks\n\nnew facts\n", "stats", "new stats");
        assert!(again.contains("new logs") && again.contains("new stats"));
        assert!(!again.contains("old stats"));
        assert_eq!(
            splice(&again, "# Benchmarks\n\nnew facts\n", "stats", "new stats"),
            again
        );
    }

    #[test]
    fn a_report_without_markers_is_replaced() {
        let text = splice(
            "# Benchmarks: log forwarding\n\nold\n",
            HEADER,
            "stats",
            "s",
        );
        assert_eq!(
            text,
            "# Benchmarks\n\nfacts\n\n<!-- bench:stats -->\n\ns\n\n<!-- /bench:stats -->\n"
        );
    }

    #[test]
    fn a_section_without_its_end_marker_ends_at_the_next_section() {
        let text = "h\n\n<!-- bench:logs -->\n\nbroken\n\n<!-- bench:stats -->\n\ns\n\n<!-- /bench:stats -->\n";
        assert_eq!(
            splice(text, HEADER, "logs", "fixed"),
            "# Benchmarks\n\nfacts\n\n<!-- bench:logs -->\n\nfixed\n\n<!-- /bench:logs -->\n\n\
            <!-- bench:stats -->\n\ns\n\n<!-- /bench:stats -->\n"
        );
    }

    #[test]
    fn a_name_that_prefixes_another_does_not_match_it() {
        let text = splice("", HEADER, "logs-2", "two");
        let text = splice(&text, HEADER, "logs", "one");
        assert_eq!(sections(&text), ["logs-2", "logs"]);
    }

    #[test]
    fn goals_are_collected_from_every_sections_goal_list() {
        let text = splice(
            "",
            HEADER,
            "logs",
            "## Logs\n\n- not a goal: **met**\n\n### Goals\n\n- Fast: **met** (2× the baseline).\n- Reported, no goal: 3 fds.\n",
        );
        let text = splice(
            &text,
            HEADER,
            "stats",
            "## Stats\n\n### Goals\n\n- Cheap: **not met** (1/10).\n\n### After\n\n- Late: **met**\n",
        );
        assert_eq!(
            goals(&text),
            [
                Goal {
                    section: "Logs".into(),
                    goal: "Fast".into(),
                    met: true,
                    measured: "2× the baseline".into(),
                },
                Goal {
                    section: "Stats".into(),
                    goal: "Cheap".into(),
                    met: false,
                    measured: "1/10".into(),
                },
            ]
        );
        let summary = goals_summary(&text);
        assert!(summary.contains("1 of 2 goals met"), "{summary}");
        assert!(
            summary.contains("| Stats | Cheap | **not met** | 1/10 |"),
            "{summary}"
        );
        assert!(
            !summary.contains(ANY_START),
            "the summary must not look like a section"
        );
    }

    #[test]
    fn rows_put_each_column_against_the_last() {
        let columns = [vec![1.0, 2.0, 3.0], vec![4.0, 4.0, 4.0]];
        assert_eq!(
            row("x", &columns, 1, Some(2)),
            "| x | 2.0 (1.0–3.0) | 4.0 (4.0–4.0) | 0.50× |"
        );
        assert_eq!(row("x", &columns, 0, None), "| x | 2 (1–3) | 4 (4–4) | — |");
    }
}
