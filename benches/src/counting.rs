//! A counting allocator for memory tests (the system's allocator
//! underneath): per thread, the bytes allocated and their peak; and per
//! [`Group`] of threads (a runtime's workers and blocking threads, joined
//! by `on_thread_start`), the same across them, so work a test hands to
//! other threads counts too while tests running beside it do not.

#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicIsize, Ordering};

thread_local! {
    static NOW: Cell<isize> = const { Cell::new(0) };
    static PEAK: Cell<isize> = const { Cell::new(0) };
    static GROUP: Cell<Option<&'static Group>> = const { Cell::new(None) };
}

/// Threads whose allocations count together.
pub(crate) struct Group {
    now: AtomicIsize,
    peak: AtomicIsize,
}

impl Group {
    /// A new group (kept for the rest of the test run).
    pub(crate) fn new() -> &'static Group {
        Box::leak(Box::new(Group {
            now: AtomicIsize::new(0),
            peak: AtomicIsize::new(0),
        }))
    }

    /// Counts the calling thread's allocations in this group from now on.
    pub(crate) fn join(&'static self) {
        GROUP.with(|g| g.set(Some(self)));
    }

    /// The most the group holds at once, above what it held before, while
    /// `f` runs.
    pub(crate) async fn peak_of<T>(&self, f: impl Future<Output = T>) -> (usize, T) {
        let (peak, _, out) = self.peak_and_kept_of(f).await;
        (peak, out)
    }

    /// [`Self::peak_of`], and what the group still holds above what it
    /// held before once `f` is done (what `f` keeps, less what it freed).
    pub(crate) async fn peak_and_kept_of<T>(
        &self,
        f: impl Future<Output = T>,
    ) -> (usize, isize, T) {
        let base = self.now.load(Ordering::SeqCst);
        self.peak.store(base, Ordering::SeqCst);
        let out = f.await;
        let peak = self.peak.load(Ordering::SeqCst);
        let kept = self.now.load(Ordering::SeqCst) - base;
        ((peak - base).max(0) as usize, kept, out)
    }
}

struct Counting;

fn count(delta: isize) {
    let _ = NOW.try_with(|now| {
        now.set(now.get() + delta);
        let _ = PEAK.try_with(|peak| peak.set(peak.get().max(now.get())));
    });
    if let Ok(Some(group)) = GROUP.try_with(Cell::get) {
        let now = group.now.fetch_add(delta, Ordering::SeqCst) + delta;
        group.peak.fetch_max(now, Ordering::SeqCst);
    }
}

// SAFETY: every call goes to `System` unchanged; the counters are
// thread-local cells and atomics, touched without allocating.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count(layout.size() as isize);
        // SAFETY: the caller's contract, passed on.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        count(-(layout.size() as isize));
        // SAFETY: the caller's contract, passed on.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count(new_size as isize - layout.size() as isize);
        // SAFETY: the caller's contract, passed on.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static COUNTING: Counting = Counting;

/// The most this thread holds at once, above what it held before, while
/// `f` runs.
pub(crate) fn peak_of(f: impl FnOnce()) -> usize {
    let base = NOW.with(Cell::get);
    PEAK.with(|p| p.set(base));
    f();
    (PEAK.with(Cell::get) - base).max(0) as usize
}
