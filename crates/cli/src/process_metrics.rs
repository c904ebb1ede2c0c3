//! The process's own metrics, under the names every Prometheus client library uses
//! (`process_resident_memory_bytes`, `process_cpu_seconds_total`, …), so the usual dashboards and
//! alerts read them. Linux only: they come from `/proc/self`, sampled by a thread of their own.

use std::time::Duration;

/// How often the process is sampled: well under any scrape interval worth alerting on.
const SAMPLE_INTERVAL: Duration = Duration::from_secs(5);

/// Resident memory of the process.
const RESIDENT_MEMORY_BYTES: &str = "process_resident_memory_bytes";
/// Virtual memory of the process.
const VIRTUAL_MEMORY_BYTES: &str = "process_virtual_memory_bytes";
/// User + system CPU time the process used.
const CPU_SECONDS_TOTAL: &str = "process_cpu_seconds_total";
/// When the process started, in seconds since the Unix epoch.
const START_TIME_SECONDS: &str = "process_start_time_seconds";
/// File descriptors open (sockets included).
const OPEN_FDS: &str = "process_open_fds";
/// The limit on open file descriptors.
const MAX_FDS: &str = "process_max_fds";
/// Threads of the process.
const THREADS: &str = "process_threads";

/// One reading of `/proc/self`.
#[derive(Debug, PartialEq)]
struct ProcessSample {
    resident_bytes: u64,
    virtual_bytes: u64,
    cpu_seconds: f64,
    start_time_seconds: f64,
    threads: u64,
}

/// Starts sampling the process into the installed metrics recorder. A failure to start the thread is
/// logged, not fatal: these metrics are a convenience, the service works without them.
pub fn start() {
    metrics::describe_gauge!(RESIDENT_MEMORY_BYTES, metrics::Unit::Bytes, "Resident memory size");
    metrics::describe_gauge!(VIRTUAL_MEMORY_BYTES, metrics::Unit::Bytes, "Virtual memory size");
    metrics::describe_counter!(CPU_SECONDS_TOTAL, metrics::Unit::Seconds, "User and system CPU time");
    metrics::describe_gauge!(START_TIME_SECONDS, metrics::Unit::Seconds, "Start time since the Unix epoch");
    metrics::describe_gauge!(OPEN_FDS, "Open file descriptors");
    metrics::describe_gauge!(MAX_FDS, "Maximum number of open file descriptors");
    metrics::describe_gauge!(THREADS, "Threads of the process");
    let spawned = std::thread::Builder::new().name("process-metrics".into()).spawn(|| {
        let mut warned = false;
        loop {
            if let Err(error) = sample_once() {
                // Not on Linux, or /proc is not mounted: say so once.
                if !warned {
                    tracing::warn!(%error, "cannot read /proc/self; process_* metrics are not reported");
                    warned = true;
                }
            }
            std::thread::sleep(SAMPLE_INTERVAL);
        }
    });
    if let Err(error) = spawned {
        tracing::warn!(%error, "cannot start the process metrics thread");
    }
}

fn sample_once() -> std::io::Result<()> {
    let stat = std::fs::read_to_string("/proc/self/stat")?;
    let boot_time = boot_time_seconds(&std::fs::read_to_string("/proc/stat")?);
    let sample = parse_stat(&stat, page_size(), clock_ticks_per_second(), boot_time)
        .ok_or_else(|| std::io::Error::other("malformed /proc/self/stat"))?;
    metrics::gauge!(RESIDENT_MEMORY_BYTES).set(sample.resident_bytes as f64);
    metrics::gauge!(VIRTUAL_MEMORY_BYTES).set(sample.virtual_bytes as f64);
    // The `metrics` crate's counters are integers: whole seconds, which a rate over minutes reads with
    // an error under a percent of a core.
    metrics::counter!(CPU_SECONDS_TOTAL).absolute(sample.cpu_seconds as u64);
    metrics::gauge!(START_TIME_SECONDS).set(sample.start_time_seconds);
    metrics::gauge!(THREADS).set(sample.threads as f64);
    let open_fds = std::fs::read_dir("/proc/self/fd")?.count();
    metrics::gauge!(OPEN_FDS).set(open_fds as f64);
    if let Some(max_fds) = max_open_files(&std::fs::read_to_string("/proc/self/limits")?) {
        metrics::gauge!(MAX_FDS).set(max_fds as f64);
    }
    Ok(())
}

