//! CPU pinning for benchmarks that need a quiet, repeatable setting.

/// Pins the calling thread (and every process it starts afterwards) to CPU 0.
pub fn pin_to_cpu0() -> std::io::Result<()> {
    pin_to_cpu(0)
}

/// Pins the calling thread (and every thread or process it starts afterwards) to `cpu`.
#[allow(unsafe_code)]
pub fn pin_to_cpu(cpu: usize) -> std::io::Result<()> {
    // SAFETY: cpu_set_t is plain data; zeroed is its empty set, CPU_SET writes inside it (cpu
    // is below CPU_SETSIZE on any machine this runs on), and sched_setaffinity only reads it.
    let result = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set)
    };
    if result == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}
