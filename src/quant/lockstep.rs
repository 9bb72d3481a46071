//! Lock-step versions of two scale searches of `search.rs`, for the
//! K-quants' reference quantizers: `L` sub-blocks of `N` elements at once,
//! one sub-block per lane.
//!
//! The reference searches are chains of dependent scalar sums (each
//! candidate scale sums over the sub-block in order), which no compiler can
//! vectorize without reordering the sums and so changing the bytes. Across
//! sub-blocks, though, they are independent: here every lane performs
//! exactly the reference's operations in the reference's order on its own
//! sub-block, and the loops over lanes are plain fixed-size array loops
//! that LLVM turns into vector instructions. Where the reference branches
//! (keep a better candidate, give up on a flat sub-block), every lane
//! computes both sides and selects, which changes no value. No float
//! expression is reassociated and none can become an FMA (Rust never
//! contracts `a * b + c`, and no caller enables the `fma` feature), so a
//! lane's result is bit for bit the reference's.
//!
//! The data is transposed: `x[i][j]` is element `i` of sub-block `j`.

use super::search::{nearest_int, GROUP_MAX_EPS};

/// `x` (`L` consecutive sub-blocks of `N`) transposed to lanes.
#[inline(always)]
pub fn to_lanes<const N: usize, const L: usize>(x: &[f32]) -> [[f32; L]; N] {
    let mut t = [[0f32; L]; N];
    for (j, sub) in x.chunks_exact(N).take(L).enumerate() {
        for (row, &v) in t.iter_mut().zip(sub) {
            row[j] = v;
        }
    }
    t
}

/// Lanes back to consecutive sub-blocks: `out[N * j + i] = t[i][j]`.
#[inline(always)]
pub fn from_lanes<T: Copy, const N: usize, const L: usize>(t: &[[T; L]; N], out: &mut [T]) {
    for (j, sub) in out.chunks_exact_mut(N).take(L).enumerate() {
        for (o, row) in sub.iter_mut().zip(t) {
            *o = row[j];
        }
    }
}

/// `make_qx_quants(N, nmax, x, L, rmse_type = 1, qw = NULL)` on `L`
/// sub-blocks (Q6_K's reference: weights x²). `l_out` receives
/// `l + nmax`; returns each sub-block's scale.
///
/// Rather than copying a candidate's levels whenever it wins, as the
/// reference does, each lane remembers the winning inverse scale and the
/// levels are computed from it once at the end: the same operations on the
/// same inputs, so the same levels.
#[inline(always)]
pub fn make_qx_quants_lanes<const N: usize, const L: usize>(
    x: &[[f32; L]; N],
    nmax: i32,
    l_out: &mut [[i8; L]; N],
) -> [f32; L] {
    let mut amax = [0f32; L];
    let mut max = [0f32; L];
    for row in x {
        for j in 0..L {
            let ax = row[j].abs();
            let gt = ax > amax[j];
            amax[j] = if gt { ax } else { amax[j] };
            max[j] = if gt { row[j] } else { max[j] };
        }
    }
    // The reference's weight is w = x·x and it sums (w·x)·l and (w·l)·l:
    // computing w and w·x once gives the same values every time.
    let mut w = [[0f32; L]; N];
    let mut wx = [[0f32; L]; N];
    for i in 0..N {
        for j in 0..L {
            w[i][j] = x[i][j] * x[i][j];
            wx[i][j] = w[i][j] * x[i][j];
        }
    }
    let nmaxf = nmax as f32;
    let (lo, hi) = (-nmax, nmax - 1);
    // One candidate scale's two sums, in the reference's order.
    let sums = |iscale: &[f32; L]| {
        let mut sumlx = [0f32; L];
        let mut suml2 = [0f32; L];
        for i in 0..N {
            for j in 0..L {
                let l = nearest_int(iscale[j] * x[i][j]).max(lo).min(hi);
                let lf = l as f32;
                sumlx[j] += wx[i][j] * lf;
                suml2[j] += w[i][j] * lf * lf;
            }
        }
        (sumlx, suml2)
    };
    let mut best_iscale = [0f32; L];
    for j in 0..L {
        best_iscale[j] = -nmaxf / max[j];
    }
    let (sumlx, suml2) = sums(&best_iscale);
    let mut scale = [0f32; L];
    let mut best = [0f32; L];
    for j in 0..L {
        scale[j] = if suml2[j] != 0.0 {
            sumlx[j] / suml2[j]
        } else {
            0.0
        };
        best[j] = scale[j] * sumlx[j];
    }
    let mut iscale = [0f32; L];
    for is in -9i32..=9 {
        if is == 0 {
            continue;
        }
        for j in 0..L {
            iscale[j] = -(nmaxf + 0.1 * is as f32) / max[j];
        }
        let (sumlx, suml2) = sums(&iscale);
        for j in 0..L {
            let take = (suml2[j] > 0.0) & (sumlx[j] * sumlx[j] > best[j] * suml2[j]);
            let new_scale = sumlx[j] / suml2[j];
            let new_best = new_scale * sumlx[j];
            scale[j] = if take { new_scale } else { scale[j] };
            best[j] = if take { new_best } else { best[j] };
            best_iscale[j] = if take { iscale[j] } else { best_iscale[j] };
        }
    }
    // Sub-blocks the reference gives up on get all levels 0, scale 0.
    let mut keep = [0i32; L];
    for j in 0..L {
        let flat = amax[j] < GROUP_MAX_EPS;
        scale[j] = if flat { 0.0 } else { scale[j] };
        keep[j] = if flat { 0 } else { -1 };
    }
    for i in 0..N {
        for j in 0..L {
            let l = nearest_int(best_iscale[j] * x[i][j]).max(lo).min(hi);
            l_out[i][j] = ((l + nmax) & keep[j]) as i8;
        }
    }
    scale
}

