// Two threads and a plain (non-atomic) write/read through a raw pointer.
// The hand-off uses a Relaxed flag, which TSAN does not count as synchronisation.
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;

struct Shared(*mut u64);
unsafe impl Send for Shared {}
unsafe impl Sync for Shared {}

static READY: AtomicBool = AtomicBool::new(false);

#[inline(never)]
fn store_value(p: &Shared) {
    unsafe { std::ptr::write_volatile(p.0, 7) }; // RACE: write
}

#[inline(never)]
fn load_value(p: &Shared) -> u64 {
    unsafe { std::ptr::read_volatile(p.0) } // RACE: read
}

fn main() {
    let cell = Box::leak(Box::new(0u64));
    let shared = Shared(cell as *mut u64);
    thread::scope(|s| {
        s.spawn(|| {
            store_value(&shared);
            READY.store(true, Ordering::Relaxed);
        });
        s.spawn(|| {
            while !READY.load(Ordering::Relaxed) {
                std::hint::spin_loop();
            }
            println!("value={}", load_value(&shared));
        });
    });
}
