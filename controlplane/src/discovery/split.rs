//! Traffic-split weights flattened into endpoint weights, as the destination API carries
//! them: the endpoints of every backend arrive in one list, and the weights of each
//! backend's endpoints sum to a common multiple of that backend's share.
//!
//! Worked example: a 90/10 split whose backends have 3 and 1 endpoints of weight 1. The
//! sums are 3 and 1; scaling by their least common multiple gives 90, 90, 90 and 30, and
//! dividing by the greatest common divisor gives **3, 3, 3 and 1**: 9 against 1, exactly
//! 90/10, and endpoints inside a backend keep their relative weights.
//!
//! A backend with share 0, or whose endpoints all weigh 0 (or that has none), gets
//! weight 0 everywhere, so the other backends share its traffic in their proportions.
//! The result is exact whenever the integers fit in 32 bits; otherwise each endpoint gets
//! its share rounded to a millionth of the total (never 0 when its own weight is not).

/// Total weight the approximation spreads over.
const APPROX_TOTAL: f64 = 1_000_000.0;

/// For each backend `(share, endpoint weights)`, the flattened endpoint weights, in the
/// same shape.
pub fn flatten(backends: &[(u32, Vec<u32>)]) -> Vec<Vec<u32>> {
    let sums: Vec<u128> = backends
        .iter()
        .map(|(_, ws)| ws.iter().map(|w| u128::from(*w)).sum())
        .collect();
    let active = |i: usize| backends[i].0 > 0 && sums[i] > 0;
    let mut lcm: Option<u128> = Some(1);
    for (i, sum) in sums.iter().enumerate() {
        if active(i) {
            lcm = lcm.and_then(|l| checked_lcm(l, *sum));
        }
    }
    let exact = lcm.and_then(|l| {
        let mut out: Vec<Vec<u128>> = Vec::with_capacity(backends.len());
        for (i, (share, ws)) in backends.iter().enumerate() {
            let scale = if active(i) { l / sums[i] } else { 0 };
            let mut group = Vec::with_capacity(ws.len());
            for w in ws {
                group.push(
                    u128::from(*w)
                        .checked_mul(u128::from(*share))?
                        .checked_mul(scale)?,
                );
            }
            out.push(group);
        }
        let g = out.iter().flatten().fold(0, |g, w| gcd(g, *w));
        out.into_iter()
            .map(|group| {
                group
                    .into_iter()
                    .map(|w| u32::try_from(w.checked_div(g).unwrap_or(0)).ok())
                    .collect::<Option<Vec<u32>>>()
            })
            .collect::<Option<Vec<Vec<u32>>>>()
    });
    exact.unwrap_or_else(|| approximate(backends, &sums))
}

fn approximate(backends: &[(u32, Vec<u32>)], sums: &[u128]) -> Vec<Vec<u32>> {
    let total_share: f64 = backends
        .iter()
        .zip(sums)
        .filter(|((share, _), sum)| *share > 0 && **sum > 0)
        .map(|((share, _), _)| f64::from(*share))
        .sum();
    let out: Vec<Vec<u64>> = backends
        .iter()
        .zip(sums)
        .map(|((share, ws), sum)| {
            ws.iter()
                .map(|w| {
                    if *share == 0 || *sum == 0 || *w == 0 || total_share == 0.0 {
                        return 0;
                    }
                    let part = f64::from(*w) / *sum as f64 * f64::from(*share) / total_share;
                    ((part * APPROX_TOTAL).round() as u64).max(1)
                })
                .collect()
        })
        .collect();
    let g = out.iter().flatten().fold(0, |g, w| gcd(g, *w));
    out.into_iter()
        .map(|group| {
            group
                .into_iter()
                .map(|w| {
                    let w = w.checked_div(g).unwrap_or(0);
                    u32::try_from(w).unwrap_or(u32::MAX)
                })
                .collect()
        })
        .collect()
}

