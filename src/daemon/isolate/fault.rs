//! Test-only faults, so the tests can make a converter die in each way a
//! real one can without a checkpoint that does it by accident.
//!
//! `KVANT_TEST_FAULT=<fault>@<drop name>[,<fault>@<drop name>…]`, read only
//! by the conversion child (and, for `stall`, by the daemon's loop). Never
//! set it in production: it exists so `tests/daemon_isolation.rs` can
//! prove the daemon survives each fault.
//!
//! * `abort` — the child aborts (SIGABRT) after its first tensor;
//! * `stack` — it overflows its stack after its first tensor;
//! * `alloc` — it allocates until `max_memory` stops it (refused unless a
//!   limit of at most 4 GiB is in force, so a missing limit cannot take the
//!   machine's memory);
//! * `hang` — it stops making progress after its first tensor;
//! * `slow` — each tensor takes 300 ms more (time for a test to act
//!   mid-conversion);
//! * `slow-measure` — each evaluated chunk takes 500 ms more (time for a
//!   test to kill the daemon mid-measurement);
//! * `stall` — the daemon's loop blocks when it takes this drop in, so
//!   its watchdog pings stop.

use std::time::Duration;

/// The environment variable holding the faults.
pub const TEST_FAULT_ENV: &str = "KVANT_TEST_FAULT";

/// The fault asked for `drop`, if any.
pub(super) fn fault_for(drop: &str) -> Option<String> {
    let spec = std::env::var(TEST_FAULT_ENV).ok()?;
    spec.split(',').find_map(|f| {
        let (fault, name) = f.trim().split_once('@')?;
        (name == drop).then(|| fault.to_owned())
    })
}

/// Called by the daemon's loop as it takes `drop` in: blocks the loop for
/// good under the `stall` fault (the watchdog test), else returns.
pub fn stall_if_asked(drop: &str) {
    if fault_for(drop).as_deref() == Some("stall") {
        tracing::warn!(drop = %drop, "test fault: the daemon's loop stalls");
        loop {
            std::thread::sleep(Duration::from_secs(3600));
        }
    }
}

/// Called by the child after each tensor.
pub(super) fn after_tensor(fault: Option<&str>, done: usize) {
    match fault {
        Some("slow") => std::thread::sleep(Duration::from_millis(300)),
        Some("abort") if done == 1 => std::process::abort(),
        Some("stack") if done == 1 => {
            let depth = overflow(std::hint::black_box(1));
            tracing::error!("the stack did not overflow ({depth})");
        }
        Some("alloc") if done == 1 => allocate_until_refused(),
        Some("hang") if done == 1 => loop {
            std::thread::sleep(Duration::from_secs(3600));
        },
        _ => {}
    }
}

/// Called by the child after each evaluated chunk.
pub(super) fn after_chunk(fault: Option<&str>) {
    if fault == Some("slow-measure") {
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Recursion the optimizer cannot turn into a loop.
#[allow(unconditional_recursion)]
fn overflow(n: u64) -> u64 {
    let frame = std::hint::black_box([n; 512]);
    overflow(frame[n as usize % 512] + 1) + frame[0]
}

/// Touches memory 64 MiB at a time until the allocator is refused (the
/// runtime then aborts with "memory allocation of … failed").
fn allocate_until_refused() {
    const LIMIT_CAP: u64 = 4 << 30;
    if !address_space_capped_below(LIMIT_CAP) {
        tracing::error!("test fault alloc refused: no max_memory of at most 4 GiB is in force");
        std::process::exit(3);
    }
    let mut held: Vec<Vec<u8>> = Vec::new();
    loop {
        held.push(vec![1u8; 64 << 20]);
        std::hint::black_box(&held);
    }
}

fn address_space_capped_below(cap: u64) -> bool {
    #[cfg(target_os = "linux")]
    {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit writes the struct we pass and nothing else.
        let ok = unsafe { libc::getrlimit(libc::RLIMIT_AS, &mut lim) } == 0;
        ok && lim.rlim_cur != libc::RLIM_INFINITY && lim.rlim_cur <= cap
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = cap;
        false
    }
}
