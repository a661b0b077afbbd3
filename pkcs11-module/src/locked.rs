//! Memory for session key material that is locked (never swapped) and left
//! out of core dumps.
//!
//! The module runs inside someone else's process, so it cannot lock that
//! process's memory as the server does (`mlockall`). Instead, every session
//! key's value lives in pages of its own: mapped anonymously, `mlock`ed and
//! marked `MADV_DONTDUMP`, shared by secrets of one size class, and zeroed
//! when a secret is dropped. Pages are never unmapped: a process that made
//! session keys once likely makes them again, and the pool stays small
//! (one 64 KiB chunk holds 256 AES-256 keys).
//!
//! Where the locked-memory limit (`RLIMIT_MEMLOCK`, often 8 MiB for a user)
//! is reached, pages are still mapped and excluded from dumps, only not
//! locked; [`stats`] says how many are locked.

use std::sync::Mutex;

use zeroize::Zeroize;

/// Bytes mapped at a time for the small size classes.
const CHUNK: usize = 64 * 1024;
/// Size classes: a secret takes the smallest class that holds it.
const CLASSES: [usize; 8] = [32, 64, 128, 256, 512, 1024, 2048, 4096];

struct Pool {
    /// Per class, free slots (addresses).
    free: [Vec<usize>; CLASSES.len()],
    mapped: usize,
    locked: usize,
}

static POOL: Mutex<Pool> = Mutex::new(Pool {
    free: [const { Vec::new() }; CLASSES.len()],
    mapped: 0,
    locked: 0,
});

/// Bytes mapped for secrets, and of those the bytes locked in memory.
pub fn stats() -> (usize, usize) {
    let p = POOL.lock().unwrap_or_else(|e| e.into_inner());
    (p.mapped, p.locked)
}

fn page_size() -> usize {
    // SAFETY: sysconf has no memory-safety preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(n).ok().filter(|n| *n > 0).unwrap_or(4096)
}

/// Maps `len` bytes (a multiple of the page size), locked where allowed and
/// excluded from core dumps. Returns the address and whether it is locked.
fn map(len: usize) -> Option<(usize, bool)> {
    // SAFETY: an anonymous private mapping at an address the kernel picks
    // touches no existing memory; the result is checked for MAP_FAILED.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        return None;
    }
    // SAFETY: `p..p+len` is the mapping just made; madvise and mlock only
    // change its attributes. Failures leave it usable (reported by stats).
    let locked = unsafe {
        libc::madvise(p, len, libc::MADV_DONTDUMP);
        libc::mlock(p, len) == 0
    };
    Some((p as usize, locked))
}

/// A secret in locked, dump-excluded memory; zeroed when dropped.
pub struct LockedBytes {
    ptr: usize,
    len: usize,
    /// The index in [`CLASSES`], or `None` for a mapping of its own.
    class: Option<usize>,
    /// The mapped size of a mapping of its own.
    mapped: usize,
}

// SAFETY: LockedBytes owns its slot exclusively, like a Box<[u8]>.
unsafe impl Send for LockedBytes {}
// SAFETY: shared access is read-only (Deref), like &[u8].
unsafe impl Sync for LockedBytes {}

impl LockedBytes {
    /// Copies `data` into locked memory. Falls back to a plain heap copy
    /// only if the kernel refuses to map memory at all (then the process is
    /// out of memory anyway).
    pub fn new(data: &[u8]) -> Self {
        let len = data.len();
        let slot = match CLASSES.iter().position(|c| len <= *c) {
            Some(class) => Self::small(class).map(|ptr| (ptr, Some(class), 0)),
            None => {
                let ps = page_size();
                let size = len.div_ceil(ps).max(1) * ps;
                map(size).map(|(ptr, locked)| {
                    let mut p = POOL.lock().unwrap_or_else(|e| e.into_inner());
                    p.mapped += size;
                    p.locked += if locked { size } else { 0 };
                    (ptr, None, size)
                })
            }
        };
        let Some((ptr, class, mapped)) = slot else {
            // Out of address space: keep the value in a leaked heap buffer
            // of our own, still zeroed on drop.
            let b: &'static mut [u8] = Box::leak(data.to_vec().into_boxed_slice());
            return Self {
                ptr: b.as_mut_ptr() as usize,
                len,
                class: None,
                mapped: 0,
            };
        };
        // SAFETY: the slot is at least `len` bytes, writable, and owned by
        // this value alone; `data` cannot overlap it (it was free).
        unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), ptr as *mut u8, len) };
        Self {
            ptr,
            len,
            class,
            mapped,
        }
    }

    fn small(class: usize) -> Option<usize> {
        let mut p = POOL.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(slot) = p.free[class].pop() {
            return Some(slot);
        }
        let (base, locked) = map(CHUNK)?;
        p.mapped += CHUNK;
        p.locked += if locked { CHUNK } else { 0 };
        let size = CLASSES[class];
        // Hand out the first slot; the rest go to the free list.
        p.free[class].extend((1..CHUNK / size).rev().map(|i| base + i * size));
        Some(base)
    }
}