fn gcd<T>(a: T, b: T) -> T
where
    T: Copy + PartialEq + Default + std::ops::Rem<Output = T>,
{
    let (mut a, mut b) = (a, b);
    while b != T::default() {
        (a, b) = (b, a % b);
    }
    a
}

fn checked_lcm(a: u128, b: u128) -> Option<u128> {
    if a == 0 || b == 0 {
        return Some(a.max(b));
    }
    (a / gcd(a, b)).checked_mul(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table() {
        #[allow(clippy::type_complexity)]
        let cases: &[(&str, Vec<(u32, Vec<u32>)>, Vec<Vec<u32>>)] = &[
            (
                "90/10 over 3 and 1 endpoints",
                vec![(90, vec![1, 1, 1]), (10, vec![1])],
                vec![vec![3, 3, 3], vec![1]],
            ),
            (
                "50/50 over 2 and 3 endpoints",
                vec![(50, vec![1, 1]), (50, vec![1, 1, 1])],
                vec![vec![3, 3], vec![2, 2, 2]],
            ),
            (
                "endpoint weights are kept inside a backend",
                vec![(1, vec![1, 3]), (1, vec![1])],
                vec![vec![1, 3], vec![4]],
            ),
            (
                "one backend",
                vec![(100, vec![1, 1, 1])],
                vec![vec![1, 1, 1]],
            ),
            (
                "a backend with share 0 gets nothing",
                vec![(100, vec![1, 1]), (0, vec![1])],
                vec![vec![1, 1], vec![0]],
            ),
            (
                "a backend without endpoints leaves its share to the others",
                vec![(90, vec![]), (10, vec![1, 1])],
                vec![vec![], vec![1, 1]],
            ),
            (
                "zero-weight endpoints stay zero",
                vec![(80, vec![0, 2]), (20, vec![1])],
                vec![vec![0, 4], vec![1]],
            ),
            (
                "all empty",
                vec![(1, vec![]), (1, vec![0])],
                vec![vec![], vec![0]],
            ),
            (
                "three backends, awkward sums",
                vec![(70, vec![1, 1, 1]), (20, vec![1, 1]), (10, vec![1])],
                vec![vec![7, 7, 7], vec![3, 3], vec![3]],
            ),
        ];
        for (name, input, want) in cases {
            assert_eq!(&flatten(input), want, "{name}");
        }
    }

    #[test]
    fn shares_are_exact_for_many_shapes() {
        // For every small shape, each backend's total is proportional to its share.
        for a in 1..=7u32 {
            for b in 1..=7u32 {
                for (sa, sb) in [(90, 10), (1, 1), (33, 67), (5, 95)] {
                    let out = flatten(&[(sa, vec![1; a as usize]), (sb, vec![1; b as usize])]);
                    let ta: u64 = out[0].iter().map(|w| u64::from(*w)).sum();
                    let tb: u64 = out[1].iter().map(|w| u64::from(*w)).sum();
                    assert_eq!(ta * u64::from(sb), tb * u64::from(sa), "{a} {b} {sa}/{sb}");
                }
            }
        }
    }

    #[test]
    fn huge_numbers_are_approximated_not_overflowed() {
        let primes = [4_294_967_291u32, 4_294_967_279, 4_294_967_231];
        let input: Vec<(u32, Vec<u32>)> = primes.iter().map(|p| (u32::MAX, vec![*p, 1])).collect();
        let out = flatten(&input);
        let totals: Vec<u64> = out
            .iter()
            .map(|g| g.iter().map(|w| u64::from(*w)).sum())
            .collect();
        // Equal shares: the totals agree to within the rounding of a millionth.
        let (min, max) = (totals.iter().min().unwrap(), totals.iter().max().unwrap());
        assert!(max - min <= 2, "{totals:?}");
        // A weight-1 endpoint next to a huge one still gets at least 1.
        assert!(out.iter().all(|g| g[1] >= 1), "{out:?}");
    }
}
