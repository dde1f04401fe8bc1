//! `HugePageAllocator`, installed as this test binary's allocator with the binary's heap
//! settings: a large buffer's memory is advised onto transparent huge pages (the kernel's
//! record of the advice, `hg` in the mapping's `VmFlags`, is read back from
//! `/proc/self/smaps`), and it behaves as ordinary memory (zeroed when asked, reallocated with
//! its contents).

use scratchgpt_train::allocator::HugePageAllocator;

#[global_allocator]
static ALLOC: HugePageAllocator = HugePageAllocator;

/// The `VmFlags` of the mapping that contains `addr`, from `/proc/self/smaps`.
#[cfg(target_os = "linux")]
fn vm_flags_at(addr: usize) -> Option<String> {
    let smaps = std::fs::read_to_string("/proc/self/smaps").ok()?;
    let mut inside = false;
    for line in smaps.lines() {
        let first = line.split_whitespace().next().unwrap_or("");
        if let Some((lo, hi)) = first.split_once('-') {
            if let (Ok(lo), Ok(hi)) = (usize::from_str_radix(lo, 16), usize::from_str_radix(hi, 16))
            {
                inside = (lo..hi).contains(&addr);
                continue;
            }
        }
        if inside {
            if let Some(flags) = line.strip_prefix("VmFlags:") {
                return Some(flags.trim().to_string());
            }
        }
    }
    None
}

#[test]
#[cfg(target_os = "linux")]
fn large_buffers_are_advised_onto_huge_pages() {
    let thp = std::fs::read_to_string("/sys/kernel/mm/transparent_hugepage/enabled");
    if thp.as_deref().map_or(true, |s| s.contains("[never]")) {
        eprintln!("skipped: transparent huge pages are off or absent here ({thp:?})");
        return;
    }
    // the binary's heap: large buffers come from the heap, not their own mappings
    scratchgpt_train::allocator::keep_freed_memory();
    // a zeroed 64 MB buffer: all zeros, and its middle lies in an advised mapping
    let mut big = vec![0.0f32; 16 << 20];
    assert!(big.iter().all(|&x| x == 0.0));
    big.iter_mut().step_by(1024).for_each(|x| *x = 1.0);
    let middle = big.as_ptr() as usize + big.len() * 2;
    let flags = vm_flags_at(middle).expect("the buffer's mapping in /proc/self/smaps");
    assert!(
        flags.split_whitespace().any(|f| f == "hg"),
        "64 MB buffer not advised: VmFlags {flags}"
    );
    // grown past its size, it keeps its contents and stays advised
    big.reserve_exact(32 << 20);
    assert_eq!(big[1024], 1.0);
    assert_eq!(big[1025], 0.0);
    let middle = big.as_ptr() as usize + big.capacity() * 2;
    let flags = vm_flags_at(middle).expect("the grown buffer's mapping");
    assert!(
        flags.split_whitespace().any(|f| f == "hg"),
        "grown: {flags}"
    );
}
