//! What the C allocator holds for a long-running proxy process (`pong local`, `pong
//! remote`): freed heap kept for speed during transfers, given back to the kernel once a
//! burst of streams is over, and the figures that tell a leak (heap in use keeps rising)
//! from an allocator that keeps what was freed (heap in use flat, RSS high).
//!
//! glibc only; on other C libraries every call does nothing and [`figures`] is `None`.

use std::time::Duration;

/// Heap glibc keeps after `free` instead of returning it to the kernel: 8 MiB.
pub const KEEP_FREED_HEAP: usize = 8 << 20;

/// Freed heap held above which [`give_back_freed_heap`] returns it to the kernel.
pub const GIVE_BACK_ABOVE: u64 = 32 << 20;

/// How often [`give_back_freed_heap`] looks.
pub const GIVE_BACK_EVERY: Duration = Duration::from_secs(1);

/// Lets glibc keep up to [`KEEP_FREED_HEAP`] of freed heap (`M_TRIM_THRESHOLD`; the
/// default, 128 KiB, gives the top of the heap back as soon as that much is free). A pong
/// bulk transfer allocates and frees 32 KiB pieces at the top of the heap; with the
/// default every piece faulted in fresh zeroed pages (`perf`: 735 of the remote's
/// ~2 900 samples were page faults inside that copy). Call once, before the runtime
/// starts.
pub fn keep_freed_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets an allocator parameter; called before other threads run.
    unsafe {
        libc::mallopt(libc::M_TRIM_THRESHOLD, KEEP_FREED_HEAP as libc::c_int);
    }
}

/// The allocator's own account of the process's heap, in bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HeapFigures {
    /// Allocated and not yet freed (small chunks plus large mapped blocks): what a leak
    /// makes grow.
    pub in_use: u64,
    /// Freed but still held by the allocator (counted in RSS where the pages were
    /// touched).
    pub free_held: u64,
}

/// The allocator's figures now (`mallinfo2`, all arenas), or `None` off glibc.
pub fn figures() -> Option<HeapFigures> {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallinfo2 only reads the allocator's statistics.
        let m = unsafe { libc::mallinfo2() };
        Some(HeapFigures {
            in_use: (m.uordblks + m.hblkhd) as u64,
            free_held: m.fordblks as u64,
        })
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    None
}

/// Returns freed heap to the kernel (`malloc_trim(0)`: the top of every arena and every
/// whole free page inside them).
pub fn give_back() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim takes the allocator's own locks; safe from any thread.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Runs for the life of the process: every [`GIVE_BACK_EVERY`], when more than
/// [`GIVE_BACK_ABOVE`] of freed heap is held (10 000 streams just closed, say), gives it
/// back, so a proxy's RSS falls after a burst instead of staying at its peak. During a
/// bulk transfer the freed heap held stays near [`KEEP_FREED_HEAP`] per arena, so this
/// does not undo [`keep_freed_heap`].
pub async fn give_back_freed_heap() {
    if figures().is_none() {
        return;
    }
    loop {
        tokio::time::sleep(GIVE_BACK_EVERY).await;
        if figures().is_some_and(|f| f.free_held > GIVE_BACK_ABOVE) {
            give_back();
            tracing::debug!("gave freed heap back to the kernel: {:?}", figures());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[test]
    fn figures_see_an_allocation_and_its_release() {
        // 64 MiB, so what other tests of this process allocate or free meanwhile (the
        // figures are process-wide) cannot hide it: the checks ask for half of it.
        const BIG: u64 = 64 << 20;
        let before = figures().unwrap();
        let big: Vec<Vec<u8>> = (0..1024).map(|_| vec![1u8; 64 << 10]).collect();
        let held = figures().unwrap();
        assert!(
            held.in_use >= before.in_use + BIG / 2,
            "{before:?} -> {held:?}"
        );
        drop(big);
        give_back();
        let after = figures().unwrap();
        assert!(
            after.in_use + BIG / 2 <= held.in_use,
            "{held:?} -> {after:?}"
        );
    }
}
