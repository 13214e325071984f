//! The core's heap in the browser: the standard allocator (dlmalloc over the WebAssembly memory), with what the
//! page needs around it.
//!
//! - Freeing a null pointer does nothing: OpenJPEG (the JPEG 2000 decoder) frees code blocks' buffers that were
//!   never allocated (null, with a zeroed layout), which native allocators tolerate (`free(NULL)`) and dlmalloc
//!   does not (it traps with "memory access out of bounds").
//! - An allocation that fails (the WebAssembly memory cannot grow: 4 GiB at most, or less where the browser
//!   says so) is recorded before Rust aborts the instance, so the worker can tell the page it ran out of memory
//!   ([`heap_failure`]) instead of a bare "unreachable".
//! - A limit can be set on purpose ([`debug_heap_limit`]), so that the tests reach a real out-of-memory abort,
//!   and the page's recovery from it, without filling gigabytes.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use wasm_bindgen::prelude::*;

/// Bytes allocated and not yet freed.
static LIVE: AtomicUsize = AtomicUsize::new(0);
/// The most bytes that may be live at once: `usize::MAX` unless a test lowered it.
static LIMIT: AtomicUsize = AtomicUsize::new(usize::MAX);
/// The size of the allocation that failed, and the bytes live when it did (0, 0 while none has).
static FAILED: AtomicUsize = AtomicUsize::new(0);
static LIVE_AT_FAILURE: AtomicUsize = AtomicUsize::new(0);

struct Heap;

impl Heap {
    /// Admits `size` more bytes under the limit, or records the failure.
    fn admit(&self, size: usize) -> bool {
        let live = LIVE.load(Relaxed);
        if live.saturating_add(size) > LIMIT.load(Relaxed) {
            self.failed(size);
            return false;
        }
        true
    }

    fn failed(&self, size: usize) {
        FAILED.store(size, Relaxed);
        LIVE_AT_FAILURE.store(LIVE.load(Relaxed), Relaxed);
    }

    /// Counts a successful allocation, or records a failed one.
    fn counted(&self, ptr: *mut u8, size: usize) -> *mut u8 {
        if ptr.is_null() {
            self.failed(size);
        } else {
            LIVE.fetch_add(size, Relaxed);
        }
        ptr
    }
}

unsafe impl GlobalAlloc for Heap {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if !self.admit(layout.size()) {
            return std::ptr::null_mut();
        }
        self.counted(unsafe { System.alloc(layout) }, layout.size())
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if !self.admit(layout.size()) {
            return std::ptr::null_mut();
        }
        self.counted(unsafe { System.alloc_zeroed(layout) }, layout.size())
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, size: usize) -> *mut u8 {
        let more = size.saturating_sub(layout.size());
        if !self.admit(more) {
            return std::ptr::null_mut();
        }
        let moved = unsafe { System.realloc(ptr, layout, size) };
        if moved.is_null() {
            self.failed(size);
        } else {
            LIVE.fetch_add(size, Relaxed);
            LIVE.fetch_sub(layout.size(), Relaxed);
        }
        moved
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if !ptr.is_null() {
            LIVE.fetch_sub(layout.size(), Relaxed);
            unsafe { System.dealloc(ptr, layout) }
        }
    }
}

#[global_allocator]
static ALLOCATOR: Heap = Heap;

/// `[bytes asked, bytes live then]` of the allocation that failed, or `[]` while none has. Read by the worker
/// after the instance aborted (it only reads two numbers, so it is safe to call on an aborted instance).
#[wasm_bindgen]
pub fn heap_failure() -> Vec<f64> {
    match FAILED.load(Relaxed) {
        0 => Vec::new(),
        asked => vec![asked as f64, LIVE_AT_FAILURE.load(Relaxed) as f64],
    }
}

/// Bytes allocated and not yet freed.
#[wasm_bindgen]
pub fn heap_live() -> f64 {
    LIVE.load(Relaxed) as f64
}

/// A diagnostic for the crash-recovery tests (the worker's `debugHeapLimit`): from now on at most `extra` bytes
/// more than are live may be allocated, so the next large step runs out of memory for real.
#[wasm_bindgen]
pub fn debug_heap_limit(extra: f64) {
    LIMIT.store(LIVE.load(Relaxed).saturating_add(extra as usize), Relaxed);
}