/// `make_qkx2_quants(N, nmax, x, weights, L, Laux, rmin, rdelta, nstep,
/// use_mad = MAD)` on `L` sub-blocks (Q2_K, Q4_K and Q5_K's reference).
/// Returns each sub-block's `(scale, the_min)`. As above, the winning
/// candidate's levels are recomputed once at the end from its inverse
/// scale and the min it was computed with.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
pub fn make_qkx2_quants_lanes<const N: usize, const L: usize, const MAD: bool>(
    x: &[[f32; L]; N],
    weights: &[[f32; L]; N],
    nmax: i32,
    rmin: f32,
    rdelta: f32,
    nstep: i32,
    l_out: &mut [[u8; L]; N],
) -> ([f32; L], [f32; L]) {
    let err = |d: f32| if MAD { d.abs() } else { d * d };
    let mut min = x[0];
    let mut max = x[0];
    let mut sum_w = weights[0];
    let mut sum_x = [0f32; L];
    for j in 0..L {
        sum_x[j] = sum_w[j] * x[0][j];
    }
    for i in 1..N {
        for j in 0..L {
            let v = x[i][j];
            min[j] = if v < min[j] { v } else { min[j] };
            max[j] = if v > max[j] { v } else { max[j] };
            let w = weights[i][j];
            sum_w[j] += w;
            sum_x[j] += w * v;
        }
    }
    let mut flat = [false; L];
    for j in 0..L {
        min[j] = if min[j] > 0.0 { 0.0 } else { min[j] };
        flat[j] = max[j] == min[j];
    }
    // A flat sub-block's answer, taken before the search below runs
    // (harmlessly) on it too.
    let flat_min = min;
    let nmaxf = nmax as f32;
    let mut best_iscale = [0f32; L];
    let mut scale = [0f32; L];
    for j in 0..L {
        best_iscale[j] = nmaxf / (max[j] - min[j]);
        scale[j] = 1.0 / best_iscale[j];
    }
    // The min the winning levels were computed with.
    let mut best_min_in = min;
    let mut best_error = [0f32; L];
    for i in 0..N {
        for j in 0..L {
            let l = nearest_int(best_iscale[j] * (x[i][j] - min[j]))
                .max(0)
                .min(nmax);
            let diff = scale[j] * l as f32 + min[j] - x[i][j];
            best_error[j] += weights[i][j] * err(diff);
        }
    }
    if nstep >= 1 {
        let mut lf = [[0f32; L]; N];
        let mut iscale = [0f32; L];
        for is in 0..=nstep {
            for j in 0..L {
                iscale[j] = (rmin + rdelta * is as f32 + nmaxf) / (max[j] - min[j]);
            }
            let mut sum_l = [0f32; L];
            let mut sum_l2 = [0f32; L];
            let mut sum_xl = [0f32; L];
            for i in 0..N {
                for j in 0..L {
                    let l = nearest_int(iscale[j] * (x[i][j] - min[j])).max(0).min(nmax);
                    let w = weights[i][j];
                    let f = l as f32;
                    lf[i][j] = f;
                    sum_l[j] += w * f;
                    sum_l2[j] += w * f * f;
                    sum_xl[j] += w * f * x[i][j];
                }
            }
            let mut d = [0f32; L];
            let mut this_scale = [0f32; L];
            let mut this_min = [0f32; L];
            for j in 0..L {
                d[j] = sum_w[j] * sum_l2[j] - sum_l[j] * sum_l[j];
                let s = (sum_w[j] * sum_xl[j] - sum_x[j] * sum_l[j]) / d[j];
                let m = (sum_l2[j] * sum_x[j] - sum_l[j] * sum_xl[j]) / d[j];
                let pos = m > 0.0;
                this_min[j] = if pos { 0.0 } else { m };
                this_scale[j] = if pos { sum_xl[j] / sum_l2[j] } else { s };
            }
            let mut cur_error = [0f32; L];
            for i in 0..N {
                for j in 0..L {
                    let diff = this_scale[j] * lf[i][j] + this_min[j] - x[i][j];
                    cur_error[j] += weights[i][j] * err(diff);
                }
            }
            for j in 0..L {
                let take = (d[j] > 0.0) & (cur_error[j] < best_error[j]);
                best_error[j] = if take { cur_error[j] } else { best_error[j] };
                scale[j] = if take { this_scale[j] } else { scale[j] };
                best_iscale[j] = if take { iscale[j] } else { best_iscale[j] };
                best_min_in[j] = if take { min[j] } else { best_min_in[j] };
                min[j] = if take { this_min[j] } else { min[j] };
            }
        }
    }
    let mut keep = [0i32; L];
    let mut the_min = [0f32; L];
    for j in 0..L {
        scale[j] = if flat[j] { 0.0 } else { scale[j] };
        the_min[j] = -(if flat[j] { flat_min[j] } else { min[j] });
        keep[j] = if flat[j] { 0 } else { -1 };
    }
    for i in 0..N {
        for j in 0..L {
            let l = nearest_int(best_iscale[j] * (x[i][j] - best_min_in[j]))
                .max(0)
                .min(nmax);
            l_out[i][j] = (l & keep[j]) as u8;
        }
    }
    (scale, the_min)
}
