//! Signal names as Nomad accepts them (`kill_signal`, `nomad alloc signal`).

/// Linux signal names a task may be sent, with their numbers.
const SIGNALS: &[(&str, i32)] = &[
    ("SIGABRT", 6),
    ("SIGALRM", 14),
    ("SIGBUS", 7),
    ("SIGCHLD", 17),
    ("SIGCONT", 18),
    ("SIGFPE", 8),
    ("SIGHUP", 1),
    ("SIGILL", 4),
    ("SIGINT", 2),
    ("SIGIO", 29),
    ("SIGIOT", 6),
    ("SIGKILL", 9),
    ("SIGPIPE", 13),
    ("SIGPROF", 27),
    ("SIGPWR", 30),
    ("SIGQUIT", 3),
    ("SIGSEGV", 11),
    ("SIGSTKFLT", 16),
    ("SIGSTOP", 19),
    ("SIGSYS", 31),
    ("SIGTERM", 15),
    ("SIGTRAP", 5),
    ("SIGTSTP", 20),
    ("SIGTTIN", 21),
    ("SIGTTOU", 22),
    ("SIGURG", 23),
    ("SIGUSR1", 10),
    ("SIGUSR2", 12),
    ("SIGVTALRM", 26),
    ("SIGWINCH", 28),
    ("SIGXCPU", 24),
    ("SIGXFSZ", 25),
];

/// Validates a signal name (case-insensitive, `SIG` prefix required) and
/// returns its canonical upper-case name. Errors read like Nomad's.
pub fn parse(name: &str) -> Result<&'static str, String> {
    let upper = name.trim().to_ascii_uppercase();
    SIGNALS
        .iter()
        .find(|(known, _)| *known == upper)
        .map(|(known, _)| *known)
        .ok_or_else(|| format!("failed to parse signal: invalid signal {name:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_known_names_in_any_case() {
        assert_eq!(parse("SIGHUP"), Ok("SIGHUP"));
        assert_eq!(parse("sigusr1"), Ok("SIGUSR1"));
        assert_eq!(
            parse("bogus"),
            Err("failed to parse signal: invalid signal \"bogus\"".to_owned())
        );
        assert!(parse("HUP").is_err());
        assert!(parse("").is_err());
    }
}
