//! The C library functions that `openjp2` (OpenJPEG ported to Rust: the JPEG 2000 decoder of the DICOM reader)
//! still calls: `malloc`, `calloc`, `realloc`, `free` and `strcpy`. wasm32-unknown-unknown has no C library:
//! without these the module would import them from the page ("env") and fail to load. They are implemented
//! over Rust's allocator (`heap.rs`), each block preceded by its size (which `free` and `realloc` need, and
//! Rust's allocator wants back). A failed allocation returns null, which OpenJPEG checks, instead of aborting.

use std::alloc::{Layout, alloc, alloc_zeroed, dealloc, realloc as grow};
use std::ptr::null_mut;

/// Room for the block's size in front of it, keeping the 16-byte alignment C's `malloc` promises.
const HEADER: usize = 16;

fn layout(size: usize) -> Option<Layout> {
    Layout::from_size_align(size.checked_add(HEADER)?, HEADER).ok()
}

/// # Safety: the block's header is written within the allocation just made.
unsafe fn allocate(size: usize, zeroed: bool) -> *mut u8 {
    let Some(layout) = layout(size) else { return null_mut() };
    unsafe {
        let base = if zeroed { alloc_zeroed(layout) } else { alloc(layout) };
        if base.is_null() {
            return base;
        }
        base.cast::<usize>().write(size);
        base.add(HEADER)
    }
}

/// The block's start and layout, from a pointer `allocate` returned.
unsafe fn block(ptr: *mut u8) -> (*mut u8, Layout) {
    unsafe {
        let base = ptr.sub(HEADER);
        let size = base.cast::<usize>().read();
        (base, Layout::from_size_align_unchecked(size + HEADER, HEADER))
    }
}

/// # Safety
/// C's contract: the block is `size` bytes, uninitialised, freed with [`free`].
#[unsafe(no_mangle)]
pub unsafe extern "C" fn malloc(size: usize) -> *mut u8 {
    unsafe { allocate(size, false) }
}

/// # Safety
/// C's contract: `count × size` zeroed bytes, freed with [`free`].
#[unsafe(no_mangle)]
pub unsafe extern "C" fn calloc(count: usize, size: usize) -> *mut u8 {
    count.checked_mul(size).map_or(null_mut(), |total| unsafe { allocate(total, true) })
}

/// # Safety
/// C's contract: `ptr` is null or a block from [`malloc`], [`calloc`] or [`realloc`], not yet freed.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn free(ptr: *mut u8) {
    if !ptr.is_null() {
        unsafe {
            let (base, layout) = block(ptr);
            dealloc(base, layout);
        }
    }
}

/// # Safety
/// C's contract: as [`free`] for `ptr`; the block moves to `size` bytes, its contents kept.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn realloc(ptr: *mut u8, size: usize) -> *mut u8 {
    if ptr.is_null() {
        return unsafe { malloc(size) };
    }
    let Some(new_layout) = layout(size) else { return null_mut() };
    unsafe {
        let (base, old_layout) = block(ptr);
        let moved = grow(base, old_layout, new_layout.size());
        if moved.is_null() {
            return moved; // the old block stays valid, as C's realloc leaves it
        }
        moved.cast::<usize>().write(size);
        moved.add(HEADER)
    }
}

/// # Safety
/// C's contract: `src` is NUL-terminated and `dst` holds it.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn strcpy(dst: *mut u8, src: *const u8) -> *mut u8 {
    let mut i = 0;
    unsafe {
        loop {
            let byte = src.add(i).read();
            dst.add(i).write(byte);
            if byte == 0 {
                return dst;
            }
            i += 1;
        }
    }
}
