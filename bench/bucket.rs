//! How many rollout buckets a second (DESIGN §6.3): every check of every agent with a
//! rollout computes one. `cargo bench --bench bucket`.

use std::hint::black_box;
use std::time::Instant;

fn main() {
    let ids: Vec<String> = (0..1_000_000u64).map(|i| format!("i-{i:017x}")).collect();
    let mut rates = Vec::new();
    for _ in 0..5 {
        let started = Instant::now();
        let mut sum = 0u64;
        for id in &ids {
            sum = sum.wrapping_add(bootlace::release::rollout::bucket(
                black_box("v43"),
                black_box(id),
            ));
        }
        black_box(sum);
        rates.push(ids.len() as f64 / started.elapsed().as_secs_f64());
    }
    rates.sort_by(f64::total_cmp);
    println!(
        "bucket: median {:.0} machine ids a second (5 rounds of 1,000,000; min {:.0}, max {:.0})",
        rates[2], rates[0], rates[4]
    );
}
