//! Throughput of the parts (weak sums, BLAKE3) and of signing, matching and applying on a
//! 256 MiB buffer, in wall-clock and in CPU-time terms (the second holds on a shared machine).
//! A measurement, not a test: `cargo run --release -p delta --example throughput`.

use std::io::Cursor;
use std::time::Instant;

use delta::{apply, block_size_for, delta, Op, Signature};

/// Deterministic bytes (splitmix64), the same on every run.
fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        out.extend_from_slice(&(z ^ (z >> 31)).to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Nanoseconds this thread has spent on a CPU (Linux), so throughput can be stated
/// independently of other load on a shared machine.
fn thread_cpu_ns() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    stat.split_whitespace().next()?.parse().ok()
}

/// Times `f`, returning (wall MiB/s, CPU MiB/s if known) for `mib` MiB of input.
fn rate(mib: f64, f: impl FnOnce()) -> (f64, Option<f64>) {
    let (t, cpu) = (Instant::now(), thread_cpu_ns());
    f();
    let wall = mib / t.elapsed().as_secs_f64();
    let cpu = cpu
        .zip(thread_cpu_ns())
        .map(|(a, b)| mib / ((b - a) as f64 / 1e9));
    (wall, cpu)
}

fn main() {
    let len = 256 << 20;
    let old = pseudo_random(len, 6);
    let bs = block_size_for(len as u64);
    let mib = len as f64 / (1 << 20) as f64;
    let mut report = Vec::new();

    report.push((
        "weak sums alone",
        rate(mib, || {
            let x = old
                .chunks(bs as usize)
                .fold(0u32, |a, b| a ^ delta::Rolling::of(b).digest());
            std::hint::black_box(x);
        }),
    ));
    report.push((
        "BLAKE3 per block alone",
        rate(mib, || {
            let x = old
                .chunks(bs as usize)
                .fold(0u8, |a, b| a ^ blake3::hash(b).as_bytes()[0]);
            std::hint::black_box(x);
        }),
    ));
    report.push((
        "BLAKE3 whole",
        rate(mib, || {
            std::hint::black_box(blake3::hash(&old));
        }),
    ));

    let mut sig = None;
    report.push((
        "signature",
        rate(mib, || {
            sig = Some(Signature::compute(&old[..], bs).unwrap());
        }),
    ));
    let sig = sig.unwrap();

    // Matching path: one byte inserted at the front, so every block is found shifted.
    let mut shifted = vec![0u8];
    shifted.extend_from_slice(&old);
    report.push((
        "delta, all matching",
        rate(mib, || {
            let mut it = delta(&sig, &shifted[..]);
            assert_eq!(it.by_ref().inspect(|op| assert!(op.is_ok())).count(), 2);
            assert_eq!(it.stats().literal, 1);
        }),
    ));

    // Missing path: nothing matches, the window rolls over every byte.
    let unrelated = pseudo_random(len, 7);
    report.push((
        "delta, nothing matching",
        rate(mib, || {
            let mut it = delta(&sig, &unrelated[..]);
            it.by_ref().for_each(|op| drop(op.unwrap()));
            assert_eq!(it.stats().matched, 0);
        }),
    ));

    report.push((
        "delta + apply",
        rate(mib, || {
            let ops: Vec<Op> = delta(&sig, &shifted[..]).map(|op| op.unwrap()).collect();
            let applied = apply(Cursor::new(&old[..]), &ops, std::io::sink()).unwrap();
            assert_eq!(applied.len, shifted.len() as u64);
        }),
    ));

    for (what, (wall, cpu)) in report {
        let cpu = cpu.map_or("?".to_string(), |c| format!("{c:.0}"));
        eprintln!("block {bs}, {what}: {wall:.0} MiB/s wall, {cpu} MiB/s of CPU time");
    }
}