impl std::ops::Deref for LockedBytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        // SAFETY: `ptr..ptr+len` is this value's initialized slot, alive
        // until drop.
        unsafe { std::slice::from_raw_parts(self.ptr as *const u8, self.len) }
    }
}

impl Clone for LockedBytes {
    fn clone(&self) -> Self {
        Self::new(self)
    }
}

impl std::fmt::Debug for LockedBytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "LockedBytes({} bytes)", self.len)
    }
}

impl PartialEq for LockedBytes {
    fn eq(&self, other: &Self) -> bool {
        use subtle::ConstantTimeEq;
        self.len == other.len && bool::from(self[..].ct_eq(&other[..]))
    }
}

impl Drop for LockedBytes {
    fn drop(&mut self) {
        // SAFETY: the slot is this value's own, writable, `len` bytes long.
        let s = unsafe { std::slice::from_raw_parts_mut(self.ptr as *mut u8, self.len) };
        s.zeroize();
        let mut p = POOL.lock().unwrap_or_else(|e| e.into_inner());
        match self.class {
            Some(c) => p.free[c].push(self.ptr),
            // A mapping of its own (or the heap fallback, mapped 0) stays:
            // zeroed, it is reused by nothing and holds nothing.
            None if self.mapped > 0 => {
                p.mapped -= self.mapped;
                drop(p);
                // SAFETY: this value's own mapping, unmapped once, and no
                // reference into it outlives `self`.
                unsafe { libc::munmap(self.ptr as *mut libc::c_void, self.mapped) };
            }
            None => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The VmFlags of the mapping holding `addr` (from /proc/self/smaps).
    fn flags_of(addr: usize) -> String {
        let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
        let mut inside = false;
        for line in smaps.lines() {
            if let Some((range, _)) = line.split_once(' ') {
                if let Some((a, b)) = range.split_once('-') {
                    if let (Ok(a), Ok(b)) =
                        (usize::from_str_radix(a, 16), usize::from_str_radix(b, 16))
                    {
                        inside = a <= addr && addr < b;
                        continue;
                    }
                }
            }
            if inside {
                if let Some(f) = line.strip_prefix("VmFlags:") {
                    return f.trim().to_string();
                }
            }
        }
        panic!("no mapping holds {addr:#x}")
    }

    #[test]
    fn secrets_live_in_dump_excluded_pages_and_are_zeroed() {
        let a = LockedBytes::new(&[7u8; 32]);
        let b = LockedBytes::new(&[9u8; 5000]);
        let c = a.clone();
        assert_eq!(&a[..], &[7u8; 32]);
        assert_eq!(&b[..], &[9u8; 5000][..]);
        assert!(a == c);
        assert!(a != LockedBytes::new(&[7u8; 31]));
        for v in [&a, &b] {
            let f = flags_of(v.as_ptr() as usize);
            assert!(
                f.split(' ').any(|x| x == "dd"),
                "not excluded from dumps: {f}"
            );
        }
        let (mapped, locked) = stats();
        assert!(mapped >= CHUNK + 8192, "{mapped}");
        if locked > 0 {
            let f = flags_of(a.as_ptr() as usize);
            assert!(f.split(' ').any(|x| x == "lo"), "not locked: {f}");
        }
        // Dropping zeroes the slot.
        let addr = a.as_ptr() as usize;
        drop(a);
        // SAFETY: the slot stays mapped (pool pages are never unmapped), and
        // nothing else writes to it meanwhile in this test's view.
        let after = unsafe { std::slice::from_raw_parts(addr as *const u8, 32) };
        assert_eq!(after, &[0u8; 32]);
        let d = LockedBytes::new(&[1u8; 20]);
        assert_eq!(format!("{d:?}"), "LockedBytes(20 bytes)");
        let e = LockedBytes::new(&[]);
        assert!(e.is_empty());
    }
}
