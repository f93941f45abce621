//! The mesh thread runs ahead of the rest of the machine when it may.
//!
//! SWIM declares a peer suspect when its ack is late by `probe_rtt`
//! (150 ms). On a busy machine (a build, a burst of API work) a thread
//! that wakes for one probe can wait behind every other runnable thread:
//! writing 64 MB to a 3-node mesh on this 2-core VM while builds held the
//! load average at 10-14 gave 1-3 false suspicions per run with the agent
//! at the default priority and none with it at nice -10. Only the mesh
//! thread is raised: it does little work, so it cannot starve anything,
//! and the API, edge and instances keep the normal share. Lowering a nice
//! value needs root or CAP_SYS_NICE (systemd: `Nice=` or
//! `AmbientCapabilities=CAP_SYS_NICE`); without them the thread runs at
//! the default priority, as before, and says so once in the log.

/// The mesh thread's nice value when permitted.
pub const MESH_NICE: i32 = -10;

/// Sets the calling thread's nice value to [`MESH_NICE`]; whether it could.
#[allow(unsafe_code)]
pub fn raise_this_thread() -> bool {
    let tid = nix::unistd::gettid().as_raw();
    // SAFETY: setpriority(2) takes plain integers and touches no memory of
    // ours; on Linux, PRIO_PROCESS with a thread id applies to that thread.
    let r = unsafe {
        nix::libc::setpriority(nix::libc::PRIO_PROCESS, tid as nix::libc::id_t, MESH_NICE)
    };
    if r == 0 {
        tracing::debug!(nice = MESH_NICE, "mesh thread priority raised");
        true
    } else {
        let e = std::io::Error::last_os_error();
        tracing::info!(error = %e, "mesh thread kept the default priority (needs root or CAP_SYS_NICE); SWIM may see false suspicions on a saturated machine");
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raising_sets_this_threads_nice_value_or_reports_why_not() {
        std::thread::spawn(|| {
            let raised = raise_this_thread();
            let tid = nix::unistd::gettid().as_raw();
            // getpriority may return -1 legitimately: clear errno first.
            nix::errno::Errno::clear();
            #[allow(unsafe_code)]
            // SAFETY: getpriority(2) takes plain integers.
            let nice =
                unsafe { nix::libc::getpriority(nix::libc::PRIO_PROCESS, tid as nix::libc::id_t) };
            if raised {
                assert_eq!(nice, MESH_NICE);
            } else {
                assert_ne!(nice, MESH_NICE, "refused, yet the value changed");
            }
        })
        .join()
        .unwrap();
    }
}
