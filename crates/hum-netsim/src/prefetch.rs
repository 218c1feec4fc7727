//! A cache-prefetch hint, for the simulator's event loop.
//!
//! A large simulation is memory-bound: each event touches a different node's state, and nearly every
//! such first touch misses the cache. The event queue knows which node the *next* event is for, so the
//! loop can ask for that node's state while it handles the current event. A prefetch is only a hint:
//! it never changes what the program computes, only when the memory arrives.

/// Ask the CPU to start loading the cache lines of `*r` (at most the first `max_lines` 64-byte lines).
#[inline]
pub fn prefetch<T>(r: &T, max_lines: usize) {
    #[cfg(target_arch = "x86_64")]
    {
        let p = (r as *const T).cast::<i8>();
        let lines = std::mem::size_of::<T>()
            .div_ceil(64)
            .clamp(1, max_lines.max(1));
        for i in 0..lines {
            hint(p.wrapping_add(i * 64));
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (r, max_lines);
}

/// Ask the CPU to start loading `bytes` (at most `max_lines` lines) from `p`. `p` is never read by
/// the program: any address, even dangling, is fine.
#[inline]
pub fn prefetch_raw(p: *const u8, bytes: usize, max_lines: usize) {
    #[cfg(target_arch = "x86_64")]
    {
        let lines = bytes.div_ceil(64).min(max_lines);
        for i in 0..lines {
            hint(p.cast::<i8>().wrapping_add(i * 64));
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (p, bytes, max_lines);
}

#[cfg(target_arch = "x86_64")]
#[inline(always)]
#[allow(unsafe_code)]
fn hint(p: *const i8) {
    // SAFETY: PREFETCHT0 is a hint that never faults and never dereferences in the program's sense
    // (any address is allowed, here always within or one line past a live reference); SSE is part of
    // the x86_64 baseline, so the instruction always exists.
    unsafe {
        core::arch::x86_64::_mm_prefetch::<{ core::arch::x86_64::_MM_HINT_T0 }>(p);
    }
}
