//! What the shells ask of the operating system beyond sockets: the
//! descriptor limit, and the units of /proc's figures. The crate's unsafe
//! code is here and in `udp::sys`, each call with its SAFETY note.

/// Raises the process's open-file limit to its hard limit (Unix) and
/// returns the limit now in force (a guess of 1024 where it cannot be read).
pub fn raise_fd_limit() -> usize {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    return sys::raise_fd_limit();
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    1024
}

/// Clock ticks per second of /proc's CPU times (100 where it cannot be asked).
pub fn clock_ticks_per_second() -> u64 {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    return sys::sysconf(libc::_SC_CLK_TCK).unwrap_or(100);
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    100
}

/// The memory page size (4096 where it cannot be asked).
pub fn page_size() -> u64 {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    return sys::sysconf(libc::_SC_PAGESIZE).unwrap_or(4096);
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    4096
}

#[cfg(any(target_os = "linux", target_os = "android"))]
#[allow(unsafe_code)]
mod sys {
    /// A positive `sysconf` value.
    pub fn sysconf(name: libc::c_int) -> Option<u64> {
        // SAFETY: sysconf reads a configuration value; any name is safe to ask.
        let v = unsafe { libc::sysconf(name) };
        u64::try_from(v).ok().filter(|v| *v > 0)
    }

    /// Raises RLIMIT_NOFILE's soft limit to its hard limit; the soft limit after.
    pub fn raise_fd_limit() -> usize {
        let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        // SAFETY: lim is a live local rlimit.
        if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
            return 1024;
        }
        if lim.rlim_cur < lim.rlim_max {
            let raised = libc::rlimit { rlim_cur: lim.rlim_max, rlim_max: lim.rlim_max };
            // SAFETY: raised is a live local rlimit.
            if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
                lim = raised;
            }
        }
        usize::try_from(lim.rlim_cur).unwrap_or(usize::MAX)
    }
}
