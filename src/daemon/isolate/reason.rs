//! Why a conversion child died, in one line for the journal and `kvant
//! status`. Pure: it reads the exit status and the tail of the child's
//! stderr (where the Rust runtime says what killed it).

/// How the child ended, as the parent saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Ending {
    /// Exited with this code.
    Code(i32),
    /// Killed by this signal.
    Signal(i32),
    /// Made no progress for this many seconds and was killed.
    TimedOut(u64),
}

fn signal_name(sig: i32) -> &'static str {
    match sig {
        4 => "SIGILL",
        6 => "SIGABRT",
        7 => "SIGBUS",
        8 => "SIGFPE",
        9 => "SIGKILL",
        11 => "SIGSEGV",
        15 => "SIGTERM",
        24 => "SIGXCPU",
        25 => "SIGXFSZ",
        _ => "signal",
    }
}

/// The last line of `stderr` that says something (log lines included).
fn last_line(stderr: &str) -> Option<&str> {
    stderr.lines().map(str::trim).rfind(|l| !l.is_empty())
}

/// One line explaining a child that ended without reporting a result.
/// `max_memory` is the address-space limit it ran under, if any.
pub(super) fn crash_reason(ending: Ending, stderr: &str, max_memory: Option<u64>) -> String {
    let limit = || match max_memory {
        Some(b) => format!(" (max_memory {} MiB)", b >> 20),
        None => String::new(),
    };
    match ending {
        Ending::TimedOut(secs) => {
            format!("converter hung: no progress for {secs} s (convert_timeout); it was killed")
        }
        Ending::Signal(sig) => {
            let what = format!("signal {sig} ({})", signal_name(sig));
            if stderr.contains("has overflowed its stack") {
                format!("converter crashed: stack overflow, {what}")
            } else if stderr.contains("memory allocation of") {
                format!("converter ran out of memory{}: {what}", limit())
            } else if sig == 7 {
                format!("converter crashed: {what} — the file changed while it was read")
            } else if sig == 9 {
                format!("converter killed: {what} — out of memory? (the kernel's OOM killer)")
            } else {
                match last_line(stderr) {
                    Some(l) => format!("converter crashed: {what}: {l}"),
                    None => format!("converter crashed: {what}"),
                }
            }
        }
        Ending::Code(101) => {
            let msg = stderr
                .lines()
                .skip_while(|l| !l.contains("panicked at"))
                .nth(1)
                .map(str::trim)
                .unwrap_or("(no message)");
            format!("converter panicked: {msg}")
        }
        Ending::Code(code) => match last_line(stderr) {
            Some(l) => format!("converter exited with status {code} without a result: {l}"),
            None => format!("converter exited with status {code} without a result"),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_death_gets_its_own_one_line_reason() {
        let bus = crash_reason(Ending::Signal(7), "", None);
        assert_eq!(
            bus,
            "converter crashed: signal 7 (SIGBUS) — the file changed while it was read"
        );
        let stack = crash_reason(
            Ending::Signal(6),
            "\nthread '<unnamed>' has overflowed its stack\nfatal runtime error: stack overflow\n",
            None,
        );
        assert!(stack.contains("stack overflow"), "{stack}");
        let oom = crash_reason(
            Ending::Signal(6),
            "memory allocation of 67108864 bytes failed\n",
            Some(1 << 30),
        );
        assert_eq!(
            oom,
            "converter ran out of memory (max_memory 1024 MiB): signal 6 (SIGABRT)"
        );
        assert!(crash_reason(Ending::Signal(9), "", None).contains("OOM killer"));
        assert!(crash_reason(Ending::TimedOut(30), "", None).contains("30 s"));
        let panic = crash_reason(
            Ending::Code(101),
            "thread 'main' panicked at src/x.rs:1:2:\nindex out of bounds\nnote: …",
            None,
        );
        assert_eq!(panic, "converter panicked: index out of bounds");
        for r in [bus, stack, oom, panic] {
            assert_eq!(r.lines().count(), 1, "{r}");
        }
    }
}
