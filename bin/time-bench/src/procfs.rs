//! Per-process CPU time and memory from `/proc`, and finding a node's process by its data
//! directory.

use std::path::Path;

/// Kernel clock ticks per second for `/proc/<pid>/stat` times (`USER_HZ`, 100 on every Linux
/// architecture the project targets).
pub const CLOCK_TICKS_PER_SEC: f64 = 100.0;

/// One reading of a process.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProcSample {
    /// User plus system CPU time so far, in clock ticks.
    pub cpu_ticks: u64,
    /// Peak resident set size so far (`VmHWM`), in KiB.
    pub peak_rss_kb: u64,
    /// Current resident set size (`VmRSS`), in KiB.
    pub rss_kb: u64,
}

/// Parses the CPU ticks (utime + stime) out of a `/proc/<pid>/stat` line.
pub fn parse_stat_ticks(stat: &str) -> Option<u64> {
    // The command name (field 2) may contain spaces and parentheses; fields resume after the
    // last ')'. utime and stime are fields 14 and 15, i.e. the 12th and 13th after it.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

fn status_kb(status: &str, key: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|line| line.strip_prefix(key))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
}

/// Reads process `pid` (`"self"` works through [`sample_self`]).
pub fn sample(pid: u32) -> Option<ProcSample> {
    sample_path(&format!("/proc/{pid}"))
}

/// Reads this process.
pub fn sample_self() -> Option<ProcSample> {
    sample_path("/proc/self")
}

fn sample_path(base: &str) -> Option<ProcSample> {
    let stat = std::fs::read_to_string(format!("{base}/stat")).ok()?;
    let status = std::fs::read_to_string(format!("{base}/status")).ok()?;
    Some(ProcSample {
        cpu_ticks: parse_stat_ticks(&stat)?,
        peak_rss_kb: status_kb(&status, "VmHWM:").unwrap_or(0),
        rss_kb: status_kb(&status, "VmRSS:").unwrap_or(0),
    })
}

/// Restarts process `pid`'s peak resident set (`VmHWM`) from its current size, so that a later
/// peak belongs to what ran since. Fails without the right to write `/proc/<pid>/clear_refs`.
pub fn reset_peak_rss(pid: u32) -> std::io::Result<()> {
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5")
}

/// The process whose command line has `--datadir=<data_dir>`: how an attached bench finds the
/// nodes `timed devnet` started.
pub fn find_by_datadir(data_dir: &Path) -> Option<u32> {
    let wanted = format!("--datadir={}", data_dir.display());
    std::fs::read_dir("/proc")
        .ok()?
        .flatten()
        .find_map(|entry| {
            let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
            let cmdline = std::fs::read(entry.path().join("cmdline")).ok()?;
            cmdline
                .split(|b| *b == 0)
                .any(|arg| arg == wanted.as_bytes())
                .then_some(pid)
        })
}

/// Whether process `pid` has a thread named `name` (`/proc/<pid>/task/*/comm`); `false` if the
/// process is gone.
pub fn has_thread_named(pid: u32, name: &str) -> bool {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return false;
    };
    tasks.flatten().any(|task| {
        std::fs::read_to_string(task.path().join("comm"))
            .is_ok_and(|comm| comm.trim_end_matches('\n') == name)
    })
}

/// The system load averages line (`/proc/loadavg`), to record how busy the machine was.
pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}

/// The CPU model name, for the report.
pub fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|text| {
            text.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|rest| rest.trim_start_matches([' ', '\t', ':']).to_owned())
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_named_thread_is_found_while_it_runs_and_not_after() {
        let pid = std::process::id();
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        let (ready, started) = std::sync::mpsc::channel::<()>();
        let worker = std::thread::Builder::new()
            .name("bench-probe".to_string())
            .spawn(move || {
                // The name is set by the new thread itself, before this runs.
                ready.send(()).unwrap();
                stopped.recv()
            })
            .unwrap();
        started.recv().unwrap();
        assert!(has_thread_named(pid, "bench-probe"));
        assert!(!has_thread_named(pid, "bench-prob"));
        assert!(!has_thread_named(pid, "no-such-thread"));
        stop.send(()).unwrap();
        worker.join().unwrap().unwrap();
        // The kernel drops an exited thread's entry soon after, not necessarily at the join.
        let gone = (0..100).any(|_| {
            std::thread::sleep(std::time::Duration::from_millis(10));
            !has_thread_named(pid, "bench-probe")
        });
        assert!(
            gone,
            "the thread's entry is still listed a second after it ended"
        );
    }

    #[test]
    fn a_reset_peak_starts_again_from_the_current_size() {
        let pid = std::process::id();
        // Touch 64 MiB, free it: the peak stays up, the resident set falls back.
        let block = vec![1u8; 64 << 20];
        assert_eq!(block.iter().map(|&b| u64::from(b)).sum::<u64>(), 64 << 20);
        drop(block);
        let before = sample(pid).expect("our own /proc entry");
        assert!(
            before.peak_rss_kb >= before.rss_kb + (32 << 10),
            "{before:?}"
        );
        reset_peak_rss(pid).expect("a process may reset its own peak");
        let after = sample(pid).expect("our own /proc entry");
        assert!(
            after.peak_rss_kb < before.peak_rss_kb,
            "{before:?} then {after:?}"
        );
        assert!(after.peak_rss_kb >= after.rss_kb, "{after:?}");
    }
}