/// Parses `/proc/<pid>/stat` (proc(5)): the fields after the parenthesised command name, which may
/// itself hold spaces and parentheses.
fn parse_stat(stat: &str, page_size: u64, ticks_per_second: f64, boot_time: Option<u64>) -> Option<ProcessSample> {
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    // fields[0] is field 3 (state): field n is fields[n - 3].
    let field = |n: usize| fields.get(n - 3)?.parse::<u64>().ok();
    let cpu_ticks = field(14)? + field(15)?;
    let start_ticks = field(22)?;
    Some(ProcessSample {
        resident_bytes: field(24)? * page_size,
        virtual_bytes: field(23)?,
        cpu_seconds: cpu_ticks as f64 / ticks_per_second,
        start_time_seconds: boot_time.map_or(0.0, |boot| boot as f64 + start_ticks as f64 / ticks_per_second),
        threads: field(20)?,
    })
}

/// The boot time (`btime`) from `/proc/stat`.
fn boot_time_seconds(proc_stat: &str) -> Option<u64> {
    proc_stat.lines().find_map(|line| line.strip_prefix("btime ")?.trim().parse().ok())
}

/// The soft limit on open files from `/proc/<pid>/limits`; `None` when unlimited.
fn max_open_files(limits: &str) -> Option<u64> {
    let line = limits.lines().find(|line| line.starts_with("Max open files"))?;
    line.trim_start_matches("Max open files").split_whitespace().next()?.parse().ok()
}

fn page_size() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if size > 0 { size as u64 } else { 4096 }
}

fn clock_ticks_per_second() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 { ticks as f64 } else { 100.0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_stat_line_whose_command_has_spaces_and_parentheses() {
        // A real line's shape (proc(5)), with a hostile command name.
        let stat = "4242 (my (odd) name) S 1 4242 4242 0 -1 4194560 1500 0 3 0 250 120 0 0 20 0 17 0 \
                    9000 1073741824 5000 18446744073709551615 1 1 0 0 0 0 0 4096 17987 0 0 0 17 1 0 0 0 0 0";
        let sample = parse_stat(stat, 4096, 100.0, Some(1_700_000_000)).expect("parses");
        assert_eq!(
            sample,
            ProcessSample {
                resident_bytes: 5000 * 4096,
                virtual_bytes: 1_073_741_824,
                cpu_seconds: 3.7,
                start_time_seconds: 1_700_000_090.0,
                threads: 17,
            }
        );
        assert_eq!(parse_stat("4242 (truncated) S 1 2", 4096, 100.0, None), None);
    }

    #[test]
    fn reads_boot_time_and_the_open_files_limit() {
        assert_eq!(boot_time_seconds("cpu  1 2 3\nbtime 1700000000\nprocesses 5\n"), Some(1_700_000_000));
        let limits = "Limit                     Soft Limit           Hard Limit           Units     \n\
                      Max cpu time              unlimited            unlimited            seconds   \n\
                      Max open files            1048576              1048576              files     \n";
        assert_eq!(max_open_files(limits), Some(1_048_576));
        assert_eq!(max_open_files("Max open files            unlimited            unlimited            files"), None);
    }

    #[test]
    fn reads_this_process() {
        let stat = std::fs::read_to_string("/proc/self/stat").expect("Linux /proc");
        let sample = parse_stat(&stat, page_size(), clock_ticks_per_second(), None).expect("parses");
        assert!(sample.resident_bytes > 0 && sample.threads >= 1, "{sample:?}");
    }
}
