//! The embedded backends' metric names, all in one place.

/// 1 while writes to the data directory's database `database` (`log.db`, `raw.db`, `meta.db`) are
/// refused for want of disk space, else 0. Standalone is NOT_SERVING meanwhile and resumes by itself
/// once there is room (see docs/runbook.md).
pub const DISK_FULL: &str = "hourglass_embedded_disk_full";

/// Registers descriptions with whatever recorder is installed.
pub fn describe() {
    metrics::describe_gauge!(DISK_FULL, "1 while a database of the data directory is refused writes for space");
}
