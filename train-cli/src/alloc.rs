//! Allocator settings for the binaries (`train-cli`, `kiln-bench`), which use mimalloc as
//! their global allocator.

/// mimalloc's `mi_option_purge_delay` (its position in `mi_option_t`, the same in
/// mimalloc 2 and 3; the `-sys` crate does not export it as a constant).
const PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// How long mimalloc keeps freed memory committed before it hands it back to the OS.
pub const KEEP_FREED_MS: i64 = 10_000;

/// Makes mimalloc keep freed memory committed for [`KEEP_FREED_MS`] (10 s) instead of
/// purging it within milliseconds. A train step frees and reallocates the same
/// multi-megabyte activation buffers every step; purged in between, every page of them
/// faults back in (and is zeroed by the kernel) on the next step. Measured on the
/// transformer step here: 236-385k page faults per `kiln-bench lm_step` run and 1.7-3.0 s
/// of system time with the default, 3 faults and 0.1-0.7 s with this; step median
/// 108-200 ms -> 70-95 ms over three alternated runs each (how often the default purges
/// varies with the machine's state: other runs gave 4-8k faults). Call it first in `main`,
/// before other threads start (mimalloc's option setter is not thread-safe).
pub fn keep_freed_memory() {
    // SAFETY: `mi_option_set` only writes mimalloc's option table; the caller runs it
    // before any other thread exists.
    unsafe { libmimalloc_sys::mi_option_set(PURGE_DELAY, KEEP_FREED_MS as _) };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_purge_delay_option_is_set() {
        keep_freed_memory();
        // SAFETY: reads mimalloc's option table.
        let got = unsafe { libmimalloc_sys::mi_option_get(PURGE_DELAY) };
        assert_eq!(got as i64, KEEP_FREED_MS);
    }
}
