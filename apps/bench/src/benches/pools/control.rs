//! `--control` in section select: a second holdfast pool used exactly as the first, whose
//! distance from it in the same run is the noise floor of every comparison there. On a
//! shared 2-core machine two identical contenders' p99 at one task differed by 50 µs
//! between runs, more than anything a code change there moves; a difference from `get()`
//! means something only where it is beyond the control's.

use crate::contenders::Kind;

/// p50, p99 and p999 in microseconds, per contender (in `kinds` order) and task count.
pub type Tails = [Vec<[f64; 3]>];

/// Prints each holdfast row's p99 and p999 minus `get()`'s, beside the control's, and
/// whether `pool.query`'s is within the control's distance (or below `get()`'s).
pub fn print(section: &str, levels: &[usize], kinds: &[Kind], tails: &Tails) {
    let row = |kind: Kind| kinds.iter().position(|k| *k == kind);
    let (Some(base), Some(control)) = (row(Kind::Holdfast), row(Kind::HoldfastControl)) else {
        return;
    };
    super::print_head(
        &format!(
            "[{section}] minus holdfast's get(), p99 / p999, microseconds: the control is the noise floor"
        ),
        levels,
    );
    let minus = |k: usize, li: usize| [1, 2].map(|q| tails[k][li][q] - tails[base][li][q]);
    let print_row = |name: &str, k: usize| {
        print!("{name:<34}");
        for (li, level) in levels.iter().enumerate() {
            let [p99, p999] = minus(k, li);
            print!("{:>22}", format!("{p99:+.0} / {p999:+.0}"));
            for (q, value) in [("p99", p99), ("p999", p999)] {
                let column = format!("{level} tasks {q}");
                crate::report::record(&format!("{section} minus get()"), name, &column, value, "us");
            }
        }
        println!();
    };
    print_row("control - get()", control);
    let Some(query) = row(Kind::HoldfastQuery) else {
        return;
    };
    print_row("pool.query - get()", query);
    print!("{:<34}", "pool.query within the floor");
    for li in 0..levels.len() {
        let floor = minus(control, li).map(f64::abs);
        let verdict = minus(query, li)
            .iter()
            .zip(floor)
            .map(|(d, f)| if *d <= f { "yes" } else { "no" })
            .collect::<Vec<_>>()
            .join(" / ");
        print!("{verdict:>22}");
    }
    println!();
}
