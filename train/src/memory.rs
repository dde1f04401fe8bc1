//! Will it fit? The memory available to this process, and the check every command makes
//! before it allocates a model ([`model::memory::MemoryEstimate`] says what a model needs).
//!
//! "Available" is the smallest of what applies here: the kernel's estimate of memory that can
//! be used without swapping (`MemAvailable` in `/proc/meminfo`), the room left under this
//! process's cgroup limit (containers), and the room left in its address space under
//! `ulimit -v`.

use model::memory::{human_bytes, MemoryEstimate};

use crate::error::TrainError;

/// Bytes this process can still allocate, and what limits it; `None` where nothing can be
/// read (other operating systems), in which case no check is made.
pub fn available_memory() -> Option<(u64, &'static str)> {
    limits()
        .into_iter()
        .map(|(b, what, _)| (b, what))
        .min_by_key(|(b, _)| *b)
}

/// Every limit that applies here: bytes left under it, its name, and whether it limits the
/// address space (where mapped files count too) rather than memory.
fn limits() -> Vec<(u64, &'static str, bool)> {
    let mut limits = Vec::new();
    if let Some(kb) = read_kb("/proc/meminfo", "MemAvailable:") {
        limits.push((kb * 1024, "available memory", false));
    }
    if let Some(room) = cgroup_room() {
        limits.push((room, "the memory limit of this process's cgroup", false));
    }
    if let Some(room) = address_space_room() {
        limits.push((room, "the address-space limit (ulimit -v)", true));
    }
    limits
}

/// What to change when a model does not fit for inference (`generate`, `eval`, …).
pub const INFERENCE_REMEDY: &str = "free some memory, or use a smaller model";

/// Errors (one line for the user) when `need` is larger than the available memory, ending with
/// `remedy` (what the user can change, in the command at hand). Under an address-space limit
/// the files `need` maps count too.
pub fn check_fits(need: &MemoryEstimate, what: &str, remedy: &str) -> Result<(), TrainError> {
    for (available, limit, address_space) in limits() {
        let mapped = if address_space { need.mapped } else { 0 };
        if need.total() + mapped > available {
            let files = if mapped > 0 {
                format!(" and {} of mapped files", human_bytes(mapped))
            } else {
                String::new()
            };
            return Err(TrainError(format!(
                "{what} needs {need}{files}, but only {} is free under {limit}: {remedy}",
                human_bytes(available)
            )));
        }
    }
    Ok(())
}

/// A `Key:   1234 kB` line of a /proc file, in kB.
fn read_kb(path: &str, key: &str) -> Option<u64> {
    let text = std::fs::read_to_string(path).ok()?;
    let line = text.lines().find(|l| l.starts_with(key))?;
    line[key.len()..].split_whitespace().next()?.parse().ok()
}

/// Room under a cgroup v2 `memory.max` (or v1 `memory.limit_in_bytes`), if one is set.
fn cgroup_room() -> Option<u64> {
    let read = |p: &str| std::fs::read_to_string(p).ok();
    let parse = |s: Option<String>| s.and_then(|s| s.trim().parse::<u64>().ok());
    let (limit, usage) = match parse(read("/sys/fs/cgroup/memory.max")) {
        Some(max) => (max, parse(read("/sys/fs/cgroup/memory.current"))?),
        None => (
            parse(read("/sys/fs/cgroup/memory/memory.limit_in_bytes"))?,
            parse(read("/sys/fs/cgroup/memory/memory.usage_in_bytes"))?,
        ),
    };
    (limit < 1 << 60).then(|| limit.saturating_sub(usage))
}

/// Room under `RLIMIT_AS`, if one is set: the limit less this process's current size.
fn address_space_room() -> Option<u64> {
    #[cfg(unix)]
    {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit writes one rlimit into the struct we pass.
        if unsafe { libc::getrlimit(libc::RLIMIT_AS, &mut lim) } != 0
            || lim.rlim_cur == libc::RLIM_INFINITY
        {
            return None;
        }
        let used = read_kb("/proc/self/status", "VmSize:").unwrap_or(0) * 1024;
        #[allow(clippy::unnecessary_cast)] // rlim_t is not u64 on every unix
        Some((lim.rlim_cur as u64).saturating_sub(used))
    }
    #[cfg(not(unix))]
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_machine_reports_some_memory_and_refuses_the_impossible() {
        if let Some((bytes, _)) = available_memory() {
            assert!(bytes > 1 << 20);
            let huge = MemoryEstimate {
                weights: u64::MAX / 4,
                ..MemoryEstimate::default()
            };
            let err = check_fits(&huge, "this model", "use a smaller one")
                .unwrap_err()
                .0;
            assert!(err.starts_with("this model needs about"), "{err}");
            assert!(check_fits(&MemoryEstimate::default(), "nothing", "").is_ok());
        }
    }
}
